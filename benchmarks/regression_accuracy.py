"""Does a regression check cry wolf? False alarms and detections on this machine, with real models.

For each model size (microseconds, about a millisecond, tens of milliseconds per inference) it
measures a baseline once, then runs TRIALS regression checks of the unchanged model (A/A), of a
variant about 5 % slower and of one about 10 % slower (the same MLP with one or two more layers
of the twenty), each check the way a suite does it:

1. the candidate in REPEATS fresh processes, compared with the baseline;
2. when that first attempt suspects a regression, a confirmation on the same device: baseline
   and candidate re-run one process at a time, alternating A B A B (REPEATS pairs); a
   regression counts only when the confirmation finds it too.

Every process is a real benchmark child started by the agent's harness. The same measurements
are judged twice, side by side:

- **repeat level** (hilfarm's method): Student t on the log per-repeat medians, the between-repeat
  spread pooled with the device's noise history (built up over the trials, as a nightly builds
  it), a 3 % minimum effect and the noise floor; unsteady repeats are no evidence;
- **sample level** (the method before): Mann-Whitney U and a bootstrap interval on the pooled
  inferences of the same runs, a 3 % minimum effect.

A confirmation is run whenever either method's first attempt suspects a regression, so both are
judged on the same data. The "true" slowdown of each variant is the median over its trials of
the ratio of the confirmations' per-repeat medians, or, where none ran, of the first attempts'.

    .venv/bin/python benchmarks/regression_accuracy.py [--trials 20] [--repeats 5] [--sizes us,ms,10ms]

Targets, on a busy shared machine: 0 confirmed false alarms in 20 A/A; at least 19 of 20 of the
5 % slowdowns and 20 of 20 of the 10 % ones caught (by the repeat-level method).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from hilfarm.agent.harness import BenchmarkJob, RunDefaults, run_benchmark
from hilfarm.agent.results import JobSettings
from hilfarm.controller import regression
from hilfarm.controller.suites import joined_result
from hilfarm.sample_models import make_onnx_mlp

LAYERS = 20  # one more layer of twenty costs about 5 % more

SIZES = {
    # name: (hidden width, batch, timed runs per repeat, minimum timed seconds per repeat)
    "us": (16, 1, 400, 0.2),
    "ms": (256, 32, 100, 0.3),
    "10ms": (512, 256, 20, 0.3),
}


def to_doc(result) -> Dict:
    """A stored-style result document (what the controller keeps) from the harness's result."""
    return {
        "latency": {"samples_ns": list(result.latency.samples_ns), "repeats": result.latency.repeats,
                    "between_repeat_spread": result.latency.between_repeat_spread},
        "repeats": [{"index": r.index, "first_sample": r.first_sample, "count": r.count,
                     "p50_seconds": r.p50_seconds, "steady": r.steady} for r in result.repeats],
        "stability": {"steady": result.stability.steady, "reasons": list(result.stability.reasons)},
    }


class Bench:
    def __init__(self, size: str, repeats: int, workdir: Path) -> None:
        hidden, batch, runs, seconds = SIZES[size]
        self.size, self.repeats = size, repeats
        self.models = {
            extra: make_onnx_mlp(workdir / f"{size}-{extra}.onnx", in_features=hidden, hidden=hidden,
                                 layers=LAYERS + extra, out_features=hidden, batch=batch)
            for extra in (0, 1, 2)
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
    seconds: float = 0.0


def sample_level(base: Dict, cand: Dict) -> regression.MetricComparison:
    return regression.compare_latency_samples(base["latency"]["samples_ns"], cand["latency"]["samples_ns"])


def run_trials(bench: Bench, kind: str, extra: int, trials: int, baseline: Dict,
               history: List[Dict]) -> Row:
    row = Row(bench.size, kind)
    started = time.monotonic()
    for trial in range(trials):
        cand = bench.measure(extra, bench.repeats)
        noise = regression.noise_history(history)
        new = regression.compare_latency_repeats(regression.repeat_medians(baseline),
                                                 regression.repeat_medians(cand), history=noise)
        old = sample_level(baseline, cand)
        history.append(regression.headline_values(cand))
        new_suspects, old_suspects = new.verdict == regression.REGRESSION, old.verdict == regression.REGRESSION
        row.repeat_level.first += new_suspects
        row.sample_level.first += old_suspects
        ratio = new.ratio
        if new_suspects or old_suspects:
            bases, cands = [], []
            for _ in range(bench.repeats):  # A B A B ..., one process each
                bases.append(bench.measure(0, 1))
                cands.append(bench.measure(extra, 1))
            b, c = _joined(bases), _joined(cands)
            confirm_new = regression.compare_latency_repeats(regression.repeat_medians(b),
                                                             regression.repeat_medians(c), history=noise)
            confirm_old = sample_level(b, c)
            ratio = confirm_new.ratio
            if new_suspects:
                row.repeat_level.confirmed += confirm_new.verdict == regression.REGRESSION
                row.repeat_level.inconclusive += confirm_new.inconclusive
            if old_suspects:
                row.sample_level.confirmed += confirm_old.verdict == regression.REGRESSION
        else:
            row.repeat_level.inconclusive += new.inconclusive
        row.ratios.append(ratio)
        row.trials += 1
        print(f"  {bench.size:>4} {kind:<4} trial {trial + 1:>2}: ratio {ratio:.3f}; repeat level "
              f"{new.verdict}{' (inconclusive)' if new.inconclusive else ''}, sample level {old.verdict} "
              f"(p={old.p_value:.2g})", flush=True)
    row.seconds = time.monotonic() - started
    return row


class _Job:
    def __init__(self, result: Dict) -> None:
        self.result = result


def _joined(docs: List[Dict]) -> Dict:
    return joined_result([_Job(d) for d in docs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="us,ms,10ms")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
          f"{args.trials} trials per kind, {args.repeats} repeats per run", flush=True)
    rows: List[Row] = []
    with tempfile.TemporaryDirectory(prefix="hilfarm-accuracy-") as tmp:
        for size in args.sizes.split(","):
            bench = Bench(size, args.repeats, Path(tmp))
            baseline = bench.measure(0, args.repeats)
            p50 = statistics.median(r["p50_seconds"] for r in baseline["repeats"])
            print(f"{size}: baseline median {p50 * 1e3:.4f} ms, between-repeat spread "
                  f"{baseline['latency']['between_repeat_spread'] or 0:.1%}", flush=True)
            history: List[Dict] = [regression.headline_values(baseline)]
            for kind, extra in (("A/A", 0), ("+5%", 1), ("+10%", 2)):
                rows.append(run_trials(bench, kind, extra, args.trials, baseline, history))
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    header = (f"{'size':>5} {'check':>5} {'true ratio':>10} | {'repeat level: suspected / confirmed':>36} | "
              f"{'sample level: suspected / confirmed':>36} | minutes")
    print(header)
    print("-" * len(header))
    for row in rows:
        true = statistics.median(row.ratios) if row.ratios else float("nan")
        new, old = row.repeat_level, row.sample_level
        what = "false alarms" if row.kind == "A/A" else "caught"
        print(f"{row.size:>5} {row.kind:>5} {true:>10.3f} | "
              f"{f'{new.first}/{row.trials} / {new.confirmed}/{row.trials} {what}':>36} | "
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


if __name__ == "__main__":
    sys.exit(main())
