"""The regression store's contract (budgets and verdicts, baselines, suite runs, history, nightly
runs), run against every backend: a SQLite file and a real PostgreSQL server (``db_url`` and
``store`` in conftest.py; in CI an unreachable PostgreSQL fails the run)."""
from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from hilfarm.controller.errors import NotFound
from hilfarm.controller.models import Job, JobState, SuiteCaseRow, runtime_config
from hilfarm.controller.metrics import regression_metric_families
from hilfarm.controller.regression_service import judge_result
from hilfarm.controller.regression_store import LAST_ACCEPTED, RegressionStore
from hilfarm.controller.app import Repositories

from .conftest import onnx_bytes
from .test_store_contract import SHA, T0, add_artifact, add_run, lease, register

BUDGETS = [{"name": "latency.p50", "max": 0.002, "unit": "s"}, {"name": "memory.peak", "max": 100e6, "unit": "bytes"},
           {"name": "energy.per_inference", "max": 0.5, "unit": "J"}]


@pytest.fixture
def reg(store: Repositories) -> RegressionStore:
    add_artifact(store)
    return store.regressions


def judge(conn, job: Job, budgets) -> None:
    # The controller's own hook: it needs the transaction's connection, the job and its budgets,
    # not the rest of the controller.
    judge_result(conn, job, budgets)


def finish(store: Repositories, job: Job, result: Dict[str, Any], *, now: float, agent: str = "pi-1", on_result=judge) -> Job:
    """Lease ``job`` (the only queued job of its profile) to ``agent`` and store ``result``."""
    register(store, agent, profile=job.device_profile, now=now)
    leased = lease(store, agent, now=now, lease_seconds=30)
    assert leased is not None and leased.id == job.id
    ok, message = store.jobs.record_result(agent, leased.lease_id, job.id, leased.attempt, result=result, failure=None,
                                      now=now + 1, on_result=on_result)
    assert ok, message
    return store.jobs.get_job(job.id)


def result(p50: float, peak: int = 50_000_000) -> Dict[str, Any]:
    return {"latency": {"p50_seconds": p50, "p99_seconds": p50 * 1.5, "samples_ns": [int(p50 * 1e9)] * 5},
            "memory": {"peak_bytes": peak}}


# ---------------------------------------------------------------- budgets and verdicts


def test_verdicts_are_stored_with_the_result_in_one_transaction(reg: RegressionStore, store: Repositories):
    (job,) = add_run(store)
    reg.add_budgets({job.id: BUDGETS}, "doorbell")
    before = reg.evaluations([job.id])[job.id]
    assert (before.constraint_set, before.budgets, before.verdicts, before.evaluated_at) == ("doorbell", BUDGETS, None, None)

    # A failure after the verdicts were written rolls back both: nobody sees one without the other.
    def judge_then_fail(conn, j, budgets):
        judge(conn, j, budgets)
        raise RuntimeError("disk full")

    register(store, "pi-1")
    leased = lease(store, "pi-1", now=T0, lease_seconds=30)
    with pytest.raises(RuntimeError, match="disk full"):
        store.jobs.record_result("pi-1", leased.lease_id, job.id, 1, result=result(0.001), failure=None, now=T0 + 1,
                            on_result=judge_then_fail)
    assert store.jobs.get_job(job.id).job_state is JobState.LEASED and store.jobs.get_job(job.id).result is None
    assert reg.evaluations([job.id])[job.id].verdicts is None

    ok, _ = store.jobs.record_result("pi-1", leased.lease_id, job.id, 1, result=result(0.003), failure=None, now=T0 + 2,
                                on_result=judge)
    assert ok
    evaluation = reg.evaluations([job.id, job.id, "no-such-job"])
    assert list(evaluation) == [job.id]
    verdicts = {v["constraint"]: v for v in evaluation[job.id].verdicts}
    assert verdicts["latency.p50"]["status"] == "fail" and verdicts["latency.p50"]["measured"] == 0.003
    assert verdicts["latency.p50"]["margin"] == pytest.approx(-0.001)
    assert verdicts["memory.peak"]["status"] == "pass"
    energy = verdicts["energy.per_inference"]
    assert energy["status"] == "unknown" and energy["measured"] is None and energy["margin"] is None and energy["reason"]
    assert evaluation[job.id].evaluated_at is not None
    assert reg.evaluations([]) == {}


def test_a_job_without_budgets_gets_no_evaluation(reg: RegressionStore, store: Repositories):
    (job,) = add_run(store)
    reg.add_budgets({}, "none")
    finish(store, job, result(0.001), now=T0)
    assert reg.evaluations([job.id]) == {}
    assert reg.latest_verdicts() == []


