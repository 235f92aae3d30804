"""Which night did a figure shift? Change points in a nightly history.

A model that gets 1 % slower every week never fails a pairwise test against yesterday, yet after
two months it is 8 % slower. Looking at the whole history finds such steps and drifts.

The method follows E-Divisive as used by MongoDB and Apache Otava (Hunter): binary segmentation,
where each candidate split is kept only if a permutation test says a split that good would not
come from a history with no change. Location uses ``ruptures`` (binary segmentation over the L2
cost of the log values, so a step is a ratio); significance uses ``scipy.stats.permutation_test``
of the same gain over shuffled nights. ``ruptures`` was chosen over MongoDB's
``signal-processing-algorithms`` (pins numpy < 2 through its gevent dependency) and
``apache-otava`` (pins one numpy release and brings cloud clients): it ships wheels for
CPython 3.9-3.13 built against numpy 2 and is actively maintained.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import ruptures as rpt
from scipy import stats

METHOD = ("binary segmentation (ruptures, L2 cost on log values) with a permutation test of each split "
          "(scipy.stats.permutation_test), as in E-Divisive")


@dataclass(frozen=True)
class ChangePoint:
    index: int          # first point after the shift
    before: float       # median of the segment before
    after: float        # median of the segment after
    ratio: float
    p_value: float


def _best_split(x: np.ndarray, min_size: int) -> Tuple[int, float]:
    """(index, gain) of the best single split of ``x`` under the L2 cost."""
    algo = rpt.Binseg(model="l2", min_size=min_size, jump=1).fit(x)
    index = algo.predict(n_bkps=1)[0]
    cost = algo.cost
    gain = cost.error(0, len(x)) - cost.error(0, index) - cost.error(index, len(x))
    return index, float(gain)


def _gain(x: np.ndarray, min_size: int) -> float:
    return _best_split(x, min_size)[1]


def detect(values: Sequence[float], *, alpha: float = 0.01, min_effect: float = 0.03, min_size: int = 3,
           permutations: int = 199, max_points: int = 8, seed: int = 0) -> List[ChangePoint]:
    """Change points of a series (oldest first). A split is kept when its permutation p-value
    is below ``alpha`` and the medians either side differ by at least ``min_effect``."""
    raw = np.asarray([v for v in values], dtype=np.float64)
    if raw.size < 2 * min_size or np.any(~np.isfinite(raw)) or np.any(raw <= 0):
        return []
    logs = np.log(raw)
    rng = np.random.default_rng(seed)
    found: List[ChangePoint] = []
    segments = [(0, raw.size)]
    while segments and len(found) < max_points:
        lo, hi = segments.pop(0)
        if hi - lo < 2 * min_size:
            continue
        segment = logs[lo:hi]
        if np.ptp(segment) == 0:
            continue
        index, gain = _best_split(segment, min_size)
        test = stats.permutation_test(
            (segment,), lambda s: _gain(s, min_size), permutation_type="pairings",
            n_resamples=permutations, alternative="greater", vectorized=False, random_state=rng,
        )
        p = float(test.pvalue)
        split = lo + index
        before, after = float(np.median(raw[lo:split])), float(np.median(raw[split:hi]))
        ratio = after / before
        if p >= alpha or abs(ratio - 1) < min_effect:
            continue
        found.append(ChangePoint(index=split, before=before, after=after, ratio=ratio, p_value=p))
        segments += [(lo, split), (split, hi)]
    return sorted(found, key=lambda c: c.index)


def describe(point: ChangePoint, label: Optional[str] = None) -> str:
    at = label or f"point {point.index}"
    return (f"shift at {at}: median {point.before:.4g} → {point.after:.4g} "
            f"({point.ratio - 1:+.1%}, permutation p={point.p_value:.3g})")


def finite(values: Sequence[Optional[float]]) -> List[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]
