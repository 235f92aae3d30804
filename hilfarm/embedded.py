"""The embedded farm: a controller and one local agent in this process (`hilfarm up`, `demo`).

The agent still dials the controller over real gRPC on loopback and still runs every job
in a fresh child process, so the embedded farm measures exactly what a distributed one does.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from hilfarm.client import FarmClient
from hilfarm.paths import default_data_dir
from hilfarm.transport import split_host_port

if TYPE_CHECKING:
    from hilfarm.controller.nightly import NightlyRunner

log = logging.getLogger("hilfarm.embedded")


class EmbeddedFarm:
    """Controller + local agent; use as a context manager."""

    def __init__(
        self,
        *,
        data_dir: Optional[Path] = None,
        bind: str = "127.0.0.1:0",
        db_url: Optional[str] = None,
        profile: Optional[str] = "local",
        token: Optional[str] = None,
        with_agent: bool = True,
        metrics_bind: Optional[str] = None,
        nightly: Sequence[Path] = (),
        nightly_clock: Optional[Callable[[], float]] = None,
    ):
        """``nightly``: suite files the controller runs on the cron schedule in each (as
        ``controller serve --nightly``); ``nightly_clock`` replaces the time those schedules
        are read against (tests move it). A suite file that is wrong (a missing or malformed
        schedule included) raises hilfarm.suite_files.SuiteError from ``start`` before anything
        listens."""
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.bind = bind
        self.db_url = db_url
        self.profile = profile
        self.token = token
        self.with_agent = with_agent
        self.metrics_bind = metrics_bind
        self.nightly = [Path(p) for p in nightly]
        self.nightly_clock = nightly_clock
        self.address = ""
        self.metrics_url = ""  # http://HOST:PORT/metrics once started with metrics_bind
        self._controller = None
        self._agent_thread: Optional[threading.Thread] = None
        self._agent_stop = threading.Event()
        self._agent_error: Optional[BaseException] = None

    def start(self, ready_timeout: float = 30.0) -> "EmbeddedFarm":
        # Imported here: `hilfarm agent run` on a device must not need the controller extra.
        from hilfarm.controller.server import Controller

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A wrong nightly suite file raises SuiteError here, before anything listens.
        self._controller = Controller(
            db_url=self.db_url, data_dir=self.data_dir / "controller", token=self.token,
            metrics_bind=self.metrics_bind, nightly=self.nightly, nightly_clock=self.nightly_clock,
        )
        port = self._controller.start(self.bind)
        host = split_host_port(self.bind)[0] or "127.0.0.1"
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        self.address = f"{host}:{port}"
        if self._controller.metrics_port is not None and self.metrics_bind:
            metrics_host = split_host_port(self.metrics_bind)[0]
            if metrics_host in ("", "0.0.0.0", "[::]"):  # every address: this machine reaches it here
                metrics_host = "127.0.0.1"
            self.metrics_url = f"http://{metrics_host}:{self._controller.metrics_port}/metrics"
        if self.with_agent:
            self._start_agent()
            self._wait_for_agent(ready_timeout)
        return self

    @property
    def controller(self) -> Any:
        """The running controller (a hilfarm.controller.server.Controller), for embedding."""
        if self._controller is None:
            raise RuntimeError("the embedded farm is not started")
        return self._controller

    @property
    def nightly_runner(self) -> Optional["NightlyRunner"]:
        """The controller's nightly runner (None without --nightly suites or before start)."""
        return self._controller.parts.nightly if self._controller is not None else None

    def _start_agent(self) -> None:
        from hilfarm.agent.service import AgentConfig, run_agent

        config = AgentConfig(
            controller=self.address,
            token=self.token,
            profile=self.profile,
            data_dir=self.data_dir / "agent",
        )

        def agent_main() -> None:
            try:
                run_agent(config, self._agent_stop)
            except BaseException as exc:  # surfaced by _wait_for_agent / stop
                self._agent_error = exc
                log.exception("local agent stopped")

        self._agent_thread = threading.Thread(target=agent_main, name="local-agent", daemon=True)
        self._agent_thread.start()

    def _wait_for_agent(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with FarmClient(self.address, self.token) as client:
            while time.monotonic() < deadline:
                if self._agent_error is not None:
                    raise RuntimeError(f"the local agent failed to start: {self._agent_error}")
                if any(d.state != "offline" for d in client.list_devices()):
                    return
                time.sleep(0.05)
        raise TimeoutError(f"the local agent did not register within {timeout:.0f} s")

    def local_profile(self) -> str:
        """The profile the local agent registered with (what `--device` must name)."""
        with FarmClient(self.address, self.token) as client:
            devices = client.list_devices()
        if not devices:
            raise RuntimeError("no agent is registered with the embedded controller")
        return devices[0].device_profile

    def wait(self) -> None:
        assert self._controller is not None
        self._controller.wait()

    def stop(self) -> None:
        self._agent_stop.set()
        if self._agent_thread is not None:
            self._agent_thread.join(timeout=15)
        if self._controller is not None:
            self._controller.stop()

    def __enter__(self) -> "EmbeddedFarm":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
