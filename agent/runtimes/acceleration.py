"""What accelerator a job runs on, decided before the benchmark process starts.

A device profile's ``acceleration:`` section says which execution providers (ONNX Runtime) or
which delegate (TFLite) the device is expected to run models on: a Coral the Edge TPU
delegate, a Jetson TensorRT then CUDA, a GPU host CUDA. A job that names none gets them. A
provider that this device's runtime lacks fails the job here, before anything runs, naming the
providers it has, so a Jetson whose onnxruntime was installed without GPU support is not
benchmarked on its CPU by mistake.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

from hilfarm.agent.results import Capabilities, FailureCategory, JobFailed, JobSettings
from hilfarm.agent.runtimes.onnx import provider_list


def resolve(settings: JobSettings, runtime: str, profile_name: str, acceleration: Dict[str, Any],
            capabilities: Capabilities) -> JobSettings:
    """The job's settings with the profile's expected providers or delegate filled in; JobFailed
    when the device lacks a provider the job or the profile asks for."""
    if runtime == "onnxruntime":
        expected = [p for p in acceleration.get("onnx_providers") or []]
        asked = settings.execution_provider
        providers = provider_list(asked) if asked else (provider_list(",".join(expected)) if expected else [])
        if providers:
            _check_providers(providers, capabilities, from_profile=not asked, profile_name=profile_name)
            if not asked:
                settings = dataclasses.replace(settings, execution_provider=",".join(providers))
    elif runtime == "tflite":
        delegate = acceleration.get("tflite_delegate") or {}
        if delegate and not settings.tflite_delegate_path:
            options = dict(delegate.get("options") or {})
            options.update(settings.tflite_delegate_options)
            settings = dataclasses.replace(settings, tflite_delegate_path=str(delegate["library"]),
                                           tflite_delegate_options=options)
    return settings


def _check_providers(providers: Sequence[str], capabilities: Capabilities, from_profile: bool,
                     profile_name: str) -> None:
    info = next((r for r in capabilities.runtimes if r.name == "onnxruntime"), None)
    if info is None:
        return  # the runtime itself is absent: the benchmark process says so
    have = list(info.execution_providers)
    missing = [p for p in providers if p not in have]
    if not missing:
        return
    if from_profile:
        raise JobFailed(
            FailureCategory.DEVICE_FAULT,
            f"device profile {profile_name} expects execution provider(s) {', '.join(missing)}, but onnxruntime "
            f"{info.version} ({info.package}) on this device has only {', '.join(have)}: install the build of "
            f"onnxruntime with that provider (e.g. onnxruntime-gpu for CUDA, JetPack's wheel on a Jetson), or "
            f"submit with --provider CPUExecutionProvider to measure the CPU on purpose")
    raise JobFailed(
        FailureCategory.CONFIGURATION,
        f"execution provider {', '.join(missing)} is not available on this device: onnxruntime {info.version} "
        f"({info.package}) here has {', '.join(have)}")


def expected_path(acceleration: Dict[str, Any]) -> Optional[str]:
    """A one-line summary of the profile's expectation, for logs."""
    parts = []
    if acceleration.get("onnx_providers"):
        parts.append("onnxruntime " + " > ".join(acceleration["onnx_providers"]))
    if acceleration.get("tflite_delegate"):
        d = acceleration["tflite_delegate"]
        parts.append(f"tflite delegate {d.get('name') or d['library']} ({d['library']})")
    return "; ".join(parts) or None
