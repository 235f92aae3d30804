"""An overloaded controller keeps serving what it holds: new submissions are refused (and the
client sends them again) while database work stands in the queue, and work whose caller gave up
while it waited is not started (a lease nobody hears of would cost the job an attempt)."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from hilfarm.client import FarmClient, Upload
from hilfarm.contract import OVERLOAD_RETRY_AFTER_KEY
from hilfarm.controller.server import OVERLOAD_QUEUE_DELAY_SECONDS, QUEUE_DELAY_WINDOW_SECONDS, DatabaseQueue
from hilfarm.v1 import farm_pb2 as pb

from ..cli.pseudo_terminal import Terminal
from .conftest import onnx_bytes, sample_result, wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _start(queue: DatabaseQueue, clock: FakeClock, waited: float) -> None:
    """One call (submitted before) that waited ``waited`` seconds for a thread starts now."""
    call = queue.submitted()
    call.submitted_at = clock.now - waited
    queue.run(call, lambda: None)


def test_the_queue_delay_is_the_shortest_wait_of_a_window_so_a_burst_that_drains_does_not_count():
    clock = FakeClock()
    queue = DatabaseQueue(clock=clock, window=1.0)
    assert queue.standing_delay() == 0.0

    # A burst: the first calls waited long, then the queue drained within the window (the
    # window closes with the fifth start, one second in).
    for waited in (0.9, 0.6, 0.3, 0.001, 0.002):
        clock.now += 0.2
        _start(queue, clock, waited)
    assert queue.standing_delay() == pytest.approx(0.001)

    # A queue that never drains: every call of the next window waited at least 0.5 s.
    for i in range(6):
        clock.now += 0.2
        _start(queue, clock, 0.5 + 0.01 * i)
    assert queue.standing_delay() == pytest.approx(0.5)

    # Idle for two windows: nothing stands in the queue any more.
    clock.now += 2.5
    assert queue.standing_delay() == 0.0

    # Calls wait and none starts: the time since the last start is the delay.
    stuck = queue.submitted()
    clock.now += 0.7
    assert queue.standing_delay() == pytest.approx(3.2)

    # Its caller went away before it started (the pool dropped it): nothing waits any more, and
    # a late start or a second withdrawal does not count it twice.
    queue.withdraw(stuck)
    queue.withdraw(stuck)
    assert queue.standing_delay() == 0.0
    again = queue.submitted()
    queue.run(again, lambda: None)
    queue.withdraw(again)
    clock.now += 1.0
    assert queue.standing_delay() == 0.0


def _block_the_database_pool(farm) -> threading.Event:  # type: ignore[no-untyped-def]
    """Occupy the controller's only database thread until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)

    farm.controller.db_executor.submit(hold)
    assert started.wait(5)
    return release


def test_a_call_whose_deadline_passed_in_the_queue_is_not_started(make_farm):
    farm = make_farm(db_workers=1)
    model = farm.upload(onnx_bytes(4096))
    agent = farm.agent("a1")
    agent.register()
    queued = farm.submit([model], ["rpi5"]).jobs[0]
    agent.heartbeat()  # the agent's credential is remembered: its calls need no database thread to admit

    release = _block_the_database_pool(farm)
    try:
        with pytest.raises(grpc.RpcError) as submit:
            farm.farm.Submit(pb.SubmitRequest(models=[pb.ModelRef(sha256=model)], device_profiles=["rpi5"]),
                             timeout=0.5)
        assert submit.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(grpc.RpcError) as lease:
            farm.agents.LeaseJob(pb.LeaseJobRequest(agent_id="a1", wait_seconds=0), metadata=agent.metadata,
                                 timeout=0.5)
        assert lease.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        release.set()

    # Both waited behind the blocked thread past their deadlines: neither was done.
    jobs = farm.farm.ListJobs(pb.ListJobsRequest(), timeout=10).jobs
    assert [j.id for j in jobs] == [queued.id]
    assert jobs[0].state == pb.JOB_STATE_QUEUED and jobs[0].attempt == 0
    # The job is still there for an agent that does wait for the answer.
    lease_now = agent.lease()
    assert lease_now is not None and lease_now.job.id == queued.id and lease_now.job.attempt == 1
    # The calls dropped from the queue no longer count as waiting: an idle controller takes work.
    time.sleep(OVERLOAD_QUEUE_DELAY_SECONDS + 0.2)
    assert len(farm.submit([model], ["rpi5"]).jobs) == 1


