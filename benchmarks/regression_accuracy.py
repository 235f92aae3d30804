"""Does a regression check cry wolf? False alarms and detections on this machine, with real models.

For each model size (tens of microseconds, about a millisecond, tens of milliseconds per
inference) it measures a baseline once, then runs TRIALS regression checks of the unchanged
model (A/A), of a variant about 5 % slower and of one about 10 % slower (the same MLP with more
layers of the twenty), each check the way a suite does it:

1. the candidate in REPEATS fresh processes, compared with the baseline;
2. unless that first attempt settled latency (a resolved improvement, or unchanged with no
   3 % slowdown left inside its 95 % interval), a confirmation on the same device: baseline and candidate re-run
   one process at a time, interleaved A B, B A, ... in rounds of max(REPEATS, 6) pairs (a later
   round also makes up for pairs left out as unsteady, up to twice that), a new round while the
   pairs cannot tell, up to regression.CONFIRMATION_ROUNDS; a regression counts only when the
   confirmation finds it too.

Every process is a real benchmark child started by the agent's harness. The same measurements
are judged twice, side by side:

- **repeat level** (hilfarm's method): Student t on the logs of a per-repeat figure (each
  repeat's fastest inference or its median, whichever the repeats agree on better), the noise
  pooled with the device's history (built up over the trials, as a nightly builds it), a 3 %
  minimum effect and the noise floor; unsteady repeats are no evidence; the confirmation a
  paired t-test on the interleaved pairs at alpha / rounds, borne out by a sign test on the
  same pairs;
- **sample level** (the method before): Mann-Whitney U and a bootstrap interval on the pooled
  inferences of the same runs, a 3 % minimum effect; its confirmation judges the pooled
  inferences of the first round of pairs.

A confirmation is run whenever either method's first attempt calls for one, so both are
judged on the same data. The "true" slowdown of each variant is the median over its trials of
the ratio of the per-repeat medians, from the confirmations' pairs where they ran, else from
the first attempts.

    .venv/bin/python benchmarks/regression_accuracy.py [--trials 20] [--repeats 5] [--sizes us,ms,10ms] [--neighbour]

``--neighbour`` makes the machine busy on purpose for the whole run: a co-tenant process that
multiplies matrices on two threads in bursts of 0.3-2.5 s, 70 % of the time (CPU, caches and
memory bandwidth taken from the benchmark at moments it does not choose).

Targets, on a busy shared machine: 0 confirmed false alarms in 20 A/A; at least 19 of 20 of the
5 % slowdowns and 20 of 20 of the 10 % ones caught (by the repeat-level method).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from hilfarm.agent.harness import BenchmarkJob, RunDefaults, run_benchmark
from hilfarm.agent.results import JobSettings
from hilfarm.controller import regression
from hilfarm.controller.suites import (
    CONFIRMATION_PAIRS, joined_result, judge_interleaved, pairs_for_next_round, pairs_with_evidence,
)
from hilfarm.sample_models import make_onnx_mlp

LAYERS = 20

SIZES = {
    # name: (hidden width, batch, timed runs per repeat, minimum timed seconds per repeat,
    #        extra layers for the ~5 % and the ~10 % slower variant). A layer of twenty costs
    #        about 5 % when the layers dominate; in the tiny model the fixed cost per call is a
    #        larger share, so it takes two. The two small models time fewer seconds than a
    #        job's defaults (RunDefaults: 50 runs and 1 s) to keep the benchmark short; the
    #        ~37 ms model keeps the defaults, as a suite would run it: twenty inferences
    #        (0.7 s) are too few for its fastest one to be a quiet moment's on a busy machine.
    "us": (16, 1, 400, 0.2, (2, 4)),
    "ms": (256, 32, 100, 0.3, (1, 2)),
    "10ms": (512, 256, RunDefaults.min_runs, RunDefaults.min_seconds, (1, 2)),
}


def to_doc(result) -> Dict:
    """A stored-style result document (what the controller keeps) from the harness's result."""
    return {
        "latency": {"samples_ns": list(result.latency.samples_ns), "repeats": result.latency.repeats,
                    "between_repeat_spread": result.latency.between_repeat_spread},
        "repeats": [{"index": r.index, "first_sample": r.first_sample, "count": r.count,
                     "p50_seconds": r.p50_seconds, "min_seconds": r.min_seconds, "steady": r.steady}
                    for r in result.repeats],
        "stability": {"steady": result.stability.steady, "reasons": list(result.stability.reasons)},
    }


