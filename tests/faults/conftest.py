"""Fault tests with real processes: controllers killed with SIGKILL and started again on the same
port and database, real agents, the CLI waiting in a subprocess, and many fake agents over real
gRPC for the replica test."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import pytest

from hilfarm.client import FarmClient

from ..controller.conftest import wait_for  # noqa: F401  (the fault tests' name for it)

# CI runs as root; the agent refuses root unless told (see `agent run --allow-root`).
ROOT_OK = ["--allow-root"] if os.geteuid() == 0 else []

HILFARM = [sys.executable, "-m", "hilfarm.cli"]


class Proc:
    """A child process whose output goes to a log file (appended across restarts)."""

    def __init__(self, args: List[str], log: Path, env: dict) -> None:
        self.args, self.log, self.env = args, log, env
        self.popen: Optional[subprocess.Popen] = None

    def start(self) -> "Proc":
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed, transactions in flight are lost."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class Controller(Proc):
    """`hilfarm controller serve`, restartable on the port it first got."""

    def __init__(self, root: Path, *, db_url: Optional[str] = None, lease_seconds: float = 3.0,
                 restart_grace: Optional[float] = None, artifacts_dir: Optional[Path] = None,
                 name: str = "controller", processes: int = 1, metrics: bool = False) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.name, self.processes = root, name, processes
        self.extra = ["--lease-seconds", str(lease_seconds), "--data-dir", str(root / name)]
        if processes != 1:
            self.extra += ["--processes", str(processes)]
        if metrics:
            self.extra += ["--metrics-bind", "127.0.0.1:0"]
        if db_url:
            self.extra += ["--db", db_url]
        if restart_grace is not None:
            self.extra += ["--restart-grace-seconds", str(restart_grace)]
        if artifacts_dir is not None:
            self.extra += ["--artifacts-dir", str(artifacts_dir)]
        self.port = 0
        env = dict(os.environ)
        env.pop("HILFARM_TOKEN", None)
        super().__init__([], root / f"{name}.log", env)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Controller":
        self.args = HILFARM + ["-v", "controller", "serve", "--bind", f"127.0.0.1:{self.port}"] + self.extra
        # The line the CLI prints once it serves: with several processes, once all of them listen.
        ready = "hilfarm controller listening on" if self.processes == 1 else "serving from"
        seen = self.text().count(ready)
        super().start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.text()
            if text.count(ready) > seen:
                self.port = int(re.findall(r"hilfarm controller listening on [\d.]+:(\d+)", text)[-1])
                return self
            assert self.popen.poll() is None, f"{self.name} exited:\n{text}"
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not start:\n{self.text()}")

    @property
    def serving_pids(self) -> List[int]:
        """The serving processes beside the main one, as the main process last named them."""
        found = re.findall(r"serving from \d+ processes \(pids ([\d, ]+)\)", self.text())
        return [int(pid) for pid in found[-1].split(", ")[1:]] if found else []

    @property
    def metrics_url(self) -> str:
        return re.findall(r"metrics on (http://[\d.:]+/metrics)", self.text())[-1]

    def client(self, **kwargs) -> FarmClient:
        return FarmClient(self.address, **kwargs)


def start_agent(root: Path, controller: Controller, name: str) -> Proc:
    env = dict(os.environ, HILFARM_CONTROLLER=controller.address)
    env.pop("HILFARM_TOKEN", None)
    agent = Proc(HILFARM + ["-v", "agent", "run", "--profile", "local", "--agent-id", name,
                            "--data-dir", str(root / name), *ROOT_OK], root / f"{name}.log", env).start()
    with controller.client() as client:
        deadline = time.monotonic() + 60
        while not any(d.agent_id == name and d.state != "offline" for d in client.list_devices()):
            assert time.monotonic() < deadline, f"agent {name} did not register:\n{agent.text()}"
            assert agent.popen.poll() is None, agent.text()
            time.sleep(0.1)
    return agent


@pytest.fixture
def processes(request):
    """Every process a test starts; stopped (SIGTERM) at teardown. The test's database is set up
    first, so that it is torn down after the processes have stopped: a PostgreSQL schema dropped
    under a live controller deadlocked with the controller's own statements."""
    for database in ("db_url", "postgres_url"):
        if database in request.fixturenames:
            request.getfixturevalue(database)
    started: List[Proc] = []
    yield started
    for proc in reversed(started):
        proc.stop()


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory) -> Path:
    """A model small enough to load at once; jobs time it for a few seconds (--min-seconds)."""
    from hilfarm import sample_models

    return sample_models.make_onnx_mlp(tmp_path_factory.mktemp("models") / "mlp.onnx", in_features=64, hidden=128)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path: Path) -> Optional[str]:
    """None (the controller's SQLite file in its data dir), then a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")
