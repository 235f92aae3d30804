"""A real Prometheus server for the observability tests, started as a child process on loopback
with a temporary config and storage directory (never the system service)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest
import yaml


def require(tool: str) -> str:
    """Path of ``tool``; skips the test without it (fails in CI, which must have it:
    scripts/ensure-prometheus.sh installs it)."""
    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} is not installed (bash scripts/ensure-prometheus.sh installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, workdir: Path, *, scrape_targets: Sequence[str] = (), rule_files: Sequence[Path] = (),
                 remote_write_receiver: bool = False, scrape_interval: str = "1s") -> None:
        self.binary = require("prometheus")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config: Dict[str, Any] = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [],
        }
        if scrape_targets:
            config["scrape_configs"].append({
                "job_name": "hilfarm-controller",
                "scrape_interval": scrape_interval,
                "static_configs": [{"targets": list(scrape_targets)}],
            })
        if rule_files:
            config["rule_files"] = [str(p) for p in rule_files]
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.args = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        if remote_write_receiver:
            self.args.append("--web.enable-remote-write-receiver")
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = workdir / "prometheus.log"

    def start(self, timeout: float = 30.0) -> "Prometheus":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"prometheus was not ready within {timeout:.0f} s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "Prometheus":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- HTTP API

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                doc = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise AssertionError(f"Prometheus refused {path} {params}: HTTP {exc.code} {body}") from None
        assert doc.get("status") == "success", doc
        return doc["data"]

    def query(self, expr: str, at: Optional[float] = None) -> List[Dict[str, Any]]:
        params: Dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> List[Dict[str, Any]]:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step)["result"]

    def wait_for(self, expr: str, timeout: float = 30.0, predicate=lambda r: bool(r)) -> List[Dict[str, Any]]:
        deadline = time.monotonic() + timeout
        result: List[Dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.25)
        raise AssertionError(f"{expr!r} did not return the expected series within {timeout:.0f} s; last: {result}")


HILFARM = [sys.executable, "-m", "hilfarm.cli"]


class Proc:
    """A hilfarm child process whose output goes to a file read while it runs."""

    def __init__(self, args: List[str], log: Path, env: Optional[dict] = None) -> None:
        self.log = log
        self._file = log.open("wb")
        env = dict(os.environ if env is None else env)
        env.pop("HILFARM_TOKEN", None)
        env.pop("HILFARM_CONTROLLER", None)
        self.popen = subprocess.Popen(args, stdout=self._file, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 30.0) -> str:
        """The first group of ``pattern`` once it appears in the output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text())
            if m:
                return m.group(1)
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{pattern!r} did not appear:\n{self.text()[-3000:]}")

    def stop(self, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._file.close()
        return self.popen.returncode
