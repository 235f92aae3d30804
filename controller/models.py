"""The controller's tables (SQLModel over SQLAlchemy 2) and the small domain types beside them.

Timestamps are Unix seconds (float), the unit of the wire contract, so no time zone is ever
guessed. States and failure categories are stored as lower-case strings rather than database
enum types: a new state then needs no enum migration on PostgreSQL. Every table is declared
on ``SQLModel.metadata``; a migration tool (alembic) can take that metadata as its target.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Type, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import attributes as orm_attributes
from sqlalchemy.orm import configure_mappers
from sqlmodel import Field, SQLModel

from hilfarm.contract import RUNTIME_FOR_FORMAT, FailureCategory

# JSONB on PostgreSQL (indexable, compact), the generic JSON text column elsewhere.
JSONDocument = sa.JSON().with_variant(JSONB(), "postgresql")


class JobState(str, enum.Enum):
    QUEUED = "queued"
    LEASED = "leased"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES

    @property
    def active(self) -> bool:
        """Handed to an agent and not finished: the job holds a lease."""
        return self in ACTIVE_STATES


ACTIVE_STATES = frozenset({JobState.LEASED, JobState.RUNNING})
FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


def states_sql(states: Iterable[JobState]) -> List[sa.ColumnElement]:
    """``states`` for a fixed ``state IN (...)`` in a prebuilt statement: a list of plain values
    there is an expanding parameter, which SQLAlchemy renders into SQL again at every execution
    (a cost every lease, progress report and heartbeat batch paid)."""
    return [sa.literal(state.value) for state in sorted(states, key=lambda state: state.value)]


# The project of everything made without a project token: the operator's token, a controller
# run without tokens, and every row from before projects existed.
DEFAULT_PROJECT = "default"
# Baselines key on the runtime configuration (runtime_config below), kept in a column this long.
MAX_RUNTIME_CONFIG_CHARS = 500


@dataclass(frozen=True)
class Failure:
    category: FailureCategory
    message: str
    signal: int = 0
    detail: str = ""


class Artifact(SQLModel, table=True):
    __tablename__ = "artifacts"

    sha256: str = Field(primary_key=True, max_length=64)
    size_bytes: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    format: str = Field(max_length=16)
    filename: str = ""
    created_at: float


class ArtifactOwner(SQLModel, table=True):
    """A project that uploaded (and so may use) a stored artifact. Files are shared on disk by
    digest; a project gets a row only by sending the bytes itself, so a digest alone proves nothing."""

    __tablename__ = "artifact_owners"

    sha256: str = Field(primary_key=True, foreign_key="artifacts.sha256", max_length=64)
    project: str = Field(primary_key=True, max_length=100)
    created_at: float


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: str = Field(primary_key=True, max_length=64)
    created_at: float = Field(index=True)
    project: str = Field(default=DEFAULT_PROJECT, max_length=100,
                         sa_column_kwargs={"server_default": DEFAULT_PROJECT})


def pin_tag(agent_id: str) -> str:
    """The required tag that pins a job to one agent: every agent has it without declaring it
    (a confirmation re-run stays on the device that found the suspect; a person can pin with
    --tag agent:<id>)."""
    return f"agent:{agent_id}"


_Model = TypeVar("_Model", bound=SQLModel)


def detached_from_row(cls: Type[_Model], row: Any) -> _Model:
    """A detached model object from a row read with a Core statement, built the way the ORM
    builds one it loads (values set as read, no per-attribute events): thirty times cheaper than
    ``cls(**row)`` and several times cheaper than a Session.get, for the rows read on every
    call. Setting an attribute afterwards is tracked as usual."""
    return detached_from_mapping(cls, row._mapping)


def detached_from_mapping(cls: Type[_Model], values: Mapping[str, Any]) -> _Model:
    """:func:`detached_from_row` from the row's values (column name -> value, every column)."""
    manager = orm_attributes.manager_of_class(cls)
    if not manager.mapper.configured:
        # The ORM sets its attributes up at its first query; a process whose first read is one
        # of these (a GetJob right after a restart) must do it here, or reading an attribute fails.
        configure_mappers()
    obj = manager.new_instance()
    obj.__dict__.update(values)
    return obj


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        # The scheduler's question: the oldest queued jobs for one profile.
        sa.Index("ix_jobs_state_profile_created", "state", "device_profile", "created_at"),
        # A submission's queue-room check counts its project's queued jobs: without this index
        # the count read every job the project ever ran.
        sa.Index("ix_jobs_project_state", "project", "state"),
        # An agent's leased or running job (every lease, heartbeat, placement note and download
        # check asks): on agent_id alone each of those read every job the agent ever ran.
        sa.Index("ix_jobs_agent_state", "agent_id", "state"),
    )

    id: str = Field(primary_key=True, max_length=64)
    run_id: str = Field(foreign_key="runs.id", index=True, max_length=64)
    # The run's project, repeated so every listing filters on one indexed column.
    project: str = Field(default=DEFAULT_PROJECT, max_length=100, index=True,
                         sa_column_kwargs={"server_default": DEFAULT_PROJECT})
    model_sha256: str = Field(foreign_key="artifacts.sha256", max_length=64)
    model_name: str = ""
    model_format: str = Field(max_length=16)
    device_profile: str = Field(max_length=200)
    # JobSettings as a document mirroring the proto field names (wire.message_to_dict).
    settings: Dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSONDocument, nullable=False))
    required_tags: List[str] = Field(default_factory=list, sa_column=sa.Column(JSONDocument, nullable=False))
    state: str = Field(default=JobState.QUEUED.value, max_length=16)
    attempt: int = 0  # 0 until first leased; 1 for the first try
    max_attempts: int = 3
    agent_id: Optional[str] = Field(default=None, max_length=200)
    lease_id: Optional[str] = Field(default=None, index=True, max_length=64)
    lease_expires_at: Optional[float] = None
    created_at: float = Field(index=True)
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    progress: Optional[Dict[str, Any]] = Field(default=None, sa_column=sa.Column(JSONDocument))
    # The whole BenchmarkResult including the raw samples, mirroring the proto field names.
    result: Optional[Dict[str, Any]] = Field(default=None, sa_column=sa.Column(JSONDocument))
    failure_category: Optional[str] = Field(default=None, max_length=32)
    failure_message: Optional[str] = Field(default=None, sa_column=sa.Column(sa.Text))
    failure_signal: Optional[int] = None
    failure_detail: Optional[str] = Field(default=None, sa_column=sa.Column(sa.Text))
    # What an agent must have, as columns so the lease query matches them in SQL (filled by
    # Store.add_run from the settings and the model format; see ``runtime``).
    required_runtime: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    required_provider: str = Field(default="", max_length=200, sa_column_kwargs={"server_default": ""})
    # The lease an agent lost (it went silent, or the controller was away longer than the
    # lease): its late report is still stored when no later attempt has started.
    lost_lease_id: Optional[str] = Field(default=None, max_length=64)
    lost_agent_id: Optional[str] = Field(default=None, max_length=200)

    @classmethod
    def from_row(cls, row: Any) -> "Job":
        """A detached Job from a row the hot paths read with Core statements (detached_from_row):
        the lease, report and watch paths read jobs several times per job."""
        return detached_from_row(cls, row)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "Job":
        """:meth:`from_row` from the row's values (column name -> value, every column)."""
        return detached_from_mapping(cls, values)

    @property
    def job_state(self) -> JobState:
        return JobState(self.state)

    @property
    def failure(self) -> Optional[Failure]:
        if self.failure_category is None:
            return None
        return Failure(
            category=FailureCategory(self.failure_category),
            message=self.failure_message or "",
            signal=self.failure_signal or 0,
            detail=self.failure_detail or "",
        )

    def set_failure(self, failure: Optional[Failure]) -> None:
        if failure is None:
            self.failure_category = self.failure_message = self.failure_detail = None
            self.failure_signal = None
            return
        self.failure_category = failure.category.value
        self.failure_message = failure.message
        self.failure_signal = failure.signal
        self.failure_detail = failure.detail

    @property
    def runtime(self) -> str:
        """The runtime this job needs: named in its settings, else implied by the model format."""
        return self.settings.get("runtime") or RUNTIME_FOR_FORMAT.get(self.model_format, "")

    def fill_requirements(self) -> None:
        """Copy what the job needs of an agent into the columns the lease query reads."""
        self.required_runtime = self.runtime
        self.required_provider = self.settings.get("execution_provider", "") or ""


