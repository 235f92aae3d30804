"""The contract of the job, agent and artifact repositories, run against every backend (a SQLite
file and a real PostgreSQL server)."""
from __future__ import annotations

import threading
import time
import uuid
from typing import List

import pytest
import sqlalchemy as sa

from hilfarm.controller import wire
from hilfarm.controller.errors import AmbiguousId, FailedPrecondition, NotFound
from hilfarm.controller.models import Artifact, Failure, FailureCategory, Job, JobState, Run, pin_tag
from hilfarm.controller.app import Repositories, open_repositories
from hilfarm.controller.database import Database
from hilfarm.controller.job_repository import LeaseAttempt
from hilfarm.v1 import farm_pb2 as pb

from .test_wire import populate

SHA = "a" * 64
T0 = 1_700_000_000.0


ONNX = {"runtimes": [{"name": "onnxruntime", "version": "1.22", "execution_providers": ["CPUExecutionProvider"]}],
        "cpu_cores": 4}


def lease(store: Repositories, agent_id: str, *, now: float, lease_seconds: float):
    """The job the agent leases now, or None."""
    return store.jobs.lease_next(agent_id, now=now, lease_seconds=lease_seconds).job


def add_artifact(store: Repositories, sha: str = SHA) -> None:
    store.artifact_records.add_artifact(Artifact(sha256=sha, size_bytes=5 << 30, format="onnx", filename="net.onnx", created_at=T0))


def add_run(store: Repositories, profiles=("rpi5",), *, created_at: float = T0, max_attempts: int = 3,
            tags=(), settings=None) -> List[Job]:
    run = Run(id=uuid.uuid4().hex, created_at=created_at)
    jobs = [
        Job(id=uuid.uuid4().hex, run_id=run.id, model_sha256=SHA, model_name="net.onnx", model_format="onnx",
            device_profile=p, settings=settings or {"min_runs": 10}, required_tags=list(tags),
            max_attempts=max_attempts, created_at=created_at + i * 1e-6)
        for i, p in enumerate(profiles)
    ]
    store.jobs.add_run(run, jobs)
    return jobs


def register(store: Repositories, agent_id: str, profile: str = "rpi5", now: float = T0):
    return store.agents.register_agent(agent_id, profile=profile, tags=["lab"], capabilities=ONNX,
                                hostname="h", version="0.1", now=now)


@pytest.fixture
def stored(store: Repositories) -> Repositories:
    add_artifact(store)
    return store


def test_create_schema_is_idempotent_and_keeps_rows(stored: Repositories, db_url: str):
    jobs = add_run(stored)
    stored.database.migrate()
    other = open_repositories(Database(db_url))
    other.database.migrate()
    try:
        assert other.jobs.get_job(jobs[0].id).settings == {"min_runs": 10}
        assert other.artifact_records.get_artifact(SHA).size_bytes == 5 << 30  # beyond 32 bits
    finally:
        other.database.close()


def test_a_digest_is_recorded_once_and_the_first_record_kept(stored: Repositories):
    again = Artifact(sha256=SHA, size_bytes=1, format="tflite", filename="other", created_at=T0 + 5)
    assert stored.artifact_records.add_artifact(again) is False
    assert stored.artifact_records.get_artifact(SHA).filename == "net.onnx"
    assert stored.artifact_records.get_artifact("b" * 64) is None


def test_runs_and_jobs_read_back_as_stored(stored: Repositories):
    jobs = add_run(stored, ("rpi5", "jetson", "x86"), tags=("usb",))
    run, read = stored.jobs.get_run(jobs[0].run_id)
    assert [j.device_profile for j in read] == ["rpi5", "jetson", "x86"]
    assert read[0].required_tags == ["usb"] and read[0].job_state is JobState.QUEUED and read[0].attempt == 0
    with pytest.raises(NotFound, match="run 'nope'"):
        stored.jobs.get_run("nope")
    with pytest.raises(NotFound, match="job 'nope'"):
        stored.jobs.get_job("nope")


def test_list_jobs_newest_first_filtered_and_limited(stored: Repositories):
    old = add_run(stored, ("a", "b"), created_at=T0)
    new = add_run(stored, ("c",), created_at=T0 + 10)
    assert [j.id for j in stored.jobs.list_jobs()] == [new[0].id, old[1].id, old[0].id]
    assert [j.id for j in stored.jobs.list_jobs(run_id=old[0].run_id)] == [old[1].id, old[0].id]
    assert [j.id for j in stored.jobs.list_jobs(limit=1)] == [new[0].id]
    stored.jobs.cancel_job(old[0].id, now=T0 + 20)
    assert [j.id for j in stored.jobs.list_jobs(states=[JobState.CANCELLED])] == [old[0].id]
    assert len(stored.jobs.list_jobs(states=[JobState.QUEUED, JobState.CANCELLED])) == 3


def test_lease_takes_the_oldest_fitting_job_of_the_agents_profile(stored: Repositories):
    register(stored, "pi-1")
    other_profile = add_run(stored, ("jetson",), created_at=T0)
    older = add_run(stored, ("rpi5",), created_at=T0 + 1, tags=("camera",))
    newer = add_run(stored, ("rpi5",), created_at=T0 + 2)
    job = lease(stored, "pi-1", now=T0 + 3, lease_seconds=30)  # pi-1 has no camera
    assert job.id == newer[0].id and job.job_state is JobState.LEASED
    assert (job.agent_id, job.attempt, job.lease_expires_at) == ("pi-1", 1, T0 + 33)
    assert job.lease_id and stored.agents.get_agent("pi-1").busy
    assert stored.jobs.get_job(other_profile[0].id).job_state is JobState.QUEUED
    assert stored.jobs.get_job(older[0].id).job_state is JobState.QUEUED
    assert stored.jobs.active_jobs_by_agent() == {"pi-1": newer[0].id}


