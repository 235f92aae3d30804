"""Heartbeats written in groups: a thousand agents beating every five seconds are two hundred
calls a second, and one transaction each would keep the database busy with nothing but that.

Calls that arrive within GATHER_SECONDS, or while a batch is being written, wait for the next
one, and each batch is one transaction (AgentRepository.record_contact): the agents' rows are
marked seen and their leases renewed together. A Heartbeat is answered only once its batch committed, so ``known`` is what the
database says and a lease renewal the agent was told about is stored. Long-polls waiting for
work count as contact too; they are folded into the same batches, and skipped for an agent this
process wrote recently anyway.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Callable, Dict, Iterable, List, Set, Tuple

log = logging.getLogger("hilfarm.controller")

# The most agents written in one transaction.
MAX_BATCH = 2000
# How long a batch gathers heartbeats after the first arrives: a thousand agents then cost a few
# dozen transactions a second rather than one per call, for a few milliseconds of latency.
GATHER_SECONDS = 0.02

RecordContact = Callable[[Dict[str, bool], Iterable[str]], Set[str]]


class HeartbeatBatcher:
    """``record`` writes one batch (scheduler.Scheduler.record_contact), on a thread of its own
    when the controller's database work runs in a pool: a heartbeat never queues behind other
    calls' database work, so a busy controller still answers its agents quickly and does not
    mark them offline. With the database work on the event loop there is no queue to wait in:
    each batch is written on the loop when it is due."""

    def __init__(self, record: RecordContact, *, touch_interval: float, on_loop: bool = False) -> None:
        """``on_loop``: write each batch on the event loop, as the controller's other database
        work then is (SQLite's default), instead of on a thread of its own."""
        self._record = record
        self._thread = (None if on_loop else
                        concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hilfarm-heartbeats"))
        self.touch_interval = touch_interval
        self._beats: Dict[str, Tuple[bool, List[asyncio.Future]]] = {}
        self._touched: Set[str] = set()
        self._written: Dict[str, float] = {}  # agent -> monotonic time of its last written contact
        self._pending = asyncio.Event()
        self._task = asyncio.ensure_future(self._flush_loop())

    async def beat(self, agent_id: str, busy: bool) -> bool:
        """Record a heartbeat; True when the agent is known (answered after the commit)."""
        future = asyncio.get_running_loop().create_future()
        _, waiting = self._beats.get(agent_id, (busy, []))
        waiting.append(future)
        self._beats[agent_id] = (busy, waiting)
        self._pending.set()
        return await future

    def touch(self, agent_id: str) -> None:
        """The agent is waiting in a long-poll: mark it seen, unless that was written lately."""
        if time.monotonic() - self._written.get(agent_id, -1e9) < self.touch_interval / 2:
            return
        self._touched.add(agent_id)
        self._pending.set()

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        if self._thread is not None:
            self._thread.shutdown(wait=False, cancel_futures=True)
        for _, waiting in self._beats.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(ConnectionAbortedError("the controller is shutting down"))

    async def _flush_loop(self) -> None:
        while True:
            await self._pending.wait()
            await asyncio.sleep(GATHER_SECONDS)
            self._pending.clear()
            batch = dict(list(self._beats.items())[:MAX_BATCH])
            for agent_id in batch:
                del self._beats[agent_id]
            touched, self._touched = self._touched, set()
            if self._beats or self._touched:
                self._pending.set()
            beats = {a: busy for a, (busy, _) in batch.items()}
            try:
                if self._thread is None:
                    known = self._record(beats, touched)
                else:
                    known = await asyncio.get_running_loop().run_in_executor(self._thread, self._record, beats, touched)
            except Exception as exc:
                log.warning("writing %d heartbeat(s) failed: %s: %s", len(batch), type(exc).__name__, exc)
                for _, waiting in batch.values():
                    for future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                continue
            now = time.monotonic()
            for agent_id in list(batch) + list(touched):
                self._written[agent_id] = now
            for agent_id, (_, waiting) in batch.items():
                for future in waiting:
                    if not future.done():
                        future.set_result(agent_id in known)
            if len(self._written) > 4 * MAX_BATCH:  # forget agents that went away
                cutoff = now - 2 * self.touch_interval
                self._written = {a: t for a, t in self._written.items() if t >= cutoff}
