"""Runs, jobs and their leases in the controller's database: submission, reads, cancelling,
leasing, progress, results, lost leases, and the counters the metrics read.

One ``JobRepository`` works through one database.Database (its engine and transactions).
SQLite (the embedded default) and PostgreSQL (several controller replicas sharing one database)
run the same code. Each job state transition happens inside one transaction here, so the rules
that must hold under concurrency (a job is leased to one agent at a time, a result is stored
once) live next to the SQL that enforces them.

Concurrency:
- PostgreSQL: the rows a transition reads are locked (``SELECT ... FOR UPDATE``); leasing and
  reaping skip rows another replica holds (``SKIP LOCKED``), so replicas never block each other.
- SQLite: ``FOR UPDATE`` is not available; every write transaction of this process takes one lock
  instead. A read transaction that later writes could otherwise fail with SQLITE_BUSY when another
  thread committed in between. Several *processes* on one SQLite file are not supported.

Lock order, so PostgreSQL transactions never deadlock: job rows first, then agent rows, then
``latest_results``. The lease protocol marks an agent seen in the transaction that leases,
renews or ends its job, through agent_repository's session-level functions, after the job rows
are locked; the agent repository releases and renews leases through this repository's
``release_leases_in``/``renew_leases_in`` (see agent_repository.py for why it goes that way).

Every write transaction records the jobs it changed; after the commit they go to the
database's change feed (a notifications.ChangeFeed), and on PostgreSQL also out to the other
replicas with ``pg_notify`` in the same transaction, so waiters wake on commits rather than
polling.

A lease a job loses (its agent went silent, or the controller was away) is remembered in
``lost_lease_id``: the late report of that attempt is still stored, and the job succeeds, as long
as no later attempt has started. ``accepted`` is answered only for a report that is stored.

Rows returned are detached from their session; change state only through the methods here.
"""
from __future__ import annotations

import itertools
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlmodel import Session, SQLModel, select

from .agent_repository import (
    AGENT_LEASE_STATE, agent_asked, agent_for_lease, agent_lease_state, all_agents, mark_asked, mark_working,
)
from .database import Database
from .errors import AmbiguousId, FailedPrecondition, NotFound
from .models import (
    ACTIVE_STATES,
    Agent,
    Failure,
    FailureCategory,
    Job,
    JobEvaluation,
    JobOutcomeCount,
    JobState,
    LatestResult,
    Run,
    outcome_reason,
    pin_tag,
    states_sql,
)
from .notifications import CHANNEL, Change, ChangeFeed, encode, notify_in_statement

log = logging.getLogger("hilfarm.controller")

_ACTIVE = states_sql(ACTIVE_STATES)
_JOBS = Job.__table__
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
# Job ids are uuid4 hex. A shortened one (as git takes a commit) needs this many characters,
# and an ambiguous one is answered with at most this many candidates.
MIN_JOB_ID_PREFIX = 4
_JOB_ID_PREFIX = re.compile(r"[0-9a-f]{%d,63}" % MIN_JOB_ID_PREFIX)
_MAX_CANDIDATES = 10

# Statements of the hot paths, built once: building a SQLAlchemy statement costs several times
# more than running it on SQLite, and a thousand agents run these hundreds of times a second.
_B = sa.bindparam
_GET_JOB = sa.select(_JOBS).where(_JOBS.c.id == _B("job_id"))


def _holds(agent: str) -> sa.Select:
    """A lease the agent bound as ``agent`` holds (its job's id), if any."""
    return sa.select(_JOBS.c.id).where(_JOBS.c.agent_id == _B(agent), _JOBS.c.state.in_(_ACTIVE)).limit(1)


_HOLDS = _holds("agent_id")
_COUNT_QUEUED = sa.select(sa.func.count()).select_from(_JOBS).where(_JOBS.c.project == _B("project"),
                                                                     _JOBS.c.state == JobState.QUEUED.value)


def _queued_of(profile: str) -> sa.Select:
    """A queued job of the device profile bound as ``profile`` (its id), if any."""
    return sa.select(_JOBS.c.id).where(_JOBS.c.state == JobState.QUEUED.value,
                                       _JOBS.c.device_profile == _B(profile)).limit(1)


_QUEUED_OF_PROFILE = _queued_of("profile")
# Agents whose kind (profile, tags, runtimes) leasing remembers; past this, it starts again.
MAX_REMEMBERED_AGENTS = 100_000
_LEASE_VALUES = dict(
    state=JobState.LEASED.value, agent_id=_B("agent"), lease_id=_B("lease"), lease_expires_at=_B("expires"),
    attempt=_JOBS.c.attempt + 1, started_at=_B("now"), progress=None, lost_lease_id=None, lost_agent_id=None,
)
# A renewal never shortens a lease (one kept for the restart grace, say).
_RENEWED = sa.case((_JOBS.c.lease_expires_at > _B("expires"), _JOBS.c.lease_expires_at), else_=_B("expires"))
_PROGRESS = (sa.update(_JOBS)
             .where(_JOBS.c.lease_id == _B("lease"), _JOBS.c.agent_id == _B("agent"), _JOBS.c.state.in_(_ACTIVE))
             .values(progress=_B("progress", type_=_JOBS.c.progress.type), state=JobState.RUNNING.value,
                     lease_expires_at=_RENEWED)
             .returning(_JOBS.c.id, _JOBS.c.run_id, _JOBS.c.device_profile))
# PostgreSQL: the same as a write of its own (Database.write_alone), sending its notification.
_PROGRESSED = _PROGRESS.cte("progressed")
_PROGRESS_ALONE = sa.select(_PROGRESSED.c.id, _PROGRESSED.c.run_id, _PROGRESSED.c.device_profile,
                            notify_in_statement(_PROGRESSED.c.id, _PROGRESSED.c.run_id, _PROGRESSED.c.device_profile))
# The column notify_in_statement adds to a row.
_NOTIFIED = "notified"
# A batch of heartbeats skips rows another transaction holds (on PostgreSQL): that transaction
# (a lease, a progress report, a result) renews or ends the lease itself, and waiting for it
# would hold up every heartbeat of the batch.
_RENEW_LEASES = sa.update(_JOBS).where(_JOBS.c.id.in_(
    sa.select(_JOBS.c.id).where(_JOBS.c.agent_id.in_(_B("ids", expanding=True)), _JOBS.c.state.in_(_ACTIVE))
    .with_for_update(skip_locked=True).scalar_subquery())).values(lease_expires_at=_RENEWED)
_JOB_FOR_REPORT = sa.select(_JOBS).where(_JOBS.c.id == _B("job_id")).with_for_update()
_STORE_OUTCOME = sa.update(_JOBS).where(_JOBS.c.id == _B("job_id")).values(
    state=_B("state"), result=_B("result", type_=_JOBS.c.result.type), failure_category=_B("category"),
    failure_message=_B("message"), failure_signal=_B("signal"), failure_detail=_B("detail"),
    finished_at=_B("finished"), lease_expires_at=None, lease_id=_B("lease"), agent_id=_B("agent"),
    lost_lease_id=None, lost_agent_id=None, started_at=_B("started"))
