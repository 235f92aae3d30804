"""Small, real model files for `hilfarm demo`, tests and benchmarks.

Every builder writes a genuine artifact with the format's own serialization code (the ``onnx``
package for ONNX graphs, ``flatbuffers`` for TFLite), needs no network, and is deterministic for
a given seed, so the same call always produces the same bytes and therefore the same digest.

Some builders make models that misbehave on purpose, so the farm's failure paths are exercised by
real runtimes rather than by mocks:

* :func:`make_onnx_unsupported_op` / :func:`make_tflite_custom_op` — the runtime refuses the
  model at load/prepare time with its own error naming the op;
* :func:`make_onnx_oom` — loads fine, then asks for far more memory than a device has;
* :func:`make_onnx_hang` — loads fine, then never finishes an inference.

The ``onnx`` and ``flatbuffers`` packages come from the ``samples`` extra and are imported only
when a builder needs them; importing this module costs nothing but numpy.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

# IR 8 + opset 13 load in every onnxruntime >= 1.10; onnxruntime 1.16.3 is the newest release some
# devices (Python 3.9 on aarch64) can install, and it accepts IR <= 9.
ONNX_IR_VERSION = 8
ONNX_OPSET = 13

# The custom-domain op no ONNX runtime implements.
UNSUPPORTED_ONNX_DOMAIN = "com.example"
UNSUPPORTED_ONNX_OP = "FancyOp"

# The name Edge TPU compiled models give their single custom op.
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

# Sizes of make_onnx_heavy (see its docstring for what they cost).
HEAVY_MLP = {"in_features": 512, "hidden": 1024, "layers": 2, "out_features": 10, "batch": 128}


class SamplesExtraMissing(ImportError):
    """A builder needs a package of the ``samples`` extra that is not installed (the install's fault)."""


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SamplesExtraMissing(
            f"building sample models needs the '{module}' package, which is not installed; "
            f"install the samples extra: pip install 'hilfarm[samples]'"
        ) from exc


def _prepare_path(path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------
# Weights shared by the ONNX and TFLite MLPs, so one numpy reference checks both formats.
# --------------------------------------------------------------------------------------------


def mlp_weights(
    *, in_features: int, hidden: int, layers: int, out_features: int, seed: int = 0
) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The (W, b) pairs of the sample MLP: W is [fan_in, fan_out] float32, b is [fan_out].

    ``layers`` hidden layers of width ``hidden`` followed by the output layer; a ReLU follows
    every layer but the last. Scaled by 1/sqrt(fan_in) so activations stay near unit size and a
    float32 comparison with numpy is meaningful.
    """
    if layers < 0 or min(in_features, hidden, out_features) < 1:
        raise ValueError(
            f"MLP sizes must be positive (in_features={in_features}, hidden={hidden}, "
            f"out_features={out_features}, layers={layers})"
        )
    rng = np.random.default_rng(seed)
    widths = [in_features] + [hidden] * layers + [out_features]
    weights = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.1).astype(np.float32)
        weights.append((w, b))
    return weights


def mlp_reference(x: np.ndarray, weights: Sequence[Tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """What the sample MLP computes, in numpy (float32 throughout, like the runtimes)."""
    y = np.asarray(x, dtype=np.float32)
    for i, (w, b) in enumerate(weights):
        y = y @ w + b
        if i < len(weights) - 1:
            y = np.maximum(y, 0)
    return y.astype(np.float32)


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


def _onnx_model(graph: Any, *, opset: int = ONNX_OPSET, extra_opsets: Optional[Mapping[str, int]] = None) -> Any:
    onnx = _require("onnx")
    helper = onnx.helper
    opsets = [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(domain, version) for domain, version in (extra_opsets or {}).items()]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="hilfarm.sample_models")
    model.ir_version = ONNX_IR_VERSION
    return model


def _save_onnx(model: Any, path: PathLike, *, check: bool = True) -> Path:
    onnx = _require("onnx")
    if check:
        onnx.checker.check_model(model, full_check=True)
    path = _prepare_path(path)
    onnx.save_model(model, str(path))
    return path


def make_onnx_mlp(
    path: PathLike,
    *,
    in_features: int = 256,
    hidden: int = 512,
    layers: int = 2,
    out_features: int = 10,
    batch: int = 1,
    dynamic_batch: bool = False,
    seed: int = 0,
    opset: int = ONNX_OPSET,
) -> Path:
    """A float32 MatMul+Add+Relu MLP: input ``x`` [batch, in_features] -> ``y`` [batch, out_features].

    Weights are :func:`mlp_weights` with the same sizes and seed. With ``dynamic_batch`` the batch
    dimension is the symbolic ``"batch"``, as in many exported real models.
    """
    onnx = _require("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    weights = mlp_weights(
        in_features=in_features, hidden=hidden, layers=layers, out_features=out_features, seed=seed
    )
    batch_dim: Union[int, str] = "batch" if dynamic_batch else batch
    nodes, initializers = [], []
    current = "x"
    for i, (w, b) in enumerate(weights):
        last = i == len(weights) - 1
        initializers += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"mm{i}"], name=f"matmul{i}"))
        added = "y" if last else f"add{i}"
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [added], name=f"add{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [added], [f"relu{i}"], name=f"relu{i}"))
            current = f"relu{i}"
    graph = helper.make_graph(
        nodes,
        "hilfarm_sample_mlp",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch_dim, in_features])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [batch_dim, out_features])],
        initializer=initializers,
    )
    return _save_onnx(_onnx_model(graph, opset=opset), path)


def make_onnx_heavy(path: PathLike, *, batch: int = HEAVY_MLP["batch"], seed: int = 0) -> Path:
    """An MLP big enough that one inference takes well over 1 ms on a CPU.

    :data:`HEAVY_MLP` sizes (512 -> 1024 -> 1024 -> 10, batch 128, 6.3 MB file) cost
    2 * 128 * 1.6 M = 0.4 GFLOP per inference. Measured with onnxruntime 1.32 on a 2-core x86_64
    host: 2.6-2.9 ms with default threads, 4.0-4.3 ms with one intra-op thread, so per-inference
    harness overheads of microseconds stay a small fraction of it. The cost scales linearly
    with ``batch``; raise it on big many-core hosts to keep well above 1 ms.
    """
    sizes = dict(HEAVY_MLP, batch=batch)
    return make_onnx_mlp(path, seed=seed, **sizes)


def make_onnx_identity(path: PathLike, *, shape: Sequence[int] = (1, 4)) -> Path:
    """``y = Identity(x)`` on a tiny float32 tensor: costs the runtime next to nothing, so timing it
    measures the harness's own per-inference overhead."""
    onnx = _require("onnx")
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"], name="identity")],
        "hilfarm_sample_identity",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(shape))],
    )
    return _save_onnx(_onnx_model(graph), path)


