"""Comparing a candidate run with its baseline: is it slower, bigger, hungrier, hotter?

**Latency is decided at the level of repeats.** Most of the variance between two runs of one
model lives between processes (memory layout, allocator and cache state, CPU placement,
clocks and heat, neighbours), not between the inferences of one process. A job is measured in
R fresh processes, and the units of the test are the per-repeat medians, never the pooled
inferences: 400 inferences per run would turn a 4 % offset between two processes into
p=1e-234 (``compare_latency_samples`` below shows it; it is kept for the benchmark that
measures both and for the spread check).

**The figure of each repeat is its fastest inference** (``RepeatResult.min_seconds``), and the
median where a side does not have it (results from before it was reported). Whatever a
neighbour does — takes the CPU, shares its core's caches, drags the clocks down — it only ever
adds time to an inference, so on the busy development machine the medians of a run's processes
were typically 1-5 % apart and up to 35 %, their fastest inferences typically 0.3-1 % and at
most 4 % (``benchmarks/regression_accuracy.py --record``); a change of the model's own cost
moves every inference, the fastest included. This is the estimator Chen & Revels argue for ("Robust benchmarking in noisy environments",
2016) and Julia's BenchmarkTools judges with. The summary shows the medians' change beside it.

- effect: the ratio of the geometric means of the per-repeat figures, with a Student t
  confidence interval on their logs;
- noise: the between-repeat spread (standard deviation of the log per-repeat figures), pooled
  over both runs; where this device × model × configuration has a history, never taken below
  what the history shows, so a lucky quiet pair of runs cannot make a small shift look real;
- run to run: a first attempt compares runs measured at different times, and each whole run
  sits a little above or below the device's usual level (its load, clocks and heat that day),
  which no number of repeats inside one run averages away. Where the device × model ×
  configuration has at least ``MIN_RUN_HISTORY`` earlier runs, the spread of their own figures
  beyond what their repeats explain (``NoiseHistory.between_runs``) is added to the
  comparison's variance, twice (the baseline's run and the candidate's). Without it a 5 %
  slowdown measured on a day the device ran 6 % quicker looked "unchanged" with a narrow
  interval, and was settled without a confirmation;
- significance: Student t on the logs (p below alpha);
- a regression needs all of: p below alpha, the interval entirely above 1, a slowdown of at
  least the minimum effect (default 3 %), and at least the **noise floor** — the smallest
  change these repeat counts resolve on this device's noise (the t quantile at alpha times
  the standard error). A change between the minimum effect and the noise floor is reported as
  inconclusive with the floor named ("add repeats or quiet the device").
- a run whose timed phase was not one steady state (result.stability) is not evidence: its
  unsteady repeats are left out, and a side with no steady repeat makes the comparison
  inconclusive.

**A confirmation interleaves.** Every first attempt that did not settle latency (a
regression; a change below its noise floor, either way; an unsteady side; an "unchanged" whose
interval still holds a slowdown of the minimum effect) is re-run on the device that found it,
one process at a time, baseline and candidate alternating A B, B A, ... so that slow drifts of
the device fall on both sides. ``compare_latency_pairs`` tests the log ratio within each pair
with Yuen's paired t-test, 20 % trimmed: on a shared device a neighbour's burst now and then
lands on one process of a pair only, and the trimmed mean lets such a pair neither fake a
change nor hide one.

The t-test leans on the spread of the ratios, which a few pairs estimate badly: two pairs that
agreed to within 0.05 % by chance once "confirmed" +8.6 % (p=0.00026) on an unchanged model,
on a device whose processes ran at one of two speeds. So a change must also be borne out by
the **signs** of the pairs, in an exact sign test (binomial, even odds): the candidate the
slower (or the faster) in significantly many pairs, at the same alpha. The sign test assumes
nothing about the spread of the ratios and a wild pair is one vote like any other; it cannot
confirm a change with fewer than ten pairs (two of two: p=0.5), so a real slowdown is
confirmed in a confirmation's second round at the earliest. The Wilcoxon signed-rank test was
tried in its place: two pairs whose baseline was caught by a burst outranked sixteen clean
ones, and it let most 10 % slowdowns go. Clearing a suspect (no slowdown of the minimum effect
inside the 95 % interval) takes at least ``MIN_PAIRS_TO_CLEAR`` (six) pairs, a round's worth;
a sign test for the clearance too was tried: on noisy simulated devices it cleared 66 and 20
of 100 unchanged models against 83 and 34, and wrongly cleared about as many 5 % slowdowns
(0 and 1 of 100 against 0 and 2).

A confirmation runs in rounds: a round that neither confirms nor clears asks for another, up to
``CONFIRMATION_ROUNDS``. Each round is one look at the data, so each is tested at alpha
divided by the number of rounds (Bonferroni), and looking again cannot raise the false-alarm
rate.

A change in spread alone (same median, wider distribution) is tested apart with the
Brown-Forsythe test (``scipy.stats.levene`` centred on the median) and reported as
``changed``; it does not fail a build by itself, since tail budgets (latency.p99) judge tails.

Memory, energy per inference and peak temperature are single readings per run: they are
compared against tolerances (5 %, 10 %, 3 °C by default) rather than tested. A figure that
came from a simulated sensor makes its comparison (and the whole comparison) say so.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

REGRESSION, IMPROVEMENT, UNCHANGED, CHANGED, UNKNOWN = "regression", "improvement", "unchanged", "changed", "unknown"
# The per-repeat figure a latency comparison tests (see the module docstring).
FASTEST, MEDIAN = "fastest", "median"
_FIGURE_NAMES = {FASTEST: "fastest inference of each repeat", MEDIAN: "median of each repeat"}
# How many rounds of interleaved pairs a confirmation may run before it gives up as inconclusive.
CONFIRMATION_ROUNDS = 4
# The share of a confirmation's pair ratios trimmed at each end (Yuen's trimmed t-test).
PAIR_TRIM = 0.2
# Fewest steady pairs whose 95 % interval may clear a suspect: on two or three pairs the t-test
# believes their spread too readily (two pairs that agreed by chance cleared a 5 % slowdown).
MIN_PAIRS_TO_CLEAR = 6
MIN_SAMPLES = 20
# How many of the newest runs of a device × model × configuration make its noise history.
NOISE_HISTORY_RUNS = 30
# Fewest earlier runs whose figures may say how far whole runs wander (three differences).
MIN_RUN_HISTORY = 4
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
    simulated: bool = False
    noise: Optional[float] = None         # between-repeat spread the decision used
    noise_floor: Optional[float] = None   # smallest change the repeats resolve on that noise
    noise_source: str = ""
    inconclusive: bool = False

    def to_dict(self) -> Dict[str, Any]:
        # Non-finite numbers as the strings the proto3 JSON mapping uses (PostgreSQL JSON has no NaN);
        # an unknown noise figure is left out (the proto field is optional).
        return {k: (("NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity"))
                    if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items() if v is not None}


@dataclass
class Comparison:
    baseline_job_id: str
    candidate_job_id: str
    metrics: List[MetricComparison] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        return any(m.verdict == REGRESSION for m in self.metrics)

    @property
    def simulated(self) -> bool:
        return any(m.simulated for m in self.metrics)

    @property
    def inconclusive(self) -> bool:
        """Latency could not be judged (an unsteady side, a change below the noise floor)."""
        return not self.regression and any(m.inconclusive for m in self.metrics)

    @property
    def summary(self) -> str:
        worse = [m.summary for m in self.metrics if m.verdict == REGRESSION]
        if worse:
            return "; ".join(worse)
        changed = [m.summary for m in self.metrics if m.verdict in (CHANGED, IMPROVEMENT) or m.inconclusive]
        return "; ".join(changed) if changed else "no regression"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "baseline_job_id": self.baseline_job_id,
            "candidate_job_id": self.candidate_job_id,
            "metrics": [m.to_dict() for m in self.metrics],
            "regression": self.regression,
            "summary": self.summary,
            "simulated": self.simulated,
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


def compare_latency_samples(baseline_ns: Sequence[int], candidate_ns: Sequence[int],
                            tol: Tolerances = Tolerances(), *, seed: int = 0) -> MetricComparison:
    """Median latency of two runs judged on their pooled samples: ratio of medians with a
    bootstrap CI, Mann-Whitney U. Not how regressions are decided (see the module docstring):
    it treats every inference as independent, so a between-process offset looks certain."""
    b = np.asarray(baseline_ns, dtype=np.float64)
    c = np.asarray(candidate_ns, dtype=np.float64)
    out = MetricComparison(
        metric="latency.median",
        statistic="Mann-Whitney U (two-sided) + BCa bootstrap CI of the ratio of medians, on pooled samples",
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


@dataclass(frozen=True)
class NoiseHistory:
    """Between-repeat spreads of earlier runs of one device × model × configuration, each
    with its number of repeats: pooled, they say how noisy that device usually is. One list
    per per-repeat figure (medians, fastest inferences), since their noise differs."""

    spreads: Tuple[Tuple[float, int], ...] = ()
    fastest_spreads: Tuple[Tuple[float, int], ...] = ()
    # Each earlier run's own figure (the median over its repeats), oldest first, with its
    # repeat count and between-repeat spread: how far whole runs wander from night to night.
    levels: Tuple[Tuple[float, int, float], ...] = ()
    fastest_levels: Tuple[Tuple[float, int, float], ...] = ()

    @property
    def runs(self) -> int:
        return len(self.spreads)

    def between_runs(self, figure: str = MEDIAN) -> Tuple[Optional[float], int]:
        """(run-to-run spread of the log figure beyond what the runs' own repeats explain, its
        degrees of freedom); (None, 0) with fewer than ``MIN_RUN_HISTORY`` runs.

        A first attempt compares a candidate with a baseline measured on another day; each run
        as a whole sits a little above or below the device's usual level (its load, clocks and
        heat that day), and no number of repeats inside one run averages that away. Successive
        differences of the runs' log figures measure it while a step change of the model itself
        (one large difference) or a slow trend barely moves it; their median, not their mean,
        so one odd night cannot either. What the repeats of each run already explain (its
        spread squared over its repeat count) is taken off."""
        levels = [(v, r, s) for v, r, s in (self.fastest_levels if figure == FASTEST else self.levels)
                  if v > 0 and r >= 1 and math.isfinite(v)]
        if len(levels) < MIN_RUN_HISTORY:
            return None, 0
        steps = np.diff(np.log([v for v, _, _ in levels]))
        # For normal steps, median(step**2) = 0.4549 * E[step**2] = 0.4549 * 2 * variance.
        total = float(np.median(steps ** 2)) / (2 * stats.chi2.ppf(0.5, 1))
        within = float(np.mean([s * s / r for _, r, s in levels if math.isfinite(s)] or [0.0]))
        return math.sqrt(max(0.0, total - within)), len(steps)

    def runs_of(self, figure: str, *, levels: bool = False) -> int:
        if levels:
            return len(self.fastest_levels if figure == FASTEST else self.levels)
        return len((self.fastest_spreads or self.spreads) if figure == FASTEST else self.spreads)

    def pooled(self, figure: str = MEDIAN) -> Tuple[Optional[float], int]:
        """(pooled standard deviation of the log per-repeat figures, its degrees of freedom)."""
        # Fastest inferences spread less than medians; a history from before they were
        # reported stands in with its medians' spread (erring towards more noise).
        spreads = (self.fastest_spreads or self.spreads) if figure == FASTEST else self.spreads
        df = sum(r - 1 for s, r in spreads if r > 1 and math.isfinite(s))
        if df <= 0:
            return None, 0
        var = sum((r - 1) * s * s for s, r in spreads if r > 1 and math.isfinite(s)) / df
        return math.sqrt(var), df


@dataclass(frozen=True)
class RepeatFigures:
    """The per-repeat figures of one result (seconds), in the order the repeats ran: medians
    and fastest inferences, each for every repeat and for the steady ones. ``fastest`` is None
    when a repeat's fastest inference is not known (a result from before it was reported)."""

    all: Tuple[float, ...]
    steady: Tuple[float, ...]
    unsteady_reasons: Tuple[str, ...] = ()
    fastest: Optional[Tuple[float, ...]] = None
    steady_fastest: Optional[Tuple[float, ...]] = None
    steady_mask: Tuple[bool, ...] = ()

    def figure(self) -> str:
        return FASTEST if self.fastest is not None and self.fastest else MEDIAN

    def values(self, figure: str, *, steady_only: bool = True) -> Tuple[float, ...]:
        if figure == FASTEST:
            return (self.steady_fastest if steady_only else self.fastest) or ()
        return self.steady if steady_only else self.all


