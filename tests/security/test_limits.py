"""Limits: every bound of the issue's list refused with INVALID_ARGUMENT or RESOURCE_EXHAUSTED
before anything is stored, oversize and malformed messages, names that try to be paths, text
PostgreSQL cannot hold, and a long run whose result is stored because the agent keeps to the
controller's limits. After each refusal the farm keeps serving."""

from __future__ import annotations

import json
import math
import time

import grpc
import pytest

from hilfarm.v1 import farm_pb2 as pb

from .conftest import SecureFarm, refusal


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError


@pytest.fixture(scope="module")
def limited(tmp_path_factory, pki):
    farm = SecureFarm(tmp_path_factory.mktemp("limited"), pki, args=["--max-queued-jobs", "10"])
    yield farm
    farm.stop()


@pytest.fixture(scope="module")
def model_sha(limited, models):
    return limited.operator.upload(models["onnx"].read_bytes())


def test_one_submit_cannot_flood_the_queue(limited, models):
    user = limited.caller(limited.user_token("submitter", "flood"))
    data = models["onnx"].read_bytes()
    sha = user.upload(data)
    before = rss_bytes(limited.controller.popen.pid)
    # The 23 KB Submit that made 90,000 jobs.
    flood = pb.SubmitRequest(models=[pb.ModelRef(sha256=sha)] * 300, device_profiles=[f"p{i}" for i in range(300)])
    err = refusal(lambda: user.farm.Submit(flood, timeout=30))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "the limit is 100" in err.details()
    wide = pb.SubmitRequest(models=[pb.ModelRef(sha256=sha)] * 30, device_profiles=[f"p{i}" for i in range(30)])
    err = refusal(lambda: user.farm.Submit(wide))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "makes 900 jobs" in err.details() and "at most 500" in err.details()
    assert user.farm.ListJobs(pb.ListJobsRequest()).jobs == []
    assert rss_bytes(limited.controller.popen.pid) - before < 50 << 20
    # Queued jobs per project (--max-queued-jobs 10): the submission that would pass it stores nothing.
    user.farm.Submit(pb.SubmitRequest(models=[pb.ModelRef(sha256=sha)], device_profiles=[f"q{i}" for i in range(8)]))
    err = refusal(lambda: user.farm.Submit(pb.SubmitRequest(models=[pb.ModelRef(sha256=sha)],
                                                            device_profiles=[f"r{i}" for i in range(5)])))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "project flood has 8 queued jobs and this submission adds 5" in err.details()
    assert len(user.farm.ListJobs(pb.ListJobsRequest()).jobs) == 8
    # Another project's queue is its own.
    other = limited.caller(limited.user_token("submitter", "elsewhere"))
    other.upload(data)
    assert len(other.farm.Submit(pb.SubmitRequest(models=[pb.ModelRef(sha256=sha)],
                                                  device_profiles=[f"s{i}" for i in range(5)])).jobs) == 5
    assert limited.serving()


@pytest.mark.parametrize("request_kwargs, says", [
    ({"settings": pb.JobSettings(min_runs=20_000_000)}, "settings.min_runs is 20000000; the limit is 1000000"),
    ({"settings": pb.JobSettings(max_runs=2**31 - 1)}, "settings.max_runs is 2147483647; the limit is 1000000"),
    ({"max_attempts": 2**31 - 1}, "max_attempts is 2147483647; the limit is 10"),
    ({"settings": pb.JobSettings(sustained_seconds=1e12)}, "settings.sustained_seconds is 1000000000000.0; the limit is 86400"),
    ({"settings": pb.JobSettings(timeout_seconds=math.inf)}, "settings.timeout_seconds is Infinity"),
    ({"settings": pb.JobSettings(min_seconds=math.nan)}, "settings.min_seconds is NaN"),
    ({"constraints": [pb.Budget(name="latency.p50", max=math.nan)]}, "constraints[0].max is NaN"),
    ({"settings": pb.JobSettings(memory_limit_bytes=1 << 50)}, "settings.memory_limit_bytes"),
])
def test_a_job_asks_for_bounded_work(limited, model_sha, request_kwargs, says):
    request = pb.SubmitRequest(models=[pb.ModelRef(sha256=model_sha)], device_profiles=["rpi5"], **request_kwargs)
    err = refusal(lambda: limited.operator.farm.Submit(request))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and says in err.details(), err.details()