def make_onnx_unsupported_op(
    path: PathLike, *, domain: str = UNSUPPORTED_ONNX_DOMAIN, op_type: str = UNSUPPORTED_ONNX_OP
) -> Path:
    """A well-formed graph whose only node is ``domain::op_type``, which no runtime implements.

    ONNX Runtime refuses it when the session is created, naming the op and domain (the model's
    fault, not the device's).
    """
    onnx = _require("onnx")
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node(op_type, ["x"], ["y"], name="fancy", domain=domain)],
        "hilfarm_sample_unsupported_op",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    )
    model = _onnx_model(graph, extra_opsets={domain: 1})
    # The checker knows no schema for a custom-domain op; skip it rather than weaken the others.
    onnx.checker.check_model(model, full_check=False)
    return _save_onnx(model, path, check=False)


def make_onnx_oom(path: PathLike, *, bytes: int = 1 << 40) -> Path:  # noqa: A002 - the knob's name
    """A valid model that asks for a ``bytes``-sized float32 tensor while it runs.

    ``x`` float32 [1] -> ConstantOfShape([bytes // 4]) -> ReduceSum -> ``y`` [1]. The shape is
    computed from ``x`` (``int64(x) * 0 + n``) so no graph optimizer can fold the allocation
    into load time: the session loads in a few MB and the first inference is what runs out of
    memory. Any input value works.

    The default, 1 TiB, is refused outright by the kernel's default overcommit heuristic, so
    onnxruntime fails with "Failed to allocate memory for requested buffer" even without a
    limit; under ``RLIMIT_AS`` any size above the limit does the same. Where overcommit is
    unconditional (``vm.overcommit_memory=1``) the allocation succeeds and filling it gets the
    process OOM-killed instead — a real out-of-memory either way.
    """
    onnx = _require("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    elements = max(1, int(bytes) // 4)
    nodes = [
        helper.make_node("Cast", ["x"], ["x_int"], to=onnx.TensorProto.INT64, name="cast"),
        helper.make_node("Mul", ["x_int", "zero"], ["zeroed"], name="zero_out"),
        helper.make_node("Add", ["zeroed", "elements"], ["shape"], name="shape"),
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["huge"],
            value=numpy_helper.from_array(np.array([1.0], dtype=np.float32), "value"),
            name="allocate",
        ),
        helper.make_node("ReduceSum", ["huge"], ["y"], keepdims=1, name="sum"),
    ]
    graph = helper.make_graph(
        nodes,
        "hilfarm_sample_oom",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        initializer=[
            numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
            numpy_helper.from_array(np.array([elements], dtype=np.int64), "elements"),
        ],
    )
    return _save_onnx(_onnx_model(graph), path)


