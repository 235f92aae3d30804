"""Coroutines of the asynchronous server that wait for something to change: a watched job or run
(WatchJob, WatchRun) and an agent waiting for work (LeaseJob long-polls).

A waiter costs a small object on the event loop, never a thread, and never polls: the database's
change feed (notifications.py) says which jobs changed, from any thread of this process or, on
PostgreSQL, from another replica; ``Waiters`` hands each batch to the event loop and wakes the
waiters it concerns.

Agents waiting for work are woken sparingly, so a queued job does not send a thousand agents at
the database at once: a batch that queues n jobs of a profile wakes the n agents of that profile
that have waited longest, and the job is theirs to look for. An agent woken for work it cannot
take (tags, runtime), while queued jobs of its profile remain, wakes the next one in line that
has not looked since (``pass_on``); each agent tries once per batch, so the chain ends.

Only work no waiting agent was woken for is *unclaimed*: a batch that queued more jobs than
agents were waiting, work passed on with no one left to pass it to, a wake lost with its call,
a resync. Agents that were not waiting then (busy looking, between two asks) look again when
they next wait (``wait_for_work``); otherwise an agent that looked and found nothing waits to be
woken, instead of every agent looking again after every job queued while it looked. A resync
(the PostgreSQL listener reconnected) and shutdown wake everyone.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field
from typing import Deque, Dict, Iterator, Optional, Sequence, Set, Tuple

from .notifications import Change, ChangeFeed


@dataclass(eq=False)
class WorkTicket:
    """One agent's place in the queue of agents waiting for work of ``profile``."""

    profile: str
    seen: int  # the profile's generation when the agent last looked at the database
    seen_unclaimed: int  # and its count of unclaimed work then
    woken: bool = False
    future: Optional[asyncio.Future] = field(default=None, repr=False)


