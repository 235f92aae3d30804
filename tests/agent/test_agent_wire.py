"""Round trips of every domain <-> protobuf conversion of the agent."""

from __future__ import annotations

from hilfarm.agent import wire
from hilfarm.agent.results import (
    BenchmarkResult, BusyProcess, Capabilities, DeviceActivity, Environment, Failure, FailureCategory,
    JobSettings, LatencyStats, MemoryStats, Progress, RepeatStats, RuntimeInfo, Stability, Unavailable,
)
from hilfarm.v1 import farm_pb2


def full_settings():
    return JobSettings(
        warmup_runs=2, warmup_seconds=0.25, min_runs=10, min_seconds=1.5, max_runs=99, max_seconds=9.5,
        threads=3, runtime="tflite", execution_provider="CPUExecutionProvider", graph_optimization="basic",
        tflite_disable_xnnpack=True, tflite_delegate_path="/usr/lib/libedgetpu.so.1",
        tflite_delegate_options={"device": "usb"}, input_shapes={"x": [4, 3, 224, 224], "mask": [4]},
        inputs_sha256="cd" * 32, seed=42, memory_limit_bytes=1 << 30, timeout_seconds=60,
        repeats=5, warmup_max_seconds=12.5,
    )


def test_settings_round_trip():
    s = full_settings()
    pb = wire.settings_to_pb(s)
    assert pb.input_shapes[0].name == "x" and list(pb.input_shapes[0].dims) == [4, 3, 224, 224]
    assert wire.settings_from_pb(farm_pb2.JobSettings.FromString(pb.SerializeToString())) == s
    assert wire.settings_from_pb(farm_pb2.JobSettings()) == JobSettings()


def test_failure_round_trip_for_every_category():
    for cat in FailureCategory:
        f = Failure(cat, f"message {cat.name}", signal=11, detail="tail")
        pb = wire.failure_to_pb(f)
        assert farm_pb2.FailureCategory.Name(pb.category) == f"FAILURE_CATEGORY_{cat.name}"
        assert wire.failure_from_pb(pb) == f


def test_progress_round_trip():
    p = Progress("measuring", 12, 50, 3.5, 0.0125, 1700000000.5, repeat=2, repeats=5)
    assert wire.progress_from_pb(wire.progress_to_pb(p)) == p


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


def test_result_round_trip():
    r = full_result()
    pb = farm_pb2.BenchmarkResult.FromString(wire.result_to_pb(r).SerializeToString())
    assert list(pb.latency.samples_ns) == [1000, 2000, 3000]
    assert pb.latency.count == 3  # so a listing without the samples still knows how many
    assert wire.result_from_pb(pb) == r


def test_a_result_without_repeats_or_activity_comes_back_without_them():
    r = full_result()
    r.repeats, r.stability, r.activity = [], Stability(), None
    back = wire.result_from_pb(farm_pb2.BenchmarkResult.FromString(wire.result_to_pb(r).SerializeToString()))
    assert back.repeats == [] and back.activity is None and back.stability == Stability()


def test_unnamed_missing_figure_is_named_on_the_wire():
    r = full_result()
    r.memory.peak_bytes = None
    pb = wire.result_to_pb(r)
    assert any(u.field == "memory.peak_bytes" for u in pb.unavailable)
    assert wire.result_from_pb(pb).memory.peak_bytes is None


def test_capabilities_round_trip():
    c = Capabilities(
        runtimes=[RuntimeInfo("onnxruntime", "1.16.3", "onnxruntime", ["CPUExecutionProvider"]),
                  RuntimeInfo("tflite", "2.14.0", "tflite-runtime", ["XNNPACK"])],
        cpu_cores=4, memory_bytes=8 << 30, machine="aarch64", os="Debian", kernel="6.6",
        python_version="3.9.18", accelerators=["edgetpu"],
    )
    assert wire.capabilities_from_pb(wire.capabilities_to_pb(c)) == c


def test_lease_from_pb():
    pb = farm_pb2.Lease(lease_id="L1", expires_at=123.5, job=farm_pb2.Job(
        id="j1", attempt=2, model_sha256="ab" * 32, model_format="onnx", model_name="m.onnx",
        device_profile="local", settings=wire.settings_to_pb(full_settings()),
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