def test_a_lease_says_whether_another_queued_job_fits_the_agent(stored: Repositories):
    """LeaseAttempt.another_fits, read by the statement that takes the job: jobs of another
    profile, or that need a tag the agent lacks, are not work it could take next."""
    register(stored, "pi-1")
    add_run(stored, ("jetson",), created_at=T0)
    add_run(stored, ("rpi5",), created_at=T0 + 1, tags=("camera",))
    first = add_run(stored, ("rpi5",), created_at=T0 + 2)
    second = add_run(stored, ("rpi5",), created_at=T0 + 3, tags=("lab",))
    attempt = stored.jobs.lease_next("pi-1", now=T0 + 4, lease_seconds=30)
    assert attempt.job.id == first[0].id and attempt.another_fits is True
    assert "another_fits" not in vars(attempt.job), "the flag is not a column of the job"
    stored.jobs.record_result("pi-1", attempt.job.lease_id, attempt.job.id, 1, result={"ok": True}, failure=None,
                              now=T0 + 5)
    attempt = stored.jobs.lease_next("pi-1", now=T0 + 6, lease_seconds=30)
    assert attempt.job.id == second[0].id and attempt.another_fits is False
    stored.jobs.record_result("pi-1", attempt.job.lease_id, attempt.job.id, 1, result={"ok": True}, failure=None,
                              now=T0 + 7)
    attempt = stored.jobs.lease_next("pi-1", now=T0 + 8, lease_seconds=30)
    assert attempt.job is None and attempt.more_queued is True  # the camera job is queued, not for it


def test_a_job_pinned_to_an_agent_goes_to_that_agent_only(stored: Repositories):
    """A required tag agent:<id> is every agent's own without declaring it: the pinned job waits
    for that agent (it may need the agent's other tags too), whoever asks first."""
    for agent_id in ("pi-1", "pi-2"):
        register(stored, agent_id)
    pinned = add_run(stored, ("rpi5",), created_at=T0, tags=(pin_tag("pi-2"), "lab"))
    assert lease(stored, "pi-1", now=T0 + 1, lease_seconds=30) is None
    job = lease(stored, "pi-2", now=T0 + 2, lease_seconds=30)
    assert job is not None and job.id == pinned[0].id and job.agent_id == "pi-2"
    needs_more = add_run(stored, ("rpi5",), created_at=T0 + 3, tags=(pin_tag("pi-1"), "camera"))
    assert lease(stored, "pi-1", now=T0 + 4, lease_seconds=30) is None, "pi-1 has no camera"
    assert stored.jobs.get_job(needs_more[0].id).job_state is JobState.QUEUED


def test_lease_for_an_unregistered_agent_is_refused(stored: Repositories):
    with pytest.raises(FailedPrecondition, match="must call Register"):
        lease(stored, "ghost", now=T0, lease_seconds=30)


def test_concurrent_leases_never_hand_out_a_job_twice(stored: Repositories):
    for i in range(24):
        add_run(stored, ("rpi5",), created_at=T0 + i)
    agents = [f"pi-{i}" for i in range(4)]
    for a in agents:
        register(stored, a)
    leased: List[str] = []
    lock = threading.Lock()
    errors: List[BaseException] = []

    def work(agent_id: str) -> None:
        try:
            while True:
                job = lease(stored, agent_id, now=time.time(), lease_seconds=30)
                if job is None:
                    return
                with lock:
                    leased.append(job.id)
                ok, _ = stored.jobs.record_result(agent_id, job.lease_id, job.id, job.attempt,
                                             result={"warnings": ["x"]}, failure=None, now=time.time())
                assert ok
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(leased) == 24 and len(set(leased)) == 24


def test_heartbeat_renews_the_agents_leases(stored: Repositories):
    register(stored, "pi-1")
    add_run(stored)
    job = lease(stored, "pi-1", now=T0, lease_seconds=30)
    assert stored.agents.heartbeat("pi-1", busy=True, now=T0 + 20, lease_seconds=30)
    assert stored.jobs.get_job(job.id).lease_expires_at == T0 + 50
    assert stored.jobs.expire_leases(now=T0 + 40) == []
    assert stored.agents.heartbeat("ghost", busy=False, now=T0, lease_seconds=30) is False


