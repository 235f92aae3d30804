"""Per-operator profiles: ONNX Runtime's profiler trace read node by node (the first profiled
run dropped), TFLite's delegated partitions mapped back to the operators they took, a CPU
fallback warned about, and two profiles compared node by node."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hilfarm import sample_models
from hilfarm.agent.runtimes import op_profile
from hilfarm.agent.harness import BenchmarkJob, run_benchmark
from hilfarm.agent.results import JobSettings, OpProfile, OpTime


def test_onnxruntime_profile_is_taken_after_the_timed_runs_and_reads_every_node(tmp_path):
    model = sample_models.make_onnx_mlp(tmp_path / "m.onnx", layers=3)
    out = run_benchmark(BenchmarkJob(str(model), "onnx", JobSettings(
        min_runs=5, max_runs=5, profile_ops=True, profile_ops_runs=4)))
    assert out.failure is None
    p = out.result.op_profile
    assert p.runs == 4 and len(out.result.latency.samples_ns) == 5  # the timed runs are the job's own
    trace = json.loads(p.trace)
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    assert len(runs) == 5  # 4 + the dropped warm-up
    nodes = {e["name"][:-len("_kernel_time")] for e in trace if e.get("cat") == "Node"
             and e["name"].endswith("_kernel_time")}
    assert {op.node for op in p.ops} == nodes and all(op.calls == 4 for op in p.ops)
    assert all(op.mean_seconds > 0 for op in p.ops)
    assert sum(op.share for op in p.ops) == pytest.approx(1.0)
    assert [op.mean_seconds for op in p.ops] == sorted((op.mean_seconds for op in p.ops), reverse=True)
    assert p.nodes_by_provider == {"CPUExecutionProvider": len(p.ops)} and p.warnings == []


def test_parse_ort_trace_means_per_inference_and_drops_the_first_run():
    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(name, ts, dur, provider="CPUExecutionProvider", op="Conv"):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op, "provider": provider}}

    events = [run(0, 100), node("a", 10, 90), node("b", 50, 5),
              run(200, 50), node("a", 210, 30), {"cat": "Node", "name": "a_fence_before", "ts": 209, "dur": 0},
              node("b", 240, 10, "CUDAExecutionProvider", "MatMul"),
              run(300, 50), node("a", 310, 20), node("b", 340, 20, "CUDAExecutionProvider", "MatMul")]
    ops, runs = op_profile.parse_ort_trace(json.dumps(events))
    assert runs == 2
    assert [(o.node, o.calls, o.provider) for o in ops] == [("a", 2, "CPUExecutionProvider"),
                                                            ("b", 2, "CUDAExecutionProvider")]
    assert ops[0].mean_seconds == pytest.approx(25e-6) and ops[1].mean_seconds == pytest.approx(15e-6)
    profile = op_profile.finish(OpProfile(ops=ops), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert profile.warnings == ["1 of 2 nodes ran on the CPU although CUDAExecutionProvider was asked for: a (Conv)"]


def test_tflite_delegate_partition_is_mapped_back_to_its_operators():
    details = [
        {"index": 0, "op_name": "CONV_2D", "inputs": np.array([0, 1]), "outputs": np.array([2])},
        {"index": 1, "op_name": "RELU", "inputs": np.array([2]), "outputs": np.array([3])},
        {"index": 2, "op_name": "CUSTOM_THING", "inputs": np.array([3]), "outputs": np.array([4])},
        {"index": 3, "op_name": "DELEGATE", "inputs": np.array([0, 1]), "outputs": np.array([3])},
    ]
    ops = op_profile.tflite_node_delegation(details, "libedgetpu.so.1", "CPU (builtin kernels)")
    assert [(o.node, o.op_type, o.provider) for o in ops] == [
        ("#0", "CONV_2D", "libedgetpu.so.1"), ("#1", "RELU", "libedgetpu.so.1"),
        ("#2", "CUSTOM_THING", "CPU (builtin kernels)")]
    profile = op_profile.finish(OpProfile(ops=ops), ["libedgetpu.so.1"])
    assert "1 of 3 nodes ran on the CPU" in profile.warnings[0] and "#2 (CUSTOM_THING)" in profile.warnings[0]


@pytest.mark.tflite
def test_tflite_job_says_which_delegate_ran_each_operator_and_that_it_has_no_times(tmp_path):
    pytest.importorskip("numpy")
    from hilfarm.agent.runtimes.tflite import import_tflite_interpreter

    try:
        import_tflite_interpreter()
    except ImportError as exc:
        pytest.skip(f"no TFLite interpreter: {exc}")
    model = sample_models.make_tflite_mlp(tmp_path / "m.tflite")
    on = run_benchmark(BenchmarkJob(str(model), "tflite", JobSettings(min_runs=3, profile_ops=True)))
    off = run_benchmark(BenchmarkJob(str(model), "tflite", JobSettings(min_runs=3, profile_ops=True,
                                                                        tflite_disable_xnnpack=True)))
    assert on.result.op_profile.nodes_by_provider == {"XNNPACK": 3}
    assert off.result.op_profile.nodes_by_provider == {"CPU (builtin kernels)": 3}
    for out in (on, off):
        p = out.result.op_profile
        assert all(op.mean_seconds is None for op in p.ops) and "no per-operator timer" in p.timing_unavailable
        assert [op.op_type for op in p.ops] == ["FULLY_CONNECTED"] * 3 and p.trace is None


def test_profiles_compare_node_by_node_and_show_a_provider_change():
    from hilfarm.agent.wire import op_profile_to_pb
    from hilfarm.op_profiles import compare_op_profiles, comparison_document

    a = OpProfile(ops=[OpTime("conv", "Conv", "CUDAExecutionProvider", 10, 2e-3),
                       OpTime("fc", "Gemm", "CUDAExecutionProvider", 10, 1e-3)])
    b = OpProfile(ops=[OpTime("conv", "Conv", "CPUExecutionProvider", 10, 8e-3),
                       OpTime("fc", "Gemm", "CUDAExecutionProvider", 10, 1.1e-3),
                       OpTime("new", "Relu", "CUDAExecutionProvider", 10, 1e-4)])
    rows = compare_op_profiles(op_profile_to_pb(a), op_profile_to_pb(b))
    doc = comparison_document(rows)
    assert [r["node"] for r in doc] == ["conv", "fc", "new"]
    assert doc[0]["ratio"] == pytest.approx(4.0)
    assert (doc[0]["baseline_provider"], doc[0]["candidate_provider"]) == ("CUDAExecutionProvider",
                                                                            "CPUExecutionProvider")
    assert doc[2]["baseline_seconds"] is None and doc[2]["ratio"] is None
