"""The schema as create_all made it before migrations: artifacts, runs, jobs, agents, and the
regression tables (job_evaluations, baselines, suite_runs, suite_cases).

Revision ID: 0001
Revises:
Create Date: 2025-01-01

The tables are declared once, in ``schema()``: ``upgrade`` creates them, and a controller
compares a database from before migrations with them before stamping it with this revision.
"""
from typing import Any, Dict, List, Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# JSONB on PostgreSQL, JSON text elsewhere (models.JSONDocument, models.RegressionDocument).
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _tables() -> Dict[str, List[Any]]:
    """Each table's columns and indexes, new objects on each call, referenced tables first."""
    return {
        "artifacts": [
            sa.Column("sha256", sa.String(length=64), primary_key=True),
            sa.Column("size_bytes", sa.BigInteger(), nullable=False),
            sa.Column("format", sa.String(length=16), nullable=False),
            sa.Column("filename", sa.String(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
        ],
        "runs": [
            sa.Column("id", sa.String(length=64), primary_key=True),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Index("ix_runs_created_at", "created_at"),
        ],
        "agents": [
            sa.Column("id", sa.String(length=200), primary_key=True),
            sa.Column("profile", sa.String(length=200), nullable=False),
            sa.Column("tags", JSON_DOCUMENT, nullable=False),
            sa.Column("capabilities", JSON_DOCUMENT, nullable=False),
            sa.Column("hostname", sa.String(), nullable=False),
            sa.Column("version", sa.String(), nullable=False),
            sa.Column("registered_at", sa.Float(), nullable=False),
            sa.Column("last_seen", sa.Float(), nullable=False),
            sa.Column("busy", sa.Boolean(), nullable=False),
            sa.Column("draining", sa.Boolean(), nullable=False),
            sa.Index("ix_agents_profile", "profile"),
        ],
        "jobs": [
            sa.Column("id", sa.String(length=64), primary_key=True),
            sa.Column("run_id", sa.String(length=64), sa.ForeignKey("runs.id"), nullable=False),
            sa.Column("model_sha256", sa.String(length=64), sa.ForeignKey("artifacts.sha256"), nullable=False),
            sa.Column("model_name", sa.String(), nullable=False),
            sa.Column("model_format", sa.String(length=16), nullable=False),
            sa.Column("device_profile", sa.String(length=200), nullable=False),
            sa.Column("settings", JSON_DOCUMENT, nullable=False),
            sa.Column("required_tags", JSON_DOCUMENT, nullable=False),
            sa.Column("state", sa.String(length=16), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("max_attempts", sa.Integer(), nullable=False),
            sa.Column("agent_id", sa.String(length=200), nullable=True),
            sa.Column("lease_id", sa.String(length=64), nullable=True),
            sa.Column("lease_expires_at", sa.Float(), nullable=True),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("started_at", sa.Float(), nullable=True),
            sa.Column("finished_at", sa.Float(), nullable=True),
            sa.Column("progress", JSON_DOCUMENT, nullable=True),
            sa.Column("result", JSON_DOCUMENT, nullable=True),
            sa.Column("failure_category", sa.String(length=32), nullable=True),
            sa.Column("failure_message", sa.Text(), nullable=True),
            sa.Column("failure_signal", sa.Integer(), nullable=True),
            sa.Column("failure_detail", sa.Text(), nullable=True),
            sa.Index("ix_jobs_state_profile_created", "state", "device_profile", "created_at"),
            sa.Index("ix_jobs_run_id", "run_id"),
            sa.Index("ix_jobs_created_at", "created_at"),
            sa.Index("ix_jobs_lease_id", "lease_id"),
            sa.Index("ix_jobs_agent_id", "agent_id"),
        ],
        "job_evaluations": [
            sa.Column("job_id", sa.String(length=64), sa.ForeignKey("jobs.id"), primary_key=True),
            sa.Column("constraint_set", sa.String(), nullable=False),
            sa.Column("budgets", JSON_DOCUMENT, nullable=False),
            sa.Column("verdicts", JSON_DOCUMENT, nullable=True),
            sa.Column("evaluated_at", sa.Float(), nullable=True),
        ],
        "baselines": [
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("model_name", sa.String(length=500), nullable=False),
            sa.Column("device_profile", sa.String(length=200), nullable=False),
            sa.Column("runtime_config", sa.String(length=500), nullable=False),
            sa.Column("job_id", sa.String(length=64), sa.ForeignKey("jobs.id"), nullable=False),
            sa.Column("model_sha256", sa.String(length=64), nullable=False),
            sa.Column("suite", sa.String(), nullable=False),
            sa.Column("accepted_at", sa.Float(), nullable=False),
            sa.Index("ix_baselines_accepted_at", "accepted_at"),
            sa.Index("ix_baselines_key", "name", "model_name", "device_profile", "runtime_config"),
        ],
        "suite_runs": [
            sa.Column("id", sa.String(length=64), primary_key=True),
            sa.Column("suite", sa.String(length=200), nullable=False),
            sa.Column("trigger", sa.String(), nullable=False),
            sa.Column("baseline", sa.String(), nullable=False),
            sa.Column("state", sa.String(), nullable=False),
            sa.Column("outcome", sa.String(), nullable=False),
            sa.Column("started_at", sa.Float(), nullable=False),
            sa.Column("finished_at", sa.Float(), nullable=True),
            sa.Column("message", sa.Text(), server_default="", nullable=False),
            sa.Column("accept", sa.Boolean(), nullable=False),
            sa.Column("accepted", sa.Boolean(), nullable=False),
            sa.Column("spec", JSON_DOCUMENT, nullable=False),
            sa.Index("ix_suite_runs_started_at", "started_at"),
            sa.Index("ix_suite_runs_suite", "suite"),
        ],
        "suite_cases": [
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("suite_run_id", sa.String(length=64), sa.ForeignKey("suite_runs.id"), nullable=False),
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("model_name", sa.String(length=500), nullable=False),
            sa.Column("model_sha256", sa.String(length=64), nullable=False),
            sa.Column("device_profile", sa.String(length=200), nullable=False),
            sa.Column("runtime_config", sa.String(), nullable=False),
            sa.Column("outcome", sa.String(), nullable=False),
            sa.Column("job_id", sa.String(), nullable=False),
            sa.Column("baseline_job_id", sa.String(), nullable=False),
            sa.Column("verdicts", JSON_DOCUMENT, nullable=False),
            sa.Column("comparison", JSON_DOCUMENT, nullable=True),
            sa.Column("confirmation", JSON_DOCUMENT, nullable=True),
            sa.Column("confirm_job_ids", JSON_DOCUMENT, nullable=False),
            sa.Column("message", sa.Text(), server_default="", nullable=False),
            sa.Column("values", JSON_DOCUMENT, nullable=False),
            sa.Column("finished_at", sa.Float(), nullable=True),
            sa.Column("duration_seconds", sa.Float(), nullable=False),
            sa.Index("ix_suite_cases_suite_run_id", "suite_run_id"),
            sa.Index("ix_suite_cases_key", "model_name", "device_profile", "finished_at"),
        ],
    }


def schema() -> sa.MetaData:
    """The tables of this revision."""
    md = sa.MetaData()
    for name, items in _tables().items():
        sa.Table(name, md, *items)
    return md


def upgrade() -> None:
    for name, items in _tables().items():
        op.create_table(name, *items)  # with its indexes


def downgrade() -> None:
    for name in reversed(list(_tables())):
        op.drop_table(name)
