"""Nightly scheduling with a controllable clock, change points on synthetic nightly histories,
the regression metric families, and JUnit XML of a suite run."""
from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from hilfarm import reports
from hilfarm.controller.changepoints import detect
from hilfarm.controller.nightly import NightlyRunner
from hilfarm.suite_files import SuiteFile, SuiteModel
from hilfarm.v1 import farm_pb2


def nights(rng, n, level=10e-3, noise=0.01):
    return level * rng.lognormal(0, noise, n)


def test_a_step_is_found_at_the_night_it_happened():
    rng = np.random.default_rng(7)
    series = np.r_[nights(rng, 25), nights(rng, 15, level=10.6e-3)]
    points = detect(series)
    assert len(points) == 1 and points[0].index == 25 and points[0].ratio == pytest.approx(1.06, abs=0.01)


def test_a_slow_drift_no_pairwise_test_sees_is_found():
    rng = np.random.default_rng(8)
    series = 10e-3 * np.cumprod(np.full(40, 1.003)) * rng.lognormal(0, 0.005, 40)  # 0.3 % a night
    assert max(abs(b / a - 1) for a, b in zip(series, series[1:])) < 0.03  # no night-to-night jump
    points = detect(series)
    assert points and points[0].ratio > 1.03


def test_a_flat_noisy_history_has_no_change_point():
    for seed in range(10):
        assert detect(nights(np.random.default_rng(seed), 40, noise=0.02), seed=seed) == []


class FakeSuites:
    def __init__(self):
        self.started = []
        self.slots = []

    def start(self, spec, trigger, nightly_slot=None):
        self.started.append((spec["name"], trigger))
        self.slots.append(nightly_slot)

        class Run:
            id = f"run-{len(self.started)}"
        return Run()


class FakeController:
    def __init__(self):
        self.suites = FakeSuites()
        self.artifacts = None


def test_nightly_runs_each_suite_once_per_cron_slot():
    now = [dt.datetime(2026, 11, 3, 1, 58).timestamp()]
    controller = FakeController()
    suite = SuiteFile(name="vision", source="vision.yaml", devices=["rpi5"], schedule="0 2 * * *",
                      models=[SuiteModel(sha256="a" * 64, name="det.onnx", format="onnx")])
    every_minute = SuiteFile(name="smoke", source="smoke.yaml", devices=["local"], schedule="*/1 * * * *",
                             models=[SuiteModel(sha256="b" * 64, name="s.onnx", format="onnx")])
    runner = NightlyRunner(controller.artifacts, controller.suites, [suite, every_minute], clock=lambda: now[0])
    assert runner.tick() == [] and controller.suites.started == []
    now[0] += 60  # 01:59
    runner.tick()
    assert controller.suites.started == [("smoke", "nightly")]
    now[0] += 60  # 02:00
    runner.tick()
    runner.tick()  # the same minute again: nothing new
    assert controller.suites.started == [("smoke", "nightly"), ("vision", "nightly"), ("smoke", "nightly")]
    assert controller.suites.slots == [dt.datetime(2026, 11, 3, h, m).timestamp() for h, m in ((1, 59), (2, 0), (2, 0))], \
        "each run names its due time, the key that makes a slot run once across replicas"
    now[0] += 24 * 3600  # a day later: each once more, missed slots are not replayed
    runner.tick()
    assert controller.suites.started[-2:] == [("vision", "nightly"), ("smoke", "nightly")]


def test_a_suite_without_a_schedule_is_refused():
    with pytest.raises(ValueError, match="needs a schedule"):
        NightlyRunner(None, FakeSuites(), [SuiteFile(name="x", source="x.yaml", devices=["a"], models=[])])


def test_junit_xml_maps_outcomes_to_failures_errors_and_skips():
    run = farm_pb2.SuiteRun(id="r1", suite="s", outcome="fail", started_at=1.8e9, cases=[
        farm_pb2.SuiteCase(model_name="a", device_profile="p", outcome="regression", baseline_job_id="b",
                           message="latency regressed"),
        farm_pb2.SuiteCase(model_name="b", device_profile="p", outcome="no_baseline", message="no baseline"),
        farm_pb2.SuiteCase(model_name="c", device_profile="p", outcome="error", message="no agent took the job"),
        farm_pb2.SuiteCase(model_name="d", device_profile="p", outcome="unknown_budget", baseline_job_id="b",
                           verdicts=[farm_pb2.ConstraintVerdict(constraint="power.mean", comparison="<=", budget=3,
                                                                status=farm_pb2.VERDICT_STATUS_UNKNOWN, unit="W",
                                                                reason="no power sensor")]),
    ])
    root = ET.fromstring(reports.junit_xml(run).split("\n", 1)[1])
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("5", "2", "1", "1")
    lenient = ET.fromstring(reports.junit_xml(run, allow_unknown=True).split("\n", 1)[1])
    assert (lenient.get("failures"), lenient.get("skipped")) == ("1", "2")
    assert "<svg" in reports.history_svg([1, 2, 3], [1]) and reports.markdown(run).count("\n|") == 6