def test_latest_verdicts_are_the_newest_judged_job_of_each_model_profile_and_runtime(reg: RegressionStore, store: Repositories):
    jobs = [add_run(store, ("rpi5",), created_at=T0 + i)[0] for i in range(2)]
    other = add_run(store, ("jetson",), created_at=T0)[0]
    reg.add_budgets({j.id: BUDGETS[:1] for j in jobs + [other]}, "c")
    finish(store, jobs[0], result(0.001), now=T0 + 10)
    finish(store, jobs[1], result(0.005), now=T0 + 20)
    finish(store, other, result(0.001), now=T0 + 30, agent="nano-1")
    # Newer jobs of the same model and profile that have no verdicts yet (queued, failed) leave
    # the newest verdicts in place on every backend (whatever the order of NULLs).
    waiting = add_run(store, ("rpi5",), created_at=T0 + 40)[0]
    failed = add_run(store, ("rpi5",), created_at=T0 + 50)[0]
    reg.add_budgets({waiting.id: BUDGETS[:1], failed.id: BUDGETS[:1]}, "c")
    store.jobs.cancel_job(failed.id, now=T0 + 60)
    latest = {(job.device_profile, job.id): ev.verdicts[0]["status"] for job, ev in reg.latest_verdicts()}
    assert latest == {("rpi5", jobs[1].id): "fail", ("jetson", other.id): "pass"}


def test_constraint_pass_metric_reads_the_stored_verdicts(reg: RegressionStore, store: Repositories):
    (job,) = add_run(store)
    reg.add_budgets({job.id: BUDGETS}, "doorbell")
    finish(store, job, result(0.003), now=T0)
    families = {f.name: f for f in regression_metric_families(reg)}
    samples = {s.labels["constraint"]: s.value for s in families["hilfarm_constraint_pass"].samples}
    assert samples == {"latency.p50": 0.0, "memory.peak": 1.0}  # the unknown energy budget has no sample
    assert {s.labels["runtime"] for s in families["hilfarm_constraint_pass"].samples} == {"onnxruntime"}


# ---------------------------------------------------------------- baselines


def succeeded(store: Repositories, profile: str = "rpi5", *, at: float, settings: Optional[dict] = None,
              p50: float = 0.001) -> Job:
    (job,) = add_run(store, (profile,), created_at=at, settings=settings)
    return finish(store, job, result(p50), now=at, agent=f"agent-{profile}")


def test_baselines_accept_replace_and_look_up_by_name_and_by_last(reg: RegressionStore, store: Repositories):
    first, second, third = (succeeded(store, at=T0 + i * 10) for i in range(3))
    config = runtime_config(first)
    assert config == "onnxruntime"
    assert reg.find_baseline("main", "net.onnx", "rpi5", config) is None

    (row,) = reg.accept("main", [first], suite="vision", now=T0 + 100)
    assert (row.name, row.job_id, row.model_sha256, row.suite, row.runtime_config) == ("main", first.id, SHA, "vision", config)
    assert row.id is not None
    reg.accept("release-1", [second], suite="", now=T0 + 200)
    assert reg.find_baseline("main", "net.onnx", "rpi5", config).job_id == first.id
    assert reg.find_baseline("release-1", "net.onnx", "rpi5", config).job_id == second.id
    assert reg.find_baseline(LAST_ACCEPTED, "net.onnx", "rpi5", config).job_id == second.id
    assert reg.find_baseline("", "net.onnx", "rpi5", config).job_id == second.id  # no name: the last one too

    # Accepting again under a name replaces that name's baseline; the older acceptance is kept.
    reg.accept("main", [third], suite="vision", now=T0 + 300)
    assert reg.find_baseline("main", "net.onnx", "rpi5", config).job_id == third.id
    assert reg.find_baseline(LAST_ACCEPTED, "net.onnx", "rpi5", config).job_id == third.id
    assert [(b.name, b.job_id) for b in reg.list_baselines()] == [("main", third.id), ("release-1", second.id)]
    assert [b.job_id for b in reg.list_baselines(name="release-1")] == [second.id]
    assert reg.list_baselines(model_name="other.onnx") == [] and reg.list_baselines(profile="jetson") == []
    assert reg.find_baseline("main", "net.onnx", "jetson", config) is None
    assert reg.find_baseline("main", "net.onnx", "rpi5", "onnxruntime threads=4") is None


