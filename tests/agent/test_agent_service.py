"""The agent loop against a fake controller: a real gRPC server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from concurrent import futures

import grpc
import pytest

from hilfarm.agent.results import JobSettings
from hilfarm.agent.service import AgentConfig, run_agent
from hilfarm.agent.telemetry.sustained import SUSTAINED_MAX_RUNS
from hilfarm.v1 import farm_pb2, farm_pb2_grpc

from .conftest import category_name, settings_message

# The agent refuses to run as root unless told: these tests may run as root (a CI container).
ROOT_OK = ["--allow-root"] if os.geteuid() == 0 else []

QUICK = JobSettings(warmup_runs=1, warmup_seconds=0.01, min_runs=20, min_seconds=0.05)


class FakeController(farm_pb2_grpc.AgentServiceServicer):
    """Just enough of the controller's agent side to drive one agent through its loop."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.artifacts = {}  # sha256 -> bytes served
        self.queue = []  # farm_pb2.Job waiting for a lease
        self.registrations = []
        self.heartbeats = 0
        self.known = True
        self.metadata = []
        self.downloads = []
        self.progress = []  # (job_id, Progress)
        self.reports = []  # ReportResultRequest, in order of arrival
        self.cancel_jobs = set()
        self.unavailable_reports = 0  # answer this many ReportResult calls with UNAVAILABLE
        self.cut_downloads = 0  # end this many downloads, after their last byte, with UNAVAILABLE
        self.leases = {}

    def add_artifact(self, data: bytes, serve: bytes = None) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.artifacts[sha] = data if serve is None else serve
        return sha

    def add_job(self, job_id: str, sha: str, fmt: str = "onnx", settings: JobSettings = QUICK) -> None:
        with self.cond:
            self.queue.append(farm_pb2.Job(
                id=job_id, attempt=1, model_sha256=sha, model_format=fmt, model_name=f"{job_id}.{fmt}",
                settings=settings_message(settings),
            ))
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for the agent")
                self.cond.wait(left)

    def result_for(self, job_id: str) -> farm_pb2.ReportResultRequest:
        self.wait_for(lambda: any(r.job_id == job_id for r in self.reports))
        return next(r for r in self.reports if r.job_id == job_id)

    # ---- AgentService
    def _seen(self, context) -> None:
        self.metadata.append(dict(context.invocation_metadata()))

    def Enroll(self, request, context):
        with self.cond:
            self.enrollments = getattr(self, "enrollments", []) + [(request, dict(context.invocation_metadata()))]
        return farm_pb2.EnrollResponse(agent_id=request.agent_id, credential=f"credential-of-{request.agent_id}",
                                       device_profile=request.device_profile, tags=list(request.tags))

    def Register(self, request, context):
        self._seen(context)
        with self.cond:
            self.registrations.append(request)
            self.known = True
            self.cond.notify_all()
        return farm_pb2.RegisterResponse(heartbeat_interval_seconds=0.2, lease_seconds=30)

    def Heartbeat(self, request, context):
        with self.cond:
            self.heartbeats += 1
            self.cond.notify_all()
            return farm_pb2.HeartbeatResponse(known=self.known)

    def LeaseJob(self, request, context):
        self._seen(context)
        with self.cond:
            self.cond.wait_for(lambda: self.queue, timeout=min(request.wait_seconds, 0.5))
            if not self.queue:
                return farm_pb2.LeaseJobResponse()
            job = self.queue.pop(0)
            lease_id = f"lease-{job.id}"
            self.leases[lease_id] = job.id
            return farm_pb2.LeaseJobResponse(lease=farm_pb2.Lease(lease_id=lease_id, job=job))

    def DownloadArtifact(self, request, context):
        self._seen(context)
        self.downloads.append(request.sha256)
        data = self.artifacts.get(request.sha256)
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such artifact")
        yield farm_pb2.ArtifactChunk(header=farm_pb2.ArtifactHeader(sha256=request.sha256, size_bytes=len(data)))
        for i in range(0, len(data), 1 << 20):
            yield farm_pb2.ArtifactChunk(data=data[i:i + (1 << 20)])
        if self.cut_downloads > 0:  # a controller going away as the stream ends
            self.cut_downloads -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "Stream removed (Socket closed)")

    def ReportProgress(self, request, context):
        with self.cond:
            job_id = self.leases.get(request.lease_id, "")
            self.progress.append((job_id, request.progress))
            self.cond.notify_all()
            return farm_pb2.ReportProgressResponse(cancel=job_id in self.cancel_jobs)

    def ReportResult(self, request, context):
        with self.cond:
            if self.unavailable_reports > 0:
                self.unavailable_reports -= 1
                self.reports_refused = getattr(self, "reports_refused", []) + [request]
                context.abort(grpc.StatusCode.UNAVAILABLE, "the database is restarting")
            self.reports.append(request)
            self.cond.notify_all()
            return farm_pb2.ReportResultResponse(accepted=True)