# The columns a lease's take adds to the job it returns (_lease_statements): whether another
# queued job fits the agent, and (PostgreSQL) whether the job has budgets to be judged by.
_ANOTHER_FITS = "another_fits"
_HAS_BUDGETS = "has_budgets"
# The look's columns in look_and_take's row: a lease held, a fitting job, a queued job of the
# profile, the agent's registered_at and draining (the columns of _LeaseStatements.look).
_LOOKED = ("looked_holds", "looked_fitting", "looked_queued", "looked_registered_at", "looked_draining")
# Jobs leased by this process whose budgets record_result need not read (no budgets); past this,
# it starts again (a job leased by another replica, or before a restart, is simply not known).
MAX_REMEMBERED_LEASES = 100_000
_EVALUATIONS = JobEvaluation.__table__
# A job with its budgets and verdicts, the evaluation's columns prefixed (a watcher's read: one
# statement, where reading the verdicts apart cost a watched job two round trips more).
_EVALUATION_PREFIX = "evaluation_"
_JUDGED_JOBS = (sa.select(_JOBS, *[c.label(_EVALUATION_PREFIX + c.name) for c in _EVALUATIONS.c])
                .select_from(_JOBS.outerjoin(_EVALUATIONS, _EVALUATIONS.c.job_id == _JOBS.c.id)))
_GET_JOB_JUDGED = _JUDGED_JOBS.where(_JOBS.c.id == _B("job_id"))
_GET_JOBS_JUDGED = _JUDGED_JOBS.where(_JOBS.c.id.in_(_B("job_ids", expanding=True)))
_LATEST = LatestResult.__table__
_COUNTS = JobOutcomeCount.__table__


def _budgets_of(job_id: Any) -> sa.Select:
    """The budgets a job is judged by (no row: it has none), read with its result (record_result)."""
    return sa.select(_EVALUATIONS.c.budgets).where(_EVALUATIONS.c.job_id == job_id)


def _keep_newest(insert: Any) -> Any:
    """An insert of a latest result that, for a model x profile x runtime that has one, replaces
    it only with a newer one (an upsert: two replicas storing results of one model at once do not
    collide)."""
    return insert.on_conflict_do_update(
        index_elements=[_LATEST.c.model_name, _LATEST.c.device_profile, _LATEST.c.runtime],
        set_={"job_id": insert.excluded.job_id, "finished_at": insert.excluded.finished_at},
        where=_LATEST.c.finished_at <= insert.excluded.finished_at)


def _add_to_count(insert: Any) -> Any:
    """An insert of an outcome count of one that adds one to the count already there."""
    return insert.on_conflict_do_update(
        index_elements=[_COUNTS.c.outcome, _COUNTS.c.reason, _COUNTS.c.device_profile, _COUNTS.c.model_name,
                        _COUNTS.c.runtime],
        set_={"count": _COUNTS.c.count + 1})


_BUDGETS_OF_JOB = _budgets_of(_B("job_id"))
# The column the PostgreSQL statement that stores a usual report adds to the job it returns.
_BUDGETS = "budgets"
_INSERT_RUN = sa.insert(Run.__table__)
_INSERT_JOB = sa.insert(_JOBS)
# PostgreSQL: a submission of at most this many jobs is written in one statement
# (_submission_statement); a larger one (a suite's night, a wide sweep) in a transaction of a
# statement per table. Each shape of submission is a statement built once.
ONE_STATEMENT_MAX_JOBS = 100
_SUBMISSION_SHAPES_REMEMBERED = 256
SubmissionShape = Tuple[Tuple[Tuple[sa.Table, Tuple[str, ...]], ...], int]


def _submission_statement(shape: SubmissionShape) -> sa.Select:
    """PostgreSQL: the rows of a submission (its runs, jobs and the rows stored with them)
    written by one statement, which sends the other replicas its notices. ``shape``: each row's
    table and columns, in the order written, and how many notices; the value of row ``i``'s
    column ``c`` is bound as ``r{i}_{c}``, notice ``n`` as ``notice{n}``. Committed by itself
    (Database.write_alone), a submission is one round trip where a transaction of a statement
    per table took four (BEGIN, the runs, the jobs, NOTIFY with COMMIT); the notices go out
    when, and only if, every row is in (foreign keys are checked at the end of the statement).
    Each row is an INSERT of its own: SQLAlchemy compiles an INSERT of several rows again at
    every use, which cost more CPU (4.4 against 1.1 ms a submission) than the round trips saved."""
    rows, notices = shape
    inserts = [sa.insert(table).values({column: _B(f"r{i}_{column}", type_=table.c[column].type) for column in columns})
               .cte(f"row{i}") for i, (table, columns) in enumerate(rows)]
    return sa.select(*[sa.func.pg_notify(CHANNEL, _B(f"notice{n}", type_=sa.Text())) for n in range(notices)]
                     ).add_cte(*inserts)


def _usual_report_statement(*, alone: bool = False) -> sa.Select:
    """PostgreSQL: a report from the agent that holds the job's lease, stored in one statement
    (record_result): the job's outcome, the agent marked as having asked, the latest result of
    its model and the count of its outcome, returning the job as stored and its budgets. Five
    round trips fewer per job than a statement each, at 1,000 agents the most a result cost.
    Every part acts only on the row the first one stored: for any other report (stale, repeated,
    reclaimed, cancelled) nothing is written and record_result takes its general path. Common
    table expressions that write are PostgreSQL's (SQLite runs each statement alone, where a
    statement costs no round trip). No parameter is named as a column of a table the statement
    writes: SQLAlchemy takes such a parameter for a value to set.

    ``alone``: the statement as a write of its own (Database.write_alone), for a job without
    budgets (their verdicts are written in the transaction that stores the result): it also
    sends the job's notification, and writes nothing for a job that has budgets after all."""
    jobs, latest, counts = _JOBS, _LATEST, _COUNTS
    no_budgets = [~sa.exists(_budgets_of(jobs.c.id))] if alone else []
    stored = (sa.update(jobs)
              .where(jobs.c.id == _B("reported_job"), jobs.c.lease_id == _B("lease"), jobs.c.agent_id == _B("agent"),
                     jobs.c.attempt == _B("reported_attempt"), jobs.c.state.in_(_ACTIVE), *no_budgets)
              .values(state=_B("outcome"), result=_B("outcome_result", type_=jobs.c.result.type),
                      failure_category=_B("category"), failure_message=_B("message"), failure_signal=_B("signal"),
                      failure_detail=_B("detail"), finished_at=_B("now"), lease_expires_at=None,
                      lost_lease_id=None, lost_agent_id=None)
              .returning(*jobs.c)
              .cte("stored"))
    # The parts lock their rows in the order record_result's general path does (job, agent,
    # latest result, outcome count), or two reports, one down each path, could deadlock: each
    # part waits on the one before (``after``), as PostgreSQL otherwise runs parts the main
    # query does not read in an order of its own.
    def after(cte: Any) -> sa.ColumnElement:
        return sa.select(sa.func.count()).select_from(cte).scalar_subquery() >= 0

    asked = (agent_asked(False, sa.exists(sa.select(stored.c.id)), agent="agent")
             .returning(Agent.__table__.c.id).cte("asked"))
    newest = pg_dialect.insert(latest).from_select(
        [latest.c.model_name, latest.c.device_profile, latest.c.runtime, latest.c.job_id, latest.c.finished_at],
        sa.select(stored.c.model_name, stored.c.device_profile, stored.c.required_runtime, stored.c.id,
                  stored.c.finished_at).where(stored.c.state == JobState.SUCCEEDED.value, after(asked)))
    newest = _keep_newest(newest).returning(latest.c.job_id).cte("newest")
    counted = pg_dialect.insert(counts).from_select(
        [counts.c.outcome, counts.c.reason, counts.c.device_profile, counts.c.model_name, counts.c.runtime,
         counts.c.count],
        sa.select(stored.c.state, _B("outcome_reason", type_=sa.String()), stored.c.device_profile, stored.c.model_name,
                  stored.c.required_runtime, sa.literal(1, sa.BigInteger())).where(after(newest)))
    counted = _add_to_count(counted).returning(counts.c.count).cte("counted")
    budgets = _budgets_of(stored.c.id).scalar_subquery().label(_BUDGETS)
    notified = [notify_in_statement(stored.c.id, stored.c.run_id, stored.c.device_profile, finished=True)] if alone else []
    return sa.select(*stored.c, budgets, *notified).where(after(counted))


