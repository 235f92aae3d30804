"""Inference runtimes behind one small protocol, registered by name.

The harness owns the clock; a runtime only loads a model, describes its inputs, takes
prepared inputs, and answers ``run()``. ``run()`` is the only thing inside the timed region,
so implementations keep it to the bare library call.

Runtimes are registered with ``@register_runtime("name")``. Extra modules named in
``HILFARM_RUNTIME_PLUGINS`` (comma separated) are imported by ``load_plugins`` so that they can
register more (tests use this for runtimes that crash or hang on purpose).

Each runtime turns its library's errors into ``JobFailed`` with a category, because only the
adapter knows what the library's messages mean.
"""

from __future__ import annotations

import abc
import importlib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

from hilfarm.agent.results import FailureCategory, JobFailed, JobSettings, OpProfile, RuntimeInfo

PLUGINS_ENV = "HILFARM_RUNTIME_PLUGINS"

# A dimension is an int when fixed, or a name / None when the model leaves it dynamic.
Dim = Union[int, str, None]


@dataclass
class TensorSpec:
    name: str
    shape: List[Dim]
    dtype: Any  # a numpy dtype


@dataclass
class RuntimeDescription:
    """What a result records about how the runtime was set up."""

    name: str
    version: str
    package: str = ""
    execution_provider: str = ""
    threads: int = 0
    settings: Dict[str, Any] = field(default_factory=dict)

    def settings_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(self.settings.items()))


class Runtime(abc.ABC):
    """One inference runtime. Construct with the job's settings, then load → prepare → run."""

    name: str = ""
    formats: Tuple[str, ...] = ()

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> RuntimeInfo:
        """Import the library and say what it is. Raises when it is not usable here."""

    @abc.abstractmethod
    def load(self, model_path: str) -> None:
        """Load the model; raise JobFailed with a category when the model or setup is at fault."""

    @abc.abstractmethod
    def input_specs(self) -> List[TensorSpec]:
        ...

    @abc.abstractmethod
    def prepare(self, feeds: Dict[str, Any]) -> None:
        """Take the input arrays (outside the timed region)."""

    @abc.abstractmethod
    def run(self) -> None:
        """One inference. This is the only call inside the timed region."""

    @abc.abstractmethod
    def describe(self) -> RuntimeDescription:
        ...

    def classify_run_error(self, exc: BaseException) -> JobFailed:
        """Map an exception raised by run() to a failure; runtimes refine this."""
        return _classify_common(exc, "inference")

    def profile_ops(self, runs: int) -> "OpProfile":
        """Per-operator profile over ``runs`` inferences, after the timed phase (see
        agent/runtimes/op_profile.py). Runtimes that can profile override this."""
        from hilfarm.agent.results import OpProfile

        return OpProfile(source=self.name, timing_unavailable=f"runtime {self.name} has no per-operator profiler")


_REGISTRY: Dict[str, Type[Runtime]] = {}


def register_runtime(name: str, formats: Sequence[str] = ()) -> Callable[[Type[Runtime]], Type[Runtime]]:
    def deco(cls: Type[Runtime]) -> Type[Runtime]:
        cls.name = name
        cls.formats = tuple(formats)
        _REGISTRY[name] = cls
        return cls

    return deco


def registered_runtimes() -> Dict[str, Type[Runtime]]:
    return dict(_REGISTRY)


