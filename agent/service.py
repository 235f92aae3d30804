"""The agent's service loop: dial out to the controller, take jobs, run them, report.

The agent always connects to the controller (devices sit behind NAT). It registers with its
profile, tags and probed capabilities, heartbeats in the background at the interval the
controller asks for (registering again when the controller has forgotten it), and long-polls
LeaseJob. Each leased job is fetched through the artifact cache, run by the harness in a
fresh child process while progress is relayed (and a cancel answer kills the child), and its
outcome is reported once, retried with the same job id and attempt while the controller is
unavailable. Nothing a controller or a job does ends the loop; only ``stop`` does.

Before anything else the agent needs its own credential: it enrolls once (with an enrollment
token, an admin's token, or nothing on a controller without tokens) and keeps the credential in
``DATA_DIR/credential.json`` (mode 0600); every other call carries it. A credential the
controller no longer knows (its database was replaced) is exchanged again the same way; a
revoked one is not.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple, Union

import grpc

from hilfarm import __version__, wire_limits
from hilfarm.agent import runtimes, sandbox, wire
from hilfarm.agent.runtimes import acceleration, onnx
from hilfarm.agent.activity import ActivityMeter, activity_warning
from hilfarm.agent.cache import ArtifactCache
from hilfarm.agent.capabilities import probe_capabilities_in_child
from hilfarm.agent.emulation import detect_emulation
from hilfarm.agent.harness import BenchmarkJob, run_benchmark
from hilfarm.agent.orphans import ChildRegistry
from hilfarm.agent.native_code import check_execution_provider, resolve_delegate
from hilfarm.agent.telemetry.job import (
    JobTelemetry, SimulatedDeviceHost, attach_summary, build_sensors, telemetry_config,
)
from hilfarm.agent.profiles import Profile, ProfileError, detect_profile, load_profile
from hilfarm.agent.result_limits import fit_message, fit_report
from hilfarm.agent.sensors import SensorConfigError
from hilfarm.agent.telemetry.sustained import attach_sustained, sustained_summary
from hilfarm.agent.results import (
    Failure, FailureCategory, JobFailed, JobOutcome, LeasedJob, Progress, Unavailable,
)
from hilfarm.paths import default_data_dir
from hilfarm.transport import ClientTls, open_channel
from hilfarm.v1 import farm_pb2, farm_pb2_grpc

log = logging.getLogger("hilfarm.agent")

# The controller's limit: a larger report would be refused after the work is done.
MAX_MESSAGE_BYTES = wire_limits.MAX_MESSAGE_BYTES
CREDENTIAL_FILE = "credential.json"
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class EnrollmentError(RuntimeError):
    """The controller refused to enroll this agent; the message says why."""


@dataclass
class AgentConfig:
    controller: str  # host:port of the controller's gRPC endpoint
    # A user token (an admin's) the agent may enroll itself with when it has no credential yet.
    token: Optional[str] = None
    profile: Optional[str] = None  # profile name or YAML path; None = detect from the machine
    tags: List[str] = field(default_factory=list)  # added to the profile's tags
    agent_id: Optional[str] = None  # None = the id stored in data_dir, created once
    data_dir: Union[str, Path, None] = None  # artifact cache and agent state
    runtime_plugins: List[str] = field(default_factory=list)  # modules registering more runtimes
    lease_wait_seconds: float = 10.0
    progress_interval_seconds: float = 1.0
    backoff_max_seconds: float = 30.0
    # Phone mode: drive the Android device with this serial over adb (agent/android.py);
    # adb_runner replaces adb itself (recorded outputs in tests).
    adb_serial: Optional[str] = None
    adb_runner: Optional[Callable[..., str]] = None
    enroll_token: Optional[str] = None  # an enrollment token made by an admin (used once)
    tls: Optional[ClientTls] = None  # None: plaintext (loopback)


def run_agent(config: AgentConfig, stop: threading.Event) -> None:
    """Serve the controller until ``stop`` is set. Raises only for a broken local setup
    (a bad profile, an unwritable data dir), never for anything the controller does."""
    Agent(config).run(stop)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable and writable by this user only (0600), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _stable_agent_id(data_dir: Path, profile: Profile) -> str:
    path = data_dir / "agent_id"
    try:
        stored = path.read_text().strip()
        if stored:
            return stored
    except OSError:
        pass
    host = re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()).strip("-") or "device"
    agent_id = f"{host}-{profile.name}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(agent_id + "\n")
    os.replace(tmp, path)
    return agent_id


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir) if config.data_dir else default_data_dir() / "agent"
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            # Models, inputs and the credential live here: nobody else on the device reads them.
            os.chmod(self.data_dir, 0o700)
        except OSError as exc:
            log.warning("cannot make %s private to this user (%s)", self.data_dir, exc)
        if config.profile:
            self.profile = load_profile(config.profile)
            log.info("device profile %s (from %s)", self.profile.name, " <- ".join(self.profile.sources))
        else:
            self.profile, why = detect_profile()
            log.info("device profile %s detected: %s", self.profile.name, why)
        runtimes.load_plugins(config.runtime_plugins)
        runtimes.load_plugins()
        self.phone: Optional[Callable[..., str]] = None
        if config.adb_serial or config.adb_runner is not None:
            from hilfarm.agent import android

            self.phone = config.adb_runner or android.AdbRunner(config.adb_serial or "")
            # Raises android.NoDevice (a clear "not attached") when the phone is not there.
            self.capabilities, facts = android.phone_capabilities(self.phone, self.profile.data.get("android") or {})
            log.info("driving Android phone %s (%s) over adb", getattr(self.phone, "serial", ""), self.capabilities.os)
        else:
            self.capabilities = probe_capabilities_in_child(self.profile.runtimes_allowed or None,
                                                            config.runtime_plugins)
        self.capabilities.accelerators = list(self.profile.accelerators)
        self.capabilities.emulation = detect_emulation()
        if self.capabilities.emulation:
            log.warning("this agent runs under an emulator; every result is labelled emulated: %s",
                        self.capabilities.emulation)
        log.info(
            "runtimes: %s",
            ", ".join(f"{r.name} {r.version} ({r.package})" for r in self.capabilities.runtimes) or "none",
        )
        for name, why in self.capabilities.absent.items():
            log.warning("runtime %s is not usable here: %s", name, why)
        self.telemetry = telemetry_config(self.profile)
        self._simulated: Optional[SimulatedDeviceHost] = None
        if self.telemetry.simulate:
            try:
                self._simulated = SimulatedDeviceHost(self.data_dir, self.telemetry.simulated_model)
            except SensorConfigError as exc:
                raise ProfileError(f"{self.profile.sources[-1]}: field {exc}") from None
            self.telemetry.root = str(self._simulated.root)
            log.warning("profile %s simulates its sensors: every power and thermal figure is flagged simulated",
                        self.profile.name)
        if self.phone is not None and getattr(self.phone, "recorded", ""):
            self.telemetry.recorded = self.telemetry.recorded or self.phone.recorded  # type: ignore[attr-defined]
        try:
            # A misspelt sensor kind or option is the profile's fault: say so at start, not per job.
            root, runner = self._sensor_access()
            for s in build_sensors(self.telemetry.sensors, root, runner):
                s.close()
        except SensorConfigError as exc:
            raise ProfileError(f"{self.profile.sources[-1]}: field {exc}") from None
        # Whatever a previous agent on this data dir left running or lying around goes first:
        # nothing else of the farm may run while this agent measures.
        self.children = ChildRegistry(self.data_dir)
        for line in self.children.sweep():
            log.warning("%s", line)
        self.agent_id = config.agent_id or _stable_agent_id(self.data_dir, self.profile)
        self.tags = list(self.profile.tags) + [t for t in config.tags if t not in self.profile.tags]
        self.cache = ArtifactCache(self.data_dir)
        self.hostname = socket.gethostname()
        self.credential_path = self.data_dir / CREDENTIAL_FILE
        self.credential: Optional[str] = self._stored_credential()
        self._channel = open_channel(config.controller, config.tls, options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", int(config.backoff_max_seconds * 1000)),
        ])
        self.stub = farm_pb2_grpc.AgentServiceStub(self._channel)
        self.heartbeat_interval = 5.0
        self.busy = False
        self._registered = threading.Event()
        self._register_lock = threading.Lock()

    def _sensor_access(self) -> Tuple[object, object]:
        """Where the sensors read: the phone over adb, a recording, or this machine."""
        if self.phone is not None:
            from hilfarm.agent import android

            return android.AdbSysRoot(self.phone), android.AdbShell(self.phone)
        return self.telemetry.root, self.telemetry.command_runner()

    # ------------------------------------------------------------ identity

    def _stored_credential(self) -> Optional[str]:
        try:
            stored = json.loads(self.credential_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable credential file %s (%s); enrolling again", self.credential_path, exc)
            return None
        if stored.get("agent_id") != self.agent_id:
            log.warning("the credential in %s is agent %s's, not %s's; enrolling again",
                        self.credential_path, stored.get("agent_id"), self.agent_id)
            return None
        return stored.get("credential") or None

    @property
    def metadata(self) -> Tuple[Tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.credential}"),) if self.credential else ()

    def enroll(self) -> None:
        """Exchange the enrollment token (or the admin token, or nothing on a controller without
        tokens) for this agent's own credential, and keep it in the data dir (0600)."""
        token = self.config.enroll_token or self.config.token
        try:
            resp = self.stub.Enroll(
                farm_pb2.EnrollRequest(agent_id=self.agent_id, device_profile=self.profile.name, tags=self.tags,
                                       hostname=self.hostname),
                metadata=(("authorization", f"Bearer {token}"),) if token else (), timeout=10)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                              grpc.StatusCode.INVALID_ARGUMENT):
                raise EnrollmentError(
                    f"the controller at {self.config.controller} refused to enroll agent {self.agent_id} "
                    f"({exc.code().name}: {exc.details()}); give it an enrollment token "
                    "(hilfarm admin agents enroll, then --enroll-token / HILFARM_ENROLL_TOKEN)") from None
            raise
        _write_private(self.credential_path, json.dumps({
            "agent_id": resp.agent_id, "credential": resp.credential, "device_profile": resp.device_profile,
            "tags": list(resp.tags), "controller": self.config.controller}) + "\n")
        self.credential = resp.credential
        log.info("enrolled with %s as agent %s (profile %s, tags %s); credential kept in %s",
                 self.config.controller, resp.agent_id, resp.device_profile, ", ".join(resp.tags) or "none",
                 self.credential_path)

    # ------------------------------------------------------------ controller calls

    def register(self) -> None:
        with self._register_lock:
            resp = self.stub.Register(
                farm_pb2.RegisterRequest(
                    agent_id=self.agent_id,
                    device_profile=self.profile.name,
                    tags=self.tags,
                    capabilities=wire.capabilities_to_pb(self.capabilities),
                    hostname=self.hostname,
                    agent_version=__version__,
                ),
                metadata=self.metadata,
                timeout=10,
            )
            if resp.heartbeat_interval_seconds > 0:
                self.heartbeat_interval = resp.heartbeat_interval_seconds
            self._registered.set()
        log.info(
            "registered with %s as %s (profile %s, heartbeat every %.1f s)",
            self.config.controller, self.agent_id, self.profile.name, self.heartbeat_interval,
        )

    def _heartbeat_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if not self._registered.is_set():
                stop.wait(0.1)  # the main loop is (re)connecting; it registers
                continue
            if stop.wait(self.heartbeat_interval):
                return
            try:
                resp = self.stub.Heartbeat(
                    farm_pb2.HeartbeatRequest(agent_id=self.agent_id, busy=self.busy),
                    metadata=self.metadata, timeout=10,
                )
                if not resp.known:
                    log.info("the controller does not know this agent (it restarted?); registering again")
                    self.register()
            except grpc.RpcError as exc:
                log.debug("heartbeat failed: %s", exc.code())
            except Exception:
                log.exception("heartbeat failed")

    def _lease(self, stop: threading.Event) -> Optional[LeasedJob]:
        wait = self.config.lease_wait_seconds
        fut = self.stub.LeaseJob.future(
            farm_pb2.LeaseJobRequest(agent_id=self.agent_id, wait_seconds=wait),
            metadata=self.metadata, timeout=wait + 10,
        )
        # Wake on the answer, or twice a second to notice ``stop``: an idle agent must cost its
        # device next to nothing (benchmarks/agent_footprint.py), so no tight polling here.
        done = threading.Event()
        fut.add_done_callback(lambda _f: done.set())
        while not done.wait(0.5):
            if stop.is_set():
                fut.cancel()
                return None
        if stop.is_set() and not fut.done():
            fut.cancel()
            return None
        resp = fut.result()  # raises grpc.RpcError
        if not resp.HasField("lease"):
            return None
        return wire.lease_from_pb(resp.lease)

    def _fetch(self, sha256: str, cancel: threading.Event) -> Path:
        """The artifact from the cache, or downloaded. A download cut by the controller going
        away (a restart, a replica ending) is tried again from the start, with backoff, for as
        long as a restarted controller keeps the lease (its grace is at least our longest
        backoff): the attempt is not the controller's to lose. Any other failure is final."""
        delay, give_up = 0.5, time.monotonic() + 4 * self.config.backoff_max_seconds
        while True:
            try:
                return self.cache.fetch(sha256, lambda: self._download(sha256))
            except JobFailed as exc:
                cut = isinstance(exc.__cause__, grpc.RpcError) and exc.__cause__.code() == grpc.StatusCode.UNAVAILABLE
                if not cut or cancel.is_set() or time.monotonic() + delay > give_up:
                    raise
                log.warning("%s; downloading it again in %.1f s", exc.failure.message, delay)
                cancel.wait(delay)
                delay = min(delay * 2, self.config.backoff_max_seconds)

    def _download(self, sha256: str) -> Iterator[bytes]:
        for chunk in self.stub.DownloadArtifact(
            farm_pb2.DownloadArtifactRequest(sha256=sha256), metadata=self.metadata, timeout=600
        ):
            yield chunk.data

    def _progress(self, job: LeasedJob, p: Progress) -> bool:
        """Report progress; True when the controller says to stop the job."""
        request = farm_pb2.ReportProgressRequest(agent_id=self.agent_id, lease_id=job.lease_id,
                                                 progress=wire.progress_to_pb(p))
        fit_message(request)  # within the controller's limits, like a report
        try:
            resp = self.stub.ReportProgress(request, metadata=self.metadata, timeout=10)
            return resp.cancel
        except grpc.RpcError as exc:
            log.debug("progress report failed: %s", exc.code())
            return False

    def _report(self, job: LeasedJob, outcome: JobOutcome, stop: threading.Event) -> None:
        req = wire.outcome_request(self.agent_id, job, outcome.result, outcome.failure)
        for note in fit_report(req):
            log.warning("job %s: %s", job.job_id, note)
        delay = 0.5
        while True:
            try:
                resp = self.stub.ReportResult(req, metadata=self.metadata, timeout=30)
            except grpc.RpcError as exc:
                if exc.code() in _RETRYABLE and not stop.is_set():
                    log.warning("reporting job %s failed (%s); retrying in %.1f s", job.job_id, exc.code().name, delay)
                    stop.wait(delay)
                    delay = min(delay * 2, self.config.backoff_max_seconds)
                    continue
                log.error("could not report job %s attempt %d: %s", job.job_id, job.attempt, exc)
                return
            if resp.accepted:
                log.info("job %s attempt %d reported (%s)", job.job_id, job.attempt,
                         "failure" if outcome.failure else "result")
            else:
                log.warning("the controller refused the report of job %s: %s", job.job_id, resp.message)
            return

    # ------------------------------------------------------------ one job

    def run_job(self, job: LeasedJob, stop: threading.Event) -> None:
        log.info("job %s attempt %d: %s (%s)", job.job_id, job.attempt, job.model_name or job.model_sha256[:12],
                 job.model_format)
        self.busy = True
        cancel = threading.Event()
        relay = _ProgressRelay(self, job, cancel, self.config.progress_interval_seconds, stop)
        relay.start()
        try:
            outcome = self._execute(job, relay, cancel)
        except JobFailed as exc:
            outcome = JobOutcome(failure=exc.failure)
        except Exception as exc:
            log.exception("job %s failed inside the agent", job.job_id)
            outcome = JobOutcome(failure=Failure(
                FailureCategory.INFRASTRUCTURE,
                f"the agent failed while running the job: {type(exc).__name__}: {exc}",
                detail=traceback.format_exc(),
            ))
        finally:
            relay.stop()
        try:
            if outcome.cancelled:
                if stop.is_set():
                    log.info("job %s: the agent is stopping; the benchmark was stopped", job.job_id)
                else:
                    log.info("job %s was cancelled by the controller; the benchmark was stopped", job.job_id)
                return
            if outcome.result is not None:
                env = outcome.result.environment
                env.agent_id, env.device_profile = self.agent_id, self.profile.name
                env.hostname, env.agent_version = self.hostname, __version__
                if self.capabilities.emulation:
                    env.emulated, env.emulation = True, self.capabilities.emulation
            else:
                assert outcome.failure is not None
                log.info("job %s failed: %s: %s", job.job_id, outcome.failure.category.name, outcome.failure.message)
            relay.send(Progress(phase="reporting", updated_at=time.time()))
            self._report(job, outcome, stop)
        finally:
            self.busy = False

    def _execute(self, job: LeasedJob, relay: "_ProgressRelay", cancel: threading.Event) -> JobOutcome:
        relay.update(Progress(phase="fetching", updated_at=time.time()))
        model = self._fetch(job.model_sha256, cancel)
        inputs = None
        if job.settings.inputs_sha256:
            inputs = str(self._fetch(job.settings.inputs_sha256, cancel))
        if cancel.is_set():
            return JobOutcome(cancelled=True)
        runtime = runtimes.runtime_for(job.settings, job.model_format)
        allowed = self.profile.runtimes_allowed
        if allowed and runtime.name not in allowed:
            raise JobFailed(
                FailureCategory.CONFIGURATION,
                f"device profile {self.profile.name} does not allow runtime {runtime.name} "
                f"(allowed: {', '.join(allowed)})",
            )
        settings = acceleration.resolve(job.settings, runtime.name, self.profile.name, self.profile.acceleration,
                                        self.capabilities)
        if settings.tflite_delegate_path:
            # Only a library the profile allow-lists, never a path into the artifact cache.
            settings = dataclasses.replace(settings, tflite_delegate_path=resolve_delegate(
                settings.tflite_delegate_path, self.profile.delegates, self.data_dir, self.profile.name))
        for provider in onnx.provider_list(settings.execution_provider):
            check_execution_provider(provider, self.profile.execution_providers, self.profile.name)
        bench = BenchmarkJob(
            model_path=str(model),
            model_format=job.model_format,
            settings=settings,
            inputs_path=inputs,
            pin_cores=list(self.profile.pin_cores),
            plugins=list(self.config.runtime_plugins),
            defaults=self.profile.run_defaults,
            work_root=str(self.children.work_root),
            children=self.children,
            private_dir=str(self.data_dir),
        )
        # Cooldown, then the sampler (outside the child) with an idle baseline before it starts.
        relay.update(Progress(phase="cooldown", updated_at=time.time()))
        root, runner = self._sensor_access()
        tel = JobTelemetry(self.telemetry, root=root, runner=runner, cancel=cancel)
        tel.before_run()
        relay.telemetry = tel
        activity = ActivityMeter()

        def on_child(pid: Optional[int]) -> None:
            activity.exclude(pid)
            if self._simulated is not None:
                self._simulated.follow(pid)  # the model heats with this job's processes only

        activity.start()
        try:
            if self.phone is not None:
                outcome = self._run_on_phone(bench, job, runtime.name, relay, cancel)
            else:
                outcome = run_benchmark(bench, on_progress=relay.update, cancel=cancel, on_child=on_child)
        except BaseException:
            tel.abort()
            raise
        finally:
            relay.telemetry = None
        if outcome.result is None:
            tel.abort()
            return outcome
        tel.mark("finished")
        result = outcome.result
        result.activity = activity.finish() if self.phone is None else None
        if result.activity is not None:
            warning = activity_warning(result.activity)
            if warning:
                result.warnings.append(warning)
        else:
            result.unavailable.append(Unavailable("activity", "the phone's processes are not read over adb"
                                                  if self.phone is not None else "/proc is not readable on this OS"))
        summary = tel.finish(inferences=len(result.latency.samples_ns) or result.latency.count)
        attach_summary(result, summary, self.profile.name, self.telemetry.recorded)
        if job.settings.sustained_seconds > 0:
            attach_sustained(result, sustained_summary(
                result.latency.samples_ns, job.settings.sustained_seconds, tel.sampler,
                wall_seconds=result.timed_wall_seconds))
        return outcome

    def _run_on_phone(self, bench: BenchmarkJob, job: LeasedJob, runtime: str, relay: "_ProgressRelay",
                      cancel: threading.Event) -> JobOutcome:
        from hilfarm.agent import android
        from hilfarm.agent.harness import resolve_settings

        phone_job = android.AndroidJob(bench.model_path, bench.model_format, runtime, bench.settings,
                                       job.model_sha256, resolve_settings(bench.settings, bench.defaults))
        try:
            outcome = android.run_on_phone(self.phone, phone_job, self.profile.data.get("android") or {}, cancel,
                                           on_phase=lambda p: relay.update(Progress(phase=p, updated_at=time.time())))
        except android.AdbError as exc:
            raise JobFailed(FailureCategory.DEVICE_FAULT, f"the phone could not run the job: {exc}") from None
        if outcome.result is not None:
            env, caps = outcome.result.environment, self.capabilities
            env.os, env.kernel, env.machine = caps.os, caps.kernel, caps.machine
        return outcome

    # ------------------------------------------------------------ main loop

    def run(self, stop: threading.Event) -> None:
        sandbox.protect_agent()  # no benchmark process reads this one's memory or environment
        heartbeat = threading.Thread(target=self._heartbeat_loop, args=(stop,), name="hilfarm-heartbeat",
                                     daemon=True)
        heartbeat.start()
        delay = 0.5
        try:
            while not stop.is_set():
                try:
                    if self.credential is None:
                        self.enroll()
                    if not self._registered.is_set():
                        self.register()
                    job = self._lease(stop)
                    delay = 0.5
                    if job is not None:
                        self.run_job(job, stop)
                except EnrollmentError as exc:
                    log.error("%s; retrying in %.1f s", exc, delay)
                    stop.wait(delay)
                    delay = min(delay * 2, self.config.backoff_max_seconds)
                except grpc.RpcError as exc:
                    code = exc.code()
                    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                        log.error("the controller at %s refused this agent (%s: %s)",
                                  self.config.controller, code.name, exc.details())
                        if code == grpc.StatusCode.UNAUTHENTICATED and "not known" in (exc.details() or ""):
                            # The controller's database was replaced: enroll again (never after a revocation).
                            self.credential = None
                    elif code == grpc.StatusCode.CANCELLED and stop.is_set():
                        break
                    else:
                        log.warning("controller %s unreachable (%s: %s); retrying in %.1f s",
                                    self.config.controller, code.name, exc.details(), delay)
                    # It may have restarted and forgotten us: register again on reconnection.
                    self._registered.clear()
                    stop.wait(delay)
                    delay = min(delay * 2, self.config.backoff_max_seconds)
                except Exception:
                    log.exception("unexpected error in the agent loop; going on in %.1f s", delay)
                    stop.wait(delay)
                    delay = min(delay * 2, self.config.backoff_max_seconds)
        finally:
            stop.set()
            heartbeat.join(timeout=2)
            self._channel.close()
            if self._simulated is not None:
                self._simulated.stop()
            log.info("agent %s stopped", self.agent_id)