def test_acceptances_at_the_same_instant_keep_their_order(reg: RegressionStore, store: Repositories):
    a, b = succeeded(store, at=T0), succeeded(store, at=T0 + 10)
    for i in range(5):  # clock granularity: the same timestamp twice
        reg.accept("main", [a if i % 2 == 0 else b], suite="", now=T0 + 100)
    assert reg.find_baseline("main", "net.onnx", "rpi5", "onnxruntime").job_id == a.id
    assert [r.job_id for r in reg.list_baselines()] == [a.id]


def test_a_baseline_is_kept_per_runtime_configuration(reg: RegressionStore, store: Repositories):
    plain = succeeded(store, at=T0)
    tuned = succeeded(store, at=T0 + 10, settings={"threads": 4, "execution_provider": "CPUExecutionProvider",
                                                   "input_shapes": [{"name": "x", "dims": [1, 3, 224, 224]}]})
    assert runtime_config(tuned) == "onnxruntime provider=CPUExecutionProvider threads=4 x=1x3x224x224"
    rows = reg.accept("main", [plain, tuned], suite="s", now=T0 + 100)
    assert rows[0].accepted_at < rows[1].accepted_at
    assert reg.find_baseline("main", "net.onnx", "rpi5", runtime_config(tuned)).job_id == tuned.id
    assert reg.find_baseline("main", "net.onnx", "rpi5", "onnxruntime").job_id == plain.id
    assert sorted(r.job_id for r in reg.list_baselines()) == sorted([plain.id, tuned.id])


# ---------------------------------------------------------------- suite runs


def case(run_id: str, position: int, *, outcome: str = "pass", finished_at: Optional[float] = T0,
         p50: float = 0.001, profile: str = "rpi5", config: str = "onnxruntime", job_id: str = "") -> SuiteCaseRow:
    return SuiteCaseRow(suite_run_id=run_id, position=position, model_name="net.onnx", model_sha256=SHA,
                        device_profile=profile, runtime_config=config, outcome=outcome,
                        job_id=job_id or uuid.uuid4().hex, finished_at=finished_at,
                        values={"latency.p50": p50, "latency.p99": p50 * 2, "energy.per_inference": None},
                        verdicts=[{"constraint": "latency.p50", "status": "pass", "measured": p50, "margin": 0.001}])


def test_suite_runs_are_recorded_read_back_and_updated(reg: RegressionStore):
    spec = {"name": "vision", "models": [{"sha256": SHA, "name": "net.onnx"}], "device_profiles": ["rpi5"],
            "settings": {"min_runs": 10, "input_shapes": [{"name": "x", "dims": [1, 3]}]}, "no_confirm": False,
            "tolerances": {"latency": 0.05}}
    run = reg.create_suite_run("vision", trigger="nightly", baseline="@last", spec=spec, accept=True, now=T0)
    read, cases = reg.get_suite_run(run.id)
    assert (read.suite, read.trigger, read.baseline, read.state, read.outcome, read.accept, read.accepted) == (
        "vision", "nightly", "@last", "running", "", True, False)
    assert read.spec == spec and read.started_at == T0 and read.finished_at is None and read.message == "" and cases == []

    comparison = {"regression": True, "summary": "p50 +12 %", "metrics": [
        {"metric": "latency.median", "ratio": 1.12, "p_value": 0.001, "ci_low": 1.05, "ci_high": 1.2}]}
    later, first = case(run.id, 1, outcome="regression"), case(run.id, 0)
    later.comparison, later.confirm_job_ids = comparison, ["c1", "c2"]
    run.state, run.outcome, run.finished_at, run.accepted = "finished", "fail", T0 + 60, True
    run.message = "x" * 5000
    reg.save_suite_run(run, [later, first])
    assert later.id is not None and first.id is not None and later.id != first.id
    read, cases = reg.get_suite_run(run.id)
    assert (read.state, read.outcome, read.finished_at, read.accepted, len(read.message)) == ("finished", "fail", T0 + 60, True, 5000)
    assert [c.position for c in cases] == [0, 1]
    assert cases[1].comparison == comparison and cases[1].confirm_job_ids == ["c1", "c2"]
    assert cases[0].comparison is None and cases[0].confirmation is None
    assert cases[0].values == {"latency.p50": 0.001, "latency.p99": 0.002, "energy.per_inference": None}

    # Saving the same cases again updates them in place.
    first.outcome, first.message = "budget_broken", "budget broken: latency.p50"
    reg.save_suite_run(run, [later, first])
    _, cases = reg.get_suite_run(run.id)
    assert [(c.id, c.outcome) for c in cases] == [(first.id, "budget_broken"), (later.id, "regression")]
    with pytest.raises(NotFound, match="suite run 'nope'"):
        reg.get_suite_run("nope")


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_non_finite_numbers_in_documents_read_back_the_same_on_every_backend(reg: RegressionStore, store: Repositories):
    run = reg.create_suite_run("s", trigger="cli", baseline="main", spec={}, accept=False, now=T0)
    odd = case(run.id, 0)
    odd.values = {"latency.p50": math.inf, "latency.p99": math.nan, "memory.peak": -math.inf, "power.mean": 2.5}
    odd.verdicts = [{"constraint": "throughput", "status": "pass", "measured": math.inf, "margin": math.inf,
                     "budget": 10, "reason": "Infinity is what the clock gave"}]
    odd.confirmation = {"metrics": [{"ratio": math.nan, "nested": [1.0, -math.inf]}]}
    # A comparison document already in the proto3 JSON spelling (regression.Comparison.to_dict).
    odd.comparison = {"metrics": [{"ci_low": "-Infinity", "p_value": "NaN", "ratio": 1.5}]}
    reg.save_suite_run(run, [odd])
    _, (read,) = reg.get_suite_run(run.id)
    assert same(read.values, odd.values) and same(read.verdicts, odd.verdicts) and same(read.confirmation, odd.confirmation)
    assert same(read.comparison, {"metrics": [{"ci_low": -math.inf, "p_value": math.nan, "ratio": 1.5}]})
    (point,) = reg.history("net.onnx", "rpi5")
    assert point.values["latency.p50"] == math.inf

    # Stored as the proto3 JSON strings, which PostgreSQL's JSON accepts (it has no NaN numbers).
    import sqlalchemy as sa
    with store.database.engine.connect() as conn:
        text = conn.execute(sa.text("SELECT CAST(\"values\" AS TEXT) FROM suite_cases")).scalar()
    assert '"Infinity"' in text and '"NaN"' in text and '"-Infinity"' in text

    (job,) = add_run(store)
    reg.add_budgets({job.id: [{"name": "throughput", "min": 10.0}, {"name": "latency.p50", "max": math.inf}]}, "c")
    assert reg.evaluations([job.id])[job.id].budgets[1] == {"name": "latency.p50", "max": math.inf}