class Agent(SQLModel, table=True):
    __tablename__ = "agents"
    # A queued job is explained with the first agents of its profile: with this index that
    # reads those few rows, not every agent of the farm.
    __table_args__ = (sa.Index("ix_agents_profile_id", "profile", "id"),)

    id: str = Field(primary_key=True, max_length=200)
    profile: str = Field(max_length=200)
    tags: List[str] = Field(default_factory=list, sa_column=sa.Column(JSONDocument, nullable=False))
    # Capabilities as a document mirroring the proto field names.
    capabilities: Dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSONDocument, nullable=False))
    hostname: str = ""
    version: str = ""
    registered_at: float
    last_seen: float
    busy: bool = False
    draining: bool = False


# ---------------------------------------------------------------- identity and access
# Tokens are stored as sha256 digests of the whole token: they are 256-bit random strings, so a
# plain digest is as good as a slow hash and costs nothing per call (controller/auth.py).


class UserToken(SQLModel, table=True):
    """A person's (or a CI job's) token: a role in one project."""

    __tablename__ = "user_tokens"

    id: str = Field(primary_key=True, max_length=32)
    secret_hash: str = Field(max_length=64)
    project: str = Field(max_length=100, index=True)
    role: str = Field(max_length=16)  # viewer, submitter, admin
    name: str = Field(default="", max_length=200)
    created_at: float
    created_by: str = Field(default="", max_length=200)
    expires_at: Optional[float] = None
    revoked_at: Optional[float] = None


