"""One job's telemetry: cooldown before the run, sampler with idle baseline and phase marks,
summary attached to the result and carried over the wire."""

from __future__ import annotations

import threading
import time

import pytest

from hilfarm.agent import wire
from hilfarm.agent.telemetry.job import (
    CooldownRule, JobTelemetry, TelemetryConfig, attach_summary, build_sensors, cooldown,
)
from hilfarm.agent.results import BenchmarkResult, Progress, Unavailable
from hilfarm.agent.sensors import RecordedRunner
from hilfarm.agent.sensors.simulated import SIMULATED_SENSORS, SimulatedDevice, SimulatedModel
from hilfarm.agent.telemetry import TelemetryPoint
from hilfarm.v1 import farm_pb2

ZONE = "sys/class/thermal/thermal_zone0/temp"


class FixedLoad:
    def __init__(self, values):
        self.values = list(values)

    def read(self):
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


def zones(d):
    return build_sensors({"zones": {"kind": "thermal-zones"}}, d.root)


def test_cooldown_waits_until_the_zone_is_cool(device):
    d = device("rpi4")
    d.write(ZONE, 70000)
    timer = threading.Timer(0.3, lambda: d.write(ZONE, 54000))
    timer.start()
    out = cooldown(CooldownRule(below_celsius=55, zone="cpu-thermal", max_wait_seconds=10, poll_seconds=0.05),
                   zones(d))
    timer.join()
    assert out.reached and out.message == "" and out.celsius == 54.0
    assert 0.25 <= out.seconds < 3


def test_cooldown_gives_up_and_says_why(device):
    d = device("rpi4")
    d.write(ZONE, 70000)
    out = cooldown(CooldownRule(below_celsius=55, zone="cpu-thermal", max_wait_seconds=0.2, poll_seconds=0.05),
                   zones(d))
    assert not out.reached and out.seconds >= 0.2
    assert "cooldown gave up after 0 s: cpu-thermal still at 70 °C (start below 55 °C)" == out.message


def test_cooldown_needs_idle_time_too(device):
    d = device("rpi4")
    rule = CooldownRule(below_celsius=55, zone="cpu-thermal", max_wait_seconds=5, idle_seconds=0.2, poll_seconds=0.05)
    out = cooldown(rule, zones(d), load=FixedLoad([0.9, 0.9, 0.9, 0.05]))
    assert out.reached and out.seconds >= 0.3  # three busy polls, then idle for 0.2 s
    busy = cooldown(CooldownRule(idle_seconds=1, max_wait_seconds=0.2, poll_seconds=0.05), [],
                    load=FixedLoad([0.9]))
    assert not busy.reached and "not idle (load under 20%) for 1 s" in busy.message


def test_cooldown_without_the_zone_does_not_wait_blind(device):
    out = cooldown(CooldownRule(below_celsius=55, zone="tj-thermal", max_wait_seconds=60), zones(device("rpi4")))
    assert out.seconds < 1 and out.message == "cooldown skipped: no temperature from zone tj-thermal"


def test_cooldown_stops_on_cancel(device):
    d = device("rpi4")
    d.write(ZONE, 70000)
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    out = cooldown(CooldownRule(below_celsius=55, max_wait_seconds=30, poll_seconds=5), zones(d), cancel=cancel)
    assert out.message == "cooldown interrupted: the job was cancelled" and out.seconds < 2


def test_fallback_sensor_only_when_the_primary_is_absent(device):
    d = device("jetson-nano")
    config = {"rails": {"kind": "jetson-ina3221"},
              "rails_fallback": {"kind": "tegrastats-power", "fallback_for": "rails"}}
    runner = RecordedRunner(d.cmds)
    assert [s.kind for s in build_sensors(config, d.root, runner)] == ["jetson-ina3221"]
    import shutil
    shutil.rmtree(d.root / "sys/bus/i2c/drivers/ina3221x")
    assert [s.kind for s in build_sensors(config, d.root, runner)] == ["jetson-ina3221", "tegrastats-power"]


