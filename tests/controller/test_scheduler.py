"""Which agent may take which job, and why not: matching rules, placement notes, long-poll leases."""
from __future__ import annotations

import threading
import time
from typing import List

import pytest

from hilfarm.controller.models import Agent, Job
from hilfarm.controller.scheduler import accepts
from hilfarm.v1 import farm_pb2 as pb

from .conftest import onnx_bytes, onnx_capabilities

NOW = 1_700_000_000.0


def agent(**kw) -> Agent:
    base = dict(id="pi-1", profile="rpi5", tags=["lab", "usb"], registered_at=NOW, last_seen=NOW,
                capabilities={"runtimes": [{"name": "onnxruntime", "version": "1.22.0",
                                            "execution_providers": ["CPUExecutionProvider"]}]})
    base.update(kw)
    return Agent(**base)


def job(**kw) -> Job:
    base = dict(id="j1", run_id="r1", model_sha256="a" * 64, model_format="onnx", device_profile="rpi5",
                created_at=NOW)
    base.update(kw)
    return Job(**base)


@pytest.mark.parametrize("a, j, reason", [
    (agent(), job(), "can take the job"),
    (agent(profile="generic-x86-linux"), job(), "profile is generic-x86-linux, job needs rpi5"),
    (agent(last_seen=NOW - 16), job(), "offline since " + time.strftime("%H:%M:%S", time.localtime(NOW - 16))),
    (agent(draining=True), job(), "draining (taken out of service by an operator)"),
    (agent(busy=True), job(), "busy"),
    (agent(), job(required_tags=["camera", "usb", "gpu"]), "lacks tags camera, gpu (has lab, usb)"),
    (agent(), job(model_format="tflite"), "no tflite runtime (has onnxruntime 1.22.0)"),
    (agent(capabilities={}), job(), "no onnxruntime runtime (has no runtime)"),
    (agent(), job(settings={"runtime": "tflite"}), "no tflite runtime (has onnxruntime 1.22.0)"),
    (agent(), job(settings={"execution_provider": "CUDAExecutionProvider"}),
     "onnxruntime 1.22.0 lacks execution provider CUDAExecutionProvider (has CPUExecutionProvider)"),
])
def test_accepts_says_why(a, j, reason):
    ok, why = accepts(a, j, now=NOW, heartbeat_interval=5)
    assert why == reason
    assert ok == (reason == "can take the job")


def test_accepts_names_the_job_an_agent_is_busy_with():
    assert accepts(agent(), job(), now=NOW, heartbeat_interval=5, current_job_id="j9") == (False, "busy with job j9")


def test_an_agent_is_online_for_three_heartbeat_intervals():
    assert accepts(agent(last_seen=NOW - 14.9), job(), now=NOW, heartbeat_interval=5)[0]


def test_placement_notes_say_why_each_agent_cannot_take_a_queued_job(farm, model):
    (queued,) = farm.submit([model], ["rpi5"]).jobs
    assert list(queued.placement_notes) == ["no agent with profile rpi5 has registered"]

    farm.agent("laptop-1", "generic-x86-linux").register()
    tflite_only = pb.Capabilities(runtimes=[pb.RuntimeInfo(name="tflite", version="2.14.0")])
    farm.agent("pi-1", "rpi5", capabilities=tflite_only).register()
    busy = farm.agent("pi-2", "rpi5")
    busy.register()
    (other,) = farm.submit([model], ["rpi5"]).jobs
    # pi-2 leases the oldest job; the other one stays queued.
    assert busy.lease().job.id == queued.id
    farm.controller.parts.agents.register_agent("pi-3", profile="rpi5", tags=[], capabilities={}, hostname="",
                                         version="", now=time.time() - 3600)
    offline_since = time.strftime("%H:%M:%S", time.localtime(farm.controller.parts.agents.get_agent("pi-3").last_seen))
    notes = list(farm.job(other.id).placement_notes)
    assert notes == [
        "pi-1: no onnxruntime runtime (has tflite 2.14.0)",
        f"pi-2: busy with job {queued.id}",
        f"pi-3: offline since {offline_since}",
        "laptop-1: profile is generic-x86-linux, job needs rpi5",
    ]
    assert list(farm.job(queued.id).placement_notes) == [], "only queued jobs carry placement notes"


