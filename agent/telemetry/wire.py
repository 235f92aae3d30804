"""Telemetry summaries <-> hilfarm.v1 PowerResult, ThermalResult and TelemetrySample.

proto3 scalars have no "unset": a figure that was not measured goes out as zero and its field
is named in ``unavailable`` (``power.idle_watts``, ``thermal.throttled`` ...); coming back, a
field named there is None again. ``PowerSummary.energy_joules`` is not on the wire.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping

from hilfarm.agent.telemetry.sustained import SustainedSummary, SustainedWindow
from hilfarm.agent.telemetry import (
    ClockSummary,
    PowerSummary,
    RailSummary,
    TelemetryPoint,
    TelemetrySummary,
    ThermalSummary,
    ZoneSummary,
)
from hilfarm.v1 import farm_pb2

_POWER_OPTIONAL = ("idle_watts", "active_watts", "energy_per_inference_joules")
_THERMAL_OPTIONAL = ("throttled", "throttled_fraction", "cooldown_seconds")


def power_to_pb(p: PowerSummary) -> farm_pb2.PowerResult:
    pb = farm_pb2.PowerResult(energy_method=p.energy_method, sensor=p.sensor, sample_rate_hz=p.sample_rate_hz,
                              simulated=p.simulated, recorded=p.recorded)
    for name in _POWER_OPTIONAL:
        v = getattr(p, name)
        if v is not None:
            setattr(pb, name, v)
    pb.rails.extend(farm_pb2.RailPower(rail=r.rail, mean_watts=r.mean_watts) for r in p.rails)
    return pb


def power_from_pb(pb: farm_pb2.PowerResult, unavailable: Mapping[str, str] = {}) -> PowerSummary:
    p = PowerSummary(energy_method=pb.energy_method, sensor=pb.sensor, sample_rate_hz=pb.sample_rate_hz,
                     simulated=pb.simulated, recorded=pb.recorded, rails=[RailSummary(r.rail, r.mean_watts) for r in pb.rails])
    for name in _POWER_OPTIONAL:
        setattr(p, name, None if f"power.{name}" in unavailable else getattr(pb, name))
    return p


def thermal_to_pb(t: ThermalSummary) -> farm_pb2.ThermalResult:
    pb = farm_pb2.ThermalResult(throttle_reasons=list(t.throttle_reasons), simulated=t.simulated,
                                recorded=t.recorded)
    for name in _THERMAL_OPTIONAL:
        v = getattr(t, name)
        if v is not None:
            setattr(pb, name, v)
    pb.zones.extend(farm_pb2.ZoneTemperature(zone=z.zone, start_celsius=z.start_celsius, max_celsius=z.max_celsius,
                                             end_celsius=z.end_celsius, sensor=z.sensor) for z in t.zones)
    pb.clocks.extend(farm_pb2.ClockRange(domain=c.domain, min_hz=c.min_hz, max_hz=c.max_hz,
                                         allowed_max_hz=c.allowed_max_hz or 0.0) for c in t.clocks)
    return pb


def thermal_from_pb(pb: farm_pb2.ThermalResult, unavailable: Mapping[str, str] = {}) -> ThermalSummary:
    t = ThermalSummary(
        zones=[ZoneSummary(z.zone, z.start_celsius, z.max_celsius, z.end_celsius, z.sensor) for z in pb.zones],
        # allowed_max_hz 0 on the wire means the device did not say (documented in the proto).
        clocks=[ClockSummary(c.domain, c.min_hz, c.max_hz, c.allowed_max_hz or None) for c in pb.clocks],
        throttle_reasons=list(pb.throttle_reasons),
        simulated=pb.simulated,
        recorded=pb.recorded,
    )
    for name in _THERMAL_OPTIONAL:
        setattr(t, name, None if f"thermal.{name}" in unavailable else getattr(pb, name))
    return t


def sample_to_pb(p: TelemetryPoint) -> farm_pb2.TelemetrySample:
    return farm_pb2.TelemetrySample(t=p.t, sensor=p.sensor, quantity=p.quantity, channel=p.channel, value=p.value,
                                    simulated=p.simulated, recorded=p.recorded)


def sample_from_pb(pb: farm_pb2.TelemetrySample) -> TelemetryPoint:
    return TelemetryPoint(pb.t, pb.sensor, pb.quantity, pb.channel, pb.value, pb.simulated, pb.recorded)


def samples_to_pb(points: Iterable[TelemetryPoint]) -> List[farm_pb2.TelemetrySample]:
    return [sample_to_pb(p) for p in points]


def samples_from_pb(pbs: Iterable[farm_pb2.TelemetrySample]) -> List[TelemetryPoint]:
    return [sample_from_pb(p) for p in pbs]


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


def summary_from_result(result: farm_pb2.BenchmarkResult) -> TelemetrySummary:
    """The inverse of apply_summary, for tests and tools that read results."""
    unavailable = {u.field: u.reason for u in result.unavailable
                   if u.field.startswith("power") or u.field.startswith("thermal")}
    s = TelemetrySummary(unavailable=unavailable, simulated=result.environment.simulated,
                         recorded=result.HasField("power") and result.power.recorded
                         or result.HasField("thermal") and result.thermal.recorded,
                         timeline=samples_from_pb(result.timeline), warnings=list(result.warnings))
    if result.HasField("power"):
        s.power = power_from_pb(result.power, unavailable)
    if result.HasField("thermal"):
        s.thermal = thermal_from_pb(result.thermal, unavailable)
    return s


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


def sustained_from_pb(pb: farm_pb2.SustainedResult, unavailable: Mapping[str, str] = {}) -> SustainedSummary:
    s = SustainedSummary(requested_seconds=pb.requested_seconds, duration_seconds=pb.duration_seconds,
                         window_seconds=pb.window_seconds, simulated=pb.simulated,
                         unavailable={k: v for k, v in unavailable.items() if k.startswith("sustained.")})
    for name in _SUSTAINED_OPTIONAL:
        setattr(s, name, getattr(pb, name) if pb.HasField(name) else None)
    for wpb in pb.windows:
        w = SustainedWindow(wpb.start_seconds, wpb.end_seconds, wpb.runs)
        for name in _WINDOW_OPTIONAL:
            setattr(w, name, getattr(wpb, name) if wpb.HasField(name) else None)
        s.windows.append(w)
    return s
