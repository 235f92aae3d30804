"""The ONNX sample models behave as documented in the real onnxruntime."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hilfarm import sample_models as sm

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _session(path: Path) -> "ort.InferenceSession":
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run_child(code: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("batch,layers,seed", [(1, 2, 0), (4, 3, 7), (2, 0, 1)])
def test_mlp_matches_numpy(tmp_path: Path, batch: int, layers: int, seed: int) -> None:
    sizes = dict(in_features=32, hidden=48, layers=layers, out_features=5)
    path = sm.make_onnx_mlp(tmp_path / "mlp.onnx", batch=batch, seed=seed, **sizes)
    x = np.random.default_rng(100 + seed).standard_normal((batch, 32)).astype(np.float32)

    (y,) = _session(path).run(None, {"x": x})

    expected = sm.mlp_reference(x, sm.mlp_weights(seed=seed, **sizes))
    assert y.shape == (batch, 5)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_mlp_file_holds_the_documented_weights_and_versions(tmp_path: Path) -> None:
    path = sm.make_onnx_mlp(tmp_path / "mlp.onnx", in_features=8, hidden=6, layers=1, out_features=3)
    model = onnx.load(str(path))

    assert model.ir_version == sm.ONNX_IR_VERSION == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Relu", "MatMul", "Add"]
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for i, (w, b) in enumerate(sm.mlp_weights(in_features=8, hidden=6, layers=1, out_features=3)):
        np.testing.assert_array_equal(stored[f"w{i}"], w)
        np.testing.assert_array_equal(stored[f"b{i}"], b)


def test_mlp_dynamic_batch_is_symbolic_and_accepts_any_batch(tmp_path: Path) -> None:
    path = sm.make_onnx_mlp(tmp_path / "mlp.onnx", in_features=16, hidden=8, dynamic_batch=True)
    session = _session(path)

    assert session.get_inputs()[0].shape == ["batch", 16]
    assert session.get_outputs()[0].shape == ["batch", 10]
    for batch in (1, 3, 5):
        (y,) = session.run(None, {"x": np.ones((batch, 16), dtype=np.float32)})
        assert y.shape == (batch, 10)


def test_builders_are_deterministic_per_seed(tmp_path: Path) -> None:
    a = sm.make_onnx_mlp(tmp_path / "a.onnx", in_features=8, hidden=8, seed=3).read_bytes()
    b = sm.make_onnx_mlp(tmp_path / "b.onnx", in_features=8, hidden=8, seed=3).read_bytes()
    c = sm.make_onnx_mlp(tmp_path / "c.onnx", in_features=8, hidden=8, seed=4).read_bytes()
    assert a == b
    assert a != c


def test_heavy_model_has_the_documented_sizes(tmp_path: Path) -> None:
    path = sm.make_onnx_heavy(tmp_path / "heavy.onnx")
    session = _session(path)
    h = sm.HEAVY_MLP
    assert session.get_inputs()[0].shape == [h["batch"], h["in_features"]]
    x = np.random.default_rng(0).standard_normal((h["batch"], h["in_features"])).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    sizes = {k: v for k, v in h.items() if k != "batch"}
    np.testing.assert_allclose(y, sm.mlp_reference(x, sm.mlp_weights(**sizes)), rtol=1e-4, atol=1e-4)


def test_identity_returns_its_input(tmp_path: Path) -> None:
    path = sm.make_onnx_identity(tmp_path / "identity.onnx")
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    (y,) = _session(path).run(None, {"x": x})
    np.testing.assert_array_equal(y, x)


def test_unsupported_op_fails_at_load_naming_the_op(tmp_path: Path) -> None:
    path = sm.make_onnx_unsupported_op(tmp_path / "fancy.onnx")
    with pytest.raises(Exception) as excinfo:
        _session(path)
    message = str(excinfo.value)
    assert sm.UNSUPPORTED_ONNX_OP in message
    assert sm.UNSUPPORTED_ONNX_DOMAIN in message


def test_oom_model_loads_then_fails_to_allocate_under_a_memory_limit(tmp_path: Path) -> None:
    # 2 GiB is modest on a host but twice the child's address-space limit, so it is the limit,
    # not the host, that refuses it.
    path = sm.make_onnx_oom(tmp_path / "oom.onnx", bytes=2 << 30)
    child = _run_child(
        f"""
        import resource, numpy as np
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        import onnxruntime as ort
        session = ort.InferenceSession({str(path)!r}, providers=["CPUExecutionProvider"])
        print("loaded", flush=True)
        session.run(None, {{"x": np.array([0.5], dtype=np.float32)}})
        print("ran")
        """,
        timeout=60,
    )
    assert "loaded" in child.stdout, child.stderr
    assert "ran" not in child.stdout
    assert child.returncode != 0
    assert "Failed to allocate memory" in child.stderr or "bad_alloc" in child.stderr, child.stderr


def test_oom_model_runs_when_the_tensor_is_small(tmp_path: Path) -> None:
    # The same graph with a 4 KiB tensor: proves the failure above is the size, not the graph.
    path = sm.make_onnx_oom(tmp_path / "small.onnx", bytes=4096)
    (y,) = _session(path).run(None, {"x": np.array([3.7], dtype=np.float32)})
    np.testing.assert_array_equal(y, np.array([1024.0], dtype=np.float32))


def test_hang_model_loads_and_does_not_finish(tmp_path: Path) -> None:
    path = sm.make_onnx_hang(tmp_path / "hang.onnx")
    code = f"""
        import numpy as np, onnxruntime as ort
        session = ort.InferenceSession({str(path)!r}, providers=["CPUExecutionProvider"])
        print("loaded", flush=True)
        session.run(None, {{"x": np.zeros((1, 4), dtype=np.float32)}})
        print("finished", flush=True)
        """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "loaded"
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=3)
    finally:
        proc.kill()
        proc.wait()
    assert "finished" not in proc.stdout.read()


def test_hang_model_loop_counts_iterations(tmp_path: Path) -> None:
    path = sm.make_onnx_hang(tmp_path / "short.onnx", trip_count=1000)
    x = np.full((1, 4), 0.5, dtype=np.float32)
    (y,) = _session(path).run(None, {"x": x})
    np.testing.assert_array_equal(y, x + 1000)
