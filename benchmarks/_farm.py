"""Starting farm processes for the benchmarks (the same way a user does)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

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


class PostgresServerCpu:
    """CPU time of a PostgreSQL server running on this machine: its postmaster's own, its live
    children's (one backend per connection, and the background workers) and that of the
    children that ended (the postmaster collects theirs when it reaps them), from /proc. A
    controller's work is split between its own process and these, so a benchmark that counted
    the controller alone would hide what each job costs the database.

    ``seconds()`` is None when the server is not on this machine (or its /proc is not readable)."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                backend = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
                # Read while the connection is open: once it closes its backend exits, and a
                # read after that found no process now and then, so no server CPU was counted.
                stat = proc_stat(backend)
        finally:
            engine.dispose()
        self.postmaster = int(stat[1]) if stat is not None else None  # a backend's parent

    def seconds(self) -> Optional[float]:
        if self.postmaster is None:
            return None
        own = proc_stat(self.postmaster)
        if own is None:
            return None
        ticks = int(own[11]) + int(own[12]) + int(own[13]) + int(own[14])  # utime stime cutime cstime
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                stat = proc_stat(int(entry.name))
                if stat is not None and int(stat[1]) == self.postmaster:
                    ticks += int(stat[11]) + int(stat[12])
        return ticks / os.sysconf("SC_CLK_TCK")


# The PostgreSQL server the benchmarks make their databases on, unless told another.
DEFAULT_POSTGRES_URL = os.environ.get("HILFARM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def proc_stat(pid: int) -> Optional[List[str]]:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...; utime and stime
    at 11 and 12), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
