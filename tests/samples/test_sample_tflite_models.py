"""The TFLite sample models load and run (or fail as intended) in the real interpreters."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest

from hilfarm import sample_models as sm

pytest.importorskip("flatbuffers")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # tflite-runtime under numpy 2 fails with AttributeError, not ImportError
        return False
    return True


# Whichever of the two interpreters this environment has; each test runs against each of them.
INTERPRETERS: List[str] = [
    m for m in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter") if _importable(m)
]

pytestmark = [
    pytest.mark.tflite,
    pytest.mark.skipif(not INTERPRETERS, reason="no TFLite interpreter (ai-edge-litert or tflite-runtime)"),
]


@pytest.fixture(params=INTERPRETERS or ["none"])
def interpreter_cls(request: Any) -> Any:
    return importlib.import_module(request.param).Interpreter


def _run(interpreter: Any, x: np.ndarray) -> np.ndarray:
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


@pytest.mark.parametrize("batch,layers,seed", [(1, 2, 0), (3, 1, 5), (2, 0, 9)])
def test_mlp_matches_numpy(tmp_path: Path, interpreter_cls: Any, batch: int, layers: int, seed: int) -> None:
    sizes = dict(in_features=24, hidden=40, layers=layers, out_features=7)
    path = sm.make_tflite_mlp(tmp_path / "mlp.tflite", batch=batch, seed=seed, **sizes)
    x = np.random.default_rng(seed).standard_normal((batch, 24)).astype(np.float32)

    y = _run(interpreter_cls(model_path=str(path)), x)

    assert y.shape == (batch, 7)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, sm.mlp_reference(x, sm.mlp_weights(seed=seed, **sizes)), rtol=1e-5, atol=1e-5)


def test_mlp_io_details(tmp_path: Path, interpreter_cls: Any) -> None:
    path = sm.make_tflite_mlp(tmp_path / "mlp.tflite")
    interpreter = interpreter_cls(model_path=str(path))
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    assert (inp["name"], list(inp["shape"]), inp["dtype"]) == ("x", [1, 64], np.float32)
    assert (out["name"], list(out["shape"]), out["dtype"]) == ("y", [1, 10], np.float32)
    data = path.read_bytes()
    assert data[4:8] == b"TFL3"


def test_tflite_and_onnx_mlps_agree(tmp_path: Path, interpreter_cls: Any) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    sizes = dict(in_features=16, hidden=32, layers=2, out_features=4, batch=2, seed=11)
    tfl = sm.make_tflite_mlp(tmp_path / "m.tflite", **sizes)
    onx = sm.make_onnx_mlp(tmp_path / "m.onnx", **sizes)
    x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)

    y_tflite = _run(interpreter_cls(model_path=str(tfl)), x)
    (y_onnx,) = ort.InferenceSession(str(onx), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    np.testing.assert_allclose(y_tflite, y_onnx, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op_name", ["HilfarmMysteryOp", sm.EDGETPU_CUSTOM_OP])
def test_custom_op_fails_to_prepare_naming_the_op(tmp_path: Path, interpreter_cls: Any, op_name: str) -> None:
    path = sm.make_tflite_custom_op(tmp_path / "custom.tflite", op_name=op_name)
    interpreter = interpreter_cls(model_path=str(path))
    with pytest.raises(RuntimeError) as excinfo:
        interpreter.allocate_tensors()
    assert f"Encountered unresolved custom op: {op_name}" in str(excinfo.value)
    assert f"Node number 0 ({op_name}) failed to prepare" in str(excinfo.value)
