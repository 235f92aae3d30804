"""Inference runtimes behind one small protocol, registered by name.

The harness owns the clock; a runtime only loads a model, describes its inputs, takes
prepared inputs, and answers ``run()``. ``run()`` is the only thing inside the timed region,
so implementations keep it to the bare library call.

Runtimes are registered with ``@register_runtime("name")``. Extra modules named in
``HILFARM_RUNTIME_PLUGINS`` (comma separated) are imported by ``load_plugins`` so that they can
register more (tests use this for runtimes that crash or hang on purpose).

Each runtime turns its library's errors into ``JobFailed`` with a category, because only the
adapter knows what the library's messages mean.

This module is the protocol and the registry; each built-in runtime is a module of its own
(null.py, onnx.py, tflite.py), and op_profile.py and acceleration.py hold what the runtimes
share for per-operator profiles and for choosing execution providers and delegates.
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
        return classify_common_error(exc, "inference")

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


def classify_common_error(exc: BaseException, during: str) -> JobFailed:
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


# The built-in runtimes register themselves on import, in this order (runtime_for picks the
# first that reads a format); imported last because they use the protocol above.
from hilfarm.agent.runtimes import null, onnx, tflite  # noqa: E402,F401
