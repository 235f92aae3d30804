"""Every conversion at the agent's boundary: what the agent writes (results, progress, failures,
capabilities) checked on the message itself, and the lease it reads."""

from __future__ import annotations

import dataclasses

from hilfarm.agent import wire
from hilfarm.agent.results import (
    BenchmarkResult, BusyProcess, Capabilities, DeviceActivity, Environment, Failure, FailureCategory,
    JobSettings, LatencyStats, MemoryStats, Progress, RepeatStats, RuntimeInfo, Stability, Unavailable,
)
from hilfarm.v1 import farm_pb2

from .conftest import settings_message


def full_settings():
    return JobSettings(
        warmup_runs=2, warmup_seconds=0.25, min_runs=10, min_seconds=1.5, max_runs=99, max_seconds=9.5,
        threads=3, runtime="tflite", execution_provider="CPUExecutionProvider", graph_optimization="basic",
        tflite_disable_xnnpack=True, tflite_delegate_path="/usr/lib/libedgetpu.so.1",
        tflite_delegate_options={"device": "usb"}, input_shapes={"x": [4, 3, 224, 224], "mask": [4]},
        inputs_sha256="cd" * 32, seed=42, memory_limit_bytes=1 << 30, timeout_seconds=60,
        repeats=5, warmup_max_seconds=12.5,
    )


def test_settings_are_read_from_every_field():
    s = full_settings()
    pb = farm_pb2.JobSettings.FromString(settings_message(s).SerializeToString())
    assert wire.settings_from_pb(pb) == s
    assert wire.settings_from_pb(farm_pb2.JobSettings()) == JobSettings()


def test_failure_of_every_category():
    for cat in FailureCategory:
        pb = wire.failure_to_pb(Failure(cat, f"message {cat.name}", signal=11, detail="tail"))
        assert farm_pb2.FailureCategory.Name(pb.category) == f"FAILURE_CATEGORY_{cat.name}"
        assert (pb.message, pb.signal, pb.detail) == (f"message {cat.name}", 11, "tail")


def test_progress():
    pb = wire.progress_to_pb(Progress("measuring", 12, 50, 3.5, 0.0125, 1700000000.5, repeat=2, repeats=5))
    assert (pb.phase, pb.runs_done, pb.runs_target, pb.elapsed_seconds, pb.latest_latency_seconds) == \
        ("measuring", 12, 50, 3.5, 0.0125)
    assert (pb.updated_at, pb.repeat, pb.repeats) == (1700000000.5, 2, 5)


def full_result():
    return BenchmarkResult(
        latency=LatencyStats(
            load_seconds=0.5, first_inference_seconds=0.01, warmup_runs=3, warmup_seconds=0.6,
            samples_ns=[1000, 2000, 3000], total_seconds=6e-6, min_seconds=1e-6, mean_seconds=2e-6,
            p50_seconds=2e-6, p90_seconds=2.8e-6, p95_seconds=2.9e-6, p99_seconds=2.98e-6, max_seconds=3e-6,
            std_seconds=1e-6, cv=0.5, throughput_per_second=500000.0, drift_ratio=None,
            repeats=2, repeat_p50_min_seconds=1.5e-6, repeat_p50_max_seconds=2.5e-6, between_repeat_spread=0.51,
        ),
        memory=MemoryStats(1 << 20, 1 << 19, 5 << 20, 4 << 20, 1234, "/proc/self/status VmHWM"),
        environment=Environment(
            agent_id="a1", device_profile="local", hostname="h", os="Debian", kernel="6.1", machine="x86_64",
            python_version="3.11.7", runtime="onnxruntime", runtime_version="1.16.3",
            execution_provider="CPUExecutionProvider", threads=2, governor="", agent_version="0.1.0",
            simulated=False, input_shapes={"x": [1, 16]}, input_source="random(seed=0)",
            runtime_settings="graph_optimization=all",
        ),
        unavailable=[Unavailable("latency.drift_ratio", "needs at least 20 timed runs, had 3"),
                     Unavailable("environment.governor", "no cpufreq")],
        warnings=["input 'x' dim 0 'batch' is dynamic; used 1 — set it with --input-shape"],
        repeats=[
            RepeatStats(index=0, first_sample=0, count=1, load_seconds=0.5, first_inference_seconds=0.01,
                        warmup_runs=3, warmup_seconds=0.6, steady=True, p50_seconds=1e-6, mean_seconds=1e-6,
                        p99_seconds=1e-6, cv=None, drift_ratio=None, peak_bytes=5 << 20, started_at=1700000000.25,
                        wall_seconds=1.5),
            # A repeat with nothing measured but its count: every optional figure stays unset.
            RepeatStats(index=1, first_sample=1, count=2, steady=False, started_at=1700000002.0, wall_seconds=2.0,
                        warnings=["latency drifted +40% from the first to the last tenth of the timed runs"]),
        ],
        stability=Stability(steady=False, reasons=["repeat 2 of 2: latency drifted +40%"]),
        activity=DeviceActivity(load_average_start=0.25, load_average_end=1.5, other_cpu_cores=0.75,
                                busy=[BusyProcess(4242, "make", 0.7)], quiet=False, source="/proc/*/stat"),
    )


