"""The controller's database connection and its transactions: the one part every repository
(job_repository.JobRepository for runs, jobs and leases; agent_repository.AgentRepository;
artifact_repository.ArtifactRepository; regression_store.RegressionStore;
credentials.Credentials; suites.SuiteRunner) goes through.

One ``Database`` wraps one SQLAlchemy engine over any SQLAlchemy URL (``sqlite:///file``,
``postgresql+psycopg://user@host/db``).

- ``read()``: a session for reads; rows it returns stay usable after it closes.
- ``write()``: a session in one transaction, committed at the end of the ``with`` block and
  rolled back on an exception. On SQLite every write transaction of this process takes one
  lock (SQLite has no ``FOR UPDATE``; a read that later writes would otherwise fail with
  SQLITE_BUSY when another thread committed in between). The jobs a transaction changed
  (``record_change``) go to ``feed`` after the commit, and on PostgreSQL also to the other
  replicas with ``pg_notify`` inside the transaction.
- ``write_connection()``: ``write()`` without the ORM session (a Core connection in one
  transaction), for the hot writes that run prebuilt Core statements.
- ``connect()``: a plain connection, for the hot reads that run prebuilt Core statements, each
  of which needs no snapshot shared with another (on PostgreSQL every statement commits on its
  own: no BEGIN and ROLLBACK round trips around a one-statement read).
- ``lost_connection(exc)``: a call that failed because the database connection was lost (a
  PostgreSQL restart or failover) becomes ``Unavailable``, which callers retry.
- ``write_lock_use()``: on SQLite, how long write transactions held the process's write lock and
  waited for it (exported as metrics: a lock busy nearly all the time is the ceiling of what one
  SQLite file serves).
- ``claim_for_serving()``: a SQLite file is served by one controller at a time.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Union

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from .errors import CannotStart, DatabaseInUse, Unavailable
from .models import Job, JobState
from .notifications import CHANNEL, Change, ChangeFeed, encode
from .schema import MigrationReport, migrate


def default_sqlite_url(data_dir: Path) -> str:
    """The embedded default: a SQLite file in the controller's data dir."""
    return f"sqlite:///{Path(data_dir) / 'hilfarm.db'}"


URL_EXAMPLES = "sqlite:///PATH/hilfarm.db, or postgresql+psycopg://USER@HOST:5432/DATABASE"


def parse_database_url(url: str) -> sa.URL:
    """``url`` (``--db`` / ``HILFARM_DB``) read as a SQLAlchemy URL; CannotStart when it is none.
    SQLAlchemy's own message does not repeat the URL, which may hold a password."""
    try:
        return make_url(url)
    except sa.exc.ArgumentError as exc:
        raise CannotStart(f"the database URL (--db / HILFARM_DB) cannot be read: {exc}; "
                          f"it looks like {URL_EXAMPLES}") from None


# How long a SQLite connection waits for another one's lock (the busy timeout) before it fails.
SQLITE_BUSY_SECONDS = 30.0


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
    _enter_wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _enter_wal(cur) -> None:  # type: ignore[no-untyped-def]
    """WAL lets readers (gRPC threads, watchers) proceed while one writer commits. Turning a new
    database file to WAL takes SQLite's exclusive lock, and a connection that asks for it while
    another one is taking a lock is refused at once ("database is locked"): SQLite does not wait
    there (its busy handler would deadlock the two). Several stores or controllers opening a new
    file together meet that, so the connection asks again until the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    pause = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.25)


@dataclass(frozen=True)
class WriteLockUse:
    """What SQLite's one writer at a time cost this process since it started: seconds write
    transactions held the lock, seconds they waited for it, and how many there were."""

    held_seconds: float
    waited_seconds: float
    transactions: int


class _TimedWriteLock:
    """The process's SQLite write lock (re-entrant), counting how long it is held and waited for.
    Measured at 1,000 agents, this lock was what capped the jobs a second: held 72-88 % of the
    time at 26-41 jobs/s, each transaction about three times its own CPU time (a database thread gives
    up the interpreter lock at every statement and waits to win it back while holding this one)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._depth = 0  # changed only by the thread that holds the lock
        self._acquired_at = 0.0
        self._held = self._waited = 0.0
        self._transactions = 0

    def __enter__(self) -> None:
        asked = self._clock()
        self._lock.acquire()
        self._depth += 1
        if self._depth == 1:
            self._acquired_at = self._clock()
            self._waited += self._acquired_at - asked

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._held += self._clock() - self._acquired_at
            self._transactions += 1
        self._lock.release()

    def use(self) -> WriteLockUse:
        # Read without the lock: a scrape must not wait for a transaction, and each counter only
        # grows (at worst the three are one transaction apart).
        return WriteLockUse(self._held, self._waited, self._transactions)


