"""Every hilfarm process turns gRPC's fork handlers off before grpc is imported (hilfarm/__init__.py):
its processes fork only to exec, and the handlers can hang a fork made while a channel closes."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "import os, hilfarm.agent.service, grpc; print(os.environ.get('GRPC_ENABLE_FORK_SUPPORT'))"


def probe(env: dict) -> str:
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()


def test_a_hilfarm_process_runs_with_grpc_fork_handlers_off():
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    assert probe(env) == "0"


def test_a_choice_made_by_whoever_started_the_process_is_kept():
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    assert probe(dict(env, GRPC_ENABLE_FORK_SUPPORT="1")) == "1"
