"""Who is woken when work is queued: the agents waiting for work of a profile, on the server's
event loop, fed by the same change feed the database publishes to."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, List

from hilfarm.controller.notifications import Change, ChangeFeed
from hilfarm.controller.waiters import Waiters, WorkTicket


def on_loop(test: Callable[[Waiters, ChangeFeed], Awaitable[None]]) -> None:
    async def main() -> None:
        feed = ChangeFeed()
        waiters = Waiters(feed, asyncio.get_running_loop())
        try:
            await test(waiters, feed)
        finally:
            waiters.close()
    asyncio.run(main())


def queue(feed: ChangeFeed, n: int, profile: str = "rpi5") -> None:
    feed.publish([Change(f"job-{i}", "run", profile, queued=True) for i in range(n)])


async def settle() -> None:
    """Let the event loop run what the feed handed it (call_soon_threadsafe)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def start_waiting(waiters: Waiters, n: int, timeout: float = 5.0) -> List["asyncio.Task[bool]"]:
    tickets = [waiters.ticket("rpi5") for _ in range(n)]
    tasks = [asyncio.ensure_future(waiters.wait_for_work(t, timeout)) for t in tickets]
    await settle()
    assert waiters.waiting_agents("rpi5") == n
    return tasks


def test_each_job_queued_wakes_one_waiting_agent_and_an_agent_that_was_looking_keeps_waiting():
    async def test(waiters: Waiters, feed: ChangeFeed) -> None:
        looking = waiters.ticket("rpi5")  # taken before its look, as LeaseJob does
        tasks = await start_waiting(waiters, 3)
        queue(feed, 2)
        await settle()
        assert [t.done() for t in tasks] == [True, True, False], "the two longest waiting are woken"
        assert all(t.result() for t in tasks[:2])
        # Both jobs are claimed by the agents woken for them: the one that was looking, found
        # nothing and now waits, waits (it does not go back to the database).
        assert await waiters.wait_for_work(looking, 0.05) is False
        tasks[2].cancel()
    on_loop(test)


def test_work_queued_beyond_the_agents_waiting_is_unclaimed_and_looked_for_at_once():
    async def test(waiters: Waiters, feed: ChangeFeed) -> None:
        looking = waiters.ticket("rpi5")
        tasks = await start_waiting(waiters, 1)
        queue(feed, 2)
        await settle()
        assert tasks[0].result() is True
        assert await asyncio.wait_for(waiters.wait_for_work(looking, 5), 1) is True, \
            "one job had no one woken for it: an agent that was looking looks again"
        other_profile = waiters.ticket("jetson")
        assert await waiters.wait_for_work(other_profile, 0.05) is False
    on_loop(test)


def test_work_an_agent_cannot_take_is_passed_to_the_next_that_has_not_looked_since():
    async def test(waiters: Waiters, feed: ChangeFeed) -> None:
        first, second = await start_waiting(waiters, 2)
        queue(feed, 1)
        await settle()
        assert first.done() and not second.done()
        # The woken agent looked and could not take the job (its tags): the next one is woken.
        woken = WorkTicket("rpi5", *waiters.counts("rpi5"), woken=True)
        waiters.pass_on(woken)
        await settle()
        assert second.done() and second.result() is True
        # No one left to pass it to: the work is unclaimed, so the next wait looks at once.
        after = waiters.ticket("rpi5")
        waiters.pass_on(woken)
        assert await asyncio.wait_for(waiters.wait_for_work(after, 5), 1) is True
    on_loop(test)


def test_an_agent_that_already_looked_since_is_not_woken_for_work_passed_on():
    async def test(waiters: Waiters, feed: ChangeFeed) -> None:
        (old,) = await start_waiting(waiters, 1)
        queue(feed, 1)
        await settle()
        assert old.done()
        fresh = waiters.ticket("rpi5")  # looked after the job was queued
        fresh_wait = asyncio.ensure_future(waiters.wait_for_work(fresh, 5))
        stale = WorkTicket("rpi5", 0, waiters.counts("rpi5")[1])  # last looked before it
        stale_wait = asyncio.ensure_future(waiters.wait_for_work(stale, 5))
        await settle()
        waiters.pass_on(WorkTicket("rpi5", *waiters.counts("rpi5"), woken=True))
        await settle()
        assert stale_wait.done() and not fresh_wait.done(), "the agent that has not seen the work is woken"
        fresh_wait.cancel()
    on_loop(test)


def test_a_woken_agent_whose_call_goes_away_hands_its_work_on():
    async def test(waiters: Waiters, feed: ChangeFeed) -> None:
        first_ticket, second_ticket = waiters.ticket("rpi5"), waiters.ticket("rpi5")
        first = asyncio.ensure_future(waiters.wait_for_work(first_ticket, 5))
        await settle()
        second = asyncio.ensure_future(waiters.wait_for_work(second_ticket, 5))
        await settle()
        queue(feed, 1)
        first.cancel()  # woken, and cancelled before it ran: its caller went away
        await settle()
        assert first.cancelled() and first_ticket.woken
        assert second.done() and second.result() is True
    on_loop(test)


def test_whoever_wakes_an_agent_takes_it_out_of_the_line_at_once():
    """A woken agent's wait does not look for its ticket in the line when it resumes (a scan of
    every agent waiting for the profile): each way of waking takes it out first, and the agents
    still waiting stay in line, in order."""
    async def test(waiters: Waiters, feed: ChangeFeed) -> None:
        tasks = await start_waiting(waiters, 4)
        line = list(waiters._waiting["rpi5"])
        waiters._dispatch([Change("job-a", "run", "rpi5", queued=True)], False)  # a job queued
        assert list(waiters._waiting["rpi5"]) == line[1:] and line[0].woken
        waiters.pass_on(line[0])  # it will not take that job: the next in line is woken
        assert list(waiters._waiting["rpi5"]) == line[2:] and line[1].woken
        await settle()
        assert [t.done() for t in tasks] == [True, True, False, False]
        assert waiters.waiting_agents("rpi5") == 2
        waiters._wake_all()  # a resync
        assert waiters.waiting_agents("rpi5") == 0 and all(t.woken for t in line)
        await settle()
        assert all(t.done() and t.result() for t in tasks)
        # A wait that ends without a wake (its timeout) leaves the line by itself.
        tasks = await start_waiting(waiters, 2, timeout=0.01)
        assert await tasks[0] is False and await tasks[1] is False
        assert waiters.waiting_agents("rpi5") == 0
    on_loop(test)
