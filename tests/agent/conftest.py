"""Shared fixtures of the agent tests: sample models on disk and the test runtime plugins."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from hilfarm import sample_models
from hilfarm.agent.results import JobSettings
from hilfarm.v1 import farm_pb2

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "runtimes"
PLUGIN_MODULE = "hilfarm_test_runtimes"


@pytest.fixture
def plugins(monkeypatch):
    """Makes the misbehaving test runtimes importable here and in benchmark children."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])))
    import importlib

    importlib.import_module(PLUGIN_MODULE)
    return [PLUGIN_MODULE]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    m = {
        "mlp": sample_models.make_onnx_mlp(d / "mlp.onnx", in_features=16, hidden=32, out_features=4),
        "dynamic": sample_models.make_onnx_mlp(
            d / "dynamic.onnx", in_features=16, hidden=32, out_features=4, dynamic_batch=True
        ),
        "identity": sample_models.make_onnx_identity(d / "identity.onnx"),
        "unsupported": sample_models.make_onnx_unsupported_op(d / "unsupported.onnx"),
        "oom": sample_models.make_onnx_oom(d / "oom.onnx", bytes=8 << 30),
        "hang": sample_models.make_onnx_hang(d / "hang.onnx"),
    }
    garbage = d / "garbage.onnx"
    garbage.write_bytes(b"this is a text file, not a model\n" * 40)
    m["garbage"] = garbage
    data = m["mlp"].read_bytes()
    trunc = d / "truncated.onnx"
    trunc.write_bytes(data[: len(data) // 2])
    m["truncated"] = trunc
    # A standard op whose type this ONNX Runtime has no kernel for (Relu on int16, opset 14).
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu16",
        [helper.make_tensor_value_info("x", TensorProto.INT16, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT16, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.save(model, str(d / "relu_int16.onnx"))
    m["no_kernel"] = d / "relu_int16.onnx"
    return m


def settings_message(s: JobSettings) -> farm_pb2.JobSettings:
    """The JobSettings message a controller would send for ``s`` (the agent only reads them)."""
    scalars = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)
               if f.name not in ("tflite_delegate_options", "input_shapes")}
    return farm_pb2.JobSettings(**scalars, tflite_delegate_options=s.tflite_delegate_options,
                                input_shapes=[farm_pb2.InputShape(name=n, dims=d) for n, d in s.input_shapes.items()])


def category_name(failure: farm_pb2.Failure) -> str:
    """CONFIGURATION for FAILURE_CATEGORY_CONFIGURATION."""
    return farm_pb2.FailureCategory.Name(failure.category)[len("FAILURE_CATEGORY_"):]