def test_suite_runs_are_listed_newest_first_and_counted_when_finished(reg: RegressionStore):
    runs = []
    for i, (suite, outcome) in enumerate([("vision", "pass"), ("audio", "fail"), ("vision", "fail"),
                                          ("vision", "pass"), ("vision", "")]):
        run = reg.create_suite_run(suite, trigger="cli", baseline="main", spec={}, accept=False, now=T0 + i)
        if outcome:
            run.state, run.outcome, run.finished_at = "finished", outcome, T0 + i + 0.5
            reg.save_suite_run(run)
        runs.append(run)
    assert [r.id for r in reg.list_suite_runs()] == [r.id for r in reversed(runs)]
    assert [r.id for r in reg.list_suite_runs(suite="vision", limit=2)] == [runs[4].id, runs[3].id]
    assert reg.list_suite_runs(suite="nope") == []
    assert reg.suite_run_counts() == {("vision", "pass"): 2, ("vision", "fail"): 1, ("audio", "fail"): 1}


def test_runs_started_at_the_same_instant_list_in_a_stable_order(reg: RegressionStore):
    ids = [reg.create_suite_run("s", trigger="cli", baseline="", spec={}, accept=False, now=T0).id for _ in range(6)]
    listed = [r.id for r in reg.list_suite_runs()]
    assert sorted(listed) == sorted(ids)
    assert [r.id for r in reg.list_suite_runs()] == listed
    assert [r.id for r in reg.list_suite_runs(limit=3)] == listed[:3]


# ---------------------------------------------------------------- history