def test_a_batch_of_contact_marks_agents_seen_renews_leases_and_names_the_registered_ones(stored: Repositories):
    """record_contact, what the heartbeat batcher writes: beating agents are marked seen with
    their busy flag and their leases renewed, agents only waiting in a long-poll are marked seen,
    and the registered ones among the beating are answered. On PostgreSQL the batch is one
    statement that commits by itself, and an agent row another transaction holds is skipped
    (that transaction marks the agent itself), without waiting for it."""
    for agent in ("pi-1", "pi-2", "pi-3"):
        register(stored, agent)
    add_run(stored)
    job = lease(stored, "pi-1", now=T0, lease_seconds=30)
    written: List[set] = []
    statements = _statements_of(stored, lambda: written.append(stored.agents.record_contact(
        {"pi-1": True, "pi-2": False, "ghost": True}, ["pi-3", "pi-1"], now=T0 + 20, lease_seconds=30)))
    assert written == [{"pi-1", "pi-2"}]
    assert stored.jobs.get_job(job.id).lease_expires_at == T0 + 50
    agents = {a: stored.agents.get_agent(a) for a in ("pi-1", "pi-2", "pi-3")}
    assert {a: (agent.last_seen, agent.busy) for a, agent in agents.items()} == {
        "pi-1": (T0 + 20, True), "pi-2": (T0 + 20, False), "pi-3": (T0 + 20, False)}
    assert stored.agents.get_agent("ghost") is None
    if not stored.jobs.db.is_postgresql:
        return
    assert len(statements) == 1, statements
    engine = sa.create_engine(stored.jobs.db.engine.url)
    answers: List[set] = []
    try:
        with engine.connect() as other:
            other.execute(sa.text("SELECT id FROM agents WHERE id = 'pi-2' FOR UPDATE"))
            batch = threading.Thread(target=lambda: answers.append(stored.agents.record_contact(
                {"pi-1": False, "pi-2": True}, [], now=T0 + 40, lease_seconds=30)))
            batch.start()
            batch.join(30)
            waited = batch.is_alive()  # waiting for the lock, which is held until the rollback
            other.rollback()
            batch.join(30)
    finally:
        engine.dispose()
    assert not waited and answers == [{"pi-1", "pi-2"}]
    assert (stored.agents.get_agent("pi-1").last_seen, stored.agents.get_agent("pi-1").busy) == (T0 + 40, False)
    assert stored.agents.get_agent("pi-2").last_seen == T0 + 20


def test_expired_leases_requeue_until_attempts_run_out(stored: Repositories):
    register(stored, "pi-1")
    (job,) = add_run(stored, max_attempts=2)
    now = T0
    for attempt in (1, 2):
        leased = lease(stored, "pi-1", now=now, lease_seconds=30)
        assert leased.attempt == attempt
        assert stored.jobs.expire_leases(now=now + 29) == []
        (changed,) = stored.jobs.expire_leases(now=now + 31)
        assert changed[0].id == job.id
        now += 100
    final = stored.jobs.get_job(job.id)
    assert final.job_state is JobState.FAILED and final.finished_at == T0 + 131
    assert final.failure.category is FailureCategory.INFRASTRUCTURE
    assert "agent pi-1 stopped responding during attempt 2 of 2" in final.failure.message


def test_a_requeued_job_has_no_lease_and_a_late_report_of_a_later_started_attempt_is_refused(stored: Repositories):
    register(stored, "pi-1")
    register(stored, "pi-2")
    (job,) = add_run(stored)
    leased = lease(stored, "pi-1", now=T0, lease_seconds=1)
    stored.jobs.expire_leases(now=T0 + 2)
    queued = stored.jobs.get_job(job.id)
    assert queued.job_state is JobState.QUEUED and queued.lease_id is None and queued.agent_id is None
    again = lease(stored, "pi-2", now=T0 + 3, lease_seconds=30)
    assert again.attempt == 2
    cancel, why = stored.jobs.record_progress("pi-1", leased.lease_id, {"runs_done": 1}, now=T0 + 3, lease_seconds=1)
    assert cancel and "not held" in why
    ok, message = stored.jobs.record_result("pi-1", leased.lease_id, job.id, 1, result={}, failure=None, now=T0 + 3)
    assert not ok and "stale" in message
    assert stored.jobs.get_job(job.id).agent_id == "pi-2" and stored.jobs.get_job(job.id).job_state is JobState.LEASED


def test_the_late_result_of_a_lost_lease_is_stored_when_no_later_attempt_started(stored: Repositories):
    """The agent was away longer than its lease (a network cut, a controller outage) but finished."""
    register(stored, "pi-1")
    (job,) = add_run(stored)
    leased = lease(stored, "pi-1", now=T0, lease_seconds=1)
    stored.jobs.expire_leases(now=T0 + 2)
    assert stored.jobs.get_job(job.id).job_state is JobState.QUEUED
    ok, message = stored.jobs.record_result("pi-1", leased.lease_id, job.id, 1, result={"warnings": ["late"]},
                                       failure=None, now=T0 + 30)
    assert ok and "stored the result" in message
    done = stored.jobs.get_job(job.id)
    assert (done.job_state, done.attempt, done.agent_id, done.result) == (JobState.SUCCEEDED, 1, "pi-1", {"warnings": ["late"]})
    # Only the agent that held the lease may report under it.
    assert not stored.jobs.record_result("pi-2", leased.lease_id, job.id, 1, result={}, failure=None, now=T0 + 31)[0]
    assert stored.jobs.record_result("pi-1", leased.lease_id, job.id, 1, result={}, failure=None, now=T0 + 32) == (
        True, f"the report of attempt 1 of job {job.id} was already stored")


def test_a_last_attempt_failed_for_a_lost_lease_succeeds_with_its_late_result(stored: Repositories):
    register(stored, "pi-1")
    (job,) = add_run(stored, max_attempts=1)
    leased = lease(stored, "pi-1", now=T0, lease_seconds=1)
    stored.jobs.expire_leases(now=T0 + 2)
    failed = stored.jobs.get_job(job.id)
    assert failed.job_state is JobState.FAILED and failed.failure.category is FailureCategory.INFRASTRUCTURE
    ok, _ = stored.jobs.record_result("pi-1", leased.lease_id, job.id, 1, result={"warnings": ["late"]}, failure=None,
                                 now=T0 + 40)
    assert ok
    done = stored.jobs.get_job(job.id)
    assert done.job_state is JobState.SUCCEEDED and done.failure is None and done.finished_at == T0 + 40