def start_server(fake: FakeController, port: int = 0):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    farm_pb2_grpc.add_AgentServiceServicer_to_server(fake, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


@pytest.fixture
def farm(tmp_path, models, plugins):
    fake = FakeController()
    server, port = start_server(fake)
    stop = threading.Event()
    profile = tmp_path / "test-unit.yaml"
    profile.write_text(
        "name: test-unit\ndescription: this machine, allowed the test runtimes\nextends: local\n"
        "runtimes: {allowed: [onnxruntime, test-slow]}\n"
    )
    config = AgentConfig(
        controller=f"127.0.0.1:{port}", token="s3cret", profile=str(profile), tags=["ci"],
        data_dir=tmp_path / "agent", runtime_plugins=plugins,
        lease_wait_seconds=0.5, progress_interval_seconds=0.2, backoff_max_seconds=0.5,
    )
    thread = threading.Thread(target=run_agent, args=(config, stop), daemon=True)
    thread.start()

    class Farm:
        pass

    f = Farm()
    f.fake, f.server, f.port, f.stop, f.thread, f.config = fake, server, port, stop, thread, config
    yield f
    stop.set()
    thread.join(timeout=15)
    assert not thread.is_alive(), "the agent did not stop"
    f.server.stop(0)


def test_register_lease_download_progress_result(farm, models):
    fake = farm.fake
    sha = fake.add_artifact(models["mlp"].read_bytes())
    fake.add_job("j1", sha)
    fake.add_job("j2", sha)
    r1, r2 = fake.result_for("j1"), fake.result_for("j2")

    reg = fake.registrations[0]
    assert reg.device_profile == "test-unit" and "ci" in reg.tags and "local" in reg.tags
    assert reg.agent_id and reg.agent_version and reg.hostname
    assert "onnxruntime" in {r.name for r in reg.capabilities.runtimes}
    # The token served once, to enroll; every agent call carries the agent's own credential,
    # which it keeps private on the device.
    ((enrolled, enroll_metadata),) = fake.enrollments
    assert enroll_metadata.get("authorization") == "Bearer s3cret" and enrolled.device_profile == "test-unit"
    assert all(m.get("authorization") == f"Bearer credential-of-{enrolled.agent_id}" for m in fake.metadata)
    stored = farm.config.data_dir / "credential.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    assert json.loads(stored.read_text())["credential"] == f"credential-of-{enrolled.agent_id}"

    for r in (r1, r2):
        assert r.WhichOneof("outcome") == "result", r.failure
        assert r.attempt == 1 and r.agent_id == reg.agent_id
        result = r.result
        assert len(result.latency.samples_ns) >= 20
        assert result.environment.agent_id == reg.agent_id and result.environment.device_profile == "test-unit"
        assert result.environment.runtime == "onnxruntime"
    assert fake.downloads == [sha]  # the second job used the cache
    phases = [p.phase for job, p in fake.progress if job == "j1"]
    assert phases[0] == "fetching" and "reporting" in phases
    # the agent id is stable: stored in the data dir
    assert (farm.config.data_dir / "agent_id").read_text().strip() == reg.agent_id


def test_runtime_not_allowed_by_the_profile(farm, models):
    fake = farm.fake
    sha = fake.add_artifact(models["identity"].read_bytes())
    fake.add_job("nullrun", sha, settings=JobSettings(runtime="null"))
    f = fake.result_for("nullrun").failure
    assert category_name(f) == "CONFIGURATION"
    assert "test-unit does not allow runtime null" in f.message


def test_failed_job_is_reported_and_the_agent_goes_on(farm, models):
    fake = farm.fake
    bad = fake.add_artifact(models["garbage"].read_bytes())
    good = fake.add_artifact(models["identity"].read_bytes())
    fake.add_job("bad", bad)
    fake.add_job("good", good)
    f = fake.result_for("bad").failure
    assert category_name(f) == "ARTIFACT_INVALID"
    assert fake.result_for("good").WhichOneof("outcome") == "result"


def test_corrupted_download_is_an_infrastructure_failure(farm, models):
    fake = farm.fake
    data = models["identity"].read_bytes()
    sha = fake.add_artifact(data, serve=data[:-3] + b"xyz")
    fake.add_job("corrupt", sha)
    f = fake.result_for("corrupt").failure
    assert category_name(f) == "INFRASTRUCTURE" and "corrupted" in f.message


def test_a_download_cut_by_the_controller_going_away_is_tried_again(farm, models):
    """A controller restarting while an agent downloads must not cost the job its attempt."""
    fake = farm.fake
    sha = fake.add_artifact(models["identity"].read_bytes())
    fake.cut_downloads = 2
    fake.add_job("cut", sha)
    r = fake.result_for("cut")
    assert r.WhichOneof("outcome") == "result", r.failure
    assert fake.downloads == [sha, sha, sha]
    assert not list((farm.config.data_dir / "artifacts").rglob("*.part")), "a cut download left its temp file"


def test_a_download_the_controller_keeps_cutting_fails_the_attempt_in_the_end(farm, models):
    fake = farm.fake
    sha = fake.add_artifact(models["identity"].read_bytes())
    fake.cut_downloads = 10 ** 6
    fake.add_job("gone", sha)
    f = fake.result_for("gone").failure
    assert category_name(f) == "INFRASTRUCTURE" and "UNAVAILABLE" in f.message
    # tried again every 0.5 s (backoff_max_seconds here), given up after four times that
    assert 2 <= len(fake.downloads) <= 6


def test_cancel_stops_the_child_and_reports_nothing(farm, models):
    fake = farm.fake
    sha = fake.add_artifact(models["identity"].read_bytes())
    slow = JobSettings(runtime="test-slow", min_runs=10 ** 6, min_seconds=120)
    fake.add_job("long", sha, settings=slow)
    fake.wait_for(lambda: any(j == "long" and p.phase == "measuring" for j, p in fake.progress))
    t0 = time.monotonic()
    with fake.cond:
        fake.cancel_jobs.add("long")
    fake.add_job("next", sha)
    fake.result_for("next")
    assert time.monotonic() - t0 < 10
    assert [r.job_id for r in fake.reports] == ["next"]


def test_progress_at_least_every_second_during_long_inference(farm, models):
    fake = farm.fake
    sha = fake.add_artifact(models["identity"].read_bytes())
    fake.add_job("slowish", sha, settings=JobSettings(runtime="test-slow", min_runs=25, min_seconds=1.2,
                                                      warmup_seconds=0.01))
    fake.result_for("slowish")
    times = [p.updated_at for j, p in fake.progress if j == "slowish" and p.phase == "measuring"]
    assert len(times) >= 3
    assert max(b - a for a, b in zip(times, times[1:])) <= 1.0


def test_report_retried_while_controller_unavailable(farm, models):
    fake = farm.fake
    sha = fake.add_artifact(models["identity"].read_bytes())
    fake.unavailable_reports = 2
    fake.add_job("retry", sha)
    r = fake.result_for("retry")
    refused = fake.reports_refused
    assert len(refused) == 2
    assert all((x.job_id, x.attempt, x.lease_id) == (r.job_id, r.attempt, r.lease_id) for x in refused)
    assert len([x for x in fake.reports if x.job_id == "retry"]) == 1


def test_forgotten_agent_registers_again(farm):
    fake = farm.fake
    fake.wait_for(lambda: len(fake.registrations) >= 1)
    with fake.cond:
        fake.known = False
    fake.wait_for(lambda: len(fake.registrations) >= 2, timeout=5)


def test_controller_restart(farm, models, caplog):
    caplog.set_level(logging.WARNING, logger="hilfarm.agent")
    fake = farm.fake
    fake.wait_for(lambda: len(fake.registrations) >= 1)
    farm.server.stop(0).wait()
    time.sleep(1.5)  # the agent finds the controller gone and keeps retrying
    assert farm.thread.is_alive()
    assert any("unreachable" in rec.getMessage() for rec in caplog.records)
    fresh = FakeController()
    farm.server, _ = start_server(fresh, farm.port)
    fresh.wait_for(lambda: len(fresh.registrations) >= 1, timeout=15)
    sha = fresh.add_artifact(models["identity"].read_bytes())
    fresh.add_job("after-restart", sha)
    assert fresh.result_for("after-restart").WhichOneof("outcome") == "result"


def test_unreachable_controller_never_crashes_the_agent(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="hilfarm.agent")
    stop = threading.Event()
    config = AgentConfig(controller="127.0.0.1:1", profile="local", data_dir=tmp_path,
                         lease_wait_seconds=0.5, backoff_max_seconds=0.2)
    thread = threading.Thread(target=run_agent, args=(config, stop), daemon=True)
    thread.start()
    # Starting takes a moment (runtimes are probed in a child process); then it keeps retrying.
    said = lambda: sum("127.0.0.1:1 unreachable" in rec.getMessage() for rec in caplog.records)  # noqa: E731
    assert wait_until(lambda: said() >= 2, 30.0), "the agent never tried the controller twice"
    assert thread.is_alive()
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


HOT_PROFILE = """\
name: sim-hot
description: the simulated device, made to heat up (and throttle) within seconds
extends: simulated
telemetry:
  simulated_model:
    time_constant_s: 6.0
    idle_watts: 2.0
    max_watts: 6.0
    thermal_resistance_c_per_w: 8.0
    passive_trip_c: 56.0
    load_cores: 1
thermal:
  cooldown: {below_celsius: 46, zone: cpu-thermal, max_wait_seconds: 15, poll_seconds: 0.2}
"""


def test_sustained_run_on_the_simulated_device_heats_and_reports_windows(tmp_path):
    """The benchmark process is full load for this model (the simulated device follows the
    job's demand for a core, however busy the host): 41 °C idle, heading for 73 °C with a 6 s
    time constant. It crosses the 56 °C trip about 3.8 s after the child starts, and heats by
    several degrees over the five timed seconds; the slower the start (loading, warming up), the
    earlier in them the trip. Measured on a quiet machine: 48-49 °C after the first timed second,
    the trip 3.2-3.6 s in. The trip must leave time for a later reading: the step that trips
    writes the cooling state, and the lowered clock only with the next one (with a 58 °C trip it
    came 4.1-4.6 s in, and once in CI so late that no clock was read after it).

    The model takes about a hundred microseconds an inference, so five seconds are far below the
    sustained run's safety cap of a million runs: the tiny test MLP (under 5 µs) reached the
    cap in 4.6 s when the machine happened to be quiet, and the run (rightly, with a warning)
    stopped short of the five seconds asked for."""
    from hilfarm.sample_models import make_onnx_mlp

    model = make_onnx_mlp(tmp_path / "sustained.onnx", batch=16)
    fake = FakeController()
    server, port = start_server(fake)
    profile = tmp_path / "sim-hot.yaml"
    profile.write_text(HOT_PROFILE)
    stop = threading.Event()
    config = AgentConfig(controller=f"127.0.0.1:{port}", profile=str(profile), data_dir=tmp_path / "agent",
                         lease_wait_seconds=0.5, progress_interval_seconds=0.2, backoff_max_seconds=0.5)
    thread = threading.Thread(target=run_agent, args=(config, stop), daemon=True)
    thread.start()
    try:
        sha = fake.add_artifact(model.read_bytes())
        fake.add_job("hot", sha, settings=JobSettings(warmup_runs=1, warmup_seconds=0.01, threads=1, min_runs=3,
                                                      max_runs=10, sustained_seconds=5.0))
        report = fake.result_for("hot")
    finally:
        stop.set()
        thread.join(timeout=15)
        server.stop(0)
    assert report.WhichOneof("outcome") == "result", report.failure
    pb = report.result
    s = pb.sustained
    assert pb.HasField("sustained") and s.requested_seconds == 5.0 and s.window_seconds == 1.0
    # The windows tile the whole timed phase, which lasted the five seconds asked for.
    assert 5.0 <= s.duration_seconds < 6.0
    assert [w.start_seconds for w in s.windows] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [w.end_seconds for w in s.windows][:-1] == [1.0, 2.0, 3.0, 4.0]
    assert s.windows[-1].end_seconds == pytest.approx(s.duration_seconds)
    assert sum(w.runs for w in s.windows) == len(pb.latency.samples_ns) > 10  # max_runs did not apply
    assert len(pb.latency.samples_ns) < SUSTAINED_MAX_RUNS and not any("safety cap" in w for w in pb.warnings)
    for w in s.windows:
        assert w.runs > 0 and 0 < w.p50_seconds <= w.p90_seconds
        assert w.HasField("mean_watts") and w.mean_watts > 0
        assert w.HasField("max_celsius") and w.HasField("min_clock_hz") and w.HasField("throttled_fraction")
    # The model draws 2..6 W. It steps its energy counter from a thread of this busy process, so
    # one window may see a late step of the next: check the windows' energy as a whole.
    energy = sum(w.mean_watts * (w.end_seconds - w.start_seconds) for w in s.windows)
    assert 2.0 * 0.9 <= energy / s.duration_seconds <= 6.0 * 1.1
    temps = [w.max_celsius for w in s.windows]
    assert temps[-1] > temps[0] and s.temperature_rise_celsius == pytest.approx(temps[-1] - temps[0])
    assert s.latency_change_ratio == pytest.approx(s.windows[-1].p50_seconds / s.windows[0].p50_seconds)
    # It crossed the trip: the first throttled reading lies in a window that was (partly) throttled.
    assert s.HasField("throttled_after_seconds") and 0 <= s.throttled_after_seconds <= s.duration_seconds
    hot = next(w for w in s.windows if w.start_seconds <= s.throttled_after_seconds <= w.end_seconds)
    assert hot.throttled_fraction > 0
    # The lowered clock is read in the same or a later snapshot than the trip (the model updates
    # its files between two sensor reads), so it shows from the hot window on, not always in it.
    assert min(w.min_clock_hz for w in s.windows if w.start_seconds >= hot.start_seconds) < 1.8e9
    assert not any(u.field.startswith("sustained.") for u in pb.unavailable), list(pb.unavailable)
    # Every figure here came from the model, and says so.
    assert s.simulated and pb.environment.simulated and pb.power.simulated and pb.thermal.simulated
    assert pb.sustained.windows[0].runs == s.windows[0].runs and pb.sustained.simulated


# ---------------------------------------------------------------- no benchmark outlives its agent


def pid_alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits to be collected


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def running_children(data_dir):
    import json

    return [json.loads(p.read_text()) for p in (data_dir / "children").glob("*.json")]


def test_an_agent_killed_mid_job_takes_its_benchmark_with_it(tmp_path, models, plugins):
    """kill -9 a real agent process while its child measures: the kernel ends the child at
    once (parent-death signal), so it never runs beside the job's next attempt."""
    import signal
    import subprocess
    import sys

    fake = FakeController()
    server, port = start_server(fake)
    data_dir = tmp_path / "agent"
    profile = tmp_path / "slow-ok.yaml"
    profile.write_text("name: slow-ok\ndescription: allows the slow test runtime\nextends: local\n"
                       "runtimes: {allowed: [onnxruntime, test-slow]}\n")
    # PYTHONFAULTHANDLER: if the agent never gets going, SIGABRT makes it print where it is stuck.
    env = dict(os.environ, HILFARM_RUNTIME_PLUGINS=plugins[0], PYTHONFAULTHANDLER="1")
    with open(tmp_path / "agent.log", "wb") as log:
        agent = subprocess.Popen(
            [sys.executable, "-m", "hilfarm.cli", "--controller", f"127.0.0.1:{port}", "agent", "run",
             *ROOT_OK, "--profile", str(profile), "--data-dir", str(data_dir)],
            env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        sha = fake.add_artifact(models["identity"].read_bytes())
        fake.add_job("long", sha, settings=JobSettings(runtime="test-slow", min_runs=10 ** 6, min_seconds=300))
        try:
            fake.wait_for(lambda: any(j == "long" and p.phase == "measuring" for j, p in fake.progress), timeout=60)
        except AssertionError:
            state = Path(f"/proc/{agent.pid}/status").read_text() if agent.poll() is None else f"exited {agent.poll()}"
            if agent.poll() is None:
                agent.send_signal(signal.SIGABRT)
                agent.wait(10)
            raise AssertionError(f"the agent never measured ({state[:400]}); its log:\n"
                                 + (tmp_path / "agent.log").read_text()[-6000:])
        (child,) = running_children(data_dir)
        assert pid_alive(child["pid"])
        agent.kill()
        agent.wait()
        assert wait_until(lambda: not pid_alive(child["pid"]), 2.0), "the benchmark outlived its agent"
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        server.stop(0)


def test_a_starting_agent_ends_what_a_previous_one_left_running(tmp_path, models, plugins):
    """A benchmark child whose agent is gone without taking it along (where the parent-death
    signal is not available) is ended by the next agent on that data dir, and every work
    directory left behind is removed, before the agent takes work."""
    import json
    import subprocess
    import sys

    from hilfarm.agent.orphans import ChildRegistry

    data_dir = tmp_path / "agent"
    registry = ChildRegistry(data_dir)
    work = registry.work_root / "hilfarm-job-left"
    work.mkdir(parents=True)
    stray = registry.work_root / "hilfarm-job-stray"
    stray.mkdir()
    spec = work / "spec.json"
    spec.write_text(json.dumps({
        "model_path": str(models["identity"]), "model_format": "onnx",
        "settings": {"runtime": "test-slow", "min_runs": 10 ** 6, "min_seconds": 300.0},
        "resolved": {"warmup_runs": 1, "warmup_seconds": 0.01, "warmup_max_seconds": 1.0, "min_runs": 10 ** 6,
                     "min_seconds": 300.0, "max_runs": 10 ** 7, "max_seconds": 600.0,
                     "memory_limit_bytes": 0, "timeout_seconds": 600.0, "repeats": 1, "sustained_seconds": 0.0},
        "plugins": plugins, "progress_fd": -1, "result_path": str(work / "result.json"),
    }))
    left = subprocess.Popen([sys.executable, "-m", "hilfarm.agent.child", str(spec)], start_new_session=True,
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        registry.add(left.pid, str(work))
        time.sleep(0.5)
        assert pid_alive(left.pid)
        from hilfarm.agent.service import Agent

        Agent(AgentConfig(controller="127.0.0.1:1", profile="local", data_dir=data_dir))
        assert wait_until(lambda: left.poll() is not None, 2.0), "the leftover benchmark is still running"
        assert left.returncode == -9
        assert not work.exists() and not stray.exists() and running_children(data_dir) == []
    finally:
        if left.poll() is None:
            left.kill()
        left.wait()


def test_a_recorded_pid_that_now_belongs_to_another_process_is_left_alone(tmp_path):
    """Pids are reused: a record whose process started at another time is not a benchmark."""
    import json
    import subprocess
    import sys

    from hilfarm.agent.orphans import ChildRegistry

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        registry = ChildRegistry(tmp_path)
        (registry.dir / f"{other.pid}.json").write_text(json.dumps(
            {"pid": other.pid, "start_ticks": 1, "workdir": str(tmp_path / "gone")}))
        registry.sweep()
        assert other.poll() is None and running_children(tmp_path) == []
    finally:
        other.kill()
        other.wait()


def test_a_stopping_agent_stops_its_running_benchmark(farm, models):
    fake = farm.fake
    sha = fake.add_artifact(models["identity"].read_bytes())
    fake.add_job("long", sha, settings=JobSettings(runtime="test-slow", min_runs=10 ** 6, min_seconds=300))
    fake.wait_for(lambda: any(j == "long" and p.phase == "measuring" for j, p in fake.progress))
    (child,) = running_children(farm.config.data_dir)
    t0 = time.monotonic()
    farm.stop.set()
    farm.thread.join(timeout=15)
    assert not farm.thread.is_alive() and time.monotonic() - t0 < 5
    assert not pid_alive(child["pid"]) and running_children(farm.config.data_dir) == []
    assert [r.job_id for r in fake.reports] == []  # nothing is reported for a job it did not finish