def test_a_submission_is_refused_while_the_queue_stands_and_the_client_sends_it_again(make_farm):
    farm = make_farm(db_workers=1)
    data = onnx_bytes(4096)
    model = farm.upload(data)

    release = _block_the_database_pool(farm)
    waiting = threading.Thread(target=lambda: farm.farm.ListDevices(pb.ListDevicesRequest(), timeout=30))
    waiting.start()
    try:
        time.sleep(OVERLOAD_QUEUE_DELAY_SECONDS + 0.2)  # the listing waits, and nothing starts
        with pytest.raises(grpc.RpcError) as refused:
            farm.farm.Submit(pb.SubmitRequest(models=[pb.ModelRef(sha256=model)], device_profiles=["rpi5"]),
                             timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "overloaded" in refused.value.details() and "nothing was submitted" in refused.value.details()
        retry_after = dict(refused.value.trailing_metadata())[OVERLOAD_RETRY_AFTER_KEY]
        assert 500 <= int(retry_after) <= 5000

        # The CLI's client sends a refused submission again until the controller takes it.
        outcome: dict = {}

        def submit_with_the_client() -> None:
            with FarmClient(farm.controller.address) as client:
                upload = Upload(model, len(data), "onnx", "model.onnx", 0)
                outcome["run"] = client.submit([upload], ["rpi5"], pb.JobSettings())

        submitter = threading.Thread(target=submit_with_the_client)
        submitter.start()
        time.sleep(1.0)
        assert "run" not in outcome  # refused while the queue still stands
    finally:
        release.set()
    waiting.join(30)
    submitter.join(60)
    assert not submitter.is_alive()
    run = outcome["run"]
    # Exactly one run was stored: the refused submissions did nothing.
    wait_for(lambda: farm.farm.ListJobs(pb.ListJobsRequest(), timeout=10).jobs, 10, "the listing")
    assert [j.run_id for j in farm.farm.ListJobs(pb.ListJobsRequest(), timeout=10).jobs] == [run.id]


def test_with_the_database_work_on_the_event_loop_a_submission_is_refused_while_the_loop_runs_late(make_farm,
                                                                                                   monkeypatch):
    # SQLite's default: no database pool, so no queue of database work to measure. Listings whose
    # database work takes 0.4 s each, asked back to back, keep the event loop busy: every call
    # then waits for the loop longer than the overload limit, and a submission is refused.
    farm = make_farm()
    assert farm.controller.parts.db_workers == 0
    model = farm.upload(onnx_bytes(4096))
    scheduler = farm.controller.parts.scheduler
    real_devices = scheduler.devices
    slow = threading.Event()
    slow.set()

    def devices():  # type: ignore[no-untyped-def]
        if slow.is_set():
            time.sleep(OVERLOAD_QUEUE_DELAY_SECONDS + 0.15)
        return real_devices()

    monkeypatch.setattr(scheduler, "devices", devices)

    def list_devices() -> None:
        while slow.is_set():
            farm.farm.ListDevices(pb.ListDevicesRequest(), timeout=30)

    listers = [threading.Thread(target=list_devices) for _ in range(2)]
    for lister in listers:
        lister.start()
    try:
        time.sleep(2 * QUEUE_DELAY_WINDOW_SECONDS)
        with pytest.raises(grpc.RpcError) as refused:
            farm.farm.Submit(pb.SubmitRequest(models=[pb.ModelRef(sha256=model)], device_profiles=["rpi5"]),
                             timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "overloaded" in refused.value.details() and "for the event loop" in refused.value.details()
    finally:
        slow.clear()
        for lister in listers:
            lister.join(30)
    assert farm.farm.ListJobs(pb.ListJobsRequest(), timeout=10).jobs == []
    # The loop keeps time again: after a window without delay, submissions are taken.
    time.sleep(2 * QUEUE_DELAY_WINDOW_SECONDS + 0.2)
    assert len(farm.submit([model], ["rpi5"]).jobs) == 1


@pytest.mark.parametrize("cols", [80, 120])
def test_a_person_sees_a_refused_submission_sent_again_as_one_readable_message(make_farm, tmp_path, cols):
    """`hilfarm submit` in a pseudo-terminal while every database call waits: the refusal is
    said in the CLI's own words, wrapped at words to the terminal, and the job is stored once."""
    farm = make_farm(db_workers=1)
    model = tmp_path / "model.onnx"
    model.write_bytes(onnx_bytes(4096))

    # Two sleeps always queued ahead in the controller's only database thread: every call waits
    # at least one of them, longer than the overload limit, so the queue stands.
    stop = threading.Event()

    def occupy() -> None:
        pending = [farm.controller.db_executor.submit(time.sleep, OVERLOAD_QUEUE_DELAY_SECONDS + 0.1)
                   for _ in range(2)]
        while not stop.is_set():
            pending.pop(0).result()
            pending.append(farm.controller.db_executor.submit(time.sleep, OVERLOAD_QUEUE_DELAY_SECONDS + 0.1))

    occupier = threading.Thread(target=occupy)
    occupier.start()
    term = Terminal([str(Path(sys.executable).with_name("hilfarm")), "--controller", farm.controller.address,
                     "submit", str(model), "--device", "rpi5", "--queue"], cols, rows=40)
    try:
        term.expect("overloaded")
    finally:
        stop.set()
        occupier.join(30)
    code = term.finish(timeout=60)
    lines = term.screen()
    assert code == 0, lines

    said = [i for i, line in enumerate(lines) if line.startswith("hilfarm: the controller is overloaded")]
    assert said, lines
    first = said[0]
    message = lines[first:first + 1] + [l for l in lines[first + 1:first + 3] if l.startswith("  ")]
    assert " ".join(l.strip() for l in message).startswith(
        "hilfarm: the controller is overloaded and took nothing; sending the submission again in"), lines
    assert not any("WARNING" in line or "hilfarm.client" in line for line in lines), lines
    if cols == 120:
        assert len(message) == 1, lines
    # Refused submissions did nothing: the one accepted is the only job.
    jobs = farm.farm.ListJobs(pb.ListJobsRequest(), timeout=10).jobs
    assert len(jobs) == 1 and any(line.startswith(f"job {jobs[0].id[:8]}") for line in lines), lines


def test_a_slow_regression_analysis_does_not_hold_up_the_agents(make_farm, monkeypatch):
    """On SQLite the database work of agents and submissions runs on the event loop. A history a
    person asked for, taking seconds to compute, runs in the analyses' own pool: meanwhile a
    job is submitted, leased, reported on and stored, each answered at once."""
    farm = make_farm()
    assert farm.controller.parts.db_workers == 0
    rpcs = farm.controller.parts.regression_rpcs
    analysing, finish_analysis = threading.Event(), threading.Event()
    real_history = rpcs.history

    def slow_history(request):  # type: ignore[no-untyped-def]
        analysing.set()
        finish_analysis.wait(30)  # a long computation, in the thread that runs it
        return real_history(request)

    monkeypatch.setattr(rpcs, "history", slow_history)
    model = farm.upload(onnx_bytes(4096))
    agent = farm.agent("a1")
    agent.register()
    history = farm.farm.GetHistory.future(pb.HistoryRequest(model_name="model.onnx", device_profile="rpi5"),
                                          timeout=60)
    try:
        assert analysing.wait(10)
        run = farm.farm.Submit(pb.SubmitRequest(models=[pb.ModelRef(sha256=model)], device_profiles=["rpi5"]),
                               timeout=5)
        lease = farm.agents.LeaseJob(pb.LeaseJobRequest(agent_id="a1", wait_seconds=0), metadata=agent.metadata,
                                     timeout=5).lease
        assert lease.job.id == run.jobs[0].id
        agent.leases.append(lease)
        assert not farm.agents.ReportProgress(
            pb.ReportProgressRequest(agent_id="a1", lease_id=lease.lease_id, progress=pb.Progress(phase="measuring")),
            metadata=agent.metadata, timeout=5).cancel
        stored = farm.agents.ReportResult(
            pb.ReportResultRequest(agent_id="a1", lease_id=lease.lease_id, job_id=lease.job.id,
                                   attempt=lease.job.attempt, result=sample_result()),
            metadata=agent.metadata, timeout=5)
        assert stored.accepted, stored.message
        assert not history.done()  # all of it happened while the analysis was still running
    finally:
        finish_analysis.set()
    assert history.result() is not None
    assert farm.job(run.jobs[0].id).state == pb.JOB_STATE_SUCCEEDED