def test_progress_under_a_lost_lease_takes_the_job_back_when_nobody_else_started_it(stored: Repositories):
    register(stored, "pi-1")
    (job,) = add_run(stored)
    leased = lease(stored, "pi-1", now=T0, lease_seconds=1)
    stored.jobs.expire_leases(now=T0 + 2)
    assert stored.jobs.record_progress("pi-1", leased.lease_id, {"runs_done": 5}, now=T0 + 3, lease_seconds=30) == (False, "")
    back = stored.jobs.get_job(job.id)
    assert (back.job_state, back.agent_id, back.lease_id, back.attempt) == (JobState.RUNNING, "pi-1", leased.lease_id, 1)
    assert back.lease_expires_at == T0 + 33
    assert stored.jobs.record_result("pi-1", leased.lease_id, job.id, 1, result={}, failure=None, now=T0 + 4)[0]


def test_leasing_sees_an_agent_registered_again_or_removed_on_another_replica(stored: Repositories, db_url: str):
    """Leasing remembers an agent's profile, tags and runtimes between tries; a registration or a
    removal on another replica (which cannot tell this one) is still seen at the next try."""
    other = open_repositories(Database(db_url))  # a second controller on the same database
    try:
        register(stored, "pi-1", now=T0)
        (tflite_job,) = add_run(stored, ("rpi5",), created_at=T0, settings={"runtime": "tflite"})
        assert lease(stored, "pi-1", now=T0 + 1, lease_seconds=30) is None, "pi-1 has only onnxruntime"

        other.agents.register_agent("pi-1", profile="rpi5", tags=["lab"], capabilities={
            "runtimes": [{"name": "tflite", "version": "2.14", "execution_providers": []}]},
            hostname="h", version="0.1", now=T0 + 2)
        job = lease(stored, "pi-1", now=T0 + 3, lease_seconds=30)
        assert job is not None and job.id == tflite_job.id

        other.agents.set_draining("pi-1", True)
        add_run(stored, ("rpi5",), created_at=T0 + 4, settings={"runtime": "tflite"})
        assert lease(stored, "pi-1", now=T0 + 5, lease_seconds=30) is None, "a drained agent gets no work"

        other.agents.remove_agent("pi-1", now=T0 + 6, why="revoked")
        with pytest.raises(FailedPrecondition, match="must call Register"):
            lease(stored, "pi-1", now=T0 + 7, lease_seconds=30)
    finally:
        other.database.close()


def test_leasing_sees_a_registration_here_even_at_the_same_moment(stored: Repositories):
    """On this replica a registration is told to leasing directly (a test clock, or a coarse
    one, can give two registrations the same time)."""
    register(stored, "pi-1", now=T0)
    (jetson_job,) = add_run(stored, ("jetson",), created_at=T0)
    assert lease(stored, "pi-1", now=T0, lease_seconds=30) is None
    register(stored, "pi-1", profile="jetson", now=T0)
    job = lease(stored, "pi-1", now=T0, lease_seconds=30)
    assert job is not None and job.id == jetson_job.id


def test_an_agent_that_asks_for_work_gives_up_the_lease_it_holds(stored: Repositories):
    """An agent runs one job at a time: asking again means its old job is no longer running
    (it crashed and restarted, say). The old lease is lost in the transaction that takes the
    next job, and the old job is queued again, its attempt spent."""
    register(stored, "pi-1")
    assert lease(stored, "pi-1", now=T0, lease_seconds=30) is None  # its kind is known from here
    first, second = add_run(stored, ("rpi5", "rpi5"))
    old = lease(stored, "pi-1", now=T0 + 1, lease_seconds=30)
    assert old is not None and old.id == first.id
    new = lease(stored, "pi-1", now=T0 + 2, lease_seconds=30)
    assert new is not None and new.id == first.id and new.attempt == 2 and new.lease_id != old.lease_id
    assert stored.jobs.active_jobs_by_agent() == {"pi-1": first.id}
    assert stored.jobs.get_job(second.id).job_state is JobState.QUEUED
    accepted, _ = stored.jobs.record_result("pi-1", old.lease_id, first.id, 1, result={}, failure=None, now=T0 + 3)
    assert not accepted, "the report of the lease given up is refused: a later attempt started"


def test_re_registering_gives_up_the_agents_leases(stored: Repositories):
    register(stored, "pi-1")
    (job,) = add_run(stored)
    lease(stored, "pi-1", now=T0, lease_seconds=30)
    stored.agents.set_draining("pi-1", True)
    agent, lost = register(stored, "pi-1", now=T0 + 1)
    assert [(j.id, state) for j, state in lost] == [(job.id, JobState.QUEUED)]
    assert agent.draining, "a restart does not undo an operator's drain"
    assert stored.jobs.get_job(job.id).attempt == 1


def test_progress_marks_running_and_renews_the_lease(stored: Repositories):
    register(stored, "pi-1")
    add_run(stored)
    job = lease(stored, "pi-1", now=T0, lease_seconds=30)
    progress = wire.progress_from_pb(populate(pb.Progress()))
    assert stored.jobs.record_progress("pi-1", job.lease_id, progress, now=T0 + 10, lease_seconds=30) == (False, "")
    read = stored.jobs.get_job(job.id)
    assert read.job_state is JobState.RUNNING and read.lease_expires_at == T0 + 40
    assert wire.progress_to_pb(read.progress) == wire.progress_to_pb(progress)
    cancel, why = stored.jobs.record_progress("pi-2", job.lease_id, progress, now=T0, lease_seconds=30)
    assert cancel, "another agent cannot report under this lease"


