"""Regression statistics with the repeat as the unit, on sample sets shaped like real runs:
skewed latency with interrupt outliers inside each process, and an offset between processes
(memory layout, caches, clocks), which is where most run-to-run variance lives."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hilfarm.controller.regression import (
    CHANGED, MEDIAN, REGRESSION, UNCHANGED, UNKNOWN, NoiseHistory, RepeatFigures, Tolerances, compare_latency_repeats,
    compare_latency_samples, compare_results, compare_spread, noise_history, repeat_figures,
)

N = 400
RECORDED = Path(__file__).parents[1] / "fixtures" / "latency"


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


def run(rng, repeats=5, between=0.03, scale=1.0, kind="lognormal", n=N, steady=True):
    """A stored result document of one job measured in ``repeats`` processes, each offset
    from the true median by a log-normal factor of spread ``between``."""
    samples, reps = [], []
    for k in range(repeats):
        offset = math.exp(rng.normal(0.0, between))
        xs = latency(rng, n=n, scale=scale * offset, kind=kind)
        reps.append({"index": k, "first_sample": len(samples), "count": len(xs),
                     "p50_seconds": float(np.median(xs)) / 1e9, "steady": steady})
        samples += [int(v) for v in xs]
    result = {"latency": {"samples_ns": samples, "repeats": repeats}, "repeats": reps,
              "stability": {"steady": steady, "reasons": [] if steady else ["latency drifted +30%"]}}
    return result


def verdict(base, cand, tol=Tolerances(), history=NoiseHistory(), figure=None):
    return compare_latency_repeats(repeat_figures(base), repeat_figures(cand), tol, history, figure=figure)


# ---------------------------------------------------------------- false alarms and power


@pytest.mark.parametrize("kind", ["lognormal", "gamma"])
def test_processes_that_differ_by_a_few_percent_raise_false_alarms_at_the_repeat_level_only_at_alpha(kind):
    """Identical models, 3 % between-process spread. At the repeat level the p-value means what
    it says: below 0.01 in about 1 % of 1,000 comparisons, and a regression (one direction of
    the two, and a suite then needs a confirming re-run too) rarer still. Pooling the
    inferences of the same runs calls nearly every comparison significant."""
    significant = alarms = 0
    for seed in range(1000):
        rng = np.random.default_rng(seed)
        result = verdict(run(rng, kind=kind, n=40), run(rng, kind=kind, n=40))
        significant += result.p_value < 0.01
        alarms += result.verdict == REGRESSION
    assert significant <= 20 and alarms <= 10  # twice what alpha allows
    pooled_significant = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        a, b = run(rng, kind=kind), run(rng, kind=kind)
        pooled_significant += compare_latency_samples(a["latency"]["samples_ns"],
                                                      b["latency"]["samples_ns"]).p_value < 0.01
    # Their pooled medians differ by the between-process offset over the square root of the
    # repeats (about 1.9 % here), which 2,000 samples a side make "significant" whenever it
    # exceeds about 0.8 %: in about two thirds of the comparisons.
    assert pooled_significant >= 10


@pytest.mark.parametrize("kind", ["lognormal", "gamma"])
def test_a_five_percent_slowdown_is_caught_on_a_quiet_device(kind):
    caught = sum(verdict(run(np.random.default_rng(seed), between=0.01, kind=kind),
                         run(np.random.default_rng(10_000 + seed), between=0.01, kind=kind, scale=1.05)).verdict
                 == REGRESSION for seed in range(100))
    assert caught >= 95


def test_a_ten_percent_slowdown_is_caught_with_two_percent_between_processes():
    """5+5 repeats with 2 % between processes resolve about 4 % (t at 0.01 over 8 degrees of
    freedom times the standard error): a 10 % slowdown stands four standard errors above it."""
    caught = sum(verdict(run(np.random.default_rng(seed), between=0.02),
                         run(np.random.default_rng(10_000 + seed), between=0.02, scale=1.10)).verdict
                 == REGRESSION for seed in range(100))
    assert caught >= 98


def test_the_report_names_statistic_effect_noise_and_confidence():
    rng = np.random.default_rng(1)
    result = verdict(run(rng, between=0.01), run(rng, between=0.01, scale=1.08))
    assert result.verdict == REGRESSION
    assert "Student t on the logs of the" in result.statistic and "of each repeat" in result.statistic
    assert result.confidence == 0.95
    assert result.ci_low > 1.0 and 1.05 < result.ratio < 1.11
    assert result.baseline_count == result.candidate_count == 5
    assert 0 < result.noise < 0.03 and 0 < result.noise_floor < 0.05
    assert "this comparison's 5+5 repeats" in result.noise_source
    assert "95% CI" in result.summary and "p=" in result.summary and "noise floor" in result.summary


# ---------------------------------------------------------------- the noise floor


def test_a_change_the_device_noise_cannot_resolve_is_inconclusive_and_says_so():
    """6 % between processes' medians, 3 repeats a side: a 4 % shift is not called a regression."""
    rng = np.random.default_rng(7)
    base = run(rng, repeats=3, between=0.0)
    base["repeats"] = [dict(r, p50_seconds=r["p50_seconds"] * f) for r, f in zip(base["repeats"], (0.94, 1.0, 1.06))]
    cand = run(rng, repeats=3, between=0.0, scale=1.04)
    cand["repeats"] = [dict(r, p50_seconds=r["p50_seconds"] * f) for r, f in zip(cand["repeats"], (0.94, 1.0, 1.06))]
    result = verdict(base, cand, figure=MEDIAN)
    assert result.verdict == UNCHANGED and result.inconclusive
    assert result.noise_floor > 0.04
    assert f"below this device's noise floor of {result.noise_floor:.1%}" in result.summary
    assert "add repeats or quiet the device" in result.summary


