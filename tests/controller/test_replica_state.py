"""What several controller replicas share through the database, on each backend: a suite run is
state any replica advances (and resumes after a restart), one replica at a time; a nightly slot
runs once; a run commits with its budgets; a result stored by a newer version still reads."""
from __future__ import annotations

import hashlib
import time

import grpc
import pytest

from hilfarm.controller.artifacts import ArtifactStore
from hilfarm.controller.models import Artifact
from hilfarm.controller.nightly import NightlyRunner
from hilfarm.controller.scheduler import Scheduler
from hilfarm.controller.server import Controller
from hilfarm.controller.suites import SuiteRunner
from hilfarm.suite_files import SuiteFile, SuiteModel
from hilfarm.v1 import farm_pb2 as pb

from .conftest import onnx_bytes, sample_result, wait_for


def test_a_suite_run_started_by_one_controller_is_finished_by_the_next(make_farm, db_url, tmp_path):
    shared = tmp_path / "artifacts"
    first = make_farm(db_url=db_url, artifacts_dir=shared)
    sha = first.upload(onnx_bytes(200, b"\x41"), filename="net.onnx")
    spec = pb.SuiteSpec(name="resume", models=[pb.ModelRef(sha256=sha, name="net.onnx")], device_profiles=["rpi5"],
                        constraints=[pb.Budget(name="latency.p50", max=1.0, unit="s")])
    started = first.farm.StartSuiteRun(pb.StartSuiteRunRequest(suite=spec))
    assert started.state == "running"
    first.controller.stop(grace=0.5)  # the controller goes away with the run half done

    second = make_farm(db_url=db_url, artifacts_dir=shared)
    assert second.farm.GetSuiteRun(pb.GetSuiteRunRequest(id=started.id)).state == "running"
    agent = second.agent("pi-1")
    agent.register()
    lease = agent.lease(wait=5)
    assert agent.report(lease, result=sample_result()).accepted
    done = wait_for(lambda: (r := second.farm.GetSuiteRun(pb.GetSuiteRunRequest(id=started.id))).state == "finished"
                    and r, 30, "the suite run to finish")
    assert done.outcome == "pass"
    (case,) = done.cases
    assert case.outcome == "no_baseline" and case.job_id == lease.job.id
    assert [v.status for v in case.verdicts] == [pb.VERDICT_STATUS_PASS], "its budgets were stored with its jobs"


def test_one_replica_at_a_time_advances_a_suite_run(store, tmp_path):
    now = [1_800_000_000.0]
    reg = store.regressions
    artifacts = ArtifactStore(tmp_path / "artifacts", store.artifact_records)
    artifacts.prepare()
    model = onnx_bytes(100)
    stored, _, _ = artifacts.receive(Artifact(sha256=hashlib.sha256(model).hexdigest(), size_bytes=len(model),
                                              format="onnx", filename="m.onnx", created_at=0), [model])
    a, b = (SuiteRunner(store.jobs, reg, artifacts, Scheduler(store.jobs, store.agents), clock=lambda: now[0], driver_lease=30,
                        driver_id=name) for name in ("replica-a", "replica-b"))
    run = a.start({"name": "s", "models": [{"sha256": stored.sha256, "name": "m.onnx"}], "device_profiles": ["rpi5"]})
    claimed = a._claim(run.id)
    assert claimed is not None and claimed.driver == "replica-a"
    assert b._claim(run.id) is None, "a run another replica holds is left alone"
    assert b.advance(run.id) is False
    assert a._claim(run.id) is not None, "the holder renews its claim"
    now[0] += 31  # the holder stopped (crashed) without letting go
    taken = b._claim(run.id)
    assert taken is not None and taken.driver == "replica-b", "after the claim lapses another replica resumes the run"


def test_a_nightly_slot_runs_once_however_many_replicas_read_the_schedule(db_url, tmp_path):
    model = tmp_path / "det.onnx"
    model.write_bytes(onnx_bytes(600, b"model bytes "))
    suite = SuiteFile(name="nightly", source=tmp_path / "s.yaml", devices=["rpi5"], schedule="0 2 * * *",
                      models=[SuiteModel(path=model, name="det.onnx")])
    now = [1_800_000_000.0 - 60]
    controllers = [Controller(db_url=db_url, data_dir=tmp_path / f"c{i}", artifacts_dir=tmp_path / "shared")
                   for i in range(3)]
    try:
        for c in controllers:
            c.parts.database.migrate()
            c.parts.artifacts.prepare()
        runners = [NightlyRunner(c.parts.artifacts, c.parts.suites, [suite], clock=lambda: now[0]) for c in controllers]
        slot = runners[0].entries[0].next_at
        assert all(r.entries[0].next_at == slot for r in runners)
        now[0] = slot + 1
        started = [run for r in runners for run in r.tick()]
        assert len(started) == 1 and started[0].nightly_slot == slot
        runs = controllers[0].parts.regressions.list_suite_runs(suite="nightly")
        assert [r.id for r in runs] == [started[0].id], "the other replicas found the slot taken"
        jobs = controllers[0].parts.jobs.list_jobs()
        assert len(jobs) == 1, "the replicas that lost the race stored no jobs"
    finally:
        for c in controllers:
            c.parts.database.close()


def test_a_run_and_its_budgets_commit_together(farm, model, monkeypatch):
    import hilfarm.controller.server as server

    real = server.evaluation_rows  # the budgets below name a job that does not exist: they cannot be stored
    monkeypatch.setattr(server, "evaluation_rows", lambda *a: [
        type(r)(**{**r.model_dump(), "job_id": "no-such-job"}) for r in real(*a)])
    with pytest.raises(grpc.RpcError):
        farm.submit([model], ["rpi5"], constraints=[pb.Budget(name="latency.p50", max=0.01, unit="s")])
    assert farm.farm.ListJobs(pb.ListJobsRequest()).jobs == [], "no job without its budgets"
    monkeypatch.setattr(server, "evaluation_rows", real)
    (job,) = farm.submit([model], ["rpi5"], constraints=[pb.Budget(name="latency.p50", max=0.01, unit="s")]).jobs
    assert [b.name for b in job.constraints] == ["latency.p50"]


def test_a_result_stored_by_a_newer_version_is_served(farm, model):
    """A newer replica stored fields this version does not know: GetJob still answers."""
    (job,) = farm.submit([model], ["rpi5"]).jobs
    agent = farm.agent("pi-1")
    agent.register()
    lease = agent.lease()
    store = farm.controller.parts
    newer = {"latency": {"p50_seconds": 0.002, "p999_seconds": 0.01}, "repeats": [{"child_pid": 7}],
             "warnings": ["from a newer controller"]}
    ok, _ = store.jobs.record_result("pi-1", lease.lease_id, job.id, 1, result=newer, failure=None, now=time.time())
    assert ok
    read = farm.job(job.id)
    assert read.result.latency.p50_seconds == 0.002 and list(read.result.warnings) == ["from a newer controller"]
    listed = farm.farm.ListJobs(pb.ListJobsRequest()).jobs
    assert listed[0].result.latency.p50_seconds == 0.002