def test_result_is_stored_whole_and_idempotent_by_attempt(stored: Repositories):
    register(stored, "pi-1")
    add_run(stored)
    job = lease(stored, "pi-1", now=T0, lease_seconds=30)
    result = wire.result_from_pb(populate(pb.BenchmarkResult()))
    ok, _ = stored.jobs.record_result("pi-1", job.lease_id, job.id, 1, result=result, failure=None, now=T0 + 5)
    assert ok
    read = stored.jobs.get_job(job.id)
    assert read.job_state is JobState.SUCCEEDED and read.finished_at == T0 + 5
    assert wire.result_to_pb(read.result) == wire.result_to_pb(result)
    # The same report again (the agent never saw the answer): accepted, nothing changes.
    failure = Failure(FailureCategory.RUNTIME_CRASH, "crashed")
    ok, message = stored.jobs.record_result("pi-1", job.lease_id, job.id, 1, result=None, failure=failure, now=T0 + 9)
    assert ok and "already stored" in message
    again = stored.jobs.get_job(job.id)
    assert again.job_state is JobState.SUCCEEDED and again.finished_at == T0 + 5 and again.failure is None
    ok, message = stored.jobs.record_result("pi-1", job.lease_id, job.id, 2, result=result, failure=None, now=T0 + 9)
    assert not ok and "attempt 2" in message


def test_a_stored_report_marks_the_agent_and_counts_the_outcome_and_a_stale_one_writes_nothing(stored: Repositories):
    """What storing an outcome writes besides the job (on PostgreSQL one statement does all of
    it for the agent holding the lease): the agent seen and idle, the latest result of the
    model, the count of the outcome. A report that is not stored changes none of them."""
    register(stored, "pi-1")
    first, second = add_run(stored, ("rpi5", "rpi5"))
    job = lease(stored, "pi-1", now=T0 + 1, lease_seconds=30)
    agent = stored.agents.get_agent("pi-1")
    assert (agent.last_seen, agent.busy) == (T0 + 1, True)
    seen: List[Job] = []
    for _ in range(2):  # the second is a repeat (the agent never heard the answer): accepted, not stored again
        assert stored.jobs.record_result("pi-1", job.lease_id, job.id, 1, result={"ok": True}, failure=None,
                                         now=T0 + 2, on_stored=seen.append)[0]
    assert [(j.id, j.state, j.result, j.finished_at) for j in seen] == [(job.id, "succeeded", {"ok": True}, T0 + 2)]
    agent = stored.agents.get_agent("pi-1")
    assert (agent.last_seen, agent.busy) == (T0 + 2, False)
    assert [(r.model_name, r.device_profile, r.runtime, r.job_id, r.finished_at)
            for r in stored.jobs.latest_results(10)] == [("net.onnx", "rpi5", "onnxruntime", job.id, T0 + 2)]
    assert stored.jobs.outcome_counts() == [("succeeded", "ok", "rpi5", "net.onnx", "onnxruntime", 1)]

    other = lease(stored, "pi-1", now=T0 + 3, lease_seconds=30)
    failure = Failure(FailureCategory.RUNTIME_CRASH, "crashed", signal=11)
    assert not stored.jobs.record_result("pi-1", other.lease_id, other.id, 2, result=None, failure=failure, now=T0 + 4)[0]
    assert not stored.jobs.record_result("pi-2", other.lease_id, other.id, 1, result=None, failure=failure, now=T0 + 4)[0]
    assert not stored.jobs.record_result("pi-1", "no-such-lease", other.id, 1, result=None, failure=failure, now=T0 + 4)[0]
    agent = stored.agents.get_agent("pi-1")
    assert (agent.last_seen, agent.busy) == (T0 + 3, True)
    assert stored.jobs.get_job(other.id).job_state is JobState.LEASED
    assert len(stored.jobs.outcome_counts()) == 1

    assert stored.jobs.record_result("pi-1", other.lease_id, other.id, 1, result=None, failure=failure, now=T0 + 5,
                                     on_stored=seen.append)[0]
    assert [j.state for j in seen] == ["succeeded", "failed"] and seen[1].failure == failure
    assert sorted(stored.jobs.outcome_counts()) == [
        ("failed", "runtime_crash", "rpi5", "net.onnx", "onnxruntime", 1),
        ("succeeded", "ok", "rpi5", "net.onnx", "onnxruntime", 1)]
    assert stored.jobs.latest_results(10)[0].job_id == job.id, "a failure is no latest result"
    assert stored.jobs.get_job(other.id).failure == failure
    assert {first.id, second.id} == {job.id, other.id}


def _statements_of(store: Repositories, work) -> List[str]:
    """The statements ``work()`` sent through SQLAlchemy (BEGIN is the driver's own: not here)."""
    statements: List[str] = []
    engine = store.jobs.db.engine
    count = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        work()
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return statements


def test_on_postgresql_a_job_without_budgets_is_written_one_statement_at_a_time(stored: Repositories):
    """Round trips are what a job costs a PostgreSQL controller. A submission is one statement
    (its rows and notification, committed by itself); a try to lease of an agent whose kind
    leasing knows is one statement that looks, takes, marks the agent and commits by itself, and
    one that finds nothing to take writes nothing; the report of a job this controller leased
    and knows has no budgets is stored with everything it writes by one statement that commits
    by itself."""
    if not stored.jobs.db.is_postgresql:
        pytest.skip("SQLite runs each statement alone; it costs no round trip")
    register(stored, "pi-1")
    assert lease(stored, "pi-1", now=T0, lease_seconds=30) is None  # its kind is read once, here
    attempts: List[LeaseAttempt] = []
    looked = _statements_of(stored, lambda: attempts.append(
        stored.jobs.lease_next("pi-1", now=T0 + 0.5, lease_seconds=30)))
    assert len(looked) == 1 and attempts[0].job is None and not attempts[0].more_queued, looked
    assert stored.agents.get_agent("pi-1").last_seen == T0, "a look that finds nothing writes nothing"
    submitted = _statements_of(stored, lambda: add_run(stored))
    leased: List[Job] = []
    taken = _statements_of(stored, lambda: leased.append(lease(stored, "pi-1", now=T0 + 1, lease_seconds=30)))
    (job,) = leased
    assert stored.agents.get_agent("pi-1").last_seen == T0 + 1 and stored.agents.get_agent("pi-1").busy
    reported = _statements_of(stored, lambda: stored.jobs.record_result(
        "pi-1", job.lease_id, job.id, 1, result={"ok": True}, failure=None, now=T0 + 2))
    assert len(submitted) == 1 and "INSERT INTO jobs" in submitted[0] and "pg_notify" in submitted[0], submitted
    assert len(taken) == 1 and "pg_notify" in taken[0] and "UPDATE agents" in taken[0], taken
    assert len(reported) == 1 and "pg_notify" in reported[0], reported
    stored_job = stored.jobs.get_job(job.id)
    assert stored_job.job_state is JobState.SUCCEEDED and stored_job.result == {"ok": True}
    assert stored.agents.get_agent("pi-1").busy is False


