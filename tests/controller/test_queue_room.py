"""The queued-job limit at a stream of submissions (submission.QueueRoom): far from the limit
the queue is counted once a second, not at each submission; near it every decision is made on
a fresh count."""
from __future__ import annotations

import threading
from typing import List

import pytest

from hilfarm.controller.errors import ResourceExhausted
from hilfarm.controller.submission import QueueRoom


class Queue:
    """A project's queued jobs as the database would count them, and how often it was asked."""

    def __init__(self, queued: int = 0) -> None:
        self.queued = queued
        self.counts: List[str] = []

    def count_queued(self, project: str) -> int:
        self.counts.append(project)
        return self.queued


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_submissions_far_from_the_limit_share_one_count_of_the_queue_a_second():
    queue, clock = Queue(queued=10), Clock()
    room = QueueRoom(queue.count_queued, limit=1000, max_age=1.0, clock=clock)
    for _ in range(50):
        room.take("vision", 2)
        clock.now += 0.01
    assert queue.counts == ["vision"]  # 0.5 s of submissions: one count
    clock.now += 0.6
    room.take("vision", 2)
    assert queue.counts == ["vision", "vision"]  # the count was more than a second old
    room.take("speech", 1)
    assert queue.counts == ["vision", "vision", "speech"]  # each project its own


def test_a_submission_the_bound_would_put_over_the_limit_is_decided_on_a_fresh_count():
    queue, clock = Queue(queued=0), Clock()
    room = QueueRoom(queue.count_queued, limit=10, max_age=60.0, clock=clock)
    room.take("vision", 6)
    queue.queued = 6  # what the database now holds
    with pytest.raises(ResourceExhausted) as refused:
        room.take("vision", 5)
    # Decided on the database's count, which the message reports.
    assert "project vision has 6 queued jobs and this submission adds 5" in str(refused.value)
    assert len(queue.counts) == 2
    # Jobs leave the queue by themselves (leased, cancelled): a fresh count sees the room.
    queue.queued = 1
    room.take("vision", 5)
    assert len(queue.counts) == 3
    # Bound now 6: four more fit on it without counting; a fifth needs a count.
    room.take("vision", 4)
    assert len(queue.counts) == 3
    queue.queued = 10
    with pytest.raises(ResourceExhausted):
        room.take("vision", 1)
    assert len(queue.counts) == 4


def test_submissions_checked_in_several_threads_at_once_all_count_towards_the_bound():
    """No thread's jobs are lost from the bound: with the limit at exactly what the threads
    take, they fit on one count, and the next job needs a fresh one."""
    queue, clock = Queue(queued=0), Clock()
    threads, each = 8, 50
    room = QueueRoom(queue.count_queued, limit=threads * each, max_age=60.0, clock=clock)
    room.take("vision", 0)  # the one count
    start = threading.Barrier(threads)

    def submit() -> None:
        start.wait()
        for _ in range(each):
            room.take("vision", 1)

    workers = [threading.Thread(target=submit) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(queue.counts) == 1
    room.take("vision", 1)  # 401 > 400: counted again
    assert len(queue.counts) == 2
