"""Leases over real gRPC: expiry and requeue, renewal, cancellation, idempotent reports."""
from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest
import sqlalchemy as sa

from hilfarm.controller.models import Job
from hilfarm.controller.server import Controller
from hilfarm.v1 import farm_pb2 as pb

from .conftest import onnx_bytes, sample_result


def wait_for(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def quick(make_farm):
    """A controller whose leases expire after half a second."""
    return make_farm(lease_seconds=0.5, heartbeat_interval=0.2)


def test_a_lost_agents_job_is_requeued_then_failed_when_attempts_run_out(quick):
    sha = quick.upload(onnx_bytes(100, b"\x03"))
    (job,) = quick.submit([sha], ["rpi5"]).jobs
    previous = None
    for attempt, name in enumerate(("pi-1", "pi-2", "pi-3"), start=1):
        agent = quick.agent(name)
        agent.register()
        lease = agent.lease(wait=2)
        assert lease.job.id == job.id and lease.job.attempt == attempt and lease.job.max_attempts == 3
        assert lease.expires_at > time.time()
        if previous is not None:
            # A later attempt has started: the lost lease is over for good.
            lost_agent, lost_lease = previous
            assert lost_agent.progress(lost_lease), "the stale lease is told to stop"
            stale = lost_agent.report(lost_lease)
            assert not stale.accepted and "stale" in stale.message
        # The agent goes silent: no heartbeat, no progress.
        if attempt < 3:
            requeued = wait_for(lambda: quick.job(job.id).state == pb.JOB_STATE_QUEUED and quick.job(job.id),
                                what="requeue")
            assert requeued.attempt == attempt and not requeued.agent_id
        previous = (agent, lease)
    failed = wait_for(lambda: quick.job(job.id).state == pb.JOB_STATE_FAILED and quick.job(job.id), what="failure")
    assert failed.failure.category == pb.FAILURE_CATEGORY_INFRASTRUCTURE
    assert "agent pi-3 stopped responding during attempt 3 of 3" in failed.failure.message
    assert failed.finished_at > 0


def test_a_late_result_of_a_lost_lease_is_stored_and_accepted_only_when_stored(quick):
    """The agent was cut off longer than its lease but finished; nobody started the job again."""
    sha = quick.upload(onnx_bytes(100, b"\x07"))
    (job,) = quick.submit([sha], ["rpi5"], max_attempts=1).jobs
    agent = quick.agent("pi-1")
    agent.register()
    lease = agent.lease(wait=2)
    wait_for(lambda: quick.job(job.id).state == pb.JOB_STATE_FAILED, what="the lease to be lost")
    late = agent.report(lease, result=sample_result([7, 8, 9]))
    assert late.accepted and "stored the result" in late.message
    stored = quick.job(job.id)
    assert stored.state == pb.JOB_STATE_SUCCEEDED and list(stored.result.latency.samples_ns) == [7, 8, 9]
    assert not stored.HasField("failure")


def test_heartbeats_keep_a_lease_alive(quick):
    sha = quick.upload(onnx_bytes(100, b"\x04"))
    quick.submit([sha], ["rpi5"])
    agent = quick.agent("pi-1")
    agent.register()
    lease = agent.lease()
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        assert agent.heartbeat(busy=True)
        time.sleep(0.1)
    assert quick.job(lease.job.id).state == pb.JOB_STATE_LEASED
    assert agent.report(lease).accepted


def test_progress_marks_the_job_running_and_keeps_the_lease(quick):
    sha = quick.upload(onnx_bytes(100, b"\x05"))
    quick.submit([sha], ["rpi5"])
    agent = quick.agent("pi-1")
    agent.register()
    lease = agent.lease()
    for i in range(12):
        assert agent.progress(lease, runs_done=i) is False
        time.sleep(0.1)
    job = quick.job(lease.job.id)
    assert job.state == pb.JOB_STATE_RUNNING and job.progress.runs_done == 11 and job.progress.updated_at > 0
    assert job.progress.phase == "measuring"


def test_a_result_report_is_idempotent_by_attempt(farm, model):
    farm.submit([model], ["rpi5"])
    agent = farm.agent("pi-1")
    agent.register()
    lease = agent.lease()
    first = agent.report(lease, result=sample_result([5, 6, 7]))
    assert first.accepted
    repeat = agent.report(lease, result=sample_result([5, 6, 7]))
    assert repeat.accepted and "already stored" in repeat.message
    other_attempt = agent.report(lease, attempt=2)
    assert not other_attempt.accepted and "attempt 2" in other_attempt.message
    job = farm.job(lease.job.id)
    assert job.state == pb.JOB_STATE_SUCCEEDED
    assert list(job.result.latency.samples_ns) == [5, 6, 7]
    assert job.result == sample_result([5, 6, 7])


def test_a_failure_report_is_stored_with_whose_fault_it_is(farm, model):
    farm.submit([model], ["rpi5"])
    agent = farm.agent("pi-1")
    agent.register()
    lease = agent.lease()
    failure = pb.Failure(category=pb.FAILURE_CATEGORY_UNSUPPORTED_OP, message="tflite lacks op FlexConv", detail="...")
    assert agent.report(lease, failure=failure).accepted
    job = farm.job(lease.job.id)
    assert job.state == pb.JOB_STATE_FAILED and job.failure == failure and not job.HasField("result")
    # The agent is free again.
    devices = farm.farm.ListDevices(pb.ListDevicesRequest()).devices
    assert [(d.state, d.current_job_id) for d in devices] == [("idle", "")]


def test_cancelling_a_running_job_reaches_the_agent(farm, model):
    (job,) = farm.submit([model], ["rpi5"]).jobs
    agent = farm.agent("pi-1")
    agent.register()
    lease = agent.lease()
    assert agent.progress(lease) is False
    cancelled = farm.farm.CancelJob(pb.CancelJobRequest(job_id=job.id))
    assert cancelled.state == pb.JOB_STATE_CANCELLED and cancelled.finished_at > 0
    assert agent.progress(lease) is True
    late = agent.report(lease)
    assert not late.accepted and "cancelled" in late.message
    assert not farm.job(job.id).HasField("result")


def test_a_restarted_agent_gives_its_job_back(farm, model):
    (job,) = farm.submit([model], ["rpi5"]).jobs
    agent = farm.agent("pi-1")
    agent.register()
    first = agent.lease()
    agent.register()  # the agent process restarted and forgot its job
    assert farm.job(job.id).state == pb.JOB_STATE_QUEUED
    second = agent.lease()
    assert second.job.id == job.id and second.job.attempt == 2 and second.lease_id != first.lease_id
    assert not agent.report(first).accepted
    assert agent.report(second).accepted


def test_agent_calls_from_an_unknown_agent(farm):
    ghost = farm.agent("ghost")
    assert ghost.heartbeat() is False, "an unknown agent is told to register again"
    with pytest.raises(grpc.RpcError) as err:
        ghost.lease()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "Register" in err.value.details()


def test_a_report_without_an_outcome_is_refused(farm, model):
    farm.submit([model], ["rpi5"])
    agent = farm.agent("pi-1")
    agent.register()
    lease = agent.lease()
    with pytest.raises(grpc.RpcError) as err:
        farm.agents.ReportResult(pb.ReportResultRequest(agent_id="pi-1", lease_id=lease.lease_id,
                                                        job_id=lease.job.id, attempt=1), metadata=agent.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "neither a result nor a failure" in err.value.details()


def test_register_validates_and_tells_the_agent_its_intervals(make_farm):
    farm = make_farm(lease_seconds=12, heartbeat_interval=3)
    response = farm.agent("pi-1").register()
    assert (response.heartbeat_interval_seconds, response.lease_seconds) == (3, 12)
    with pytest.raises(grpc.RpcError) as err:
        farm.agent("pi-2", profile="").register()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "without a device profile" in err.value.details()


def test_a_job_is_requeued_and_finished_through_the_controller_on_each_backend(make_farm, db_url):
    farm = make_farm(db_url=db_url, lease_seconds=0.5, heartbeat_interval=0.2)
    sha = farm.upload(onnx_bytes(100, b"\x06"))
    (job,) = farm.submit([sha], ["rpi5"]).jobs
    lost, kept = farm.agent("pi-1"), farm.agent("pi-2")
    lost.register()
    kept.register()
    assert lost.lease().job.id == job.id
    wait_for(lambda: farm.job(job.id).state == pb.JOB_STATE_QUEUED, what="requeue")
    lease = kept.lease(wait=2)
    assert lease.job.attempt == 2
    assert kept.progress(lease) is False
    assert kept.report(lease).accepted
    done = farm.job(job.id)
    assert done.state == pb.JOB_STATE_SUCCEEDED and done.agent_id == "pi-2" and done.result == sample_result()


FIRST_READ = """
import sys
from pathlib import Path
from hilfarm.controller.server import Controller
controller = Controller(data_dir=Path(sys.argv[1]))
job = controller.parts.jobs.get_job(sys.argv[2])  # this process's first read of a job
print(job.id, job.state)
controller.parts.database.close()
"""


def test_a_fresh_process_whose_first_read_is_a_job_reads_it(make_farm, tmp_path):
    """A restarted controller answering GetJob before anything else read a job through the ORM
    (its attributes are set up at the ORM's first query) once failed with AttributeError."""
    farm = make_farm(data_dir=tmp_path / "controller")
    model = farm.upload(onnx_bytes(4096))
    (job,) = farm.submit([model], ["rpi5"]).jobs
    farm.controller.stop(grace=0.5)
    child = subprocess.run([sys.executable, "-c", FIRST_READ, str(tmp_path / "controller"), job.id],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == [job.id, "queued"]


def test_a_lease_that_ran_out_while_the_controller_was_away_is_lost_before_it_answers_a_call(make_farm, tmp_path):
    """With no restart grace, a restarted controller takes back a lease that expired during its
    outage before it serves a call, not at its reaper's first pass a moment later: the agent's
    report then always arrives as the late report of a lost lease, and is still stored."""
    data_dir = tmp_path / "controller"
    first = make_farm(data_dir=data_dir)
    sha = first.upload(onnx_bytes(100, b"\x0b"))
    (job,) = first.submit([sha], ["rpi5"], max_attempts=1).jobs
    agent = first.agent("pi-1")
    agent.register()
    lease = agent.lease(wait=2)
    first.controller.stop(grace=0.5)
    # The outage outlasted the lease: it ran out while nothing was serving.
    away = Controller(data_dir=data_dir)
    with away.parts.database.write_connection() as conn:
        conn.execute(sa.update(Job.__table__).where(Job.__table__.c.id == job.id)
                     .values(lease_expires_at=time.time() - 1))
    away.parts.database.close()

    second = make_farm(data_dir=data_dir, restart_grace=0)
    lost = second.job(job.id)  # the first call the restarted controller answers
    assert lost.state == pb.JOB_STATE_FAILED, pb.JobState.Name(lost.state)
    assert "agent pi-1 stopped responding during attempt 1 of 1" in lost.failure.message
    agent.farm = second
    late = agent.report(lease, result=sample_result([4, 5, 6]))
    assert late.accepted and "stored the result" in late.message
    stored = second.job(job.id)
    assert stored.state == pb.JOB_STATE_SUCCEEDED and stored.attempt == 1 and not stored.HasField("failure")
