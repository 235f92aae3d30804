"""A controller that serves from several processes (``controller serve --processes N``).

One Python process serves at most one core's worth of calls: its event loop and its database
threads take turns at the interpreter lock. At a thousand agents on PostgreSQL the controller's
one process was that busy (benchmarks/SCALE.md), half of it inside gRPC's own code, so no
saving in our code would double what it serves. More processes on the same port do: the kernel
spreads the connections among them (SO_REUSEPORT, which the controller's servers already use).

This needs PostgreSQL. Its processes share everything through the database, and each hears the
others' changes (LISTEN/NOTIFY, notifications.py), as replicas do: a job submitted through one
process wakes the agents long-polling on another. SQLite's change events stay in the process
that made them, and one process writes to it.

The main process is a whole controller: it migrates the schema, keeps the restart grace, reaps
leases, drives suites and nightly runs, and serves /metrics, whose counters and histograms are
the sum of all the processes (metrics.share_across_processes). The others only serve calls
(Controller(serving_only=True)). Each is started with the main process's settings, written to
its standard input (secrets stay off command lines and out of the environment), says ``ready``
on its standard output once it listens, and stops when the main process is gone. The main
process starts another in place of one that exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from hilfarm.transport import ServerTls

from .app import ControllerConfig
from .database import parse_database_url
from .errors import CannotStart
from .metrics import share_across_processes

log = logging.getLogger("hilfarm.controller.processes")

MAX_PROCESSES = 64
READY = "ready"
START_SECONDS = 60.0  # how long a serving process may take to listen
# A serving process that exits is started again after this long, doubled each time one exits
# within RESTART_BACKOFF_MAX_SECONDS of its start (a process that cannot start, say), up to that.
RESTART_BACKOFF_SECONDS = 1.0
RESTART_BACKOFF_MAX_SECONDS = 30.0


def processes_problem(count: int, db_url: Optional[str]) -> Optional[str]:
    """Why a controller on ``db_url`` (None: the default SQLite file) cannot serve from
    ``count`` processes, or None when it can."""
    if count < 1 or count > MAX_PROCESSES:
        return f"{count} processes: a controller serves from 1 to {MAX_PROCESSES}"
    if count > 1 and (db_url is None or _backend(db_url) == "sqlite"):
        return (f"serving from {count} processes needs PostgreSQL (--db postgresql+psycopg://...): SQLite is "
                "written by one process, whose changes the others would not hear")
    return None


def _backend(db_url: str) -> Optional[str]:
    try:
        return parse_database_url(db_url).get_backend_name()
    except CannotStart:
        return None  # the controller names what is wrong with the URL when it opens it


@contextlib.contextmanager
def shared_metrics() -> Iterator[Path]:
    """A new directory where this process and its serving processes write their counters and
    histograms (share_across_processes: call before the controller is made); removed at the end."""
    directory = Path(tempfile.mkdtemp(prefix="hilfarm-metrics-"))
    try:
        share_across_processes(directory)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def settings_for_serving(config: ControllerConfig, *, event_loop: str, address: str) -> Dict[str, Any]:
    """What a serving process is started with: the main process's settings, as JSON, to serve
    on ``address`` (the main process's HOST:PORT). The nightly suites are the main process's
    alone."""
    return {
        "bind": address,
        "main_pid": os.getpid(),
        "controller": {
            "db_url": config.db_url,
            "data_dir": None if config.data_dir is None else str(config.data_dir),
            "artifacts_dir": None if config.artifacts_dir is None else str(config.artifacts_dir),
            "token": config.token,
            "max_artifact_bytes": config.max_artifact_bytes,
            "lease_seconds": config.lease_seconds,
            "heartbeat_interval": config.heartbeat_interval,
            "restart_grace": config.restart_grace,
            "max_attempts": config.max_attempts,
            "db_workers": config.db_workers,
            "remote_write_url": config.remote_write_url,
            "tls": None if config.tls is None else [config.tls.cert, config.tls.key, config.tls.client_ca],
            "insecure": config.insecure,
            "max_jobs_per_submit": config.max_jobs_per_submit,
            "max_queued_jobs": config.max_queued_jobs,
            "metrics_dir": None if config.metrics_dir is None else str(config.metrics_dir),
            "event_loop": event_loop,
        },
    }


@dataclass(frozen=True)
class ServingSettings:
    """A serving process's settings, read back (``settings_for_serving``)."""

    bind: str
    main_pid: int
    controller: Dict[str, Any]  # server.Controller's keyword arguments

    @classmethod
    def read(cls, text: str) -> "ServingSettings":
        data = json.loads(text)
        kwargs = dict(data["controller"])
        for key in ("data_dir", "artifacts_dir", "metrics_dir"):
            if kwargs.get(key) is not None:
                kwargs[key] = Path(kwargs[key])
        if kwargs.get("tls") is not None:
            kwargs["tls"] = ServerTls(*kwargs["tls"])
        kwargs["serving_only"] = True
        return cls(bind=data["bind"], main_pid=int(data["main_pid"]), controller=kwargs)

    def main_process_alive(self) -> bool:
        """False once the main process is gone (this process was handed to another parent)."""
        return os.getppid() == self.main_pid


class _Serving:
    """One serving process and when it was started."""

    def __init__(self, command: Sequence[str], settings: str) -> None:
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.popen.stdin is not None
        self.popen.stdin.write(settings.encode())
        self.popen.stdin.close()

    def wait_ready(self, deadline: float) -> Optional[str]:
        """None once the process listens; else why it did not."""
        assert self.popen.stdout is not None
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.popen.stdout], [], [], 0.2)
            if readable:
                line = self.popen.stdout.readline()
                if line.strip() == READY.encode():
                    return None
                if not line:  # its end of the pipe closed: it exited
                    break
        code = self.popen.poll()
        if code is None:
            return f"it did not listen within {START_SECONDS:.0f} s"
        return f"it exited with code {code}"

    def close_pipe(self) -> None:
        """Once it has exited: the end of its standard output this process holds."""
        if self.popen.stdout is not None:
            self.popen.stdout.close()