def make_onnx_hang(path: PathLike, *, trip_count: int = 2**62) -> Path:
    """A valid model whose inference practically never ends.

    A ``Loop`` with ``trip_count`` iterations (default 2**62; each takes microseconds) adds 1 to a
    [1, 4] tensor seeded from the input ``x``, so nothing can be folded away at load time. Loads
    instantly; a harness must time it out.
    """
    onnx = _require("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
            helper.make_node("Add", ["v_in", "one"], ["v_out"], name="step"),
        ],
        "hilfarm_sample_hang_body",
        [
            helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", onnx.TensorProto.FLOAT, [1, 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", onnx.TensorProto.FLOAT, [1, 4]),
        ],
        initializer=[numpy_helper.from_array(np.ones((1, 4), dtype=np.float32), "one")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trip_count", "cond", "x"], ["y"], body=body, name="forever")],
        "hilfarm_sample_hang",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        initializer=[
            numpy_helper.from_array(np.array(trip_count, dtype=np.int64), "trip_count"),
            numpy_helper.from_array(np.array(True), "cond"),
        ],
    )
    return _save_onnx(_onnx_model(graph), path)


# --------------------------------------------------------------------------------------------
# TFLite (schema version 3, written field by field with flatbuffers.Builder)
#
# Field slots follow tensorflow/lite/schema/schema.fbs; the ids are the declaration order of
# each table's fields. Only the fields these models use are written.
# --------------------------------------------------------------------------------------------

_TFLITE_SCHEMA_VERSION = 3
_TFLITE_FILE_IDENTIFIER = b"TFL3"
_TFL_FLOAT32 = 0  # TensorType.FLOAT32
_TFL_FULLY_CONNECTED = 9  # BuiltinOperator.FULLY_CONNECTED
_TFL_CUSTOM = 32  # BuiltinOperator.CUSTOM
_TFL_OPTIONS_FULLY_CONNECTED = 8  # BuiltinOptions.FullyConnectedOptions
_TFL_ACT_NONE, _TFL_ACT_RELU = 0, 1  # ActivationFunctionType


