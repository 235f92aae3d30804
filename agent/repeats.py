"""A job measured in several child processes: one result from its repeats.

Each repeat is a fresh process with its own load, warmup and timed phase, so its figures
differ from the next repeat's by what differs between processes (memory layout, allocator
and cache state, clocks and heat, neighbours). The joined result keeps every repeat's
summary (``repeats``) and its raw samples (``latency.samples_ns`` holds them in order; each
repeat says where its own begin), and says how far apart the repeats were:

- latency percentiles, mean, std, cv and throughput pool the samples of every repeat;
- load time, first inference and warmup are the median over the repeats, and the drift ratio
  the median of the repeats' own (a pooled "first tenth vs last tenth" would compare repeat 1
  with repeat R, which is the between-repeat spread, not drift);
- memory is that of the repeat with the highest peak;
- ``between_repeat_spread`` is the standard deviation of the log of the per-repeat medians,
  the noise the regression checks take as their unit;
- the result is steady only when every repeat was.
"""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence

from hilfarm.agent import statistics
from hilfarm.agent.results import BenchmarkResult, Stability, Unavailable

# Repeats whose medians differ by more than this (as a spread) get a warning: every figure
# still stands, but a comparison needs more repeats to resolve a small change.
WIDE_REPEAT_SPREAD = 0.10


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def join_repeats(results: Sequence[BenchmarkResult]) -> BenchmarkResult:
    """One BenchmarkResult from the results of a job's repeats, in the order they ran."""
    if not results:
        raise ValueError("a job has at least one repeat")
    count = len(results)
    joined = copy.deepcopy(results[0])
    if count == 1:
        joined.latency.repeats = 1
        joined.latency.repeat_p50_min_seconds = joined.latency.repeat_p50_max_seconds = joined.latency.p50_seconds
        joined.unavailable.append(Unavailable(
            "latency.between_repeat_spread", "measured in one process (repeats=1): no spread between processes"))
        if joined.repeats:
            joined.repeats[0].index = 0
        return joined

    samples: List[int] = []
    repeats = []
    for k, r in enumerate(results):
        stats = copy.deepcopy(r.repeats[0])
        stats.index = k
        stats.first_sample = len(samples)
        stats.count = len(r.latency.samples_ns)
        samples.extend(r.latency.samples_ns)
        repeats.append(stats)
    joined.repeats = repeats

    lat = joined.latency
    lat.samples_ns = samples
    fields, missing = statistics.summarize(samples)
    for name, value in fields.items():
        setattr(lat, name, value)
    lat.drift_ratio = _median([r.latency.drift_ratio for r in results])
    lat.load_seconds = _median([r.latency.load_seconds for r in results])
    lat.first_inference_seconds = _median([r.latency.first_inference_seconds for r in results])
    lat.warmup_seconds = _median([r.latency.warmup_seconds for r in results])
    lat.warmup_runs = int(round(statistics.median([r.latency.warmup_runs for r in results])))
    medians = [r.latency.p50_seconds for r in results if r.latency.p50_seconds is not None]
    lat.repeats = count
    lat.repeat_p50_min_seconds = min(medians) if medians else None
    lat.repeat_p50_max_seconds = max(medians) if medians else None
    lat.between_repeat_spread = statistics.between_repeat_spread(medians)

    peak = max(results, key=lambda r: r.memory.peak_bytes if r.memory.peak_bytes is not None else -1)
    joined.memory = copy.deepcopy(peak.memory)
    if joined.memory.source:
        joined.memory.source += f"; the repeat with the highest peak of {count}"

    # Unavailable figures: latency ones as the pooled summary finds them, the rest once each.
    unavailable = [Unavailable(f, why) for f, why in missing]
    if lat.drift_ratio is None:
        unavailable.append(Unavailable("latency.drift_ratio", "no repeat had enough timed runs for a drift ratio"))
    if lat.between_repeat_spread is None:
        unavailable.append(Unavailable("latency.between_repeat_spread", "fewer than two repeats had a median"))
    named = {u.field for u in unavailable}
    for r in results:
        for u in r.unavailable:
            if u.field not in named and not u.field.startswith("latency."):
                unavailable.append(u)
                named.add(u.field)
    joined.unavailable = unavailable

    # Warnings every repeat gave once; a repeat's own unsteadiness under its number.
    warnings: List[str] = []
    reasons: List[str] = []
    for k, r in enumerate(results):
        own = set(r.stability.reasons)
        for w in r.warnings:
            text = f"repeat {k + 1} of {count}: {w}" if w in own or not all(w in o.warnings for o in results) else w
            if text not in warnings:
                warnings.append(text)
        reasons.extend(f"repeat {k + 1} of {count}: {why}" for why in r.stability.reasons)
    spread = lat.between_repeat_spread
    if spread is not None and spread > WIDE_REPEAT_SPREAD:
        warnings.append(
            f"the repeats disagree: their medians range from {lat.repeat_p50_min_seconds * 1e3:.3f} to "
            f"{lat.repeat_p50_max_seconds * 1e3:.3f} ms (spread {spread:.1%} between processes); a comparison "
            f"needs more repeats to resolve a small change")
    joined.warnings = warnings
    joined.op_profile = results[-1].op_profile  # taken in the last process only
    joined.stability = Stability(steady=all(r.stability.steady for r in results), reasons=reasons)
    joined.timed_wall_seconds = sum(r.timed_wall_seconds or 0.0 for r in results)
    return joined