def _column_values(row: SQLModel) -> Dict[str, Any]:
    """The values of a table model's row for a Core INSERT, as the ORM would send them: a primary
    key left None is left to the database."""
    table = type(row).__table__
    return {column.key: getattr(row, column.key) for column in table.columns
            if not (column.primary_key and getattr(row, column.key) is None)}


@dataclass(frozen=True)
class _LeaseStatements:
    """The statements that lease to one kind of agent (profile, tags, runtimes)."""

    fits: sa.ColumnElement  # the queued jobs this kind of agent can run
    # (held lease, fitting job, any queued job of the profile, the agent's registered_at and
    # draining), without locks
    look: sa.Select
    # Lease the oldest fitting job, locking only its row; returns it and _ANOTHER_FITS. On
    # PostgreSQL it also marks the agent as having asked (busy when it took a job).
    take: sa.Executable
    take_marks_asked: bool
    # PostgreSQL: ``take`` as a write of its own (Database.write_alone), sending its notification.
    take_alone: Optional[sa.Executable]
    # PostgreSQL: the look and ``take_alone`` as one statement, for an agent whose kind is known
    # (its registration bound as ``registration``): it takes a job only where the look says the
    # slow way would (no lease held, a fitting job queued, not draining, the same registration),
    # and returns the look's columns (_LOOKED) with the job taken, if any. One round trip a try.
    look_and_take: Optional[sa.Executable]


@dataclass(frozen=True)
class _AgentKind:
    """What leasing remembers of a registered agent: it changes only when the agent registers
    again (``registered_at`` says which registration it is)."""

    registered_at: float
    profile: str
    statements: _LeaseStatements
    allowed_tags: Any  # the statements' ``allowed_tags`` value


@dataclass(frozen=True)
class LeaseAttempt:
    """What one try to lease gave: the job (None when nothing fit), and whether queued jobs of
    the agent's profile are left (a waiter that found none it could take then lets the next
    agent of that profile try)."""

    job: Optional[Job]
    more_queued: bool
    profile: str  # the agent's device profile, as registered
    # With a job: whether another queued job fitted the agent when it took this one (False: none
    # was left for it, so its next ask need not look before waiting for work to be queued).
    another_fits: bool = True


def _with_notice(taken: Any) -> sa.Select:
    """PostgreSQL: the job a take returned (the common table expression ``taken``), with the
    notification of its lease sent from the statement."""
    return sa.select(*taken.c, notify_in_statement(taken.c.id, taken.c.run_id, taken.c.device_profile))


def _judged(row: Any) -> Tuple[Job, Optional[JobEvaluation]]:
    """A row of _JUDGED_JOBS: the job, and its evaluation where it has one."""
    values = dict(row._mapping)
    evaluation = {c.name: values.pop(_EVALUATION_PREFIX + c.name) for c in _EVALUATIONS.c}
    return Job.from_mapping(values), JobEvaluation(**evaluation) if evaluation["job_id"] is not None else None


def allowed_tags_of(agent_id: str, tags: Sequence[str]) -> List[str]:
    """The required tags an agent satisfies: its own and its pin tag (the lease statements'
    ``allowed_tags``)."""
    return sorted(set(tags)) + [pin_tag(agent_id)]


