"""The controller's gRPC server: FarmService (people and their tools) and AgentService (devices)
on one port, with server reflection, the standard health service and token authentication.

Servicers only translate: wire messages in and out through wire.py, work done by the store,
the artifact store and the scheduler. Domain errors become gRPC status codes in one place
(``STATUS_FOR``).
"""
from __future__ import annotations

import functools
import hmac
import inspect
import itertools
import logging
import signal
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import grpc
import platformdirs
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hilfarm.v1 import farm_pb2 as pb
from hilfarm.v1 import farm_pb2_grpc as pb_grpc

from . import wire
from .artifacts import CHUNK_BYTES, DEFAULT_MAX_ARTIFACT_BYTES, ArtifactStore, check_digest
from .errors import (
    CannotListen,
    FailedPrecondition,
    FarmError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from .models import Job
from .op_traces import store_op_trace
from .regression_store import RegressionStore
from .suites import SuiteRunner, budgets_by_job, budgets_from_doc
from .scheduler import Scheduler
from .store import Store, default_sqlite_url
from .submission import ModelSpec, plan_run

log = logging.getLogger("hilfarm.controller")

STATUS_FOR: Dict[type, grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}

MAX_MESSAGE_BYTES = 16 << 20
WATCH_POLL_SECONDS = 0.15
FARM_SERVICE = pb.DESCRIPTOR.services_by_name["FarmService"].full_name
AGENT_SERVICE = pb.DESCRIPTOR.services_by_name["AgentService"].full_name
# Health probes (load balancers, Kubernetes) carry no credentials, and health reveals nothing.
_OPEN_METHODS_PREFIX = "/grpc.health.v1.Health/"


def status_for(exc: FarmError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_FOR:
            return STATUS_FOR[cls]
    return grpc.StatusCode.INTERNAL


def _abort_for(exc: BaseException, context: grpc.ServicerContext, method: str) -> None:
    if isinstance(exc, FarmError):
        context.abort(status_for(exc), str(exc))
    log.exception("%s failed", method)
    context.abort(grpc.StatusCode.INTERNAL, f"controller error in {method}: {type(exc).__name__}: {exc}")


def _rpc(method: Callable) -> Callable:
    """Map exceptions raised by a servicer method to gRPC status codes."""
    name = method.__name__
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def streaming(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except Exception as exc:
                _abort_for(exc, context, name)
        return streaming

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            _abort_for(exc, context, name)
    return unary


class _TokenAuth(grpc.ServerInterceptor):
    """Refuse every call without ``authorization: Bearer <token>`` metadata."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        if handler_call_details.method.startswith(_OPEN_METHODS_PREFIX):
            return continuation(handler_call_details)
        sent = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                sent = value
        if sent is not None and hmac.compare_digest(str(sent).encode(), self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if sent is None:
            message = ("this controller requires a token: send metadata 'authorization: Bearer <token>' "
                       "(the hilfarm CLI and agent read it from HILFARM_TOKEN)")
        else:
            message = ("the token in the 'authorization' metadata is not this controller's token "
                       "(check HILFARM_TOKEN; the value must read 'Bearer <token>')")

        def refuse(request_or_iterator, context):  # type: ignore[no-untyped-def]
            context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        kwargs = dict(request_deserializer=handler.request_deserializer,
                      response_serializer=handler.response_serializer)
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
        return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


class _Services:
    """What the servicers share."""

    def __init__(self, controller: "Controller") -> None:
        self.c = controller
        self.store = controller.store
        self.artifacts = controller.artifacts
        self.scheduler = controller.scheduler

    def job_pb(self, job: Job) -> pb.Job:
        notes = self.scheduler.placement_notes([job])
        msg = wire.job_to_pb(job, notes.get(job.id, ()))
        return wire.add_evaluation(msg, self.c.regressions.evaluations([job.id]).get(job.id))

    def run_pb(self, run: Any, jobs: List[Job]) -> pb.Run:
        msg = wire.run_to_pb(run, jobs, self.scheduler.placement_notes(jobs))
        evaluations = self.c.regressions.evaluations(j.id for j in jobs)
        for job_msg in msg.jobs:
            wire.add_evaluation(job_msg, evaluations.get(job_msg.id))
        return msg


def _artifact_chunks(artifacts: Any, sha256: str, context: grpc.ServicerContext) -> Iterator[Any]:
    """A stored artifact as a stream of chunks, the header on the first."""
    artifact, blocks = artifacts.open_chunks(check_digest(sha256), CHUNK_BYTES)
    header = wire.artifact_to_header(artifact)
    first = True
    for block in blocks:
        if first:
            yield pb.ArtifactChunk(header=header, data=block)
            first = False
        else:
            yield pb.ArtifactChunk(data=block)
        if not context.is_active():
            return
    if first:
        yield pb.ArtifactChunk(header=header)


class FarmServicer(pb_grpc.FarmServiceServicer):
    def __init__(self, services: _Services) -> None:
        self.s = services

    @_rpc
    def UploadArtifact(self, request_iterator, context):  # type: ignore[no-untyped-def]
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("the first chunk of an upload must carry the artifact header")
        artifacts = self.s.artifacts
        artifact = artifacts.check_header(wire.artifact_from_header(first.header, created_at=time.time()))
        stored = artifacts.stat(artifact.sha256)
        if stored is not None:
            # The rest of the stream is never read: the client may stop sending.
            return wire.artifact_ref_to_pb(stored, already_stored=True, bytes_received=len(first.data))
        data = itertools.chain([first.data], (chunk.data for chunk in request_iterator))
        recorded, already, received = artifacts.receive(artifact, data)
        return wire.artifact_ref_to_pb(recorded, already_stored=already, bytes_received=received)

    @_rpc
    def StatArtifact(self, request, context):  # type: ignore[no-untyped-def]
        stored = self.s.artifacts.stat(request.sha256)
        if stored is None:
            return pb.StatArtifactResponse(present=False)
        return pb.StatArtifactResponse(present=True, ref=wire.artifact_ref_to_pb(stored))

    @_rpc
    def Submit(self, request, context):  # type: ignore[no-untyped-def]
        run, jobs = plan_run(
            self.s.artifacts,
            models=[ModelSpec(m.sha256, m.name, m.format) for m in request.models],
            device_profiles=list(request.device_profiles),
            settings=wire.settings_from_pb(request.settings),
            required_tags=list(request.required_tags),
            max_attempts=request.max_attempts,
            default_max_attempts=self.s.c.max_attempts,
            now=time.time(),
        )
        budgets = budgets_from_doc([wire.budget_doc_from_pb(b) for b in request.constraints])
        self.s.store.add_run(run, jobs)
        # Budgets are stored before any agent can report a result for these jobs.
        self.s.c.regressions.add_budgets(budgets_by_job(jobs, budgets), request.constraint_set)
        log.info("run %s submitted: %d job(s)", run.id, len(jobs))
        self.s.scheduler.notify_work()
        return self.s.run_pb(run, jobs)

    @_rpc
    def GetRun(self, request, context):  # type: ignore[no-untyped-def]
        run, jobs = self.s.store.get_run(request.run_id)
        return self.s.run_pb(run, jobs)

    @_rpc
    def GetJob(self, request, context):  # type: ignore[no-untyped-def]
        return self.s.job_pb(self.s.store.get_job(request.job_id))

    @_rpc
    def ListJobs(self, request, context):  # type: ignore[no-untyped-def]
        if request.limit < 0:
            raise InvalidArgument(f"limit is {request.limit}; it must not be negative")
        try:
            states = [wire.job_state_from_pb(v) for v in request.states]
        except ValueError as exc:
            raise InvalidArgument(f"states: {exc}") from None
        jobs = self.s.store.list_jobs(run_id=request.run_id, states=states, limit=request.limit)
        notes = self.s.scheduler.placement_notes(jobs)
        evaluations = self.s.c.regressions.evaluations(j.id for j in jobs)
        listed = [wire.add_evaluation(wire.job_to_pb(j, notes.get(j.id, ())), evaluations.get(j.id)) for j in jobs]
        if not request.include_samples:
            for job in listed:
                if job.HasField("result"):  # touching job.result would give every job an empty one
                    job.result.latency.ClearField("samples_ns")
                    job.result.ClearField("timeline")
        return pb.ListJobsResponse(jobs=listed)

    @_rpc
    def CancelJob(self, request, context):  # type: ignore[no-untyped-def]
        job = self.s.store.cancel_job(request.job_id, now=time.time())
        self.s.scheduler.notify_change()
        return wire.job_to_pb(job)

    @_rpc
    def WatchJob(self, request, context):  # type: ignore[no-untyped-def]
        # Polling the database (rather than only waiting for in-process events) sees changes
        # made through any controller replica; in-process events just cut the delay.
        gone = threading.Event()
        context.add_callback(gone.set)
        scheduler = self.s.scheduler
        last = b""
        while True:
            generation = scheduler.change_generation
            job = self.s.store.get_job(request.job_id)
            msg = self.s.job_pb(job)
            data = msg.SerializeToString(deterministic=True)
            if data != last:
                yield msg
                last = data
            if job.job_state.finished or gone.is_set() or not context.is_active():
                return
            if scheduler.stopping:
                raise Unavailable("the controller is shutting down; watch the job again")
            scheduler.wait_for_change(WATCH_POLL_SECONDS, since=generation)

    @_rpc
    def DownloadArtifact(self, request, context):  # type: ignore[no-untyped-def]
        yield from _artifact_chunks(self.s.artifacts, request.sha256, context)

    @_rpc
    def ListDevices(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ListDevicesResponse(devices=[wire.device_to_pb(d) for d in self.s.scheduler.devices()])

    @_rpc
    def DrainDevice(self, request, context):  # type: ignore[no-untyped-def]
        self.s.store.set_draining(request.agent_id, request.drain)
        log.info("agent %s %s", request.agent_id, "drained" if request.drain else "back in service")
        if not request.drain:
            self.s.scheduler.notify_work()
        (status,) = [d for d in self.s.scheduler.devices() if d.agent.id == request.agent_id]
        return wire.device_to_pb(status)


    # ---- regression testing (controller/suites.py, regression.py, changepoints.py)

    @_rpc
    def CompareJobs(self, request, context):  # type: ignore[no-untyped-def]
        return self.s.c.regression_rpcs.compare(request)

    @_rpc
    def AcceptBaseline(self, request, context):  # type: ignore[no-untyped-def]
        return self.s.c.regression_rpcs.accept(request)

    @_rpc
    def ListBaselines(self, request, context):  # type: ignore[no-untyped-def]
        return self.s.c.regression_rpcs.list_baselines(request)

    @_rpc
    def StartSuiteRun(self, request, context):  # type: ignore[no-untyped-def]
        return self.s.c.regression_rpcs.start_suite(request)

    @_rpc
    def GetSuiteRun(self, request, context):  # type: ignore[no-untyped-def]
        return self.s.c.regression_rpcs.get_suite_run(request.id)

    @_rpc
    def ListSuiteRuns(self, request, context):  # type: ignore[no-untyped-def]
        return self.s.c.regression_rpcs.list_suite_runs(request)

    @_rpc
    def GetHistory(self, request, context):  # type: ignore[no-untyped-def]
        return self.s.c.regression_rpcs.history(request)


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(self, services: _Services) -> None:
        self.s = services

    @_rpc
    def Register(self, request, context):  # type: ignore[no-untyped-def]
        if not request.agent_id.strip():
            raise InvalidArgument("Register needs an agent_id (stable per physical device)")
        if not request.device_profile.strip():
            raise InvalidArgument(f"agent {request.agent_id} registered without a device profile")
        self.s.scheduler.register(
            request.agent_id,
            profile=request.device_profile,
            tags=list(request.tags),
            capabilities=wire.capabilities_from_pb(request.capabilities),
            hostname=request.hostname,
            version=request.agent_version,
        )
        return pb.RegisterResponse(
            heartbeat_interval_seconds=self.s.scheduler.heartbeat_interval,
            lease_seconds=self.s.scheduler.lease_seconds,
        )

    @_rpc
    def Heartbeat(self, request, context):  # type: ignore[no-untyped-def]
        return pb.HeartbeatResponse(known=self.s.scheduler.heartbeat(request.agent_id, busy=request.busy))

    @_rpc
    def LeaseJob(self, request, context):  # type: ignore[no-untyped-def]
        job = self.s.scheduler.lease(request.agent_id, request.wait_seconds, still_wanted=context.is_active)
        if job is None:
            return pb.LeaseJobResponse()
        return pb.LeaseJobResponse(lease=wire.lease_to_pb(job))

    @_rpc
    def DownloadArtifact(self, request, context):  # type: ignore[no-untyped-def]
        yield from _artifact_chunks(self.s.artifacts, request.sha256, context)

    @_rpc
    def ReportProgress(self, request, context):  # type: ignore[no-untyped-def]
        progress = wire.progress_from_pb(request.progress)
        progress.setdefault("updated_at", time.time())
        cancel, why = self.s.store.record_progress(
            request.agent_id, request.lease_id, progress,
            now=time.time(), lease_seconds=self.s.scheduler.lease_seconds,
        )
        if cancel:
            log.info("agent %s told to stop lease %s: %s", request.agent_id, request.lease_id, why)
        self.s.scheduler.notify_change()
        return pb.ReportProgressResponse(cancel=cancel)

    @_rpc
    def ReportResult(self, request, context):  # type: ignore[no-untyped-def]
        outcome = request.WhichOneof("outcome")
        if outcome is None:
            raise InvalidArgument(f"report for job {request.job_id} carries neither a result nor a failure")
        if outcome == "result" and request.result.op_profile.trace:
            store_op_trace(self.s.artifacts, request.result.op_profile, request.job_id)
        accepted, message = self.s.store.record_result(
            request.agent_id, request.lease_id, request.job_id, request.attempt,
            result=wire.result_from_pb(request.result) if outcome == "result" else None,
            failure=wire.failure_from_pb(request.failure) if outcome == "failure" else None,
            now=time.time(),
            on_result=self.s.c.judge_result,
        )
        if not accepted:
            log.warning("refused a report from agent %s: %s", request.agent_id, message)
        elif self.s.c.metrics is not None:
            try:
                self.s.c.metrics.result_reported(request.job_id, request.attempt)
            except Exception:  # metrics must never cost a stored result
                log.exception("metrics could not record the result of job %s", request.job_id)
        self.s.scheduler.notify_change()
        return pb.ReportResultResponse(accepted=accepted, message=message)


class Controller:
    """The controller service: a database, an artifact directory and a gRPC server."""

    def __init__(
        self,
        *,
        db_url: Optional[str] = None,
        data_dir: Optional[Path] = None,
        token: Optional[str] = None,
        max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
        lease_seconds: float = 30,
        heartbeat_interval: float = 5,
        max_attempts: int = 3,
        max_workers: int = 128,
        metrics: Optional[Any] = None,
        metrics_bind: Optional[str] = None,
        remote_write_url: Optional[str] = None,
    ) -> None:
        """``metrics``: a metrics.ControllerMetrics (or anything with ``interceptor`` and
        ``result_reported(job_id, attempt)``); its interceptor sees every call, and it hears
        of every accepted result report. ``metrics_bind`` (HOST:PORT, port 0 picks one) serves
        Prometheus metrics over HTTP; ``remote_write_url`` also sends every result, stamped with
        its own time, to a Prometheus remote-write endpoint."""
        if max_attempts < 1:
            raise ValueError(f"max_attempts is {max_attempts}; a job needs at least one attempt")
        self.data_dir = Path(data_dir) if data_dir is not None else Path(platformdirs.user_data_dir("hilfarm"))
        self.db_url = db_url or default_sqlite_url(self.data_dir)
        self.token = token or None
        self.max_attempts = max_attempts
        self.max_workers = max_workers
        self.metrics = metrics
        self.store = Store(self.db_url)
        self.artifacts = ArtifactStore(self.data_dir / "artifacts", self.store, max_bytes=max_artifact_bytes)
        self.scheduler = Scheduler(self.store, lease_seconds=lease_seconds, heartbeat_interval=heartbeat_interval)
        # ---- constraints, baselines, suites and nightly runs (controller/regression_service.py)
        from .regression_service import RegressionRpcs

        self.regressions = RegressionStore(self.store)
        self.suites = SuiteRunner(self.store, self.regressions, self.artifacts, self.scheduler,
                                  default_max_attempts=max_attempts)
        self.regression_rpcs = RegressionRpcs(self)
        self.judge_result = self.regression_rpcs.judge_result
        self.nightly: Optional[Any] = None  # a nightly.NightlyRunner, started with the server
        # ----
        # ---- metrics hook (controller/metrics.py)
        self.metrics_bind = metrics_bind
        self.metrics_port: Optional[int] = None
        if self.metrics is None and (metrics_bind or remote_write_url):
            from .metrics import ControllerMetrics

            ControllerMetrics.for_controller(self, remote_write_url=remote_write_url)
        # ----
        self.port: Optional[int] = None
        self._server: Optional[grpc.Server] = None
        self._health: Optional[health.HealthServicer] = None
        self._stopped = threading.Event()

    def start(self, bind: str = "127.0.0.1:0") -> int:
        """Create missing tables, then listen on ``bind`` (host:port). Returns the port."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store.create_schema()
        self.artifacts.prepare()
        interceptors: list = []
        if self.metrics is not None:
            interceptors.append(self.metrics.interceptor)  # first: refused calls count too
        if self.token:
            interceptors.append(_TokenAuth(self.token))
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="hilfarm-rpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
                # Agents behind NAT ping to keep their connection open; allow every 10 s.
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                # gRPC sets SO_REUSEPORT by default: a second controller on a busy port would
                # start and take half the calls. One farm per address.
                ("grpc.so_reuseport", 0),
            ],
        )
        services = _Services(self)
        pb_grpc.add_FarmServiceServicer_to_server(FarmServicer(services), server)
        pb_grpc.add_AgentServiceServicer_to_server(AgentServicer(services), server)
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (FARM_SERVICE, AGENT_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        # Metrics first: a gRPC server that never started keeps its port until it is collected.
        if self.metrics is not None and hasattr(self.metrics, "start"):
            self.metrics_port = self.metrics.start(self.metrics_bind)
        busy = (f"cannot listen on {bind}: the address is in use (is another hilfarm controller "
                f"running there?) or not available on this machine")
        try:
            port = server.add_insecure_port(bind)
        except RuntimeError as exc:
            port, cause = 0, f" ({exc})"
        else:
            cause = ""
        if not port:
            if self.metrics is not None and hasattr(self.metrics, "stop"):
                self.metrics.stop()
            raise CannotListen(busy + cause)
        server.start()
        self.scheduler.start()
        if self.nightly is not None:
            self.nightly.start()
        for name in ("", FARM_SERVICE, AGENT_SERVICE):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        self.port = port
        self._stopped.clear()
        host = bind.rsplit(":", 1)[0] if ":" in bind else bind
        log.info("controller listening on %s:%d, database %s, artifacts in %s",
                 host, port, self.store, self.artifacts.root)
        return port

    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError("the controller is not started")
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 2.0) -> None:
        """Stop accepting calls, let running calls finish for ``grace`` seconds, close the database."""
        if self._server is None:
            return
        server, self._server = self._server, None
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        # Long-polls and watch streams return now instead of holding the grace period.
        if self.nightly is not None:
            self.nightly.stop()
        self.scheduler.stop()
        server.stop(grace).wait()
        self.suites.join(grace)
        if self.metrics is not None and hasattr(self.metrics, "stop"):
            self.metrics.stop()
        self.store.close()
        self._stopped.set()
        log.info("controller stopped")

    def wait(self) -> None:
        """Block until ``stop`` completes (from another thread or a signal handler)."""
        while not self._stopped.wait(0.5):
            pass


def serve_forever(controller: Controller, bind: Optional[str] = None, *, grace: float = 5.0) -> None:
    """Run ``controller`` (starting it on ``bind`` if not started) until SIGTERM or SIGINT,
    then stop gracefully. Call from the main thread."""
    if controller.port is None:
        controller.start(bind or "127.0.0.1:0")
    stop_requested = threading.Event()

    def on_signal(signum, _frame):  # type: ignore[no-untyped-def]
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop_requested.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # A timed wait lets the main thread run the Python-level signal handlers.
        while not stop_requested.wait(0.5):
            if controller._stopped.is_set():
                return
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        controller.stop(grace)