class Bench:
    def __init__(self, size: str, repeats: int, workdir: Path) -> None:
        hidden, batch, runs, seconds, self.extras = SIZES[size]
        self.size, self.repeats = size, repeats
        self.models = {
            extra: make_onnx_mlp(workdir / f"{size}-{extra}.onnx", in_features=hidden, hidden=hidden,
                                 layers=LAYERS + extra, out_features=hidden, batch=batch)
            for extra in (0, *self.extras)
        }
        self.settings = dict(threads=1, min_runs=runs, min_seconds=seconds, warmup_runs=2, warmup_seconds=0.1)

    def measure(self, extra: int, repeats: int) -> Dict:
        job = BenchmarkJob(str(self.models[extra]), "onnx", JobSettings(repeats=repeats, **self.settings),
                           defaults=RunDefaults())
        outcome = run_benchmark(job)
        if outcome.result is None:
            raise RuntimeError(f"{self.size}: {outcome.failure}")
        return to_doc(outcome.result)


@dataclass
class Tally:
    first: int = 0       # first attempts that suspected a regression
    confirmed: int = 0   # ... and the confirmation agreed
    inconclusive: int = 0


@dataclass
class Row:
    size: str
    kind: str
    trials: int = 0
    repeat_level: Tally = field(default_factory=Tally)
    sample_level: Tally = field(default_factory=Tally)
    ratios: List[float] = field(default_factory=list)
    rounds: int = 0      # confirmation rounds run, over all trials
    seconds: float = 0.0


def sample_level(base: Dict, cand: Dict) -> regression.MetricComparison:
    return regression.compare_latency_samples(base["latency"]["samples_ns"], cand["latency"]["samples_ns"])


def run_trials(bench: Bench, kind: str, extra: int, trials: int, baseline: Dict,
               history: List[Dict]) -> Row:
    row = Row(bench.size, kind)
    started = time.monotonic()
    pairs_per_round = max(bench.repeats, CONFIRMATION_PAIRS)
    for trial in range(trials):
        cand = bench.measure(extra, bench.repeats)
        noise = regression.noise_history(history)
        first = regression.compare_results(baseline, cand, history=noise)
        new = first.metrics[0]
        old = sample_level(baseline, cand)
        history.append(regression.headline_values(cand))
        new_suspects, old_suspects = regression.needs_confirmation(first, regression.Tolerances()), old.verdict == regression.REGRESSION
        row.repeat_level.first += new_suspects
        row.sample_level.first += old_suspects
        ratio = _median_ratio(baseline, cand)
        rounds = 0
        confirm_new = None
        old_confirmed = False
        bases: List[Dict] = []
        cands: List[Dict] = []
        if new_suspects or old_suspects:
            round_pairs = pairs_per_round
            while rounds < regression.CONFIRMATION_ROUNDS:
                rounds += 1
                for pair in range(round_pairs):  # A B, B A, ...: one process each
                    sides = [(bases, 0), (cands, extra)]
                    for side, model in (sides if pair % 2 == 0 else sides[::-1]):
                        side.append(bench.measure(model, 1))
                if rounds == 1 and old_suspects:
                    confirm_old = sample_level(_joined(bases), _joined(cands))
                    old_confirmed = confirm_old.verdict == regression.REGRESSION
                    row.sample_level.confirmed += old_confirmed
                if not new_suspects:
                    break
                confirm_new, more = judge_interleaved(_jobs(bases), _jobs(cands), regression.Tolerances(), rounds)
                if not more:
                    break
                round_pairs = pairs_for_next_round(pairs_per_round, rounds, pairs_with_evidence(confirm_new))
            ratio = _median_ratio(_joined(bases), _joined(cands))
            if confirm_new is not None:
                row.repeat_level.confirmed += confirm_new.regression
                row.repeat_level.inconclusive += confirm_new.inconclusive
        else:
            row.repeat_level.inconclusive += new.inconclusive
        if RECORD is not None:
            RECORD.append({"size": bench.size, "kind": kind, "trial": trial, "first": _figures_of(cand),
                           "baseline": _figures_of(baseline),
                           "pairs": [[_figures_of(b), _figures_of(c)] for b, c in zip(bases, cands)]
                           if rounds else []})
        row.ratios.append(ratio)
        row.rounds += rounds
        row.trials += 1
        print(f"  {bench.size:>4} {kind:<4} trial {trial + 1:>2}: median ratio {ratio:.3f}; repeat level "
              f"{new.verdict}{' (inconclusive)' if new.inconclusive else ''}"
              f"{f', confirmation {rounds} round(s): ' + _outcome(confirm_new) if rounds and new_suspects else ''}; "
              f"sample level {old.verdict} (p={old.p_value:.2g}){', confirmed' if old_confirmed else ''}",
              flush=True)
        if confirm_new is not None and not confirm_new.regression and kind != "A/A":
            print(f"        confirmation: {confirm_new.metrics[0].summary}", flush=True)
    row.seconds = time.monotonic() - started
    return row


RECORD: Optional[List[Dict]] = None  # every trial's per-repeat figures, with --record