def is_steady(result: Mapping[str, Any]) -> bool:
    """Whether a stored result measured one steady state. A result from before the stability
    check has no ``stability`` and counts as steady; in a stored one an absent ``steady`` is
    false (proto3 leaves false out)."""
    stability = result.get("stability")
    return True if stability is None else bool(stability.get("steady", False))


def repeat_figures(result: Mapping[str, Any]) -> RepeatFigures:
    """Per-repeat medians and fastest inferences of a stored result. A result from before
    repeats (or a listing without samples) counts as one repeat: the median of its samples,
    else its p50. A repeat's fastest inference is its ``min_seconds``, else the fastest of its
    samples where every sample was kept (a thinned list could have dropped it)."""
    latency = result.get("latency", {})
    samples = latency.get("samples_ns") or []
    repeats = result.get("repeats") or []
    all_samples_kept = bool(repeats) and len(samples) == sum(int(r.get("count", 0)) for r in repeats)
    medians: List[float] = []
    fastest: List[Optional[float]] = []
    steady_mask: List[bool] = []
    for rep in repeats:
        value = rep.get("p50_seconds")
        first, count = int(rep.get("first_sample", 0)), int(rep.get("count", 0))
        own = samples[first:first + count] if count and len(samples) >= first + count else []
        if value is None and own:
            value = float(np.median(own)) / 1e9
        if value is None or not value > 0:
            continue
        quickest = rep.get("min_seconds")
        if quickest is None and own and all_samples_kept:
            quickest = float(min(own)) / 1e9
        medians.append(float(value))
        fastest.append(float(quickest) if quickest is not None and quickest > 0 else None)
        steady_mask.append(bool(rep.get("steady", False)))
    if not repeats:
        value = float(np.median(samples)) / 1e9 if samples else latency.get("p50_seconds")
        if value is not None and value > 0:
            medians = [float(value)]
            steady_mask = [is_steady(result)]
            quickest = float(min(samples)) / 1e9 if samples else latency.get("min_seconds")
            fastest = [float(quickest) if quickest is not None and quickest > 0 else None]
    known = bool(fastest) and all(f is not None for f in fastest)
    reasons = tuple((result.get("stability") or {}).get("reasons") or ())
    return RepeatFigures(
        all=tuple(medians), steady=tuple(m for m, st in zip(medians, steady_mask) if st), unsteady_reasons=reasons,
        fastest=tuple(fastest) if known else None,  # type: ignore[arg-type]
        steady_fastest=tuple(f for f, st in zip(fastest, steady_mask) if st) if known else None,  # type: ignore[misc]
        steady_mask=tuple(steady_mask))


