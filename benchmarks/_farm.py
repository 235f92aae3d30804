"""Starting farm processes for the benchmarks (the same way a user does)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

HILFARM = [sys.executable, "-m", "hilfarm.cli"]


class FarmProcess:
    """`hilfarm up` or `hilfarm controller serve` as a child process on a free port."""

    def __init__(self, command: List[str], data_dir: Path):
        self._start(HILFARM + command + ["--data-dir", str(data_dir)], data_dir)

    def _start(self, argv: List[str], data_dir: Path) -> None:
        self.log = data_dir / "farm.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log.open("wb")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ))
        self.address = self._wait_for_address()

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + 60
        pattern = re.compile(r"(?:listening on|controller) (\d+\.\d+\.\d+\.\d+:\d+)")
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            match = pattern.search(text)
            if match and ("hilfarm is up" in text or "listening on" in text):
                return match.group(1)
            if self.popen.poll() is not None:
                raise RuntimeError("farm exited:\n" + text)
            time.sleep(0.05)
        raise TimeoutError("farm did not start:\n" + self.log.read_text())

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
        self._log.close()


class FloorProcess(FarmProcess):
    """benchmarks/grpc_floor.py (the farm's gRPC services doing nothing) as a child process."""

    def __init__(self, data_dir: Path):
        self._start([sys.executable, str(Path(__file__).with_name("grpc_floor.py")), "--bind", "127.0.0.1:0"],
                    data_dir)


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"hilfarm-bench-{prefix}-"))
