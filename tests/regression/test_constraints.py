"""Constraint sets: parsing (schema errors name file and field), per-device overrides, and
pass / fail / unknown verdicts on result documents."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hilfarm.constraints import (FAIL, PASS, UNKNOWN, ConstraintError, evaluate, load_constraint_set, overall)

PROFILES = Path(__file__).resolve().parents[2] / "profiles"

RESULT = {
    "latency": {"samples_ns": [10_000_000 + i * 10_000 for i in range(100)], "load_seconds": 0.5,
                "throughput_per_second": 95.0},
    "memory": {"peak_bytes": 200 << 20, "model_file_bytes": 5 << 20},
    "power": {"active_watts": 4.2, "energy_per_inference_joules": 0.04},
    "thermal": {"zones": [{"zone": "cpu", "max_celsius": 71.0}], "throttled": True, "throttled_fraction": 0.2},
}


def write(tmp_path, doc) -> Path:
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_example_constraint_sets_load():
    examples = sorted((PROFILES / "constraints").glob("*.yaml"))
    assert [p.name for p in examples] == ["doorbell-camera.yaml", "kiosk.yaml"]
    for path in examples:
        assert load_constraint_set(path).budgets


def test_verdicts_pass_and_fail_with_margins(tmp_path):
    cs = load_constraint_set(write(tmp_path, {"name": "cam", "budgets": {
        "latency.p99": "12ms", "memory.peak": "256MiB", "model.size": "4MiB", "power.mean": "5W",
        "energy.per_inference": "30mJ", "temperature.max": "80C", "thermal.throttling": "forbidden",
        "latency.load": "1s", "throughput": "90/s"}}))
    verdicts = {v.constraint: v for v in evaluate(cs.for_profile("rpi5"), RESULT)}
    assert verdicts["latency.p99"].status == PASS and verdicts["latency.p99"].margin == pytest.approx(0.012 - 0.01099, abs=2e-4)
    assert verdicts["memory.peak"].status == PASS
    assert verdicts["model.size"].status == FAIL and verdicts["model.size"].margin < 0
    assert verdicts["energy.per_inference"].status == FAIL
    assert verdicts["thermal.throttling"].status == FAIL and verdicts["thermal.throttling"].measured == 1.0
    assert verdicts["throughput"].comparison == ">=" and verdicts["throughput"].status == PASS
    assert overall(list(verdicts.values())) == FAIL


def test_unmeasured_figures_are_unknown_never_pass(tmp_path):
    cs = load_constraint_set(write(tmp_path, {"budgets": {"power.mean": "5W", "temperature.max": "80C",
                                                          "thermal.throttling": "forbidden", "memory.peak": "1GiB"}}))
    no_sensors = {"latency": RESULT["latency"], "memory": {"peak_bytes": 1},
                  "unavailable": [{"field": "power", "reason": "no power sensor on this device"}]}
    verdicts = {v.constraint: v for v in evaluate(cs.budgets, no_sensors)}
    assert verdicts["power.mean"].status == UNKNOWN and "no power sensor" in verdicts["power.mean"].reason
    assert verdicts["temperature.max"].status == UNKNOWN and verdicts["temperature.max"].measured is None
    assert verdicts["thermal.throttling"].status == UNKNOWN
    assert verdicts["memory.peak"].status == PASS
    assert overall(list(verdicts.values())) == UNKNOWN
    named = dict(RESULT, unavailable=[{"field": "thermal.throttled", "reason": "no throttle sensor"}])
    throttle = [v for v in evaluate(cs.budgets, named) if v.constraint == "thermal.throttling"][0]
    assert throttle.status == UNKNOWN and "no throttle sensor" in throttle.reason


def test_a_device_override_replaces_the_global_budget(tmp_path):
    cs = load_constraint_set(write(tmp_path, {"budgets": {"latency.p99": "5ms", "memory.peak": "1GiB"},
                                              "devices": {"raspberry-pi-4": {"latency.p99": "50ms"}}}))
    pi = {b.name: b for b in cs.for_profile("raspberry-pi-4")}
    other = {b.name: b for b in cs.for_profile("jetson")}
    assert pi["latency.p99"].max == pytest.approx(0.05) and pi["latency.p99"].device_profile == "raspberry-pi-4"
    assert other["latency.p99"].max == pytest.approx(0.005) and "memory.peak" in pi
    assert [v.status for v in evaluate([pi["latency.p99"]], RESULT)] == [PASS]
    assert [v.status for v in evaluate([other["latency.p99"]], RESULT)] == [FAIL]


@pytest.mark.parametrize("doc, field", [
    ({"budgets": {"latency.p99": {"maximum": 3}}}, "budgets.latency.p99"),
    ({"budgets": {"latency.p99": "fast"}}, "budgets.latency.p99"),
    ({"budgets": {"latency.speed": "3ms"}}, "budgets.latency.speed"),
    ({"budgets": {}, "devices": {"rpi5": {"memory.peak": "3 parsecs"}}}, "devices.rpi5.memory.peak"),
    ({"budget": {}}, "(top level)"),
])
def test_schema_errors_name_the_file_and_the_field(tmp_path, doc, field):
    path = write(tmp_path, doc)
    with pytest.raises(ConstraintError) as error:
        load_constraint_set(path)
    assert str(path) in str(error.value) and field in str(error.value)


def test_a_simulated_reading_is_judged_and_flagged_but_never_a_real_pass(tmp_path):
    cs = load_constraint_set(write(tmp_path, {"name": "sim", "budgets": {
        "power.mean": "5W", "temperature.max": "60C", "latency.p99": "1s"}}))
    simulated = dict(RESULT, power=dict(RESULT["power"], simulated=True),
                     thermal=dict(RESULT["thermal"], simulated=True))
    by_name = {v.constraint: v for v in evaluate(cs.budgets, simulated)}
    power, heat, latency = by_name["power.mean"], by_name["temperature.max"], by_name["latency.p99"]
    assert power.status == PASS and power.simulated and power.gating_status == UNKNOWN
    assert "simulated" in power.reason
    assert heat.status == FAIL and heat.simulated and heat.gating_status == FAIL  # a simulated failure still fails
    assert latency.status == PASS and not latency.simulated and latency.gating_status == PASS  # real timing
    assert overall([power, latency]) == UNKNOWN and overall([latency]) == PASS
    assert power.to_dict()["simulated"] is True and type(power).from_dict(power.to_dict()) == power
