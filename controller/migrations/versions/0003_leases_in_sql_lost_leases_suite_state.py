"""Leases matched in SQL, lost leases, the latest result per model, suite runs as state.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

- jobs.required_runtime / required_provider: what an agent must have, so the lease query
  matches profile, tags, runtime and provider in SQL and locks only the row it leases
  (filled here from each job's settings and model format);
- jobs.lost_lease_id / lost_agent_id: the lease an agent lost, so its late report is stored
  when no later attempt has started;
- latest_results: the newest succeeded job per model x device profile x runtime, kept when a
  result is stored (filled here from the stored results), so a metrics scrape reads one row
  per key; job_outcome_counts: finished jobs counted as they finish (filled here from the jobs);
  an index on job_evaluations.evaluated_at, so the newest verdicts are read without a scan;
- suite_runs.stage / job_ids / work / placement_deadline / driver / driver_until /
  nightly_slot: a suite run is a state machine any replica advances, and a nightly slot
  (suite x due time) is unique. A run left "running" by a controller from before this
  revision was carried by a thread that is gone: it is finished as an error that says so.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# The runtime a model format implies when the settings name none (models.RUNTIME_FOR_FORMAT
# when this revision was written).
RUNTIME_FOR_FORMAT = {"onnx": "onnxruntime", "tflite": "tflite"}


def upgrade() -> None:
    op.create_table(
        "latest_results",
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("device_profile", sa.String(length=200), nullable=False),
        sa.Column("runtime", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("model_name", "device_profile", "runtime"),
    )
    with op.batch_alter_table("latest_results", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_latest_results_finished_at"), ["finished_at"], unique=False)

    op.create_table(
        "job_outcome_counts",
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("device_profile", sa.String(length=200), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("runtime", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("outcome", "reason", "device_profile", "model_name", "runtime"),
    )

    with op.batch_alter_table("job_evaluations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_evaluations_evaluated_at"), ["evaluated_at"], unique=False)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("required_runtime", sa.String(length=64), server_default="", nullable=False))
        batch_op.add_column(sa.Column("required_provider", sa.String(length=200), server_default="", nullable=False))
        batch_op.add_column(sa.Column("lost_lease_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lost_agent_id", sa.String(length=200), nullable=True))

    with op.batch_alter_table("suite_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stage", sa.String(length=16), server_default="done", nullable=False))
        batch_op.add_column(sa.Column("job_ids", JSON_DOCUMENT, server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("work", JSON_DOCUMENT, nullable=True))
        batch_op.add_column(sa.Column("placement_deadline", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("driver", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("driver_until", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("nightly_slot", sa.Float(), nullable=True))
        batch_op.create_unique_constraint("uq_suite_runs_nightly_slot", ["suite", "nightly_slot"])

    _fill_requirements_and_latest_results()
    _finish_orphaned_suite_runs()


def _fill_requirements_and_latest_results() -> None:
    """In SQL, so that ``hilfarm controller migrate --sql`` writes it too."""
    if op.get_context().dialect.name == "postgresql":
        runtime, provider = "settings->>'runtime'", "settings->>'execution_provider'"
    else:
        runtime, provider = "json_extract(settings, '$.runtime')", "json_extract(settings, '$.execution_provider')"
    implied = "CASE model_format " + " ".join(
        f"WHEN '{fmt}' THEN '{name}'" for fmt, name in RUNTIME_FOR_FORMAT.items()) + " ELSE '' END"
    op.execute(f"UPDATE jobs SET required_runtime = COALESCE(NULLIF({runtime}, ''), {implied}), "
               f"required_provider = COALESCE({provider}, '')")
    op.execute(
        "INSERT INTO latest_results (model_name, device_profile, runtime, job_id, finished_at) "
        "SELECT model_name, device_profile, required_runtime, id, finished_at FROM ("
        " SELECT model_name, device_profile, required_runtime, id, finished_at, ROW_NUMBER() OVER ("
        "  PARTITION BY model_name, device_profile, required_runtime ORDER BY finished_at DESC, id DESC) AS newest"
        " FROM jobs WHERE state = 'succeeded' AND finished_at IS NOT NULL) AS ranked "
        "WHERE newest = 1")
    op.execute(
        "INSERT INTO job_outcome_counts (outcome, reason, device_profile, model_name, runtime, count) "
        "SELECT state, CASE state WHEN 'succeeded' THEN 'ok' WHEN 'cancelled' THEN 'cancelled' "
        "ELSE COALESCE(failure_category, 'unspecified') END, device_profile, model_name, required_runtime, count(*) "
        "FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') "
        "GROUP BY state, CASE state WHEN 'succeeded' THEN 'ok' WHEN 'cancelled' THEN 'cancelled' "
        "ELSE COALESCE(failure_category, 'unspecified') END, device_profile, model_name, required_runtime")


def _finish_orphaned_suite_runs() -> None:
    runs = sa.table("suite_runs", sa.column("state", sa.String), sa.column("outcome", sa.String),
                    sa.column("message", sa.Text), sa.column("stage", sa.String))
    op.execute(
        sa.update(runs).where(runs.c.state != "finished").values(
            state="finished", outcome="error", stage="done",
            message="the suite ran in a thread of a controller from before suite runs were kept in the "
                    "database, and that controller stopped; start the suite again"))


def downgrade() -> None:
    with op.batch_alter_table("suite_runs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_suite_runs_nightly_slot", type_="unique")
        batch_op.drop_column("nightly_slot")
        batch_op.drop_column("driver_until")
        batch_op.drop_column("driver")
        batch_op.drop_column("placement_deadline")
        batch_op.drop_column("work")
        batch_op.drop_column("job_ids")
        batch_op.drop_column("stage")

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("lost_agent_id")
        batch_op.drop_column("lost_lease_id")
        batch_op.drop_column("required_provider")
        batch_op.drop_column("required_runtime")

    with op.batch_alter_table("latest_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_latest_results_finished_at"))

    op.drop_table("latest_results")
    op.drop_table("job_outcome_counts")
    with op.batch_alter_table("job_evaluations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_evaluations_evaluated_at"))
