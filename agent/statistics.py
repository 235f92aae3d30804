"""Statistics of timed runs: summaries, steady state and stability.

Pure Python (no numpy), so the agent's own process stays small: the measured child and the
parent that joins its repeats use the same code.

Three questions are answered here:

* **summary** — min / mean / percentiles / std / cv / throughput / drift of one list of samples
  (percentiles interpolate linearly between order statistics, as numpy's default does);
* **steady yet?** — during warmup, :class:`SteadyStateDetector` splits the inferences into short
  windows and calls latency steady once the medians of the last three windows lie within a
  tolerance of each other: 5 %, or twice the standard error of a window's median when the
  runs are noisier than that (so a noisy model is not held in warmup forever);
* **was the timed phase one steady state?** — :func:`stability_reasons` names what makes a run
  unfit as evidence: latency that drifted between the first and the last tenth of the runs by
  more than its noise explains, a spread so wide that the median means little, or two modes of
  comparable weight (the process switched between two speeds — a core migration, a clock
  change, a cache that came and went — so its median can land on either). A smaller slow mode
  (interference from neighbours preempting a microsecond-scale model, say) leaves the median
  where it was: :func:`stability_notes` reports it without disqualifying the run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

DRIFT_MIN_SAMPLES = 20

# Steady state during warmup.
STEADY_WINDOW_RUNS = 3
STEADY_WINDOW_SECONDS = 0.1
STEADY_TOLERANCE = 0.05
STEADY_WINDOWS = 3

# Stability of a timed phase.
DRIFT_LIMIT = 0.10            # |drift| beyond 10 % ...
DRIFT_NOISE_FACTOR = 3.0      # ... and beyond three standard errors of the ratio
SPREAD_LIMIT = 0.50           # robust cv (IQR / 1.349 / median) beyond 50 %
MODE_MIN_MASS = 0.10          # a mode holds at least 10 % of the runs (reported) ...
MODE_UNSTEADY_MASS = 0.25     # ... and with at least 25 % in the smaller of two, the run is unsteady
MODE_MIN_RATIO = 1.10         # and their latencies differ by at least 10 %
MODE_MAX_VALLEY = 0.70        # with a valley below 70 % of the lower peak between them
MODE_MIN_SAMPLES = 50
MODE_MAX_SAMPLES = 100_000    # beyond, every k-th sorted run: the shape of the density is kept
_GRID = 256


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, linear interpolation."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of no values")
    pos = (n - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 50)


def _robust_cv(sorted_values: Sequence[float]) -> float:
    """Interquartile range as a standard deviation (/1.349), relative to the median."""
    mid = percentile(sorted_values, 50)
    if mid <= 0:
        return 0.0
    return (percentile(sorted_values, 75) - percentile(sorted_values, 25)) / 1.349 / mid


def _median_rel_se(sorted_values: Sequence[float]) -> float:
    """Relative standard error of a median (1.2533 sigma / sqrt(n), sigma from the IQR)."""
    n = len(sorted_values)
    return 1.2533 * _robust_cv(sorted_values) / math.sqrt(n) if n else math.inf


def summarize(samples_ns: Sequence[int]) -> Tuple[Dict[str, Optional[float]], List[Tuple[str, str]]]:
    """Summary of timed runs in seconds; returns (fields, unavailable (field, reason) pairs).
    The field names are those of LatencyResult."""
    n = len(samples_ns)
    if n == 0:
        raise ValueError("no timed runs to summarise")
    xs = sorted(s / 1e9 for s in samples_ns)
    total = math.fsum(xs)
    mean = total / n
    out: Dict[str, Optional[float]] = {
        "total_seconds": total,
        "min_seconds": xs[0],
        "mean_seconds": mean,
        "p50_seconds": percentile(xs, 50),
        "p90_seconds": percentile(xs, 90),
        "p95_seconds": percentile(xs, 95),
        "p99_seconds": percentile(xs, 99),
        "max_seconds": xs[-1],
        "throughput_per_second": (n / total) if total > 0 else None,
    }
    unavailable: List[Tuple[str, str]] = []
    if n > 1:
        var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
        out["std_seconds"] = math.sqrt(var)
    else:
        out["std_seconds"] = None
        unavailable.append(("latency.std_seconds", f"needs at least 2 timed runs, had {n}"))
    out["cv"] = (out["std_seconds"] / mean) if (out["std_seconds"] is not None and mean > 0) else None
    if out["cv"] is None:
        unavailable.append(("latency.cv", f"needs at least 2 timed runs with a non-zero mean, had {n}"))
    if out["throughput_per_second"] is None:
        unavailable.append(("latency.throughput_per_second", "the timed runs took no measurable time"))
    drift, why = drift_ratio(samples_ns)
    out["drift_ratio"] = drift
    if drift is None:
        unavailable.append(("latency.drift_ratio", why))
    return out, unavailable


def drift_ratio(samples_ns: Sequence[int]) -> Tuple[Optional[float], str]:
    """Median of the last tenth of the runs over the median of the first tenth."""
    n = len(samples_ns)
    if n < DRIFT_MIN_SAMPLES:
        return None, f"needs at least {DRIFT_MIN_SAMPLES} timed runs, had {n}"
    tenth = n // 10
    first = median(samples_ns[:tenth])
    last = median(samples_ns[-tenth:])
    if first <= 0:
        return None, "the first tenth of the runs took no measurable time"
    return last / first, ""


# ---------------------------------------------------------------- steady state


@dataclass
class SteadyStateDetector:
    """Feed it every warmup inference; ``steady`` turns true once the medians of the last
    STEADY_WINDOWS windows (each >= STEADY_WINDOW_RUNS runs and >= STEADY_WINDOW_SECONDS)
    agree within the tolerance."""

    tolerance: float = STEADY_TOLERANCE
    window_runs: int = STEADY_WINDOW_RUNS
    window_ns: int = int(STEADY_WINDOW_SECONDS * 1e9)
    windows: List[Tuple[float, float]] = field(default_factory=list)  # (median ns, its tolerance)
    _current: List[int] = field(default_factory=list)
    _current_ns: int = 0

    def add(self, sample_ns: int) -> None:
        self._current.append(sample_ns)
        self._current_ns += sample_ns
        if len(self._current) >= self.window_runs and self._current_ns >= self.window_ns:
            xs = sorted(self._current)
            tol = max(self.tolerance, 2.0 * _median_rel_se(xs))
            self.windows.append((percentile(xs, 50), tol))
            self._current, self._current_ns = [], 0

    @property
    def steady(self) -> bool:
        if len(self.windows) < STEADY_WINDOWS:
            return False
        last = self.windows[-STEADY_WINDOWS:]
        lo = min(m for m, _ in last)
        hi = max(m for m, _ in last)
        tol = max(t for _, t in last)
        return lo > 0 and hi / lo - 1.0 <= tol


# ---------------------------------------------------------------- stability of a timed phase


def _modes(sorted_log: Sequence[float]) -> List[Tuple[float, float]]:
    """(centre, mass) of the modes of a Gaussian kernel density of log latency (Silverman's
    bandwidth, which over-smooths rather than inventing modes), evaluated on a grid from
    binned counts. Only modes holding at least MODE_MIN_MASS count; a mode ends at the
    deepest valley between it and its neighbour."""
    n = len(sorted_log)
    # The grid spans the middle 99 % of the runs: a few far outliers never make a mode of 10 %,
    # and letting them stretch the grid would blur the modes that matter.
    lo, hi = percentile(sorted_log, 0.5), percentile(sorted_log, 99.5)
    spread = min(_stdev(sorted_log), (percentile(sorted_log, 75) - percentile(sorted_log, 25)) / 1.349)
    if hi <= lo or spread <= 0:
        return [(lo, 1.0)]
    bw = 0.9 * spread * n ** (-0.2)
    lo, hi = lo - 3 * bw, hi + 3 * bw
    step = (hi - lo) / (_GRID - 1)
    counts = [0] * _GRID
    for x in sorted_log:
        if lo <= x <= hi:
            counts[int((x - lo) / step + 0.5)] += 1
    reach = int(4 * bw / step) + 1
    kernel = [math.exp(-0.5 * (k * step / bw) ** 2) for k in range(-reach, reach + 1)]
    density = [0.0] * _GRID
    for i, c in enumerate(counts):
        if not c:
            continue
        for k, w in enumerate(kernel):
            j = i + k - reach
            if 0 <= j < _GRID:
                density[j] += c * w
    peaks = [i for i in range(1, _GRID - 1) if density[i] > density[i - 1] and density[i] >= density[i + 1]]
    if len(peaks) < 2:
        return [(lo + step * (peaks[0] if peaks else 0), 1.0)]
    # Merge peaks whose valley is shallow (above MODE_MAX_VALLEY of the lower peak).
    merged = [peaks[0]]
    for p in peaks[1:]:
        q = merged[-1]
        valley = min(density[q:p + 1])
        if valley > MODE_MAX_VALLEY * min(density[q], density[p]):
            if density[p] > density[q]:
                merged[-1] = p
        else:
            merged.append(p)
    total = sum(density)
    bounds = [0]
    for a, b in zip(merged, merged[1:]):
        seg = density[a:b + 1]
        bounds.append(a + seg.index(min(seg)))
    bounds.append(_GRID)
    modes = []
    for k, p in enumerate(merged):
        mass = sum(density[bounds[k]:bounds[k + 1]]) / total
        modes.append((lo + step * p, mass))
    return [m for m in modes if m[1] >= MODE_MIN_MASS]


def _stdev(xs: Sequence[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mean = math.fsum(xs) / n
    return math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))


def _two_modes(xs: Sequence[int]) -> List[Tuple[float, float]]:
    """(latency ns, mass) of each mode holding >= MODE_MIN_MASS, when there are at least two
    that differ by MODE_MIN_RATIO; [] otherwise. ``xs`` sorted."""
    n = len(xs)
    if n < MODE_MIN_SAMPLES:
        return []
    stride = max(1, n // MODE_MAX_SAMPLES)
    logs = [math.log(x) for x in xs[::stride] if x > 0]
    if len(logs) < MODE_MIN_SAMPLES:
        return []
    modes = sorted((math.exp(c), m) for c, m in _modes(logs))
    if len(modes) < 2 or modes[-1][0] / modes[0][0] < MODE_MIN_RATIO:
        return []
    return modes


def _describe_modes(modes: Sequence[Tuple[float, float]]) -> str:
    return ", ".join(f"{c / 1e6:.3g} ms ({m:.0%})" for c, m in modes)


def stability_reasons(samples_ns: Sequence[int]) -> List[str]:
    """Why a timed phase is not one steady state (empty when it is): such a run is reported
    with these reasons, and a regression check does not count it as evidence."""
    reasons: List[str] = []
    n = len(samples_ns)
    if n < 2:
        return reasons
    xs = sorted(samples_ns)
    if percentile(xs, 50) <= 0:
        return reasons
    robust_cv = _robust_cv(xs)
    if robust_cv > SPREAD_LIMIT:
        reasons.append(f"latency varies widely: the middle half of the runs spans {robust_cv:.0%} of the "
                       f"median as a standard deviation (limit {SPREAD_LIMIT:.0%})")
    if n >= DRIFT_MIN_SAMPLES:
        tenth = n // 10
        first, last = sorted(samples_ns[:tenth]), sorted(samples_ns[-tenth:])
        ratio = percentile(last, 50) / percentile(first, 50) if percentile(first, 50) > 0 else None
        if ratio is not None:
            noise = math.hypot(_median_rel_se(first), _median_rel_se(last))
            change = abs(math.log(ratio))
            if change > math.log1p(DRIFT_LIMIT) and change > DRIFT_NOISE_FACTOR * noise:
                reasons.append(f"latency drifted {ratio - 1:+.0%} from the first to the last tenth of the "
                               f"timed runs: it had not settled (warm up longer, or check for throttling)")
    modes = _two_modes(xs)
    if modes and min(m for _, m in modes) >= MODE_UNSTEADY_MASS:
        reasons.append(f"latency has {len(modes)} modes ({_describe_modes(modes)}): the process ran at "
                       f"different speeds during the timed runs, so its median may land on either")
    return reasons


def stability_notes(samples_ns: Sequence[int]) -> List[str]:
    """What is worth knowing about a steady run's shape without disqualifying it: a smaller
    slow (or fast) mode, typically neighbours preempting the benchmark."""
    modes = _two_modes(sorted(samples_ns))
    if modes and min(m for _, m in modes) < MODE_UNSTEADY_MASS:
        return [f"latency has a second mode ({_describe_modes(modes)}): some runs were interrupted or took "
                f"another path; the median stands"]
    return []


def between_repeat_spread(medians: Sequence[float]) -> Optional[float]:
    """Standard deviation of the natural log of per-repeat medians (None below 2 repeats)."""
    logs = [math.log(m) for m in medians if m > 0]
    if len(logs) < 2:
        return None
    return _stdev(logs)