def test_job_telemetry_on_a_simulated_device(tmp_path):
    dev = SimulatedDevice(tmp_path / "sim", SimulatedModel(time_constant_s=0.5, passive_trip_c=60.0))
    cfg = TelemetryConfig(sensors={k: dict(v) for k, v in SIMULATED_SENSORS.items()}, rate_hz=50,
                          idle_baseline_seconds=0.2, power_sensor="board_power",
                          cooldown=CooldownRule(below_celsius=90, zone="cpu-thermal", max_wait_seconds=5))
    tel = JobTelemetry(cfg, root=tmp_path / "sim")
    tel.before_run()
    assert tel.cooldown.reached and tel.cooldown.seconds < 1
    tel.mark("loading")
    tel.mark("measuring")
    for _ in range(10):
        dev.step(0.5, load=1.0)
        time.sleep(0.03)
    live = tel.drain()
    assert live and all(p.simulated for p in live)
    tel.mark("finished")
    summary = tel.finish(inferences=200)
    p = summary.power
    assert p.simulated and p.sensor.startswith("hwmon:ina226")  # power_sensor chose the board monitor
    assert p.energy_method == "integrated power"
    assert p.idle_watts == pytest.approx(2.5) and p.active_watts > p.idle_watts
    assert p.energy_per_inference_joules == pytest.approx(p.energy_joules / 200)
    assert summary.thermal.cooldown_seconds == tel.cooldown.seconds
    assert summary.thermal.throttled is True
    assert any("governor is 'schedutil', not 'performance'" in w for w in summary.warnings)


def test_attach_summary_and_the_result_message(tmp_path):
    dev = SimulatedDevice(tmp_path / "sim")
    cfg = TelemetryConfig(sensors={"zones": {"kind": "thermal-zones"}, "cpu_clocks": {"kind": "cpufreq"}},
                          idle_baseline_seconds=0)
    tel = JobTelemetry(cfg, root=tmp_path / "sim")
    tel.before_run()
    tel.mark("measuring")
    dev.step(1.0, load=1.0)
    tel.mark("finished")
    summary = tel.finish(inferences=10)
    result = BenchmarkResult()
    result.unavailable.append(Unavailable("environment.governor", "no cpufreq in the child's view"))
    attach_summary(result, summary, "test-unit")
    reasons = {u.field: u.reason for u in result.unavailable}
    assert reasons["power.active_watts"] == "no power sensor is configured for this device (profile test-unit)"
    assert "environment.governor" not in reasons and result.environment.governor == "schedutil"
    assert result.environment.simulated is True
    assert result.telemetry is summary and summary.warnings == [] and summary.unavailable == {}
    pb = farm_pb2.BenchmarkResult.FromString(wire.result_to_pb(result).SerializeToString())
    assert pb.thermal.simulated and pb.thermal.zones[0].zone == "cpu-thermal" and len(pb.timeline) > 0
    assert {u.field for u in pb.unavailable} >= {"power.idle_watts", "power.energy_per_inference_joules"}
    thermal = result.telemetry.thermal
    assert not pb.HasField("power")  # no power sensor: the section is absent, its figures named
    assert [(z.zone, z.max_celsius) for z in pb.thermal.zones] == [(z.zone, z.max_celsius) for z in thermal.zones]
    for name in ("throttled", "throttled_fraction", "cooldown_seconds"):
        assert (getattr(pb.thermal, name) if pb.thermal.HasField(name) else None) == getattr(thermal, name), name
    mine = [(u.field, u.reason) for u in pb.unavailable if u.field.split(".")[0] in ("power", "thermal")]
    assert mine == [(u.field, u.reason) for u in result.unavailable if u.field.split(".")[0] in ("power", "thermal")]
    assert list(pb.warnings) == result.warnings


def test_progress_carries_telemetry_over_the_wire():
    p = Progress("measuring", 3, 50, 1.5, 0.01, 1700000000.0,
                 telemetry=[TelemetryPoint(0.5, "vcgencmd", "throttled", "device", 1.0, False)])
    pb = wire.progress_to_pb(p)
    assert [(t.t, t.sensor, t.quantity, t.channel, t.value) for t in pb.telemetry] == \
        [(0.5, "vcgencmd", "throttled", "device", 1.0)]
    assert (pb.phase, pb.runs_done, pb.runs_target) == ("measuring", 3, 50)
    assert Progress.from_dict(p.to_dict()) == Progress("measuring", 3, 50, 1.5, 0.01, 1700000000.0)
