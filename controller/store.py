"""The controller's database: every read and every state change of artifacts, runs, jobs and agents.

One ``Store`` wraps one SQLAlchemy engine. SQLite (the embedded default) and PostgreSQL (several
controller replicas sharing one database) run the same code. Each job state transition happens
inside one transaction here, so the rules that must hold under concurrency (a job is leased to
one agent at a time, a result is stored once) live next to the SQL that enforces them.

Concurrency:
- PostgreSQL: the rows a transition reads are locked (``SELECT ... FOR UPDATE``); leasing and
  reaping skip rows another replica holds (``SKIP LOCKED``), so replicas never block each other.
- SQLite: ``FOR UPDATE`` is not available; every write transaction of this process takes one lock
  instead. A read transaction that later writes could otherwise fail with SQLITE_BUSY when another
  thread committed in between. Several *processes* on one SQLite file are not supported.

Lock order, so PostgreSQL transactions never deadlock: job rows first, then agent rows. Agent
rows are read without a lock and changed under ``no_autoflush``, so their UPDATE is only sent
at commit, after every job row the transaction needs is locked.

Rows returned are detached from their session; change state only through the methods here.
"""
from __future__ import annotations

import contextlib
import logging
import re
import threading
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, select

from .errors import AmbiguousId, FailedPrecondition, NotFound
from .models import (
    ACTIVE_STATES,
    Agent,
    Artifact,
    ArtifactOwner,
    Failure,
    FailureCategory,
    Job,
    JobState,
    Run,
)
from .schema import MigrationReport, migrate

log = logging.getLogger("hilfarm.controller")

_ACTIVE = [s.value for s in ACTIVE_STATES]
# Queued jobs examined per query when looking for one that fits an agent.
_LEASE_BATCH = 100
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
# Job ids are uuid4 hex. A shortened one (as git takes a commit) needs this many characters,
# and an ambiguous one is answered with at most this many candidates.
MIN_JOB_ID_PREFIX = 4
_JOB_ID_PREFIX = re.compile(r"[0-9a-f]{%d,63}" % MIN_JOB_ID_PREFIX)
_MAX_CANDIDATES = 10


