"""The controller's parts and the one place that wires them: ``build_controller`` makes the
database, the repositories over it, the scheduler, the suite runner, the regression calls,
the metrics and the nightly runner, each given only what it uses. server.Controller serves
what it builds (its servicers, too, get only the parts they use); nothing else connects one
part to another, and no part sets attributes on another.

    Database ─┬─ JobRepository (runs, jobs, leases) ◀── AgentRepository (agents; its leases)
              ├─ ArtifactRepository (records, owners) ◀── ArtifactStore (the files)
              └─ RegressionStore (budgets, baselines, suite runs)
    Scheduler(JobRepository, AgentRepository)
    Credentials(Database, AgentRepository) ◀── Authenticator
    SuiteRunner(JobRepository, RegressionStore, ArtifactStore, Scheduler)
    RegressionRpcs(JobRepository, RegressionStore, SuiteRunner)
    ControllerMetrics(JobRepository, RegressionStore, Database.write_lock_use)
    NightlyRunner(ArtifactStore, SuiteRunner)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

import grpc
import sqlalchemy as sa

from hilfarm import wire_limits
from hilfarm.paths import default_data_dir
from hilfarm.suite_files import SuiteError, load_suite
from hilfarm.transport import ServerTls, is_loopback_host

from . import auth
from .artifacts import DEFAULT_MAX_ARTIFACT_BYTES, ArtifactStore
from .agent_repository import AgentRepository
from .artifact_repository import ArtifactRepository
from .credentials import Credentials
from .database import Database, default_sqlite_url, parse_database_url
from .errors import CannotStart
from .job_repository import JobRepository
from .models import Job
from .metrics import ControllerMetrics
from .nightly import NightlyRunner
from .regression_service import RegressionRpcs
from .regression_store import RegressionStore
from .remote_write import RemoteWriter
from .scheduler import DEFAULT_RESTART_GRACE_SECONDS, Scheduler
from .submission import DEFAULT_MAX_JOBS_PER_SUBMIT, DEFAULT_MAX_QUEUED_JOBS
from .suites import SuiteRunner

# Threads that run database work (benchmarks/scale.py, 1,000 agents, 200 watchers, 100 jobs/s
# offered; benchmarks/SCALE.md). SQLite takes one writer at a time: with more threads, the one
# holding the write lock waited for the interpreter lock behind the others at every statement (4
# threads: 82-85 jobs/s, heartbeat p99 71-84 ms; 1 thread: 93 jobs/s, 38-57 ms). On PostgreSQL
# more threads overlap round trips to the server, which pays where a round trip is long (a server
# on another host) and costs where it is short: on this host (loopback, Unix socket) one thread
# answered sooner (submit->lease p99 lower in every alternated pair of runs, 12-172 ms in 10
# of 12 runs against 39-202 ms in 9 of 13 with four; 79-87 % of a core against 91-99 %) and
# took every job offered, topping out near 140 jobs/s against four threads' 159 ("One database
# thread for a PostgreSQL server on this host"). With 8 or 16 threads the event loop got the
# interpreter too rarely and heartbeats took seconds.
# SQLite's work is the CPU's alone (no round trips; with WAL a commit does not wait for the disk),
# so it runs on the event loop itself (0 threads): a database thread handed each piece of work
# back and forth with the loop and, for every statement, gave up the interpreter lock and waited
# to win it back while holding SQLite's write lock. On a machine that needed 4.7 ms of CPU per
# job, side by side at 1,000 agents and 100 jobs/s offered: one thread 65 jobs/s with 600-700
# submissions refused as overloaded, on the loop 99 jobs/s and none refused ("Database work on
# the event loop" in benchmarks/SCALE.md).
SQLITE_DB_WORKERS = 0
LOCAL_POSTGRES_DB_WORKERS = 1
REMOTE_DB_WORKERS = 4


def default_db_workers(url: sa.URL) -> int:
    """Threads for database work when ``--db-threads`` is not given, by where the database is
    (0: on the event loop)."""
    if url.get_backend_name() == "sqlite":
        return SQLITE_DB_WORKERS
    return LOCAL_POSTGRES_DB_WORKERS if database_on_this_host(url) else REMOTE_DB_WORKERS


def db_threads_label(db_workers: int) -> str:
    """How the controller's first log line says where its database work runs."""
    if db_workers == 0:
        return "on the event loop"
    return f"{db_workers} thread{'' if db_workers == 1 else 's'}"


