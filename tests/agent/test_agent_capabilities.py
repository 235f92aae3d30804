"""Capability probe: what runtimes this machine has, without crashing on broken ones."""

from __future__ import annotations

import platform

from hilfarm.agent.capabilities import probe_capabilities


def test_probe_reports_onnxruntime_and_the_machine():
    import onnxruntime

    caps = probe_capabilities()
    by_name = {r.name: r for r in caps.runtimes}
    ort = by_name["onnxruntime"]
    assert ort.version == onnxruntime.__version__ and ort.package == "onnxruntime"
    assert "CPUExecutionProvider" in ort.execution_providers
    assert "null" in by_name
    assert caps.cpu_cores >= 1 and caps.memory_bytes > 0
    assert caps.machine == platform.machine() and caps.python_version == platform.python_version()
    assert caps.kernel == platform.release() and caps.os


def test_runtime_that_fails_to_import_is_absent_with_reason(plugins):
    caps = probe_capabilities()
    assert "test-broken-import" not in {r.name for r in caps.runtimes}
    assert "_ARRAY_API not found" in caps.absent["test-broken-import"]


def test_probe_limited_to_allowed_runtimes():
    caps = probe_capabilities(allowed=["null"])
    assert [r.name for r in caps.runtimes] == ["null"]
