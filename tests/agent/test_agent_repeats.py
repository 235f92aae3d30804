"""Repeats, warmup until steady, stability of the timed runs, and device quietness, with real
child processes."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest

from hilfarm.agent.activity import ActivityMeter, activity_warning
from hilfarm.agent.harness import BenchmarkJob, RunDefaults, run_benchmark
from hilfarm.agent.results import FailureCategory, JobSettings

QUICK = dict(warmup_runs=1, warmup_seconds=0.01, min_runs=30, min_seconds=0.05)


def job(model, plugins=(), **settings):
    kw = dict(QUICK)
    kw.update(settings)
    return BenchmarkJob(str(model), "onnx", JobSettings(**kw), plugins=list(plugins))


def test_each_repeat_is_a_fresh_process_and_the_result_keeps_every_one(models):
    pids, seen = [], []
    outcome = run_benchmark(job(models["mlp"], threads=1, repeats=3), on_progress=seen.append,
                            on_child=lambda pid: pids.append(pid) if pid is not None else None)
    r = outcome.result
    assert r is not None, outcome.failure
    assert len(set(pids)) == 3  # three processes, one after the other
    assert [rep.index for rep in r.repeats] == [0, 1, 2]
    lat = r.latency
    assert lat.repeats == 3 and sum(rep.count for rep in r.repeats) == len(lat.samples_ns)
    for rep in r.repeats:
        own = lat.samples_ns[rep.first_sample:rep.first_sample + rep.count]
        assert rep.count >= 30 and rep.p50_seconds == pytest.approx(sorted(own)[len(own) // 2] / 1e9, rel=0.2)
        assert rep.load_seconds > 0 and rep.warmup_runs >= 1 and rep.peak_bytes > 0 and rep.wall_seconds > 0
    assert r.repeats[0].started_at < r.repeats[1].started_at < r.repeats[2].started_at
    medians = [rep.p50_seconds for rep in r.repeats]
    assert lat.repeat_p50_min_seconds == min(medians) and lat.repeat_p50_max_seconds == max(medians)
    logs = [math.log(m) for m in medians]
    mean = sum(logs) / 3
    assert lat.between_repeat_spread == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in logs) / 2))
    # Pooled figures over every repeat's samples; load is the median repeat's.
    assert lat.p50_seconds == pytest.approx(sorted(lat.samples_ns)[len(lat.samples_ns) // 2] / 1e9, rel=0.05)
    assert lat.load_seconds == sorted(rep.load_seconds for rep in r.repeats)[1]
    assert r.memory.peak_bytes == max(rep.peak_bytes for rep in r.repeats)
    assert {p.repeat for p in seen} == {1, 2, 3} and {p.repeats for p in seen} == {3}
    assert not any(u.field == "latency.between_repeat_spread" for u in r.unavailable)


def test_one_repeat_says_there_is_no_spread_between_processes(models):
    r = run_benchmark(job(models["mlp"], threads=1)).result
    assert r.latency.repeats == 1 and len(r.repeats) == 1 and r.latency.between_repeat_spread is None
    why = {u.field: u.reason for u in r.unavailable}["latency.between_repeat_spread"]
    assert "repeats=1" in why


def test_the_profile_sets_the_default_number_of_repeats(models):
    defaults = RunDefaults(repeats=2)
    r = run_benchmark(BenchmarkJob(str(models["mlp"]), "onnx", JobSettings(**QUICK), defaults=defaults)).result
    assert len(r.repeats) == 2


def test_a_failing_repeat_ends_the_job_and_says_which(plugins, tmp_path, monkeypatch):
    scratch = tmp_path / "model.bin"
    scratch.write_bytes(b"x")
    monkeypatch.setenv("HILFARM_TEST_MARKER", str(tmp_path / "loaded-once"))
    outcome = run_benchmark(job(scratch, plugins, runtime="test-second-process-crashes", repeats=3))
    assert outcome.result is None
    assert outcome.failure.category is FailureCategory.RUNTIME_CRASH
    assert outcome.failure.message.startswith("repeat 2 of 3: ") and "SIGSEGV" in outcome.failure.message


def test_warmup_goes_on_until_latency_stops_trending(plugins, tmp_path):
    """An inference starts at 50 ms and settles towards 5 ms (time constant 0.4 s): a fixed
    warmup of 10 ms would time the slide; warming up until three windows agree within 5 %
    (about 1.7 s in) times the settled speed. 200 timed runs (1 s): the drift check compares the
    medians of the first and last tenth, and with 50 runs a tenth was five inferences, which one
    scheduler delay on a busy machine moved by 13 %."""
    r = run_benchmark(job(tmp_path / "m", plugins, runtime="test-settling", min_runs=200)).result
    assert r.stability.steady, r.stability.reasons
    assert r.repeats[0].steady and r.latency.warmup_seconds > 1.0
    assert r.latency.p50_seconds < 0.00575  # within 15 % of the settled 5 ms
    assert 0.9 < r.latency.drift_ratio < 1.1


def test_a_run_that_never_settles_is_unsteady_and_says_so(plugins, tmp_path):
    r = run_benchmark(job(tmp_path / "m", plugins, runtime="test-creeping", min_runs=50, min_seconds=1.0,
                          warmup_max_seconds=0.5)).result
    assert not r.stability.steady and not r.repeats[0].steady
    assert any("warmup did not reach a steady state within 0.5 s" in why for why in r.stability.reasons)
    assert any("still trending after 0.5 s of warmup" in w for w in r.warnings)
    assert any("drifted" in w for w in r.warnings)


# The two-speeds runtime never warms up steadily either: warming up is cut short, or it would go
# on for its 30 s cap, and what these tests look at is the timed runs.
def test_two_speeds_in_one_run_are_unsteady(plugins, tmp_path):
    r = run_benchmark(job(tmp_path / "m", plugins, runtime="test-two-speeds", min_runs=200,
                          warmup_max_seconds=0.5)).result
    assert not r.stability.steady
    assert any("2 modes" in why for why in r.stability.reasons), r.stability.reasons


def test_an_unsteady_repeat_is_named_in_the_joined_result(plugins, tmp_path):
    r = run_benchmark(job(tmp_path / "m", plugins, runtime="test-two-speeds", min_runs=200, repeats=2,
                          warmup_max_seconds=0.5)).result
    assert not r.stability.steady and len(r.repeats) == 2
    assert all(why.startswith(("repeat 1 of 2: ", "repeat 2 of 2: ")) for why in r.stability.reasons)


# ---------------------------------------------------------------- quietness


def spinner():
    return subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<20: pass"])


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_busy_neighbour_makes_the_device_not_quiet_and_is_named():
    busy = spinner()
    try:
        time.sleep(0.3)
        meter = ActivityMeter()
        before, t0 = cpu_seconds(busy.pid), time.monotonic()
        meter.start()
        time.sleep(1.0)
        activity = meter.finish()
        window = time.monotonic() - t0
        used = (cpu_seconds(busy.pid) - before) / window
    finally:
        busy.kill()
        busy.wait()
    assert activity is not None and not activity.quiet
    # On a shared machine the spinner gets what the scheduler gives it; whatever it got, the
    # meter counts that much as someone else's CPU. /proc counts CPU time in clock ticks, read
    # at each end of a window by the meter and by this test: up to two ticks apart.
    resolution = 2 / os.sysconf("SC_CLK_TCK") / window
    assert used > 0 and activity.other_cpu_cores >= used - resolution and activity.load_average_start is not None
    listed = {b.pid: b for b in activity.busy}
    if busy.pid in listed:
        assert "python" in listed[busy.pid].name and listed[busy.pid].cpu_cores == pytest.approx(used, abs=0.1)
    else:  # a host busier still: the five busiest are listed, each at least as busy as ours
        assert len(listed) == 5 and all(b.cpu_cores >= used - 0.1 for b in listed.values())
    warning = activity_warning(activity)
    assert warning.startswith("the device was not quiet") and "busiest: " in warning


def test_the_benchmark_children_are_not_counted_as_neighbours():
    child = spinner()
    try:
        meter = ActivityMeter()
        meter.exclude(child.pid)
        meter.start()
        time.sleep(0.8)
        activity = meter.finish()
    finally:
        child.kill()
        child.wait()
    assert child.pid not in [b.pid for b in activity.busy]
    assert os.getpid() not in [b.pid for b in activity.busy]  # nor the agent itself