def load_plugins(modules: Optional[Sequence[str]] = None) -> None:
    """Import runtime plugin modules (default: those named in $HILFARM_RUNTIME_PLUGINS)."""
    if modules is None:
        modules = [m for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    for mod in modules:
        importlib.import_module(mod.strip())


def get_runtime(name: str) -> Type[Runtime]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise JobFailed(
            FailureCategory.CONFIGURATION,
            f"unknown runtime {name!r}; this agent knows {', '.join(sorted(_REGISTRY))}",
        ) from None


def runtime_for(settings: JobSettings, model_format: str) -> Type[Runtime]:
    """The runtime the job asked for, else the one that reads the model's format."""
    if settings.runtime:
        return get_runtime(settings.runtime)
    for cls in _REGISTRY.values():
        if model_format in cls.formats:
            return cls
    raise JobFailed(
        FailureCategory.CONFIGURATION,
        f"no runtime reads model format {model_format!r}; set JobSettings.runtime",
    )


_OOM_PATTERNS = ("bad_alloc", "Failed to allocate", "out of memory", "Cannot allocate memory")


def _classify_common(exc: BaseException, during: str) -> JobFailed:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or any(p in text for p in _OOM_PATTERNS):
        # The limit itself is named by the harness, which knows it.
        m = re.search(r"Failed to allocate memory for requested buffer of size \d+", text)
        what = m.group(0) if m else text.splitlines()[0][:300]
        return JobFailed(FailureCategory.OUT_OF_MEMORY, f"ran out of memory during {during} ({what})", detail=text)
    return JobFailed(
        FailureCategory.RUNTIME_CRASH,
        f"the runtime failed during {during}: {text.splitlines()[0][:300] if text else type(exc).__name__}",
        detail=text,
    )


# ---------------------------------------------------------------- null


@register_runtime("null", formats=())
class NullRuntime(Runtime):
    """Does nothing, so a run measures the harness's own per-inference overhead."""

    @classmethod
    def probe(cls) -> RuntimeInfo:
        from hilfarm import __version__

        return RuntimeInfo(name="null", version=__version__, package="hilfarm")

    def load(self, model_path: str) -> None:
        pass

    def input_specs(self) -> List[TensorSpec]:
        return []

    def prepare(self, feeds: Dict[str, Any]) -> None:
        pass

    def run(self) -> None:
        pass

    def describe(self) -> RuntimeDescription:
        info = self.probe()
        return RuntimeDescription(name="null", version=info.version, package=info.package)


# ---------------------------------------------------------------- ONNX Runtime

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}

_ORT_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def classify_ort_error(exc: BaseException, during: str) -> JobFailed:
    """Turn an ONNX Runtime exception into a categorised failure (messages as of ORT 1.16-1.2x)."""
    text = str(exc)
    m = re.search(r"Could not find an implementation for (\S+?)\((\d+)\)", text)
    if m:
        return JobFailed(
            FailureCategory.UNSUPPORTED_OP,
            f"ONNX Runtime has no kernel for op {m.group(1)} (opset {m.group(2)}) with the types "
            f"this model uses; try another execution provider or export the model differently",
            detail=text,
        )
    m = re.search(r"Fatal error: (\S+?)\((-?\d+)\) is not a registered function/op", text) or re.search(
        r"No Op registered for (\S+) with domain_version of (\d+)", text
    )
    if m:
        return JobFailed(
            FailureCategory.UNSUPPORTED_OP,
            f"ONNX Runtime does not know op {m.group(1)}; the model needs a custom op library "
            f"or a different export",
            detail=text,
        )
    m = re.search(r"Unrecognized attribute|unknown op domain|Opset \d+ is under development|"
                  r"Unsupported model IR version|opset \d+ .* not supported", text, re.I)
    if m:
        return JobFailed(
            FailureCategory.UNSUPPORTED_OP,
            f"this ONNX Runtime cannot run the model: {text.splitlines()[0]}",
            detail=text,
        )
    if "INVALID_PROTOBUF" in text or "Protobuf parsing failed" in text or "Failed to load model" in text:
        return JobFailed(
            FailureCategory.ARTIFACT_INVALID,
            "the file is not a readable ONNX model (protobuf parsing failed; truncated or not ONNX)",
            detail=text,
        )
    if "INVALID_GRAPH" in text or "This is an invalid model" in text:
        return JobFailed(FailureCategory.ARTIFACT_INVALID, f"the ONNX graph is invalid: {text}", detail=text)
    if during == "inference" and "INVALID_ARGUMENT" in text:
        return JobFailed(FailureCategory.INPUT_MISMATCH, f"the inputs do not fit the model: {text}", detail=text)
    return _classify_common(exc, during)


def provider_list(text: str) -> List[str]:
    """``--provider`` as ONNX Runtime's priority list; CPU last unless named."""
    providers = [p.strip() for p in (text or "").split(",") if p.strip()] or ["CPUExecutionProvider"]
    if len(providers) > 1 and "CPUExecutionProvider" not in providers:
        providers.append("CPUExecutionProvider")
    return providers


