"""Talking to a controller from the user's side: upload, submit, watch, list.

The CLI, the regression runner and the benchmarks all go through this one client, so
address, credentials, message limits and the upload protocol live in one place.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import grpc

from hilfarm import wire_limits
from hilfarm.contract import MODEL_FORMATS, OVERLOAD_RETRY_AFTER_KEY, file_sha256
from hilfarm.transport import ClientTls, open_channel
from hilfarm.v1 import farm_pb2, farm_pb2_grpc

DEFAULT_CONTROLLER = "127.0.0.1:50051"
CHUNK_BYTES = 1 << 20
_MAX_MESSAGE_BYTES = wire_limits.MAX_MESSAGE_BYTES

# Finished states: a job in one of these never changes again.
FINAL_STATES = frozenset(
    {farm_pb2.JOB_STATE_SUCCEEDED, farm_pb2.JOB_STATE_FAILED, farm_pb2.JOB_STATE_CANCELLED}
)


log = logging.getLogger("hilfarm.client")

# A watch broken with one of these is the controller going away (restarting, a replica
# stopping, the network): it is opened again.
_RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                              grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN})
# How long a watch keeps trying to reach the controller again before it gives up.
DEFAULT_RECONNECT_SECONDS = 300.0
MAX_RECONNECT_BACKOFF_SECONDS = 10.0


def _overload_retry_after(error: grpc.RpcError) -> Optional[float]:
    """Seconds to wait before sending a call the controller refused as overloaded, else None."""
    if not hasattr(error, "code") or error.code() != grpc.StatusCode.UNAVAILABLE:
        return None
    for key, value in (error.trailing_metadata() or ()) if hasattr(error, "trailing_metadata") else ():
        if key == OVERLOAD_RETRY_AFTER_KEY:
            try:
                return max(0.0, int(value) / 1000)
            except ValueError:
                return None
    return None


class ModelFormatError(ValueError):
    """The file is not recognisably an ONNX or TFLite model."""


def model_format(path: Path) -> str:
    """The format of a model file, from its extension or, failing that, its magic bytes.

    Only the format is guessed here; whether the file is a *valid* model is for the
    runtime on the device to say (a corrupt .onnx still goes to the device and comes
    back as a failed job with the runtime's own message).
    """
    suffix = path.suffix.lower().lstrip(".")
    if suffix in MODEL_FORMATS:
        return suffix
    with path.open("rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        return "tflite"
    raise ModelFormatError(
        f"{path}: cannot tell whether this is an ONNX or a TFLite model; "
        "name it *.onnx or *.tflite"
    )


@dataclass(frozen=True)
class Upload:
    sha256: str
    size_bytes: int
    format: str
    filename: str
    bytes_sent: int  # 0 when the controller already had the digest


class FarmClient:
    """A connection to a controller's FarmService (and AdminService, ``admin``).

    ``tls``: how to verify the controller (transport.ClientTls); by default HILFARM_TLS_CA and
    HILFARM_TLS_CLIENT_CERT / _KEY decide, and without them the channel is plaintext.
    ``reconnect_seconds``: how long ``watch_job`` and ``watch_run`` keep trying to reach a
    controller that went away (restarting, say) before they raise its last error."""

    def __init__(self, address: Optional[str] = None, token: Optional[str] = None,
                 tls: Optional[ClientTls] = None, reconnect_seconds: float = DEFAULT_RECONNECT_SECONDS):
        self.reconnect_seconds = reconnect_seconds
        self.address = address or os.environ.get("HILFARM_CONTROLLER") or DEFAULT_CONTROLLER
        token = token if token is not None else os.environ.get("HILFARM_TOKEN")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = open_channel(
            self.address,
            tls if tls is not None else ClientTls.resolve(),
            options=[
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.keepalive_time_ms", 30_000),
            ],
        )
        self._stub = farm_pb2_grpc.FarmServiceStub(self._channel)
        self.admin = farm_pb2_grpc.AdminServiceStub(self._channel)

    @property
    def metadata(self) -> tuple:
        """What every call sends: the credential, when there is one."""
        return self._metadata

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "FarmClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the controller accepts connections, or raise grpc.FutureTimeoutError."""
        grpc.channel_ready_future(self._channel).result(timeout=timeout)

    # ------------------------------------------------------------------ artifacts

    def upload(self, path: Path, fmt: Optional[str] = None, sha256: Optional[str] = None) -> Upload:
        """Store a file on the controller; a digest it already has is not sent again.

        `sha256` saves hashing the file again when the caller already knows its digest.
        """
        path = Path(path)
        fmt = fmt or model_format(path)
        size = path.stat().st_size
        digest = sha256 or file_sha256(path)
        stat = self._stub.StatArtifact(
            farm_pb2.StatArtifactRequest(sha256=digest), metadata=self._metadata
        )
        if stat.present:
            return Upload(digest, size, fmt, path.name, 0)
        header = farm_pb2.ArtifactHeader(
            sha256=digest, size_bytes=size, filename=path.name, format=fmt
        )
        ref = self._stub.UploadArtifact(_chunks(path, header), metadata=self._metadata)
        return Upload(digest, size, fmt, path.name, ref.bytes_received)

    # ------------------------------------------------------------------ runs and jobs

    def submit(
        self,
        models: Sequence[Upload],
        devices: Sequence[str],
        settings: farm_pb2.JobSettings,
        required_tags: Sequence[str] = (),
        max_attempts: int = 0,
        constraints: Sequence[farm_pb2.Budget] = (),
        constraint_set: str = "",
    ) -> farm_pb2.Run:
        request = farm_pb2.SubmitRequest(
            models=[
                farm_pb2.ModelRef(sha256=m.sha256, name=m.filename, format=m.format)
                for m in models
            ],
            device_profiles=list(devices),
            settings=settings,
            required_tags=list(required_tags),
            max_attempts=max_attempts,
            constraints=list(constraints),
            constraint_set=constraint_set,
        )
        return self._when_not_overloaded(lambda: self._stub.Submit(request, metadata=self._metadata), "submission")

    def _when_not_overloaded(self, call: Callable[[], Any], what: str) -> Any:
        """``call()``, sent again while the controller refuses it as overloaded (UNAVAILABLE with
        a retry-after in the trailing metadata: it did nothing), for up to ``reconnect_seconds``.
        Any other error, a plain UNAVAILABLE included (the call may have been done), is raised."""
        started = time.monotonic()
        while True:
            try:
                return call()
            except grpc.RpcError as error:
                retry_after = _overload_retry_after(error)
                if retry_after is None or time.monotonic() - started + retry_after > self.reconnect_seconds:
                    raise
                # Up to half as long again, so clients refused together do not come back together.
                delay = retry_after * random.uniform(1.0, 1.5)
                log.warning("the controller is overloaded and took nothing; sending the %s again in %.1f s",
                            what, delay)
                time.sleep(delay)

    def get_run(self, run_id: str) -> farm_pb2.Run:
        return self._stub.GetRun(farm_pb2.GetRunRequest(run_id=run_id), metadata=self._metadata)

    def download(self, sha256: str) -> Iterator[bytes]:
        """A stored artifact's bytes (a model, inputs, or a job's per-operator trace), in chunks."""
        for chunk in self._stub.DownloadArtifact(farm_pb2.DownloadArtifactRequest(sha256=sha256),
                                                 metadata=self._metadata, timeout=600):
            yield chunk.data

    def get_job(self, job_id: str) -> farm_pb2.Job:
        return self._stub.GetJob(farm_pb2.GetJobRequest(job_id=job_id), metadata=self._metadata)

    def list_jobs(
        self, run_id: str = "", states: Iterable[int] = (), limit: int = 0,
        include_samples: bool = False,
    ) -> list:
        response = self._stub.ListJobs(
            farm_pb2.ListJobsRequest(run_id=run_id, states=list(states), limit=limit,
                                     include_samples=include_samples),
            metadata=self._metadata,
        )
        return list(response.jobs)

    def cancel_job(self, job_id: str) -> farm_pb2.Job:
        return self._stub.CancelJob(
            farm_pb2.CancelJobRequest(job_id=job_id), metadata=self._metadata
        )

    def watch_job(self, job_id: str) -> Iterator[farm_pb2.Job]:
        """The job now and after every change, ending when it is finished. When the controller
        goes away (a restart), the watch is opened again with backoff for up to
        ``reconnect_seconds``; the job is then sent again as it is now."""
        def open_watch() -> Iterator[farm_pb2.Job]:
            return self._stub.WatchJob(farm_pb2.WatchJobRequest(job_id=job_id), metadata=self._metadata)

        for job in self._reconnecting(open_watch, f"job {job_id}"):
            yield job
            if job.state in FINAL_STATES:
                return

    def watch_run(self, run_id: str) -> Iterator[farm_pb2.Job]:
        """Every job of the run now, then each job again whenever it changes, on one stream;
        ends once every job is finished. Reconnects like ``watch_job`` (after a reconnection
        every job is sent again)."""
        def open_watch() -> Iterator[farm_pb2.Job]:
            return self._stub.WatchRun(farm_pb2.WatchRunRequest(run_id=run_id), metadata=self._metadata)

        yield from self._reconnecting(open_watch, f"run {run_id}")

    def _reconnecting(self, open_stream: Callable[[], Iterator], what: str) -> Iterator:
        """The messages of ``open_stream()``, opening it again while the controller is away."""
        delay = 0.5
        unreachable_since: Optional[float] = None
        while True:
            try:
                for message in open_stream():
                    if unreachable_since is not None:
                        log.warning("reached the controller at %s again; following %s", self.address, what)
                    unreachable_since, delay = None, 0.5
                    yield message
                return
            except grpc.RpcError as error:
                code = error.code() if hasattr(error, "code") else None
                if code not in _RECONNECT_CODES:
                    raise
                now = time.monotonic()
                if unreachable_since is None:
                    unreachable_since = now
                    log.warning("lost the controller at %s (%s: %s); reconnecting for up to %.0f s",
                                self.address, code.name, error.details() if hasattr(error, "details") else "",
                                self.reconnect_seconds)
                if now - unreachable_since + delay > self.reconnect_seconds:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, MAX_RECONNECT_BACKOFF_SECONDS)

    def drain_device(self, agent_id: str, drain: bool = True) -> farm_pb2.Device:
        return self._stub.DrainDevice(
            farm_pb2.DrainDeviceRequest(agent_id=agent_id, drain=drain), metadata=self._metadata
        )

    def list_devices(self) -> list:
        return list(
            self._stub.ListDevices(farm_pb2.ListDevicesRequest(), metadata=self._metadata).devices
        )


    # ------------------------------------------------------------------ regression testing

    def compare_jobs(self, baseline_job_id: str, candidate_job_id: str) -> farm_pb2.Comparison:
        return self._stub.CompareJobs(
            farm_pb2.CompareJobsRequest(baseline_job_id=baseline_job_id, candidate_job_id=candidate_job_id),
            metadata=self._metadata)

    def accept_baseline(self, name: str, job_ids: Sequence[str], suite: str = "") -> list:
        return list(self._stub.AcceptBaseline(
            farm_pb2.AcceptBaselineRequest(name=name, job_ids=list(job_ids), suite=suite),
            metadata=self._metadata).baselines)

    def list_baselines(self, name: str = "", model_name: str = "", device_profile: str = "") -> list:
        return list(self._stub.ListBaselines(
            farm_pb2.ListBaselinesRequest(name=name, model_name=model_name, device_profile=device_profile),
            metadata=self._metadata).baselines)

    def start_suite_run(self, suite: farm_pb2.SuiteSpec, accept: bool = False, trigger: str = "cli") -> farm_pb2.SuiteRun:
        return self._stub.StartSuiteRun(
            farm_pb2.StartSuiteRunRequest(suite=suite, accept=accept, trigger=trigger), metadata=self._metadata)

    def get_suite_run(self, run_id: str) -> farm_pb2.SuiteRun:
        return self._stub.GetSuiteRun(farm_pb2.GetSuiteRunRequest(id=run_id), metadata=self._metadata)

    def list_suite_runs(self, suite: str = "", limit: int = 0) -> list:
        return list(self._stub.ListSuiteRuns(farm_pb2.ListSuiteRunsRequest(suite=suite, limit=limit),
                                             metadata=self._metadata).runs)

    def history(self, model_name: str, device_profile: str, metric: str = "", limit: int = 0) -> farm_pb2.HistoryResponse:
        return self._stub.GetHistory(
            farm_pb2.HistoryRequest(model_name=model_name, device_profile=device_profile, metric=metric, limit=limit),
            metadata=self._metadata)


def _chunks(path: Path, header: farm_pb2.ArtifactHeader) -> Iterator[farm_pb2.ArtifactChunk]:
    yield farm_pb2.ArtifactChunk(header=header)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            yield farm_pb2.ArtifactChunk(data=block)