def test_more_repeats_lower_the_noise_floor():
    floors = []
    for repeats in (3, 5, 10, 20):
        rng = np.random.default_rng(3)
        floors.append(verdict(run(rng, repeats=repeats, between=0.03), run(rng, repeats=repeats, between=0.03)).noise_floor)
    assert floors == sorted(floors, reverse=True) and floors[-1] < floors[0] / 2


def test_a_quiet_pair_of_runs_does_not_lower_the_noise_below_the_device_history():
    """Two runs that happen to agree closely are judged with the noise this device usually has."""
    rng = np.random.default_rng(5)
    base, cand = run(rng, between=0.002), run(rng, between=0.002, scale=1.04)
    alone = verdict(base, cand)
    assert alone.verdict == REGRESSION  # on their own, a 4 % shift with 0.2 % noise is certain
    noisy = NoiseHistory(tuple((0.04, 5) for _ in range(12)))
    judged = verdict(base, cand, history=noisy)
    assert judged.verdict != REGRESSION and judged.inconclusive
    assert judged.noise == pytest.approx(0.04) and "history of 12 runs" in judged.noise_source


def test_one_repeat_a_side_is_judged_only_against_a_noise_history():
    rng = np.random.default_rng(11)
    base, cand = run(rng, repeats=1, between=0.0), run(rng, repeats=1, between=0.0, scale=1.2)
    lonely = verdict(base, cand)
    assert lonely.verdict == UNKNOWN and "at least 2 repeats" in lonely.summary
    quiet_history = NoiseHistory(tuple((0.01, 5) for _ in range(10)))
    assert verdict(base, cand, history=quiet_history).verdict == REGRESSION


def test_noise_history_comes_from_the_headline_values_of_earlier_runs():
    values = [{"latency.between_repeat_spread": 0.02, "latency.repeats": 5.0},
              {"latency.between_repeat_spread": None, "latency.repeats": 1.0},  # one repeat: no spread
              {"latency.between_repeat_spread": 0.04, "latency.repeats": 5.0}]
    history = noise_history(values)
    s, df = history.pooled()
    assert history.runs == 2 and df == 8 and s == pytest.approx(math.sqrt((0.02 ** 2 + 0.04 ** 2) / 2))


# ---------------------------------------------------------------- unsteady runs are no evidence


def test_an_unsteady_run_is_not_evidence_of_a_regression():
    rng = np.random.default_rng(2)
    base, cand = run(rng, between=0.01), run(rng, between=0.01, scale=1.3, steady=False)
    result = verdict(base, cand)
    assert result.verdict == UNKNOWN and result.inconclusive
    assert "candidate's timed runs were not one steady state" in result.summary and "drifted" in result.summary
    comparison = compare_results(base, cand)
    assert not comparison.regression and comparison.inconclusive


def test_unsteady_repeats_are_left_out_and_the_steady_ones_judged():
    rng = np.random.default_rng(4)
    base, cand = run(rng, between=0.01), run(rng, between=0.01, scale=1.08)
    cand["repeats"][0]["steady"] = False
    cand["repeats"][0]["p50_seconds"] *= 0.5  # a repeat that never settled: its median means nothing
    result = verdict(base, cand)
    assert result.candidate_count == 4 and result.verdict == REGRESSION


