"""Parent side of the benchmark harness: runs one job in a fresh child interpreter.

The child (``python -m hilfarm.agent.child``) does the measuring; this side enforces the
limits and turns how the child ended into an outcome:

* time: the whole child (load, warmup, runs) gets ``timeout_seconds`` of wall clock, then it
  is killed → TIMEOUT naming the limit. In sustained mode the limit is ``sustained_seconds +
  timeout_seconds``: the timeout covers everything but the sustained phase.
* memory: the limit is on what the device really spends, resident memory. Two layers:
  the child caps its own address space at (its size after importing the runtime + the limit),
  so one huge allocation fails at once inside the runtime ("Failed to allocate", bad_alloc,
  MemoryError) and is reported as OUT_OF_MEMORY; and this side reads the child's VmRSS every
  20 ms and kills it past the limit, which catches growth the address-space cap lets through.
  RLIMIT_AS alone is not enough: it also counts reserved-but-untouched memory, and it cannot
  see memory that a runtime maps before the cap is set. Neither layer alone names the limit
  reliably, so this side always rewrites an OUT_OF_MEMORY message to name it.
* a signal → RUNTIME_CRASH naming the signal; a non-zero exit without a result → RUNTIME_CRASH.
* cancellation: when ``cancel`` is set the child is killed and the outcome says cancelled.
* repeats: a job runs in ``repeats`` children, one after the other (each its own load, warmup
  and timed phase); the first repeat that fails ends the job with its failure, and the results
  of all repeats are joined (repeats.py).
* no orphans: the child asks the kernel to kill it when the agent dies (child.die_with_parent),
  and every child is recorded in the agent's ChildRegistry while it runs, so an agent that
  starts after a crash ends whatever its predecessor left behind (orphans.py).

The child's stdout and stderr go to one file whose tail becomes the failure's detail.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from hilfarm.agent.orphans import ChildRegistry
from hilfarm.units import format_bytes
from hilfarm.agent.repeats import join_repeats
from hilfarm.agent import sandbox
from hilfarm.agent.child import ChildSpec, RunPlan
from hilfarm.agent.results import (
    BenchmarkResult, Failure, FailureCategory, JobOutcome, JobSettings, Progress,
)

log = logging.getLogger("hilfarm.agent")

STDERR_TAIL_BYTES = 4000
POLL_SECONDS = 0.02


@dataclass
class RunDefaults:
    """What a job gets for settings it leaves at zero. Profiles override these."""

    warmup_runs: int = 1
    warmup_seconds: float = 0.5
    warmup_max_seconds: float = 30.0  # warmup goes on until steady, at most this long
    min_runs: int = 50
    min_seconds: float = 1.0
    max_runs: int = 100_000
    max_seconds: float = 150.0
    memory_limit_bytes: int = 4 * 1024 ** 3
    timeout_seconds: float = 600.0
    threads: int = 0  # 0 = the runtime's own default
    repeats: int = 1  # fresh child processes per job


@dataclass
class BenchmarkJob:
    model_path: str
    model_format: str
    settings: JobSettings = field(default_factory=JobSettings)
    inputs_path: Optional[str] = None  # a local .npz (already fetched by the cache)
    pin_cores: List[int] = field(default_factory=list)
    plugins: List[str] = field(default_factory=list)  # runtime plugin modules for the child
    defaults: RunDefaults = field(default_factory=RunDefaults)
    work_root: Optional[str] = None  # where the children's work directories go (None: system temp)
    children: Optional[ChildRegistry] = None  # records each running child (the agent's)
    private_dir: Optional[str] = None  # the agent's data dir: hidden from the child (sandbox.py)


def resolve_settings(settings: JobSettings, defaults: RunDefaults) -> Dict[str, Any]:
    """Concrete run parameters: the job's value where set, else the default."""

    def pick(name: str) -> Any:
        v = getattr(settings, name)
        return v if v and v > 0 else getattr(defaults, name)

    r = {name: pick(name) for name in (
        "warmup_runs", "warmup_seconds", "warmup_max_seconds", "min_runs", "min_seconds", "max_runs",
        "max_seconds", "memory_limit_bytes", "timeout_seconds", "repeats",
    )}
    # A job asking for fewer max runs than min runs gets what it capped, not an error.
    r["min_runs"] = min(r["min_runs"], r["max_runs"])
    sustained = float(settings.sustained_seconds or 0.0)
    r["sustained_seconds"] = sustained if sustained > 0 else 0.0
    if sustained > 0:
        from hilfarm.agent.telemetry.sustained import SUSTAINED_MAX_RUNS

        r["repeats"] = 1  # a sustained run is one long process: its heat is the point
        r["sustained_max_runs"] = SUSTAINED_MAX_RUNS
        # timeout_seconds bounds the rest of the job (start, load, warmup, result): the
        # sustained phase comes on top, so no sustained run is killed for lasting as asked.
        r["timeout_seconds"] = float(r["timeout_seconds"]) + sustained
    return r


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _read_rss(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - STDERR_TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class _ProgressReader(threading.Thread):
    def __init__(self, fd: int, on_progress: Optional[Callable[[Progress], None]]) -> None:
        super().__init__(name="hilfarm-progress", daemon=True)
        self.fd = fd
        self.on_progress = on_progress
        self.last: Optional[Progress] = None

    def run(self) -> None:
        with os.fdopen(self.fd, "rb", buffering=0) as pipe:
            buf = b""
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    return
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    try:
                        p = Progress.from_dict(json.loads(line))
                    except (ValueError, TypeError):
                        continue
                    self.last = p
                    if self.on_progress is not None:
                        try:
                            self.on_progress(p)
                        except Exception:
                            log.exception("progress callback failed; the benchmark goes on")


def run_benchmark(
    job: BenchmarkJob,
    on_progress: Optional[Callable[[Progress], None]] = None,
    cancel: Optional[threading.Event] = None,
    on_child: Optional[Callable[[Optional[int]], None]] = None,
) -> JobOutcome:
    """Run one job in ``repeats`` fresh child processes, one after the other, and return the
    joined result, the first failure, or a cancellation. ``on_child`` hears each child's pid
    when it starts and None when it has ended."""
    settings = job.settings
    if not settings.threads and job.defaults.threads:
        settings = dataclasses.replace(settings, threads=job.defaults.threads)
    resolved = resolve_settings(settings, job.defaults)
    repeats = int(resolved["repeats"])
    results: List[BenchmarkResult] = []
    for index in range(repeats):
        def relay(p: Progress, index: int = index) -> None:
            p.repeat, p.repeats = index + 1, repeats
            if on_progress is not None:
                on_progress(p)

        outcome = _run_child(job, settings, resolved, index, relay, cancel, on_child)
        if outcome.result is None:
            if outcome.failure is not None and repeats > 1:
                outcome.failure.message = f"repeat {index + 1} of {repeats}: {outcome.failure.message}"
            return outcome
        results.append(outcome.result)
    return JobOutcome(result=join_repeats(results))


def _run_child(
    job: BenchmarkJob,
    settings: JobSettings,
    resolved: Dict[str, Any],
    index: int,
    on_progress: Callable[[Progress], None],
    cancel: Optional[threading.Event],
    on_child: Optional[Callable[[Optional[int]], None]],
) -> JobOutcome:
    limit = int(resolved["memory_limit_bytes"])
    timeout = float(resolved["timeout_seconds"])
    if job.work_root is not None:
        os.makedirs(job.work_root, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hilfarm-job-", dir=job.work_root) as work:
        result_path = os.path.join(work, "result.json")
        log_path = os.path.join(work, "child.log")
        spec_path = os.path.join(work, "spec.json")
        r_fd, w_fd = os.pipe()
        spec = ChildSpec(
            model_path=job.model_path,
            model_format=job.model_format,
            settings=settings,
            plan=RunPlan.from_dict(resolved),
            inputs_path=job.inputs_path,
            pin_cores=list(job.pin_cores),
            plugins=list(job.plugins),
            memory_limit_bytes=limit,
            progress_fd=w_fd,
            result_path=result_path,
            repeat_index=index,
            parent_pid=os.getpid(),
            sandbox=sandbox.plan(work, job.private_dir,
                                 {"model_path": job.model_path, "inputs_path": job.inputs_path}),
        )
        spec.write(spec_path)
        reader = _ProgressReader(r_fd, on_progress)
        with open(log_path, "wb") as logf:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "hilfarm.agent.child", spec_path],
                    # `python -m` puts the working directory first on sys.path: started in a
                    # checkout (or any folder holding a `hilfarm/`), that folder would shadow the
                    # installed package. The job's own empty directory holds nothing to shadow.
                    cwd=work,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    pass_fds=(w_fd,),
                    start_new_session=True,  # so a kill reaches anything the runtime spawned
                    close_fds=True,
                )
            finally:
                os.close(w_fd)
        if job.children is not None:
            job.children.add(proc.pid, work)
        if on_child is not None:
            on_child(proc.pid)
        try:
            reader.start()
            what = "timeout_seconds"
            if resolved["sustained_seconds"] > 0:
                what = f"sustained_seconds {resolved['sustained_seconds']:g} + timeout_seconds"
            outcome = _supervise(proc, limit, timeout, cancel, what)
            reader.join(timeout=2.0)
        finally:
            if proc.poll() is None:  # the agent is failing or stopping: the child goes with it
                _kill(proc)
            if on_child is not None:
                on_child(None)
            if job.children is not None:
                job.children.remove(proc.pid)
        last = reader.last.phase if reader.last is not None else "starting"
        return _conclude(proc, outcome, result_path, log_path, limit, last)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _supervise(
    proc: subprocess.Popen, limit: int, timeout: float, cancel: Optional[threading.Event],
    timeout_from: str = "timeout_seconds",
) -> Optional[JobOutcome]:
    """Wait for the child; kill it on timeout, memory or cancel and say which."""
    deadline = time.monotonic() + timeout
    peak_rss = 0
    while True:
        try:
            proc.wait(timeout=POLL_SECONDS)
            return None
        except subprocess.TimeoutExpired:
            pass
        if cancel is not None and cancel.is_set():
            _kill(proc)
            return JobOutcome(cancelled=True)
        rss = _read_rss(proc.pid)
        if rss is not None:
            peak_rss = max(peak_rss, rss)
            if limit > 0 and rss > limit:
                _kill(proc)
                return JobOutcome(failure=Failure(
                    FailureCategory.OUT_OF_MEMORY,
                    f"the model needs more memory than the job's limit of {format_bytes(limit)} "
                    f"(memory_limit_bytes={limit}): the benchmark process reached "
                    f"{format_bytes(rss)} resident and was stopped; raise the limit or use a smaller model",
                ))
        if time.monotonic() > deadline:
            _kill(proc)
            return JobOutcome(failure=Failure(
                FailureCategory.TIMEOUT,
                f"the job ran past its time limit of {timeout:g} s ({timeout_from}) and was stopped; "
                f"the model may hang, or needs a longer timeout or fewer runs",
            ))