def _log_var(values: Sequence[float]) -> Tuple[float, int]:
    """(sum of squared deviations of the logs, degrees of freedom)."""
    if len(values) < 2:
        return 0.0, 0
    logs = np.log(np.asarray(values, dtype=np.float64))
    return float(((logs - logs.mean()) ** 2).sum()), len(values) - 1


def common_figure(baseline: RepeatFigures, candidate: RepeatFigures) -> str:
    """The per-repeat figure both sides have: their fastest inferences, else their medians."""
    return FASTEST if baseline.figure() == FASTEST and candidate.figure() == FASTEST else MEDIAN


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.4g} ms"


def _median_change(baseline: RepeatFigures, candidate: RepeatFigures) -> str:
    """The medians' change, shown beside a comparison of the fastest inferences."""
    b, c = baseline.steady, candidate.steady
    if not b or not c:
        return ""
    gb, gc = float(np.exp(np.log(b).mean())), float(np.exp(np.log(c).mean()))
    return f"; medians {_ms(gb)} → {_ms(gc)} ({gc / gb - 1:+.1%})"


def _unsteady(out: MetricComparison, baseline: RepeatFigures, candidate: RepeatFigures) -> bool:
    for side, figures in (("baseline", baseline), ("candidate", candidate)):
        if not figures.steady:
            why = "; ".join(figures.unsteady_reasons[:2]) or "no repeat with a steady median"
            out.inconclusive = True
            out.summary = (f"latency not judged: the {side}'s timed runs were not one steady state ({why}); "
                           "its figures are shown but are no evidence of a change")
            return True
    return False


