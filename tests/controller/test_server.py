"""The user API over real gRPC: submit, runs and jobs, cancel, watch, auth, health, reflection,
and a graceful stop on SIGTERM."""
from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from hilfarm.controller.database import POSTGRES_APPLICATION_NAME
from hilfarm.controller import server as server_module
from hilfarm.controller.server import GC_OLDEST_THRESHOLD
from hilfarm.v1 import farm_pb2 as pb
from hilfarm.v1 import farm_pb2_grpc as pb_grpc

from .conftest import npz_bytes, onnx_bytes, sample_result, tflite_bytes


def test_submit_fans_out_one_job_per_model_and_device(farm):
    a = farm.upload(onnx_bytes(100, b"\x10"), filename="a.onnx")
    b = farm.upload(tflite_bytes(100), fmt="tflite", filename="b.tflite")
    settings = pb.JobSettings(min_runs=50, threads=2, input_shapes=[pb.InputShape(name="x", dims=[1, 3, 224, 224])])
    run = farm.submit([a, b], ["rpi5", "jetson-orin-nano", "rpi5"], settings=settings, required_tags=["lab"],
                      max_attempts=5)
    assert [(j.model_name, j.model_format, j.device_profile) for j in run.jobs] == [
        ("a.onnx", "onnx", "rpi5"), ("a.onnx", "onnx", "jetson-orin-nano"),
        ("b.tflite", "tflite", "rpi5"), ("b.tflite", "tflite", "jetson-orin-nano")]
    for job in run.jobs:
        assert job.run_id == run.id and job.state == pb.JOB_STATE_QUEUED and job.max_attempts == 5
        assert job.settings == settings and list(job.required_tags) == ["lab"] and job.attempt == 0
    again = farm.farm.GetRun(pb.GetRunRequest(run_id=run.id))
    assert [j.id for j in again.jobs] == [j.id for j in run.jobs]
    assert farm.submit([a], ["x86"]).jobs[0].max_attempts == 3, "the controller's default"


def test_submit_names_a_model_that_was_never_uploaded(farm):
    missing = "e" * 64
    with pytest.raises(grpc.RpcError) as err:
        farm.submit([missing], ["rpi5"])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing in err.value.details() and "upload it first" in err.value.details()


@pytest.mark.parametrize("settings, message", [
    (pb.JobSettings(min_runs=-1), "settings.min_runs is -1; it must not be negative"),
    (pb.JobSettings(warmup_seconds=-0.5), "settings.warmup_seconds is -0.5"),
    (pb.JobSettings(timeout_seconds=float("nan")), "settings.timeout_seconds is NaN; it must be a finite number"),
    (pb.JobSettings(runtime="tensorrt"), "settings.runtime 'tensorrt' is not a runtime the farm knows"),
    (pb.JobSettings(runtime="tflite"), "which settings.runtime tflite cannot run"),
    (pb.JobSettings(min_runs=100, max_runs=10), "settings.min_runs (100) is larger than settings.max_runs (10)"),
    (pb.JobSettings(graph_optimization="max"), "settings.graph_optimization 'max' is not one of"),
    (pb.JobSettings(input_shapes=[pb.InputShape(name="x", dims=[1, 0])]), "must be positive sizes"),
    (pb.JobSettings(inputs_sha256="f" * 64), "are not stored on this controller"),
])
def test_submit_refuses_settings_that_cannot_be_right(farm, model, settings, message):
    with pytest.raises(grpc.RpcError) as err:
        farm.submit([model], ["rpi5"], settings=settings)
    assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert message in err.value.details()
    assert farm.farm.ListJobs(pb.ListJobsRequest()).jobs == [], "nothing is stored for a refused submission"