def _conclude(
    proc: subprocess.Popen,
    early: Optional[JobOutcome],
    result_path: str,
    log_path: str,
    limit: int,
    phase: str,
) -> JobOutcome:
    tail = _tail(log_path)
    if early is not None:
        if early.failure is not None:
            early.failure.detail = tail
        return early
    written: Optional[Dict[str, Any]] = None
    if os.path.exists(result_path):
        with open(result_path) as f:
            written = json.load(f)
    rc = proc.returncode
    if written is not None and "result" in written:
        result = BenchmarkResult.from_dict(written["result"])
        if rc != 0:
            result.warnings.append(
                f"the benchmark process ended with {_describe_rc(rc)} after writing its result"
            )
        return JobOutcome(result=result)
    if written is not None and "failure" in written:
        failure = Failure.from_dict(written["failure"])
        if failure.category is FailureCategory.OUT_OF_MEMORY:
            failure.message = (
                f"the model needs more memory than the job's limit of {format_bytes(limit)} "
                f"(memory_limit_bytes={limit}); raise the limit or use a smaller model. "
                f"{failure.message}"
            )
        if tail:
            failure.detail = (failure.detail + "\n--- benchmark process output ---\n" + tail).strip()
        return JobOutcome(failure=failure)
    if rc is not None and rc < 0:
        name = _signal_name(-rc)
        hint = ""
        if -rc == signal.SIGKILL:
            hint = " (something outside the agent killed it, possibly the kernel's out-of-memory killer)"
        return JobOutcome(failure=Failure(
            FailureCategory.RUNTIME_CRASH,
            f"the runtime crashed: the benchmark process died on {name}{hint} during the {phase} phase"
            + (" (a corrupt model file can do this)" if phase == "loading" else ""),
            signal=-rc,
            detail=tail,
        ))
    return JobOutcome(failure=Failure(
        FailureCategory.RUNTIME_CRASH,
        f"the benchmark process exited with status {rc} without a result during the {phase} phase",
        detail=tail,
    ))


def _describe_rc(rc: int) -> str:
    return _signal_name(-rc) if rc < 0 else f"status {rc}"