def _figures(baseline: RepeatFigures, candidate: RepeatFigures) -> Tuple[str, ...]:
    return (FASTEST, MEDIAN) if common_figure(baseline, candidate) == FASTEST else (MEDIAN,)


def _least_noisy(candidates: Sequence[Tuple[str, MetricComparison]]) -> MetricComparison:
    """The comparison made on the per-repeat figure whose repeats agreed best. The choice looks
    only at the spread of each side's repeats, never at the change between the sides, so it
    cannot pick the figure that happens to show a regression."""
    def noise(item: Tuple[str, MetricComparison]) -> float:
        return item[1].noise if item[1].noise is not None else math.inf
    _, best = min(candidates, key=noise)
    others = [(f, m) for f, m in candidates if m is not best and m.noise is not None]
    if others and best.noise is not None:
        best.statistic += "; " + ", ".join(
            f"chosen over the {_FIGURE_NAMES[f]}: between-repeat spread {best.noise:.1%} against {m.noise:.1%}"
            for f, m in others)
    return best


def _t_test_of_log_ratio(out: MetricComparison, d: float, se: float, df: int, alpha: float) -> None:
    """The t-test both latency comparisons make on a mean log ratio ``d`` with standard error
    ``se``: its p-value, its 95 % interval, and the noise floor (the smallest change it
    resolves at ``alpha``). With no noise at all, any change is certain."""
    t_crit_alpha = float(stats.t.ppf(1 - alpha / 2, df))
    t_crit_ci = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))
    out.noise_floor = math.expm1(t_crit_alpha * se) if se > 0 else 0.0
    if se > 0:
        out.p_value = float(2 * stats.t.sf(abs(d) / se, df))
        out.ci_low, out.ci_high = math.exp(d - t_crit_ci * se), math.exp(d + t_crit_ci * se)
    else:
        out.p_value = 0.0 if d != 0 else 1.0
        out.ci_low = out.ci_high = out.ratio


