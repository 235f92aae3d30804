"""Tables and queries for constraints, baselines and regression suites.

Kept beside the core store rather than in it: these tables only ever reference jobs. Like
every table, they are created and changed by the migrations in controller/migrations/versions/
(a change here needs a new revision: ``hilfarm controller migrate --new``). They share the
core ``Store``'s engine, sessions and write lock.
"""
from __future__ import annotations

import math
import uuid
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, Session, SQLModel, select

from .errors import NotFound
from .models import DEFAULT_PROJECT, Job
from .store import Store

LAST_ACCEPTED = "@last"
# Baselines key on the runtime configuration (runtime_config below), kept in a column this long.
MAX_RUNTIME_CONFIG_CHARS = 500
# The most rows a metrics scrape reads from one table here.
MAX_SCRAPE_ROWS = 5000

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


# Read for every job a user looks at: built once (building a statement costs more than running it).
_EVALUATIONS = sa.select(JobEvaluation.__table__).where(
    JobEvaluation.__table__.c.job_id.in_(sa.bindparam("ids", expanding=True)))


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


class RegressionStore:
    """Queries over the tables above, through the core store's sessions."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ constraints

    def add_budgets(self, job_budgets: Dict[str, List[Dict[str, Any]]], constraint_set: str) -> None:
        if not job_budgets:
            return
        with self.store._write() as s:
            for job_id, budgets in job_budgets.items():
                s.add(JobEvaluation(job_id=job_id, constraint_set=constraint_set, budgets=list(budgets)))

    def evaluation_in(self, s: Session, job_id: str) -> Optional[JobEvaluation]:
        return s.get(JobEvaluation, job_id)

    def evaluations(self, job_ids: Iterable[str]) -> Dict[str, JobEvaluation]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        with self.store.engine.connect() as conn:
            rows = conn.execute(_EVALUATIONS, {"ids": ids}).all()
        return {r.job_id: JobEvaluation(**r._mapping) for r in rows}

    def latest_verdicts(self, limit: int = MAX_SCRAPE_ROWS) -> List[Tuple[Job, JobEvaluation]]:
        """The newest judged job of each (model, profile, runtime) with its verdicts, among the
        newest ``limit`` judgements (a scrape reads no more). The jobs carry their identity and
        settings, not their result documents."""
        jobs, evaluations = Job.__table__, JobEvaluation.__table__
        light = [c for c in jobs.c if c.name not in ("result", "progress")]
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(*light, *evaluations.c)
                .join(evaluations, evaluations.c.job_id == jobs.c.id)
                .where(evaluations.c.evaluated_at.is_not(None), jobs.c.finished_at.is_not(None))
                .order_by(evaluations.c.evaluated_at.desc(), jobs.c.finished_at.desc(), jobs.c.id.desc())
                .limit(limit)
            ).all()
        latest: Dict[Tuple[str, str, str], Tuple[Job, JobEvaluation]] = {}
        for row in rows:  # newest first
            values = row._mapping
            job = Job(**{c.name: values[c] for c in light})
            key = (job.model_name, job.device_profile, job.runtime)
            if key not in latest:
                latest[key] = (job, JobEvaluation(**{c.name: values[c] for c in evaluations.c}))
        return list(latest.values())

    # ------------------------------------------------------------ baselines

    @staticmethod
    def baseline_rows(name: str, jobs: Sequence[Job], *, suite: str, now: float,
                      project: str = DEFAULT_PROJECT) -> List[BaselineRow]:
        """The rows that make ``jobs`` the baseline ``name`` of ``project`` (for a caller's own
        transaction)."""
        return [
            BaselineRow(project=project, name=name, model_name=j.model_name, device_profile=j.device_profile,
                        runtime_config=runtime_config(j), job_id=j.id, model_sha256=j.model_sha256,
                        suite=suite, accepted_at=now + i * 1e-6)
            for i, j in enumerate(jobs)
        ]

    def accept(self, name: str, jobs: Sequence[Job], *, suite: str, now: float,
               project: str = DEFAULT_PROJECT) -> List[BaselineRow]:
        rows = self.baseline_rows(name, jobs, suite=suite, now=now, project=project)
        with self.store._write() as s:
            for row in rows:
                s.add(row)
        return rows

    def find_baseline(self, ref: str, model_name: str, profile: str, config: str, *,
                      project: str = DEFAULT_PROJECT) -> Optional[BaselineRow]:
        """The newest acceptance in ``project`` under ``ref`` (a name, or ``@last`` for any name)."""
        q = select(BaselineRow).where(BaselineRow.project == project,
                                      BaselineRow.model_name == model_name, BaselineRow.device_profile == profile,
                                      BaselineRow.runtime_config == config)
        if ref and ref != LAST_ACCEPTED:
            q = q.where(BaselineRow.name == ref)
        # The id breaks ties of the clock: the later acceptance wins on every backend.
        q = q.order_by(BaselineRow.accepted_at.desc(), BaselineRow.id.desc()).limit(1)  # type: ignore[attr-defined,union-attr]
        with self.store._read() as s:
            return s.exec(q).first()

    def list_baselines(self, *, name: str = "", model_name: str = "", profile: str = "",
                       project: Optional[str] = None) -> List[BaselineRow]:
        """The current baseline of every key (newest acceptance wins), of ``project`` (None: all)."""
        q = select(BaselineRow)
        if project is not None:
            q = q.where(BaselineRow.project == project)
        if name:
            q = q.where(BaselineRow.name == name)
        if model_name:
            q = q.where(BaselineRow.model_name == model_name)
        if profile:
            q = q.where(BaselineRow.device_profile == profile)
        with self.store._read() as s:
            rows = s.exec(q.order_by(BaselineRow.accepted_at, BaselineRow.id)).all()  # type: ignore[arg-type]
        current: Dict[Tuple[str, str, str, str, str], BaselineRow] = {}
        for row in rows:
            current[(row.project, row.name, row.model_name, row.device_profile, row.runtime_config)] = row
        return sorted(current.values(),
                      key=lambda r: (r.project, r.name, r.model_name, r.device_profile, r.runtime_config))

    # ------------------------------------------------------------ suite runs

    def create_suite_run(self, suite: str, *, trigger: str, baseline: str, spec: Dict[str, Any], accept: bool,
                         now: float, project: str = DEFAULT_PROJECT) -> SuiteRunRow:
        row = SuiteRunRow(id=uuid.uuid4().hex, project=project, suite=suite, trigger=trigger, baseline=baseline, spec=spec,
                          accept=accept, started_at=now)
        with self.store._write() as s:
            s.add(row)
        return row

    def save_suite_run(self, run: SuiteRunRow, cases: Sequence[SuiteCaseRow] = ()) -> None:
        with self.store._write() as s:
            s.merge(run)
            for case in cases:
                merged = s.merge(case)
                s.flush()
                case.id = merged.id

    def get_suite_run(self, run_id: str, *, project: Optional[str] = None) -> Tuple[SuiteRunRow, List[SuiteCaseRow]]:
        with self.store._read() as s:
            run = s.get(SuiteRunRow, run_id)
            if run is None or (project is not None and run.project != project):
                raise NotFound(f"suite run {run_id!r} does not exist on this controller")
            cases = s.exec(select(SuiteCaseRow).where(SuiteCaseRow.suite_run_id == run_id)
                           .order_by(SuiteCaseRow.position)).all()
            return run, list(cases)

    def list_suite_runs(self, *, suite: str = "", limit: int = 50, project: Optional[str] = None) -> List[SuiteRunRow]:
        q = select(SuiteRunRow)
        if project is not None:
            q = q.where(SuiteRunRow.project == project)
        if suite:
            q = q.where(SuiteRunRow.suite == suite)
        # Without a tie-breaker PostgreSQL may order runs started at the same instant differently
        # from one query (or one LIMIT) to the next.
        q = q.order_by(SuiteRunRow.started_at.desc(), SuiteRunRow.id.desc()).limit(limit)  # type: ignore[attr-defined]
        with self.store._read() as s:
            return list(s.exec(q).all())

    def suite_run_counts(self) -> Dict[Tuple[str, str], int]:
        with self.store._read() as s:
            rows = s.exec(select(SuiteRunRow.suite, SuiteRunRow.outcome, sa.func.count())
                          .where(SuiteRunRow.state == "finished")
                          .group_by(SuiteRunRow.suite, SuiteRunRow.outcome)).all()
        return {(suite, outcome): int(n) for suite, outcome, n in rows}

    def latest_cases(self, limit: int = MAX_SCRAPE_ROWS) -> List[SuiteCaseRow]:
        """The newest finished case of each (model, profile, runtime configuration), among the
        newest ``limit`` cases (a scrape reads no more)."""
        with self.store._read() as s:
            rows = s.exec(select(SuiteCaseRow).where(SuiteCaseRow.finished_at.is_not(None))  # type: ignore[union-attr]
                          .order_by(SuiteCaseRow.finished_at.desc(), SuiteCaseRow.id.desc())  # type: ignore[union-attr]
                          .limit(limit)).all()
        latest: Dict[Tuple[str, str, str], SuiteCaseRow] = {}
        for row in rows:
            latest.setdefault((row.model_name, row.device_profile, row.runtime_config), row)
        return list(latest.values())

    def history(self, model_name: str, profile: str, *, config: str = "", limit: int = 365,
                project: Optional[str] = None) -> List[SuiteCaseRow]:
        """Finished suite cases of one model on one profile (in suite runs of ``project``), oldest first."""
        q = select(SuiteCaseRow)
        if project is not None:
            q = q.join(SuiteRunRow, SuiteRunRow.id == SuiteCaseRow.suite_run_id).where(SuiteRunRow.project == project)
        q = q.where(SuiteCaseRow.model_name == model_name,
                                       SuiteCaseRow.device_profile == profile,
                                       SuiteCaseRow.finished_at.is_not(None))  # type: ignore[union-attr]
        if config:
            q = q.where(SuiteCaseRow.runtime_config == config)
        q = q.order_by(SuiteCaseRow.finished_at.desc(), SuiteCaseRow.id.desc()).limit(limit)  # type: ignore[union-attr]
        with self.store._read() as s:
            return list(reversed(s.exec(q).all()))