def database_on_this_host(url: sa.URL) -> bool:
    """Whether the server of ``url`` is reached over loopback or a Unix socket (no host: libpq's
    default socket; a host that is a directory). A name other than localhost is not looked up:
    that would wait for DNS at start, and such a server is taken as remote."""
    hosts = ([url.host] if url.host else []) + list(url.normalized_query.get("host", ()))
    return all(host.startswith("/") or is_loopback_host(host, look_up=False) for host in hosts)


class CallMetrics(Protocol):
    """What the server needs of its metrics (metrics.ControllerMetrics, or a test's own): an
    interceptor that sees every call, and each result report stored (the job as stored, once
    per report however often its agent sends it). ``start`` and ``stop``, when they exist, run
    with the server."""

    interceptor: grpc.aio.ServerInterceptor

    def result_stored(self, job: Job) -> None: ...


@dataclass(frozen=True)
class ControllerConfig:
    """What a controller is started with (server.Controller's keyword arguments; the CLI's flags)."""

    db_url: Optional[str] = None
    data_dir: Optional[Path] = None
    artifacts_dir: Optional[Path] = None
    token: Optional[str] = None
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    lease_seconds: float = 30
    heartbeat_interval: float = 5
    restart_grace: float = DEFAULT_RESTART_GRACE_SECONDS
    max_attempts: int = 3
    db_workers: Optional[int] = None
    metrics_bind: Optional[str] = None
    remote_write_url: Optional[str] = None
    tls: Optional[ServerTls] = None
    insecure: bool = False
    metrics_token: Optional[str] = None
    max_jobs_per_submit: int = DEFAULT_MAX_JOBS_PER_SUBMIT
    max_queued_jobs: int = DEFAULT_MAX_QUEUED_JOBS
    nightly: Sequence[Path] = ()  # suite files run on their cron schedules
    nightly_clock: Optional[Callable[[], float]] = None  # the time those schedules are read against
    # Where the processes of a controller serving from several (serve --processes) write their
    # counters and histograms for the main process to add up (metrics.share_across_processes).
    metrics_dir: Optional[Path] = None
    # A process that serves calls beside a controller's main process (processes.py), which alone
    # keeps the restart grace, reaps leases, drives suites and nightly runs and serves /metrics.
    serving_only: bool = False

    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir) if self.data_dir is not None else default_data_dir()


@dataclass(frozen=True)
class Repositories:
    """The repositories over one database, wired to each other (an agent's leases are released
    and renewed by the job repository, in the agent repository's transactions)."""

    database: Database
    jobs: JobRepository
    agents: AgentRepository
    artifact_records: ArtifactRepository
    regressions: RegressionStore


def open_repositories(database: Database) -> Repositories:
    """The repositories over ``database`` (which they share: its engine, transactions, feed)."""
    jobs = JobRepository(database)
    return Repositories(database=database, jobs=jobs, agents=AgentRepository(database, leases=jobs),
                        artifact_records=ArtifactRepository(database), regressions=RegressionStore(database))


@dataclass(frozen=True)
class ControllerParts:
    """What ``build_controller`` made: server.Controller serves these, and tests that need a
    part take it from here."""

    data_dir: Path
    db_workers: int
    database: Database
    jobs: JobRepository
    agents: AgentRepository
    artifact_records: ArtifactRepository
    artifacts: ArtifactStore
    scheduler: Scheduler
    credentials: Credentials
    authenticator: auth.Authenticator
    regressions: RegressionStore
    suites: SuiteRunner
    regression_rpcs: RegressionRpcs
    metrics: Optional[CallMetrics]
    nightly: Optional[NightlyRunner]