class ServingProcesses:
    """The processes that serve a controller's port beside its main process. Made and looked
    after by the main process (``controller serve --processes``)."""

    def __init__(self, count: int, command: Sequence[str], settings: Dict[str, Any]) -> None:
        """``count`` processes, each started as ``command`` (which serves with the settings it
        reads from its standard input: ``hilfarm controller serve-process``)."""
        self.count = count
        self.command = list(command)
        self._settings = json.dumps(settings)
        self._serving: List[_Serving] = []
        self._backoff = RESTART_BACKOFF_SECONDS
        self._next_start = 0.0

    @property
    def pids(self) -> List[int]:
        return [s.popen.pid for s in self._serving if s.popen.poll() is None]

    def start(self) -> None:
        """Start every process and wait until each listens. CannotStart, with every one of
        them stopped, when one does not (its own error is on the standard error)."""
        self._serving = [_Serving(self.command, self._settings) for _ in range(self.count)]
        deadline = time.monotonic() + START_SECONDS
        for number, serving in enumerate(self._serving, start=2):
            problem = serving.wait_ready(deadline)
            if problem is not None:
                self.stop(grace=2.0)
                raise CannotStart(f"serving process {number} of {self.count + 1} did not start: {problem} "
                                  "(its error, if it wrote one, is above)")

    def look_after(self) -> bool:
        """Start another process in place of each one that exited (not more often than the
        backoff allows). Called every half second while the controller serves; always True."""
        now = time.monotonic()
        for index, serving in enumerate(self._serving):
            code = serving.popen.poll()
            if code is None or now < self._next_start:
                continue
            lived = now - serving.started_at
            log.warning("serving process %d (pid %d) exited with code %s after %.0f s; starting another",
                        index + 2, serving.popen.pid, code, lived)
            self._backoff = (RESTART_BACKOFF_SECONDS if lived > RESTART_BACKOFF_MAX_SECONDS
                             else min(self._backoff * 2, RESTART_BACKOFF_MAX_SECONDS))
            self._next_start = now + self._backoff
            serving.close_pipe()
            self._serving[index] = _Serving(self.command, self._settings)
        return True

    def terminate(self) -> None:
        """Ask every process to stop (SIGTERM: each finishes its calls for the grace period)."""
        for serving in self._serving:
            if serving.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    serving.popen.send_signal(signal.SIGTERM)

    def stop(self, grace: float) -> None:
        """Stop every process: SIGTERM, then SIGKILL for one still running ``grace`` + 15 s later."""
        self.terminate()
        deadline = time.monotonic() + grace + 15
        for serving in self._serving:
            try:
                serving.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("serving process pid %d did not stop; killing it", serving.popen.pid)
                serving.popen.kill()
                serving.popen.wait()
            serving.close_pipe()
