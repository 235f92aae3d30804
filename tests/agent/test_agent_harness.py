"""The harness with real child processes: results, limits and every failure category."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from hilfarm.agent.harness import BenchmarkJob, RunDefaults, resolve_settings, run_benchmark
from hilfarm.agent.results import FailureCategory, JobSettings

# Short runs: these tests check behaviour, not the numbers.
QUICK = dict(warmup_runs=1, warmup_seconds=0.01, min_runs=30, min_seconds=0.05)


def run(model, fmt="onnx", **settings):
    kw = dict(QUICK)
    kw.update(settings)
    plugins = kw.pop("plugins", [])
    inputs_path = kw.pop("inputs_path", None)
    pin = kw.pop("pin_cores", [])
    job = BenchmarkJob(str(model), fmt, JobSettings(**kw), inputs_path=inputs_path, pin_cores=pin, plugins=plugins)
    return run_benchmark(job)


def failure_of(outcome):
    assert outcome.result is None, "expected a failure, got a result"
    assert outcome.failure is not None
    return outcome.failure


def test_onnx_mlp_result_is_complete(models):
    seen = []
    job = BenchmarkJob(str(models["mlp"]), "onnx", JobSettings(threads=1, seed=7, **QUICK))
    outcome = run_benchmark(job, on_progress=seen.append)
    assert outcome.failure is None, outcome.failure
    r = outcome.result
    lat = r.latency
    assert len(lat.samples_ns) >= 30
    assert lat.load_seconds > 0 and lat.first_inference_seconds > 0
    assert lat.warmup_runs >= 1 and lat.warmup_seconds >= 0.01
    assert lat.min_seconds <= lat.p50_seconds <= lat.p90_seconds <= lat.p99_seconds <= lat.max_seconds
    assert lat.total_seconds == pytest.approx(sum(lat.samples_ns) / 1e9)
    assert lat.throughput_per_second == pytest.approx(len(lat.samples_ns) / lat.total_seconds)
    assert lat.drift_ratio is not None and lat.drift_ratio > 0
    mem = r.memory
    assert mem.baseline_peak_bytes > 10 << 20  # the interpreter and onnxruntime are loaded
    assert mem.peak_bytes >= mem.baseline_peak_bytes
    assert mem.model_delta_bytes == mem.peak_bytes - mem.baseline_peak_bytes
    assert mem.model_file_bytes == os.path.getsize(models["mlp"])
    assert "VmHWM" in mem.source
    env = r.environment
    assert env.runtime == "onnxruntime" and env.runtime_version
    assert env.execution_provider == "CPUExecutionProvider"
    assert env.threads == 1
    assert "graph_optimization=all" in env.runtime_settings and "enable_cpu_mem_arena" in env.runtime_settings
    assert env.input_shapes == {"x": [1, 16]}
    assert env.input_source == "random(seed=7)"
    assert env.machine and env.kernel and env.python_version
    assert env.simulated is False
    governor_path = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
    if os.path.exists(governor_path):
        assert env.governor
    else:
        assert any(u.field == "environment.governor" and governor_path in u.reason for u in r.unavailable)
    phases = [p.phase for p in seen]
    assert phases[0] == "loading" and "warmup" in phases and phases[-1] == "measuring"
    assert seen[-1].runs_done == len(lat.samples_ns)


def test_timed_runs_meet_both_minimums_and_respect_caps(models):
    r = run(models["identity"], min_runs=5, min_seconds=0.2).result
    assert 0.2 <= r.latency.total_seconds < 0.25  # measured time, not wall time, meets the minimum
    assert len(r.latency.samples_ns) > 5  # min_seconds kept it going
    assert r.latency.warmup_seconds >= QUICK["warmup_seconds"]
    r = run(models["identity"], min_runs=25, min_seconds=0.0001).result
    assert len(r.latency.samples_ns) >= 25
    r = run(models["identity"], min_runs=1000, min_seconds=5, max_runs=40).result
    assert len(r.latency.samples_ns) == 40
    r = run(models["identity"], min_runs=10 ** 7, min_seconds=100, max_seconds=0.2).result
    assert len(r.latency.samples_ns) < 10 ** 7


def test_drift_needs_twenty_samples(models):
    r = run(models["identity"], min_runs=10, min_seconds=0.0001, max_runs=10).result
    assert r.latency.drift_ratio is None
    assert any(u.field == "latency.drift_ratio" and "20" in u.reason for u in r.unavailable)


def test_null_runtime_measures_tiny_harness_overhead():
    # Nanosecond latencies rarely look steady on a busy machine: warming up is cut short (it would
    # go on for its 30 s cap), as it does not change what the harness adds to a run.
    r = run("", fmt="none", runtime="null", min_runs=20000, min_seconds=0.1, warmup_max_seconds=1.0).result
    assert r.latency.p50_seconds < 5e-6, r.latency.p50_seconds
    assert r.memory.model_file_bytes is None


def test_unset_dynamic_dim_fails_the_job_unless_a_default_is_given(models):
    f = failure_of(run(models["dynamic"]))
    assert f.category is FailureCategory.INPUT_MISMATCH
    assert "input 'x'" in f.message and "dim 0 ('batch') is dynamic" in f.message
    r = run(models["dynamic"], dynamic_dimension_default=4).result
    assert r.environment.input_shapes == {"x": [4, 16]}


def test_dynamic_dim_set_by_the_job(models):
    r = run(models["dynamic"], input_shapes={"x": [8, 16]}).result
    assert r.environment.input_shapes == {"x": [8, 16]}
    # No word about shapes: the job sized every dynamic dimension.
    assert not any("dynamic" in w or "input" in w for w in r.warnings), r.warnings


def test_npz_inputs_are_used(models, tmp_path):
    path = tmp_path / "in.npz"
    np.savez(path, x=np.ones((3, 16), dtype=np.float32))
    r = run(models["dynamic"], inputs_path=str(path), inputs_sha256="ab" * 32).result
    assert r.environment.input_shapes == {"x": [3, 16]}
    assert r.environment.input_source == "npz:" + "ab" * 32


@pytest.mark.parametrize("name", ["garbage", "truncated"])
def test_not_a_model_is_artifact_invalid(models, name):
    f = failure_of(run(models[name]))
    assert f.category is FailureCategory.ARTIFACT_INVALID
    assert "not a readable ONNX model" in f.message
    assert "Protobuf parsing failed" in f.detail


def test_unknown_custom_op_is_unsupported_and_named(models):
    from hilfarm.sample_models import UNSUPPORTED_ONNX_DOMAIN, UNSUPPORTED_ONNX_OP

    f = failure_of(run(models["unsupported"]))
    assert f.category is FailureCategory.UNSUPPORTED_OP
    assert UNSUPPORTED_ONNX_OP in f.message and UNSUPPORTED_ONNX_DOMAIN in f.message


def test_missing_kernel_is_unsupported_and_named(models):
    f = failure_of(run(models["no_kernel"]))
    assert f.category is FailureCategory.UNSUPPORTED_OP
    assert "Relu" in f.message and "opset 14" in f.message


def test_model_beyond_memory_limit_is_out_of_memory(models):
    f = failure_of(run(models["oom"], memory_limit_bytes=512 << 20))
    assert f.category is FailureCategory.OUT_OF_MEMORY
    assert "512.0 MiB" in f.message and "memory_limit_bytes=536870912" in f.message


def test_runtime_growing_past_the_limit_is_out_of_memory(plugins):
    f = failure_of(run("", fmt="none", runtime="test-hog", plugins=plugins, memory_limit_bytes=256 << 20,
                       min_runs=10 ** 6, min_seconds=60))
    assert f.category is FailureCategory.OUT_OF_MEMORY
    assert "256.0 MiB" in f.message


def test_parent_watch_stops_a_process_past_the_limit():
    """The resident-memory watch alone (no address-space cap in this child)."""
    import subprocess
    import sys

    from hilfarm.agent.harness import _supervise

    grow = "import time\nkept = []\nwhile True:\n    kept.append(bytearray(b'1' * (16 << 20)))\n    time.sleep(0.01)"
    proc = subprocess.Popen([sys.executable, "-c", grow], start_new_session=True)
    outcome = _supervise(proc, 200 << 20, 30, None)
    assert proc.returncode == -signal.SIGKILL
    assert outcome.failure.category is FailureCategory.OUT_OF_MEMORY
    assert "200.0 MiB" in outcome.failure.message and "resident" in outcome.failure.message


def test_hanging_model_times_out(models):
    t0 = time.monotonic()
    f = failure_of(run(models["hang"], timeout_seconds=1.5))
    assert time.monotonic() - t0 < 10
    assert f.category is FailureCategory.TIMEOUT
    assert "1.5 s" in f.message


def test_segfaulting_runtime_is_a_crash_naming_the_signal(plugins):
    f = failure_of(run("", fmt="none", runtime="test-segfault", plugins=plugins))
    assert f.category is FailureCategory.RUNTIME_CRASH
    assert f.signal == signal.SIGSEGV
    assert "SIGSEGV" in f.message and "during the warmup phase" in f.message  # first inference


def test_runtime_exiting_without_result_is_a_crash(plugins):
    f = failure_of(run("", fmt="none", runtime="test-exit", plugins=plugins))
    assert f.category is FailureCategory.RUNTIME_CRASH
    assert "status 3" in f.message


def test_hanging_runtime_times_out(plugins):
    f = failure_of(run("", fmt="none", runtime="test-hang", plugins=plugins, timeout_seconds=1))
    assert f.category is FailureCategory.TIMEOUT


def test_unknown_runtime_is_configuration():
    f = failure_of(run("", fmt="none", runtime="no-such-runtime"))
    assert f.category is FailureCategory.CONFIGURATION
    assert "no-such-runtime" in f.message and "onnxruntime" in f.message


def test_unknown_execution_provider_is_configuration(models):
    f = failure_of(run(models["mlp"], execution_provider="NoSuchExecutionProvider"))
    assert f.category is FailureCategory.CONFIGURATION
    assert "NoSuchExecutionProvider" in f.message and "CPUExecutionProvider" in f.message


@pytest.mark.parametrize(
    "shapes, words",
    [
        ({"nope": [1, 16]}, ["'nope'", "'x'"]),
        ({"x": [1, 16, 1]}, ["rank 2", "rank 3"]),
    ],
)
def test_input_spec_not_matching_model(models, shapes, words):
    f = failure_of(run(models["dynamic"], input_shapes=shapes))
    assert f.category is FailureCategory.INPUT_MISMATCH
    for w in words:
        assert w in f.message


def test_fixed_dim_mismatch(models):
    f = failure_of(run(models["mlp"], input_shapes={"x": [1, 17]}))
    assert f.category is FailureCategory.INPUT_MISMATCH and "fixed at 16" in f.message


@pytest.mark.parametrize(
    "arrays, words",
    [
        ({"other": np.ones((1, 16), np.float32)}, ["no array for model input 'x'", "'other'"]),
        ({"x": np.ones((1, 16), np.float64)}, ["float64", "float32"]),
        ({"x": np.ones((1, 15), np.float32)}, ["fixed at 16"]),
    ],
)
def test_npz_not_matching_model(models, tmp_path, arrays, words):
    path = tmp_path / "in.npz"
    np.savez(path, **arrays)
    f = failure_of(run(models["mlp"], inputs_path=str(path)))
    assert f.category is FailureCategory.INPUT_MISMATCH
    for w in words:
        assert w in f.message


def test_cancel_kills_the_child(plugins):
    cancel = threading.Event()
    job = BenchmarkJob("", "none", JobSettings(runtime="test-slow", min_runs=10 ** 6, min_seconds=60),
                       plugins=plugins)
    timer = threading.Timer(0.8, cancel.set)
    timer.start()
    t0 = time.monotonic()
    outcome = run_benchmark(job, cancel=cancel)
    assert outcome.cancelled and outcome.result is None and outcome.failure is None
    assert time.monotonic() - t0 < 5


def test_pin_cores_sets_the_child_affinity(models, plugins):
    r = run("", fmt="none", runtime="test-affinity", plugins=plugins, pin_cores=[0], warmup_max_seconds=0.5).result
    assert r.environment.runtime_settings == "cpus=0"
    f = failure_of(run(models["identity"], pin_cores=[4096]))
    assert f.category is FailureCategory.CONFIGURATION and "4096" in f.message


def test_defaults_fill_zero_settings():
    r = resolve_settings(JobSettings(min_runs=7), RunDefaults(min_seconds=2.5, timeout_seconds=9))
    assert r["min_runs"] == 7 and r["min_seconds"] == 2.5 and r["timeout_seconds"] == 9
    assert r["warmup_runs"] == 1 and r["warmup_seconds"] == 0.5 and r["max_runs"] == 100000
    assert r["max_seconds"] == 150


def test_sustained_mode_runs_for_its_wall_time_whatever_the_run_counts(models):
    seen = []
    job = BenchmarkJob(str(models["mlp"]), "onnx", JobSettings(threads=1, sustained_seconds=1.0, min_runs=3,
                                                               max_runs=5, max_seconds=0.1, **{
                                                                   k: v for k, v in QUICK.items() if k != "min_runs"}))
    outcome = run_benchmark(job, on_progress=seen.append)
    assert outcome.failure is None, outcome.failure
    r = outcome.result
    assert len(r.latency.samples_ns) > 5  # max_runs did not apply
    assert r.timed_wall_seconds >= 1.0  # max_seconds did not apply either
    assert r.latency.total_seconds <= r.timed_wall_seconds
    # It stopped with the first run to end after the second asked for: every run before that
    # one ended inside it. (Its wall time past 1 s is that last run plus whatever the machine
    # took from the process meanwhile: half a second and more on a crowded machine.)
    before_last = sum(r.latency.samples_ns[:-1]) / 1e9
    assert before_last < 1.0, (before_last, r.timed_wall_seconds)
    measuring = [p for p in seen if p.phase == "measuring"]
    assert measuring and all(p.runs_target == 0 for p in measuring)  # no run count is the target
    assert not any("safety cap" in w for w in r.warnings)


def test_sustained_mode_stops_at_the_safety_cap_and_says_so(monkeypatch):
    monkeypatch.setattr("hilfarm.agent.telemetry.sustained.SUSTAINED_MAX_RUNS", 1000)
    r = run("", fmt="none", runtime="null", sustained_seconds=30.0, warmup_max_seconds=0.5).result
    assert len(r.latency.samples_ns) == 1000
    assert any("safety cap of 1000 runs" in w and "of the 30 s asked for" in w for w in r.warnings), r.warnings


def test_sustained_phase_comes_on_top_of_the_timeout(plugins):
    r = resolve_settings(JobSettings(sustained_seconds=120, timeout_seconds=30), RunDefaults())
    assert r["timeout_seconds"] == 150 and r["sustained_seconds"] == 120
    assert resolve_settings(JobSettings(sustained_seconds=60), RunDefaults(timeout_seconds=600))["timeout_seconds"] == 660
    assert resolve_settings(JobSettings(), RunDefaults())["sustained_seconds"] == 0.0
    # 0.05 s per inference for 1.5 s: a 1.5 s timeout alone would kill it in the sustained phase.
    outcome = run("", fmt="none", runtime="test-slow", plugins=plugins, sustained_seconds=1.5, timeout_seconds=1.5)
    assert outcome.failure is None, outcome.failure
    assert outcome.result.timed_wall_seconds >= 1.5
    # The limit still holds, and its message says what it was made of.
    f = failure_of(run("", fmt="none", runtime="test-slow", plugins=plugins, sustained_seconds=0.2,
                       timeout_seconds=0.2, warmup_seconds=5.0))
    assert f.category is FailureCategory.TIMEOUT
    assert "0.4 s (sustained_seconds 0.2 + timeout_seconds)" in f.message


def test_a_hilfarm_folder_in_the_working_directory_cannot_shadow_the_installed_package(models, tmp_path, monkeypatch):
    """`python -m hilfarm.agent.child` puts its working directory first on sys.path. An agent
    started in a checkout (or anywhere a `hilfarm/` folder lies) must still run its jobs."""
    decoy = tmp_path / "hilfarm"
    decoy.mkdir()
    # Importing this instead of the package fails loudly, whichever way hilfarm is installed
    # (an editable install still finds hilfarm.agent through its own finder; a wheel does not).
    (decoy / "__init__.py").write_text("raise ImportError('imported the hilfarm/ folder of the working directory')\n")
    monkeypatch.chdir(tmp_path)
    outcome = run(models["mlp"])
    assert outcome.failure is None, outcome.failure
    assert outcome.result.latency.p50_seconds > 0