def build_controller(config: ControllerConfig, *, metrics: Optional[CallMetrics] = None) -> ControllerParts:
    """Wire a controller's parts (nothing listens, no schema is migrated yet). ``metrics``
    replaces the ControllerMetrics made when ``metrics_bind``, ``remote_write_url`` or ``metrics_dir`` is set.
    Raises ValueError for a setting out of range, errors.CannotStart for a database URL or a
    remote-write URL that cannot be used, and hilfarm.suite_files.SuiteError (naming the file)
    for a nightly suite file that is wrong, leaving no database open."""
    if config.max_attempts < 1:
        raise ValueError(f"max_attempts is {config.max_attempts}; a job needs at least one attempt")
    if not 1 <= config.max_attempts <= wire_limits.MAX_ATTEMPTS:
        raise ValueError(f"max_attempts is {config.max_attempts}; the limit is {wire_limits.MAX_ATTEMPTS}")
    data_dir = config.resolved_data_dir()
    db_url = config.db_url or default_sqlite_url(data_dir)
    db_workers = config.db_workers if config.db_workers is not None else default_db_workers(parse_database_url(db_url))
    if db_workers < 0:
        raise ValueError(f"db_workers is {db_workers}; it is 0 (on the event loop) or more threads")
    remote_write = None
    if metrics is None and config.remote_write_url:  # checked before the database is opened
        try:
            remote_write = RemoteWriter(config.remote_write_url)
        except ValueError as error:
            raise CannotStart(f"{error} (--remote-write-url)") from None
    database = Database(db_url, pool_size=db_workers + 4)
    repos = open_repositories(database)
    jobs, agents, regressions = repos.jobs, repos.agents, repos.regressions
    artifacts_dir = Path(config.artifacts_dir) if config.artifacts_dir else data_dir / "artifacts"
    artifacts = ArtifactStore(artifacts_dir, repos.artifact_records, max_bytes=config.max_artifact_bytes,
                              replica=database.feed.origin)
    scheduler = Scheduler(jobs, agents, lease_seconds=config.lease_seconds,
                          heartbeat_interval=config.heartbeat_interval, restart_grace=config.restart_grace)
    credentials = Credentials(database, agents)
    authenticator = auth.Authenticator(credentials, operator_token=config.token or None, clock=time.time)
    suites = SuiteRunner(jobs, regressions, artifacts, scheduler, default_max_attempts=config.max_attempts)
    regression_rpcs = RegressionRpcs(jobs, regressions, suites, max_queued_jobs=config.max_queued_jobs)
    if metrics is None and (config.metrics_bind or config.remote_write_url or config.metrics_dir):
        metrics = ControllerMetrics(jobs, regressions, heartbeat_interval=scheduler.heartbeat_interval,
                                    clock=scheduler.clock, remote_write=remote_write,
                                    write_lock_use=database.write_lock_use, shared_dir=config.metrics_dir)
    nightly = None
    if config.nightly and not config.serving_only:
        kwargs = {"clock": config.nightly_clock} if config.nightly_clock is not None else {}
        try:
            nightly = NightlyRunner(artifacts, suites, [load_suite(Path(p)) for p in config.nightly], **kwargs)
        except BaseException as error:
            database.close()
            if isinstance(error, ValueError) and not isinstance(error, SuiteError):
                # NightlyRunner's own checks (no schedule, not cron) also name the file.
                raise SuiteError(str(error)) from error
            raise
    return ControllerParts(data_dir=data_dir, db_workers=db_workers, database=database, jobs=jobs, agents=agents,
                           artifact_records=repos.artifact_records, artifacts=artifacts, scheduler=scheduler,
                           credentials=credentials, authenticator=authenticator, regressions=regressions,
                           suites=suites, regression_rpcs=regression_rpcs, metrics=metrics, nightly=nightly)