def default_sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir) / 'hilfarm.db'}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (gRPC threads, watchers) proceed while one writer commits.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Store:
    """The controller's database. ``url`` is any SQLAlchemy URL (``sqlite:///file``,
    ``postgresql+psycopg://user@host/db``)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = make_url(url)
        self.backend = self.url.get_backend_name()
        kwargs: dict = {"echo": echo}
        if self.backend == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            database = self.url.database or ""
            if database in ("", ":memory:"):
                # One shared connection, or every thread would see its own empty database.
                kwargs["poolclass"] = StaticPool
            else:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=40)
        self.engine = sa.create_engine(self.url, **kwargs)
        if self.backend == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            self._write_lock: contextlib.AbstractContextManager = threading.RLock()
        else:
            self._write_lock = contextlib.nullcontext()

    def __repr__(self) -> str:
        return f"Store({self.url.render_as_string(hide_password=True)!r})"

    # ------------------------------------------------------------ schema and sessions

    def create_schema(self) -> None:
        """Bring the schema to this version's newest migration, keeping every row (a database
        from before migrations is adopted). Raises schema.SchemaError, changing nothing, for a
        database this version cannot use (migrated by a newer hilfarm, changed by hand)."""
        self.migrate()

    def migrate(self) -> MigrationReport:
        """``create_schema``, reporting the revisions before and after."""
        return migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        with self._write_lock:
            with Session(self.engine, expire_on_commit=False) as s:
                try:
                    yield s
                    s.commit()
                except BaseException:
                    s.rollback()
                    raise

    # ------------------------------------------------------------ artifacts

    def get_artifact(self, sha256: str) -> Optional[Artifact]:
        with self._read() as s:
            return s.get(Artifact, sha256)

    def add_artifact(self, artifact: Artifact) -> bool:
        """Record a stored artifact. False when the digest was already recorded (kept as it was)."""
        try:
            with self._write() as s:
                if s.get(Artifact, artifact.sha256) is not None:
                    return False
                s.add(Artifact.model_validate(artifact.model_dump()))
        except IntegrityError:
            # Another replica recorded the same digest between our check and insert.
            return False
        return True

    def add_artifact_owner(self, sha256: str, project: str, *, now: float) -> None:
        """Record that ``project`` sent the bytes of ``sha256`` (and so may use it)."""
        try:
            with self._write() as s:
                if s.get(ArtifactOwner, (sha256, project)) is None:
                    s.add(ArtifactOwner(sha256=sha256, project=project, created_at=now))
        except IntegrityError:
            pass  # another replica recorded the same owner at the same time

    def artifact_owned(self, sha256: str, project: str) -> bool:
        with self._read() as s:
            return s.get(ArtifactOwner, (sha256, project)) is not None

    # ------------------------------------------------------------ runs and jobs

    def add_run(self, run: Run, jobs: Sequence[Job]) -> None:
        with self._write() as s:
            s.add(Run.model_validate(run.model_dump()))
            s.flush()
            for job in jobs:
                s.add(Job.model_validate(job.model_dump()))

    # ``project`` on a read or a change: only that project's rows (None: any project, for the
    # controller's own use). Another project's run or job is reported as not existing.

    def get_run(self, run_id: str, *, project: Optional[str] = None) -> Tuple[Run, List[Job]]:
        with self._read() as s:
            run = s.get(Run, run_id)
            if run is None or (project is not None and run.project != project):
                raise NotFound(f"run {run_id!r} does not exist on this controller")
            jobs = s.exec(select(Job).where(Job.run_id == run_id).order_by(Job.created_at, Job.id)).all()
            return run, list(jobs)

    def get_job(self, job_id: str, *, project: Optional[str] = None) -> Job:
        """The job with this id, or with the one id that starts with it (a unique prefix), of
        ``project`` (None: any). Another project's job reads as not existing."""
        with self._read() as s:
            return self._find_job(s, job_id, project=project)

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
        with self._read() as s:
            return list(s.exec(q).all())

    def count_queued(self, project: str) -> int:
        with self._read() as s:
            return int(s.exec(select(sa.func.count()).select_from(Job)
                              .where(Job.project == project, Job.state == JobState.QUEUED.value)).one())

    def cancel_job(self, job_id: str, *, now: float, project: Optional[str] = None) -> Job:
        """Cancel a queued or active job. An agent running it learns at its next progress report."""
        with self._write() as s:
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
            log.info("job %s cancelled (was %s)", job_id, state.value)
            return job

    # ------------------------------------------------------------ agents

    def register_agent(
        self,
        agent_id: str,
        *,
        profile: str,
        tags: Sequence[str],
        capabilities: dict,
        hostname: str,
        version: str,
        now: float,
    ) -> Tuple[Agent, List[Tuple[Job, JobState]]]:
        """Create or refresh an agent. A registering agent has (re)started, so the leases it
        held are lost: their jobs are requeued or failed, returned with their new state.
        An operator's drain outlives the restart."""
        with self._write() as s, s.no_autoflush:
            lost = self._release_leases(s, agent_id, now, "restarted")
            agent = s.get(Agent, agent_id)
            if agent is None:
                agent = Agent(id=agent_id, profile=profile, registered_at=now, last_seen=now)
            agent.profile = profile
            agent.tags = list(tags)
            agent.capabilities = dict(capabilities)
            agent.hostname = hostname
            agent.version = version
            agent.registered_at = now
            agent.last_seen = now
            agent.busy = False
            s.add(agent)
            return agent, lost

    def get_agent(self, agent_id: str) -> Optional[Agent]:
        with self._read() as s:
            return s.get(Agent, agent_id)

    def list_agents(self) -> List[Agent]:
        with self._read() as s:
            return list(s.exec(select(Agent).order_by(Agent.id)).all())

    def heartbeat(self, agent_id: str, *, busy: bool, now: float, lease_seconds: float) -> bool:
        """Mark the agent seen and renew its leases. False when the agent is unknown."""
        with self._write() as s:
            if s.get(Agent, agent_id) is None:
                return False
            s.execute(
                sa.update(Job)
                .where(Job.agent_id == agent_id, Job.state.in_(_ACTIVE))  # type: ignore[attr-defined]
                .values(lease_expires_at=now + lease_seconds)
            )
            s.execute(sa.update(Agent).where(Agent.id == agent_id).values(last_seen=now, busy=busy))
            return True

    def touch_agent(self, agent_id: str, *, now: float) -> None:
        with self._write() as s:
            agent = s.get(Agent, agent_id)
            if agent is not None:
                agent.last_seen = now
                s.add(agent)

    def has_queued(self, profile: str) -> bool:
        with self._read() as s:
            found = s.exec(
                select(Job.id).where(Job.state == JobState.QUEUED.value, Job.device_profile == profile).limit(1)
            ).first()
            return found is not None

    def set_draining(self, agent_id: str, draining: bool) -> Agent:
        with self._write() as s:
            agent = s.get(Agent, agent_id)
            if agent is None:
                raise NotFound(f"agent {agent_id!r} has never registered with this controller")
            agent.draining = draining
            s.add(agent)
            return agent

    def remove_agent(self, agent_id: str, *, now: float, why: str) -> List[Tuple[Job, JobState]]:
        """Forget an agent (revoked): its leases are lost (the jobs queued again or failed) and it
        leaves the device list. Its finished jobs keep its id."""
        with self._write() as s, s.no_autoflush:
            lost = self._release_leases(s, agent_id, now, why)
            agent = s.get(Agent, agent_id)
            if agent is not None:
                s.delete(agent)
            return lost

    def agent_may_download(self, agent_id: str, sha256: str) -> bool:
        """Whether ``sha256`` is the model or the input tensors of a job leased to ``agent_id``."""
        with self._read() as s:
            jobs = s.exec(select(Job).where(Job.agent_id == agent_id,
                                            Job.state.in_(_ACTIVE))).all()  # type: ignore[attr-defined]
        return any(sha256 in (job.model_sha256, (job.settings or {}).get("inputs_sha256")) for job in jobs)

    def active_jobs_by_agent(self) -> Dict[str, str]:
        """agent id -> id of the job it holds a lease for."""
        with self._read() as s:
            rows = s.exec(
                select(Job.agent_id, Job.id).where(Job.state.in_(_ACTIVE))  # type: ignore[attr-defined]
            ).all()
            return {agent_id: job_id for agent_id, job_id in rows if agent_id}

    # ------------------------------------------------------------ leases

    def lease_next(
        self,
        agent_id: str,
        fits: Callable[[Agent, Job], bool],
        *,
        now: float,
        lease_seconds: float,
    ) -> Optional[Job]:
        """Lease the oldest queued job of the agent's profile that ``fits`` the agent.

        A lease the agent still holds is given up first: an agent runs one job at a time, so
        asking for work means it no longer works on its old job.
        """
        with self._write() as s, s.no_autoflush:
            agent = s.get(Agent, agent_id)
            if agent is None:
                raise FailedPrecondition(f"agent {agent_id!r} is not registered with this controller; it must call Register first")
            self._release_leases(s, agent_id, now, "asked for new work")
            agent.last_seen = now
            agent.busy = False
            after: Optional[Tuple[float, str]] = None
            while True:
                q = select(Job).where(Job.state == JobState.QUEUED.value, Job.device_profile == agent.profile)
                if after is not None:
                    q = q.where(sa.tuple_(Job.created_at, Job.id) > sa.tuple_(*after))
                q = (
                    q.order_by(Job.created_at, Job.id)
                    .limit(_LEASE_BATCH)
                    .with_for_update(skip_locked=True)
                )
                batch = s.exec(q).all()
                for job in batch:
                    if fits(agent, job):
                        job.state = JobState.LEASED.value
                        job.agent_id = agent_id
                        job.lease_id = uuid.uuid4().hex
                        job.lease_expires_at = now + lease_seconds
                        job.attempt += 1
                        job.started_at = now
                        job.progress = None
                        agent.busy = True
                        s.add(job)
                        s.add(agent)
                        log.info(
                            "job %s leased to agent %s (attempt %d of %d)",
                            job.id, agent_id, job.attempt, job.max_attempts,
                        )
                        return job
                if len(batch) < _LEASE_BATCH:
                    s.add(agent)
                    return None
                after = (batch[-1].created_at, batch[-1].id)

    def expire_leases(self, *, now: float) -> List[Tuple[Job, JobState]]:
        """Requeue (or fail, when out of attempts) every job whose lease expired."""
        with self._write() as s:
            jobs = s.exec(
                select(Job)
                .where(Job.state.in_(_ACTIVE), Job.lease_expires_at < now)  # type: ignore[attr-defined]
                .with_for_update(skip_locked=True)
            ).all()
            # Agents are left alone: a silent agent shows as offline, and a live one says
            # whether it is busy in its next heartbeat.
            return [(job, self._lose_lease(s, job, now, "stopped responding")) for job in jobs]

    def _release_leases(self, s: Session, agent_id: str, now: float, why: str) -> List[Tuple[Job, JobState]]:
        jobs = s.exec(
            select(Job)
            .where(Job.agent_id == agent_id, Job.state.in_(_ACTIVE))  # type: ignore[attr-defined]
            .with_for_update()
        ).all()
        return [(job, self._lose_lease(s, job, now, why)) for job in jobs]

    @staticmethod
    def _lose_lease(s: Session, job: Job, now: float, why: str) -> JobState:
        agent_id, attempt = job.agent_id, job.attempt
        if attempt < job.max_attempts:
            job.state = JobState.QUEUED.value
            job.agent_id = None
            job.lease_id = None
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
        return job.job_state

    def record_progress(
        self, agent_id: str, lease_id: str, progress: dict, *, now: float, lease_seconds: float
    ) -> Tuple[bool, str]:
        """Store progress of a leased job and renew its lease.

        Returns (cancel, why): cancel is True when the agent must stop the job, because it was
        cancelled or because this lease is no longer the job's current lease.
        """
        with self._write() as s, s.no_autoflush:
            job = s.exec(select(Job).where(Job.lease_id == lease_id).with_for_update()).first()
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
            agent = s.get(Agent, agent_id)
            if agent is not None:
                agent.last_seen = now
                agent.busy = True
                s.add(agent)
            return False, ""

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
        on_result: Optional[Callable[[Session, Job], None]] = None,
    ) -> Tuple[bool, str]:
        """Store the outcome of one attempt. Idempotent by (job, attempt): a repeat of the stored
        report is accepted and changes nothing; a report for another attempt or lease is refused.
        ``on_result`` runs in the same transaction once a result is stored (constraint verdicts),
        so nobody sees the result without what is derived from it. Returns (accepted, message)."""
        if (result is None) == (failure is None):
            return False, "a report carries exactly one of result or failure"
        with self._write() as s, s.no_autoflush:
            job = s.exec(select(Job).where(Job.id == job_id).with_for_update()).first()
            if job is None:
                return False, f"job {job_id!r} does not exist on this controller"
            state = job.job_state
            current = job.lease_id == lease_id and job.attempt == attempt and job.agent_id == agent_id
            if not current:
                return False, (
                    f"report for attempt {attempt} under lease {lease_id} is stale: job {job_id} is "
                    f"{state.value} at attempt {job.attempt}; the report was discarded"
                )
            if state in (JobState.SUCCEEDED, JobState.FAILED):
                return True, f"the report of attempt {attempt} of job {job_id} was already stored"
            agent = s.get(Agent, agent_id)
            if agent is not None:
                agent.busy = False
                agent.last_seen = now
                s.add(agent)
            if state == JobState.CANCELLED:
                return False, f"job {job_id} was cancelled; the report was discarded"
            if result is not None:
                job.state = JobState.SUCCEEDED.value
                job.result = dict(result)
                if on_result is not None:
                    on_result(s, job)
            else:
                job.state = JobState.FAILED.value
                job.set_failure(failure)
            job.finished_at = now
            job.lease_expires_at = None
            s.add(job)
            log.info("job %s %s on agent %s (attempt %d)", job_id, job.state, agent_id, attempt)
            return True, f"stored the {'result' if result is not None else 'failure'} of job {job_id}"


