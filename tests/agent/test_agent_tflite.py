"""TFLite through the harness (ai-edge-litert or tflite-runtime, whichever imports)."""

from __future__ import annotations

import pytest

from hilfarm import sample_models
from hilfarm.agent.harness import BenchmarkJob, run_benchmark
from hilfarm.agent.results import FailureCategory, JobSettings



def tflite_available() -> bool:
    try:
        from hilfarm.agent.runtimes.tflite import import_tflite_interpreter

        import_tflite_interpreter()
        return True
    except ImportError:
        return False


pytestmark = [
    pytest.mark.tflite,
    pytest.mark.skipif(not tflite_available(), reason="no TFLite interpreter (ai-edge-litert or tflite-runtime) imports"),
]

QUICK = dict(warmup_runs=1, warmup_seconds=0.01, min_runs=30, min_seconds=0.05)


def run(path, **settings):
    return run_benchmark(BenchmarkJob(str(path), "tflite", JobSettings(**QUICK, **settings)))


@pytest.fixture(scope="module")
def tfl(tmp_path_factory):
    d = tmp_path_factory.mktemp("tflite")
    mlp = sample_models.make_tflite_mlp(d / "mlp.tflite")
    data = mlp.read_bytes()
    (d / "truncated.tflite").write_bytes(data[: len(data) // 2])
    (d / "garbage.tflite").write_bytes(b"not a flatbuffer at all" * 30)
    return {
        "mlp": mlp,
        "edgetpu": sample_models.make_tflite_custom_op(d / "m_edgetpu.tflite", op_name="edgetpu-custom-op"),
        "custom": sample_models.make_tflite_custom_op(d / "custom.tflite", op_name="HilfarmMysteryOp"),
        "truncated": d / "truncated.tflite",
        "garbage": d / "garbage.tflite",
    }


def test_mlp_with_xnnpack(tfl):
    r = run(tfl["mlp"], threads=1).result
    assert r is not None
    assert r.environment.runtime == "tflite"
    assert r.environment.execution_provider == "XNNPACK"
    assert r.environment.threads == 1
    assert "xnnpack=on" in r.environment.runtime_settings
    assert r.environment.input_shapes == {"x": [1, 64]}
    assert len(r.latency.samples_ns) >= 30 and r.latency.p50_seconds > 0
    assert r.memory.peak_bytes >= r.memory.baseline_peak_bytes


def test_mlp_without_xnnpack(tfl):
    r = run(tfl["mlp"], tflite_disable_xnnpack=True).result
    assert "xnnpack=off" in r.environment.runtime_settings
    assert "builtin" in r.environment.execution_provider


def test_edgetpu_model_needs_an_edge_tpu(tfl):
    f = run(tfl["edgetpu"]).failure
    assert f.category is FailureCategory.UNSUPPORTED_OP
    assert "needs an Edge TPU" in f.message and "edgetpu-custom-op" in f.message


def test_unknown_custom_op_is_named(tfl):
    f = run(tfl["custom"]).failure
    assert f.category is FailureCategory.UNSUPPORTED_OP
    assert "HilfarmMysteryOp" in f.message


@pytest.mark.parametrize("name", ["truncated", "garbage"])
def test_not_a_tflite_model(tfl, name):
    f = run(tfl[name]).failure
    assert f.category is FailureCategory.ARTIFACT_INVALID
    assert "not a readable TFLite model" in f.message


def test_missing_delegate_library_is_the_requests_fault_not_the_devices(tfl, tmp_path):
    f = run(tfl["mlp"], tflite_delegate_path=str(tmp_path / "libedgetpu.so.1")).failure
    assert f.category is FailureCategory.CONFIGURATION
    assert "libedgetpu.so.1" in f.message and "cannot be loaded on this device" in f.message
    # A file that is there but is no shared library is the same: the job named the wrong thing.
    not_a_library = tmp_path / "libnotreally.so"
    not_a_library.write_text("text\n")
    f = run(tfl["mlp"], tflite_delegate_path=str(not_a_library)).failure
    assert f.category is FailureCategory.CONFIGURATION and "libnotreally.so" in f.message


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.9, 0.99])
def test_truncated_anywhere_is_invalid_not_a_crash(tfl, tmp_path, fraction):
    data = tfl["mlp"].read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: int(len(data) * fraction)])
    f = run(path).failure
    assert f.category is FailureCategory.ARTIFACT_INVALID, f