class EnrollmentToken(SQLModel, table=True):
    """What an admin hands to a new device: exchanged once (or ``uses_left`` times, until
    ``expires_at``) for an agent credential bound to a profile and tags."""

    __tablename__ = "enrollment_tokens"

    id: str = Field(primary_key=True, max_length=32)
    secret_hash: str = Field(max_length=64)
    device_profile: str = Field(max_length=200)
    tags: List[str] = Field(default_factory=list, sa_column=sa.Column(JSONDocument, nullable=False))
    agent_id: Optional[str] = Field(default=None, max_length=200)
    uses_left: Optional[int] = None  # None: unlimited until it expires
    expires_at: Optional[float] = None
    created_at: float
    created_by: str = Field(default="", max_length=200)
    revoked_at: Optional[float] = None


class AgentCredential(SQLModel, table=True):
    """An agent's own credential. At most one per agent id is not revoked."""

    __tablename__ = "agent_credentials"

    id: str = Field(primary_key=True, max_length=32)
    secret_hash: str = Field(max_length=64)
    agent_id: str = Field(max_length=200, index=True)
    device_profile: str = Field(max_length=200)
    tags: List[str] = Field(default_factory=list, sa_column=sa.Column(JSONDocument, nullable=False))
    enrolled_at: float
    enrolled_by: str = Field(default="", max_length=200)
    revoked_at: Optional[float] = None
class LatestResult(SQLModel, table=True):
    """The newest succeeded job of each model x device profile x runtime, kept in the
    transaction that stores the result, so the metrics read one row per key instead of
    scanning every result ever stored."""

    __tablename__ = "latest_results"

    model_name: str = Field(primary_key=True)
    device_profile: str = Field(primary_key=True, max_length=200)
    runtime: str = Field(primary_key=True, max_length=64)
    job_id: str = Field(max_length=64)
    finished_at: float = Field(index=True)