def test_history_is_oldest_first_limited_to_the_newest_and_filtered(reg: RegressionStore):
    night = 86400.0
    expected: List[float] = []
    for n in range(6):
        run = reg.create_suite_run("nightly", trigger="nightly", baseline="main", spec={}, accept=False, now=T0 + n * night)
        cases = [case(run.id, 0, finished_at=T0 + n * night + 30, p50=0.001 * (n + 1)),
                 case(run.id, 1, finished_at=T0 + n * night + 40, config="onnxruntime threads=4"),
                 case(run.id, 2, finished_at=T0 + n * night + 50, profile="jetson")]
        expected.append(0.001 * (n + 1))
        reg.save_suite_run(run, cases)
    unfinished = reg.create_suite_run("nightly", trigger="nightly", baseline="main", spec={}, accept=False, now=T0 + 9 * night)
    reg.save_suite_run(unfinished, [case(unfinished.id, 0, finished_at=None, outcome="")])

    rows = reg.history("net.onnx", "rpi5", config="onnxruntime")
    assert [r.values["latency.p50"] for r in rows] == expected
    assert [r.finished_at for r in rows] == sorted(r.finished_at for r in rows)
    newest = reg.history("net.onnx", "rpi5", config="onnxruntime", limit=2)
    assert [r.values["latency.p50"] for r in newest] == expected[-2:]
    assert len(reg.history("net.onnx", "rpi5")) == 12  # both runtime configurations
    assert {r.runtime_config for r in reg.history("net.onnx", "rpi5", config="onnxruntime threads=4")} == {"onnxruntime threads=4"}
    assert len(reg.history("net.onnx", "jetson")) == 6 and reg.history("other.onnx", "rpi5") == []

    latest = {(c.device_profile, c.runtime_config): c.values["latency.p50"] for c in reg.latest_cases()}
    assert latest == {("rpi5", "onnxruntime"): expected[-1], ("rpi5", "onnxruntime threads=4"): 0.001,
                      ("jetson", "onnxruntime"): 0.001}


def test_history_of_cases_finished_at_the_same_instant_is_in_recording_order(reg: RegressionStore):
    run = reg.create_suite_run("s", trigger="cli", baseline="main", spec={}, accept=False, now=T0)
    reg.save_suite_run(run, [case(run.id, i, finished_at=T0, p50=0.001 * (i + 1)) for i in range(5)])
    assert [r.position for r in reg.history("net.onnx", "rpi5")] == [0, 1, 2, 3, 4]
    assert [r.position for r in reg.history("net.onnx", "rpi5", limit=2)] == [3, 4]
    (newest,) = reg.latest_cases()
    assert newest.position == 4


# ---------------------------------------------------------------- nightly runs


def test_nightly_runs_are_recorded_on_the_backend(db_url: str, tmp_path: Path):
    """The nightly runner against a real controller on this database: each due slot records a
    suite run (trigger nightly) with its cases; no agent takes the job, so each run is a farm
    error that says why, and the counts the metrics read include it."""
    from hilfarm.controller.nightly import NightlyRunner
    from hilfarm.controller.server import Controller
    from hilfarm.suite_files import SuiteFile, SuiteModel

    model = tmp_path / "det.onnx"
    model.write_bytes(onnx_bytes(1200, b"model bytes "))
    controller = Controller(db_url=db_url, data_dir=tmp_path / "controller")
    controller.parts.database.migrate()
    controller.parts.artifacts.prepare()
    now = [1_800_000_000.0 - 30]  # 30 s before a minute boundary
    suite = SuiteFile(name="nightly-smoke", source=tmp_path / "s.yaml", devices=["no-such-board"], schedule="* * * * *",
                      models=[SuiteModel(path=model, name="det.onnx")], placement_timeout_seconds=0.2)
    try:
        runner = NightlyRunner(controller.parts.artifacts, controller.parts.suites, [suite], clock=lambda: now[0])
        assert runner.tick() == []
        now[0] += 31
        (run,) = runner.tick()
        assert runner.tick() == [], "one run per cron slot"
        controller.parts.suites.join(30)
        now[0] += 60
        (again,) = runner.tick()
        controller.parts.suites.join(30)
        assert runner.entries[0].runs == [run.id, again.id]
        recorded, cases = controller.parts.regressions.get_suite_run(run.id)
        assert (recorded.trigger, recorded.state, recorded.outcome) == ("nightly", "finished", "error")
        assert recorded.spec["schedule"] == "* * * * *" and recorded.spec["models"][0]["name"] == "det.onnx"
        assert [(c.model_name, c.device_profile, c.outcome) for c in cases] == [("det.onnx", "no-such-board", "error")]
        assert "no agent took the job within 0.2 s" in cases[0].message
        assert controller.parts.jobs.get_job(cases[0].job_id).job_state is JobState.CANCELLED
        assert [r.id for r in controller.parts.regressions.list_suite_runs(suite="nightly-smoke")] == [again.id, run.id]
        assert controller.parts.regressions.suite_run_counts() == {("nightly-smoke", "error"): 2}
        # The model file was stored once, under its digest.
        assert controller.parts.artifacts.stat(recorded.spec["models"][0]["sha256"]) is not None
    finally:
        controller.parts.scheduler.stop()
        controller.parts.database.close()
