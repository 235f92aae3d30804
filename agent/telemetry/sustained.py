"""Sustained mode: latency, power and temperature over time, to expose thermal throttling.

A job with ``sustained_seconds > 0`` keeps its timed phase running for that long of wall time
(the child stops at a safety cap of runs). Afterwards the agent cuts the phase into windows and
gives each its latency (from the child's raw samples) and its telemetry (from the sampler).

The child times each inference but not the gaps between them (a few hundred nanoseconds of loop
and the occasional progress line); it does measure the phase's wall time. So an inference's
place in time is the cumulative sum of the samples up to its end, stretched evenly so that the
last one ends at the phase's wall time, counted from the sampler's ``measuring`` mark. That
mark is taken when the child's progress line arrives, a pipe hop (well under a millisecond)
after the phase began; windows of a second or more make both approximations negligible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from hilfarm.agent.telemetry import Sampler, WindowedTelemetry

SUSTAINED_MAX_RUNS = 1_000_000  # bounds the child's memory and the result's size
MIN_WINDOW_SECONDS = 1.0
TARGET_WINDOWS = 60
TIMED_PHASE = "measuring"


@dataclass
class SustainedWindow:
    start_seconds: float  # since the timed phase began
    end_seconds: float
    runs: int = 0  # timed inferences that ended in the window
    p50_seconds: Optional[float] = None
    p90_seconds: Optional[float] = None
    mean_watts: Optional[float] = None
    max_celsius: Optional[float] = None  # hottest zone
    min_clock_hz: Optional[float] = None  # lowest clock of any domain
    throttled_fraction: Optional[float] = None


@dataclass
class SustainedSummary:
    requested_seconds: float
    duration_seconds: float  # wall time of the timed phase (the sum of the samples if unknown)
    window_seconds: float
    windows: List[SustainedWindow] = field(default_factory=list)
    latency_change_ratio: Optional[float] = None  # p50 of the last window / p50 of the first
    temperature_rise_celsius: Optional[float] = None  # max °C of the last window - of the first
    throttled_after_seconds: Optional[float] = None  # None: not throttled, or not measurable
    simulated: bool = False
    # "sustained.<field>" -> why it is not measured; moved into the result's own list.
    unavailable: Dict[str, str] = field(default_factory=dict)


def window_length(requested_seconds: float) -> float:
    """About TARGET_WINDOWS windows, none shorter than a second."""
    return max(MIN_WINDOW_SECONDS, requested_seconds / TARGET_WINDOWS)


def window_edges(duration: float, window: float) -> List[float]:
    """Window boundaries from 0 to ``duration``; a trailing piece shorter than half a window
    joins the window before it, so that the last window's latency is not a handful of runs."""
    if duration <= 0:
        return []
    n = max(1, int(math.ceil(duration / window - 1e-9)))
    edges = [k * window for k in range(n)] + [duration]
    if n > 1 and duration - edges[-2] < window / 2:
        del edges[-2]
    return edges


def latency_windows(samples_ns: Sequence[int], edges: Sequence[float],
                    stretch: float = 1.0) -> List[Tuple[int, Optional[float], Optional[float]]]:
    """(runs, p50, p90) per window (lo, hi]; an inference belongs to the window in which it
    ended, its end being the cumulative sum of the samples times ``stretch``."""
    import numpy as np

    a = np.asarray(samples_ns, dtype=np.float64) / 1e9
    ends = np.cumsum(a) * stretch
    out = []
    last = len(edges) - 2
    for k, (lo, hi) in enumerate(zip(edges, edges[1:])):
        # The last window also takes an end that rounding put a hair past the phase's end.
        sel = ((ends > lo) if k else (ends >= lo)) & (ends <= (hi if k < last else hi + 1e-9))
        chosen = a[sel]
        if len(chosen):
            p50, p90 = (float(x) for x in np.percentile(chosen, [50, 90]))
            out.append((int(len(chosen)), p50, p90))
        else:
            out.append((0, None, None))
    return out


