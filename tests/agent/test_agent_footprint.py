"""The agent process stays light: runtimes are imported only in child processes (the probe at
start and each job's benchmark process), and a runtime that kills its probe is reported absent
while the others are still found."""

from __future__ import annotations

import subprocess
import sys

from hilfarm.agent.capabilities import probe_capabilities_in_child

from .conftest import PLUGIN_DIR


def test_the_agent_role_imports_no_runtime_and_no_numpy():
    code = ("import sys, hilfarm.cli, hilfarm.agent.service; "
            "print(sorted(m for m in ('numpy', 'onnxruntime', 'ai_edge_litert', 'tflite_runtime', 'psutil', "
            "'sqlalchemy', 'paramiko', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_runtime_that_aborts_its_probe_is_absent_and_the_others_are_found(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(PLUGIN_DIR))
    caps = probe_capabilities_in_child(["null", "aborts-on-probe"], plugins=["hilfarm_abort_probe"])
    assert [r.name for r in caps.runtimes] == ["null"]
    assert "signal 6" in caps.absent["aborts-on-probe"]
    assert caps.cpu_cores > 0 and caps.machine


def test_a_hilfarm_folder_in_the_working_directory_does_not_shadow_the_probe(tmp_path, monkeypatch):
    # An agent started in a checkout (or any folder with a `hilfarm/` in it) must probe the
    # installed package: `python -m` would put that folder first on the child's sys.path.
    (tmp_path / "hilfarm").mkdir()
    (tmp_path / "hilfarm" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    caps = probe_capabilities_in_child(["null"])
    assert [r.name for r in caps.runtimes] == ["null"], caps.absent
