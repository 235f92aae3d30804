"""Queries for constraints, baselines and regression suites (their tables are in models.py).

A repository of its own beside the job repository: these tables only ever reference jobs. They
share the job repository's database.Database: its engine, transactions and write lock.
"""
from __future__ import annotations

import uuid
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlmodel import Session, select

from .database import Database
from .errors import NotFound
from .models import DEFAULT_PROJECT, BaselineRow, Job, JobEvaluation, SuiteCaseRow, SuiteRunRow, runtime_config

LAST_ACCEPTED = "@last"
# The most rows a metrics scrape reads from one table here.
MAX_SCRAPE_ROWS = 5000

# Read for every job a user looks at: built once (building a statement costs more than running it).
_EVALUATIONS = sa.select(JobEvaluation.__table__).where(
    JobEvaluation.__table__.c.job_id.in_(sa.bindparam("ids", expanding=True)))


class RegressionStore:
    """Queries over the regression tables, in the transactions of the controller's ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------ constraints

    def add_budgets(self, job_budgets: Dict[str, List[Dict[str, Any]]], constraint_set: str) -> None:
        if not job_budgets:
            return
        with self.db.write() as s:
            for job_id, budgets in job_budgets.items():
                s.add(JobEvaluation(job_id=job_id, constraint_set=constraint_set, budgets=list(budgets)))

    def evaluation_in(self, s: Session, job_id: str) -> Optional[JobEvaluation]:
        return s.get(JobEvaluation, job_id)

    def evaluations(self, job_ids: Iterable[str]) -> Dict[str, JobEvaluation]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        with self.db.connect() as conn:
            rows = conn.execute(_EVALUATIONS, {"ids": ids}).all()
        return {r.job_id: JobEvaluation(**r._mapping) for r in rows}

    def latest_verdicts(self, limit: int = MAX_SCRAPE_ROWS) -> List[Tuple[Job, JobEvaluation]]:
        """The newest judged job of each (model, profile, runtime) with its verdicts, among the
        newest ``limit`` judgements (a scrape reads no more). The jobs carry their identity and
        settings, not their result documents."""
        jobs, evaluations = Job.__table__, JobEvaluation.__table__
        light = [c for c in jobs.c if c.name not in ("result", "progress")]
        with self.db.connect() as conn:
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
        with self.db.write() as s:
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
        with self.db.read() as s:
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
        with self.db.read() as s:
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
        with self.db.write() as s:
            s.add(row)
        return row

    def save_suite_run(self, run: SuiteRunRow, cases: Sequence[SuiteCaseRow] = ()) -> None:
        with self.db.write() as s:
            s.merge(run)
            for case in cases:
                merged = s.merge(case)
                s.flush()
                case.id = merged.id

    def get_suite_run(self, run_id: str, *, project: Optional[str] = None) -> Tuple[SuiteRunRow, List[SuiteCaseRow]]:
        with self.db.read() as s:
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
        with self.db.read() as s:
            return list(s.exec(q).all())

    def suite_run_counts(self) -> Dict[Tuple[str, str], int]:
        with self.db.read() as s:
            rows = s.exec(select(SuiteRunRow.suite, SuiteRunRow.outcome, sa.func.count())
                          .where(SuiteRunRow.state == "finished")
                          .group_by(SuiteRunRow.suite, SuiteRunRow.outcome)).all()
        return {(suite, outcome): int(n) for suite, outcome, n in rows}

    def latest_cases(self, limit: int = MAX_SCRAPE_ROWS) -> List[SuiteCaseRow]:
        """The newest finished case of each (model, profile, runtime configuration), among the
        newest ``limit`` cases (a scrape reads no more)."""
        with self.db.read() as s:
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
        with self.db.read() as s:
            return list(reversed(s.exec(q).all()))
