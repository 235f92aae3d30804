"""Comparing a candidate run with its baseline: is it slower, bigger, hungrier, hotter?

Latency is compared on the raw samples. Latency samples are skewed (a floor, a long right
tail, outliers from interrupts), so nothing here assumes normality:

- the effect is the ratio of medians, with a bootstrap confidence interval
  (``scipy.stats.bootstrap``, BCa, resampling both runs);
- its significance is the Mann-Whitney U test (``scipy.stats.mannwhitneyu``), which uses ranks;
- a regression needs all three: p below alpha, the interval entirely above 1, and a median
  slowdown of at least the minimum effect (default 3 %). The minimum effect is what keeps
  noise, which with thousands of samples is always "significant", from failing builds.

A change in spread alone (same median, wider distribution) is tested apart with the
Brown-Forsythe test (``scipy.stats.levene`` centred on the median) and reported as
``changed``; it does not fail a build by itself, since tail budgets (latency.p99) judge tails.

Memory, energy per inference and peak temperature are single readings per run: they are
compared against tolerances (5 %, 10 %, 3 °C by default) rather than tested.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from scipy import stats

REGRESSION, IMPROVEMENT, UNCHANGED, CHANGED, UNKNOWN = "regression", "improvement", "unchanged", "changed", "unknown"
MIN_SAMPLES = 20
CONFIDENCE = 0.95
_BOOTSTRAP_RESAMPLES = 2000
_BOOTSTRAP_CAP = 2000  # samples per run fed to the bootstrap (a uniform thinning beyond it)


@dataclass(frozen=True)
class Tolerances:
    latency_ratio: float = 0.03       # median slowdown that counts (3 %)
    spread_ratio: float = 0.25        # change of the interquartile range that is reported
    memory_ratio: float = 0.05
    energy_ratio: float = 0.10
    temperature_celsius: float = 3.0
    alpha: float = 0.01

    @classmethod
    def from_dict(cls, doc: Optional[Mapping[str, Any]]) -> "Tolerances":
        doc = doc or {}
        known = {k: float(v) for k, v in doc.items() if k in cls.__dataclass_fields__ and v}
        return cls(**known)


@dataclass
class MetricComparison:
    metric: str
    statistic: str
    baseline: float = math.nan
    candidate: float = math.nan
    ratio: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    confidence: float = math.nan
    p_value: float = math.nan
    threshold: float = math.nan
    verdict: str = UNKNOWN
    summary: str = ""
    baseline_count: int = 0
    candidate_count: int = 0

    def to_dict(self) -> Dict[str, Any]:
        # Non-finite numbers as the strings the proto3 JSON mapping uses (PostgreSQL JSON has no NaN).
        return {k: (("NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity"))
                    if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


@dataclass
class Comparison:
    baseline_job_id: str
    candidate_job_id: str
    metrics: List[MetricComparison] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        return any(m.verdict == REGRESSION for m in self.metrics)

    @property
    def summary(self) -> str:
        worse = [m.summary for m in self.metrics if m.verdict == REGRESSION]
        if worse:
            return "; ".join(worse)
        changed = [m.summary for m in self.metrics if m.verdict in (CHANGED, IMPROVEMENT)]
        return "; ".join(changed) if changed else "no regression"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "baseline_job_id": self.baseline_job_id,
            "candidate_job_id": self.candidate_job_id,
            "metrics": [m.to_dict() for m in self.metrics],
            "regression": self.regression,
            "summary": self.summary,
        }


def _thin(x: np.ndarray) -> np.ndarray:
    if len(x) <= _BOOTSTRAP_CAP:
        return x
    return x[np.linspace(0, len(x) - 1, _BOOTSTRAP_CAP).astype(int)]


def _median_ratio(b: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(c, axis=axis) / np.median(b, axis=axis)


def _bootstrap(data: tuple, seed: int) -> Any:
    kwargs = dict(paired=False, vectorized=True, n_resamples=_BOOTSTRAP_RESAMPLES,
                  confidence_level=CONFIDENCE, method="BCa")
    try:  # scipy >= 1.15 names the generator rng; older ones (Python 3.9) random_state
        return stats.bootstrap(data, _median_ratio, rng=np.random.default_rng(seed), **kwargs)
    except TypeError:
        return stats.bootstrap(data, _median_ratio, random_state=np.random.default_rng(seed), **kwargs)


def compare_latency(baseline_ns: Sequence[int], candidate_ns: Sequence[int], tol: Tolerances = Tolerances(),
                    *, seed: int = 0) -> MetricComparison:
    """Median latency of two runs: ratio of medians with a bootstrap CI, Mann-Whitney U."""
    b = np.asarray(baseline_ns, dtype=np.float64)
    c = np.asarray(candidate_ns, dtype=np.float64)
    out = MetricComparison(
        metric="latency.median",
        statistic="Mann-Whitney U (two-sided) + BCa bootstrap CI of the ratio of medians",
        threshold=tol.latency_ratio, confidence=CONFIDENCE,
        baseline_count=int(b.size), candidate_count=int(c.size),
    )
    if b.size < MIN_SAMPLES or c.size < MIN_SAMPLES:
        out.summary = (f"latency not compared: {b.size} baseline and {c.size} candidate samples, "
                       f"at least {MIN_SAMPLES} each are needed")
        return out
    out.baseline, out.candidate = float(np.median(b)) / 1e9, float(np.median(c)) / 1e9
    if out.baseline <= 0:
        out.summary = "latency not compared: the baseline median is zero"
        return out
    out.ratio = out.candidate / out.baseline
    out.p_value = float(stats.mannwhitneyu(c, b, alternative="two-sided").pvalue)
    try:
        ci = _bootstrap((_thin(b), _thin(c)), seed).confidence_interval
        out.ci_low, out.ci_high = float(ci.low), float(ci.high)
    except Exception:  # degenerate samples (all equal): BCa cannot be computed
        out.ci_low = out.ci_high = out.ratio
    if not math.isfinite(out.ci_low) or not math.isfinite(out.ci_high):
        out.ci_low = out.ci_high = out.ratio
    change = out.ratio - 1
    significant = out.p_value < tol.alpha
    effect = (f"median {out.baseline * 1e3:.3f} → {out.candidate * 1e3:.3f} ms ({change:+.1%}, "
              f"95% CI {out.ci_low - 1:+.1%} … {out.ci_high - 1:+.1%}, Mann-Whitney p={out.p_value:.2g})")
    if significant and change >= tol.latency_ratio and out.ci_low > 1:
        out.verdict, out.summary = REGRESSION, f"latency regressed: {effect}"
    elif significant and -change >= tol.latency_ratio and out.ci_high < 1:
        out.verdict, out.summary = IMPROVEMENT, f"latency improved: {effect}"
    else:
        out.verdict = UNCHANGED
        why = "not significant" if not significant else f"below the {tol.latency_ratio:.0%} minimum effect"
        out.summary = f"latency unchanged ({why}): {effect}"
    return out


def compare_spread(baseline_ns: Sequence[int], candidate_ns: Sequence[int], tol: Tolerances = Tolerances()) -> MetricComparison:
    """Spread of latency (interquartile range), tested with Brown-Forsythe."""
    b = np.asarray(baseline_ns, dtype=np.float64)
    c = np.asarray(candidate_ns, dtype=np.float64)
    out = MetricComparison(metric="latency.spread", statistic="Brown-Forsythe (Levene, median-centred)",
                           threshold=tol.spread_ratio, baseline_count=int(b.size), candidate_count=int(c.size))
    if b.size < MIN_SAMPLES or c.size < MIN_SAMPLES:
        out.summary = "spread not compared: too few samples"
        return out
    iqr_b, iqr_c = float(stats.iqr(b)) / 1e9, float(stats.iqr(c)) / 1e9
    out.baseline, out.candidate = iqr_b, iqr_c
    if iqr_b <= 0:
        out.summary = "spread not compared: the baseline has no spread"
        return out
    out.ratio = iqr_c / iqr_b
    out.p_value = float(stats.levene(b, c, center="median").pvalue)
    effect = f"interquartile range {iqr_b * 1e3:.3f} → {iqr_c * 1e3:.3f} ms (×{out.ratio:.2f}, p={out.p_value:.2g})"
    if out.p_value < tol.alpha and abs(out.ratio - 1) >= tol.spread_ratio:
        out.verdict = CHANGED
        out.summary = f"latency spread {'widened' if out.ratio > 1 else 'narrowed'}: {effect}"
    else:
        out.verdict = UNCHANGED
        out.summary = f"latency spread unchanged: {effect}"
    return out


def _reading(result: Mapping[str, Any], section: str, name: str) -> Optional[float]:
    unavailable = {u.get("field") for u in result.get("unavailable", [])}
    if section in unavailable or f"{section}.{name}" in unavailable:
        return None
    value = result.get(section, {}).get(name)
    return float(value) if value is not None else None


def _max_temperature(result: Mapping[str, Any]) -> Optional[float]:
    unavailable = {u.get("field") for u in result.get("unavailable", [])}
    if "thermal" in unavailable or "thermal.zones" in unavailable:
        return None
    zones = result.get("thermal", {}).get("zones") or []
    values = [z["max_celsius"] for z in zones if "max_celsius" in z]
    return float(max(values)) if values else None


def _tolerance(metric: str, base: Optional[float], cand: Optional[float], *, relative: bool, limit: float,
               unit: str) -> MetricComparison:
    out = MetricComparison(metric=metric, threshold=limit,
                           statistic=("relative tolerance on one reading per run" if relative
                                      else "absolute tolerance on one reading per run"))
    if base is None or cand is None:
        which = "baseline" if base is None else "candidate"
        out.summary = f"{metric} not compared: the {which} did not measure it"
        return out
    out.baseline, out.candidate = base, cand
    if relative:
        if base <= 0:
            out.summary = f"{metric} not compared: the baseline reading is zero"
            return out
        out.ratio = cand / base
        change = out.ratio - 1
        text = f"{metric} {base:.4g} → {cand:.4g} {unit} ({change:+.1%}, tolerance {limit:.0%})"
    else:
        out.ratio = cand - base
        change = out.ratio
        text = f"{metric} {base:.1f} → {cand:.1f} {unit} ({change:+.1f}, tolerance {limit:g})"
    if change > limit:
        out.verdict, out.summary = REGRESSION, f"{metric} regressed: {text}"
    elif -change > limit:
        out.verdict, out.summary = IMPROVEMENT, f"{metric} improved: {text}"
    else:
        out.verdict, out.summary = UNCHANGED, f"{metric} unchanged: {text}"
    return out


def compare_results(baseline: Mapping[str, Any], candidate: Mapping[str, Any], tol: Tolerances = Tolerances(), *,
                    baseline_job_id: str = "", candidate_job_id: str = "") -> Comparison:
    """Every comparison of two result documents (BenchmarkResult fields as stored)."""
    b_ns = baseline.get("latency", {}).get("samples_ns") or []
    c_ns = candidate.get("latency", {}).get("samples_ns") or []
    comparison = Comparison(baseline_job_id, candidate_job_id)
    comparison.metrics.append(compare_latency(b_ns, c_ns, tol))
    comparison.metrics.append(compare_spread(b_ns, c_ns, tol))
    comparison.metrics.append(_tolerance("memory.peak", _reading(baseline, "memory", "peak_bytes"),
                                         _reading(candidate, "memory", "peak_bytes"),
                                         relative=True, limit=tol.memory_ratio, unit="bytes"))
    comparison.metrics.append(_tolerance("energy.per_inference",
                                         _reading(baseline, "power", "energy_per_inference_joules"),
                                         _reading(candidate, "power", "energy_per_inference_joules"),
                                         relative=True, limit=tol.energy_ratio, unit="J"))
    comparison.metrics.append(_tolerance("temperature.max", _max_temperature(baseline), _max_temperature(candidate),
                                         relative=False, limit=tol.temperature_celsius, unit="°C"))
    return comparison


def headline_values(result: Mapping[str, Any]) -> Dict[str, Optional[float]]:
    """The figures kept per nightly case for history and change-point detection."""
    lat = result.get("latency", {})
    samples = lat.get("samples_ns") or []
    median = float(np.median(samples)) / 1e9 if samples else lat.get("p50_seconds")
    p99 = float(np.percentile(samples, 99)) / 1e9 if samples else lat.get("p99_seconds")
    return {
        "latency.p50": median,
        "latency.p99": p99,
        "latency.mean": lat.get("mean_seconds"),
        "latency.load": lat.get("load_seconds"),
        "memory.peak": _reading(result, "memory", "peak_bytes"),
        "energy.per_inference": _reading(result, "power", "energy_per_inference_joules"),
        "power.mean": _reading(result, "power", "active_watts"),
        "temperature.max": _max_temperature(result),
    }


HISTORY_UNITS = {"latency.p50": "s", "latency.p99": "s", "latency.mean": "s", "latency.load": "s",
                 "memory.peak": "bytes", "energy.per_inference": "J", "power.mean": "W", "temperature.max": "C"}
