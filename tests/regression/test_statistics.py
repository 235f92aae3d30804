"""Regression statistics on recorded-style sample sets with known differences."""
from __future__ import annotations

import numpy as np
import pytest

from hilfarm.controller.regression import (CHANGED, REGRESSION, Tolerances, compare_latency, compare_results,
                                           compare_spread)

N = 400


def latency(rng, n=N, median_ns=4e6, sigma=0.08, scale=1.0, kind="lognormal", spread=1.0):
    """Skewed latency like a real device: a floor, a right tail, ~1 % interrupt outliers."""
    if kind == "lognormal":
        x = rng.lognormal(0.0, sigma * spread, n)
    else:  # gamma with the same median and a similar relative spread
        shape = 1 / (sigma * spread) ** 2
        x = rng.gamma(shape, 1 / shape, n)
        x /= np.median(x)
    x = median_ns * scale * x
    hits = rng.random(n) < 0.01
    x[hits] *= rng.uniform(2, 8, hits.sum())
    return x.astype(np.int64)


@pytest.mark.parametrize("kind", ["lognormal", "gamma"])
def test_identical_distributions_raise_no_false_alarm_over_200_seeds(kind):
    alarms = [seed for seed in range(200)
              if compare_latency(latency(np.random.default_rng(seed), kind=kind),
                                 latency(np.random.default_rng(10_000 + seed), kind=kind)).verdict == REGRESSION]
    assert alarms == []


@pytest.mark.parametrize("kind", ["lognormal", "gamma"])
def test_a_five_percent_slower_median_is_caught(kind):
    caught = sum(compare_latency(latency(np.random.default_rng(seed), kind=kind),
                                 latency(np.random.default_rng(10_000 + seed), kind=kind, scale=1.05)).verdict
                 == REGRESSION for seed in range(100))
    assert caught >= 95


def test_the_report_names_statistic_effect_and_confidence():
    rng = np.random.default_rng(1)
    result = compare_latency(latency(rng), latency(rng, scale=1.05))
    assert result.verdict == REGRESSION
    assert "Mann-Whitney" in result.statistic and "bootstrap" in result.statistic
    assert result.confidence == 0.95 and result.ci_low > 1.0 and 1.02 < result.ratio < 1.08
    assert "95% CI" in result.summary and "p=" in result.summary


def test_a_change_in_spread_alone_is_reported_as_such_not_as_a_regression():
    rng = np.random.default_rng(2)
    base, wide = latency(rng), latency(rng, spread=2.5)
    assert compare_latency(base, wide).verdict != REGRESSION
    spread = compare_spread(base, wide)
    assert spread.verdict == CHANGED and "widened" in spread.summary and spread.ratio > 1.5


def test_too_few_samples_are_unknown_not_a_pass():
    result = compare_latency([1000] * 5, [2000] * 5)
    assert result.verdict == "unknown" and "at least 20" in result.summary


def test_memory_energy_and_temperature_use_their_own_tolerances():
    def result(peak, joules, celsius):
        return {"latency": {"samples_ns": list(latency(np.random.default_rng(0)))},
                "memory": {"peak_bytes": peak}, "power": {"energy_per_inference_joules": joules},
                "thermal": {"zones": [{"zone": "cpu", "max_celsius": celsius}]}}
    tol = Tolerances(memory_ratio=0.05, energy_ratio=0.10, temperature_celsius=3)
    same = compare_results(result(100e6, 0.010, 60), result(104e6, 0.0109, 62.5), tol)
    assert not same.regression
    worse = compare_results(result(100e6, 0.010, 60), result(106e6, 0.0115, 64), tol)
    verdicts = {m.metric: m.verdict for m in worse.metrics}
    assert verdicts["memory.peak"] == verdicts["energy.per_inference"] == verdicts["temperature.max"] == REGRESSION
    missing = compare_results(result(100e6, 0.01, 60), {"latency": {"samples_ns": [1] * 30}, "memory": {"peak_bytes": 1},
                                                         "unavailable": [{"field": "power", "reason": "no sensor"}]}, tol)
    energy = [m for m in missing.metrics if m.metric == "energy.per_inference"][0]
    assert energy.verdict == "unknown" and "did not measure" in energy.summary
