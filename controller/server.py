"""The controller's gRPC server: FarmService (people and their tools), AgentService (devices) and
AdminService (tokens, agent identities) on one port, with server reflection and the standard
health service; TLS when given a certificate. Who may call what is decided in auth.py, before a
servicer runs (the ``_Authorization`` interceptor); servicers scope what they do to the caller,
which they read with ``auth.caller()`` (a context variable the interceptor sets, carried into the
database threads with the call's context).

The server is asynchronous (grpc.aio) so that a waiting client costs no thread: an agent's
LeaseJob long-poll, a WatchJob or WatchRun stream and a batched Heartbeat are coroutines that
wait for change notifications (waiters.py, heartbeats.py). The repositories, the scheduler and
the suites are plain synchronous functions over SQLAlchemy, the same code on SQLite and
PostgreSQL and callable from tests, the CLI and other threads; an async driver would have meant
a second copy of that code (and SQLite's async drivers are threads underneath anyway). A call's
database work (``BlockingCalls.db``) goes to a bounded pool of ``db_workers`` threads, whose
size also bounds how many connections one replica holds: one thread for a PostgreSQL server on
this host, four for a server elsewhere, whose round trips are worth overlapping. On SQLite,
whose work is CPU alone, it runs on the event loop itself (``db_workers`` 0; app.default_db_workers
says why). Regression analyses a person asks for, which may compute for seconds, run in a small
pool of their own (``BlockingCalls.reports``) so the agents' calls never wait behind them.

Servicers only translate: a unary call is an ``async`` method that runs a plain method of the
same name with a leading underscore in the pool; wire messages in and out through wire.py
(jobs and runs through ``JobPresenter``), work done by the repositories, the artifact store and
the scheduler. Each servicer is given the parts it uses and nothing else (``Controller._main``
wires them). Domain errors become gRPC status codes in one place (``STATUS_FOR``).

The event loop runs in a thread of its own, so ``Controller`` keeps a synchronous start/stop
for the CLI, the embedded farm and the tests. It is uvloop's where uvloop is installed (the
controller extra installs it on Linux and macOS; ``event_loop`` / ``--event-loop`` chooses):
scheduling callbacks, timers and wakeups in C instead of Python. At 1,000 agents the loop's own
work is a tenth of the controller's one core; on uvloop it spent 2-4 points of a core less at 50
jobs a second (benchmarks/SCALE.md, *A slower machine again*).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import errno
import functools
import gc
import inspect
import logging
import random
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace as with_fields
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hilfarm.v1 import farm_pb2 as pb
from hilfarm.v1 import farm_pb2_grpc as pb_grpc

from hilfarm import wire_limits
from hilfarm.contract import OVERLOAD_RETRY_AFTER_KEY
from hilfarm.transport import (ServerTls, TransportError, exposure_problem, is_loopback, listen_address_problem,
                               metrics_exposure_problem, split_host_port, with_port)

from . import auth, limits, wire
from .agent_repository import AgentRepository
from .app import CallMetrics, ControllerConfig, ControllerParts, build_controller, db_threads_label
from .artifacts import CHUNK_BYTES, DEFAULT_MAX_ARTIFACT_BYTES, ArtifactStore, check_digest
from .credentials import DEFAULT_ENROLLMENT_SECONDS, Credentials
from .errors import (
    CallerGaveUp,
    CannotListen,
    CannotStart,
    FailedPrecondition,
    FarmError,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from .database import default_sqlite_url, lost_connection
from .heartbeats import HeartbeatBatcher
from .interceptors import WrappingInterceptor
from .job_repository import JobRepository, LeaseAttempt
from .models import Job, JobEvaluation, JobState
from .notifications import PostgresListener
from .op_traces import store_op_trace
from .regression_service import RegressionRpcs, judge_result
from .regression_store import RegressionStore
from .scheduler import (DEFAULT_RESTART_GRACE_SECONDS, MAX_LEASE_WAIT_SECONDS, REFRESH_CANDIDATES_MAX_AGE_SECONDS,
                        SUBMITTED_CANDIDATES_MAX_AGE_SECONDS, Scheduler)
from .submission import DEFAULT_MAX_JOBS_PER_SUBMIT, DEFAULT_MAX_QUEUED_JOBS, ModelSpec, QueueRoom, plan_run
from .suites import budgets_from_doc, evaluation_rows
from .waiters import Waiters, WorkTicket

log = logging.getLogger("hilfarm.controller")

STATUS_FOR: Dict[type, grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    CallerGaveUp: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# The agent keeps every report under this (hilfarm/wire_limits.py).
MAX_MESSAGE_BYTES = wire_limits.MAX_MESSAGE_BYTES
SWITCH_INTERVAL_SECONDS = 0.0005
# The gRPC server's options (benchmarks/grpc_floor.py serves with them too, to cost the same).
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # The controller's ACCEPTING_SERVERS share one port; a second controller on a busy port is
    # refused before binding (_address_in_use), since the kernel would let it take calls too.
    ("grpc.so_reuseport", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Agents behind NAT ping to keep their connection open; allow every 10 s.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]
# grpc.aio takes calls from the gRPC core one at a time: a server asks for the next call only
# after its event loop has handed it the last one, two turns of the loop later. On a busy loop
# (1,000 agents on PostgreSQL, four database threads competing for the interpreter lock) that
# capped the calls the controller took, and heartbeats waited seconds in the core before any of
# the controller's code saw them (p50 2.3-8.5 s, up to 944 timed out in 20 s, with the batches
# they go into written in under 0.2 s). Several servers on the one port (SO_REUSEPORT: the
# kernel spreads the connections among their listening sockets), on the same loop, take calls
# side by side, and what waits then waits where the controller decides (the database pool's
# queue, refused when it stands; the heartbeat batches). Not more: each server still takes one
# call per two turns, and a connection stays with its server, so with 8 or 32 servers (longer
# turns) one busy connection, a tool submitting a hundred jobs a second, was slowed to a quarter
# of that in the core, unseen by the overload refusal. Measured in the README's scale section.
ACCEPTING_SERVERS = 4
# New submissions are refused (Overloaded) while database work has waited longer than this for a
# thread throughout a whole window: the farm then finishes what it holds at the pace it can,
# instead of queueing every call (agents' heartbeats, leases and reports with them) behind
# submissions it cannot serve. A burst that drains within a window does not count.
OVERLOAD_QUEUE_DELAY_SECONDS = 0.25
# Threads for regression analyses (BlockingCalls.reports): comparisons and histories that may
# compute for a while, kept out of the database pool the agents' calls use.
REPORT_WORKERS = 2
# A lease is not handed out to an agent that stops waiting sooner than this (AgentServicer._lease_try).
LEASE_ANSWER_MARGIN_SECONDS = 1.0
QUEUE_DELAY_WINDOW_SECONDS = 1.0
# With the database work on the event loop, how often the loop's delay is taken (LoopDelay).
LOOP_TICK_SECONDS = 0.05
# An agent that keeps asking for work and finding none looks at the queue at least this often,
# even when no job of its profile was queued since its last look (AgentServicer.LeaseJob).
FULL_LOOK_INTERVAL_SECONDS = 30.0
# A watched job that waits in the queue is sent again this often, for its placement notes
# (agents come, go and finish other jobs without the job itself changing).
QUEUED_REFRESH_SECONDS = 10.0
# The event loops a controller can serve on (``event_loop``): "auto" is uvloop when installed.
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
# A job id as submission.plan_run makes them (uuid4 hex), not a prefix of one.
_WHOLE_JOB_ID = re.compile(r"[0-9a-f]{32}")
FARM_SERVICE = pb.DESCRIPTOR.services_by_name["FarmService"].full_name
AGENT_SERVICE = pb.DESCRIPTOR.services_by_name["AgentService"].full_name
ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["AdminService"].full_name
_SHUTTING_DOWN = "the controller is shutting down; watch again (the CLI reconnects by itself)"


def status_for(exc: FarmError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_FOR:
            return STATUS_FOR[cls]
    return grpc.StatusCode.INTERNAL


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    lost = lost_connection(exc)
    if lost is not None:
        log.warning("%s failed: %s", method, lost)
        exc = lost
    if isinstance(exc, Overloaded):
        context.set_trailing_metadata(((OVERLOAD_RETRY_AFTER_KEY, str(round(exc.retry_after * 1000))),))
    if isinstance(exc, FarmError):
        await context.abort(status_for(exc), str(exc))
    log.error("%s failed", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"controller error in {method}: {type(exc).__name__}: {exc}")


def _rpc(method: Callable) -> Callable:
    """Map exceptions raised by a servicer coroutine (or async generator) to gRPC status codes."""
    name = method.__name__
    if inspect.isasyncgenfunction(method):
        @functools.wraps(method)
        async def streaming(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for message in method(self, request, context):
                    yield message
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort_for(exc, context, name)
        return streaming

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort_for(exc, context, name)
    return unary


class _Malformed:
    """What a request that does not parse becomes, so the call is refused as INVALID_ARGUMENT
    (after authentication) instead of failing inside grpc."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Optional[Callable[[bytes], Any]]) -> Optional[Callable[[bytes], Any]]:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, invalid UTF-8 in a string field
            return _Malformed(exc)
    return parse


