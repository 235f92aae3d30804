"""The agent runs models other people uploaded: started as root it refuses, naming the way out,
before it touches the network; --allow-root is the explicit exception."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

AGENT = [sys.executable, "-m", "hilfarm.cli", "--controller", "127.0.0.1:1", "agent", "run", "--profile", "local"]


def as_root(args):
    """The command as uid 0: directly when the tests run as root (CI), else in a user namespace
    where this user is mapped to root (``unshare -r``)."""
    if os.geteuid() == 0:
        return args
    if shutil.which("unshare") is None:
        pytest.skip("not root and no unshare(1) to become root in a user namespace")
    return ["unshare", "-r", *args]


def test_the_agent_refuses_to_run_as_root(tmp_path):
    done = subprocess.run(as_root(AGENT + ["--data-dir", str(tmp_path / "agent")]), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refusing to run the agent as root" in done.stderr and "--allow-root" in done.stderr
    # It stopped before doing anything: no identity, no cache, no connection attempt logged.
    assert not (tmp_path / "agent").exists() or not any((tmp_path / "agent").iterdir())
    assert "127.0.0.1:1" not in done.stderr
