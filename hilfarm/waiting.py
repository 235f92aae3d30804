"""Following jobs until they finish (`submit --wait`, `jobs watch`, `demo`), and what a wait
that ends early says: Ctrl-C or SIGTERM detaches (or cancels), a timeout gives up; either way
the person is told which jobs go on and how to follow or cancel them."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import grpc

from hilfarm.client import FINAL_STATES, FarmClient
from hilfarm.v1 import farm_pb2


class Interrupted(Exception):
    """The wait was stopped by a signal (SIGINT: Ctrl-C, SIGTERM: a CI runner cancelling)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process a signal ended: 130, 143


class WaitTimedOut(Exception):
    """--wait-timeout ran out before every job finished."""


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM raise Interrupted (in the main thread)."""
    def raise_interrupted(signum, _frame):  # type: ignore[no-untyped-def]
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class JobFollower:
    """Streams the jobs' changes and keeps the newest of each: jobs of one run on one WatchRun
    stream (a thousand-job run is one stream, not a thousand), otherwise one WatchJob each (also
    when the controller is older than WatchRun)."""

    def __init__(self, client: FarmClient, jobs: Sequence[farm_pb2.Job]) -> None:
        self.job_ids = [j.id for j in jobs]
        self._latest: Dict[str, farm_pb2.Job] = {j.id: j for j in jobs}
        self._seen: set = set()
        self._changed = threading.Condition()
        self._errors: List[BaseException] = []
        runs = {j.run_id for j in jobs}
        if len(runs) == 1 and "" not in runs:
            self._start(self._follow_run, client, runs.pop())
        else:
            for job_id in self.job_ids:
                self._start(self._follow_job, client, job_id)

    def _start(self, target: Callable[[FarmClient, str], None], client: FarmClient, key: str) -> None:
        threading.Thread(target=target, args=(client, key), daemon=True, name=f"watch-{key[:8]}").start()

    def _update(self, job: farm_pb2.Job) -> None:
        with self._changed:
            if job.id in self._latest:  # a run's other jobs are not ours to follow
                self._latest[job.id] = job
                self._seen.add(job.id)
                self._changed.notify_all()

    def _failed(self, error: BaseException) -> None:
        with self._changed:  # re-raised in the waiting thread
            self._errors.append(error)
            self._changed.notify_all()

    def _follow_run(self, client: FarmClient, run_id: str) -> None:
        try:
            for job in client.watch_run(run_id):
                self._update(job)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                self._failed(error)
                return
            for job_id in self.job_ids:  # a controller from before WatchRun
                self._start(self._follow_job, client, job_id)
        except BaseException as error:
            self._failed(error)

    def _follow_job(self, client: FarmClient, job_id: str) -> None:
        try:
            for job in client.watch_job(job_id):
                self._update(job)
        except BaseException as error:
            self._failed(error)

    def snapshot(self) -> List[farm_pb2.Job]:
        with self._changed:
            return [self._latest[j] for j in self.job_ids]

    def unfinished(self) -> List[farm_pb2.Job]:
        return [j for j in self.snapshot() if j.state not in FINAL_STATES]

    def _finished(self) -> bool:
        return bool(self._errors) or (
            len(self._seen) == len(self.job_ids)
            and all(j.state in FINAL_STATES for j in self._latest.values())
        )

    def wait(self, *, live: bool = False, timeout: Optional[float] = None,
             on_state: Optional[Callable[[farm_pb2.Job], None]] = None) -> List[farm_pb2.Job]:
        """Until every job is finished; raises WaitTimedOut after ``timeout`` seconds. ``live``
        redraws a progress table on stderr while any job is unfinished; ``on_state`` hears of
        every job whose state changed (the line-by-line account for a log, where nothing redraws)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        view = None
        told: Dict[str, int] = {}
        try:
            with self._changed:
                while True:
                    if on_state is not None:
                        for job in self.snapshot():
                            if job.id in self._seen and told.get(job.id) != job.state:
                                told[job.id] = job.state
                                on_state(job)
                    if self._finished():
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        raise WaitTimedOut()
                    if live and self._seen:
                        # Only now: a job that was finished when the watch began shows no
                        # progress table at all, and an empty one never flashes up.
                        view = view or _start_live_view()
                        view.update(_progress(self.snapshot()))
                    wait = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
                    self._changed.wait(timeout=wait)
        finally:
            if view is not None:
                view.stop()
        if self._errors:
            raise self._errors[0]
        return self.snapshot()


def _progress(jobs: Sequence[farm_pb2.Job]):  # type: ignore[no-untyped-def]
    from hilfarm.display import progress_table

    return progress_table(jobs)


def _start_live_view():  # type: ignore[no-untyped-def]
    from rich.live import Live

    from hilfarm.display import console

    view = Live(console=console(stderr=True), refresh_per_second=8, transient=True,
                redirect_stdout=False, redirect_stderr=False)
    view.start()
    return view