def test_metric_families_show_the_newest_case_and_run_counts(tmp_path):
    from hilfarm.controller.metrics import regression_metric_families
    from hilfarm.controller.models import SuiteCaseRow
    from hilfarm.controller.database import Database
    from hilfarm.controller.regression_store import RegressionStore

    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    database.migrate()
    reg = RegressionStore(database)
    for i, outcome in enumerate(["pass", "regression"]):
        run = reg.create_suite_run("vision", trigger="nightly", baseline="main", spec={}, accept=False, now=100.0 + i)
        run.state, run.outcome = "finished", "pass" if outcome == "pass" else "fail"
        reg.save_suite_run(run, [SuiteCaseRow(suite_run_id=run.id, model_name="det", model_sha256="a" * 64,
                                              device_profile="rpi5", runtime_config="onnxruntime threads=2",
                                              outcome=outcome, finished_at=100.0 + i)])
    # A case judged on a simulated device's energy says so in its label.
    run = reg.create_suite_run("demo", trigger="cli", baseline="main", spec={}, accept=False, now=103.0)
    run.state, run.outcome = "finished", "pass"
    reg.save_suite_run(run, [SuiteCaseRow(suite_run_id=run.id, model_name="mlp", model_sha256="b" * 64,
                                          device_profile="simulated", runtime_config="onnxruntime", outcome="pass",
                                          comparison={"metrics": [], "simulated": True}, finished_at=103.0)])
    families = {f.name: f for f in regression_metric_families(reg)}
    detected = families["hilfarm_regression_detected"].samples
    assert sorted((s.labels["model"], s.labels["simulated"], s.value) for s in detected) == [
        ("det", "false", 1.0), ("mlp", "true", 0.0)]
    assert {k for s in detected for k in s.labels} == {"model", "device_profile", "runtime", "simulated"}
    runs = {(s.labels["suite"], s.labels["outcome"]): s.value for s in families["hilfarm_suite_runs"].samples
            if s.name.endswith("_total")}
    assert runs == {("vision", "fail"): 1.0, ("vision", "pass"): 1.0, ("demo", "pass"): 1.0}
    database.close()


def test_junit_and_markdown_say_inconclusive_and_simulated():
    """An inconclusive comparison is skipped, not passed; a budget passed on a simulated sensor
    is never a pass; a case judged on simulated figures says so in its name and properties."""
    noisy = farm_pb2.Comparison(metrics=[farm_pb2.MetricComparison(
        metric="latency.median", verdict="unchanged", inconclusive=True, ratio=1.04, ci_low=0.98, ci_high=1.1,
        noise_floor=0.06, summary="latency change of +4.0% is below this device's noise floor of 6.0%")])
    run = farm_pb2.SuiteRun(id="r2", suite="s", outcome="pass", started_at=1.8e9, cases=[
        farm_pb2.SuiteCase(model_name="a", device_profile="p", outcome="inconclusive", baseline_job_id="b",
                           comparison=noisy, message="below this device's noise floor of 6.0%"),
        farm_pb2.SuiteCase(model_name="e", device_profile="simulated", outcome="unknown_budget", baseline_job_id="b",
                           simulated=True,
                           verdicts=[farm_pb2.ConstraintVerdict(constraint="power.mean", comparison="<=", budget=9,
                                                                measured=5.0, margin=4.0, unit="W", simulated=True,
                                                                status=farm_pb2.VERDICT_STATUS_PASS,
                                                                reason="measured by a simulated sensor")]),
    ])
    root = ET.fromstring(reports.junit_xml(run).split("\n", 1)[1])
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "1", "1")
    skipped = root.find(".//testcase/skipped")
    assert skipped is not None and skipped.get("message").startswith("inconclusive: ")
    budget = [tc for tc in root.iter("testcase") if tc.get("name").startswith("budget power.mean")][0]
    assert budget.get("name").endswith("(simulated)")
    assert budget.find("failure").get("message").startswith("simulated, never a real pass")
    assert budget.find("properties/property").attrib == {"name": "simulated", "value": "true"}
    lenient = ET.fromstring(reports.junit_xml(run, allow_unknown=True).split("\n", 1)[1])
    assert (lenient.get("failures"), lenient.get("skipped")) == ("0", "2")
    md = reports.markdown(run)
    assert "noise floor 6.0%" in md and "SIMULATED figures judged" in md and "❔ inconclusive" in md