def figures(msg, obj) -> None:
    """Every figure of a dataclass is on the message: set to its value, or unset when None."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in ("samples_ns", "count", "warnings", "busy") or isinstance(value, (list, dict, str, bool)):
            continue
        try:
            present = msg.HasField(f.name)
        except ValueError:  # a plain scalar
            assert getattr(msg, f.name) == (value or 0), f.name
            continue
        assert present == (value is not None), f.name
        if value is not None:
            assert getattr(msg, f.name) == value, f.name


def test_result_figures_are_present_with_their_value_or_absent_and_named():
    r = full_result()
    pb = farm_pb2.BenchmarkResult.FromString(wire.result_to_pb(r).SerializeToString())
    assert list(pb.latency.samples_ns) == [1000, 2000, 3000]
    assert pb.latency.count == 3  # so a listing without the samples still knows how many
    figures(pb.latency, r.latency)
    figures(pb.memory, r.memory)
    assert pb.memory.source == "/proc/self/status VmHWM"
    assert not pb.latency.HasField("drift_ratio")
    assert {u.field: u.reason for u in pb.unavailable} == {u.field: u.reason for u in r.unavailable}
    assert list(pb.warnings) == r.warnings
    for rep, want in zip(pb.repeats, r.repeats):
        figures(rep, want)
        assert list(rep.warnings) == want.warnings
    assert not pb.repeats[1].HasField("load_seconds") and not pb.repeats[1].HasField("peak_bytes")
    assert (pb.stability.steady, list(pb.stability.reasons)) == (False, r.stability.reasons)
    figures(pb.activity, r.activity)
    assert [(b.pid, b.name, b.cpu_cores) for b in pb.activity.busy] == [(4242, "make", 0.7)]
    env = pb.environment
    assert (env.agent_id, env.runtime, env.runtime_version, env.threads) == ("a1", "onnxruntime", "1.16.3", 2)
    assert [(s.name, list(s.dims)) for s in env.input_shapes] == [("x", [1, 16])]


def test_a_measured_zero_is_present():
    r = full_result()
    r.latency.drift_ratio, r.memory.model_delta_bytes = 0.0, 0
    r.unavailable = [u for u in r.unavailable if u.field != "latency.drift_ratio"]
    pb = wire.result_to_pb(r)
    assert pb.latency.HasField("drift_ratio") and pb.latency.drift_ratio == 0.0
    assert pb.memory.HasField("model_delta_bytes") and pb.memory.model_delta_bytes == 0
    assert not any(u.field in ("latency.drift_ratio", "memory.model_delta_bytes") for u in pb.unavailable)


def test_a_result_without_repeats_or_activity_goes_out_without_them():
    r = full_result()
    r.repeats, r.stability, r.activity = [], Stability(), None
    pb = wire.result_to_pb(r)
    assert len(pb.repeats) == 0 and not pb.HasField("activity")
    assert pb.stability.steady and not pb.stability.reasons


def test_unnamed_missing_figure_is_named_on_the_wire():
    r = full_result()
    r.memory.peak_bytes = None
    pb = wire.result_to_pb(r)
    assert any(u.field == "memory.peak_bytes" for u in pb.unavailable)
    assert not pb.memory.HasField("peak_bytes")


def test_capabilities():
    c = Capabilities(
        runtimes=[RuntimeInfo("onnxruntime", "1.16.3", "onnxruntime", ["CPUExecutionProvider"]),
                  RuntimeInfo("tflite", "2.14.0", "tflite-runtime", ["XNNPACK"])],
        cpu_cores=4, memory_bytes=8 << 30, machine="aarch64", os="Debian", kernel="6.6",
        python_version="3.9.18", accelerators=["edgetpu"],
    )
    pb = wire.capabilities_to_pb(c)
    assert [(r.name, r.version, r.package, list(r.execution_providers)) for r in pb.runtimes] == \
        [("onnxruntime", "1.16.3", "onnxruntime", ["CPUExecutionProvider"]), ("tflite", "2.14.0", "tflite-runtime", ["XNNPACK"])]
    assert (pb.cpu_cores, pb.memory_bytes, pb.machine, pb.os, pb.kernel, pb.python_version, list(pb.accelerators)) == \
        (4, 8 << 30, "aarch64", "Debian", "6.6", "3.9.18", ["edgetpu"])


def test_lease_from_pb():
    pb = farm_pb2.Lease(lease_id="L1", expires_at=123.5, job=farm_pb2.Job(
        id="j1", attempt=2, model_sha256="ab" * 32, model_format="onnx", model_name="m.onnx",
        device_profile="local", settings=settings_message(full_settings()),
    ))
    job = wire.lease_from_pb(pb)
    assert (job.lease_id, job.job_id, job.attempt, job.model_format) == ("L1", "j1", 2, "onnx")
    assert job.settings == full_settings() and job.expires_at == 123.5


def test_outcome_request_carries_one_of_result_or_failure():
    job = wire.lease_from_pb(farm_pb2.Lease(lease_id="L", job=farm_pb2.Job(id="j", attempt=1)))
    req = wire.outcome_request("a", job, full_result(), None)
    assert req.WhichOneof("outcome") == "result" and req.job_id == "j" and req.attempt == 1
    req = wire.outcome_request("a", job, None, Failure(FailureCategory.TIMEOUT, "slow"))
    assert req.WhichOneof("outcome") == "failure"
