"""A farm of real processes: `hilfarm controller serve` and `hilfarm agent run` children."""

from __future__ import annotations

import json
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

HILFARM = [sys.executable, "-m", "hilfarm.cli"]
# The tests may run as root (containers, CI); the agent refuses that unless told.
ROOT_OK = ["--allow-root"] if os.geteuid() == 0 else []


class Proc:
    """A child process whose stderr goes to a file we can read while it runs."""

    def __init__(self, args: List[str], log: Path, env: dict):
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(args, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log_file.close()
        return self.popen.returncode


class ProcessFarm:
    def __init__(self, root: Path, token: Optional[str] = None, lease_seconds: float = 30.0):
        self.root = root
        self.token = token
        self.lease_seconds = lease_seconds
        self.env = dict(os.environ)
        self.env.pop("HILFARM_TOKEN", None)
        self.controller: Optional[Proc] = None
        self.agents: List[Proc] = []
        self.address = ""

    def cli_env(self, token: Optional[str] = "inherit") -> dict:
        env = dict(self.env, HILFARM_CONTROLLER=self.address)
        token = self.token if token == "inherit" else token
        if token:
            env["HILFARM_TOKEN"] = token
        return env

    def start_controller(self) -> None:
        args = HILFARM + ["controller", "serve", "--bind", "127.0.0.1:0",
                          "--data-dir", str(self.root / "controller"),
                          "--lease-seconds", str(self.lease_seconds)]
        env = dict(self.env, HILFARM_TOKEN=self.token) if self.token else self.env
        self.controller = Proc(args, self.root / "controller.log", env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = re.search(r"listening on ([\d.]+:\d+)", self.controller.text())
            if match:
                self.address = match.group(1)
                return
            if self.controller.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("controller did not start:\n" + self.controller.text())

    def start_agent(self, name: str, profile: str = "local", tags: tuple = ()) -> Proc:
        args = HILFARM + ["agent", "run", "--profile", profile, "--agent-id", name,
                          "--data-dir", str(self.root / name)] + ROOT_OK
        for tag in tags:
            args += ["--tag", tag]
        agent = Proc(args, self.root / f"{name}.log", self.cli_env())
        self.agents.append(agent)
        self.wait_for_device(name)
        return agent

    def client(self) -> FarmClient:
        return FarmClient(self.address, self.token)

    def wait_for_device(self, agent_id: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                if any(d.agent_id == agent_id and d.state != "offline" for d in client.list_devices()):
                    return
                time.sleep(0.1)
        logs = "\n".join(a.text() for a in self.agents)
        raise RuntimeError(f"agent {agent_id} did not register:\n{logs}")

    def cli(self, *args: str, token: Optional[str] = "inherit", timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(HILFARM + list(args), capture_output=True, text=True,
                              env=self.cli_env(token), timeout=timeout)

    def submit_json(self, *args: str) -> tuple:
        done = self.cli("submit", *args, "--wait", "--json")
        assert done.stdout, f"no JSON printed; stderr:\n{done.stderr}"
        return done.returncode, json.loads(done.stdout)

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        if self.controller:
            self.controller.stop()


@pytest.fixture
def farm(tmp_path):
    farm = ProcessFarm(tmp_path)
    farm.start_controller()
    farm.start_agent("agent-1")
    yield farm
    farm.stop()


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    from hilfarm import sample_models

    root = tmp_path_factory.mktemp("models")
    not_a_model = root / "notes.onnx"
    not_a_model.write_text("these are meeting notes, not a model\n")
    good = sample_models.make_onnx_mlp(root / "mlp.onnx", in_features=64, hidden=128, layers=2)
    truncated = root / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    # Well formed on the outside (the controller stores it), broken inside: its graph does not parse.
    corrupt = root / "corrupt.onnx"
    garbage = bytes(range(256)) * 4
    corrupt.write_bytes(b"\x08\x08" + b"\x3a" + bytes([0x80 | (len(garbage) & 0x7F), len(garbage) >> 7]) + garbage)
    return {
        "mlp": good,
        "dynamic": sample_models.make_onnx_mlp(root / "dynamic.onnx", in_features=32, hidden=64,
                                               dynamic_batch=True),
        "unsupported": sample_models.make_onnx_unsupported_op(root / "fancy.onnx"),
        "not_a_model": not_a_model,
        "truncated": truncated,
        "corrupt": corrupt,
    }


@pytest.fixture
def make_farm(tmp_path):
    """Builds farms with custom settings (token, lease time); stops them after the test."""
    made: List[ProcessFarm] = []

    def make(**kwargs) -> ProcessFarm:
        farm = ProcessFarm(tmp_path / f"farm{len(made)}", **kwargs)
        farm.root.mkdir(parents=True)
        made.append(farm)
        return farm

    yield make
    for farm in made:
        farm.stop()