def _count_candidate_reads(scheduler, monkeypatch) -> list:
    reads = []
    real_candidates = scheduler.agents.placement_candidates
    monkeypatch.setattr(scheduler.agents, "placement_candidates",
                        lambda *a, **kw: reads.append(a) or real_candidates(*a, **kw))
    return reads


def test_timed_refreshes_of_a_queued_job_share_the_agents_read_for_its_profile(farm, model, monkeypatch):
    """Two hundred people watching queued jobs get each job again every few seconds for its
    placement notes: those refreshes share one read of the profile's agents for a moment, while
    a job that changed, or is asked for, is explained from the agents as they are, and a
    registration is seen at once. (Limits far above the test's own pace, except where the limit
    running out is the point, so a slow machine does not change what is shared.)"""
    scheduler = farm.controller.parts.scheduler
    (queued,) = farm.submit([model], ["rpi5"]).jobs
    job = farm.controller.parts.jobs.get_job(queued.id)
    reads = _count_candidate_reads(scheduler, monkeypatch)
    nobody = ["no agent with profile rpi5 has registered"]
    assert scheduler.placement_notes([job])[job.id] == nobody
    assert scheduler.placement_notes([job], max_age=60)[job.id] == nobody
    assert len(reads) == 1, "the read of a moment ago is shared"
    farm.controller.parts.agents.register_agent("pi-1", profile="rpi5", tags=[], capabilities={}, hostname="",
                                                version="", now=time.time())
    fresh = ["pi-1: no onnxruntime runtime (has no runtime)"]
    assert scheduler.placement_notes([job], max_age=60)[job.id] == fresh, "a registration is seen at once"
    assert len(reads) == 2
    assert scheduler.placement_notes([job])[job.id] == fresh, "a job asked for is explained afresh"
    assert len(reads) == 3
    # An agent busy with another job: nothing on the roster changed, so a shared read may say it
    # is idle for a moment, never longer than the limit.
    pi = farm.agent("pi-2", "rpi5")
    pi.register()
    assert scheduler.placement_notes([job], max_age=60)[job.id][1] == "pi-2: can take the job; waiting for it to ask for work"
    (other,) = farm.submit([model], ["rpi5"]).jobs
    assert pi.lease().job.id == queued.id
    other_job = farm.controller.parts.jobs.get_job(other.id)
    assert scheduler.placement_notes([other_job], max_age=60)[other.id][1] == (
        "pi-2: can take the job; waiting for it to ask for work"), "the read of a moment ago is shared"
    time.sleep(0.25)
    assert scheduler.placement_notes([other_job], max_age=0.2)[other.id][1] == f"pi-2: busy with job {queued.id}", (
        "older than the limit: read again")


def test_the_notes_of_jobs_submitted_together_share_one_read_of_their_profiles_agents(farm, model, monkeypatch):
    """A hundred submissions a second each explained from twenty agents read afresh was a third
    of a submission's work: the notes of a submission share the read of a profile's agents made
    by one a moment before, unless the roster changed. (The limit is raised far above the test's
    own pace, so a slow machine does not change what is shared.)"""
    from hilfarm.controller import server as server_module

    assert server_module.SUBMITTED_CANDIDATES_MAX_AGE_SECONDS == 1.0
    monkeypatch.setattr(server_module, "SUBMITTED_CANDIDATES_MAX_AGE_SECONDS", 60.0)
    scheduler = farm.controller.parts.scheduler
    farm.agent("pi-1", "rpi5", capabilities=pb.Capabilities()).register()
    (first,) = farm.submit([model], ["rpi5"]).jobs
    reads = _count_candidate_reads(scheduler, monkeypatch)
    (second,) = farm.submit([model], ["rpi5"]).jobs
    assert reads == [], "the read the first submission made a moment ago is shared"
    assert list(second.placement_notes) == list(first.placement_notes) == ["pi-1: no onnxruntime runtime (has no runtime)"]
    farm.agent("pi-2", "rpi5").register()
    (third,) = farm.submit([model], ["rpi5"]).jobs
    assert len(reads) == 1, "a registration since: read again"
    assert list(third.placement_notes) == ["pi-1: no onnxruntime runtime (has no runtime)",
                                           "pi-2: can take the job; waiting for it to ask for work"]
    farm.controller.parts.agents.set_draining("pi-2", True)
    (fourth,) = farm.submit([model], ["rpi5"]).jobs
    assert len(reads) == 2, "a drain since: read again"
    assert list(fourth.placement_notes)[1] == "pi-2: draining (taken out of service by an operator)"
    assert list(farm.job(fourth.id).placement_notes)[1] == "pi-2: draining (taken out of service by an operator)"
    assert len(reads) == 3, "a job asked for is explained from the agents as they are"


