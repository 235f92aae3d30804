"""ONNX Runtime: sessions with the job's threads, graph optimisation and execution providers,
and what its error messages mean."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List

from hilfarm.agent.results import FailureCategory, JobFailed, OpProfile, RuntimeInfo
from hilfarm.agent.runtimes import (
    Runtime, RuntimeDescription, TensorSpec, classify_common_error, register_runtime,
)


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
    return classify_common_error(exc, during)


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