def test_submit_refuses_an_input_file_as_a_model_and_an_empty_device_list(farm, model):
    tensors = farm.upload(npz_bytes(), fmt="npz", filename="inputs.npz")
    with pytest.raises(grpc.RpcError) as err:
        farm.submit([tensors], ["rpi5"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "only onnx and tflite" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        farm.submit([model], [])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "device profile" in err.value.details()
    run = farm.submit([model], ["rpi5"], settings=pb.JobSettings(inputs_sha256=tensors))
    assert run.jobs[0].settings.inputs_sha256 == tensors


def test_list_jobs_filters_by_run_and_state(farm, model):
    first = farm.submit([model], ["a", "b"])
    second = farm.submit([model], ["c"])
    farm.farm.CancelJob(pb.CancelJobRequest(job_id=first.jobs[0].id))
    listed = farm.farm.ListJobs(pb.ListJobsRequest()).jobs
    assert [j.id for j in listed] == [second.jobs[0].id, first.jobs[1].id, first.jobs[0].id]
    by_run = farm.farm.ListJobs(pb.ListJobsRequest(run_id=first.id)).jobs
    assert [j.id for j in by_run] == [first.jobs[1].id, first.jobs[0].id]
    cancelled = farm.farm.ListJobs(pb.ListJobsRequest(states=[pb.JOB_STATE_CANCELLED])).jobs
    assert [j.id for j in cancelled] == [first.jobs[0].id]
    assert len(farm.farm.ListJobs(pb.ListJobsRequest(limit=2)).jobs) == 2
    with pytest.raises(grpc.RpcError) as err:
        farm.farm.ListJobs(pb.ListJobsRequest(states=[pb.JOB_STATE_UNSPECIFIED]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_get_and_cancel_name_what_is_missing_or_finished(farm, model):
    for call in (lambda: farm.job("nope"), lambda: farm.farm.GetRun(pb.GetRunRequest(run_id="nope")),
                 lambda: farm.farm.CancelJob(pb.CancelJobRequest(job_id="nope"))):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "'nope'" in err.value.details()
    (job,) = farm.submit([model], ["rpi5"]).jobs
    assert farm.farm.CancelJob(pb.CancelJobRequest(job_id=job.id)).state == pb.JOB_STATE_CANCELLED
    with pytest.raises(grpc.RpcError) as err:
        farm.farm.CancelJob(pb.CancelJobRequest(job_id=job.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "already cancelled" in err.value.details()


def test_watch_sends_the_job_on_every_change_until_it_is_finished(farm, model, monkeypatch):
    budget = pb.Budget(name="latency.p50", max=1.0, unit="s")
    (job,) = farm.submit([model], ["rpi5"], constraints=[budget]).jobs
    regressions = farm.controller.parts.regressions
    evaluation_reads = []
    real_evaluations = regressions.evaluations
    monkeypatch.setattr(regressions, "evaluations",
                        lambda ids: evaluation_reads.append(list(ids)) or real_evaluations(evaluation_reads[-1]))
    seen = []
    done = threading.Event()

    def watch() -> None:
        for update in farm.farm.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=20):
            seen.append(update)
        done.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    wait_until = lambda n: [time.sleep(0.02) for _ in range(250) if len(seen) < n]  # noqa: E731
    wait_until(1)
    agent = farm.agent("pi-1")
    agent.register()
    lease = agent.lease()
    wait_until(3)
    agent.progress(lease, runs_done=3)
    wait_until(4)
    agent.report(lease, result=sample_result())
    assert done.wait(10), "the stream ends once the job is finished"
    watcher.join()
    states = [u.state for u in seen]
    assert states[0] == pb.JOB_STATE_QUEUED and states[-1] == pb.JOB_STATE_SUCCEEDED
    assert pb.JOB_STATE_LEASED in states and pb.JOB_STATE_RUNNING in states
    assert seen[-1].result == sample_result()
    assert all(a != b for a, b in zip(seen, seen[1:])), "an update is sent only on a change"
    # The budgets come with every update, the verdicts with the result: read with the job at
    # each change, in the same statement, never apart.
    assert all(list(u.constraints) == [budget] for u in seen)
    assert [v.constraint for v in seen[-1].verdicts] == ["latency.p50"] and not seen[-2].verdicts
    assert evaluation_reads == []


def test_watching_a_finished_job_sends_it_once(farm, model):
    (job,) = farm.submit([model], ["rpi5"]).jobs
    farm.farm.CancelJob(pb.CancelJobRequest(job_id=job.id))
    updates = list(farm.farm.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=5))
    assert [u.state for u in updates] == [pb.JOB_STATE_CANCELLED]


def test_a_watch_reads_the_database_only_when_its_job_changes_and_stops_with_its_client(farm, model, monkeypatch):
    (job,) = farm.submit([model], ["rpi5"]).jobs
    jobs = farm.controller.parts.jobs
    reads = []
    real_read = jobs.get_job_judged
    monkeypatch.setattr(jobs, "get_job_judged", lambda job_id, **scope: reads.append(job_id) or real_read(job_id, **scope))
    call = farm.farm.WatchJob(pb.WatchJobRequest(job_id=job.id))
    assert next(call).id == job.id
    first = len(reads)  # its state (a whole id is not looked up first)
    assert first == 1
    time.sleep(1.0)
    assert len(reads) == first, "nothing changed, so the watch did not read the job again"
    agent = farm.agent("pi-1")
    agent.register()
    lease = agent.lease()
    assert next(call).state == pb.JOB_STATE_LEASED
    assert len(reads) == first + 1, "one read per change"
    call.cancel()
    time.sleep(0.3)
    settled = len(reads)
    assert agent.progress(lease) is False
    time.sleep(0.5)
    assert len(reads) == settled, "a watch whose client went away hears no more changes"


@pytest.mark.parametrize("watch", ["job", "run"])
def test_a_watched_queued_job_is_explained_again_as_time_passes_without_reading_it_again(farm, model, monkeypatch,
                                                                                          watch):
    # Registering an agent changes no job, so no watcher is woken: only the timed refresh of a
    # queued job's placement notes can tell its watcher; the job itself has not changed and is
    # not read again. The refresh shares no read of the agents from before the registration.
    monkeypatch.setattr(server_module, "QUEUED_REFRESH_SECONDS", 0.4)
    run = farm.submit([model], ["rpi5"])
    (job,) = run.jobs
    jobs = farm.controller.parts.jobs
    reads = []
    for name in ("get_job", "get_job_judged", "get_run"):
        real = getattr(jobs, name)
        monkeypatch.setattr(jobs, name, lambda key, real=real, **scope: reads.append(key) or real(key, **scope))
    if watch == "job":
        call = farm.farm.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=20)
    else:
        call = farm.farm.WatchRun(pb.WatchRunRequest(run_id=run.id), timeout=20)
    first = next(call)
    assert list(first.placement_notes) == ["no agent with profile rpi5 has registered"]
    read_before = len(reads)
    farm.agent("pi-1").register()
    again = next(call)
    assert again.id == job.id and again.state == pb.JOB_STATE_QUEUED
    assert [n.split(":")[0] for n in again.placement_notes] == ["pi-1"], list(again.placement_notes)
    assert len(reads) == read_before, "shown again for its notes alone: the job was not read again"
    call.cancel()


def test_watch_run_follows_every_job_of_a_run_on_one_stream(farm, model):
    other = farm.upload(onnx_bytes(64, b"\x21"), filename="b.onnx")
    run = farm.submit([model, other], ["rpi5"])
    first, second = run.jobs
    updates = []
    done = threading.Event()

    def watch() -> None:
        for update in farm.farm.WatchRun(pb.WatchRunRequest(run_id=run.id), timeout=20):
            updates.append(update)
        done.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    deadline = time.monotonic() + 5
    while len(updates) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert {u.id for u in updates} == {first.id, second.id}, "every job of the run first"
    agent = farm.agent("pi-1")
    agent.register()
    for _ in range(2):
        lease = agent.lease()
        assert agent.report(lease).accepted
    assert done.wait(10), "the stream ends once every job is finished"
    watcher.join()
    final = {u.id: u.state for u in updates}
    assert final == {first.id: pb.JOB_STATE_SUCCEEDED, second.id: pb.JOB_STATE_SUCCEEDED}
    for job in (first, second):
        sent = [u for u in updates if u.id == job.id]
        assert sent[0].state == pb.JOB_STATE_QUEUED and sent[-1].state == pb.JOB_STATE_SUCCEEDED
        assert all(a != b for a, b in zip(sent, sent[1:])), "a job is sent again only when it changed"
    with pytest.raises(grpc.RpcError) as err:
        list(farm.farm.WatchRun(pb.WatchRunRequest(run_id="nope"), timeout=5))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_watch_run_reads_only_the_jobs_that_changed(farm, model, monkeypatch):
    # A run of three jobs, one of them finished and judged while watched: after the first read
    # of the whole run, each change reads the job that changed with its budgets and verdicts, in
    # one statement; a resync (notifications may have been lost) reads the run again.
    models = [model] + [farm.upload(onnx_bytes(64, bytes([0x30 + i])), filename=f"m{i}.onnx") for i in range(2)]
    budget = pb.Budget(name="latency.p50", max=1.0, unit="s")
    run = farm.submit(models, ["rpi5"], constraints=[budget])
    jobs, regressions = farm.controller.parts.jobs, farm.controller.parts.regressions
    reads = []
    for name in ("get_run", "get_jobs_judged"):
        real = getattr(jobs, name)
        monkeypatch.setattr(jobs, name, lambda key, real=real, name=name, **scope:
                            reads.append((name, key if name == "get_run" else sorted(key))) or real(key, **scope))
    real_evaluations = regressions.evaluations
    monkeypatch.setattr(regressions, "evaluations",
                        lambda ids: reads.append(("evaluations", sorted(ids))) or real_evaluations(reads[-1][1]))
    call = farm.farm.WatchRun(pb.WatchRunRequest(run_id=run.id), timeout=20)
    first = [next(call) for _ in run.jobs]
    assert {u.id for u in first} == {j.id for j in run.jobs}
    assert reads == [("get_run", run.id), ("evaluations", sorted(j.id for j in run.jobs))]
    del reads[:]

    agent = farm.agent("pi-1")
    agent.register()
    lease = agent.lease()
    leased = next(call)
    assert leased.id == lease.job.id and leased.state == pb.JOB_STATE_LEASED
    assert list(leased.constraints) == [budget], "the budgets read at the first look go with it"
    assert reads == [("get_jobs_judged", [lease.job.id])]
    del reads[:]

    assert agent.report(lease, result=sample_result()).accepted
    done = next(call)
    assert done.id == lease.job.id and done.state == pb.JOB_STATE_SUCCEEDED
    assert [v.constraint for v in done.verdicts] == ["latency.p50"]
    assert reads == [("get_jobs_judged", [lease.job.id])]
    del reads[:]

    farm.controller.parts.database.feed.publish([], resync=True)
    deadline = time.monotonic() + 5
    while not reads and time.monotonic() < deadline:
        time.sleep(0.02)
    assert reads[:1] == [("get_run", run.id)], "after a resync the whole run is read again"
    call.cancel()


@pytest.fixture
def secured(make_farm):
    return make_farm(token="s3cret")


def test_every_call_needs_the_token(secured):
    anonymous = secured.farm
    with pytest.raises(grpc.RpcError) as err:
        anonymous.ListJobs(pb.ListJobsRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        anonymous.ListJobs(pb.ListJobsRequest(), metadata=(("authorization", "Bearer wrong"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "not a token of this controller" in err.value.details()
    header = pb.ArtifactChunk(header=pb.ArtifactHeader(sha256="a" * 64, size_bytes=1, format="onnx"))
    with pytest.raises(grpc.RpcError) as err:
        anonymous.UploadArtifact(iter([header]))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        list(secured.agents.DownloadArtifact(pb.DownloadArtifactRequest(sha256="a" * 64)))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # With the token everything works, streams included (an agent downloads with its own credential).
    model = onnx_bytes(10, b"\x20")
    sha = secured.upload(model)
    assert secured.farm.ListJobs(pb.ListJobsRequest(), metadata=secured.metadata).jobs == []
    data = b"".join(c.data for c in secured.download(sha))
    assert data == model


def test_health_answers_without_a_token_and_reflection_lists_the_services(secured):
    health = health_pb2_grpc.HealthStub(secured.channel)
    for service in ("", "hilfarm.v1.FarmService", "hilfarm.v1.AgentService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(secured.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          metadata=secured.metadata)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"hilfarm.v1.FarmService", "hilfarm.v1.AgentService", "grpc.health.v1.Health"} <= names


SERVE = textwrap.dedent("""
    import gc, logging, sys, threading, time
    from pathlib import Path
    from hilfarm.controller.server import Controller, serve_forever
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    controller = Controller(data_dir=Path(sys.argv[1]))
    before = (gc.get_threshold(), gc.get_freeze_count())

    def say_port():  # serve_forever starts it, its signal handlers already in place
        while controller.port is None:
            time.sleep(0.01)
        print(controller.port, flush=True)

    threading.Thread(target=say_port, daemon=True).start()
    serve_forever(controller, "127.0.0.1:0", grace=1.0)
    print("stopped", flush=True)
    print("gc before", *before, "after", gc.get_threshold(), gc.get_freeze_count(), flush=True)
""")


def test_serve_forever_stops_gracefully_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        port = int(proc.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in out
    assert "received SIGTERM; stopping" in err and "controller stopped" in err
    # Serving tuned the collector: what was alive at the start frozen, full collections (which
    # paused every thread for 70-200 ms) rare.
    before_threshold, before_frozen, after_threshold, after_frozen = re.search(
        r"gc before (\(.*?\)) (\d+) after (\(.*?\)) (\d+)", out).groups()
    assert ast.literal_eval(before_threshold)[0] == 700 and int(before_frozen) == 0
    assert ast.literal_eval(after_threshold) == (700, 10, GC_OLDEST_THRESHOLD)
    assert int(after_frozen) > 10_000


def test_metrics_see_every_call_and_every_accepted_result(make_farm, model_bytes=onnx_bytes(50, b"\x30")):
    """The interceptor chain of the asynchronous server: the metrics interceptor, then the token check."""
    calls, results = [], []

    class Recorder(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):
            calls.append(details.method)
            return await continuation(details)

    class Metrics:
        interceptor = Recorder()

        def result_stored(self, job):
            results.append((job.id, job.attempt, job.state))

    farm = make_farm(metrics=Metrics(), token="t")
    with pytest.raises(grpc.RpcError):
        farm.farm.ListJobs(pb.ListJobsRequest())
    sha = farm.upload(model_bytes)
    (job,) = farm.submit([sha], ["rpi5"]).jobs
    agent = farm.agent("pi-1")
    agent.register()
    lease = agent.lease()
    agent.report(lease)
    agent.report(lease)  # the agent never heard the answer: accepted again, stored once
    agent.report(lease, attempt=7)
    assert calls[0] == "/hilfarm.v1.FarmService/ListJobs", "a refused call is seen too"
    assert "/hilfarm.v1.AgentService/ReportResult" in calls
    assert results == [(job.id, 1, "succeeded")]


def test_the_null_runtime_takes_any_model_format(farm, model):
    """The harness-overhead runtime runs nothing, so it accepts ONNX and TFLite alike."""
    run = farm.submit([model], ["rpi5"], settings=pb.JobSettings(runtime="null"))
    assert [job.settings.runtime for job in run.jobs] == ["null"]


def test_listings_leave_out_raw_samples_and_timelines_unless_asked(farm, model):
    """A listing of long runs would be tens of MB; GetJob still carries every sample."""
    farm.submit([model], ["rpi5"])
    agent = farm.agent("pi-1")
    agent.register()
    lease = agent.lease()
    result = sample_result([5, 6, 7])
    result.timeline.add(t=0.1, sensor="rapl", quantity="energy_joules", channel="package-0", value=1.0)
    assert agent.report(lease, result=result).accepted
    (listed,) = farm.farm.ListJobs(pb.ListJobsRequest()).jobs
    assert list(listed.result.latency.samples_ns) == [] and len(listed.result.timeline) == 0
    assert listed.result.latency.p50_seconds == result.latency.p50_seconds  # the figures stay
    (full,) = farm.farm.ListJobs(pb.ListJobsRequest(include_samples=True)).jobs
    assert list(full.result.latency.samples_ns) == [5, 6, 7] and len(full.result.timeline) == 1
    assert list(farm.job(lease.job.id).result.latency.samples_ns) == [5, 6, 7]


def test_a_listing_gives_no_result_to_jobs_that_have_none(farm, model):
    """A queued, failed or cancelled job has no figures: an empty result would read as p50 0."""
    (queued,) = farm.submit([model], ["rpi5"]).jobs
    (cancelled,) = farm.submit([model], ["x86"]).jobs
    farm.farm.CancelJob(pb.CancelJobRequest(job_id=cancelled.id))
    for include_samples in (False, True):
        listed = farm.farm.ListJobs(pb.ListJobsRequest(include_samples=include_samples)).jobs
        assert [j.HasField("result") for j in listed] == [False, False]


def test_each_model_gets_its_own_input_shapes(farm):
    det = farm.upload(onnx_bytes(100, b"\x12"), filename="det.onnx")
    rec = farm.upload(onnx_bytes(100, b"\x13"), filename="rec.onnx")
    settings = pb.JobSettings(dynamic_dimension_default=8, input_shapes=[
        pb.InputShape(name="images", dims=[1, 3, 640, 640], model_sha256=det),
        pb.InputShape(name="x", dims=[1, 3, 48, 320], model_sha256=rec),
        pb.InputShape(name="scale", dims=[1]),  # no model: for every model
    ])
    run = farm.submit([det, rec], ["rpi5"], settings=settings)
    shapes = {j.model_name: [(s.name, list(s.dims), s.model_sha256) for s in j.settings.input_shapes]
              for j in run.jobs}
    assert shapes == {"det.onnx": [("images", [1, 3, 640, 640], ""), ("scale", [1], "")],
                      "rec.onnx": [("x", [1, 3, 48, 320], ""), ("scale", [1], "")]}
    assert {j.settings.dynamic_dimension_default for j in run.jobs} == {8}
    # A shape for a model that is not in the submission is refused, and nothing is stored.
    with pytest.raises(grpc.RpcError) as err:
        farm.submit([det], ["rpi5"], settings=pb.JobSettings(
            input_shapes=[pb.InputShape(name="x", dims=[1], model_sha256=rec)]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"model sha256 {rec}" in err.value.details() and "not one of this submission's models" in err.value.details()
    assert len(farm.farm.ListJobs(pb.ListJobsRequest()).jobs) == 2


def test_job_calls_take_a_unique_prefix_and_name_the_candidates_of_an_ambiguous_one(farm, model):
    jobs = list(farm.submit([model], [f"p{i}" for i in range(40)]).jobs)
    job = jobs[0]
    assert farm.job(job.id[:8]).id == job.id
    watched = next(iter(farm.farm.WatchJob(pb.WatchJobRequest(job_id=job.id[:8]))))
    assert watched.id == job.id
    assert farm.farm.CancelJob(pb.CancelJobRequest(job_id=job.id[:6])).id == job.id
    # 40 uuid4 ids: some pair shares its first hex digit; four digits would be too lucky to test.
    by_first: dict = {}
    for j in jobs:
        by_first.setdefault(j.id[0], []).append(j.id)
    shared = next(ids for ids in by_first.values() if len(ids) > 1)
    common = os.path.commonprefix(shared)
    if len(common) >= 4:
        with pytest.raises(grpc.RpcError) as err:
            farm.job(common)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert all(i in err.value.details() for i in shared)
    with pytest.raises(grpc.RpcError) as err:
        farm.job(shared[0][:2])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "at least 4 hex characters" in err.value.details()


def test_a_second_controller_on_a_busy_address_refuses_to_start(farm, make_farm, tmp_path):
    """gRPC's default SO_REUSEPORT would let both listen and split the calls between them."""
    from hilfarm.controller.errors import CannotListen
    from hilfarm.controller.server import Controller

    second = Controller(data_dir=tmp_path / "second")
    with pytest.raises(CannotListen, match=f"cannot listen on {farm.controller.address}: the address is in use"):
        second.start(farm.controller.address)
    second.parts.database.close()
    # The first one still answers every call.
    for _ in range(20):
        farm.farm.ListJobs(pb.ListJobsRequest())


def test_every_connection_is_served_whichever_of_the_ports_servers_takes_it(farm):
    """The controller listens with several servers on one port (server.ACCEPTING_SERVERS) and the
    kernel gives each new connection to one of them: each must serve every service."""
    channels = [grpc.insecure_channel(farm.controller.address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(4 * server_module.ACCEPTING_SERVERS)]
    try:
        for channel in channels:
            assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status \
                == health_pb2.HealthCheckResponse.SERVING
            pb_grpc.FarmServiceStub(channel).ListJobs(pb.ListJobsRequest(), timeout=10)
            with pytest.raises(grpc.RpcError) as refused:  # served: refused for want of a credential
                pb_grpc.AgentServiceStub(channel).Heartbeat(pb.HeartbeatRequest(agent_id="nobody"), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        for channel in channels:
            channel.close()


def test_a_port_is_free_again_as_soon_as_its_controller_stopped(tmp_path):
    """Connections a stopped controller leaves closing (TIME_WAIT) don't make its port look busy
    to the next one (server._address_in_use)."""
    from hilfarm.controller.server import Controller

    first = Controller(data_dir=tmp_path / "first")
    first.start("127.0.0.1:0")
    address = first.address
    with grpc.insecure_channel(address) as channel:
        pb_grpc.FarmServiceStub(channel).ListJobs(pb.ListJobsRequest(), timeout=10)
    first.stop(grace=0.5)
    assert not server_module._address_in_use(address)
    second = Controller(data_dir=tmp_path / "second")
    second.start(address)
    try:
        with grpc.insecure_channel(address) as channel:
            pb_grpc.FarmServiceStub(channel).ListJobs(pb.ListJobsRequest(), timeout=10)
    finally:
        second.stop(grace=0.5)


def test_a_port_anything_listens_on_is_in_use():
    import socket
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as a program sharing its port would
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert server_module._address_in_use(f"127.0.0.1:{port}")
        assert server_module._address_in_use(f"0.0.0.0:{port}")
        assert not server_module._address_in_use("127.0.0.1:0")
    assert not server_module._address_in_use(f"127.0.0.1:{port}")


def test_a_second_controller_on_a_served_sqlite_database_refuses_to_start(farm, model):
    """Two controllers on one SQLite file would each wake only their own waiters and interleave
    their transactions; the second stops before writing anything, naming the first."""
    from hilfarm.controller.errors import DatabaseInUse
    from hilfarm.controller.server import Controller

    (job,) = farm.submit([model], ["nowhere"]).jobs
    second = Controller(data_dir=farm.controller.data_dir)
    with pytest.raises(DatabaseInUse, match=f"served by another controller \\(pid {os.getpid()}\\); one SQLite "
                                            "database takes one controller"):
        second.start("127.0.0.1:0")
    second.parts.database.close()
    assert farm.job(job.id).state == pb.JOB_STATE_QUEUED  # the first serves on
    # Once the first has stopped, the file is free, and what it stored is all there.
    farm.close()
    farm.controller.stop(grace=0.5)
    try:
        second.start("127.0.0.1:0")
        with grpc.insecure_channel(second.address) as channel:
            stored = pb_grpc.FarmServiceStub(channel).GetJob(pb.GetJobRequest(job_id=job.id), timeout=10)
        assert stored.state == pb.JOB_STATE_QUEUED
    finally:
        second.stop(grace=0.5)


def test_a_busy_metrics_port_is_a_clear_error_and_frees_the_grpc_port(tmp_path):
    import socket

    from hilfarm.controller.errors import CannotListen
    from hilfarm.controller.server import Controller

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        grpc_port = probe.getsockname()[1]
    try:
        controller = Controller(data_dir=tmp_path / "c", metrics_bind=f"127.0.0.1:{port}")
        with pytest.raises(CannotListen, match=f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"):
            controller.start(f"127.0.0.1:{grpc_port}")
        controller.parts.database.close()
        again = Controller(data_dir=tmp_path / "d")
        assert again.start(f"127.0.0.1:{grpc_port}") == grpc_port  # the gRPC port was given back
        again.stop()
    finally:
        taken.close()


@pytest.mark.postgres
def test_a_call_that_finds_its_database_connection_gone_is_refused_as_unavailable_and_the_next_reconnects(
        make_farm, postgres_url):
    """The controller pings no connection before using it (a round trip per transaction): after
    a database restart or failover, a call that meets a dead connection is refused as
    UNAVAILABLE (agents send it again; watchers reconnect), never as an internal error, and
    nothing stored is lost; the pool replaces its connections, so the calls after it are answered."""
    import sqlalchemy as sa

    farm = make_farm(db_url=postgres_url)
    (queued,) = farm.submit([farm.upload(onnx_bytes(4096))], ["rpi5"]).jobs
    assert farm.job(queued.id).state == pb.JOB_STATE_QUEUED
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            ended = conn.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database() AND pid <> pg_backend_pid()"),
                {"name": POSTGRES_APPLICATION_NAME}).scalar_one()
    finally:
        admin.dispose()
    assert ended >= 1, "the controller's connections are named in pg_stat_activity"
    answers = []
    for _ in range(3):
        try:
            answers.append(farm.job(queued.id).state)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
            assert "lost its connection to the database" in e.details() and "send it again" in e.details()
            answers.append(e.code())
    assert answers[-1] == pb.JOB_STATE_QUEUED, answers
    assert answers.count(grpc.StatusCode.UNAVAILABLE) <= 1, answers
