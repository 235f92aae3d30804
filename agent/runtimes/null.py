"""The null runtime: does nothing, so a run measures the harness's own per-inference overhead."""

from __future__ import annotations

from typing import Any, Dict, List

from hilfarm.agent.results import RuntimeInfo
from hilfarm.agent.runtimes import Runtime, RuntimeDescription, TensorSpec, register_runtime


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