def test_on_postgresql_a_report_whose_budgets_are_judged_or_not_known_here_is_stored_in_a_transaction(
        stored: Repositories):
    """A job with budgets has its verdicts written in the transaction that stores its result:
    the report statement, the verdicts, then the commit with its notification. So is a job whose
    budgets were added after it was leased (the statement that commits by itself writes nothing
    for a job with budgets), and one this controller did not lease (another replica did)."""
    if not stored.jobs.db.is_postgresql:
        pytest.skip("SQLite runs each statement alone; it costs no round trip")
    from hilfarm.controller.job_repository import JobRepository
    from hilfarm.controller.regression_service import judge_result

    budgets = [{"name": "latency.p50", "max": 0.002, "unit": "s"}]
    result = {"latency": {"p50_seconds": 0.003, "p99_seconds": 0.004, "samples_ns": [3_000_000] * 5}}
    register(stored, "pi-1")
    judged, late, elsewhere = add_run(stored, ("rpi5", "rpi5", "rpi5"))
    stored.regressions.add_budgets({judged.id: budgets}, "doorbell")
    for job in (judged, late, elsewhere):
        leased = lease(stored, "pi-1", now=T0, lease_seconds=30)
        assert leased.id == job.id
        if job is late:
            stored.regressions.add_budgets({late.id: budgets}, "doorbell")
        repository = JobRepository(stored.jobs.db) if job is elsewhere else stored.jobs
        reported = _statements_of(stored, lambda: repository.record_result(
            "pi-1", leased.lease_id, job.id, leased.attempt, result=result, failure=None, now=T0 + 1,
            on_result=judge_result))
        assert reported[-1].endswith("COMMIT"), reported
        assert stored.jobs.get_job(job.id).job_state is JobState.SUCCEEDED
    evaluations = stored.regressions.evaluations([judged.id, late.id, elsewhere.id])
    assert [v["status"] for v in evaluations[judged.id].verdicts] == ["fail"]
    assert [v["status"] for v in evaluations[late.id].verdicts] == ["fail"]
    assert elsewhere.id not in evaluations


def test_jobs_are_read_with_their_budgets_and_verdicts_in_one_statement(stored: Repositories):
    """What a watcher reads at every change: the job and, where it has budgets, its evaluation
    as regressions.evaluations reads it (budgets first, verdicts once its result is stored)."""
    from hilfarm.controller.regression_service import judge_result

    budgets = [{"name": "latency.p50", "max": 0.002, "unit": "s"}]
    register(stored, "pi-1")
    judged, plain = add_run(stored, ("rpi5", "rpi5"))
    stored.regressions.add_budgets({judged.id: budgets}, "doorbell")
    reads: List[tuple] = []
    statements = _statements_of(stored, lambda: reads.append(stored.jobs.get_job_judged(judged.id)))
    (job, evaluation), = reads
    assert len(statements) == 1 and job.id == judged.id and job.job_state is JobState.QUEUED
    assert evaluation.budgets == budgets and evaluation.verdicts is None and evaluation.constraint_set == "doorbell"
    assert stored.jobs.get_job_judged(plain.id)[1] is None
    both = {job.id: evaluation for job, evaluation in stored.jobs.get_jobs_judged([judged.id, plain.id, "gone"])}
    assert both.keys() == {judged.id, plain.id} and both[judged.id].budgets == budgets and both[plain.id] is None
    leased = lease(stored, "pi-1", now=T0, lease_seconds=30)
    stored.jobs.record_result("pi-1", leased.lease_id, judged.id, 1, now=T0 + 1, on_result=judge_result, failure=None,
                              result={"latency": {"p50_seconds": 0.003, "samples_ns": [3_000_000] * 5}})
    job, evaluation = stored.jobs.get_job_judged(judged.id[:12])  # a unique prefix reads as the whole id
    assert job.job_state is JobState.SUCCEEDED
    assert evaluation == stored.regressions.evaluations([judged.id])[judged.id]
    assert [v["status"] for v in evaluation.verdicts] == ["fail"]
    with pytest.raises(NotFound):
        stored.jobs.get_job_judged(judged.id, project="another")


def test_failure_is_stored_with_its_category_signal_and_detail(stored: Repositories):
    register(stored, "pi-1")
    add_run(stored)
    job = lease(stored, "pi-1", now=T0, lease_seconds=30)
    failure = Failure(FailureCategory.RUNTIME_CRASH, "the runtime died on SIGSEGV", signal=11, detail="tail\n" * 500)
    assert stored.jobs.record_result("pi-1", job.lease_id, job.id, 1, result=None, failure=failure, now=T0 + 1)[0]
    read = stored.jobs.get_job(job.id)
    assert read.job_state is JobState.FAILED and read.failure == failure and read.result is None


