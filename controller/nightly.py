"""Nightly regression runs: the controller starts suites on cron schedules (croniter) and records
every run like one started by `hilfarm regress` (trigger "nightly"), so history, change points and
metrics cover them. Models named by path are read from disk and stored as artifacts each time,
so a nightly build that replaces the file is what gets measured.

Every replica of a farm may be given the same suites: a slot (suite x due time) is recorded
with a unique key in the same transaction as its run, so it runs once, started by whichever
replica gets there first; the run itself is state in the database (suites.py), advanced by any
replica and resumed after a restart."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from croniter import croniter

from hilfarm.suite_files import SuiteFile, load_suite

from hilfarm.contract import file_sha256

from .artifacts import CHUNK_BYTES, ArtifactStore
from .models import DEFAULT_PROJECT, Artifact, SuiteRunRow
from .suites import SlotTaken, SuiteRunner

log = logging.getLogger("hilfarm.controller.nightly")


@dataclass
class NightlySuite:
    suite: SuiteFile
    schedule: str
    next_at: float = 0.0
    runs: List[str] = field(default_factory=list)


class NightlyRunner:
    """Start each suite when its cron schedule comes due. ``clock`` is injectable so tests can
    move time; ``tick`` does one check and is what the background thread calls."""

    def __init__(self, artifacts: ArtifactStore, runner: SuiteRunner, suites: List[SuiteFile], *,
                 clock: Callable[[], float] = time.time, poll_seconds: float = 1.0) -> None:
        """``artifacts``: where models given by path are stored; ``runner`` starts the suites."""
        self.artifacts = artifacts
        self.runner = runner
        self.clock = clock
        self.poll_seconds = poll_seconds
        now = clock()
        self.entries: List[NightlySuite] = []
        for suite in suites:
            if not suite.schedule:
                raise ValueError(f"{suite.source}: a nightly suite needs a schedule (cron), e.g. schedule: \"0 2 * * *\"")
            if not croniter.is_valid(suite.schedule):
                raise ValueError(f"{suite.source}: schedule {suite.schedule!r} is not a cron expression")
            self.entries.append(NightlySuite(suite, suite.schedule, croniter(suite.schedule, now).get_next(float)))
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @classmethod
    def from_files(cls, artifacts: ArtifactStore, runner: SuiteRunner, paths: List[Path],
                   **kwargs: Any) -> "NightlyRunner":
        return cls(artifacts, runner, [load_suite(p) for p in paths], **kwargs)

    def _models(self, suite: SuiteFile) -> List[Dict[str, str]]:
        out = []
        for m in suite.models:
            if m.path is None:
                out.append({"sha256": m.sha256, "name": m.name, "format": m.format})
                continue
            digest = file_sha256(m.path)
            fmt = m.format or m.path.suffix.lower().lstrip(".")
            if self.artifacts.stat(digest, project=DEFAULT_PROJECT) is None:
                artifact = Artifact(sha256=digest, size_bytes=m.path.stat().st_size, format=fmt,
                                    filename=m.path.name, created_at=self.clock())
                with m.path.open("rb") as f:
                    self.artifacts.receive(artifact, iter(lambda: f.read(CHUNK_BYTES), b""))
            out.append({"sha256": digest, "name": m.name, "format": fmt})
        return out

    def tick(self) -> List[SuiteRunRow]:
        """Start every suite that is due now; each is started once per due time even when the
        controller was busy past several (missed nights are not replayed)."""
        now = self.clock()
        started = []
        for entry in self.entries:
            if entry.next_at > now:
                continue
            slot, entry.next_at = entry.next_at, croniter(entry.schedule, now).get_next(float)
            try:
                spec = entry.suite.spec(self._models(entry.suite))
                run = self.runner.start(spec, trigger="nightly", nightly_slot=slot)
                entry.runs.append(run.id)
                started.append(run)
                log.info("nightly suite %s started (run %s); next at %s", entry.suite.name, run.id,
                         time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.next_at)))
            except SlotTaken:
                log.info("nightly suite %s: the slot of %s was started by another replica", entry.suite.name,
                         time.strftime("%Y-%m-%d %H:%M", time.localtime(slot)))
            except Exception:
                log.exception("nightly suite %s could not start", entry.suite.name)
        return started

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="nightly", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
