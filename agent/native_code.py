"""Which native code a job may make the benchmark process load: only what the device's profile
allow-lists, never anything a job or an artifact brings.

A TFLite external delegate is a shared library whose constructor runs as soon as it is loaded.
A job names a delegate by the name the profile gives it (``--delegate edgetpu``) or by the exact
library the profile lists for it; the library is one installed on the device (a name the
dynamic loader resolves, or an absolute path), never a file under the agent's data directory,
where downloaded artifacts live. An ONNX Runtime execution provider is built into the installed
onnxruntime; a profile may still restrict which ones jobs may use. Anything else fails as
``configuration`` before a benchmark process starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Sequence

from hilfarm.agent.results import FailureCategory, JobFailed


def check_library_entry(name: str, library: str) -> str:
    """Why a profile's delegate entry cannot be used, or ''."""
    if not library or "\x00" in library:
        return f"delegate {name!r}: no library named"
    if "/" in library and not os.path.isabs(library):
        return f"delegate {name!r}: {library!r} must be a library name the loader finds or an absolute path"
    if ".." in Path(library).parts:
        return f"delegate {name!r}: {library!r} must not contain '..'"
    return ""


def resolve_delegate(requested: str, allowed: Dict[str, str], private_dir: Path, profile: str) -> str:
    """The library to load for a job's ``tflite_delegate_path``; JobFailed(CONFIGURATION) when the
    profile does not allow it."""
    if requested in allowed:
        library = allowed[requested]
    elif requested in allowed.values():
        library = requested
    else:
        names = ", ".join(f"{n} ({lib})" for n, lib in sorted(allowed.items())) or "none"
        raise JobFailed(
            FailureCategory.CONFIGURATION,
            f"TFLite delegate {requested!r} is not allow-listed in device profile {profile} "
            f"(allowed: {names}); a delegate is native code, so only libraries installed on the device and "
            "named in the profile's runtimes.delegates may be loaded")
    problem = check_library_entry(requested, library)
    if problem:
        raise JobFailed(FailureCategory.CONFIGURATION, f"device profile {profile}: {problem}")
    if os.path.isabs(library):
        real = Path(os.path.realpath(library))
        private = Path(os.path.realpath(private_dir))
        if real == private or private in real.parents:
            raise JobFailed(
                FailureCategory.CONFIGURATION,
                f"TFLite delegate {requested!r} resolves to {real}, inside the agent's data directory "
                f"{private}, where downloaded artifacts live; a delegate must be a library installed on the device")
    return library


def check_execution_provider(requested: str, allowed: Sequence[str], profile: str) -> None:
    if requested and allowed and requested not in allowed:
        raise JobFailed(
            FailureCategory.CONFIGURATION,
            f"execution provider {requested} is not allowed by device profile {profile} "
            f"(runtimes.execution_providers: {', '.join(allowed)})")