def sustained_summary(samples_ns: Sequence[int], requested_seconds: float, sampler: Optional[Sampler],
                      wall_seconds: Optional[float] = None, window_seconds: Optional[float] = None,
                      timed_phase: str = TIMED_PHASE) -> SustainedSummary:
    """Windows of a finished sustained run: latency from ``samples_ns`` (in order, spanning
    ``wall_seconds`` of wall time when known), telemetry from ``sampler`` (stopped), aligned on
    the sampler's ``timed_phase`` mark."""
    window = window_seconds if window_seconds and window_seconds > 0 else window_length(requested_seconds)
    measured = sum(samples_ns) / 1e9
    duration = wall_seconds if wall_seconds is not None and wall_seconds >= measured else measured
    stretch = duration / measured if measured > 0 else 1.0
    out = SustainedSummary(requested_seconds=requested_seconds, duration_seconds=duration, window_seconds=window)
    edges = window_edges(duration, window)
    for (lo, hi), (runs, p50, p90) in zip(zip(edges, edges[1:]), latency_windows(samples_ns, edges, stretch)):
        out.windows.append(SustainedWindow(lo, hi, runs, p50, p90))
    if any(w.runs == 0 for w in out.windows):
        out.unavailable["sustained.windows.p50_seconds"] = (
            "no inference ended in some windows: one inference takes longer than a window")
        out.unavailable["sustained.windows.p90_seconds"] = out.unavailable["sustained.windows.p50_seconds"]

    tel = _telemetry(sampler, edges, timed_phase)
    out.simulated = tel.simulated
    for w, r in zip(out.windows, tel.windows):
        w.mean_watts, w.max_celsius = r.mean_watts, r.max_celsius
        w.min_clock_hz, w.throttled_fraction = r.min_clock_hz, r.throttled_fraction
    for name, why in tel.unavailable.items():
        out.unavailable[f"sustained.windows.{name}"] = why

    first, last = (out.windows[0], out.windows[-1]) if out.windows else (None, None)
    if first is None or first is last:
        why = f"the run made a single window of {window:g} s; run longer than {1.5 * window:g} s"
        if first is None:
            why = "the timed phase took no measurable time"
        out.unavailable["sustained.latency_change_ratio"] = why
        out.unavailable["sustained.temperature_rise_celsius"] = why
    else:
        if first.p50_seconds and last.p50_seconds is not None:
            out.latency_change_ratio = last.p50_seconds / first.p50_seconds
        else:
            out.unavailable["sustained.latency_change_ratio"] = "the first or the last window has no latency"
        if first.max_celsius is not None and last.max_celsius is not None:
            out.temperature_rise_celsius = last.max_celsius - first.max_celsius
        else:
            out.unavailable["sustained.temperature_rise_celsius"] = tel.unavailable.get(
                "max_celsius", "the first or the last window has no temperature")
    out.throttled_after_seconds = tel.throttled_after_seconds
    if not tel.throttle_judged:
        out.unavailable["sustained.throttled_after_seconds"] = tel.unavailable.get(
            "throttled_fraction", "no sensor on this device reports throttling")
    return out


def _telemetry(sampler: Optional[Sampler], edges: List[float], phase: str) -> WindowedTelemetry:
    n = max(0, len(edges) - 1)
    if sampler is None:
        why = "no sensors were sampled during the job"
    else:
        start = sampler.mark_time(phase)
        if start is not None:
            return sampler.windows(start, edges)
        why = f"the sampler saw no '{phase}' phase, so the readings cannot be placed in the windows"
    from hilfarm.agent.telemetry import WindowReadings

    return WindowedTelemetry(windows=[WindowReadings() for _ in range(n)], unavailable={
        name: why for name in ("mean_watts", "max_celsius", "min_clock_hz", "throttled_fraction")})


def attach_sustained(result: object, summary: SustainedSummary) -> None:
    """Put ``summary`` into a BenchmarkResult (agent/results.py), its unavailable figures into
    the result's own list (kept once, as telemetry.job.attach_summary does)."""
    from hilfarm.agent.results import Unavailable

    named = {u.field for u in result.unavailable}  # type: ignore[attr-defined]
    for name, why in summary.unavailable.items():
        if name not in named:
            result.unavailable.append(Unavailable(name, why))  # type: ignore[attr-defined]
    summary.unavailable = {}
    if summary.simulated:
        result.environment.simulated = True  # type: ignore[attr-defined]
    result.sustained = summary  # type: ignore[attr-defined]