def test_cancel(stored: Repositories):
    register(stored, "pi-1")
    queued, running = add_run(stored, ("x86", "rpi5"))
    assert stored.jobs.cancel_job(queued.id, now=T0 + 1).job_state is JobState.CANCELLED
    job = lease(stored, "pi-1", now=T0, lease_seconds=30)
    assert job.id == running.id
    stored.jobs.cancel_job(running.id, now=T0 + 2)
    assert stored.jobs.record_progress("pi-1", job.lease_id, {}, now=T0 + 3, lease_seconds=30) == (
        True, f"job {running.id} was cancelled")
    ok, message = stored.jobs.record_result("pi-1", job.lease_id, job.id, 1, result={}, failure=None, now=T0 + 4)
    assert not ok and "cancelled" in message
    assert stored.jobs.get_job(running.id).result is None
    with pytest.raises(FailedPrecondition, match="already cancelled"):
        stored.jobs.cancel_job(running.id, now=T0 + 5)
    with pytest.raises(NotFound):
        stored.jobs.cancel_job("nope", now=T0)


def test_a_unique_prefix_of_a_job_id_names_the_job_as_in_git(stored: Repositories):
    run = Run(id=uuid.uuid4().hex, created_at=T0)
    ids = ["5eed" + "0" * 27 + "1", "5eed" + "1" * 28, "c0ffee" + "2" * 26]
    stored.jobs.add_run(run, [Job(id=i, run_id=run.id, model_sha256=SHA, model_name=f"m{n}.onnx", model_format="onnx",
                             device_profile="rpi5", settings={}, max_attempts=1, created_at=T0 + n)
                         for n, i in enumerate(ids)])
    assert stored.jobs.get_job(ids[2]).id == ids[2]          # the whole id
    assert stored.jobs.get_job("c0ff").id == ids[2]          # four characters are enough when unique
    assert stored.jobs.get_job("C0FFEE22").id == ids[2]      # hex in either case
    assert stored.jobs.get_job("5eed1").id == ids[1]
    with pytest.raises(AmbiguousId) as ambiguous:
        stored.jobs.get_job("5eed")
    # Every candidate is named with what it is, so the person can pick one.
    assert ids[0] in str(ambiguous.value) and ids[1] in str(ambiguous.value)
    assert "m0.onnx on rpi5" in str(ambiguous.value) and "more characters" in str(ambiguous.value)
    with pytest.raises(NotFound, match="at least 4 hex characters"):
        stored.jobs.get_job("c0f")
    with pytest.raises(NotFound, match=r"'dead' does not exist on this controller \(no job id starts with it\)"):
        stored.jobs.get_job("dead")
    with pytest.raises(NotFound):
        stored.jobs.get_job("5eed%")  # not a prefix: LIKE wildcards are never wildcards here
    # Cancel takes a prefix too, and answers with the whole id.
    assert stored.jobs.cancel_job("c0ffee", now=T0 + 9).id == ids[2]
    with pytest.raises(AmbiguousId):
        stored.jobs.cancel_job("5eed", now=T0 + 9)
    assert stored.jobs.get_job(ids[0]).job_state is JobState.QUEUED


def test_agents_register_update_and_drain(stored: Repositories):
    register(stored, "pi-1")
    capabilities = populate(pb.Capabilities())
    stored.agents.register_agent("pi-1", profile="rpi4", tags=["a", "b"],
                                     capabilities=wire.capabilities_from_pb(capabilities),
                                     hostname="pi", version="0.2", now=T0 + 5)
    read = stored.agents.get_agent("pi-1")
    assert (read.profile, read.tags, read.version, read.last_seen) == ("rpi4", ["a", "b"], "0.2", T0 + 5)
    assert wire.capabilities_to_pb(read.capabilities) == capabilities
    assert stored.agents.set_draining("pi-1", True).draining
    assert [a.id for a in stored.agents.list_agents()] == ["pi-1"]
    with pytest.raises(NotFound, match="never registered"):
        stored.agents.set_draining("ghost", True)


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'sub' / 'farm.db'}")
    try:
        database.migrate()
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        database.close()


def test_the_default_database_is_sqlite_in_the_users_data_dir(tmp_path, monkeypatch):
    from hilfarm.controller.server import Controller

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    controller = Controller()
    try:
        assert controller.data_dir == tmp_path / "hilfarm"
        assert controller.db_url == f"sqlite:///{tmp_path / 'hilfarm' / 'hilfarm.db'}"
        assert controller.parts.artifacts.root == tmp_path / "hilfarm" / "artifacts"
    finally:
        controller.parts.database.close()