class Watch:
    """What one watcher (a WatchJob or WatchRun call) waits on: set whenever its job, or a job of
    its run, changes, with the ids of the jobs that changed, so a watcher of a run of a thousand
    jobs reads the jobs that changed, not the whole run at every change."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        # Jobs changed since the watcher last took them; None: any job may have (a resync after
        # lost notifications, shutdown), and the watcher reads everything again.
        self._changed: Optional[Set[str]] = set()

    def note(self, job_id: str) -> None:
        if self._changed is not None:
            self._changed.add(job_id)
        self._event.set()

    def note_anything(self) -> None:
        self._changed = None
        self._event.set()

    def take(self) -> Optional[Set[str]]:
        """The jobs changed since the last take (None: anything may have), and the watch cleared.
        Take before reading, so a change during the read sets it again."""
        changed, self._changed = self._changed, set()
        self._event.clear()
        return changed

    async def wait(self, timeout: Optional[float]) -> bool:
        """True once something changed, False when ``timeout`` (seconds; None: none) passed first."""
        if timeout is None:
            await self._event.wait()
            return True
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return self._event.is_set()
        return True


class Waiters:
    """Created on the server's event loop; ``close`` wakes every waiter for good."""

    def __init__(self, feed: ChangeFeed, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.closed = False
        self._jobs: Dict[str, Set[Watch]] = collections.defaultdict(set)
        self._runs: Dict[str, Set[Watch]] = collections.defaultdict(set)
        self._waiting: Dict[str, Deque[WorkTicket]] = collections.defaultdict(collections.deque)
        self._generation: Dict[str, int] = collections.defaultdict(int)
        self._unclaimed: Dict[str, int] = collections.defaultdict(int)
        self._everyone: Set[Watch] = set()  # every watcher, for shutdown and resync
        self._unsubscribe = feed.subscribe(self._from_any_thread)

    def _from_any_thread(self, changes: Sequence[Change], resync: bool) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._dispatch, list(changes), resync)

    def close(self) -> None:
        """Wake every waiter; later waits return at once."""
        self.closed = True
        self._unsubscribe()
        self._wake_all()

    # ------------------------------------------------------------ on the event loop

    def _dispatch(self, changes: Sequence[Change], resync: bool) -> None:
        if resync:
            self._wake_all()
            return
        queued: Dict[str, int] = collections.Counter()
        for change in changes:
            for watch in self._jobs.get(change.job_id, ()):
                watch.note(change.job_id)
            for watch in self._runs.get(change.run_id, ()):
                watch.note(change.job_id)
            if change.queued:
                queued[change.device_profile] += 1
        for profile, n in queued.items():
            self._generation[profile] += 1
            waiting = self._waiting.get(profile)
            while waiting and n > 0:
                self._wake(waiting.popleft())
                n -= 1
            if n > 0:
                self._unclaimed[profile] += 1

    def _wake(self, ticket: WorkTicket) -> None:
        ticket.woken = True
        if ticket.future is not None and not ticket.future.done():
            ticket.future.set_result(True)

    def _wake_all(self) -> None:
        for watch in self._everyone:
            watch.note_anything()
        for profile in set(self._generation) | set(self._unclaimed) | set(self._waiting):
            self._generation[profile] += 1
            self._unclaimed[profile] += 1  # agents looking right now look again
        for waiting in self._waiting.values():
            while waiting:
                self._wake(waiting.popleft())

    # ------------------------------------------------------------ watching jobs and runs

    @contextlib.contextmanager
    def watching(self, *, job_id: str = "", run_id: str = "") -> Iterator[Watch]:
        """A watch set whenever the job (or any job of the run) changes. Register before the
        first read, so no change between the read and the wait is missed."""
        watch = Watch()
        if self.closed:
            watch.note_anything()
        targets = [(self._jobs, job_id), (self._runs, run_id)]
        for table, key in targets:
            if key:
                table[key].add(watch)
        self._everyone.add(watch)
        try:
            yield watch
        finally:
            self._everyone.discard(watch)
            for table, key in targets:
                if key and key in table:
                    table[key].discard(watch)
                    if not table[key]:
                        del table[key]

    # ------------------------------------------------------------ agents waiting for work

    def ticket(self, profile: str) -> WorkTicket:
        """Take before looking at the database for work, so work queued meanwhile is noticed."""
        return WorkTicket(profile, self._generation[profile], self._unclaimed[profile])

    def counts(self, profile: str) -> Tuple[int, int]:
        """The profile's generation (up whenever a job of it may have been queued) and its count
        of unclaimed work (up whenever work was queued that no waiting agent was woken for)."""
        return self._generation[profile], self._unclaimed[profile]

    async def wait_for_work(self, ticket: WorkTicket, timeout: float) -> bool:
        """Wait until work of the ticket's profile may be there (True) or ``timeout`` (False).
        Returns True at once when work went unclaimed since the ticket's holder last looked."""
        profile = ticket.profile
        ticket.woken = False
        if self.closed or self._unclaimed[profile] != ticket.seen_unclaimed:
            ticket.seen, ticket.seen_unclaimed = self._generation[profile], self._unclaimed[profile]
            return True
        ticket.future = self.loop.create_future()
        waiting = self._waiting[profile]
        waiting.append(ticket)
        try:
            # Not wait_for: on Python < 3.12 it swallows a cancellation that races the wake.
            await asyncio.wait((ticket.future,), timeout=timeout)
        except asyncio.CancelledError:
            if ticket.woken:  # the call went away with the work it was woken for
                self.pass_on(ticket)
            raise
        finally:
            ticket.future = None
            # A woken ticket was taken out of the line by whoever woke it (_wake's callers);
            # looking for it would scan every agent waiting for the profile.
            if not ticket.woken:
                with contextlib.suppress(ValueError):
                    waiting.remove(ticket)
        if ticket.woken:
            ticket.seen, ticket.seen_unclaimed = self._generation[profile], self._unclaimed[profile]
        return ticket.woken or self.closed

    def pass_on(self, ticket: WorkTicket) -> None:
        """The holder of ``ticket`` was woken and will not take the work (none it can take
        remains, or its call ended first): wake the longest-waiting agent of the profile that has
        not looked since that work was queued, or, with none waiting, leave the work unclaimed."""
        generation = self._generation[ticket.profile]
        waiting = self._waiting.get(ticket.profile)
        for other in waiting or ():
            if other.seen < generation:
                waiting.remove(other)  # type: ignore[union-attr]
                self._wake(other)
                return
        self._unclaimed[ticket.profile] += 1

    def waiting_agents(self, profile: str) -> int:
        return len(self._waiting.get(profile, ()))