@register_runtime("onnxruntime", formats=("onnx",))
class OnnxRuntime(Runtime):
    @classmethod
    def probe(cls) -> RuntimeInfo:
        import onnxruntime as ort

        return RuntimeInfo(
            name="onnxruntime",
            version=ort.__version__,
            package="onnxruntime",
            execution_providers=list(ort.get_available_providers()),
        )

    def load(self, model_path: str) -> None:
        import onnxruntime as ort

        self._ort = ort
        s = self.settings
        opts = ort.SessionOptions()
        if s.threads > 0:
            opts.intra_op_num_threads = s.threads
        level_name = (s.graph_optimization or "all").lower()
        if level_name not in _ORT_OPT_LEVELS:
            raise JobFailed(
                FailureCategory.CONFIGURATION,
                f"unknown graph optimisation level {s.graph_optimization!r}; "
                f"use one of {', '.join(_ORT_OPT_LEVELS)}",
            )
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_OPT_LEVELS[level_name])
        # One provider, or a priority list "TensorrtExecutionProvider,CUDAExecutionProvider":
        # ONNX Runtime gives each node to the first provider in the list that can run it.
        providers = provider_list(s.execution_provider)
        available = ort.get_available_providers()
        missing = [ep for ep in providers if ep not in available]
        if missing:
            raise JobFailed(
                FailureCategory.CONFIGURATION,
                f"execution provider {', '.join(missing)} is not available in onnxruntime {ort.__version__} on this "
                f"device (available: {', '.join(available)})",
            )
        self._level = level_name
        self._opts = opts
        self._model_path = model_path
        self._providers = providers
        try:
            self._sess = ort.InferenceSession(model_path, sess_options=opts, providers=providers)
        except Exception as exc:
            raise classify_ort_error(exc, "model load") from exc
        self._ep = ", ".join(self._sess.get_providers())
        self._feeds: Dict[str, Any] = {}

    def input_specs(self) -> List[TensorSpec]:
        import numpy as np

        specs = []
        for arg in self._sess.get_inputs():
            if arg.type not in _ORT_DTYPES:
                raise JobFailed(
                    FailureCategory.INPUT_MISMATCH,
                    f"input {arg.name!r} has type {arg.type}, which the harness cannot generate",
                )
            specs.append(TensorSpec(arg.name, list(arg.shape), np.dtype(_ORT_DTYPES[arg.type])))
        return specs

    def prepare(self, feeds: Dict[str, Any]) -> None:
        self._feeds = feeds

    def run(self) -> None:
        self._sess.run(None, self._feeds)

    def classify_run_error(self, exc: BaseException) -> JobFailed:
        return classify_ort_error(exc, "inference")

    def profile_ops(self, runs: int) -> OpProfile:
        """A second session with the same options and providers plus ONNX Runtime's profiler;
        ``runs`` + 1 inferences, the first dropped as warm-up."""
        import tempfile

        from hilfarm.agent.runtimes import op_profile

        ort = self._ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self._opts.intra_op_num_threads
        opts.graph_optimization_level = self._opts.graph_optimization_level
        opts.enable_profiling = True
        with tempfile.TemporaryDirectory(prefix="hilfarm-ort-profile-") as tmp:
            opts.profile_file_prefix = os.path.join(tmp, "ort-profile")
            sess = ort.InferenceSession(self._model_path, sess_options=opts, providers=self._providers)
            for _ in range(runs + 1):
                sess.run(None, self._feeds)
            with open(sess.end_profiling()) as f:
                trace = f.read()
        ops, profiled = op_profile.parse_ort_trace(trace)
        profile = op_profile.OpProfile(
            source=f"onnxruntime {ort.__version__} profiler (SessionOptions.enable_profiling), a second session "
                   f"with the job's options after the timed phase; first profiled run dropped",
            runs=profiled, ops=ops, trace_format="onnxruntime-chrome-trace-json", trace=trace)
        return op_profile.finish(profile, self._providers)

    def describe(self) -> RuntimeDescription:
        threads = self.settings.threads or 0
        return RuntimeDescription(
            name="onnxruntime",
            version=self._ort.__version__,
            package="onnxruntime",
            execution_provider=self._ep,
            threads=threads,
            settings={
                "graph_optimization": self._level,
                "intra_op_num_threads": threads if threads else "default",
                "enable_cpu_mem_arena": self._opts.enable_cpu_mem_arena,
                "enable_mem_pattern": self._opts.enable_mem_pattern,
            },
        )


# ---------------------------------------------------------------- TFLite


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
    return _classify_common(exc, during)


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