def test_a_result_from_before_repeats_counts_as_one_repeat():
    rng = np.random.default_rng(6)
    old = {"latency": {"samples_ns": [int(v) for v in latency(rng)]}}
    medians = repeat_figures(old)
    assert len(medians.all) == 1 and medians.steady == medians.all
    assert medians.all[0] == pytest.approx(float(np.median(old["latency"]["samples_ns"])) / 1e9)


# ---------------------------------------------------------------- recorded runs of real processes


def recorded(name):
    doc = json.loads((RECORDED / name).read_text())
    return doc


@pytest.mark.parametrize("name", sorted(p.name for p in RECORDED.glob("*.json")))
def test_recorded_processes_of_one_model_against_each_other(name):
    """Ten processes of one unchanged model on a shared 2-core machine (recorded): the first
    five against the last five is no regression at the repeat level, though their pooled
    samples differ with a p-value no test should believe; the same five made slower by three
    times the noise floor that comparison reported is one."""
    doc = recorded(name)
    assert doc["recorded"] and len(doc["repeats"]) == 10

    def result(reps, scale=1.0):
        samples, out = [], []
        for k, xs in enumerate(reps):
            xs = [int(v * scale) for v in xs]
            out.append({"index": k, "first_sample": len(samples), "count": len(xs),
                        "p50_seconds": float(np.median(xs)) / 1e9, "steady": True})
            samples += xs
        return {"latency": {"samples_ns": samples}, "repeats": out, "stability": {"steady": True}}

    a, b = result(doc["repeats"][:5]), result(doc["repeats"][5:])
    same = verdict(a, b)
    assert same.verdict != REGRESSION, same.summary
    pooled = compare_latency_samples(a["latency"]["samples_ns"], b["latency"]["samples_ns"])
    assert pooled.p_value < 1e-3, pooled.summary  # what sample-level statistics would have believed
    slower = verdict(a, result(doc["repeats"][5:], scale=(1 + 3 * max(same.noise_floor, 0.03)) * same.ratio))
    assert slower.verdict == REGRESSION, slower.summary


# ---------------------------------------------------------------- the rest of a comparison


def test_a_change_in_spread_alone_is_reported_as_such_not_as_a_regression():
    rng = np.random.default_rng(2)
    base, wide = latency(rng), latency(rng, spread=2.5)
    spread = compare_spread(base, wide)
    assert spread.verdict == CHANGED and "widened" in spread.summary and spread.ratio > 1.5


def test_memory_energy_and_temperature_use_their_own_tolerances_and_say_when_simulated():
    def result(peak, joules, celsius, simulated=False):
        doc = run(np.random.default_rng(0), between=0.0)
        doc.update({"memory": {"peak_bytes": peak},
                    "power": {"energy_per_inference_joules": joules, "simulated": simulated},
                    "thermal": {"zones": [{"zone": "cpu", "max_celsius": celsius}], "simulated": simulated}})
        return doc
    tol = Tolerances(memory_ratio=0.05, energy_ratio=0.10, temperature_celsius=3)
    same = compare_results(result(100e6, 0.010, 60), result(104e6, 0.0109, 62.5), tol)
    assert not same.regression and not same.simulated
    worse = compare_results(result(100e6, 0.010, 60), result(106e6, 0.0115, 64), tol)
    verdicts = {m.metric: m.verdict for m in worse.metrics}
    assert verdicts["memory.peak"] == verdicts["energy.per_inference"] == verdicts["temperature.max"] == REGRESSION
    simulated = compare_results(result(100e6, 0.010, 60, simulated=True), result(100e6, 0.0115, 64, True), tol)
    by_metric = {m.metric: m for m in simulated.metrics}
    assert simulated.simulated and by_metric["energy.per_inference"].simulated
    assert "(simulated sensor)" in by_metric["temperature.max"].summary and not by_metric["latency.median"].simulated
    assert simulated.to_dict()["simulated"] is True
    missing = compare_results(result(100e6, 0.01, 60), {"latency": {"samples_ns": [1] * 30}, "memory": {"peak_bytes": 1},
                                                         "unavailable": [{"field": "power", "reason": "no sensor"}]}, tol)
    energy = [m for m in missing.metrics if m.metric == "energy.per_inference"][0]
    assert energy.verdict == "unknown" and "did not measure" in energy.summary


def test_repeat_figures_keeps_steady_repeats_apart():
    doc = run(np.random.default_rng(9), repeats=4)
    doc["repeats"][2]["steady"] = False
    medians = repeat_figures(doc)
    assert isinstance(medians, RepeatFigures) and len(medians.all) == 4 and len(medians.steady) == 3