class JobRepository:
    """Runs, jobs and leases, in the transactions of the controller's ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # The suite runner follows the jobs it waits for on this feed.
        self.feed: ChangeFeed = db.feed
        self._fits_cache: Dict[tuple, "_LeaseStatements"] = {}
        # agent id -> its kind: a lease try is then one read (the look), not two, and on PostgreSQL
        # one statement that looks and takes (_look_and_take). The look reads the agent's
        # registered_at too, so a registration on another replica is noticed.
        self._agent_kinds: Dict[str, _AgentKind] = {}
        insert = pg_dialect.insert if db.is_postgresql else sqlite_dialect.insert
        self._upsert_latest = _keep_newest(insert(_LATEST).values(
            model_name=_B("model"), device_profile=_B("profile"), runtime=_B("runtime"), job_id=_B("job_id"),
            finished_at=_B("finished")))
        self._count_finished = _add_to_count(insert(_COUNTS).values(
            outcome=_B("outcome"), reason=_B("reason"), device_profile=_B("profile"), model_name=_B("model"),
            runtime=_B("runtime"), count=1))
        self._store_usual_report = _usual_report_statement() if db.is_postgresql else None
        self._store_usual_report_alone = _usual_report_statement(alone=True) if db.is_postgresql else None
        # job id -> whether it has budgets, for the jobs this process leased (PostgreSQL)
        self._leased_with_budgets: Dict[str, bool] = {}
        self._submission_statements: Dict[SubmissionShape, sa.Select] = {}

    def __repr__(self) -> str:
        return f"JobRepository({self.db!r})"

    # ------------------------------------------------------------ runs and jobs

    def add_run(self, run: Run, jobs: Sequence[Job], *, also: Sequence[SQLModel] = (),
                then: Optional[Callable[[Session], None]] = None) -> None:
        """Store a run and its jobs, and in the same transaction the rows ``also`` names (a job's
        budgets) and whatever ``then`` does with the session (a suite run's next state): nobody
        sees the jobs without them, and a crash leaves neither."""
        self.add_runs([(run, jobs)], also=also, then=then)

    def add_runs(self, runs: Sequence[Tuple[Run, Sequence[Job]]], *, also: Sequence[SQLModel] = (),
                 then: Optional[Callable[[Session], None]] = None) -> None:
        """``add_run`` for several runs in one transaction (in this order)."""
        run_rows, job_rows = [], []
        for run, jobs in runs:
            run_rows.append({"id": run.id, "created_at": run.created_at, "project": run.project})
            for job in jobs:
                job.fill_requirements()
                job_rows.append(job.model_dump())

        def insert(conn: sa.Connection, changes: Any) -> None:
            conn.execute(_INSERT_RUN, run_rows)
            if job_rows:
                conn.execute(_INSERT_JOB, job_rows)
            for _, jobs in runs:
                for job in jobs:
                    self.db.record_job_change(changes, job)

        if then is None:  # a submission: Core statements only
            rows = [(type(extra).__table__, _column_values(extra)) for extra in also]
            if self.db.is_postgresql and 0 < len(job_rows) <= ONE_STATEMENT_MAX_JOBS:
                self._submit_in_one_statement(
                    [(Run.__table__, values) for values in run_rows] + [(_JOBS, values) for values in job_rows] + rows,
                    [job for _, jobs in runs for job in jobs])
                return
            with self.db.write_connection() as conn:
                insert(conn, conn)
                for table, group in itertools.groupby(rows, key=lambda row: row[0]):
                    conn.execute(table.insert(), [values for _, values in group])
            return
        with self.db.write() as s:
            insert(s.connection(), s)
            for extra in also:
                s.add(extra)
            then(s)

    def _submit_in_one_statement(self, rows: Sequence[Tuple[sa.Table, Dict[str, Any]]], jobs: Sequence[Job]) -> None:
        """PostgreSQL: ``rows`` (table, values) of a submission of ``jobs``, in one statement that
        commits by itself (_submission_statement)."""
        changes = [self.db.job_change(job) for job in jobs]
        notices = encode(changes, self.feed.origin)
        shape = (tuple((table, tuple(values)) for table, values in rows), len(notices))
        statement = self._submission_statements.get(shape)
        if statement is None:
            if len(self._submission_statements) >= _SUBMISSION_SHAPES_REMEMBERED:
                self._submission_statements.clear()
            statement = self._submission_statements[shape] = _submission_statement(shape)
        params = {f"r{i}_{column}": value for i, (_, values) in enumerate(rows) for column, value in values.items()}
        params.update((f"notice{n}", notice) for n, notice in enumerate(notices))
        with self.db.write_alone() as conn:
            conn.execute(statement, params)
            for change in changes:
                self.db.record_change(conn, change)

    # ``project`` on a read or a change: only that project's rows (None: any project, for the
    # controller's own use). Another project's run or job is reported as not existing.

    def get_run(self, run_id: str, *, project: Optional[str] = None) -> Tuple[Run, List[Job]]:
        with self.db.read() as s:
            run = s.get(Run, run_id)
            if run is None or (project is not None and run.project != project):
                raise NotFound(f"run {run_id!r} does not exist on this controller")
            jobs = s.exec(select(Job).where(Job.run_id == run_id).order_by(Job.created_at, Job.id)).all()
            return run, list(jobs)

    def get_job(self, job_id: str, *, project: Optional[str] = None) -> Job:
        """The job with this id, or with the one id that starts with it (a unique prefix), of
        ``project`` (None: any). Another project's job reads as not existing."""
        with self.db.connect() as conn:  # the common case, a whole id: one prepared statement
            row = conn.execute(_GET_JOB, {"job_id": job_id}).first()
        if row is not None and (project is None or row._mapping["project"] == project):
            return Job.from_row(row)
        with self.db.read() as s:
            return self._find_job(s, job_id, project=project)

    def get_job_judged(self, job_id: str, *, project: Optional[str] = None) -> Tuple[Job, Optional[JobEvaluation]]:
        """``get_job`` with the job's budgets and verdicts (None: it has none), read together."""
        with self.db.connect() as conn:
            row = conn.execute(_GET_JOB_JUDGED, {"job_id": job_id}).first()
            if row is None or (project is not None and row._mapping["project"] != project):
                whole_id = self.get_job(job_id, project=project).id  # a unique prefix, or NotFound
                row = conn.execute(_GET_JOB_JUDGED, {"job_id": whole_id}).one()
        return _judged(row)

    def get_jobs_judged(self, job_ids: Sequence[str]) -> List[Tuple[Job, Optional[JobEvaluation]]]:
        """``get_jobs`` with each job's budgets and verdicts (None: it has none), read together."""
        if not job_ids:
            return []
        with self.db.connect() as conn:
            return [_judged(row) for row in conn.execute(_GET_JOBS_JUDGED, {"job_ids": list(job_ids)})]

    def get_jobs(self, job_ids: Sequence[str]) -> List[Job]:
        """The jobs of ``job_ids`` that exist, in no particular order."""
        if not job_ids:
            return []
        with self.db.read() as s:
            return list(s.exec(select(Job).where(Job.id.in_(list(job_ids)))).all())  # type: ignore[attr-defined]

    def _find_job(self, s: Session, job_id: str, *, for_update: bool = False, project: Optional[str] = None) -> Job:
        q = select(Job).where(Job.id == job_id)
        if project is not None:
            q = q.where(Job.project == project)
        job = s.exec(q.with_for_update() if for_update else q).first()
        if job is not None:
            return job
        prefix = job_id.strip().lower()
        if not _JOB_ID_PREFIX.fullmatch(prefix):
            hint = (f" (a shortened id needs at least {MIN_JOB_ID_PREFIX} hex characters)"
                    if len(prefix) < MIN_JOB_ID_PREFIX else "")
            raise NotFound(f"job {job_id!r} does not exist on this controller{hint}")
        candidates = select(Job).where(Job.id.startswith(prefix, autoescape=True))  # type: ignore[attr-defined]
        if project is not None:  # another project's ids are neither matched nor listed
            candidates = candidates.where(Job.project == project)
        matches = s.exec(
            candidates.order_by(Job.created_at.desc()).limit(_MAX_CANDIDATES + 1)  # type: ignore[attr-defined]
        ).all()
        if not matches:
            raise NotFound(f"job {job_id!r} does not exist on this controller (no job id starts with it)")
        if len(matches) > 1:
            listed = "; ".join(f"{j.id} ({j.model_name} on {j.device_profile}, {j.state})"
                               for j in matches[:_MAX_CANDIDATES])
            more = " and more" if len(matches) > _MAX_CANDIDATES else ""
            raise AmbiguousId(f"job id {job_id!r} is ambiguous: it starts {listed}{more}; give more characters")
        if for_update:
            return s.exec(select(Job).where(Job.id == matches[0].id).with_for_update()).one()
        return matches[0]

    def list_jobs(
        self, *, run_id: str = "", states: Iterable[JobState] = (), limit: int = 0,
        project: Optional[str] = None,
    ) -> List[Job]:
        """Jobs, newest first."""
        limit = min(limit or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
        q = select(Job)
        if project is not None:
            q = q.where(Job.project == project)
        if run_id:
            q = q.where(Job.run_id == run_id)
        state_values = [JobState(s).value for s in states]
        if state_values:
            q = q.where(Job.state.in_(state_values))  # type: ignore[attr-defined]
        q = q.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)  # type: ignore[attr-defined]
        with self.db.read() as s:
            return list(s.exec(q).all())

    def count_queued(self, project: str) -> int:
        with self.db.connect() as conn:
            return int(conn.execute(_COUNT_QUEUED, {"project": project}).scalar_one())

    def cancel_job(self, job_id: str, *, now: float, project: Optional[str] = None) -> Job:
        """Cancel a queued or active job. An agent running it learns at its next progress report."""
        with self.db.write() as s:
            job = self._find_job(s, job_id, for_update=True, project=project)  # an id or a unique prefix
            job_id = job.id
            state = job.job_state
            if state.finished:
                raise FailedPrecondition(f"job {job_id} already {state.value}; there is nothing to cancel")
            job.state = JobState.CANCELLED.value
            job.finished_at = now
            # The lease id stays so the agent's next report is answered "cancel".
            job.lease_expires_at = None
            s.add(job)
            self.db.record_job_change(s, job)
            self._count_outcome(s.connection(), job)
            log.info("job %s cancelled (was %s)", job_id, state.value)
            return job

    def agent_may_download(self, agent_id: str, sha256: str) -> bool:
        """Whether ``sha256`` is the model or the input tensors of a job leased to ``agent_id``."""
        with self.db.read() as s:
            jobs = s.exec(select(Job).where(Job.agent_id == agent_id,
                                            Job.state.in_(_ACTIVE))).all()  # type: ignore[attr-defined]
        return any(sha256 in (job.model_sha256, (job.settings or {}).get("inputs_sha256")) for job in jobs)

    def active_jobs_by_agent(self) -> Dict[str, str]:
        """agent id -> id of the job it holds a lease for."""
        q = select(Job.agent_id, Job.id).where(Job.state.in_(_ACTIVE))  # type: ignore[attr-defined]
        with self.db.read() as s:
            return {agent_id: job_id for agent_id, job_id in s.exec(q).all() if agent_id}

    # ------------------------------------------------------------ leases

    def _lease_statements(self, profile: str, tags: Sequence[str], capabilities: dict) -> _LeaseStatements:
        """The statements that lease to an agent of this profile, tags and runtimes. The jobs it
        can run are a SQL condition: its profile, required tags that are all its own (its tags and
        its pin tag, bound as ``allowed_tags``), and a runtime it has with the execution provider
        asked for (the same rules as scheduler.accepts, which explains them). Built once per kind
        of agent."""
        runtimes = tuple(sorted((r.get("name", ""), tuple(sorted(r.get("execution_providers", []))))
                                for r in capabilities.get("runtimes", [])))
        key = (profile, tuple(sorted(set(tags))), runtimes)
        cached = self._fits_cache.get(key)
        if cached is not None:
            return cached
        def fits_in(jobs: Any) -> sa.ColumnElement:
            # No list is bound as an expanding IN: SQLAlchemy would render the statement again
            # at every lease. The allowed tags are one JSON value (a JSON array string on
            # SQLite), the agent's providers part of the statement built for its kind.
            if self.db.is_postgresql:
                tags_fit = jobs.c.required_tags.op("<@")(_B("allowed_tags", type_=pg_dialect.JSONB()))
            else:
                each = sa.func.json_each(jobs.c.required_tags).table_valued("value")
                allowed = sa.func.json_each(_B("allowed_tags", type_=sa.String())).table_valued("value")
                tags_fit = ~sa.exists(sa.select(sa.literal(1)).select_from(each)
                                      .where(each.c.value.not_in(sa.select(allowed.c.value))))
            clauses = [sa.and_(jobs.c.required_runtime == name,
                               sa.or_(jobs.c.required_provider == "",
                                      *[jobs.c.required_provider == provider for provider in providers]))
                       for name, providers in runtimes]
            return sa.and_(jobs.c.state == JobState.QUEUED.value, jobs.c.device_profile == profile, tags_fit,
                           sa.or_(*clauses) if clauses else sa.false())

        jobs, other = _JOBS, _JOBS.alias("other_job")
        fits = fits_in(jobs)
        # Whether a queued job other than the one taken fits the agent too, read in the statement
        # that takes it: when none does, the agent's next ask (once its job is done) waits for work
        # to be queued instead of looking first (server.AgentServicer.LeaseJob). Rows other
        # replicas hold count: the answer errs towards looking. PostgreSQL's subquery reads the
        # statement's snapshot, where the job taken is still queued, so it is left out by id;
        # SQLite's reads the row as just updated (leased), and SQLAlchemy writes SQLite's
        # RETURNING columns without their table, so the same condition would read "id != id".
        others = [fits_in(other)] + ([other.c.id != jobs.c.id] if self.db.is_postgresql else [])
        another_fits = sa.exists(sa.select(sa.literal(1)).select_from(other).where(*others)).label(_ANOTHER_FITS)
        # PostgreSQL: whether the job has budgets, so its report can be stored by a statement that
        # commits by itself when it has none (record_result).
        has_budgets = [sa.exists(_budgets_of(jobs.c.id)).label(_HAS_BUDGETS)] if self.db.is_postgresql else []

        def take_oldest(*also: sa.ColumnElement) -> sa.Update:
            """Lease the oldest fitting job (where ``also`` holds too), locking only its row."""
            return sa.update(jobs).where(jobs.c.id == (
                sa.select(jobs.c.id).where(fits, *also).order_by(jobs.c.created_at, jobs.c.id)
                .limit(1).with_for_update(skip_locked=True).scalar_subquery()
            )).values(**_LEASE_VALUES).returning(*jobs.c, another_fits, *has_budgets)

        take: sa.Executable = take_oldest()
        fitting = sa.select(jobs.c.id).where(fits).limit(1).scalar_subquery()
        take_alone: Optional[sa.Executable] = None
        look_and_take: Optional[sa.Executable] = None
        if self.db.is_postgresql:
            # The agent marked as having asked in the same statement, a round trip fewer per
            # lease (as record_result's usual report). Its id is bound as ``agent``, the name
            # the take binds it under: one named agent_id would be taken for a jobs column to set.
            taken = take.cte("taken")
            asked = agent_asked(sa.exists(sa.select(taken.c.id)), agent="agent").cte("asked")
            take = sa.select(*taken.c).add_cte(asked)
            take_alone = _with_notice(taken).add_cte(asked)
            look_and_take = self._look_and_take_statement(take_oldest, fitting)
        statements = _LeaseStatements(
            fits=fits,
            look=sa.select(_HOLDS.scalar_subquery(), fitting, _QUEUED_OF_PROFILE.scalar_subquery(), *AGENT_LEASE_STATE),
            take=take, take_marks_asked=self.db.is_postgresql, take_alone=take_alone, look_and_take=look_and_take,
        )
        if len(self._fits_cache) > 1024:
            self._fits_cache.clear()
        self._fits_cache[key] = statements
        return statements

    @staticmethod
    def _look_and_take_statement(take_oldest: Callable[..., sa.Update], fitting: sa.ScalarSelect) -> sa.Select:
        """PostgreSQL: _LeaseStatements.look_and_take. Every part reads the statement's one
        snapshot, the look as the slow way's look would. The agent is bound as ``agent`` (the
        name the take binds it under), its registration as ``registration`` and its profile as
        ``agent_profile``: names that are no column of the tables written (SQLAlchemy would take
        such a parameter for a value to set)."""
        look = sa.select(*[column.label(name) for column, name in zip(
            (_holds("agent").scalar_subquery(), fitting, _queued_of("agent_profile").scalar_subquery(),
             *agent_lease_state("agent")), _LOOKED)]).cte("look")
        holds, waiting, _, registered_at, draining = (look.c[name] for name in _LOOKED)
        # The slow way's condition to take: inside the pick, so a look that says no locks no row.
        may_take = sa.exists(sa.select(sa.literal(1)).select_from(look).where(
            holds.is_(None), waiting.is_not(None), sa.not_(draining), registered_at == _B("registration")))
        taken = take_oldest(may_take).cte("taken")
        # As the slow way's take: an agent that may take is marked as having asked, taken or not.
        asked = agent_asked(sa.exists(sa.select(taken.c.id)), may_take, agent="agent").cte("asked")
        with_notice = _with_notice(taken).subquery("with_notice")
        return (sa.select(*look.c, *with_notice.c).select_from(look.outerjoin(with_notice, sa.true()))
                .add_cte(asked))

    def allowed_tags_bound(self, agent_id: str, tags: Sequence[str]) -> Any:
        """The lease statements' ``allowed_tags`` value: a JSON array (a string on SQLite, for
        json_each)."""
        allowed = allowed_tags_of(agent_id, tags)
        return allowed if self.db.is_postgresql else json.dumps(allowed)

    def forget_agent(self, agent_id: str) -> None:
        """LeaseKeeper: the agent registered again or was removed; its kind is read again."""
        self._agent_kinds.pop(agent_id, None)

    def _agent_kind(self, conn: sa.Connection, agent_id: str) -> _AgentKind:
        kind = self._agent_kinds.get(agent_id)
        if kind is not None:
            return kind
        agent = agent_for_lease(conn, agent_id)
        if agent is None:
            raise FailedPrecondition(f"agent {agent_id!r} is not registered with this controller; it must call Register first")
        tags = agent.tags or []
        kind = _AgentKind(agent.registered_at, agent.profile,
                          self._lease_statements(agent.profile, tags, agent.capabilities or {}),
                          self.allowed_tags_bound(agent_id, tags))
        if len(self._agent_kinds) > MAX_REMEMBERED_AGENTS:
            self._agent_kinds.clear()
        self._agent_kinds[agent_id] = kind
        return kind

    def lease_next(self, agent_id: str, *, now: float, lease_seconds: float) -> LeaseAttempt:
        """Lease the oldest queued job that fits the agent (profile, tags, runtime and provider
        matched in SQL; only the row leased is locked, and rows other replicas hold are skipped).

        A lease the agent still holds is given up first: an agent runs one job at a time, so
        asking for work means it no longer works on its old job. When the agent holds no lease
        and no queued job fits it, nothing is written. On PostgreSQL, an agent whose kind is known
        and that holds no lease tries in one statement (_look_and_take).
        """
        known = self._agent_kinds.get(agent_id)
        if known is not None and known.statements.look_and_take is not None:
            attempt = self._look_and_take(agent_id, known, now=now, lease_seconds=lease_seconds)
            if attempt is not None:
                return attempt
        with self.db.connect() as conn:
            while True:
                kind = self._agent_kind(conn, agent_id)
                holds, waiting, queued, registered_at, draining = conn.execute(
                    kind.statements.look,
                    {"agent_id": agent_id, "profile": kind.profile, "allowed_tags": kind.allowed_tags}).one()
                if registered_at == kind.registered_at:
                    break
                self.forget_agent(agent_id)  # registered again (or removed) since: read it again
        statements, allowed_tags, profile = kind.statements, kind.allowed_tags, kind.profile
        if holds is None and (waiting is None or draining):
            return LeaseAttempt(None, queued is not None, profile)
        another_fits = True

        def take(conn: sa.Connection, changes: Any, statement: sa.Executable, **more: Any) -> Optional[Job]:
            """In the write of ``changes`` (its session or connection): lease the oldest fitting
            job, if any, with ``statement``, and mark the agent as having asked."""
            nonlocal another_fits
            job = None
            if not draining:
                # One statement picks the oldest fitting row (locked, skipping rows other
                # replicas hold) and leases it.
                leased = conn.execute(statement, {"agent": agent_id, "lease": uuid.uuid4().hex,
                                                  "expires": now + lease_seconds, "now": now,
                                                  "allowed_tags": allowed_tags, **more}).first()
                if leased is not None:
                    job, another_fits = self._leased(dict(leased._mapping))
                    self.db.record_job_change(changes, job)
                if statements.take_marks_asked:
                    return job
            mark_asked(conn, agent_id, now=now, busy=job is not None)
            return job

        if holds is not None:  # the old lease is given up in the transaction that takes the new one
            with self.db.write() as s:
                with s.no_autoflush:
                    self.release_leases_in(s, agent_id, now, "asked for new work")
                s.flush()
                job = take(s.connection(), s, statements.take)
        elif statements.take_alone is not None:
            with self.db.write_alone() as conn:
                job = take(conn, conn, statements.take_alone, origin=self.feed.origin)
        else:
            with self.db.write_connection() as conn:
                job = take(conn, conn, statements.take)
        if job is not None:
            return self._lease_taken(job, agent_id, profile, another_fits)
        with self.db.connect() as conn:
            more = conn.execute(_QUEUED_OF_PROFILE, {"profile": profile}).first()
        return LeaseAttempt(None, more is not None, profile)

    def _look_and_take(self, agent_id: str, kind: _AgentKind, *, now: float,
                       lease_seconds: float) -> Optional[LeaseAttempt]:
        """PostgreSQL, for an agent whose kind is known: the try of ``lease_next`` in one
        statement that commits by itself (_LeaseStatements.look_and_take). None where the slow
        way must go on: the agent holds a lease (given up in a transaction with the take) or
        registered again since its kind was read."""
        with self.db.write_alone() as conn:
            row = dict(conn.execute(kind.statements.look_and_take, {
                "agent": agent_id, "registration": kind.registered_at, "agent_profile": kind.profile,
                "allowed_tags": kind.allowed_tags, "lease": uuid.uuid4().hex, "expires": now + lease_seconds,
                "now": now, "origin": self.feed.origin}).one()._mapping)
            holds, _, queued, registered_at, _ = (row.pop(name) for name in _LOOKED)
            job, another_fits = self._leased(row) if row["id"] is not None else (None, True)
            if job is not None:
                self.db.record_job_change(conn, job)
        if job is not None:
            return self._lease_taken(job, agent_id, kind.profile, another_fits)
        if registered_at != kind.registered_at:
            self.forget_agent(agent_id)  # registered again (or removed) since: the slow way reads it again
            return None
        if holds is not None:
            return None
        return LeaseAttempt(None, queued is not None, kind.profile)

    def _leased(self, values: Dict[str, Any]) -> Tuple[Job, bool]:
        """The job a take returned (its row's values), and whether another queued job fitted the
        agent; whether it has budgets is remembered for its report (PostgreSQL)."""
        values.pop(_NOTIFIED, None)
        another_fits = bool(values.pop(_ANOTHER_FITS))
        if _HAS_BUDGETS in values:
            if len(self._leased_with_budgets) >= MAX_REMEMBERED_LEASES:
                self._leased_with_budgets.clear()
            self._leased_with_budgets[values["id"]] = bool(values.pop(_HAS_BUDGETS))
        return Job.from_mapping(values), another_fits

    @staticmethod
    def _lease_taken(job: Job, agent_id: str, profile: str, another_fits: bool) -> LeaseAttempt:
        # Logged after the commit: on SQLite every write transaction waits for this one.
        log.info("job %s leased to agent %s (attempt %d of %d)", job.id, agent_id, job.attempt, job.max_attempts)
        return LeaseAttempt(job, True, profile, another_fits)

    def extend_leases(self, *, until: float) -> int:
        """Give every active lease until ``until`` at least: after a controller starts, agents
        that could not reach it (backing off) get time to come back before their jobs are taken
        from them. Returns how many leases were extended."""
        with self.db.write() as s:
            result = s.execute(
                sa.update(Job.__table__)
                .where(Job.__table__.c.state.in_(_ACTIVE),
                       sa.or_(Job.__table__.c.lease_expires_at.is_(None), Job.__table__.c.lease_expires_at < until))
                .values(lease_expires_at=until)
            )
            return int(result.rowcount or 0)

    def expire_leases(self, *, now: float) -> List[Tuple[Job, JobState]]:
        """Requeue (or fail, when out of attempts) every job whose lease expired."""
        with self.db.write() as s:
            jobs = s.exec(
                select(Job)
                .where(Job.state.in_(_ACTIVE), Job.lease_expires_at < now)  # type: ignore[attr-defined]
                .with_for_update(skip_locked=True)
            ).all()
            # Agents are left alone: a silent agent shows as offline, and a live one says
            # whether it is busy in its next heartbeat.
            return [(job, self._lose_lease(s, job, now, "stopped responding")) for job in jobs]

    # Session-level: run inside the agent repository's transactions (agent_repository.LeaseKeeper).

    def release_leases_in(self, s: Session, agent_id: str, now: float, why: str) -> List[Tuple[Job, JobState]]:
        """In the ``write()`` transaction of ``s``: the leases ``agent_id`` holds are lost (an agent
        that registers again, asks for new work or is removed no longer runs them); their jobs are
        queued again, or failed when out of attempts. Locks the job rows."""
        jobs = s.exec(
            select(Job)
            .where(Job.agent_id == agent_id, Job.state.in_(_ACTIVE))  # type: ignore[attr-defined]
            .with_for_update()
        ).all()
        return [(job, self._lose_lease(s, job, now, why)) for job in jobs]

    def renew_leases_in(self, conn: sa.Connection, agent_ids: Sequence[str], *, until: float) -> None:
        """In the caller's transaction: the leases of ``agent_ids`` (heartbeating agents) last until
        ``until`` at least; rows another transaction holds are skipped (it renews or ends them)."""
        conn.execute(_RENEW_LEASES, {"ids": list(agent_ids), "expires": until})

    @property
    def lease_renewal(self) -> sa.Update:
        """The statement of ``renew_leases_in`` (agent_repository.LeaseKeeper)."""
        return _RENEW_LEASES

    def _lose_lease(self, s: Session, job: Job, now: float, why: str) -> JobState:
        agent_id, attempt = job.agent_id, job.attempt
        # Remembered, so the attempt's late report is still stored while no later one started.
        job.lost_lease_id, job.lost_agent_id = job.lease_id, agent_id
        job.lease_id = None
        if attempt < job.max_attempts:
            job.state = JobState.QUEUED.value
            job.agent_id = None
            job.lease_expires_at = None
            job.started_at = None
            job.progress = None
            log.warning(
                "agent %s %s during attempt %d of %d of job %s; the job is queued again",
                agent_id, why, attempt, job.max_attempts, job.id,
            )
        else:
            job.state = JobState.FAILED.value
            job.finished_at = now
            job.lease_expires_at = None
            job.set_failure(
                Failure(
                    category=FailureCategory.INFRASTRUCTURE,
                    message=(
                        f"agent {agent_id} {why} during attempt {attempt} of {job.max_attempts}; "
                        "no attempts are left. The farm lost the job, not the model: check the "
                        "agent's device and its network, then submit again."
                    ),
                )
            )
            log.warning("agent %s %s during the last attempt (%d) of job %s; job failed", agent_id, why, attempt, job.id)
        s.add(job)
        self.db.record_job_change(s, job)
        if job.job_state.finished:
            self._count_outcome(s.connection(), job)
        return job.job_state

    # ------------------------------------------------------------ progress and results

    def record_progress(
        self, agent_id: str, lease_id: str, progress: dict, *, now: float, lease_seconds: float
    ) -> Tuple[bool, str]:
        """Store progress of a leased job and renew its lease.

        An agent reporting under a lease it lost (it was away longer than the lease) gets the
        job back when no later attempt has started, so its work is not thrown away.

        Returns (cancel, why): cancel is True when the agent must stop the job, because it was
        cancelled or because this lease is no longer the job's current lease.
        """
        # The usual case in one statement: the agent reports under the lease it holds. On
        # PostgreSQL that statement commits by itself, with its notification.
        params = {"lease": lease_id, "agent": agent_id, "progress": dict(progress), "expires": now + lease_seconds}
        alone = self.db.is_postgresql
        with self.db.write_alone() if alone else self.db.write_connection() as conn:
            row = conn.execute(_PROGRESS_ALONE if alone else _PROGRESS,
                               {**params, "origin": self.feed.origin} if alone else params).first()
            if row is not None:
                self.db.record_change(conn, Change(row.id, row.run_id, row.device_profile))
                return False, ""
        # Otherwise the lease is not the job's current one (nothing was written above).
        with self.db.write() as s, s.no_autoflush:
            job = s.exec(select(Job).where(sa.or_(Job.lease_id == lease_id, Job.lost_lease_id == lease_id))
                         .with_for_update()).first()
            if job is not None and job.lease_id != lease_id:
                if not self._reclaim(job, agent_id, lease_id, now):
                    job = None
            if job is None or job.agent_id != agent_id:
                return True, f"lease {lease_id} is not held by agent {agent_id} (it expired or was never granted)"
            state = job.job_state
            if state == JobState.CANCELLED:
                return True, f"job {job.id} was cancelled"
            if not state.active:
                return True, f"job {job.id} is already {state.value}"
            job.progress = dict(progress)
            job.state = JobState.RUNNING.value
            job.lease_expires_at = now + lease_seconds
            s.add(job)
            self.db.record_job_change(s, job)
            mark_working(s, agent_id, now=now)
            return False, ""

    @staticmethod
    def _reclaim(job: Job, agent_id: str, lease_id: str, now: float) -> bool:
        """Give a job back to the lease it lost, when that attempt is still the newest: the job is
        queued again and nobody leased it since, or it failed because that lease was lost."""
        state = job.job_state
        lost_to_lease = state == JobState.FAILED and job.failure_category == FailureCategory.INFRASTRUCTURE.value
        if job.lost_lease_id != lease_id or job.lost_agent_id != agent_id:
            return False
        if state != JobState.QUEUED and not lost_to_lease:
            return False
        log.warning("agent %s came back with lease %s of job %s (attempt %d), which it had lost; "
                    "no later attempt started, so the job is its again", agent_id, lease_id, job.id, job.attempt)
        job.state = JobState.RUNNING.value
        job.lease_id, job.agent_id = lease_id, agent_id
        job.lost_lease_id = job.lost_agent_id = None
        job.finished_at = None
        job.set_failure(None)
        if job.started_at is None:
            job.started_at = now
        return True

    def record_result(
        self,
        agent_id: str,
        lease_id: str,
        job_id: str,
        attempt: int,
        *,
        result: Optional[dict],
        failure: Optional[Failure],
        now: float,
        on_result: Optional[Callable[[sa.Connection, Job, Any], None]] = None,
        on_stored: Optional[Callable[[Job], None]] = None,
    ) -> Tuple[bool, str]:
        """Store the outcome of one attempt. Idempotent by (job, attempt): a repeat of the stored
        report is accepted and changes nothing; a report for another attempt or lease is refused.
        The report of a lease the job lost is stored when no later attempt has started (the job
        was requeued and nobody leased it since, or it failed for the lost lease).
        ``on_result(conn, job, budgets)`` runs in the same transaction once a result of a job
        with budgets is stored (constraint verdicts), so nobody sees the result without what is
        derived from it. ``on_stored(job)`` runs after the commit, with the job as stored, when
        this call stored the report (not for a repeat of one stored before). Returns (accepted,
        message): accepted is True only when this report is what the job now holds."""
        if (result is None) == (failure is None):
            return False, "a report carries exactly one of result or failure"
        if self._store_usual_report is not None:
            # Alone (one round trip) for a job this process leased and knows has no budgets.
            alone = self._leased_with_budgets.pop(job_id, True) is False
            job = self._stored_as_usual(agent_id, lease_id, job_id, attempt, result=result, failure=failure,
                                        now=now, on_result=on_result, alone=alone)
            if job is None and alone:
                job = self._stored_as_usual(agent_id, lease_id, job_id, attempt, result=result, failure=failure,
                                            now=now, on_result=on_result)
            if job is not None:
                return self._stored(job, agent_id, on_stored)
        with self.db.write_connection() as conn:
            row = conn.execute(_JOB_FOR_REPORT, {"job_id": job_id}).first()
            if row is None:
                return False, f"job {job_id!r} does not exist on this controller"
            job = Job.from_row(row)
            state = job.job_state
            holds = job.lease_id == lease_id and job.attempt == attempt and job.agent_id == agent_id
            if not holds and job.attempt == attempt and self._reclaim(job, agent_id, lease_id, now):
                holds, state = True, job.job_state
            if not holds:
                return False, (
                    f"report for attempt {attempt} under lease {lease_id} is stale: job {job_id} is "
                    f"{state.value} at attempt {job.attempt}; the report was discarded"
                )
            if state in (JobState.SUCCEEDED, JobState.FAILED):
                return True, f"the report of attempt {attempt} of job {job_id} was already stored"
            mark_asked(conn, agent_id, now=now, busy=False)
            if state == JobState.CANCELLED:
                return False, f"job {job_id} was cancelled; the report was discarded"
            if result is not None:
                job.state = JobState.SUCCEEDED.value
                job.result = dict(result)
            else:
                job.state = JobState.FAILED.value
                job.set_failure(failure)
            job.finished_at = now
            job.lease_expires_at = None
            conn.execute(_STORE_OUTCOME, {
                "job_id": job.id, "state": job.state, "result": job.result, "category": job.failure_category,
                "message": job.failure_message, "signal": job.failure_signal, "detail": job.failure_detail,
                "finished": now, "lease": job.lease_id, "agent": job.agent_id, "started": job.started_at})
            if result is not None and on_result is not None:
                budgets = conn.execute(_BUDGETS_OF_JOB, {"job_id": job.id}).scalar_one_or_none()
                if budgets is not None:
                    on_result(conn, job, budgets)
            self.db.record_job_change(conn, job)
            if result is not None:
                self._note_latest(conn, job)
            self._count_outcome(conn, job)
        return self._stored(job, agent_id, on_stored)

    @staticmethod
    def _stored(job: Job, agent_id: str, on_stored: Optional[Callable[[Job], None]]) -> Tuple[bool, str]:
        """After the commit that stored a report of ``job``: logged (on SQLite every write
        transaction waits for the one before to end), ``on_stored`` told, the agent answered."""
        log.info("job %s %s on agent %s (attempt %d)", job.id, job.state, agent_id, job.attempt)
        if on_stored is not None:
            on_stored(job)
        return True, f"stored the {'result' if job.job_state == JobState.SUCCEEDED else 'failure'} of job {job.id}"

    def _stored_as_usual(self, agent_id: str, lease_id: str, job_id: str, attempt: int, *,
                         result: Optional[dict], failure: Optional[Failure], now: float,
                         on_result: Optional[Callable[[sa.Connection, Job, Any], None]],
                         alone: bool = False) -> Optional[Job]:
        """PostgreSQL: store a report from the agent that holds the job's lease in one statement
        (_usual_report_statement); the job as stored. None, with nothing written, for any other
        report. ``alone``: the statement commits by itself, and writes nothing for a job with
        budgets."""
        # The reported values as a job would hold them (from_mapping: no model validation, which
        # cost a fifth of this call's time).
        outcome = Job.from_mapping({"state": (JobState.SUCCEEDED if result is not None else JobState.FAILED).value,
                                    "result": dict(result) if result is not None else None})
        outcome.set_failure(failure)
        params = {"reported_job": job_id, "lease": lease_id, "agent": agent_id, "reported_attempt": attempt,
                  "now": now, "outcome": outcome.state, "outcome_result": outcome.result,
                  "category": outcome.failure_category, "message": outcome.failure_message,
                  "signal": outcome.failure_signal, "detail": outcome.failure_detail,
                  "outcome_reason": outcome_reason(outcome)}
        if alone:
            params["origin"] = self.feed.origin
        with self.db.write_alone() if alone else self.db.write_connection() as conn:
            row = conn.execute(self._store_usual_report_alone if alone else self._store_usual_report, params).first()
            if row is None:
                return None
            values = dict(row._mapping)
            values.pop(_NOTIFIED, None)
            budgets = values.pop(_BUDGETS)
            job = Job.from_mapping(values)
            if result is not None and on_result is not None and budgets is not None:
                on_result(conn, job, budgets)
            self.db.record_job_change(conn, job)
        return job

    def _note_latest(self, conn: sa.Connection, job: Job) -> None:
        """Make ``job`` the latest result of its model x profile x runtime (an upsert, so two
        replicas storing results of one model at once do not collide)."""
        conn.execute(self._upsert_latest, {
            "model": job.model_name, "profile": job.device_profile, "runtime": job.runtime, "job_id": job.id,
            "finished": job.finished_at})

    def _count_outcome(self, conn: sa.Connection, job: Job) -> None:
        """Count a job that just finished (an upsert adding one, last in its transaction so
        the counter row is locked only until the commit)."""
        conn.execute(self._count_finished, {
            "outcome": job.state, "reason": outcome_reason(job), "profile": job.device_profile,
            "model": job.model_name, "runtime": job.runtime})

    # ------------------------------------------------------------ what the metrics read

    def live_state(self) -> Tuple[List[Agent], List[Tuple[str, str]], List[Tuple[str, str, int, float]]]:
        """In one transaction: every agent; (agent id, job id) of every leased or running job; and
        (state, device profile, count, oldest created_at) of the unfinished jobs (the index on
        state finds them: finished ones are the counters of ``outcome_counts``). Here rather than
        on the agent repository because it is one read of both tables: a scrape must not see an
        agent busy with a job the same scrape counts as queued."""
        with self.db.read() as s:
            agents = all_agents(s)
            active_rows = s.exec(
                select(Job.agent_id, Job.id).where(Job.state.in_(_ACTIVE))  # type: ignore[attr-defined]
            ).all()
            job_rows = s.exec(
                select(Job.state, Job.device_profile, sa.func.count(), sa.func.min(Job.created_at))
                .where(Job.state.in_(states_sql(ACTIVE_STATES | {JobState.QUEUED})))  # type: ignore[attr-defined]
                .group_by(Job.state, Job.device_profile)
            ).all()
        return agents, [tuple(r) for r in active_rows], [tuple(r) for r in job_rows]  # type: ignore[misc]

    def active_progress(self) -> List[Tuple[Optional[str], str, Optional[dict]]]:
        """(agent id, device profile, progress document) of every leased or running job."""
        with self.db.read() as s:
            rows = s.exec(select(Job.agent_id, Job.device_profile, Job.progress)
                          .where(Job.state.in_(_ACTIVE))).all()  # type: ignore[attr-defined]
        return [tuple(r) for r in rows]  # type: ignore[misc]

    def outcome_counts(self) -> List[Tuple[str, str, str, str, str, int]]:
        """(outcome, reason, device profile, model name, runtime, count) of every finished job."""
        t = JobOutcomeCount.__table__
        with self.db.read() as s:
            return [tuple(r) for r in s.execute(sa.select(t.c.outcome, t.c.reason, t.c.device_profile,  # type: ignore[misc]
                                                          t.c.model_name, t.c.runtime, t.c.count)).all()]

    def latest_results(self, limit: int) -> List[LatestResult]:
        """The newest ``limit`` rows of latest_results, newest first."""
        with self.db.read() as s:
            return list(s.exec(select(LatestResult).order_by(LatestResult.finished_at.desc(),  # type: ignore[attr-defined]
                                                             LatestResult.job_id.desc()).limit(limit)).all())
