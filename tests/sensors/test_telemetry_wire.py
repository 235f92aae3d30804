"""Telemetry summaries written as hilfarm.v1 messages: every figure set with its value, or unset."""

from __future__ import annotations

import dataclasses

from hilfarm.agent.telemetry import (
    ClockSummary, PowerSummary, RailSummary, TelemetryPoint, TelemetrySummary, ThermalSummary, ZoneSummary,
)
from hilfarm.agent.telemetry.wire import apply_summary, power_to_pb, samples_to_pb, summary_unavailable, thermal_to_pb
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


def set_or_unset(msg, **figures):
    for name, value in figures.items():
        assert msg.HasField(name) == (value is not None), name
        if value is not None:
            assert getattr(msg, name) == value, name


def test_power():
    p = full_power()
    pb = farm_pb2.PowerResult.FromString(power_to_pb(p).SerializeToString())
    set_or_unset(pb, idle_watts=2.5, active_watts=7.25, energy_per_inference_joules=0.0125, sample_rate_hz=9.8)
    assert (pb.energy_method, pb.sensor, pb.simulated, pb.recorded) == ("energy counter", "rapl /sys/class/powercap", True, False)
    assert [(r.rail, r.mean_watts) for r in pb.rails] == [("package-0", 6.5), ("package-0/dram", 0.75)]


def test_power_unmeasured_fields_are_unset():
    pb = power_to_pb(dataclasses.replace(full_power(), idle_watts=None, energy_per_inference_joules=None,
                                         sample_rate_hz=None))
    set_or_unset(pb, idle_watts=None, active_watts=7.25, energy_per_inference_joules=None, sample_rate_hz=None)


def test_a_measured_zero_is_set():
    pb = power_to_pb(dataclasses.replace(full_power(), idle_watts=0.0))
    set_or_unset(pb, idle_watts=0.0)
    pb = thermal_to_pb(dataclasses.replace(full_thermal(), throttled=False, throttled_fraction=0.0))
    set_or_unset(pb, throttled=False, throttled_fraction=0.0)


def test_thermal_with_unknown_ceiling_and_unset_figures():
    pb = farm_pb2.ThermalResult.FromString(thermal_to_pb(full_thermal()).SerializeToString())
    set_or_unset(pb, throttled=True, throttled_fraction=0.25, cooldown_seconds=12.5)
    assert [(z.zone, z.start_celsius, z.max_celsius, z.end_celsius, z.sensor) for z in pb.zones] == \
        [("cpu-thermal", 45.0, 81.5, 79.0, "thermal-zones /sys/class/thermal")]
    set_or_unset(pb.clocks[0], min_hz=1.2e9, max_hz=1.8e9, allowed_max_hz=1.8e9)
    set_or_unset(pb.clocks[1], min_hz=6e8, max_hz=1.5e9, allowed_max_hz=None)  # the device did not say
    assert list(pb.throttle_reasons) == ["throttled now"] and not pb.simulated
    t2 = dataclasses.replace(full_thermal(), throttled=None, throttled_fraction=None, cooldown_seconds=None)
    set_or_unset(thermal_to_pb(t2), throttled=None, throttled_fraction=None, cooldown_seconds=None)


def test_samples():
    pts = [TelemetryPoint(0.1, "hwmon:ina226 /sys/class/hwmon/hwmon2", "power_watts", "total", 4.65, False),
           TelemetryPoint(0.2, "thermal-zones", "temperature_celsius", "cpu-thermal", 52.15, True)]
    assert [(m.t, m.sensor, m.quantity, m.channel, m.value, m.simulated, m.recorded) for m in samples_to_pb(pts)] == \
        [(p.t, p.sensor, p.quantity, p.channel, p.value, p.simulated, p.recorded) for p in pts]


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
    assert [(z.zone, z.max_celsius) for z in result.thermal.zones] == [("cpu-thermal", 81.5)]
    assert [(t.t, t.quantity, t.value, t.simulated) for t in result.timeline] == [(0.0, "throttled", 1.0, True)]
    assert list(result.warnings) == s.warnings


def test_summary_unavailable_names_forgotten_none_figures():
    s = TelemetrySummary(power=dataclasses.replace(full_power(), idle_watts=None), thermal=None,
                         unavailable={"thermal": "no thermal sensor"})
    u = summary_unavailable(s)
    assert u["power.idle_watts"] == "not measured"
    assert u["thermal.throttled"] == "no thermal sensor"