def _figures_of(doc: Dict) -> List[Dict]:
    return [{"p50": r["p50_seconds"], "min": r["min_seconds"], "steady": r["steady"]} for r in doc["repeats"]]


def _outcome(comparison: Optional[regression.Comparison]) -> str:
    if comparison is None:
        return "none"
    return "regression" if comparison.regression else ("inconclusive" if comparison.inconclusive else "cleared")


def _median_ratio(base: Dict, cand: Dict) -> float:
    b, c = regression.repeat_figures(base).all, regression.repeat_figures(cand).all
    return statistics.median(c) / statistics.median(b)


class _Job:
    def __init__(self, result: Dict, index: int = 0) -> None:
        self.result = result
        self.id = f"repeat-{index}"


def _jobs(docs: List[Dict]) -> List[_Job]:
    return [_Job(d, k) for k, d in enumerate(docs)]


def _joined(docs: List[Dict]) -> Dict:
    return joined_result(_jobs(docs))


def neighbour(parent: int, seed: int = 1) -> None:
    """A co-tenant for --neighbour: bursts of a two-thread matrix multiply, with pauses, until
    the benchmark that started it has gone (however it ended)."""
    import random

    import numpy as np

    rng = random.Random(seed)
    a = np.random.default_rng(seed).random((700, 700))
    while os.getppid() == parent:
        until = time.monotonic() + rng.uniform(0.3, 2.5)
        if rng.random() < 0.7:
            while time.monotonic() < until:
                a = a @ a.T
                a /= a.max()
        else:
            time.sleep(max(0.0, until - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="us,ms,10ms")
    parser.add_argument("--neighbour", action="store_true", help="run a busy co-tenant for the whole run")
    parser.add_argument("--record", type=Path, help="write every trial's per-repeat figures to this JSON file")
    args = parser.parse_args()
    global RECORD
    RECORD = [] if args.record else None
    if args.neighbour:
        os.environ.setdefault("OMP_NUM_THREADS", "2")
        co_tenant = multiprocessing.get_context("spawn").Process(target=neighbour, args=(os.getpid(),), daemon=True)
        co_tenant.start()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
          f"{args.trials} trials per kind, {args.repeats} repeats per run"
          f"{'; a busy co-tenant running (--neighbour)' if args.neighbour else ''}", flush=True)
    rows: List[Row] = []
    with tempfile.TemporaryDirectory(prefix="hilfarm-accuracy-") as tmp:
        for size in args.sizes.split(","):
            bench = Bench(size, args.repeats, Path(tmp))
            baseline = bench.measure(0, args.repeats)
            p50 = statistics.median(r["p50_seconds"] for r in baseline["repeats"])
            print(f"{size}: baseline median {p50 * 1e3:.4f} ms, between-repeat spread "
                  f"{baseline['latency']['between_repeat_spread'] or 0:.1%}", flush=True)
            history: List[Dict] = [regression.headline_values(baseline)]
            for kind, extra in (("A/A", 0), ("+5%", bench.extras[0]), ("+10%", bench.extras[1])):
                rows.append(run_trials(bench, kind, extra, args.trials, baseline, history))
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    header = (f"{'size':>5} {'check':>5} {'true ratio':>10} | {'repeat level: suspected / confirmed':>36} "
              f"{'inconclusive':>12} {'rounds':>6} | {'sample level: suspected / confirmed':>36} | minutes")
    print(header)
    print("-" * len(header))
    for row in rows:
        true = statistics.median(row.ratios) if row.ratios else float("nan")
        new, old = row.repeat_level, row.sample_level
        what = "false alarms" if row.kind == "A/A" else "caught"
        print(f"{row.size:>5} {row.kind:>5} {true:>10.3f} | "
              f"{f'{new.first}/{row.trials} / {new.confirmed}/{row.trials} {what}':>36} "
              f"{new.inconclusive:>12} {row.rounds:>6} | "
              f"{f'{old.first}/{row.trials} / {old.confirmed}/{row.trials} {what}':>36} | {row.seconds / 60:.1f}")
    failed = []
    for row in rows:
        if row.kind == "A/A" and row.repeat_level.confirmed:
            failed.append(f"{row.size} A/A: {row.repeat_level.confirmed} confirmed false alarms (target 0)")
        if row.kind == "+5%" and row.repeat_level.confirmed < row.trials - row.trials // 20:
            failed.append(f"{row.size} +5%: {row.repeat_level.confirmed}/{row.trials} caught (target 19 of 20)")
        if row.kind == "+10%" and row.repeat_level.confirmed < row.trials:
            failed.append(f"{row.size} +10%: {row.repeat_level.confirmed}/{row.trials} caught (target all)")
    print("targets met" if not failed else "targets missed: " + "; ".join(failed))
    if args.record:
        args.record.write_text(json.dumps(RECORD))


if __name__ == "__main__":
    sys.exit(main())