def test_agents_reporting_heartbeating_and_leasing_at_once_never_deadlock(stored: Repositories):
    agents = [f"pi-{i}" for i in range(4)]
    for a in agents:
        register(stored, a)
    for i in range(40):
        add_run(stored, ("rpi5",), created_at=T0 + i)
    errors: List[BaseException] = []
    done = threading.Event()

    def guarded(fn):
        def run(*args):
            try:
                fn(*args)
            except BaseException as exc:  # surfaced below
                errors.append(exc)
                done.set()
        return run

    @guarded
    def agent_loop(agent_id: str) -> None:
        while not done.is_set():
            job = lease(stored, agent_id, now=time.time(), lease_seconds=0.05)
            if job is None:
                return
            stored.jobs.record_progress(agent_id, job.lease_id, {"runs_done": 1}, now=time.time(), lease_seconds=0.05)
            stored.agents.heartbeat(agent_id, busy=True, now=time.time(), lease_seconds=0.05)
            stored.jobs.record_result(agent_id, job.lease_id, job.id, job.attempt, result={}, failure=None, now=time.time())

    @guarded
    def churn() -> None:
        while not done.is_set():
            stored.jobs.expire_leases(now=time.time())
            for a in agents:
                stored.agents.heartbeat(a, busy=False, now=time.time(), lease_seconds=0.05)
            register(stored, agents[0], now=time.time())

    threads = [threading.Thread(target=agent_loop, args=(a,)) for a in agents]
    threads.append(threading.Thread(target=churn))
    for t in threads:
        t.start()
    for t in threads[:-1]:
        t.join(60)
    done.set()
    threads[-1].join(10)
    assert not errors, errors
    states = {j.job_state for j in stored.jobs.list_jobs(limit=100)}
    assert states <= {JobState.SUCCEEDED, JobState.FAILED, JobState.QUEUED}


def test_the_lease_query_matches_exactly_the_jobs_accepts_explains(stored: Repositories):
    """The SQL that leases and scheduler.accepts, which explains placements, agree on every
    combination of profile, tags, runtime and execution provider."""
    import itertools


    from hilfarm.controller.models import Agent
    from hilfarm.controller.scheduler import accepts

    onnx = lambda *providers: {"name": "onnxruntime", "version": "1", "execution_providers": list(providers)}  # noqa: E731
    tflite = {"name": "tflite", "version": "2"}
    jobs = []
    for i, (profile, tags, settings, fmt) in enumerate(itertools.product(
            ("rpi5", "jetson"), ((), ("camera",), ("camera", "usb"), (pin_tag("a1"),), (pin_tag("a9"), "camera")),
            ({}, {"runtime": "null"}, {"execution_provider": "CUDAExecutionProvider"}, {"runtime": "tflite"}),
            ("onnx", "tflite"))):
        if settings.get("runtime") == "tflite" and fmt == "onnx":
            continue
        run = Run(id=uuid.uuid4().hex, created_at=T0 + i)
        job = Job(id=uuid.uuid4().hex, run_id=run.id, model_sha256=SHA, model_name="m", model_format=fmt,
                  device_profile=profile, settings=dict(settings, min_runs=1), required_tags=list(tags),
                  created_at=T0 + i)
        stored.jobs.add_run(run, [job])
        jobs.append(job)
    agents = [
        Agent(id=f"a{i}", profile=profile, tags=list(tags), capabilities={"runtimes": runtimes},
              registered_at=T0, last_seen=T0)
        for i, (profile, tags, runtimes) in enumerate(itertools.product(
            ("rpi5", "jetson"), ((), ("camera",), ("camera", "usb", "lab")),
            ([], [onnx("CPUExecutionProvider")], [onnx("CPUExecutionProvider", "CUDAExecutionProvider"), tflite],
             [{"name": "null"}, tflite])))
    ]
    stored_jobs = {j.id: stored.jobs.get_job(j.id) for j in jobs}
    sizes = []
    for agent in agents:
        fits = stored.jobs._lease_statements(agent.profile, agent.tags, agent.capabilities).fits
        with stored.database.engine.connect() as conn:
            matched = {row.id for row in conn.execute(sa.select(Job.__table__.c.id).where(fits),
                                                      {"allowed_tags": stored.jobs.allowed_tags_bound(agent.id, agent.tags)})}
        expected = {j.id for j in stored_jobs.values() if accepts(agent, j, now=T0)[0]}
        assert matched == expected, (agent.profile, agent.tags, agent.capabilities)
        sizes.append(len(matched))
    assert 0 in sizes and max(sizes) > 1, "some agents fit nothing, some several jobs"
    by_id = {a.id: a for a in agents}
    for agent_id in ("a1", "a9"):
        mine = [j for j in stored_jobs.values() if pin_tag(agent_id) in j.required_tags]
        assert any(accepts(by_id[agent_id], j, now=T0)[0] for j in mine), f"some job pinned to {agent_id} fits it"


def test_many_agent_credentials_are_read_in_one_lookup_as_each_alone(stored: Repositories):
    """What the authenticator's batched reads ahead get (auth.Authenticator.refresh): the rows
    that exist, as ``agent_credential`` reads each; an unknown id is simply absent."""
    from hilfarm.controller import auth
    from hilfarm.controller.credentials import Credentials

    credentials = Credentials(stored.database, stored.agents, clock=lambda: T0)
    admin = auth.Principal(auth.Kind.USER, "default", auth.Role.ADMIN, token_id="operator", operator=True)
    made = [credentials.enroll(admin, agent_id=f"pi-{n}", device_profile="rpi5", tags=["lab", f"n{n}"])[0]
            for n in range(3)]
    revoked = credentials.enroll(admin, agent_id="pi-0", device_profile="rpi5", tags=[])[0]  # pi-0's first is revoked
    ids = [c.id for c in made] + [revoked.id, "no-such-credential"]
    found = credentials.agent_credentials(ids)
    assert set(found) == set(ids[:4])
    for cid in ids[:4]:
        alone = credentials.agent_credential(cid)
        assert alone is not None
        assert (found[cid].agent_id, found[cid].device_profile, found[cid].tags, found[cid].secret_hash,
                found[cid].revoked_at) == (alone.agent_id, alone.device_profile, alone.tags, alone.secret_hash,
                                           alone.revoked_at)
    assert found[made[0].id].revoked_at == T0 and found[revoked.id].revoked_at is None
    assert found[made[1].id].tags == ["lab", "n1"]
    assert credentials.agent_credentials([]) == {}
