"""Telemetry summaries -> hilfarm.v1 PowerResult, ThermalResult, SustainedResult and TelemetrySample.

Measured figures are proto3 ``optional``: a figure that was not measured is left unset and
its field named in the result's ``unavailable`` (``power.idle_watts``, ``thermal.throttled``
...). ``PowerSummary.energy_joules`` is not on the wire.
"""

from __future__ import annotations

from typing import Dict, Iterable, List

from hilfarm.agent.telemetry.sustained import SustainedSummary
from hilfarm.agent.telemetry import PowerSummary, TelemetryPoint, TelemetrySummary, ThermalSummary
from hilfarm.v1 import farm_pb2

_POWER_OPTIONAL = ("idle_watts", "active_watts", "energy_per_inference_joules")
_THERMAL_OPTIONAL = ("throttled", "throttled_fraction", "cooldown_seconds")


def power_to_pb(p: PowerSummary) -> farm_pb2.PowerResult:
    pb = farm_pb2.PowerResult(energy_method=p.energy_method, sensor=p.sensor, sample_rate_hz=p.sample_rate_hz,
                              simulated=p.simulated, recorded=p.recorded)  # None leaves an optional unset
    for name in _POWER_OPTIONAL:
        v = getattr(p, name)
        if v is not None:
            setattr(pb, name, v)
    pb.rails.extend(farm_pb2.RailPower(rail=r.rail, mean_watts=r.mean_watts) for r in p.rails)

    return pb


def thermal_to_pb(t: ThermalSummary) -> farm_pb2.ThermalResult:
    pb = farm_pb2.ThermalResult(throttle_reasons=list(t.throttle_reasons), simulated=t.simulated,
                                recorded=t.recorded)
    for name in _THERMAL_OPTIONAL:
        v = getattr(t, name)
        if v is not None:
            setattr(pb, name, v)
    pb.zones.extend(farm_pb2.ZoneTemperature(zone=z.zone, start_celsius=z.start_celsius, max_celsius=z.max_celsius,
                                             end_celsius=z.end_celsius, sensor=z.sensor) for z in t.zones)
    # A ceiling the device did not state stays unset.
    pb.clocks.extend(farm_pb2.ClockRange(domain=c.domain, min_hz=c.min_hz, max_hz=c.max_hz,
                                         allowed_max_hz=c.allowed_max_hz) for c in t.clocks)
    return pb


def sample_to_pb(p: TelemetryPoint) -> farm_pb2.TelemetrySample:
    return farm_pb2.TelemetrySample(t=p.t, sensor=p.sensor, quantity=p.quantity, channel=p.channel, value=p.value,
                                    simulated=p.simulated, recorded=p.recorded)


def samples_to_pb(points: Iterable[TelemetryPoint]) -> List[farm_pb2.TelemetrySample]:
    return [sample_to_pb(p) for p in points]


def summary_unavailable(s: TelemetrySummary) -> Dict[str, str]:
    """Every field the summary leaves unset, with its reason (the ones it names, plus any None
    figure it forgot to name)."""
    out = dict(s.unavailable)
    if s.power is None:
        for name in _POWER_OPTIONAL:
            out.setdefault(f"power.{name}", out.get("power", "no power reading"))
    else:
        for name in _POWER_OPTIONAL:
            if getattr(s.power, name) is None:
                out.setdefault(f"power.{name}", "not measured")
    if s.thermal is None:
        for name in ("throttled", "throttled_fraction"):
            out.setdefault(f"thermal.{name}", out.get("thermal", "no thermal reading"))
    else:
        for name in _THERMAL_OPTIONAL:
            if getattr(s.thermal, name) is None:
                out.setdefault(f"thermal.{name}", "not measured")
    return out


def apply_summary(result: farm_pb2.BenchmarkResult, s: TelemetrySummary, context: str = "") -> None:
    """Fill ``result``'s power, thermal, timeline, unavailable, warnings and
    environment.simulated from a summary. ``context`` (e.g. "profile generic-x86-linux") is
    added to each reason so a person knows which device configuration lacked the sensor."""
    if s.power is not None:
        result.power.CopyFrom(power_to_pb(s.power))
    if s.thermal is not None:
        result.thermal.CopyFrom(thermal_to_pb(s.thermal))
    result.timeline.extend(samples_to_pb(s.timeline))
    known = {u.field for u in result.unavailable}
    for name, reason in summary_unavailable(s).items():
        if name in known:
            continue
        result.unavailable.add(field=name, reason=f"{reason} ({context})" if context else reason)
    for w in s.warnings:
        if w not in result.warnings:
            result.warnings.append(w)
    if s.simulated:
        result.environment.simulated = True
    if s.recorded:
        result.environment.recorded = True


_WINDOW_OPTIONAL = ("p50_seconds", "p90_seconds", "mean_watts", "max_celsius", "min_clock_hz", "throttled_fraction")
_SUSTAINED_OPTIONAL = ("latency_change_ratio", "temperature_rise_celsius", "throttled_after_seconds")


def sustained_to_pb(s: SustainedSummary) -> farm_pb2.SustainedResult:
    """The windows and summary figures (the summary's unavailable reasons travel in the
    result's unavailable list: see sustained.attach_sustained)."""
    pb = farm_pb2.SustainedResult(requested_seconds=s.requested_seconds, duration_seconds=s.duration_seconds,
                                  window_seconds=s.window_seconds, simulated=s.simulated)
    for name in _SUSTAINED_OPTIONAL:
        v = getattr(s, name)
        if v is not None:
            setattr(pb, name, v)
    for w in s.windows:
        wpb = pb.windows.add(start_seconds=w.start_seconds, end_seconds=w.end_seconds, runs=w.runs)
        for name in _WINDOW_OPTIONAL:
            v = getattr(w, name)
            if v is not None:
                setattr(wpb, name, v)
    return pb
