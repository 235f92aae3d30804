"""The controller's gRPC server: FarmService (people and their tools), AgentService (devices) and
AdminService (tokens, agent identities) on one port, with server reflection and the standard
health service; TLS when given a certificate. Who may call what is decided in auth.py, before a
servicer runs (the ``_Authorization`` interceptor); servicers scope what they do to the caller.

Servicers only translate: wire messages in and out through wire.py, work done by the store,
the artifact store and the scheduler. Domain errors become gRPC status codes in one place
(``STATUS_FOR``).
"""
from __future__ import annotations

import functools
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

from hilfarm import wire_limits
from hilfarm.transport import ServerTls, TransportError, exposure_problem, is_loopback, metrics_exposure_problem

from . import auth, limits, wire
from .artifacts import CHUNK_BYTES, DEFAULT_MAX_ARTIFACT_BYTES, ArtifactStore, check_digest
from .credentials import DEFAULT_ENROLLMENT_SECONDS, Credentials
from .errors import (
    CannotListen,
    FailedPrecondition,
    FarmError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from .models import Job
from .op_traces import store_op_trace
from .regression_store import RegressionStore
from .suites import SuiteRunner, budgets_by_job, budgets_from_doc
from .scheduler import Scheduler
from .store import Store, default_sqlite_url
from .submission import (
    DEFAULT_MAX_JOBS_PER_SUBMIT,
    DEFAULT_MAX_QUEUED_JOBS,
    ModelSpec,
    check_queue_room,
    plan_run,
)

log = logging.getLogger("hilfarm.controller")

STATUS_FOR: Dict[type, grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}

# The agent keeps every report under this (hilfarm/wire_limits.py).
MAX_MESSAGE_BYTES = wire_limits.MAX_MESSAGE_BYTES
WATCH_POLL_SECONDS = 0.15
FARM_SERVICE = pb.DESCRIPTOR.services_by_name["FarmService"].full_name
AGENT_SERVICE = pb.DESCRIPTOR.services_by_name["AgentService"].full_name
ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["AdminService"].full_name


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


def _peer_names(context: grpc.ServicerContext) -> List[str]:
    """CN and subject alternative names of the client's certificate (mutual TLS), else []."""
    found = context.auth_context() or {}
    names = list(found.get("x509_common_name", ())) + list(found.get("x509_subject_alternative_name", ()))
    return list(dict.fromkeys(n.decode() if isinstance(n, bytes) else str(n) for n in names))


class _Authorization(grpc.ServerInterceptor):
    """Authenticates and authorises every call (auth.py) and checks its request messages
    (limits.py) before a servicer sees them; the servicer runs as the caller (auth.acting_as)."""

    def __init__(self, authenticator: auth.Authenticator) -> None:
        self.authenticator = authenticator

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        def admit(context: grpc.ServicerContext, request: Any = None) -> auth.Principal:
            try:
                principal = self.authenticator.authenticate(method, context.invocation_metadata(),
                                                            _peer_names(context))
                if request is not None:
                    _checked(request, method)
                return principal
            except FarmError as exc:
                context.abort(status_for(exc), str(exc))
                raise  # not reached: abort raises

        def stream_of(requests: Iterator[Any]) -> Iterator[Any]:
            for request in requests:
                _checked(request, method)  # InvalidArgument reaches the servicer's _rpc mapping
                yield request

        def unary_in(behavior, streaming_out):  # type: ignore[no-untyped-def]
            if streaming_out:
                def call(request, context):  # type: ignore[no-untyped-def]
                    principal = admit(context, request)
                    with auth.acting_as(principal):
                        yield from behavior(request, context)
                return call

            def call(request, context):  # type: ignore[no-untyped-def]
                principal = admit(context, request)
                with auth.acting_as(principal):
                    return behavior(request, context)
            return call

        def stream_in(behavior, streaming_out):  # type: ignore[no-untyped-def]
            if streaming_out:
                def call(requests, context):  # type: ignore[no-untyped-def]
                    principal = admit(context)
                    with auth.acting_as(principal):
                        yield from behavior(stream_of(requests), context)
                return call

            def call(requests, context):  # type: ignore[no-untyped-def]
                principal = admit(context)
                with auth.acting_as(principal):
                    return behavior(stream_of(requests), context)
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
        project = auth.caller().project
        artifacts = self.s.artifacts
        artifact = artifacts.check_header(wire.artifact_from_header(first.header, created_at=time.time()))
        # Another project's copy does not count: a digest alone proves nothing, the bytes do.
        stored = artifacts.stat(artifact.sha256, project=project)
        if stored is not None:
            # The rest of the stream is never read: the client may stop sending.
            return wire.artifact_ref_to_pb(stored, already_stored=True, bytes_received=len(first.data))
        data = itertools.chain([first.data], (chunk.data for chunk in request_iterator))
        recorded, already, received = artifacts.receive(artifact, data, project=project)
        return wire.artifact_ref_to_pb(recorded, already_stored=already, bytes_received=received)

    @_rpc
    def StatArtifact(self, request, context):  # type: ignore[no-untyped-def]
        stored = self.s.artifacts.stat(request.sha256, project=auth.caller().project)
        if stored is None:
            return pb.StatArtifactResponse(present=False)
        return pb.StatArtifactResponse(present=True, ref=wire.artifact_ref_to_pb(stored))

    @_rpc
    def Submit(self, request, context):  # type: ignore[no-untyped-def]
        project = auth.caller().project
        run, jobs = plan_run(
            self.s.artifacts,
            models=[ModelSpec(m.sha256, m.name, m.format) for m in request.models],
            device_profiles=list(request.device_profiles),
            settings=wire.settings_from_pb(request.settings),
            required_tags=list(request.required_tags),
            max_attempts=request.max_attempts,
            default_max_attempts=self.s.c.max_attempts,
            now=time.time(),
            project=project,
            max_jobs=self.s.c.max_jobs_per_submit,
        )
        budgets = budgets_from_doc([wire.budget_doc_from_pb(b) for b in request.constraints])
        check_queue_room(self.s.store, project, len(jobs), self.s.c.max_queued_jobs)
        self.s.store.add_run(run, jobs)
        # Budgets are stored before any agent can report a result for these jobs.
        self.s.c.regressions.add_budgets(budgets_by_job(jobs, budgets), request.constraint_set)
        log.info("run %s submitted by %s of project %s: %d job(s)", run.id, auth.caller().label, project, len(jobs))
        self.s.scheduler.notify_work()
        return self.s.run_pb(run, jobs)

    @_rpc
    def GetRun(self, request, context):  # type: ignore[no-untyped-def]
        run, jobs = self.s.store.get_run(request.run_id, project=auth.caller().project)
        return self.s.run_pb(run, jobs)

    @_rpc
    def GetJob(self, request, context):  # type: ignore[no-untyped-def]
        return self.s.job_pb(self.s.store.get_job(request.job_id, project=auth.caller().project))

    @_rpc
    def ListJobs(self, request, context):  # type: ignore[no-untyped-def]
        if request.limit < 0:
            raise InvalidArgument(f"limit is {request.limit}; it must not be negative")
        try:
            states = [wire.job_state_from_pb(v) for v in request.states]
        except ValueError as exc:
            raise InvalidArgument(f"states: {exc}") from None
        jobs = self.s.store.list_jobs(run_id=request.run_id, states=states, limit=request.limit,
                                      project=auth.caller().project)
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
        job = self.s.store.cancel_job(request.job_id, now=time.time(), project=auth.caller().project)
        self.s.scheduler.notify_change()
        return wire.job_to_pb(job)

    @_rpc
    def WatchJob(self, request, context):  # type: ignore[no-untyped-def]
        # Polling the database (rather than only waiting for in-process events) sees changes
        # made through any controller replica; in-process events just cut the delay.
        gone = threading.Event()
        context.add_callback(gone.set)
        scheduler = self.s.scheduler
        project = auth.caller().project
        last = b""
        while True:
            generation = scheduler.change_generation
            job = self.s.store.get_job(request.job_id, project=project)
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
        # A person downloads what their project stored (a model, a job's per-operator trace).
        digest = check_digest(request.sha256)
        if self.s.artifacts.stat(digest, project=auth.caller().project) is None:
            raise NotFound(f"artifact {digest} is not stored for project {auth.caller().project}")
        yield from _artifact_chunks(self.s.artifacts, digest, context)

    @_rpc
    def ListDevices(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ListDevicesResponse(devices=[wire.device_to_pb(d) for d in self.s.scheduler.devices()])

    @_rpc
    def DrainDevice(self, request, context):  # type: ignore[no-untyped-def]
        self.s.store.set_draining(request.agent_id, request.drain)
        log.info("agent %s %s by %s", request.agent_id, "drained" if request.drain else "back in service",
                 auth.caller().label)
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
    def Enroll(self, request, context):  # type: ignore[no-untyped-def]
        credential, secret = self.s.c.credentials.enroll(
            auth.caller(), agent_id=request.agent_id.strip(), device_profile=request.device_profile.strip(),
            tags=list(request.tags))
        return pb.EnrollResponse(agent_id=credential.agent_id, credential=secret,
                                 device_profile=credential.device_profile, tags=list(credential.tags))

    @_rpc
    def Register(self, request, context):  # type: ignore[no-untyped-def]
        agent_id = auth.agent_id_for(request.agent_id)
        if not request.device_profile.strip():
            raise InvalidArgument(f"agent {agent_id} registered without a device profile")
        auth.check_registration(auth.caller(), request.device_profile, list(request.tags))
        self.s.scheduler.register(
            agent_id,
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
        agent_id = auth.agent_id_for(request.agent_id)
        return pb.HeartbeatResponse(known=self.s.scheduler.heartbeat(agent_id, busy=request.busy))

    @_rpc
    def LeaseJob(self, request, context):  # type: ignore[no-untyped-def]
        agent_id = auth.agent_id_for(request.agent_id)
        if request.wait_seconds < 0:
            raise InvalidArgument(f"wait_seconds is {request.wait_seconds}; it must not be negative")
        job = self.s.scheduler.lease(agent_id, request.wait_seconds, still_wanted=context.is_active)
        if job is None:
            return pb.LeaseJobResponse()
        return pb.LeaseJobResponse(lease=wire.lease_to_pb(job))

    @_rpc
    def DownloadArtifact(self, request, context):  # type: ignore[no-untyped-def]
        agent_id = auth.agent_id_for("")
        digest = check_digest(request.sha256)
        if not self.s.store.agent_may_download(agent_id, digest):
            raise PermissionDenied(f"agent {agent_id} holds no lease on a job that uses artifact {digest}")
        yield from _artifact_chunks(self.s.artifacts, digest, context)

    @_rpc
    def ReportProgress(self, request, context):  # type: ignore[no-untyped-def]
        agent_id = auth.agent_id_for(request.agent_id)
        progress = wire.progress_from_pb(request.progress)
        progress.setdefault("updated_at", time.time())
        cancel, why = self.s.store.record_progress(
            agent_id, request.lease_id, progress,
            now=time.time(), lease_seconds=self.s.scheduler.lease_seconds,
        )
        if cancel:
            log.info("agent %s told to stop lease %s: %s", agent_id, request.lease_id, why)
        self.s.scheduler.notify_change()
        return pb.ReportProgressResponse(cancel=cancel)

    @_rpc
    def ReportResult(self, request, context):  # type: ignore[no-untyped-def]
        agent_id = auth.agent_id_for(request.agent_id)
        outcome = request.WhichOneof("outcome")
        if outcome is None:
            raise InvalidArgument(f"report for job {request.job_id} carries neither a result nor a failure")
        if outcome == "result" and request.result.op_profile.trace:
            store_op_trace(self.s.artifacts, request.result.op_profile, request.job_id,
                           project=self.s.store.get_job(request.job_id).project)
        accepted, message = self.s.store.record_result(
            agent_id, request.lease_id, request.job_id, request.attempt,
            result=wire.result_from_pb(request.result) if outcome == "result" else None,
            failure=wire.failure_from_pb(request.failure) if outcome == "failure" else None,
            now=time.time(),
            on_result=self.s.c.judge_result,
        )
        if not accepted:
            log.warning("refused a report from agent %s: %s", agent_id, message)
        elif self.s.c.metrics is not None:
            try:
                self.s.c.metrics.result_reported(request.job_id, request.attempt)
            except Exception:  # metrics must never cost a stored result
                log.exception("metrics could not record the result of job %s", request.job_id)
        self.s.scheduler.notify_change()
        return pb.ReportResultResponse(accepted=accepted, message=message)


class AdminServicer(pb_grpc.AdminServiceServicer):
    """Tokens and agent identities. Every method but WhoAmI needs an admin (auth.POLICY); an
    admin manages the tokens of its own project, the operator token those of every project."""

    def __init__(self, services: _Services) -> None:
        self.s = services

    def _project(self, requested: str) -> str:
        who = auth.caller()
        project = requested.strip() or who.project
        if project != who.project and not who.operator:
            raise PermissionDenied(f"{who.label} is an admin of project {who.project}, not of {project}")
        return project

    def _tokens_checked(self) -> None:
        if self.s.c.authenticator.open:
            raise FailedPrecondition(
                "this controller runs without tokens (started without --token): every caller is already an "
                "admin, so a token would restrict nothing; start it with --token to use project tokens")

    @_rpc
    def CreateToken(self, request, context):  # type: ignore[no-untyped-def]
        self._tokens_checked()
        project = self._project(request.project)
        try:
            role = auth.role_from_pb(request.role)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        if request.expires_in_seconds < 0:
            raise InvalidArgument(f"expires_in_seconds is {request.expires_in_seconds}; it must not be negative")
        now = time.time()
        row, secret = self.s.c.credentials.create_user_token(
            project=project, role=role, name=request.name, created_by=auth.caller().label,
            expires_at=now + request.expires_in_seconds if request.expires_in_seconds > 0 else None)
        return pb.CreateTokenResponse(token=wire.user_token_to_pb(row), secret=secret)

    @_rpc
    def ListTokens(self, request, context):  # type: ignore[no-untyped-def]
        project = self._project(request.project)
        rows = self.s.c.credentials.list_user_tokens(project=project, include_revoked=request.include_revoked)
        return pb.ListTokensResponse(tokens=[wire.user_token_to_pb(r) for r in rows])

    @_rpc
    def RevokeToken(self, request, context):  # type: ignore[no-untyped-def]
        who = auth.caller()
        row = self.s.c.credentials.revoke_user_token(request.id, project=None if who.operator else who.project)
        return wire.user_token_to_pb(row)

    @_rpc
    def CreateEnrollmentToken(self, request, context):  # type: ignore[no-untyped-def]
        if request.uses < -1:
            raise InvalidArgument(f"uses is {request.uses}; give a positive number, 0 for one use, -1 for unlimited")
        if request.expires_in_seconds < 0:
            raise InvalidArgument(f"expires_in_seconds is {request.expires_in_seconds}; it must not be negative")
        seconds = request.expires_in_seconds or DEFAULT_ENROLLMENT_SECONDS
        row, secret = self.s.c.credentials.create_enrollment_token(
            device_profile=request.device_profile.strip(), tags=list(request.tags), agent_id=request.agent_id.strip(),
            uses=None if request.uses == -1 else (request.uses or 1), expires_at=time.time() + seconds,
            created_by=auth.caller().label)
        return pb.CreateEnrollmentTokenResponse(token=wire.enrollment_token_to_pb(row), secret=secret)

    @_rpc
    def ListAgentIdentities(self, request, context):  # type: ignore[no-untyped-def]
        rows = self.s.c.credentials.list_agents(include_revoked=request.include_revoked)
        return pb.ListAgentIdentitiesResponse(agents=[wire.agent_identity_to_pb(r) for r in rows])

    @_rpc
    def RevokeAgent(self, request, context):  # type: ignore[no-untyped-def]
        row = self.s.c.credentials.revoke_agent(request.agent_id)
        log.warning("agent %s revoked by %s", request.agent_id, auth.caller().label)
        self.s.scheduler.notify_work()
        return wire.agent_identity_to_pb(row)

    @_rpc
    def WhoAmI(self, request, context):  # type: ignore[no-untyped-def]
        who = auth.caller()
        return pb.WhoAmIResponse(kind=who.kind.value, project=who.project if who.kind == auth.Kind.USER else "",
                                 role=auth.role_to_pb(who.role) if who.role is not None else pb.ROLE_UNSPECIFIED,
                                 token_id=who.token_id, agent_id=who.agent_id,
                                 open=self.s.c.authenticator.open)


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
        tls: Optional[ServerTls] = None,
        insecure: bool = False,
        metrics_token: Optional[str] = None,
        max_jobs_per_submit: int = DEFAULT_MAX_JOBS_PER_SUBMIT,
        max_queued_jobs: int = DEFAULT_MAX_QUEUED_JOBS,
    ) -> None:
        """``metrics``: a metrics.ControllerMetrics (or anything with ``interceptor`` and
        ``result_reported(job_id, attempt)``); its interceptor sees every call, and it hears
        of every accepted result report. ``metrics_bind`` (HOST:PORT, port 0 picks one) serves
        Prometheus metrics over HTTP (HTTPS with ``tls``; ``metrics_token`` then required as a
        bearer token); ``remote_write_url`` also sends every result, stamped with its own time,
        to a Prometheus remote-write endpoint.

        ``token``: the operator token (auth.py); without it the controller is open and listens
        only on loopback unless ``insecure``. ``tls``: serve gRPC (and metrics) over TLS."""
        if max_attempts < 1:
            raise ValueError(f"max_attempts is {max_attempts}; a job needs at least one attempt")
        if not 1 <= max_attempts <= wire_limits.MAX_ATTEMPTS:
            raise ValueError(f"max_attempts is {max_attempts}; the limit is {wire_limits.MAX_ATTEMPTS}")
        self.data_dir = Path(data_dir) if data_dir is not None else Path(platformdirs.user_data_dir("hilfarm"))
        self.db_url = db_url or default_sqlite_url(self.data_dir)
        self.token = token or None
        self.tls = tls
        self.insecure = insecure
        self.metrics_token = metrics_token or None
        self.max_jobs_per_submit = max_jobs_per_submit
        self.max_queued_jobs = max_queued_jobs
        self.max_attempts = max_attempts
        self.max_workers = max_workers
        self.metrics = metrics
        self.store = Store(self.db_url)
        self.artifacts = ArtifactStore(self.data_dir / "artifacts", self.store, max_bytes=max_artifact_bytes)
        self.scheduler = Scheduler(self.store, lease_seconds=lease_seconds, heartbeat_interval=heartbeat_interval)
        self.credentials = Credentials(self.store)
        self.authenticator = auth.Authenticator(self.credentials, operator_token=self.token, clock=time.time)
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
        """Create missing tables, then listen on ``bind`` (host:port). Returns the port.
        Raises TransportError, listening on nothing, for an address that would expose an
        unprotected controller (or metrics endpoint), or TLS files that cannot be used."""
        problem = exposure_problem(bind, token=bool(self.token), tls=self.tls is not None, insecure=self.insecure)
        if not problem and self.metrics_bind:
            problem = metrics_exposure_problem(self.metrics_bind, token=bool(self.metrics_token),
                                               insecure=self.insecure)
        if problem:
            raise TransportError(problem)
        credentials = self.tls.credentials() if self.tls is not None else None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store.create_schema()
        self.artifacts.prepare()
        interceptors: list = []
        if self.metrics is not None:
            interceptors.append(self.metrics.interceptor)  # first: refused calls count too
        interceptors.append(_Authorization(self.authenticator))
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
        pb_grpc.add_AdminServiceServicer_to_server(AdminServicer(services), server)
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (FARM_SERVICE, AGENT_SERVICE, ADMIN_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        # Metrics first: a gRPC server that never started keeps its port until it is collected.
        if self.metrics is not None and hasattr(self.metrics, "start"):
            self.metrics_port = self.metrics.start(
                self.metrics_bind, ssl_context=self.tls.ssl_context() if self.tls is not None else None,
                bearer_token=self.metrics_token)
        busy = (f"cannot listen on {bind}: the address is in use (is another hilfarm controller "
                f"running there?) or not available on this machine")
        try:
            port = server.add_secure_port(bind, credentials) if credentials else server.add_insecure_port(bind)
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
        for name in ("", FARM_SERVICE, AGENT_SERVICE, ADMIN_SERVICE):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        self.port = port
        self._stopped.clear()
        host = bind.rsplit(":", 1)[0] if ":" in bind else bind
        log.info("controller listening on %s:%d (%s, %s), database %s, artifacts in %s",
                 host, port, "TLS" if self.tls is not None else "plaintext",
                 "open: no tokens" if self.authenticator.open else "tokens required",
                 self.store, self.artifacts.root)
        if self.tls is None and self.token and not self.insecure and not is_loopback(bind):
            log.warning("tokens travel in plaintext to %s: give the controller a certificate (--tls-cert, "
                        "--tls-key) so nobody on the network can read them", bind)
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