def _checked(message: Any, method: str) -> None:
    if isinstance(message, _Malformed):
        raise InvalidArgument(f"the request to {method.rsplit('/', 1)[-1]} is not a valid message: {message.error}")
    if hasattr(message, "ListFields"):
        limits.check_message(message)


def _peer_names(context: grpc.aio.ServicerContext) -> List[str]:
    """CN and subject alternative names of the client's certificate (mutual TLS), else []."""
    found = context.auth_context() or {}
    names = list(found.get("x509_common_name", ())) + list(found.get("x509_subject_alternative_name", ()))
    return list(dict.fromkeys(n.decode() if isinstance(n, bytes) else str(n) for n in names))


# When the caller of the RPC being served stops waiting (time.monotonic), or None: database work
# that had to wait for a thread past it is not started (DatabaseQueue.run).
_CALL_DEADLINE: contextvars.ContextVar[Optional[float]] = contextvars.ContextVar("hilfarm_call_deadline",
                                                                                 default=None)


@contextlib.contextmanager
def _serving(principal: auth.Principal, context: grpc.aio.ServicerContext) -> Iterator[None]:
    """Serve a call as its caller, knowing when the caller stops waiting (its deadline)."""
    remaining = context.time_remaining()
    token = _CALL_DEADLINE.set(None if remaining is None else time.monotonic() + remaining)
    try:
        with auth.acting_as(principal):
            yield
    finally:
        _CALL_DEADLINE.reset(token)