class _TFLiteWriter:
    """Collects buffers, tensors, operator codes and operators of one subgraph, then writes them."""

    def __init__(self) -> None:
        flatbuffers = _require("flatbuffers")
        self.b = flatbuffers.Builder(1024)
        # Buffer 0 is the empty sentinel every TFLite model starts with; tensors without
        # constant data point at it.
        self.buffers: List[bytes] = [b""]
        self.tensors: List[Tuple[str, Tuple[int, ...], int]] = []
        self.opcodes: List[Tuple[int, str]] = []
        self.operators: List[Tuple[int, List[int], List[int], int]] = []

    def tensor(self, name: str, shape: Sequence[int], data: Any = None) -> int:
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data, dtype="<f4").tobytes())
            buffer = len(self.buffers) - 1
        self.tensors.append((name, tuple(int(d) for d in shape), buffer))
        return len(self.tensors) - 1

    def opcode(self, builtin: int, custom: str = "") -> int:
        key = (builtin, custom)
        if key not in self.opcodes:
            self.opcodes.append(key)
        return self.opcodes.index(key)

    def operator(self, opcode: int, inputs: List[int], outputs: List[int], fused: int = -1) -> None:
        """``fused`` >= 0 attaches FullyConnectedOptions with that activation."""
        self.operators.append((opcode, inputs, outputs, fused))

    def _int_vector(self, values: Sequence[int]) -> int:
        return self.b.CreateNumpyVector(np.asarray(values, dtype="<i4"))

    def _table_vector(self, offsets: Sequence[int]) -> int:
        self.b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            self.b.PrependUOffsetTRelative(off)
        return self.b.EndVector()

    def finish(self, inputs: List[int], outputs: List[int], description: str) -> bytes:
        b = self.b
        buffer_offsets = []
        for data in self.buffers:
            data_off = None
            if data:
                # schema.fbs: `data:[ubyte] (force_align: 16)`; kernels may read weights in
                # place with SIMD loads, so keep the alignment the schema promises.
                b.Prep(16, len(data))
                data_off = b.CreateNumpyVector(np.frombuffer(data, dtype=np.uint8))
            b.StartObject(3)
            if data_off is not None:
                b.PrependUOffsetTRelativeSlot(0, data_off, 0)  # Buffer.data
            buffer_offsets.append(b.EndObject())

        tensor_offsets = []
        for name, shape, buffer in self.tensors:
            name_off = b.CreateString(name)
            shape_off = self._int_vector(shape)
            b.StartObject(10)
            b.PrependUOffsetTRelativeSlot(0, shape_off, 0)  # Tensor.shape
            b.PrependInt8Slot(1, _TFL_FLOAT32, 0)  # Tensor.type (slot default 0 is FLOAT32)
            b.PrependUint32Slot(2, buffer, 0)  # Tensor.buffer
            b.PrependUOffsetTRelativeSlot(3, name_off, 0)  # Tensor.name
            tensor_offsets.append(b.EndObject())

        operator_offsets = []
        for opcode, op_inputs, op_outputs, fused in self.operators:
            options_off = None
            if fused >= 0:
                b.StartObject(5)
                b.PrependInt8Slot(0, fused, 0)  # FullyConnectedOptions.fused_activation_function
                options_off = b.EndObject()
            in_off, out_off = self._int_vector(op_inputs), self._int_vector(op_outputs)
            b.StartObject(9)
            b.PrependUint32Slot(0, opcode, 0)  # Operator.opcode_index
            b.PrependUOffsetTRelativeSlot(1, in_off, 0)  # Operator.inputs
            b.PrependUOffsetTRelativeSlot(2, out_off, 0)  # Operator.outputs
            if options_off is not None:
                b.PrependUint8Slot(3, _TFL_OPTIONS_FULLY_CONNECTED, 0)  # builtin_options_type
                b.PrependUOffsetTRelativeSlot(4, options_off, 0)  # builtin_options
            operator_offsets.append(b.EndObject())

        tensors_vec = self._table_vector(tensor_offsets)
        operators_vec = self._table_vector(operator_offsets)
        sg_inputs, sg_outputs = self._int_vector(inputs), self._int_vector(outputs)
        sg_name = b.CreateString("main")
        b.StartObject(5)
        b.PrependUOffsetTRelativeSlot(0, tensors_vec, 0)  # SubGraph.tensors
        b.PrependUOffsetTRelativeSlot(1, sg_inputs, 0)  # SubGraph.inputs
        b.PrependUOffsetTRelativeSlot(2, sg_outputs, 0)  # SubGraph.outputs
        b.PrependUOffsetTRelativeSlot(3, operators_vec, 0)  # SubGraph.operators
        b.PrependUOffsetTRelativeSlot(4, sg_name, 0)  # SubGraph.name
        subgraph = b.EndObject()

        opcode_offsets = []
        for builtin, custom in self.opcodes:
            custom_off = b.CreateString(custom) if custom else None
            b.StartObject(4)
            # Builtins below 127 go in both fields: old readers only know the deprecated byte.
            b.PrependInt8Slot(0, min(builtin, 127), 0)  # OperatorCode.deprecated_builtin_code
            if custom_off is not None:
                b.PrependUOffsetTRelativeSlot(1, custom_off, 0)  # OperatorCode.custom_code
            b.PrependInt32Slot(2, 1, 1)  # OperatorCode.version
            b.PrependInt32Slot(3, builtin, 0)  # OperatorCode.builtin_code
            opcode_offsets.append(b.EndObject())

        opcodes_vec = self._table_vector(opcode_offsets)
        subgraphs_vec = self._table_vector([subgraph])
        buffers_vec = self._table_vector(buffer_offsets)
        description_off = b.CreateString(description)
        b.StartObject(8)
        b.PrependUint32Slot(0, _TFLITE_SCHEMA_VERSION, 0)  # Model.version
        b.PrependUOffsetTRelativeSlot(1, opcodes_vec, 0)  # Model.operator_codes
        b.PrependUOffsetTRelativeSlot(2, subgraphs_vec, 0)  # Model.subgraphs
        b.PrependUOffsetTRelativeSlot(3, description_off, 0)  # Model.description
        b.PrependUOffsetTRelativeSlot(4, buffers_vec, 0)  # Model.buffers
        model = b.EndObject()
        b.Finish(model, file_identifier=_TFLITE_FILE_IDENTIFIER)
        return bytes(b.Output())


