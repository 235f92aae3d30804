"""Round trips of the telemetry summaries through hilfarm.v1 messages."""

from __future__ import annotations

import dataclasses

from hilfarm.agent.telemetry import (
    ClockSummary, PowerSummary, RailSummary, TelemetryPoint, TelemetrySummary, ThermalSummary, ZoneSummary,
)
from hilfarm.agent.telemetry.wire import (
    apply_summary, power_from_pb, power_to_pb, samples_from_pb, samples_to_pb, summary_from_result,
    summary_unavailable, thermal_from_pb, thermal_to_pb,
)
from hilfarm.v1 import farm_pb2


def full_power() -> PowerSummary:
    return PowerSummary(idle_watts=2.5, active_watts=7.25, energy_per_inference_joules=0.0125, energy_joules=None,
                        energy_method="energy counter", sensor="rapl /sys/class/powercap", sample_rate_hz=9.8,
                        rails=[RailSummary("package-0", 6.5), RailSummary("package-0/dram", 0.75)], simulated=True)


def full_thermal() -> ThermalSummary:
    return ThermalSummary(
        zones=[ZoneSummary("cpu-thermal", 45.0, 81.5, 79.0, "thermal-zones /sys/class/thermal")],
        clocks=[ClockSummary("cpu0", 1.2e9, 1.8e9, 1.8e9), ClockSummary("arm", 6e8, 1.5e9, None)],
        throttled=True, throttled_fraction=0.25, throttle_reasons=["throttled now"], cooldown_seconds=12.5,
        simulated=False)


def test_power_round_trip():
    p = full_power()
    assert power_from_pb(farm_pb2.PowerResult.FromString(power_to_pb(p).SerializeToString())) == p


def test_power_unmeasured_fields_come_back_none():
    p = dataclasses.replace(full_power(), idle_watts=None, energy_per_inference_joules=None)
    pb = power_to_pb(p)
    assert pb.idle_watts == 0.0
    back = power_from_pb(pb, {"power.idle_watts": "x", "power.energy_per_inference_joules": "y"})
    assert back == p


def test_thermal_round_trip_with_unknown_ceiling_and_unset_figures():
    t = full_thermal()
    assert thermal_from_pb(thermal_to_pb(t)) == t
    t2 = dataclasses.replace(t, throttled=None, throttled_fraction=None, cooldown_seconds=None)
    unavailable = {"thermal.throttled": "a", "thermal.throttled_fraction": "b", "thermal.cooldown_seconds": "c"}
    assert thermal_from_pb(thermal_to_pb(t2), unavailable) == t2


def test_samples_round_trip():
    pts = [TelemetryPoint(0.1, "hwmon:ina226 /sys/class/hwmon/hwmon2", "power_watts", "total", 4.65, False),
           TelemetryPoint(0.2, "thermal-zones", "temperature_celsius", "cpu-thermal", 52.15, True)]
    assert samples_from_pb(samples_to_pb(pts)) == pts


def test_apply_summary_fills_result_and_names_what_is_missing():
    s = TelemetrySummary(power=None, thermal=full_thermal(),
                         timeline=[TelemetryPoint(0.0, "x", "throttled", "device", 1.0, True)],
                         unavailable={"power": "no power sensor on this device"},
                         warnings=["under-voltage has occurred since boot"], simulated=True)
    result = farm_pb2.BenchmarkResult()
    apply_summary(result, s, context="profile generic-x86-linux")
    reasons = {u.field: u.reason for u in result.unavailable}
    assert reasons["power.active_watts"] == "no power sensor on this device (profile generic-x86-linux)"
    assert reasons["power.idle_watts"] == "no power sensor on this device (profile generic-x86-linux)"
    assert result.environment.simulated is True
    assert not result.HasField("power") and result.thermal.zones[0].max_celsius == 81.5
    back = summary_from_result(farm_pb2.BenchmarkResult.FromString(result.SerializeToString()))
    assert back.thermal == s.thermal and back.power is None and back.timeline == s.timeline
    assert back.warnings == s.warnings and back.simulated


def test_summary_unavailable_names_forgotten_none_figures():
    s = TelemetrySummary(power=dataclasses.replace(full_power(), idle_watts=None), thermal=None,
                         unavailable={"thermal": "no thermal sensor"})
    u = summary_unavailable(s)
    assert u["power.idle_watts"] == "not measured"
    assert u["thermal.throttled"] == "no thermal sensor"