def test_lease_waits_are_numbers(limited):
    agent = limited.enrolled("waiter")
    started = time.monotonic()
    for wait, says in ((math.nan, "wait_seconds is NaN"), (-1.0, "must not be negative"),
                       (math.inf, "wait_seconds is Infinity")):
        err = refusal(lambda: agent.caller.agents.LeaseJob(pb.LeaseJobRequest(wait_seconds=wait), timeout=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and says in err.details()
    assert time.monotonic() - started < 5, "a NaN wait was held"


def test_oversize_and_malformed_messages_are_refused(limited):
    channel = limited.channel()
    # 17 MiB: over the controller's 16 MiB limit.
    big = pb.ReportResultRequest(result=pb.BenchmarkResult(warnings=["x" * (17 << 20)]))
    send = channel.unary_unary("/hilfarm.v1.AgentService/ReportResult",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=pb.ReportResultResponse.FromString)
    err = refusal(lambda: send(big, timeout=30))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    raw = channel.unary_unary("/hilfarm.v1.FarmService/ListJobs", request_serializer=lambda b: b,
                              response_deserializer=pb.ListJobsResponse.FromString)
    md = (("authorization", f"Bearer {limited.token}"),)
    for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05abc", b"\x0a\x02\xc3\x28", b"\x0f"):  # corrupt, short, bad UTF-8
        err = refusal(lambda: raw(garbage, metadata=md, timeout=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a valid message" in err.details()
    # Without a credential it is refused as such, before the message is looked at.
    assert refusal(lambda: raw(b"\xff", timeout=10)).code() == grpc.StatusCode.UNAUTHENTICATED
    assert limited.serving()


def test_names_never_become_paths(limited, models):
    user = limited.operator
    data = models["tflite"].read_bytes()
    target = limited.root / "escaped"
    sha = user.upload(data, fmt="tflite", filename=f"../../../../../../..{target}")
    assert not target.exists()
    stored = limited.root / "controller" / "artifacts" / sha[:2] / sha
    assert stored.read_bytes() == data
    assert user.farm.StatArtifact(pb.StatArtifactRequest(sha256=sha)).ref.filename.startswith("../")
    agent = limited.enrolled("walker")
    for digest in ("../../../etc/passwd", "..%2f..%2fetc%2fpasswd", "/etc/passwd" + "0" * 52):
        err = refusal(lambda: list(agent.caller.agents.DownloadArtifact(pb.DownloadArtifactRequest(sha256=digest))))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "64 hex digits" in err.details()
    err = refusal(lambda: user.farm.StatArtifact(pb.StatArtifactRequest(sha256="../" * 22)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_farm(request, tmp_path, pki):
    args = [] if request.param == "sqlite" else ["--db", request.getfixturevalue("postgres_url")]
    farm = SecureFarm(tmp_path / "farm", pki, args=args)
    yield farm
    farm.stop()


def test_text_the_database_cannot_hold_is_refused_before_it(backend_farm, models):
    """On PostgreSQL a NUL byte or an over-long name gave INTERNAL, and such a report could never
    be stored (the job stayed leased). Now each is INVALID_ARGUMENT, and the right report is."""
    farm = backend_farm
    enroll = farm.caller(farm.enrollment_token("rpi5", agent_id="", uses=5))
    for request, says in ((pb.EnrollRequest(agent_id="pi\x00", device_profile="rpi5"), "agent_id contains a NUL"),
                          (pb.EnrollRequest(agent_id="p" * 250, device_profile="rpi5"), "agent_id is 250 characters"),
                          (pb.EnrollRequest(agent_id="pi", device_profile="r" * 201), "device_profile is 201")):
        err = refusal(lambda: enroll.agents.Enroll(request))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and says in err.details(), err.details()
    sha = farm.operator.upload(models["onnx"].read_bytes())
    err = refusal(lambda: farm.operator.farm.Submit(pb.SubmitRequest(
        models=[pb.ModelRef(sha256=sha, name="m\x00.onnx")], device_profiles=["rpi5"])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "models[0].name contains a NUL" in err.details()
    job = farm.operator.farm.Submit(pb.SubmitRequest(models=[pb.ModelRef(sha256=sha)], device_profiles=["rpi5"])).jobs[0]
    agent = farm.enrolled("pi-1")
    lease = agent.lease()
    assert lease.job.id == job.id
    bad_progress = pb.ReportProgressRequest(lease_id=lease.lease_id, progress=pb.Progress(phase="warm\x00up"))
    err = refusal(lambda: agent.caller.agents.ReportProgress(bad_progress))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "progress.phase contains a NUL" in err.details()
    for failure, says in ((pb.Failure(category=pb.FAILURE_CATEGORY_RUNTIME_CRASH, message="m", detail="d\x00"),
                           "failure.detail contains a NUL"),
                          (pb.Failure(category=pb.FAILURE_CATEGORY_RUNTIME_CRASH, message="m" * 20000),
                           "failure.message is 20000 characters long; the limit is 16384")):
        err = refusal(lambda: agent.caller.agents.ReportResult(pb.ReportResultRequest(
            lease_id=lease.lease_id, job_id=job.id, attempt=1, failure=failure)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and says in err.details()
    # The job is not stuck: the agent's proper report is stored.
    ok = agent.caller.agents.ReportResult(pb.ReportResultRequest(
        lease_id=lease.lease_id, job_id=job.id, attempt=1,
        failure=pb.Failure(category=pb.FAILURE_CATEGORY_RUNTIME_CRASH, message="crashed", detail="d\ufffd")))
    assert ok.accepted
    assert farm.operator.farm.GetJob(pb.GetJobRequest(job_id=job.id)).state == pb.JOB_STATE_FAILED
    assert farm.serving()


def test_a_long_run_is_stored_after_the_work_is_done(make_farm, models):
    """The most runs a job may ask for, with the null runtime: the result is within what the
    controller accepts (before, a 20 MB result was refused after the work and the job failed as
    infrastructure)."""
    farm = make_farm()
    farm.start_agent("long", enroll_token=farm.enrollment_token("local", agent_id="long"))
    farm.wait_for_device("long")
    done = farm.cli("submit", str(models["onnx"]), "--device", "local", "--runtime", "null", "--runs", "1000000",
                    "--max-runs", "1000000", "--min-seconds", "0", "--max-seconds", "600", "--warmup", "0",
                    "--warmup-seconds", "0", "--warmup-max-seconds", "0.5", "--timeout", "600", "--json",
                    token=farm.token, timeout=60)
    job_id = json.loads(done.stdout)["jobs"][0]["id"]
    job = farm.wait_for_job(farm.operator, job_id, [pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED], timeout=600)
    assert job.state == pb.JOB_STATE_SUCCEEDED and job.attempt == 1, job.failure
    assert job.result.latency.count == 1_000_000 == len(job.result.latency.samples_ns)
    too_many = farm.cli("submit", str(models["onnx"]), "--device", "local", "--runs", "1000001", token=farm.token)
    assert too_many.returncode == 2 and "settings.min_runs is 1000001; the limit is 1000000" in too_many.stderr
