"""Sample-model helpers that need no runtime: inputs files, demo set, missing-extra errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from hilfarm import sample_models as sm


def test_write_npz_inputs_round_trips_and_returns_the_real_path(tmp_path: Path) -> None:
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "state": np.zeros((2, 1, 64))}
    path = sm.write_npz_inputs(tmp_path / "sub" / "inputs", arrays)
    assert path == tmp_path / "sub" / "inputs.npz"
    with np.load(path) as loaded:
        assert sorted(loaded.files) == ["state", "x"]
        np.testing.assert_array_equal(loaded["x"], arrays["x"])
        assert loaded["state"].shape == (2, 1, 64)


def test_demo_models_are_one_onnx_and_one_tflite(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("flatbuffers")
    paths = sm.make_demo_models(tmp_path / "demo")
    assert sorted(p.suffix for p in paths) == [".onnx", ".tflite"]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000
    tflite = next(p for p in paths if p.suffix == ".tflite")
    assert tflite.read_bytes()[4:8] == b"TFL3"


@pytest.mark.parametrize(
    "module,build",
    [
        ("onnx", lambda p: sm.make_onnx_identity(p / "m.onnx")),
        ("flatbuffers", lambda p: sm.make_tflite_custom_op(p / "m.tflite")),
    ],
)
def test_missing_samples_package_names_the_extra(tmp_path, monkeypatch, module, build) -> None:
    # A None entry in sys.modules makes `import module` raise ImportError, as on a device
    # that installed hilfarm without the samples extra.
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(sm.SamplesExtraMissing) as excinfo:
        build(tmp_path)
    assert f"'{module}'" in str(excinfo.value)
    assert "hilfarm[samples]" in str(excinfo.value)
    assert isinstance(excinfo.value, ImportError)


def test_tflite_builder_is_deterministic(tmp_path: Path) -> None:
    pytest.importorskip("flatbuffers")
    a = sm.make_tflite_mlp(tmp_path / "a.tflite", seed=2).read_bytes()
    b = sm.make_tflite_mlp(tmp_path / "b.tflite", seed=2).read_bytes()
    c = sm.make_tflite_mlp(tmp_path / "c.tflite", seed=3).read_bytes()
    assert a == b
    assert a != c


def test_invalid_mlp_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="in_features=0"):
        sm.mlp_weights(in_features=0, hidden=4, layers=1, out_features=2)