class JobOutcomeCount(SQLModel, table=True):
    """How many jobs reached each final state, counted in the transaction that finishes them, so
    a metrics scrape reads a few counters instead of counting every job ever run. A job whose
    lost lease came back with a late result is counted for both of its endings."""

    __tablename__ = "job_outcome_counts"

    outcome: str = Field(primary_key=True, max_length=16)  # succeeded, failed, cancelled
    reason: str = Field(primary_key=True, max_length=32)  # ok, cancelled, or the failure category
    device_profile: str = Field(primary_key=True, max_length=200)
    model_name: str = Field(primary_key=True)
    runtime: str = Field(primary_key=True, max_length=64)
    count: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))


def outcome_reason(job: "Job") -> str:
    """The reason label of a finished job: ok, cancelled, or whose fault the failure was."""
    if job.state == JobState.SUCCEEDED.value:
        return "ok"
    if job.state == JobState.CANCELLED.value:
        return "cancelled"
    return job.failure_category or FailureCategory.UNSPECIFIED.value


@dataclass(frozen=True)
class DeviceStatus:
    """An agent as people see it: its row plus what the controller derives about it."""

    agent: Agent
    state: str  # idle, busy, offline, draining
    current_job_id: str = ""


# ---------------------------------------------------------------- constraints, baselines, suite runs

