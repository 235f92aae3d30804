"""`hilfarm demo` on a machine whose Python has no TFLite interpreter: the default demo runs the
model it can and says why it left the other out; a TFLite model given by name stops at once
with exit 2 and says what is missing, instead of waiting for a runtime that will never come."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HILFARM = [sys.executable, "-m", "hilfarm.cli"]


@pytest.fixture
def without_tflite(tmp_path: Path) -> dict:
    """An environment in which neither TFLite interpreter imports, as on a machine that has
    neither package: the agent's runtime probe (a child process) inherits it."""
    shim = tmp_path / "no-tflite"
    for package in ("ai_edge_litert", "tflite_runtime"):
        (shim / package).mkdir(parents=True)
        (shim / package / "__init__.py").write_text(f"raise ImportError('no module named {package}')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shim), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.pop("HILFARM_TOKEN", None)
    return env


def test_the_default_demo_leaves_out_the_model_this_machine_cannot_run(tmp_path, without_tflite):
    done = subprocess.run(HILFARM + ["demo", "--data-dir", str(tmp_path / "farm"), "--runs", "20",
                                     "--min-seconds", "0.05", "--warmup-seconds", "0.05"],
                          env=without_tflite, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "left out hilfarm-demo-mlp.tflite: this machine's agent has no tflite runtime" in done.stderr
    assert "hilfarm-demo-mlp.onnx" in done.stdout and "succeeded" in done.stdout
    assert "hilfarm-demo-mlp.tflite" not in done.stdout


def test_a_tflite_model_without_a_tflite_runtime_stops_at_once_with_exit_2(tmp_path, without_tflite):
    from hilfarm.sample_models import make_tflite_mlp

    model = make_tflite_mlp(tmp_path / "m.tflite")
    done = subprocess.run(HILFARM + ["demo", "--data-dir", str(tmp_path / "farm"), str(model)],
                          env=without_tflite, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no device can run this" in done.stderr
    assert "no agent of profile" in done.stderr and "offers runtime tflite for m.tflite" in done.stderr
    assert "install it" in done.stderr