class _ProgressRelay:
    """Forwards the child's progress to the controller at least every ``interval`` seconds
    (and at once on a phase change), and turns a cancel answer into the cancel event."""

    def __init__(self, agent: Agent, job: LeasedJob, cancel: threading.Event, interval: float,
                 stop: Optional[threading.Event] = None) -> None:
        self.agent, self.job, self.cancel, self.interval = agent, job, cancel, interval
        self.stop_agent = stop  # an agent that stops takes its running benchmark with it
        self.latest: Optional[Progress] = None
        self._sent_phase = ""
        self._wake = threading.Event()
        self._done = threading.Event()
        self._started = time.monotonic()
        self._next_send = 0.0
        self.telemetry: Optional[JobTelemetry] = None  # set while the job's sampler runs
        self._thread = threading.Thread(target=self._loop, name="hilfarm-progress-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def update(self, p: Progress) -> None:
        tel = self.telemetry
        if tel is not None:
            tel.mark(p.phase)  # the sampler's phases follow the child's
        self.latest = p
        if p.phase != self._sent_phase:
            self._wake.set()

    def _phase_changed(self) -> bool:
        p = self.latest
        return p is not None and p.phase != self._sent_phase

    def send(self, p: Progress) -> None:
        if self.agent._progress(self.job, p):
            self.cancel.set()

    def _loop(self) -> None:
        while not self._done.is_set():
            self._wake.wait(min(self.interval, 0.1) if self.stop_agent is not None else self.interval)
            self._wake.clear()
            if self.stop_agent is not None and self.stop_agent.is_set():
                self.cancel.set()
            if time.monotonic() < self._next_send and not self._phase_changed():
                continue
            self._next_send = time.monotonic() + self.interval
            p = self.latest
            if p is None or self._done.is_set():
                continue
            # Keep elapsed moving during one long inference, when the child has nothing new to say.
            p = Progress(p.phase, p.runs_done, p.runs_target, time.monotonic() - self._started,
                         p.latest_latency_seconds, time.time(), repeat=p.repeat, repeats=p.repeats)
            tel = self.telemetry
            if tel is not None:
                p.telemetry = tel.drain()
            self._sent_phase = p.phase
            self.send(p)

    def stop(self) -> None:
        self._done.set()
        self._wake.set()
        self._thread.join(timeout=5)