def test_a_job_goes_only_to_an_agent_that_fits(farm, model):
    farm.submit([model], ["rpi5"], required_tags=["camera"])
    plain = farm.agent("pi-1", "rpi5")
    plain.register()
    assert plain.lease(wait=0.2) is None
    with_camera = farm.agent("pi-2", "rpi5", tags=["camera"])
    with_camera.register()
    farm.controller.parts.agents.set_draining("pi-2", True)
    assert with_camera.lease() is None, "a draining agent gets no work"
    farm.controller.parts.agents.set_draining("pi-2", False)
    lease = with_camera.lease()
    assert lease is not None and lease.job.agent_id == "pi-2" and lease.job.state == pb.JOB_STATE_LEASED


def test_a_waiting_lease_wakes_as_soon_as_a_job_is_submitted(farm, model):
    pi = farm.agent("pi-1", "rpi5")
    pi.register()
    got = {}

    def wait_for_work() -> None:
        got["lease"] = pi.lease(wait=20)
        got["at"] = time.monotonic()

    waiter = threading.Thread(target=wait_for_work)
    waiter.start()
    time.sleep(0.3)
    submitted = time.monotonic()
    (job,) = farm.submit([model], ["rpi5"]).jobs
    waiter.join(10)
    assert got["lease"].job.id == job.id
    assert got["at"] - submitted < 0.5


def test_an_empty_long_poll_returns_after_its_wait(farm):
    pi = farm.agent("pi-1", "rpi5")
    pi.register()
    start = time.monotonic()
    assert pi.lease(wait=0.4) is None
    assert 0.35 < time.monotonic() - start < 2


@pytest.fixture
def looks(farm, monkeypatch) -> List[str]:  # type: ignore[no-untyped-def]
    """The agent ids of the lease looks the controller makes (each JobRepository.lease_next)."""
    jobs = farm.controller.parts.jobs
    made: List[str] = []
    real_lease_next = jobs.lease_next

    def counted(agent_id, **kwargs):  # type: ignore[no-untyped-def]
        made.append(agent_id)
        return real_lease_next(agent_id, **kwargs)

    monkeypatch.setattr(jobs, "lease_next", counted)
    return made


def test_an_idle_agent_asking_again_looks_at_the_queue_only_when_work_was_queued_since(farm, model, monkeypatch,
                                                                                        looks):
    """A thousand idle agents each ask again every 10 s: an ask that would find nothing again
    waits without reading the database, and one after a job was queued looks and takes it."""
    from hilfarm.controller import server

    pi = farm.agent("pi-1", "rpi5")
    pi.register()
    assert pi.lease(wait=0.2) is None
    assert looks == ["pi-1"]
    assert pi.lease(wait=0.2) is None
    assert looks == ["pi-1"], "nothing was queued since its last look: it waited without looking"
    assert pi.lease(wait=0) is None
    assert looks == ["pi-1"] * 2, "an ask that cannot wait always looks"

    farm.submit([model], ["tpu"])  # another profile's job changes nothing for it
    assert pi.lease(wait=0.2) is None
    assert looks == ["pi-1"] * 2

    (job,) = farm.submit([model], ["rpi5"]).jobs  # queued between two asks: no one was woken for it
    lease = pi.lease(wait=5)
    assert lease is not None and lease.job.id == job.id
    assert looks == ["pi-1"] * 3
    pi.report(lease)

    # It took the only job that fitted it and reported it: a look now would find nothing.
    assert pi.lease(wait=0.2) is None
    assert looks == ["pi-1"] * 3, "after the last job, the next ask waited without looking"
    pi.register()  # its tags or runtimes may have changed
    assert pi.lease(wait=0.2) is None
    assert looks == ["pi-1"] * 4
    monkeypatch.setattr(server, "FULL_LOOK_INTERVAL_SECONDS", 0.3)
    time.sleep(0.3)
    assert pi.lease(wait=0.2) is None
    assert looks == ["pi-1"] * 5, "it still looks now and then"


