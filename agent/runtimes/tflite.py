"""TFLite through ai-edge-litert or tflite-runtime: the interpreter with XNNPACK or a delegate,
a structural check of the flatbuffer, and what the interpreter's error messages mean."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

from hilfarm.agent.results import FailureCategory, JobFailed, OpProfile, RuntimeInfo
from hilfarm.agent.runtimes import (
    Runtime, RuntimeDescription, TensorSpec, classify_common_error, register_runtime,
)


def import_tflite_interpreter() -> Tuple[Any, str, str]:
    """(interpreter module, package name, version) of whichever TFLite interpreter imports.

    ai-edge-litert is tried first (current); tflite-runtime is the older package that devices
    still carry. Raises ImportError naming both reasons when neither works.
    """
    reasons = []
    try:
        from ai_edge_litert import interpreter as mod  # type: ignore

        return mod, "ai-edge-litert", _dist_version("ai-edge-litert")
    except Exception as exc:  # numpy ABI mismatches raise more than ImportError
        reasons.append(f"ai-edge-litert: {type(exc).__name__}: {exc}")
    try:
        from tflite_runtime import interpreter as mod  # type: ignore

        return mod, "tflite-runtime", _dist_version("tflite-runtime")
    except Exception as exc:
        reasons.append(f"tflite-runtime: {type(exc).__name__}: {exc}")
    raise ImportError("; ".join(reasons))


def _dist_version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "unknown"


def classify_tflite_error(exc: BaseException, during: str) -> JobFailed:
    text = str(exc)
    m = re.search(r"Encountered unresolved custom op: ([^\s.]+(?:\.[^\s.]+)*?)\.?(?:\s|$)", text)
    if m:
        op = m.group(1)
        if op == "edgetpu-custom-op":
            msg = ("the model was compiled for the Edge TPU (custom op edgetpu-custom-op) and needs "
                   "an Edge TPU: run it on a device with a Coral and its delegate "
                   "(--delegate edgetpu, allow-listed in the Coral profiles), or submit the uncompiled model")
        else:
            msg = f"the TFLite interpreter lacks custom op {op}; the model needs a delegate or an op library that provides it"
        return JobFailed(FailureCategory.UNSUPPORTED_OP, msg, detail=text)
    m = re.search(r"Didn't find op for builtin opcode '([^']+)' version '(\d+)'", text)
    if m:
        return JobFailed(
            FailureCategory.UNSUPPORTED_OP,
            f"this TFLite interpreter lacks builtin op {m.group(1)} version {m.group(2)}; use a newer runtime",
            detail=text,
        )
    if re.search(r"model identifier|Could not open|not a valid|The model is not a valid Flatbuffer|"
                 r"Model provided must have at least|failed to verify", text, re.I):
        return JobFailed(
            FailureCategory.ARTIFACT_INVALID,
            "the file is not a readable TFLite model (flatbuffer did not verify; truncated or not TFLite)",
            detail=text,
        )
    return classify_common_error(exc, during)


def check_tflite_file(path: str) -> None:
    """Cheap structural check of a .tflite flatbuffer before the interpreter sees it.

    Older interpreters (tflite-runtime 2.14) do not verify the flatbuffer and die on SIGSEGV
    reading a truncated file; this catches the common case (the file ends before the tables,
    vectors or weight buffers it points to) and says so instead.
    """
    import struct

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise JobFailed(FailureCategory.ARTIFACT_INVALID, f"the model file cannot be read: {exc}") from exc
    size = len(data)

    def bad(why: str) -> JobFailed:
        return JobFailed(
            FailureCategory.ARTIFACT_INVALID,
            f"the file is not a readable TFLite model ({why}; truncated or not TFLite)",
        )

    def u32(pos: int) -> int:
        if pos < 0 or pos + 4 > size:
            raise bad(f"offset {pos} lies beyond the end of the {size}-byte file")
        return struct.unpack_from("<I", data, pos)[0]

    def table_fields(table: int) -> Tuple[int, List[int]]:
        vtable = table - struct.unpack_from("<i", data, table)[0] if table + 4 <= size else -1
        if vtable < 0 or vtable + 4 > size:
            raise bad("a table's layout lies outside the file")
        vsize = struct.unpack_from("<H", data, vtable)[0]
        if vtable + vsize > size or vsize < 4:
            raise bad("a table's layout lies outside the file")
        return table, [struct.unpack_from("<H", data, vtable + 4 + 2 * i)[0] for i in range((vsize - 4) // 2)]

    def vector(pos: int, elem: int) -> Tuple[int, int]:
        start = pos + u32(pos)
        n = u32(start)
        if start + 4 + n * elem > size:
            raise bad(f"a vector of {n} elements runs past the end of the {size}-byte file")
        return start + 4, n

    if size < 8 or data[4:8] != b"TFL3":
        raise bad("no TFL3 file identifier")
    root, fields = table_fields(u32(0))
    # Model fields: 1 operator_codes, 2 subgraphs, 4 buffers (vectors of tables), 3 description.
    for idx in (1, 2, 4):
        if idx < len(fields) and fields[idx]:
            first, n = vector(root + fields[idx], 4)
            for i in range(n):
                pos = first + 4 * i
                table, tfields = table_fields(pos + u32(pos))
                if idx == 4 and tfields and tfields[0]:  # Buffer.data: the weights
                    vector(table + tfields[0], 1)
    if len(fields) > 3 and fields[3]:
        vector(root + fields[3], 1)


@register_runtime("tflite", formats=("tflite",))
class TfliteRuntime(Runtime):
    @classmethod
    def probe(cls) -> RuntimeInfo:
        _mod, package, version = import_tflite_interpreter()
        return RuntimeInfo(name="tflite", version=version, package=package, execution_providers=["XNNPACK"])

    def load(self, model_path: str) -> None:
        mod, self._package, self._version = import_tflite_interpreter()
        check_tflite_file(model_path)
        s = self.settings
        kwargs: Dict[str, Any] = {"model_path": model_path}
        if s.threads > 0:
            kwargs["num_threads"] = s.threads
        self._delegate = "XNNPACK"
        if s.tflite_disable_xnnpack:
            kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            self._delegate = "none (builtin kernels)"
        if s.tflite_delegate_path:
            try:
                delegate = mod.load_delegate(s.tflite_delegate_path, dict(s.tflite_delegate_options))
            except OSError as exc:
                # dlopen failed: the library the job names is not on this device (or is not a
                # shared library). The request is to blame, not the device.
                raise JobFailed(
                    FailureCategory.CONFIGURATION,
                    f"the TFLite delegate library {s.tflite_delegate_path} cannot be loaded on this "
                    f"device ({exc}); name a delegate library installed there",
                    detail=str(exc),
                ) from exc
            except Exception as exc:
                raise JobFailed(
                    FailureCategory.DEVICE_FAULT,
                    f"could not load the TFLite delegate {s.tflite_delegate_path}: {exc}; "
                    f"is it installed and is its device attached?",
                    detail=str(exc),
                ) from exc
            kwargs["experimental_delegates"] = [delegate]
            self._delegate = s.tflite_delegate_path
        try:
            self._interp = mod.Interpreter(**kwargs)
            self._interp.allocate_tensors()
        except Exception as exc:
            raise classify_tflite_error(exc, "model load") from exc
        self._inputs = self._interp.get_input_details()
        self._resized = False

    def input_specs(self) -> List[TensorSpec]:
        import numpy as np

        specs = []
        for d in self._inputs:
            sig = list(d.get("shape_signature", d["shape"]))
            specs.append(TensorSpec(d["name"], [None if int(x) < 0 else int(x) for x in sig], np.dtype(d["dtype"])))
        return specs

    def prepare(self, feeds: Dict[str, Any]) -> None:
        by_name = {d["name"]: d for d in self._inputs}
        resized = False
        for name, arr in feeds.items():
            if tuple(by_name[name]["shape"]) != tuple(arr.shape):
                self._interp.resize_tensor_input(by_name[name]["index"], list(arr.shape))
                resized = True
        try:
            if resized:
                self._interp.allocate_tensors()
            for name, arr in feeds.items():
                self._interp.set_tensor(by_name[name]["index"], arr)
        except Exception as exc:
            raise classify_tflite_error(exc, "input preparation") from exc
        self._invoke = self._interp.invoke

    def run(self) -> None:
        self._invoke()

    def classify_run_error(self, exc: BaseException) -> JobFailed:
        return classify_tflite_error(exc, "inference")

    def profile_ops(self, runs: int) -> OpProfile:
        """Which delegate ran each operator (from the interpreter's node list); no times: the
        Python interpreter has no per-operator timer (benchmark_model has, on phones)."""
        from hilfarm.agent.runtimes import op_profile

        delegated = self._delegate if self._delegate != "none (builtin kernels)" else "delegate"
        ops = op_profile.tflite_node_delegation(self._interp._get_ops_details(), delegated, "CPU (builtin kernels)")
        profile = op_profile.OpProfile(
            source=f"{self._package} {self._version} interpreter node list (_get_ops_details)",
            runs=0, ops=ops,
            timing_unavailable=(f"the TFLite Python interpreter ({self._package} {self._version}) has no per-operator "
                                f"timer; per-operator times come from benchmark_model --enable_op_profiling "
                                f"(Android agents)"))
        # XNNPACK is itself a CPU delegate: only an external delegate (an accelerator) makes a
        # node left to the builtin kernels a fallback worth a warning.
        requested = [self._delegate] if self.settings.tflite_delegate_path else []
        return op_profile.finish(profile, requested)

    def describe(self) -> RuntimeDescription:
        s = self.settings
        settings: Dict[str, Any] = {
            "num_threads": s.threads if s.threads else "default",
            "xnnpack": "off" if s.tflite_disable_xnnpack else "on",
        }
        if s.tflite_delegate_path:
            settings["delegate_options"] = dict(s.tflite_delegate_options)
        return RuntimeDescription(
            name="tflite",
            version=self._version,
            package=self._package,
            execution_provider=self._delegate,
            threads=s.threads,
            settings=settings,
        )