_NON_FINITE_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _finite_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def _numbers_back(value: Any) -> Any:
    if isinstance(value, str):
        return _NON_FINITE_TEXT.get(value, value)
    if isinstance(value, dict):
        return {k: _numbers_back(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_back(v) for v in value]
    return value


class RegressionDocument(sa.types.TypeDecorator):
    """JSONB on PostgreSQL, JSON text elsewhere, holding documents the controller computes
    (verdicts, comparisons, headline values), which may carry NaN or infinity: a throughput
    over zero seconds, a ratio over a zero baseline. PostgreSQL's JSON has no such numbers and
    refuses the whole row, while SQLite stores them; so they are written as the strings of the
    proto3 JSON mapping on every backend and read back as the numbers they were."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.engine.Dialect) -> sa.types.TypeEngine:
        return dialect.type_descriptor(JSONB() if dialect.name == "postgresql" else sa.JSON())

    def process_bind_param(self, value: Any, dialect: sa.engine.Dialect) -> Any:
        return _finite_json(value)

    def process_result_value(self, value: Any, dialect: sa.engine.Dialect) -> Any:
        return _numbers_back(value)



class JobEvaluation(SQLModel, table=True):
    """The budgets a job is judged by and, once its result is stored, the verdicts."""

    __tablename__ = "job_evaluations"

    job_id: str = Field(primary_key=True, foreign_key="jobs.id", max_length=64)
    constraint_set: str = ""
    budgets: List[Dict[str, Any]] = Field(default_factory=list, sa_column=sa.Column(RegressionDocument, nullable=False))
    verdicts: Optional[List[Dict[str, Any]]] = Field(default=None, sa_column=sa.Column(RegressionDocument))
    evaluated_at: Optional[float] = Field(default=None, index=True)  # the newest judged first, for metrics


class BaselineRow(SQLModel, table=True):
    """One acceptance of a job as the baseline; the newest row of a key is the baseline."""

    __tablename__ = "baselines"
    __table_args__ = (sa.Index("ix_baselines_key", "name", "model_name", "device_profile", "runtime_config"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    project: str = Field(default=DEFAULT_PROJECT, max_length=100,
                         sa_column_kwargs={"server_default": DEFAULT_PROJECT})
    name: str = Field(max_length=200)
    model_name: str = Field(max_length=500)
    device_profile: str = Field(max_length=200)
    runtime_config: str = Field(max_length=500)
    job_id: str = Field(foreign_key="jobs.id", max_length=64)
    model_sha256: str = Field(max_length=64)
    suite: str = ""
    accepted_at: float = Field(index=True)


class SuiteRunRow(SQLModel, table=True):
    """One run of a suite. While it runs it is a state machine that any controller replica
    advances (suites.SuiteRunner.advance): ``stage`` says what it waits for, ``work`` holds the
    cases judged so far, and ``driver`` / ``driver_until`` is the short lease of the replica
    advancing it now, so two never do at once and a restarted controller resumes it."""

    __tablename__ = "suite_runs"
    __table_args__ = (
        # A nightly slot (suite x due time) runs once, however many replicas read the schedule.
        sa.UniqueConstraint("suite", "nightly_slot", name="uq_suite_runs_nightly_slot"),
    )

    id: str = Field(primary_key=True, max_length=64)
    project: str = Field(default=DEFAULT_PROJECT, max_length=100,
                         sa_column_kwargs={"server_default": DEFAULT_PROJECT})
    suite: str = Field(index=True, max_length=200)
    trigger: str = "cli"
    baseline: str = ""
    state: str = "running"
    outcome: str = ""
    started_at: float = Field(index=True)
    finished_at: Optional[float] = None
    message: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    accept: bool = False
    accepted: bool = False
    spec: Dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(RegressionDocument, nullable=False))
    # measuring (the suite's jobs), confirming (re-runs of suspected regressions), done
    stage: str = Field(default="measuring", max_length=16, sa_column_kwargs={"server_default": "done"})
    job_ids: List[str] = Field(default_factory=list,
                               sa_column=sa.Column(RegressionDocument, nullable=False, server_default="[]"))
    work: Optional[Dict[str, Any]] = Field(default=None, sa_column=sa.Column(RegressionDocument))
    placement_deadline: Optional[float] = None
    driver: Optional[str] = Field(default=None, max_length=64)
    driver_until: Optional[float] = None
    nightly_slot: Optional[float] = None


class SuiteCaseRow(SQLModel, table=True):
    __tablename__ = "suite_cases"
    __table_args__ = (sa.Index("ix_suite_cases_key", "model_name", "device_profile", "finished_at"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    suite_run_id: str = Field(foreign_key="suite_runs.id", index=True, max_length=64)
    position: int = 0
    model_name: str = Field(max_length=500)
    model_sha256: str = Field(max_length=64)
    device_profile: str = Field(max_length=200)
    runtime_config: str = ""
    outcome: str = ""
    job_id: str = ""
    baseline_job_id: str = ""
    verdicts: List[Dict[str, Any]] = Field(default_factory=list, sa_column=sa.Column(RegressionDocument, nullable=False))
    comparison: Optional[Dict[str, Any]] = Field(default=None, sa_column=sa.Column(RegressionDocument))
    confirmation: Optional[Dict[str, Any]] = Field(default=None, sa_column=sa.Column(RegressionDocument))
    confirm_job_ids: List[str] = Field(default_factory=list, sa_column=sa.Column(RegressionDocument, nullable=False))
    message: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    values: Dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(RegressionDocument, nullable=False))
    finished_at: Optional[float] = None
    duration_seconds: float = 0.0


def runtime_config(job: Job) -> str:
    """The runtime and the settings that change its speed: a baseline only compares like with like."""
    s = job.settings
    parts = [job.runtime or "auto"]
    for key, label in (("execution_provider", "provider"), ("threads", "threads"),
                       ("graph_optimization", "opt"), ("tflite_delegate_path", "delegate")):
        if s.get(key):
            parts.append(f"{label}={s[key]}")
    if s.get("tflite_disable_xnnpack"):
        parts.append("no-xnnpack")
    for shape in s.get("input_shapes", []):
        parts.append(f"{shape.get('name')}={'x'.join(str(d) for d in shape.get('dims', []))}")
    return " ".join(parts)