def _significant_shift(out: MetricComparison, tol: Tolerances, alpha: float) -> Optional[str]:
    """REGRESSION or IMPROVEMENT when the change is significant at ``alpha``, at least the
    minimum effect and the noise floor, and its interval lies on one side of 1; else None."""
    change = out.ratio - 1
    if out.p_value >= alpha:
        return None
    if change >= tol.latency_ratio and out.ci_low > 1 and change >= out.noise_floor:
        return REGRESSION
    if -change >= tol.latency_ratio and out.ci_high < 1 and -change >= out.noise_floor:
        return IMPROVEMENT
    return None


def compare_latency_repeats(baseline: RepeatFigures, candidate: RepeatFigures, tol: Tolerances = Tolerances(),
                            history: NoiseHistory = NoiseHistory(), *, figure: Optional[str] = None) -> MetricComparison:
    """Latency of two runs with the repeat as the unit (see the module docstring), on the
    per-repeat figure given, or on the one whose repeats agree best."""
    if figure is None:
        return _least_noisy([(f, compare_latency_repeats(baseline, candidate, tol, history, figure=f))
                             for f in _figures(baseline, candidate)])
    out = MetricComparison(
        metric="latency.median",
        statistic=f"Student t on the logs of the {_FIGURE_NAMES[figure]} (repeats as units; between-repeat "
                  "spread pooled over both runs and this device's history)",
        threshold=tol.latency_ratio, confidence=CONFIDENCE,
        baseline_count=len(baseline.steady), candidate_count=len(candidate.steady),
    )
    if _unsteady(out, baseline, candidate):
        return out
    b, c = np.asarray(baseline.values(figure)), np.asarray(candidate.values(figure))
    nb, nc = len(b), len(c)
    out.baseline = float(np.exp(np.log(b).mean()))
    out.candidate = float(np.exp(np.log(c).mean()))
    out.ratio = out.candidate / out.baseline
    d = math.log(out.ratio)
    ss_b, df_b = _log_var(b)
    ss_c, df_c = _log_var(c)
    df_now = df_b + df_c
    s_now = math.sqrt((ss_b + ss_c) / df_now) if df_now > 0 else None
    s_hist, df_hist = history.pooled(figure)
    if s_now is None and s_hist is None:
        out.summary = ("latency not compared: one repeat on each side and no noise history for this device, model "
                       "and configuration; run with at least 2 repeats (--repeats 5)")
        return out
    # The noise never below what this device usually shows: a pair of lucky quiet runs must
    # not make a small shift look real.
    if s_now is not None and (s_hist is None or s_now >= s_hist):
        s, df = s_now, df_now
        out.noise_source = f"this comparison's {nb}+{nc} repeats"
    else:
        s, df = s_hist, (df_now if df_now > 0 else df_hist)
        out.noise_source = f"this device's history of {history.runs_of(figure)} runs"
        if s_now is not None:
            out.noise_source += f" (this comparison's {nb}+{nc} repeats showed {s_now:.1%})"
    out.noise = s
    within = s * s * (1.0 / nb + 1.0 / nc)
    # The baseline and the candidate were measured at different times: each run's offset from
    # the device's usual level adds to the difference (Welch-Satterthwaite for the df).
    s_runs, df_runs = history.between_runs(figure)
    between = 2 * s_runs * s_runs if s_runs else 0.0
    if between > 0:
        df = (within + between) ** 2 / (within ** 2 / max(df, 1) + between ** 2 / df_runs)
        out.noise_source += (f"; run-to-run spread {s_runs:.1%} from this device's last "
                             f"{history.runs_of(figure, levels=True)} runs")
    se = math.sqrt(within + between)
    _t_test_of_log_ratio(out, d, se, df, tol.alpha)
    change = out.ratio - 1
    what = "fastest inference per repeat" if figure == FASTEST else "median"
    effect = (f"{what} {_ms(out.baseline)} → {_ms(out.candidate)} ({change:+.1%}, 95% CI "
              f"{out.ci_low - 1:+.1%} … {out.ci_high - 1:+.1%}, p={out.p_value:.2g}; {nb}+{nc} repeats, "
              f"between-repeat spread {s:.1%} from {out.noise_source}, noise floor {out.noise_floor:.1%})"
              + (_median_change(baseline, candidate) if figure == FASTEST else ""))
    big_enough = abs(change) >= tol.latency_ratio
    shift = _significant_shift(out, tol, tol.alpha)
    if shift is not None:
        out.verdict, out.summary = shift, f"latency {'regressed' if shift == REGRESSION else 'improved'}: {effect}"
    elif big_enough and abs(change) < out.noise_floor:
        out.verdict, out.inconclusive = UNCHANGED, True
        out.summary = (f"latency change of {change:+.1%} is below this device's noise floor of "
                       f"{out.noise_floor:.1%}; add repeats or quiet the device: {effect}")
    else:
        out.verdict = UNCHANGED
        why = f"below the {tol.latency_ratio:.0%} minimum effect" if not big_enough else "not significant"
        out.summary = f"latency unchanged ({why}): {effect}"
    return out