# The controller's connections to PostgreSQL, as pg_stat_activity lists them (unless the
# database URL names them itself).
POSTGRES_APPLICATION_NAME = "hilfarm-controller"


class Database:
    """The engine, its transactions and the change feed they publish to."""

    def __init__(self, url: str, *, echo: bool = False, feed: Optional[ChangeFeed] = None,
                 pool_size: int = 20) -> None:
        """``pool_size``: PostgreSQL connections kept open (the server's database threads and a
        few for its background work); more are opened for bursts."""
        self.url = parse_database_url(url)
        self.feed = feed if feed is not None else ChangeFeed()
        self.backend = self.url.get_backend_name()
        kwargs: dict = {"echo": echo}
        # The file of a SQLite database (None for an in-memory one, and on PostgreSQL).
        self.sqlite_file: Optional[Path] = None
        if self.backend == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS}
            database = self.url.database or ""
            if database in ("", ":memory:"):
                # One shared connection, or every thread would see its own empty database.
                kwargs["poolclass"] = StaticPool
            else:
                self.sqlite_file = Path(database).expanduser().resolve()
                try:
                    self.sqlite_file.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise CannotStart(f"the SQLite database {self.sqlite_file} cannot be created: "
                                      f"{exc.strerror or exc} ({exc.filename or self.sqlite_file.parent})") from None
        else:
            # No ping before each use: it cost a round trip per transaction (about a fifth of
            # them; 43-46 -> 47-66 jobs/s at 1,000 agents). A connection found dead instead fails
            # its call, and SQLAlchemy then replaces every pooled connection opened before it, so
            # after a database restart only the calls already on a dead connection are refused,
            # as Unavailable (lost_connection), and their callers send them again.
            kwargs.update(pool_size=pool_size, max_overflow=40)
            if "application_name" not in self.url.query:  # how pg_stat_activity names them
                kwargs["connect_args"] = {"application_name": POSTGRES_APPLICATION_NAME}
        try:
            self.engine = sa.create_engine(self.url, **kwargs)
        except (sa.exc.NoSuchModuleError, ImportError) as exc:  # an unknown dialect, a driver not installed
            raise CannotStart(f"the database {self!r} cannot be used: {exc}; a URL looks like {URL_EXAMPLES}") from None
        if self.backend == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            self._write_lock: contextlib.AbstractContextManager = _TimedWriteLock()
        else:
            self._write_lock = contextlib.nullcontext()

    def __repr__(self) -> str:
        return self.url.render_as_string(hide_password=True)

    @property
    def is_postgresql(self) -> bool:
        return self.backend == "postgresql"

    def migrate(self) -> MigrationReport:
        """Bring the schema to this version's newest migration (schema.migrate). The first thing
        a controller does with its database, so a database it cannot reach (not running, no
        such database, refused credentials, a file that is no SQLite database) is CannotStart here."""
        try:
            return migrate(self.engine)
        except sa.exc.DBAPIError as exc:
            # Not a constraint or a statement the migration got wrong: those stay what they are.
            if type(exc) not in (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DatabaseError):
                raise
            lines = str(exc.orig).strip().splitlines() if exc.orig is not None else []
            raise CannotStart(f"cannot open the database {self!r}: "
                              f"{'; '.join(line.strip() for line in lines[:2]) or type(exc.orig).__name__}") from None

    def close(self) -> None:
        self.engine.dispose()

    def connect(self) -> sa.Connection:
        if self.is_postgresql:
            return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self.engine.connect()

    def write_lock_use(self) -> Optional[WriteLockUse]:
        """How this process's write transactions used SQLite's write lock so far (None on
        PostgreSQL, where transactions lock rows, not the database)."""
        return self._write_lock.use() if isinstance(self._write_lock, _TimedWriteLock) else None

    def claim_for_serving(self) -> Callable[[], None]:
        """On a SQLite file: hold the file's serving lock (``<database>.serving``, an exclusive
        ``flock``) while this controller serves, and return what releases it; the kernel releases
        it too when the process dies, so a controller killed with SIGKILL and started again
        claims it at once. Raises DatabaseInUse, naming the holder, when another controller
        serves the file: a second one would answer the same agents with waiters it never wakes
        (change notifications on SQLite stay in their process), and its transactions could
        interleave with this one's (the lock that keeps a transaction's reads and the writes
        that depend on them together is per process). On PostgreSQL and an
        in-memory database there is nothing to claim (replicas share PostgreSQL by design)."""
        if self.sqlite_file is None:
            return lambda: None
        import fcntl

        database = self.url.database
        fd = os.open(self.sqlite_file.with_name(self.sqlite_file.name + ".serving"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DatabaseInUse(
                f"the SQLite database {database} is served by another controller ({holder}); one SQLite "
                f"database takes one controller: stop that one, give this one its own --data-dir or --db, "
                f"or run replicas on a shared PostgreSQL database") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())

        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                os.close(fd)  # closing the descriptor drops the flock
        return release

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session to read with. On PostgreSQL it reads outside a transaction, as ``connect()``
        does: at READ COMMITTED each statement reads a snapshot of its own either way, and the
        transaction cost a BEGIN and a ROLLBACK, two round trips, and psycopg forgets every
        statement it prepared on the connection at a ROLLBACK (the server then plans them again).
        On SQLite the transaction is what keeps the statements of one read on one snapshot."""
        if self.is_postgresql:
            with self.connect() as conn, Session(bind=conn, expire_on_commit=False) as s:
                yield s
            return
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        changes: List[Change] = []
        with self._write_lock:
            with Session(self.engine, expire_on_commit=False) as s:
                s.info["changes"] = changes
                try:
                    yield s
                    s.flush()  # the rows before the notices of them (commit would flush them anyway)
                    revoked = bool(s.info.get("revoked"))
                    if changes or revoked:
                        self._commit_with_notices(s.connection(), changes, revoked=revoked)
                    s.commit()
                except BaseException:
                    s.rollback()
                    raise
        if changes:
            self.feed.publish(changes)

    @contextlib.contextmanager
    def write_connection(self) -> Iterator[sa.Connection]:
        """``write()`` without the ORM session, for the hot paths that run prebuilt Core statements:
        a connection in one transaction, committed at the end of the ``with`` block and rolled back
        on an exception, its changes published the same way. On SQLite the session's own work
        (about a quarter of a short transaction's) would be done holding the write lock that every
        other write transaction waits for."""
        changes: List[Change] = []
        with self._write_lock:
            with self.engine.begin() as conn:
                conn.info["changes"] = changes
                try:
                    yield conn
                    self._commit_with_notices(conn, changes)
                finally:
                    del conn.info["changes"]
        if changes:
            self.feed.publish(changes)

    @contextlib.contextmanager
    def write_alone(self) -> Iterator[sa.Connection]:
        """PostgreSQL: a write of one statement that commits by itself (autocommit): one round
        trip, where a transaction takes two (the statement, then its COMMIT). The statement sends
        its own notifications (notifications.notify_in_statement); the changes recorded with
        ``record_change`` go to this process's feed once it has run. A second statement would be a
        transaction of its own: a write of several statements takes ``write_connection``. On
        SQLite a statement costs no round trip and this is not offered."""
        if not self.is_postgresql:
            raise TypeError("write_alone is for PostgreSQL; on SQLite use write_connection")
        changes: List[Change] = []
        with self.connect() as conn:
            conn.info["changes"] = changes
            try:
                yield conn
            finally:
                del conn.info["changes"]
        if changes:
            self.feed.publish(changes)

    def _commit_with_notices(self, conn: sa.Connection, changes: List[Change], *, revoked: bool = False) -> None:
        """On PostgreSQL, end the write transaction of ``conn`` so that the other replicas hear
        ``changes`` (with ``revoked``, also that it revoked a credential): its NOTIFYs and its
        COMMIT go to the server as one simple query, one round trip (a notification is delivered
        at the commit, and not at all when the commit fails).
        The commit SQLAlchemy then asks of the connection finds the transaction over and sends
        nothing (psycopg commits only a transaction in progress). A ``SELECT pg_notify(...)``
        before the COMMIT cost a round trip of its own and a result to read (a tenth of the
        controller's samples in py-spy under benchmarks/job_cost.py --db postgres; timed alone,
        480-589 against 365-473 µs of CPU per transaction).

        The statement goes through SQLAlchemy, so a lost connection is reported and replaced as
        for any other (lost_connection); without parameters, so psycopg sends it as it is,
        with each payload quoted by the connection's own escaping."""
        if not (changes or revoked) or not self.is_postgresql:
            return
        from psycopg import sql  # here: psycopg is installed only where PostgreSQL is used

        driver = conn.connection.driver_connection
        notices = "".join(f"NOTIFY {CHANNEL}, {sql.Literal(payload).as_string(driver)}; "
                          for payload in encode(changes, self.feed.origin, revoked=revoked))
        conn.exec_driver_sql(notices + "COMMIT", execution_options={"no_parameters": True})

    @staticmethod
    def record_change(s: Union[Session, sa.Connection], change: Change) -> None:
        """Publish ``change`` once the ``write()`` or ``write_connection()`` transaction of ``s``
        commits."""
        s.info["changes"].append(change)

    @staticmethod
    def record_revocation(s: Session) -> None:
        """The ``write()`` transaction of ``s`` revokes a credential: once it commits, the other
        replicas (and processes of this controller) hear it and forget whom they remember."""
        s.info["revoked"] = True

    @staticmethod
    def job_change(job: Job) -> Change:
        """The change a write of ``job``, as it now is, makes."""
        state = job.job_state
        return Change(job.id, job.run_id, job.device_profile, queued=state == JobState.QUEUED, finished=state.finished)

    @classmethod
    def record_job_change(cls, s: Union[Session, sa.Connection], job: Job) -> None:
        """Record that ``job`` changed in the ``write()`` or ``write_connection()`` transaction of ``s``."""
        cls.record_change(s, cls.job_change(job))

    def listen_conninfo(self) -> Optional[str]:
        """The libpq address a notifications.PostgresListener connects to (None on SQLite)."""
        if not self.is_postgresql:
            return None
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)


def lost_connection(exc: BaseException) -> Optional[Unavailable]:
    """``Unavailable`` for an error raised because the database connection was lost (the
    pool then replaces it: the same call sent again reaches the database); None otherwise."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        lines = str(exc.orig).strip().splitlines() if exc.orig is not None else []
        return Unavailable(f"the controller lost its connection to the database ({lines[0] if lines else type(exc.orig).__name__}); "
                           "the call may not have been stored: send it again (it reconnects by itself)")
    return None