def test_an_agent_that_took_a_job_looks_again_after_it_while_other_work_fits_it(farm, model, looks):
    """The lease tells whether another queued job fitted the agent: when one did, its next ask
    looks and takes it; when none did, the ask after its report waits; an ask without a report
    looks (and gives the unreported job up)."""
    pi = farm.agent("pi-1", "rpi5")
    pi.register()
    first, second = farm.submit([model, model], ["rpi5"]).jobs
    farm.submit([model], ["tpu"])  # another profile's job does not fit it
    lease = pi.lease(wait=5)
    assert lease.job.id == first.id and looks == ["pi-1"]
    pi.report(lease)
    lease = pi.lease(wait=5)
    assert lease.job.id == second.id and looks == ["pi-1"] * 2, "another job fitted it: it looked"
    pi.report(lease)
    assert pi.lease(wait=0.2) is None
    assert looks == ["pi-1"] * 2, "none was left for it: it waited without looking"

    (third,) = farm.submit([model], ["rpi5"]).jobs  # queued between two asks: no one was woken for it
    lease = pi.lease(wait=5)
    assert lease.job.id == third.id and looks == ["pi-1"] * 3
    # Asking again without reporting: it looks, and so gives up the job it did not report.
    again = pi.lease(wait=5)
    assert looks == ["pi-1"] * 4
    assert again is not None and again.job.id == third.id and again.job.attempt == 2


@pytest.mark.postgres
def test_replicas_sharing_postgresql_see_each_others_jobs(make_farm, postgres_url):
    submitter = make_farm(db_url=postgres_url)
    leaser = make_farm(db_url=postgres_url)
    # Artifacts live on each replica's disk here; the lease only needs the database row.
    sha = submitter.upload(onnx_bytes(100, b"\x01"))
    pi = leaser.agent("pi-1", "rpi5")
    pi.register()
    got = {}
    waiter = threading.Thread(target=lambda: got.update(lease=pi.lease(wait=10)))
    waiter.start()
    time.sleep(0.2)
    (job,) = submitter.submit([sha], ["rpi5"]).jobs
    waiter.join(10)
    assert got["lease"].job.id == job.id
    assert submitter.job(job.id).state == pb.JOB_STATE_LEASED
    devices = submitter.farm.ListDevices(pb.ListDevicesRequest()).devices
    assert [(d.agent_id, d.state, d.current_job_id) for d in devices] == [("pi-1", "busy", job.id)]


def test_list_devices_reports_each_agents_state(make_farm, model_bytes=onnx_bytes(64, b"\x02")):
    farm = make_farm(heartbeat_interval=0.2)
    sha = farm.upload(model_bytes)
    for name in ("pi-idle", "pi-busy", "pi-drain", "pi-gone"):
        farm.agent(name, "rpi5", capabilities=onnx_capabilities()).register()
    farm.submit([sha], ["rpi5"])
    farm.agent("pi-busy", "rpi5").lease()
    farm.controller.parts.agents.set_draining("pi-drain", True)
    time.sleep(0.7)  # past three heartbeat intervals for the silent agent
    for name in ("pi-idle", "pi-busy", "pi-drain"):
        assert farm.agent(name).heartbeat(busy=name == "pi-busy")
    devices = {d.agent_id: d for d in farm.farm.ListDevices(pb.ListDevicesRequest()).devices}
    assert {k: d.state for k, d in devices.items()} == {
        "pi-idle": "idle", "pi-busy": "busy", "pi-drain": "draining", "pi-gone": "offline"}
    assert devices["pi-busy"].current_job_id
    assert devices["pi-idle"].capabilities == onnx_capabilities()
    assert devices["pi-idle"].hostname == "pi-idle.local" and devices["pi-idle"].agent_version == "0.1.0"


def test_an_agent_waiting_for_work_stays_online(make_farm):
    farm = make_farm(heartbeat_interval=0.2)
    pi = farm.agent("pi-1", "rpi5")
    pi.register()
    states = []
    waiter = threading.Thread(target=lambda: pi.lease(wait=1.5))
    waiter.start()
    for _ in range(5):
        time.sleep(0.25)
        states += [d.state for d in farm.farm.ListDevices(pb.ListDevicesRequest()).devices]
    waiter.join(5)
    assert states == ["idle"] * 5, "a long-poll counts as contact: the agent is not offline while it waits"