def compare_latency_pairs(baseline: RepeatFigures, candidate: RepeatFigures, tol: Tolerances = Tolerances(), *,
                          rounds: int = CONFIRMATION_ROUNDS, figure: Optional[str] = None,
                          trim: float = PAIR_TRIM) -> MetricComparison:
    """Latency of interleaved repeats, the i-th of the baseline paired with the i-th of the
    candidate (run back to back on one device): Yuen's paired t-test on the log ratio within
    each pair (a ``trim`` share of the ratios trimmed at each end, their spread winsorized), at
    alpha / ``rounds`` (see the module docstring). A pair with an unsteady side is left
    out. The verdict is a regression, an improvement, unchanged (resolved: no slowdown of the
    minimum effect is left inside the 95 % interval), or unchanged and inconclusive (more pairs
    could still tell). Without ``figure``, on the per-repeat figure whose pairs agree best."""
    if figure is None:
        return _least_noisy([(f, compare_latency_pairs(baseline, candidate, tol, rounds=rounds, figure=f, trim=trim))
                             for f in _figures(baseline, candidate)])
    alpha = tol.alpha / max(1, rounds)
    out = MetricComparison(
        metric="latency.median",
        statistic=f"paired Student t (Yuen, {trim:.0%} trimmed) and sign test on the log ratios of the "
                  f"{_FIGURE_NAMES[figure]}, baseline and candidate interleaved on one device (both at alpha "
                  f"{alpha:.2g}: {tol.alpha:g} over up to {rounds} rounds)",
        threshold=tol.latency_ratio, confidence=CONFIDENCE,
    )
    if _unsteady(out, baseline, candidate):
        return out
    b_all = baseline.values(figure, steady_only=False)
    c_all = candidate.values(figure, steady_only=False)
    pairs = [(b, c) for b, c, sb, sc in zip(b_all, c_all, baseline.steady_mask, candidate.steady_mask) if sb and sc]
    out.baseline_count = out.candidate_count = len(pairs)
    if len(pairs) < 2:
        out.inconclusive = True
        out.summary = f"latency not judged: {len(pairs)} steady pair(s) of interleaved repeats, at least 2 are needed"
        return out
    logs = np.log(np.asarray(pairs, dtype=np.float64))
    diffs = np.sort(logs[:, 1] - logs[:, 0])
    n = len(diffs)
    # Yuen's trimmed mean: a burst of a neighbour that falls on one side of a pair makes that
    # pair's ratio wild; the g lowest and g highest ratios are trimmed and their spread
    # winsorized, so a few such pairs neither fake a change nor hide one.
    g = int(math.floor(trim * n))
    d = float(diffs[g:n - g].mean())
    winsorized = np.clip(diffs, diffs[g], diffs[n - g - 1])
    sd = float(winsorized.std(ddof=1))
    se = sd / ((1 - 2 * g / n) * math.sqrt(n))
    df = n - 2 * g - 1
    out.baseline, out.candidate = float(np.exp(logs[:, 0].mean())), float(np.exp(logs[:, 1].mean()))
    out.ratio = math.exp(d)
    # Each side's own between-repeat spread: a pair's log ratio has the spread of two repeats.
    out.noise = sd / math.sqrt(2)
    out.noise_source = (f"{n} interleaved pairs (their log ratios spread {sd:.1%}"
                        + (f", {g} lowest and {g} highest trimmed" if g else "") + ")")
    _t_test_of_log_ratio(out, d, se, df, alpha)
    # A change must be borne out by the signs of the pairs (see the module docstring): the
    # candidate slower (or faster) in significantly many of them.
    t_p = out.p_value
    t_shift = _significant_shift(out, tol, alpha)  # what the t-test alone calls
    slower = int(np.count_nonzero(diffs > 0))
    change_sign_p = _sign_test_p(slower, int(np.count_nonzero(diffs)))
    shift = t_shift if change_sign_p < alpha else None
    out.p_value = max(t_p, change_sign_p)  # the p-value the verdict rests on
    change = out.ratio - 1
    what = "fastest inference per repeat" if figure == FASTEST else "median"
    effect = (f"{what} {_ms(out.baseline)} → {_ms(out.candidate)} ({change:+.1%}, 95% CI "
              f"{out.ci_low - 1:+.1%} … {out.ci_high - 1:+.1%}, t p={t_p:.2g}, sign test p={change_sign_p:.2g} "
              f"against alpha {alpha:.2g}; candidate slower in {slower} of {n} interleaved pairs, log ratios spread "
              f"{sd:.1%}, noise floor {out.noise_floor:.1%})"
              + (_median_change(baseline, candidate) if figure == FASTEST else ""))
    t_clears = out.ci_high < 1 + tol.latency_ratio
    if shift is not None:
        out.verdict, out.summary = shift, f"latency {'regressed' if shift == REGRESSION else 'improved'}: {effect}"
        return out
    if t_clears and n >= MIN_PAIRS_TO_CLEAR:
        out.verdict = UNCHANGED
        out.summary = f"latency unchanged (no slowdown of {tol.latency_ratio:.0%} inside the 95% interval): {effect}"
        if t_shift == IMPROVEMENT:
            out.summary += "; faster by the t-test alone, but in too few pairs to call it an improvement"
        return out
    out.verdict, out.inconclusive = UNCHANGED, True
    if t_shift is not None:
        fewest = sign_test_min_pairs(alpha)
        way, count = ("slower", slower) if t_shift == REGRESSION else ("faster", int(np.count_nonzero(diffs < 0)))
        why = (f"the t-test alone would call it {'a regression' if t_shift == REGRESSION else 'an improvement'}, "
               f"but the candidate was {way} in {count} of {n} interleaved pairs (sign test p={change_sign_p:.2g}"
               + (f"; fewer than {fewest} pairs never confirm a change" if n < fewest else "") + ")")
    elif t_clears:
        why = (f"no slowdown of {tol.latency_ratio:.0%} is inside the 95% interval, but {n} interleaved pairs are "
               f"too few to rule one out (at least {MIN_PAIRS_TO_CLEAR})")
    else:
        why = (f"a slowdown of {tol.latency_ratio:.0%} or more is still inside the 95% interval after {n} "
               f"interleaved pairs")
    out.summary = f"latency not resolved: {why}; more pairs or a quieter device would tell: {effect}"
    return out