def make_tflite_mlp(
    path: PathLike,
    *,
    in_features: int = 64,
    hidden: int = 128,
    layers: int = 2,
    out_features: int = 10,
    batch: int = 1,
    seed: int = 0,
) -> Path:
    """A float32 TFLite MLP of FULLY_CONNECTED ops (RELU fused on all but the last).

    Same weights as :func:`make_onnx_mlp` for equal sizes and seed (see :func:`mlp_weights`):
    input ``x`` [batch, in_features] -> ``y`` [batch, out_features].
    """
    weights = mlp_weights(
        in_features=in_features, hidden=hidden, layers=layers, out_features=out_features, seed=seed
    )
    w = _TFLiteWriter()
    fc = w.opcode(_TFL_FULLY_CONNECTED)
    current = w.tensor("x", (batch, in_features))
    first = current
    for i, (weight, bias) in enumerate(weights):
        last = i == len(weights) - 1
        # FULLY_CONNECTED stores weights as [out, in] and computes x @ W.T + b.
        w_t = w.tensor(f"w{i}", weight.T.shape, weight.T)
        b_t = w.tensor(f"b{i}", bias.shape, bias)
        out = w.tensor("y" if last else f"relu{i}", (batch, weight.shape[1]))
        w.operator(fc, [current, w_t, b_t], [out], fused=_TFL_ACT_NONE if last else _TFL_ACT_RELU)
        current = out
    data = w.finish([first], [current], "hilfarm sample MLP")
    path = _prepare_path(path)
    path.write_bytes(data)
    return path


def make_tflite_custom_op(
    path: PathLike, *, op_name: str = "HilfarmMysteryOp", shape: Sequence[int] = (1, 4)
) -> Path:
    """A TFLite model whose only op is CUSTOM ``op_name``, which no stock interpreter registers.

    The interpreter fails when tensors are allocated with its own message
    ``Encountered unresolved custom op: <op_name>``. With ``op_name="edgetpu-custom-op"`` it looks
    to the interpreter like an Edge TPU compiled model run without the Edge TPU delegate.
    """
    if not op_name:
        raise ValueError("op_name must be a non-empty custom op name")
    w = _TFLiteWriter()
    custom = w.opcode(_TFL_CUSTOM, op_name)
    x = w.tensor("x", shape)
    y = w.tensor("y", shape)
    w.operator(custom, [x], [y])
    data = w.finish([x], [y], f"hilfarm sample with custom op {op_name}")
    path = _prepare_path(path)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------


def write_npz_inputs(path: PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Saves named input arrays (input name -> array) as an uncompressed .npz file."""
    path = _prepare_path(path)
    if not path.name.endswith(".npz"):
        # np.savez would silently append ".npz"; the caller must get back the real path.
        path = path.with_name(path.name + ".npz")
    np.savez(str(path), **{name: np.asarray(a) for name, a in arrays.items()})
    return path


def make_demo_models(directory: PathLike) -> List[Path]:
    """Writes the two models `hilfarm demo` benchmarks: an ONNX MLP and a TFLite MLP."""
    directory = Path(directory)
    return [
        make_onnx_mlp(directory / "hilfarm-demo-mlp.onnx"),
        make_tflite_mlp(directory / "hilfarm-demo-mlp.tflite"),
    ]


__all__ = [
    "EDGETPU_CUSTOM_OP",
    "HEAVY_MLP",
    "SamplesExtraMissing",
    "UNSUPPORTED_ONNX_DOMAIN",
    "UNSUPPORTED_ONNX_OP",
    "make_demo_models",
    "make_onnx_hang",
    "make_onnx_heavy",
    "make_onnx_identity",
    "make_onnx_mlp",
    "make_onnx_oom",
    "make_onnx_unsupported_op",
    "make_tflite_custom_op",
    "make_tflite_mlp",
    "mlp_reference",
    "mlp_weights",
    "write_npz_inputs",
]