class _Authorization(WrappingInterceptor):
    """Authenticates and authorises every call (auth.py) and checks its request messages
    (limits.py) before a servicer sees them; the servicer runs as the caller (auth.acting_as).
    Looking a credential up reads the database, so it runs in the database threads; a caller
    looked up a moment ago is answered on the event loop (Authenticator.remembered), and read
    again in the background before it is forgotten (Authenticator.refreshes_wanted)."""

    def __init__(self, authenticator: auth.Authenticator,
                 blocking: Callable[..., "asyncio.Future[Any]"], *, client_certificates: bool) -> None:
        """``client_certificates``: the server speaks TLS, so a caller may present a certificate
        whose names must match the agent it claims to be (without TLS there is none to read)."""
        super().__init__()
        self.authenticator = authenticator
        self.blocking = blocking  # runs a function in the database pool and awaits it
        self.client_certificates = client_certificates
        self._refreshes: "set[asyncio.Future[Any]]" = set()  # credential reads under way

    def _refresh_remembered(self) -> None:
        """Read again, in the database pool, the remembered callers about to be forgotten; no call
        waits for it. The read runs outside the call that found it due, so that call's deadline
        (a heartbeat's few seconds) does not cancel it. One read at a time: the callers that come
        due while it runs are read together by the next (a busy database reads them in batches)."""
        if self._refreshes:
            return
        tokens = self.authenticator.refreshes_wanted()
        if not tokens:
            return
        read = contextvars.Context().run(asyncio.ensure_future, self.blocking(self.authenticator.refresh, *tokens))
        self._refreshes.add(read)
        read.add_done_callback(self._refresh_done)

    def _refresh_done(self, read: "asyncio.Future[Any]") -> None:
        self._refreshes.discard(read)
        # A read that failed (the database unreachable) is not tried again for these callers until
        # they are forgotten; their next calls then read them, as without reading ahead
        # (Authenticator.refresh).
        if read.cancelled():
            return  # the server is stopping
        if read.exception() is not None:
            log.debug("reading remembered callers' credentials again failed: %s", read.exception())
        self._refresh_remembered()  # the callers that came due meanwhile

    def wrap(self, handler: Any, method: str) -> Any:
        authenticate, remembered = self.authenticator.authenticate, self.authenticator.remembered
        client_certificates = self.client_certificates

        async def admit(context: grpc.aio.ServicerContext, request: Any = None) -> auth.Principal:
            try:
                metadata = context.invocation_metadata()
                peer_names = _peer_names(context) if client_certificates else []
                principal = remembered(method, metadata, peer_names)  # most calls: no database
                if principal is None:
                    principal = await self.blocking(authenticate, method, metadata, peer_names)
                else:
                    self._refresh_remembered()
                if request is not None:
                    _checked(request, method)
                return principal
            except FarmError as exc:
                await context.abort(status_for(exc), str(exc))
                raise  # not reached: abort raises

        async def stream_of(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
            async for request in requests:
                _checked(request, method)  # InvalidArgument reaches the servicer's _rpc mapping
                yield request

        def unary_in(behavior, streaming_out):  # type: ignore[no-untyped-def]
            if streaming_out:
                async def call_stream(request, context):  # type: ignore[no-untyped-def]
                    principal = await admit(context, request)
                    with _serving(principal, context):
                        async for response in behavior(request, context):
                            yield response
                return call_stream

            async def call(request, context):  # type: ignore[no-untyped-def]
                principal = await admit(context, request)
                with _serving(principal, context):
                    return await behavior(request, context)
            return call

        def stream_in(behavior, streaming_out):  # type: ignore[no-untyped-def]
            if streaming_out:
                async def call_stream(requests, context):  # type: ignore[no-untyped-def]
                    principal = await admit(context)
                    with _serving(principal, context):
                        async for response in behavior(stream_of(requests), context):
                            yield response
                return call_stream

            async def call(requests, context):  # type: ignore[no-untyped-def]
                principal = await admit(context)
                with _serving(principal, context):
                    return await behavior(stream_of(requests), context)
            return call

        kwargs = dict(request_deserializer=_tolerant(handler.request_deserializer),
                      response_serializer=handler.response_serializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(unary_in(handler.unary_unary, False), **kwargs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(unary_in(handler.unary_stream, True), **kwargs)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(stream_in(handler.stream_unary, False), **kwargs)
        return grpc.stream_stream_rpc_method_handler(stream_in(handler.stream_stream, True), **kwargs)


@dataclass(frozen=True)
class _LookThatLeftNothing:
    """An agent looked at the queue at ``at`` (event-loop time) and left no work there that it
    could take (it found none, or took the only job that fitted it): the profile's counts
    (waiters.Waiters.counts) just before it looked."""

    profile: str
    generation: int
    unclaimed: int
    at: float
    # The job it took, when it took the only one that fitted it: the look counts only once the
    # agent's report of that job is stored (AgentServicer.ReportResult). An agent that asks for
    # work without reporting its job looks, which gives that job up.
    awaiting_report_of: str = ""


@dataclass
class _Queued:
    """One call in the database pool's queue; ``counted`` once it left the queue (started, or
    withdrawn because its caller went away first)."""

    submitted_at: float
    counted: bool = False


class DatabaseQueue:
    """How long database work waits for a thread of the pool, and the work it need not start.

    The measure of overload is the queue's standing delay (as CoDel measures a network queue):
    the shortest wait of the calls started within the last window. A burst that drains within
    a window leaves one short wait and does not count; a queue that never drains does. When
    calls wait and none has started for longer, that time is the delay."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 window: float = QUEUE_DELAY_WINDOW_SECONDS) -> None:
        self._clock = clock
        self._window = window
        self._lock = threading.Lock()
        self._waiting = 0
        self._window_start = self._last_start = clock()
        self._window_shortest: Optional[float] = None
        self._standing = 0.0

    def submitted(self) -> _Queued:
        """A call goes into the pool's queue; its ticket, for ``run`` and ``withdraw``."""
        with self._lock:
            self._waiting += 1
        return _Queued(self._clock())

    def withdraw(self, call: _Queued) -> None:
        """The call is over: if it never started (its RPC was cancelled while it waited, so the
        pool dropped it), it no longer waits."""
        with self._lock:
            self._count_out(call)

    def _count_out(self, call: _Queued) -> None:
        """Under the lock: the call no longer waits (counted once, whoever comes first)."""
        if not call.counted:
            call.counted = True
            self._waiting -= 1

    def run(self, call: _Queued, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """In a pool thread (or on the event loop, for a controller without a pool): count the
        wait, then run ``fn`` unless its caller gave up meanwhile."""
        now = self._clock()
        waited = now - call.submitted_at
        with self._lock:
            self._count_out(call)
            self._last_start = now
            shortest = waited if self._window_shortest is None else min(self._window_shortest, waited)
            if now - self._window_start >= self._window:
                self._standing, self._window_start, self._window_shortest = shortest, now, None
            else:
                self._window_shortest = shortest
        deadline = _CALL_DEADLINE.get()
        if deadline is not None and now >= deadline:
            raise CallerGaveUp(f"the call waited {waited:.1f} s for a database thread, past its deadline; "
                               "it was not started")
        return fn(*args, **kwargs)

    def standing_delay(self) -> float:
        """Seconds database work waits for a thread, as a queue that does not drain (0 when idle)."""
        now = self._clock()
        with self._lock:
            stuck = now - self._last_start if self._waiting else 0.0
            recent = now - self._window_start < 2 * self._window
            return max(self._standing if recent else 0.0, stuck)


class LoopDelay:
    """How late the event loop runs what is due, for a controller whose database work runs on
    the loop (``BlockingCalls`` without a database pool): a tick every LOOP_TICK_SECONDS counts
    how late it ran in a DatabaseQueue, whose standing delay is then how long calls wait for the
    loop, as the pool's queue says how long they wait for a thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queue = DatabaseQueue(clock=loop.time)
        self._next: Optional[_Queued] = None
        self._handle: Optional[asyncio.TimerHandle] = None
        self._schedule()

    def _schedule(self) -> None:
        self._next = self.queue.submitted()
        self._next.submitted_at += LOOP_TICK_SECONDS  # it is due then, and late after
        self._handle = self._loop.call_later(LOOP_TICK_SECONDS, self._tick)

    def _tick(self) -> None:
        assert self._next is not None
        self.queue.run(self._next, _nothing)
        self._schedule()

    def standing_delay(self) -> float:
        return self.queue.standing_delay()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def _nothing() -> None:
    pass


class BlockingCalls:
    """Runs a servicer's blocking work as the caller (the call's context variables go along):
    database work in the bounded pool, or on the event loop itself when there is no pool
    (``db_executor`` None: SQLite's default, app.default_db_workers says why), regression
    analyses (comparisons, histories, suites) in a pool of their own, file work in a third.
    Created on the server's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, db_executor: Optional[concurrent.futures.Executor],
                 io_executor: concurrent.futures.Executor, reports_executor: concurrent.futures.Executor) -> None:
        self._loop = loop
        self._db_executor = db_executor
        self._io_executor = io_executor
        self._reports_executor = reports_executor
        self.db_queue = DatabaseQueue()
        self._reports_queue = DatabaseQueue()
        self.loop_delay = LoopDelay(loop) if db_executor is None else None

    @property
    def db_on_loop(self) -> bool:
        return self._db_executor is None

    async def db(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run blocking (database) work in the bounded pool, off the event loop, or with no pool
        on the loop itself, at once; not started when the caller's deadline passed first
        (CallerGaveUp)."""
        if self._db_executor is None:
            call = self.db_queue.submitted()
            try:
                return self.db_queue.run(call, fn, *args, **kwargs)
            finally:
                self.db_queue.withdraw(call)
        return await self._queued(self._db_executor, self.db_queue, fn, *args, **kwargs)

    async def reports(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """``db`` for a regression analysis a person asked for (a comparison, a history, a suite
        run): it may read and compute for a long time, so it runs in its own pool, and the
        agents' leases and reports never queue behind it (on SQLite the database pool is one
        thread)."""
        return await self._queued(self._reports_executor, self._reports_queue, fn, *args, **kwargs)

    async def _queued(self, executor: concurrent.futures.Executor, queue: "DatabaseQueue", fn: Callable,
                      *args: Any, **kwargs: Any) -> Any:
        call = queue.submitted()
        try:
            return await _in_pool(self._loop, executor, queue.run, call, fn, *args, **kwargs)
        finally:
            queue.withdraw(call)

    def refuse_new_work_when_overloaded(self) -> None:
        """Overloaded when database work has stood in the queue longer than
        OVERLOAD_QUEUE_DELAY_SECONDS (with the database work on the event loop: when the loop
        has run that late): new work (a submission) would only lengthen it."""
        if self.loop_delay is not None:
            delay, waits = self.loop_delay.standing_delay(), "its calls wait {:.2f} s for the event loop"
        else:
            delay, waits = self.db_queue.standing_delay(), "its database work waits {:.2f} s for a thread"
        if delay > OVERLOAD_QUEUE_DELAY_SECONDS:
            raise Overloaded(
                f"the controller is overloaded: {waits.format(delay)} (new "
                f"submissions are refused above {OVERLOAD_QUEUE_DELAY_SECONDS} s); nothing was submitted, "
                "send it again in a moment (the CLI does so by itself)",
                retry_after=min(5.0, max(0.5, 2 * delay)))

    def close(self) -> None:
        if self.loop_delay is not None:
            self.loop_delay.close()

    async def io(self, fn: Callable, *args: Any) -> Any:
        """Run file work (artifact chunks) in its own pool, so big transfers never queue
        ahead of the database calls of a thousand agents."""
        return await _in_pool(self._loop, self._io_executor, fn, *args)


def _address_in_use(bind: str) -> bool:
    """Whether something already listens on ``bind`` (HOST:PORT). The controller's servers share
    their port (SO_REUSEPORT), and the kernel would let a second controller, asking the same,
    join them and take a share of the calls; a socket bound without it is refused wherever
    anything listens. (Two controllers starting in the same instant can still both pass.)"""
    host, port = split_host_port(bind)
    if not port.isdigit() or int(port) == 0:
        return False  # an unused port is chosen
    try:
        addresses = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # gRPC names the problem when it binds
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: connections of a controller that stopped a moment ago don't count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


async def _in_pool(loop: asyncio.AbstractEventLoop, executor: Any, fn: Callable, *args: Any, **kwargs: Any) -> Any:
    context = contextvars.copy_context()  # auth.caller() in the pool thread is the call's caller
    return await loop.run_in_executor(executor, functools.partial(context.run, fn, *args, **kwargs))


class JobPresenter:
    """Jobs and runs as the wire shows them: each queued job with the scheduler's placement
    notes (why no agent takes it), each job with its constraint verdicts. Blocking (it reads
    the database): call it in the database pool."""

    def __init__(self, scheduler: Scheduler, regressions: RegressionStore) -> None:
        self.scheduler = scheduler
        self.regressions = regressions

    def job_pb(self, job: Job, evaluations: Optional[Dict[str, JobEvaluation]] = None) -> pb.Job:
        """``evaluations``: the job's budgets and verdicts when the caller has them (read from the
        database otherwise)."""
        notes = self.scheduler.placement_notes([job])
        msg = wire.job_to_pb(job, notes.get(job.id, ()))
        if evaluations is None:
            evaluations = self.evaluations([job])
        return wire.add_evaluation(msg, evaluations.get(job.id))

    def evaluations(self, jobs: Sequence[Job]) -> Dict[str, JobEvaluation]:
        """The budgets and verdicts of ``jobs`` by job id, for a caller that keeps them between
        messages (a watch: they change only when a job's outcome is stored)."""
        return self.regressions.evaluations(j.id for j in jobs)

    def explained_again(self, jobs: Sequence[Job], shown: Sequence[pb.Job]) -> List[pb.Job]:
        """``shown`` (the messages of ``jobs``) with the queued jobs' placement notes written
        anew, for jobs shown again only because time passed: nothing else is read, and the
        notes may come from a read of their profile's agents shared for a moment
        (Scheduler.placement_notes' ``max_age``)."""
        notes = self.scheduler.placement_notes(jobs, max_age=REFRESH_CANDIDATES_MAX_AGE_SECONDS)
        out = []
        for job, msg in zip(jobs, shown):
            if job.id in notes:
                again = pb.Job()
                again.CopyFrom(msg)
                del again.placement_notes[:]
                again.placement_notes.extend(notes[job.id])
                msg = again
            out.append(msg)
        return out

    def jobs_pb(self, jobs: Sequence[Job], evaluations: Optional[Dict[str, JobEvaluation]] = None) -> List[pb.Job]:
        """``evaluations``: as for ``job_pb``."""
        notes = self.scheduler.placement_notes(jobs)
        if evaluations is None:
            evaluations = self.evaluations(jobs)
        return [wire.add_evaluation(wire.job_to_pb(j, notes.get(j.id, ())), evaluations.get(j.id)) for j in jobs]

    def run_pb(self, run: Any, jobs: List[Job], evaluations: Optional[Dict[str, JobEvaluation]] = None, *,
               notes_max_age: float = 0.0) -> pb.Run:
        """``evaluations``: the jobs' verdicts when the caller has them (read from the
        database otherwise); ``notes_max_age``: Scheduler.placement_notes' ``max_age``."""
        msg = wire.run_to_pb(run, jobs, self.scheduler.placement_notes(jobs, max_age=notes_max_age))
        if evaluations is None:
            evaluations = self.evaluations(jobs)
        for job_msg in msg.jobs:
            wire.add_evaluation(job_msg, evaluations.get(job_msg.id))
        return msg


async def _artifact_chunks(calls: BlockingCalls, artifacts: ArtifactStore,
                           digest: str) -> AsyncIterator[pb.ArtifactChunk]:
    """A stored artifact as a stream of chunks, the header on the first (both services'
    DownloadArtifact, after each checked that the caller may have it)."""
    artifact, blocks = await calls.db(artifacts.open_chunks, digest, CHUNK_BYTES)
    header = wire.artifact_to_header(artifact)
    first = True
    while True:
        block = await calls.io(next, blocks, None)
        if block is None:
            break
        if first:
            yield pb.ArtifactChunk(header=header, data=block)
            first = False
        else:
            yield pb.ArtifactChunk(data=block)
    if first:
        yield pb.ArtifactChunk(header=header)


def _refresh_after() -> float:
    """Seconds until a watched queued job is sent again: QUEUED_REFRESH_SECONDS give or take a
    quarter, so watchers that started together (all of them, after a restart) do not all come
    back in the same moment and hold up the calls that arrive then."""
    return QUEUED_REFRESH_SECONDS * random.uniform(0.75, 1.25)


@dataclass
class _RunView:
    """What a WatchRun call last showed: the run's jobs (in the run's order), their messages, and
    their budgets and verdicts."""

    jobs: Dict[str, Job]
    messages: Dict[str, pb.Job]
    evaluations: Dict[str, JobEvaluation]

    @property
    def finished(self) -> bool:
        return all(j.job_state.finished for j in self.jobs.values())

    @property
    def any_queued(self) -> bool:
        return any(j.job_state == JobState.QUEUED for j in self.jobs.values())


class FarmServicer(pb_grpc.FarmServiceServicer):
    """Artifacts, runs and jobs, devices and regression testing, for people and their tools."""

    def __init__(self, calls: BlockingCalls, *, jobs: JobRepository, agents: AgentRepository,
                 artifacts: ArtifactStore, scheduler: Scheduler, presenter: JobPresenter,
                 regression_rpcs: RegressionRpcs, waiters: Waiters, max_attempts: int,
                 max_jobs_per_submit: int, queue_room: QueueRoom) -> None:
        """``agents``: only to drain and return devices; ``waiters``: what WatchJob and
        WatchRun wait on; ``queue_room``: each project's queued-job limit."""
        self.calls = calls
        self.jobs = jobs
        self.agents = agents
        self.artifacts = artifacts
        self.scheduler = scheduler
        self.presenter = presenter
        self.regression_rpcs = regression_rpcs
        self.waiters = waiters
        self.max_attempts = max_attempts
        self.max_jobs_per_submit = max_jobs_per_submit
        self.queue_room = queue_room

    @_rpc
    async def UploadArtifact(self, request_iterator, context):  # type: ignore[no-untyped-def]
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            first = None
        if first is None or not first.HasField("header"):
            raise InvalidArgument("the first chunk of an upload must carry the artifact header")
        project = auth.caller().project
        artifacts = self.artifacts
        artifact = artifacts.check_header(wire.artifact_from_header(first.header, created_at=time.time()))
        # Another project's copy does not count: a digest alone proves nothing, the bytes do.
        stored = await self.calls.db(artifacts.stat, artifact.sha256, project=project)
        if stored is not None:
            # The rest of the stream is never read: the client may stop sending.
            return wire.artifact_ref_to_pb(stored, already_stored=True, bytes_received=len(first.data))
        upload = await self.calls.io(functools.partial(artifacts.begin, artifact, project=project))
        try:
            await self.calls.io(upload.write, first.data)
            async for chunk in request_iterator:
                await self.calls.io(upload.write, chunk.data)
            recorded, already, received = await self.calls.io(upload.finish)
        finally:
            await self.calls.io(upload.close)
        return wire.artifact_ref_to_pb(recorded, already_stored=already, bytes_received=received)

    @_rpc
    async def StatArtifact(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.db(self._stat_artifact, request)

    def _stat_artifact(self, request: pb.StatArtifactRequest) -> pb.StatArtifactResponse:
        stored = self.artifacts.stat(request.sha256, project=auth.caller().project)
        if stored is None:
            return pb.StatArtifactResponse(present=False)
        return pb.StatArtifactResponse(present=True, ref=wire.artifact_ref_to_pb(stored))

    @_rpc
    async def Submit(self, request, context):  # type: ignore[no-untyped-def]
        self.calls.refuse_new_work_when_overloaded()
        return await self.calls.db(self._submit, request)

    def _submit(self, request: pb.SubmitRequest) -> pb.Run:
        project = auth.caller().project
        run, jobs = plan_run(
            self.artifacts,
            models=[ModelSpec(m.sha256, m.name, m.format) for m in request.models],
            device_profiles=list(request.device_profiles),
            settings=wire.settings_from_pb(request.settings),
            required_tags=list(request.required_tags),
            max_attempts=request.max_attempts,
            default_max_attempts=self.max_attempts,
            now=time.time(),
            project=project,
            max_jobs=self.max_jobs_per_submit,
        )
        budgets = budgets_from_doc([wire.budget_doc_from_pb(b) for b in request.constraints])
        self.queue_room.take(project, len(jobs))
        evaluations = evaluation_rows(jobs, budgets, request.constraint_set)
        by_job = {e.job_id: JobEvaluation(**e.model_dump()) for e in evaluations}
        # The budgets commit with the jobs: no agent can report a result that misses them.
        self.jobs.add_run(run, jobs, also=evaluations)
        log.info("run %s submitted by %s of project %s: %d job(s)", run.id, auth.caller().label, project, len(jobs))
        return self.presenter.run_pb(run, jobs, evaluations=by_job, notes_max_age=SUBMITTED_CANDIDATES_MAX_AGE_SECONDS)

    @_rpc
    async def GetRun(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.db(self._get_run, request.run_id)

    def _get_run(self, run_id: str) -> pb.Run:
        run, jobs = self.jobs.get_run(run_id, project=auth.caller().project)
        return self.presenter.run_pb(run, jobs)

    @_rpc
    async def GetJob(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.db(self._get_job, request.job_id)

    def _get_job(self, job_id: str) -> pb.Job:
        return self.presenter.job_pb(self.jobs.get_job(job_id, project=auth.caller().project))

    @_rpc
    async def ListJobs(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.db(self._list_jobs, request)

    def _list_jobs(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        if request.limit < 0:
            raise InvalidArgument(f"limit is {request.limit}; it must not be negative")
        try:
            states = [wire.job_state_from_pb(v) for v in request.states]
        except ValueError as exc:
            raise InvalidArgument(f"states: {exc}") from None
        jobs = self.jobs.list_jobs(run_id=request.run_id, states=states, limit=request.limit,
                                   project=auth.caller().project)
        listed = self.presenter.jobs_pb(jobs)
        if not request.include_samples:
            for job in listed:
                if job.HasField("result"):  # touching job.result would give every job an empty one
                    job.result.latency.ClearField("samples_ns")
                    job.result.ClearField("timeline")
        return pb.ListJobsResponse(jobs=listed)

    @_rpc
    async def CancelJob(self, request, context):  # type: ignore[no-untyped-def]
        job = await self.calls.db(self.jobs.cancel_job, request.job_id, now=time.time(),
                                  project=auth.caller().project)
        return wire.job_to_pb(job)

    @_rpc
    async def WatchJob(self, request, context):  # type: ignore[no-untyped-def]
        waiters = self.waiters
        # Changes name whole ids. A request that names one (submission.plan_run makes every id
        # 32 hex digits, so such a request is a whole id or no job's) is watched as it is: the
        # read below is its first. A unique prefix is read once before, for the whole id.
        job_id = request.job_id
        if not _WHOLE_JOB_ID.fullmatch(job_id):
            job_id = (await self.calls.db(self.jobs.get_job, job_id, project=auth.caller().project)).id
        with waiters.watching(job_id=job_id) as watch:
            last, shown = b"", None
            while True:
                watch.take()
                job, msg = await self.calls.db(self._watched_job, job_id, shown)
                data = msg.SerializeToString(deterministic=True)
                if data != last:
                    yield msg
                    last = data
                if job.job_state.finished:
                    return
                if waiters.closed:
                    raise Unavailable(_SHUTTING_DOWN)
                queued = job.job_state == JobState.QUEUED
                timed_out = not await watch.wait(_refresh_after() if queued else None)
                shown = (job, msg) if timed_out else None

    @_rpc
    async def WatchRun(self, request, context):  # type: ignore[no-untyped-def]
        """Every job of the run now, then each job again whenever it changes; ends once every
        job is finished. After the first read only the jobs that changed are read again: a
        watcher of a run of a thousand jobs would otherwise read all of them at every change."""
        waiters = self.waiters
        with waiters.watching(run_id=request.run_id) as watch:
            sent: Dict[str, bytes] = {}
            view: Optional[_RunView] = None
            timed_out = False
            while True:
                changed = watch.take()
                view, messages = await self.calls.db(self._watched_run, request.run_id, view, changed, timed_out)
                for job in messages:
                    data = job.SerializeToString(deterministic=True)
                    if sent.get(job.id) != data:
                        yield job
                        sent[job.id] = data
                if view.finished:
                    return
                if waiters.closed:
                    raise Unavailable(_SHUTTING_DOWN)
                timed_out = not await watch.wait(_refresh_after() if view.any_queued else None)

    # A watcher woken only because time passed was shown the job as it still is: a change to it
    # would have woken the watcher. Only the placement notes of what it was shown are written
    # again; the job and its verdicts are not read.

    def _watched_job(self, job_id: str, shown: Optional[Tuple[Job, pb.Job]]) -> Tuple[Job, pb.Job]:
        """``shown``: the job and message last sent, when shown again only because time passed.
        The job is read with its budgets and verdicts in one statement (the verdicts are stored
        in the transaction that stores its outcome, which any change may be)."""
        if shown is not None:
            job, msg = shown
            return job, self.presenter.explained_again([job], [msg])[0]
        job, evaluation = self.jobs.get_job_judged(job_id, project=auth.caller().project)
        return job, self.presenter.job_pb(job, {job.id: evaluation} if evaluation is not None else {})

    def _watched_run(self, run_id: str, view: Optional[_RunView], changed: Optional[Set[str]],
                     timed_out: bool) -> Tuple[_RunView, List[pb.Job]]:
        """The run as a watcher sees it now, and the messages of the jobs that may look
        different. ``view``: what this watcher last read (None: nothing yet); ``changed``: the
        jobs changed since (None: any may have, and the whole run is read again, as it is when
        a job this watcher has not seen joined the run); ``timed_out``: nothing changed, only
        time passed (the queued jobs' placement notes are written anew). A job's budgets and
        verdicts are read with the run, and with the job whenever it changed (in the statement
        that reads it, as WatchJob reads them)."""
        if view is None or changed is None or not changed <= view.jobs.keys():
            run, jobs = self.jobs.get_run(run_id, project=auth.caller().project)
            evaluations = self.presenter.evaluations(jobs)
            messages = list(self.presenter.run_pb(run, jobs, evaluations).jobs)
            view = _RunView({j.id: j for j in jobs}, {m.id: m for m in messages}, evaluations)
            return view, messages
        if not changed:
            if not timed_out:
                return view, []
            jobs = list(view.jobs.values())
            messages = self.presenter.explained_again(jobs, [view.messages[j.id] for j in jobs])
            view.messages.update((m.id, m) for m in messages)
            return view, messages
        fresh = []
        for job, evaluation in self.jobs.get_jobs_judged(list(changed)):
            fresh.append(job)
            view.evaluations.pop(job.id, None)
            if evaluation is not None:
                view.evaluations[job.id] = evaluation
        messages = self.presenter.jobs_pb(fresh, view.evaluations)
        view.jobs.update((j.id, j) for j in fresh)
        view.messages.update((m.id, m) for m in messages)
        return view, messages

    @_rpc
    async def DownloadArtifact(self, request, context):  # type: ignore[no-untyped-def]
        # A person downloads what their project stored (a model, a job's per-operator trace).
        digest = check_digest(request.sha256)
        project = auth.caller().project
        if await self.calls.db(self.artifacts.stat, digest, project=project) is None:
            raise NotFound(f"artifact {digest} is not stored for project {project}")
        async for chunk in _artifact_chunks(self.calls, self.artifacts, digest):
            yield chunk

    @_rpc
    async def ListDevices(self, request, context):  # type: ignore[no-untyped-def]
        devices = await self.calls.db(self.scheduler.devices)
        return pb.ListDevicesResponse(devices=[wire.device_to_pb(d) for d in devices])

    @_rpc
    async def DrainDevice(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.db(self._drain_device, request)

    def _drain_device(self, request: pb.DrainDeviceRequest) -> pb.Device:
        self.agents.set_draining(request.agent_id, request.drain)
        log.info("agent %s %s by %s", request.agent_id, "drained" if request.drain else "back in service",
                 auth.caller().label)
        (status,) = [d for d in self.scheduler.devices() if d.agent.id == request.agent_id]
        return wire.device_to_pb(status)

    # ---- regression testing (controller/suites.py, regression.py, changepoints.py)

    @_rpc
    async def CompareJobs(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.reports(self.regression_rpcs.compare, request)

    @_rpc
    async def AcceptBaseline(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.reports(self.regression_rpcs.accept, request)

    @_rpc
    async def ListBaselines(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.reports(self.regression_rpcs.list_baselines, request)

    @_rpc
    async def StartSuiteRun(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.reports(self.regression_rpcs.start_suite, request)

    @_rpc
    async def GetSuiteRun(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.reports(self.regression_rpcs.get_suite_run, request.id)

    @_rpc
    async def ListSuiteRuns(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.reports(self.regression_rpcs.list_suite_runs, request)

    @_rpc
    async def GetHistory(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.reports(self.regression_rpcs.history, request)


class AgentServicer(pb_grpc.AgentServiceServicer):
    """Enrollment, registration, heartbeats, leases, downloads and reports, for agents."""

    def __init__(self, calls: BlockingCalls, *, jobs: JobRepository, artifacts: ArtifactStore,
                 scheduler: Scheduler, credentials: Credentials, waiters: Waiters,
                 heartbeats: HeartbeatBatcher, metrics: Optional[CallMetrics]) -> None:
        """``waiters``: where a LeaseJob long-poll waits for work; ``metrics`` hears of every
        accepted result report."""
        self.calls = calls
        self.jobs = jobs
        self.artifacts = artifacts
        self.scheduler = scheduler
        self.credentials = credentials
        self.waiters = waiters
        self.heartbeats = heartbeats
        self.metrics = metrics
        # agent id -> device profile: which queue of waiting agents a LeaseJob joins.
        self.profiles: Dict[str, str] = {}
        # agent id -> its last look at the queue, when that left no work for it (LeaseJob).
        self.looks_that_left_nothing: Dict[str, _LookThatLeftNothing] = {}

    @_rpc
    async def Enroll(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.db(self._enroll, request)

    def _enroll(self, request: pb.EnrollRequest) -> pb.EnrollResponse:
        credential, secret = self.credentials.enroll(
            auth.caller(), agent_id=request.agent_id.strip(), device_profile=request.device_profile.strip(),
            tags=list(request.tags))
        return pb.EnrollResponse(agent_id=credential.agent_id, credential=secret,
                                 device_profile=credential.device_profile, tags=list(credential.tags))

    @_rpc
    async def Register(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.db(self._register, request)

    def _register(self, request: pb.RegisterRequest) -> pb.RegisterResponse:
        agent_id = auth.agent_id_for(request.agent_id)
        if not request.device_profile.strip():
            raise InvalidArgument(f"agent {agent_id} registered without a device profile")
        auth.check_registration(auth.caller(), request.device_profile, list(request.tags))
        self.scheduler.register(
            agent_id,
            profile=request.device_profile,
            tags=list(request.tags),
            capabilities=wire.capabilities_from_pb(request.capabilities),
            hostname=request.hostname,
            version=request.agent_version,
        )
        self.profiles[agent_id] = request.device_profile
        self.looks_that_left_nothing.pop(agent_id, None)  # its tags or runtimes may have changed: look again
        return pb.RegisterResponse(
            heartbeat_interval_seconds=self.scheduler.heartbeat_interval,
            lease_seconds=self.scheduler.lease_seconds,
        )

    @_rpc
    async def Heartbeat(self, request, context):  # type: ignore[no-untyped-def]
        known = await self.heartbeats.beat(auth.agent_id_for(request.agent_id), request.busy)
        return pb.HeartbeatResponse(known=known)

    @_rpc
    async def LeaseJob(self, request, context):  # type: ignore[no-untyped-def]
        """Lease the oldest queued job that fits the agent, waiting up to ``wait_seconds`` (at
        most MAX_LEASE_WAIT_SECONDS) for one: between tries the call sleeps until a job of the
        agent's profile is queued. A long wait counts as contact with the agent."""
        agent_id = auth.agent_id_for(request.agent_id)
        if request.wait_seconds < 0:
            raise InvalidArgument(f"wait_seconds is {request.wait_seconds}; it must not be negative")
        loop, waiters = asyncio.get_running_loop(), self.waiters
        deadline = loop.time() + min(max(request.wait_seconds, 0.0), MAX_LEASE_WAIT_SECONDS)
        profile = self.profiles.get(agent_id, "")
        last = self.looks_that_left_nothing.pop(agent_id, None)
        if last is not None and last.awaiting_report_of:
            last = None  # the job it took was not reported before this ask: it looks, and gives it up
        # An agent whose last long-poll found nothing asks again at once, and one that took the
        # only job that fitted it asks again when that job is done. Unless work of its profile
        # went unclaimed since it looked (waiters.py: work queued while it was waiting is handed
        # to an agent woken for it), a look now would find nothing: a call that may wait waits
        # first. (Otherwise a thousand idle agents cost a hundred empty looks a second, and each
        # job one more.) It still looks now and then, for anything that makes a queued job fit
        # it without a job being queued.
        if (request.wait_seconds > 0 and last is not None and last.profile == profile
                and last.unclaimed == waiters.counts(profile)[1]
                and loop.time() - last.at < FULL_LOOK_INTERVAL_SECONDS):
            ticket, look, empty = WorkTicket(profile, last.generation, last.unclaimed), False, last  # as it last looked
        else:
            ticket, look, empty = waiters.ticket(profile), True, None
        while True:
            if look:
                empty = _LookThatLeftNothing(ticket.profile, *waiters.counts(ticket.profile), at=loop.time())
                try:
                    attempt = await self.calls.db(self._lease_try, agent_id)
                except BaseException:
                    if ticket.woken:  # the work it was woken for is someone else's to look for
                        waiters.pass_on(ticket)
                    raise
                if attempt.job is not None:
                    if not attempt.another_fits and attempt.profile == ticket.profile:
                        self.looks_that_left_nothing[agent_id] = with_fields(
                            empty, awaiting_report_of=attempt.job.id)
                    return pb.LeaseJobResponse(lease=wire.lease_to_pb(attempt.job))
                if attempt.profile != ticket.profile:  # first call, or the agent re-registered elsewhere
                    self.profiles[agent_id] = attempt.profile
                    ticket = waiters.ticket(attempt.profile)
                    continue
                if ticket.woken and attempt.more_queued:
                    waiters.pass_on(ticket)
            look = True
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0 or waiters.closed:
                    if empty is not None:
                        self.looks_that_left_nothing[agent_id] = empty
                    return pb.LeaseJobResponse()
                if await waiters.wait_for_work(ticket, min(remaining, self.scheduler.heartbeat_interval)):
                    break
                self.heartbeats.touch(agent_id)

    def _lease_try(self, agent_id: str) -> LeaseAttempt:
        """One try to lease, not made when the agent stops waiting for the answer within
        LEASE_ANSWER_MARGIN_SECONDS: a lease it never hears of would hold the job until it
        expired, and cost the job an attempt."""
        deadline = _CALL_DEADLINE.get()
        if deadline is not None and time.monotonic() > deadline - LEASE_ANSWER_MARGIN_SECONDS:
            raise CallerGaveUp(f"agent {agent_id} stops waiting in less than {LEASE_ANSWER_MARGIN_SECONDS} s; "
                               "no job was leased")
        return self.scheduler.lease_once(agent_id)

    @_rpc
    async def DownloadArtifact(self, request, context):  # type: ignore[no-untyped-def]
        agent_id = auth.agent_id_for("")
        digest = check_digest(request.sha256)
        if not await self.calls.db(self.jobs.agent_may_download, agent_id, digest):
            raise PermissionDenied(f"agent {agent_id} holds no lease on a job that uses artifact {digest}")
        async for chunk in _artifact_chunks(self.calls, self.artifacts, digest):
            yield chunk

    @_rpc
    async def ReportProgress(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.db(self._report_progress, request)

    def _report_progress(self, request: pb.ReportProgressRequest) -> pb.ReportProgressResponse:
        agent_id = auth.agent_id_for(request.agent_id)
        progress = wire.progress_from_pb(request.progress)
        progress.setdefault("updated_at", time.time())
        cancel, why = self.jobs.record_progress(
            agent_id, request.lease_id, progress,
            now=time.time(), lease_seconds=self.scheduler.lease_seconds,
        )
        if cancel:
            log.info("agent %s told to stop lease %s: %s", agent_id, request.lease_id, why)
        return pb.ReportProgressResponse(cancel=cancel)

    @_rpc
    async def ReportResult(self, request, context):  # type: ignore[no-untyped-def]
        agent_id = auth.agent_id_for(request.agent_id)
        answer = await self.calls.db(self._report_result, agent_id, request)
        last = self.looks_that_left_nothing.get(agent_id)
        if answer.accepted and last is not None and last.awaiting_report_of == request.job_id:
            # Its next ask need not look first.
            self.looks_that_left_nothing[agent_id] = with_fields(last, awaiting_report_of="")
        return answer

    def _report_result(self, agent_id: str, request: pb.ReportResultRequest) -> pb.ReportResultResponse:
        outcome = request.WhichOneof("outcome")
        if outcome is None:
            raise InvalidArgument(f"report for job {request.job_id} carries neither a result nor a failure")
        if outcome == "result" and request.result.op_profile.trace:
            store_op_trace(self.artifacts, request.result.op_profile, request.job_id,
                           project=self.jobs.get_job(request.job_id).project)
        accepted, message = self.jobs.record_result(
            agent_id, request.lease_id, request.job_id, request.attempt,
            result=wire.result_from_pb(request.result) if outcome == "result" else None,
            failure=wire.failure_from_pb(request.failure) if outcome == "failure" else None,
            now=time.time(),
            on_result=judge_result,
            on_stored=self._observe_stored,
        )
        if not accepted:
            log.warning("refused a report from agent %s: %s", agent_id, message)
        return pb.ReportResultResponse(accepted=accepted, message=message)

    def _observe_stored(self, job: Job) -> None:
        """A report was stored (after its commit): the metrics observe it, from the job as
        stored (a read of it again cost every result a round trip)."""
        if self.metrics is None:
            return
        try:
            self.metrics.result_stored(job)
        except Exception:  # metrics must never cost a stored result
            log.exception("metrics could not record the result of job %s", job.id)


class AdminServicer(pb_grpc.AdminServiceServicer):
    """Tokens and agent identities. Every method but WhoAmI needs an admin (auth.POLICY); an
    admin manages the tokens of its own project, the operator token those of every project."""

    def __init__(self, calls: BlockingCalls, *, credentials: Credentials, authenticator: auth.Authenticator) -> None:
        """``authenticator``: only to say whether the controller runs without tokens."""
        self.calls = calls
        self.credentials = credentials
        self.authenticator = authenticator

    def _project(self, requested: str) -> str:
        who = auth.caller()
        project = requested.strip() or who.project
        if project != who.project and not who.operator:
            raise PermissionDenied(f"{who.label} is an admin of project {who.project}, not of {project}")
        return project

    def _tokens_checked(self) -> None:
        if self.authenticator.open:
            raise FailedPrecondition(
                "this controller runs without tokens (started without --token): every caller is already an "
                "admin, so a token would restrict nothing; start it with --token to use project tokens")

    @_rpc
    async def CreateToken(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.db(self._create_token, request)

    def _create_token(self, request: pb.CreateTokenRequest) -> pb.CreateTokenResponse:
        self._tokens_checked()
        project = self._project(request.project)
        try:
            role = auth.role_from_pb(request.role)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        if request.expires_in_seconds < 0:
            raise InvalidArgument(f"expires_in_seconds is {request.expires_in_seconds}; it must not be negative")
        now = time.time()
        row, secret = self.credentials.create_user_token(
            project=project, role=role, name=request.name, created_by=auth.caller().label,
            expires_at=now + request.expires_in_seconds if request.expires_in_seconds > 0 else None)
        return pb.CreateTokenResponse(token=wire.user_token_to_pb(row), secret=secret)

    @_rpc
    async def ListTokens(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.db(self._list_tokens, request)

    def _list_tokens(self, request: pb.ListTokensRequest) -> pb.ListTokensResponse:
        project = self._project(request.project)
        rows = self.credentials.list_user_tokens(project=project, include_revoked=request.include_revoked)
        return pb.ListTokensResponse(tokens=[wire.user_token_to_pb(r) for r in rows])

    @_rpc
    async def RevokeToken(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.db(self._revoke_token, request)

    def _revoke_token(self, request: pb.RevokeTokenRequest) -> pb.UserToken:
        who = auth.caller()
        row = self.credentials.revoke_user_token(request.id, project=None if who.operator else who.project)
        return wire.user_token_to_pb(row)

    @_rpc
    async def CreateEnrollmentToken(self, request, context):  # type: ignore[no-untyped-def]
        return await self.calls.db(self._create_enrollment_token, request)

    def _create_enrollment_token(self, request: pb.CreateEnrollmentTokenRequest) -> pb.CreateEnrollmentTokenResponse:
        if request.uses < -1:
            raise InvalidArgument(f"uses is {request.uses}; give a positive number, 0 for one use, -1 for unlimited")
        if request.expires_in_seconds < 0:
            raise InvalidArgument(f"expires_in_seconds is {request.expires_in_seconds}; it must not be negative")
        seconds = request.expires_in_seconds or DEFAULT_ENROLLMENT_SECONDS
        row, secret = self.credentials.create_enrollment_token(
            device_profile=request.device_profile.strip(), tags=list(request.tags), agent_id=request.agent_id.strip(),
            uses=None if request.uses == -1 else (request.uses or 1), expires_at=time.time() + seconds,
            created_by=auth.caller().label)
        return pb.CreateEnrollmentTokenResponse(token=wire.enrollment_token_to_pb(row), secret=secret)

    @_rpc
    async def ListAgentIdentities(self, request, context):  # type: ignore[no-untyped-def]
        rows = await self.calls.db(self.credentials.list_agents, include_revoked=request.include_revoked)
        return pb.ListAgentIdentitiesResponse(agents=[wire.agent_identity_to_pb(r) for r in rows])

    @_rpc
    async def RevokeAgent(self, request, context):  # type: ignore[no-untyped-def]
        row = await self.calls.db(self.credentials.revoke_agent, request.agent_id)
        log.warning("agent %s revoked by %s", request.agent_id, auth.caller().label)
        return wire.agent_identity_to_pb(row)

    @_rpc
    async def WhoAmI(self, request, context):  # type: ignore[no-untyped-def]
        who = auth.caller()
        return pb.WhoAmIResponse(kind=who.kind.value, project=who.project if who.kind == auth.Kind.USER else "",
                                 role=auth.role_to_pb(who.role) if who.role is not None else pb.ROLE_UNSPECIFIED,
                                 token_id=who.token_id, agent_id=who.agent_id,
                                 open=self.authenticator.open)


def chosen_event_loop(choice: str) -> str:
    """The event loop a controller asked for ``choice`` (EVENT_LOOPS) serves on: "uvloop" or
    "asyncio". CannotStart when uvloop is asked for and cannot be imported."""
    if choice not in EVENT_LOOPS:
        raise ValueError(f"event_loop is {choice!r}; it is one of {', '.join(EVENT_LOOPS)}")
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError as exc:
        if choice == "uvloop":
            raise CannotStart(f"--event-loop uvloop: uvloop cannot be imported ({exc}); install it "
                              "(pip install 'hilfarm[controller]' does, on Linux and macOS) or choose "
                              "--event-loop asyncio") from None
        return "asyncio"
    return "uvloop"


def _run_event_loop(kind: str, main: Any) -> None:
    """Run the coroutine ``main`` to the end on a new event loop of ``kind`` (chosen_event_loop)."""
    if kind == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


class Controller:
    """The controller service: the parts app.build_controller wires, served over gRPC."""

    def __init__(
        self,
        *,
        db_url: Optional[str] = None,
        data_dir: Optional[Path] = None,
        artifacts_dir: Optional[Path] = None,
        token: Optional[str] = None,
        max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
        lease_seconds: float = 30,
        heartbeat_interval: float = 5,
        restart_grace: float = DEFAULT_RESTART_GRACE_SECONDS,
        max_attempts: int = 3,
        db_workers: Optional[int] = None,
        metrics: Optional[CallMetrics] = None,
        metrics_bind: Optional[str] = None,
        remote_write_url: Optional[str] = None,
        tls: Optional[ServerTls] = None,
        insecure: bool = False,
        metrics_token: Optional[str] = None,
        max_jobs_per_submit: int = DEFAULT_MAX_JOBS_PER_SUBMIT,
        max_queued_jobs: int = DEFAULT_MAX_QUEUED_JOBS,
        nightly: Sequence[Path] = (),
        nightly_clock: Optional[Callable[[], float]] = None,
        event_loop: str = "auto",
        metrics_dir: Optional[Path] = None,
        serving_only: bool = False,
    ) -> None:
        """``metrics``: a metrics.ControllerMetrics (or anything with ``interceptor``, a
        grpc.aio.ServerInterceptor, and ``result_stored(job)``); its interceptor sees every
        call, and it hears of every result report stored. ``metrics_bind``
        (HOST:PORT, port 0 picks one) serves Prometheus metrics over HTTP; ``remote_write_url``
        also sends every result, stamped with its own time, to a Prometheus remote-write
        endpoint. ``artifacts_dir``: the artifact store (default ``data_dir/artifacts``); every
        replica of one farm must use the same one. ``restart_grace``: seconds every lease is
        kept after the start (at least the agents' longest backoff). ``db_workers``: threads
        that run database work, the most database connections this process uses for calls
        (0: the work runs on the event loop; None: app.default_db_workers).

        ``token``: the operator token (auth.py); without it the controller is open and listens
        only on loopback unless ``insecure``. ``tls``: serve gRPC (and metrics) over TLS; the
        metrics endpoint then wants ``metrics_token`` as a bearer token.

        ``nightly``: suite files run on the cron schedule in each (``controller serve --nightly``);
        ``nightly_clock`` replaces the time those schedules are read against (tests move it). A
        wrong suite file raises hilfarm.suite_files.SuiteError naming it, leaving no database open.

        ``event_loop``: "auto" (uvloop when installed), "uvloop" (CannotStart without it, before
        anything is opened) or "asyncio" (EVENT_LOOPS).

        ``serving_only``: this process serves calls on the port of a controller's main process,
        beside it (processes.py): it joins the port, and leaves the restart grace, the lease
        reaper, suites and nightly runs to the main process. ``metrics_dir``: where the
        controller's processes share their counters and histograms (ControllerConfig).

        The parts are made and wired by app.build_controller."""
        config = ControllerConfig(
            db_url=db_url, data_dir=data_dir, artifacts_dir=artifacts_dir, token=token,
            max_artifact_bytes=max_artifact_bytes, lease_seconds=lease_seconds,
            heartbeat_interval=heartbeat_interval, restart_grace=restart_grace, max_attempts=max_attempts,
            db_workers=db_workers, metrics_bind=metrics_bind, remote_write_url=remote_write_url, tls=tls,
            insecure=insecure, metrics_token=metrics_token, max_jobs_per_submit=max_jobs_per_submit,
            max_queued_jobs=max_queued_jobs, nightly=tuple(nightly), nightly_clock=nightly_clock,
            metrics_dir=metrics_dir, serving_only=serving_only)
        self.config = config
        self.event_loop = chosen_event_loop(event_loop)  # first: a refusal leaves nothing open
        # The parts, as the builder made them: the server hands each servicer the ones it uses,
        # and a test that needs a part (the job repository, the suite runner) takes it here.
        self.parts: ControllerParts = build_controller(config, metrics=metrics)
        self.data_dir = self.parts.data_dir
        self.db_url = config.db_url or default_sqlite_url(self.parts.data_dir)
        self.metrics_port: Optional[int] = None
        self.port: Optional[int] = None
        self.db_executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self.io_executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self.reports_executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._listener: Optional[PostgresListener] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._stop_serving: Optional[asyncio.Event] = None
        self._grace = 2.0
        self._stopped = threading.Event()
        self._release_database: Callable[[], None] = lambda: None

    def start(self, bind: str = "127.0.0.1:0") -> int:
        """Migrate the schema, then listen on ``bind`` (host:port). Returns the port.
        Raises TransportError, listening on nothing, for an address that would expose an
        unprotected controller (or metrics endpoint), or TLS files that cannot be used,
        CannotListen for an address in use or not HOST:PORT, DatabaseInUse for a SQLite database
        another controller serves, and CannotStart for a database it cannot open or an artifact
        directory it cannot create."""
        config, parts = self.config, self.parts
        unusable = listen_address_problem(bind, "the controller's address")
        if not unusable and config.metrics_bind:
            unusable = listen_address_problem(config.metrics_bind, "the metrics address", host_required=False,
                                              example_port=9464)
        if unusable:
            raise CannotListen(unusable)
        problem = exposure_problem(bind, token=bool(config.token), tls=config.tls is not None, insecure=config.insecure)
        if not problem and config.metrics_bind:
            problem = metrics_exposure_problem(config.metrics_bind, token=bool(config.metrics_token),
                                               insecure=config.insecure)
        if problem:
            raise TransportError(problem)
        credentials = config.tls.credentials() if config.tls is not None else None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Before anything is written: a SQLite file another controller serves stays its alone.
        self._release_database = parts.database.claim_for_serving()
        try:
            return self._start(bind, credentials)
        except BaseException:
            self._release_database()
            raise

    def _start(self, bind: str, credentials: Optional[grpc.ServerCredentials]) -> int:
        config, parts = self.config, self.parts
        if not config.serving_only:  # the main process migrated the schema before starting it
            parts.database.migrate()
        try:
            parts.artifacts.prepare()
        except OSError as exc:
            where = parts.artifacts.root
            raise CannotStart(f"the artifact directory {where} cannot be used: {exc.strerror or exc} "
                              f"({exc.filename or where}); it is --artifacts-dir, "
                              "or artifacts/ in the data dir") from None
        conninfo = parts.database.listen_conninfo()
        if conninfo is not None:
            self._listener = PostgresListener(conninfo, parts.database.feed)
            self._listener.start()
            # Changes other replicas commit from now on are heard (a resync covers a slow start).
            self._listener.connected.wait(10)
        if not config.serving_only:
            parts.scheduler.start()
        self.db_executor = (concurrent.futures.ThreadPoolExecutor(parts.db_workers, thread_name_prefix="hilfarm-db")
                            if parts.db_workers > 0 else None)
        self.io_executor = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="hilfarm-io")
        self.reports_executor = concurrent.futures.ThreadPoolExecutor(REPORT_WORKERS, thread_name_prefix="hilfarm-reports")
        # Metrics first: a busy metrics port stops the start before the gRPC port is taken.
        try:
            if parts.metrics is not None and hasattr(parts.metrics, "start"):
                self.metrics_port = parts.metrics.start(
                    config.metrics_bind, ssl_context=config.tls.ssl_context() if config.tls is not None else None,
                    bearer_token=config.metrics_token or None)
        except BaseException:
            self._stop_background()
            raise
        ready: "concurrent.futures.Future[int]" = concurrent.futures.Future()
        self._stopped.clear()
        self._loop_thread = threading.Thread(target=self._serve, args=(bind, credentials, ready),
                                             name="hilfarm-grpc", daemon=True)
        self._loop_thread.start()
        try:
            port = ready.result(timeout=60)
        except BaseException:
            self._loop_thread.join(10)
            self._loop_thread = None
            self._stop_background()
            if parts.metrics is not None and hasattr(parts.metrics, "stop"):
                parts.metrics.stop()
            raise
        if not config.serving_only:
            parts.suites.start_driving()
            if parts.nightly is not None:
                parts.nightly.start()
        self.port = port
        log.info("controller listening on %s (%s, %s, %s event loop), database %s (%s), artifacts in %s",
                 with_port(bind, port), "TLS" if config.tls is not None else "plaintext",
                 "open: no tokens" if parts.authenticator.open else "tokens required", self.event_loop,
                 parts.database, db_threads_label(parts.db_workers), parts.artifacts.root)
        if config.tls is None and config.token and not config.insecure and not is_loopback(bind):
            log.warning("tokens travel in plaintext to %s: give the controller a certificate (--tls-cert, "
                        "--tls-key) so nobody on the network can read them", bind)
        return port

    def _serve(self, bind: str, credentials: Optional[grpc.ServerCredentials],
               ready: "concurrent.futures.Future[int]") -> None:
        # A database thread gives up the interpreter lock for every statement and must win it
        # back to go on; with the default 5 ms switch interval it waits that long behind the
        # busy event loop each time, and a transaction of five statements holds the write lock
        # for 25 ms. A shorter interval keeps transactions short (at a little more switching).
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_SECONDS))
        try:
            _run_event_loop(self.event_loop, self._main(bind, credentials, ready))
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.exception("the gRPC server stopped with an error")

    async def _main(self, bind: str, credentials: Optional[grpc.ServerCredentials],
                    ready: "concurrent.futures.Future[int]") -> None:
        loop = asyncio.get_running_loop()
        parts = self.parts
        interceptors: list = []
        if parts.metrics is not None:
            interceptors.append(parts.metrics.interceptor)  # first: refused calls count too
        # start() made them
        assert self.io_executor is not None and self.reports_executor is not None
        calls = BlockingCalls(loop, self.db_executor, self.io_executor, self.reports_executor)
        interceptors.append(_Authorization(parts.authenticator, calls.db, client_certificates=credentials is not None))
        waiters = Waiters(parts.database.feed, loop)
        heartbeats = HeartbeatBatcher(parts.scheduler.record_contact, touch_interval=parts.scheduler.heartbeat_interval,
                                      on_loop=calls.db_on_loop)
        # Each servicer gets the parts it uses and nothing else (tests/architecture checks it).
        config = self.config
        farm = FarmServicer(calls, jobs=parts.jobs, agents=parts.agents, artifacts=parts.artifacts,
                            scheduler=parts.scheduler, presenter=JobPresenter(parts.scheduler, parts.regressions),
                            regression_rpcs=parts.regression_rpcs, waiters=waiters, max_attempts=config.max_attempts,
                            max_jobs_per_submit=config.max_jobs_per_submit,
                            queue_room=QueueRoom(parts.jobs.count_queued, config.max_queued_jobs))
        agents = AgentServicer(calls, jobs=parts.jobs, artifacts=parts.artifacts, scheduler=parts.scheduler,
                               credentials=parts.credentials, waiters=waiters, heartbeats=heartbeats,
                               metrics=parts.metrics)
        admin = AdminServicer(calls, credentials=parts.credentials, authenticator=parts.authenticator)
        health_servicer = health.aio.HealthServicer()
        servers = []  # the same services on one port (ACCEPTING_SERVERS says why)
        for _ in range(ACCEPTING_SERVERS):
            server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
            pb_grpc.add_FarmServiceServicer_to_server(farm, server)
            pb_grpc.add_AgentServiceServicer_to_server(agents, server)
            pb_grpc.add_AdminServiceServicer_to_server(admin, server)
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
            reflection.enable_server_reflection(
                (FARM_SERVICE, AGENT_SERVICE, ADMIN_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
            )
            servers.append(server)
        busy = (f"cannot listen on {bind}: the address is in use (is another hilfarm controller "
                f"running there?) or not available on this machine")
        if not config.serving_only and _address_in_use(bind):
            raise CannotListen(busy)
        address = bind
        for server in servers:  # the first binds (an unused port chosen for port 0), the rest join it
            try:
                port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
            except RuntimeError as exc:
                raise CannotListen(f"{busy} ({exc})") from None
            if not port:
                raise CannotListen(busy)
            address = with_port(bind, port)
        for server in servers:
            await server.start()
        for name in ("", FARM_SERVICE, AGENT_SERVICE, ADMIN_SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._loop = loop
        self._stop_serving = asyncio.Event()
        ready.set_result(port)
        await self._stop_serving.wait()
        await health_servicer.enter_graceful_shutdown()
        # Long-polls and watch streams return now instead of holding the grace period.
        waiters.close()
        await asyncio.gather(*(server.stop(self._grace) for server in servers))
        await heartbeats.close()
        calls.close()

    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError("the controller is not started")
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 2.0) -> None:
        """Stop accepting calls, let running calls finish for ``grace`` seconds, close the database.
        A suite run in progress stays in the database and resumes with the next start."""
        if self._loop_thread is None:
            return
        thread, self._loop_thread = self._loop_thread, None
        parts = self.parts
        if parts.nightly is not None:
            parts.nightly.stop()
        parts.suites.stop_driving()
        self._grace = grace
        if self._loop is not None and self._stop_serving is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop_serving.set)
        thread.join(grace + 15)
        self._stop_background()
        if parts.metrics is not None and hasattr(parts.metrics, "stop"):
            parts.metrics.stop()
        parts.database.close()
        self._release_database()
        self.port = None
        self._stopped.set()
        log.info("controller stopped")

    def _stop_background(self) -> None:
        self.parts.scheduler.stop()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        for executor in (self.db_executor, self.io_executor, self.reports_executor):
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)

    def wait(self) -> None:
        """Block until ``stop`` completes (from another thread or a signal handler)."""
        while not self._stopped.wait(0.5):
            pass


# How many collections of the middle generation come before a full one (Python's default: 10).
GC_OLDEST_THRESHOLD = 10_000


def quiet_garbage_collector() -> None:
    """Tune the garbage collector of a process that serves for a long time.

    With a thousand agents the process holds some 300,000 objects (calls, coroutines, cached
    agents). Each long-poll keeps its objects for seconds, long enough to reach the oldest
    generation, so with Python's default thresholds a full collection ran every 3-6 s and
    stopped every thread for 70-200 ms: a heartbeat or a lease caught in one waited that long,
    and a write transaction caught in one held SQLite's write lock for that long. What is alive
    once the controller started (modules, schema, compiled statements) is moved out of the
    collector's sight (gc.freeze), and a full collection waits for GC_OLDEST_THRESHOLD
    collections of the middle generation (over an hour at a thousand agents, which make two a
    second); the young generations keep Python's defaults, so their pauses stay short (a larger
    youngest generation was measured to pause for up to 170 ms). Objects in reference cycles
    are still collected, the old ones later."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, GC_OLDEST_THRESHOLD)


def serve_forever(controller: Controller, bind: Optional[str] = None, *, grace: float = 5.0,
                  look_after: Optional[Callable[[], bool]] = None,
                  on_stop: Optional[Callable[[], None]] = None) -> None:
    """Run ``controller`` (starting it on ``bind`` if not started) until SIGTERM or SIGINT,
    then stop gracefully. Call from the main thread; it tunes this process's garbage
    collector for serving (quiet_garbage_collector). ``look_after`` is called every half
    second while serving, and serving stops when it returns False; ``on_stop`` is called as
    the controller begins to stop (processes.py: the main process's serving processes)."""
    stop_requested = threading.Event()

    def on_signal(signum, _frame):  # type: ignore[no-untyped-def]
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop_requested.set()

    # The handlers first: a signal that comes while the controller starts stops it too.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if controller.port is None:
            controller.start(bind or "127.0.0.1:0")
        quiet_garbage_collector()
        # A timed wait lets the main thread run the Python-level signal handlers.
        while not stop_requested.wait(0.5):
            if controller._stopped.is_set():
                return
            if look_after is not None and not look_after():
                return
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if on_stop is not None:
            on_stop()
        controller.stop(grace)