def sign_test_min_pairs(alpha: float) -> int:
    """Fewest pairs whose two-sided sign test can reach ``alpha``: with every pair on one side
    p = 2 / 2^n, so ten pairs at a confirmation's 0.0025 (0.002), no fewer."""
    return int(math.floor(math.log2(2 / alpha))) + 1


def _sign_test_p(slower: int, votes: int) -> float:
    """Two-sided exact sign test: the candidate slower in ``slower`` of ``votes`` pairs, against
    even odds (a pair with no difference at all is no vote); 1 when there are no votes."""
    if votes == 0:
        return 1.0
    return float(stats.binomtest(slower, votes, 0.5).pvalue)


def needs_confirmation(comparison: "Comparison", tol: Tolerances = Tolerances()) -> bool:
    """Worth a confirmation: every first attempt except one that settled latency — a resolved
    improvement, or unchanged with no slowdown of the minimum effect left inside its 95 %
    interval. So a regression, a change below the noise floor (either way), an unsteady side,
    and an "unchanged" whose interval still holds a slowdown are all confirmed. The first
    attempt compares with a baseline measured at another time, on a device that may have been
    busier or quieter then; the interleaved pairs of a confirmation see both sides at the same
    times, so they can tell where it could not."""
    for m in comparison.metrics:
        if m.metric != "latency.median":
            continue
        if m.verdict == IMPROVEMENT:
            return False
        settled = (m.verdict == UNCHANGED and not m.inconclusive and math.isfinite(m.ci_high)
                   and m.ci_high < 1 + tol.latency_ratio)
        return not settled
    return False


def compare_interleaved(baseline: Mapping[str, Any], candidate: Mapping[str, Any], tol: Tolerances = Tolerances(), *,
                        rounds: int = CONFIRMATION_ROUNDS, baseline_job_id: str = "",
                        candidate_job_id: str = "") -> Comparison:
    """Every comparison of a confirmation's joined baseline and candidate runs, latency paired
    repeat by repeat (``compare_latency_pairs``); the rest as ``compare_results``."""
    comparison = compare_results(baseline, candidate, tol, baseline_job_id=baseline_job_id,
                                 candidate_job_id=candidate_job_id)
    paired = compare_latency_pairs(repeat_figures(baseline), repeat_figures(candidate), tol, rounds=rounds)
    comparison.metrics = [paired if m.metric == "latency.median" else m for m in comparison.metrics]
    return comparison


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
               unit: str, simulated: bool = False) -> MetricComparison:
    out = MetricComparison(metric=metric, threshold=limit, simulated=simulated,
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
    if simulated:
        text += " (simulated sensor)"
    if change > limit:
        out.verdict, out.summary = REGRESSION, f"{metric} regressed: {text}"
    elif -change > limit:
        out.verdict, out.summary = IMPROVEMENT, f"{metric} improved: {text}"
    else:
        out.verdict, out.summary = UNCHANGED, f"{metric} unchanged: {text}"
    return out


def _simulated(result: Mapping[str, Any], section: str) -> bool:
    return bool((result.get(section) or {}).get("simulated"))


def compare_results(baseline: Mapping[str, Any], candidate: Mapping[str, Any], tol: Tolerances = Tolerances(), *,
                    baseline_job_id: str = "", candidate_job_id: str = "",
                    history: NoiseHistory = NoiseHistory()) -> Comparison:
    """Every comparison of two result documents (BenchmarkResult fields as stored)."""
    b_ns = baseline.get("latency", {}).get("samples_ns") or []
    c_ns = candidate.get("latency", {}).get("samples_ns") or []
    comparison = Comparison(baseline_job_id, candidate_job_id)
    comparison.metrics.append(compare_latency_repeats(repeat_figures(baseline), repeat_figures(candidate), tol,
                                                      history))
    comparison.metrics.append(compare_spread(b_ns, c_ns, tol))
    comparison.metrics.append(_tolerance("memory.peak", _reading(baseline, "memory", "peak_bytes"),
                                         _reading(candidate, "memory", "peak_bytes"),
                                         relative=True, limit=tol.memory_ratio, unit="bytes"))
    comparison.metrics.append(_tolerance("energy.per_inference",
                                         _reading(baseline, "power", "energy_per_inference_joules"),
                                         _reading(candidate, "power", "energy_per_inference_joules"),
                                         relative=True, limit=tol.energy_ratio, unit="J",
                                         simulated=_simulated(baseline, "power") or _simulated(candidate, "power")))
    comparison.metrics.append(_tolerance("temperature.max", _max_temperature(baseline), _max_temperature(candidate),
                                         relative=False, limit=tol.temperature_celsius, unit="°C",
                                         simulated=_simulated(baseline, "thermal") or _simulated(candidate, "thermal")))
    return comparison


def headline_values(result: Mapping[str, Any]) -> Dict[str, Optional[float]]:
    """The figures kept per nightly case for history and change-point detection. The p50 is
    the median of the per-repeat medians, so one odd process cannot move the history; the
    between-repeat spread and the repeat count make the device's noise history."""
    lat = result.get("latency", {})
    samples = lat.get("samples_ns") or []
    figures = repeat_figures(result)
    medians = figures.all
    median = float(np.median(medians)) if medians else lat.get("p50_seconds")
    p99 = float(np.percentile(samples, 99)) / 1e9 if samples else lat.get("p99_seconds")
    spread = lat.get("between_repeat_spread")
    if spread is None and len(medians) >= 2:
        spread = float(np.std(np.log(medians), ddof=1))
    fastest = figures.fastest or ()
    return {
        "latency.between_repeat_spread": spread,
        "latency.fastest_spread": float(np.std(np.log(fastest), ddof=1)) if len(fastest) >= 2 else None,
        "latency.fastest": float(np.median(fastest)) if fastest else None,
        "latency.repeats": float(len(medians)) if medians else None,
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
                 "latency.between_repeat_spread": "ratio", "latency.fastest": "s", "latency.fastest_spread": "ratio",
                 "memory.peak": "bytes", "energy.per_inference": "J", "power.mean": "W", "temperature.max": "C"}


def noise_history(values: Sequence[Mapping[str, Any]], limit: int = NOISE_HISTORY_RUNS) -> NoiseHistory:
    """A NoiseHistory from the headline values of earlier runs (oldest first)."""
    by_key: Dict[str, List[Tuple[float, int]]] = {"latency.between_repeat_spread": [], "latency.fastest_spread": []}
    levels: Dict[str, List[Tuple[float, int, float]]] = {"latency.p50": [], "latency.fastest": []}
    spread_of = {"latency.p50": "latency.between_repeat_spread", "latency.fastest": "latency.fastest_spread"}
    for v in list(values)[-limit:]:
        repeats = v.get("latency.repeats")
        for key, spreads in by_key.items():
            spread = v.get(key)
            if spread is not None and repeats is not None and repeats >= 2 and math.isfinite(float(spread)):
                spreads.append((float(spread), int(repeats)))
        for key, runs in levels.items():
            level, spread = v.get(key), v.get(spread_of[key])
            if level is not None and repeats is not None and repeats >= 1:
                runs.append((float(level), int(repeats), float(spread) if spread is not None else 0.0))
    return NoiseHistory(tuple(by_key["latency.between_repeat_spread"]), tuple(by_key["latency.fastest_spread"]),
                        tuple(levels["latency.p50"]), tuple(levels["latency.fastest"]))
