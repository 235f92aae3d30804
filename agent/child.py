"""The measured process: ``python -m hilfarm.agent.child SPEC.json``, SPEC.json a
:class:`ChildSpec` the parent wrote.

The parent (harness.py) starts a fresh interpreter for every repeat of a job, so nothing an
earlier repeat or job loaded or leaked is in this process's memory or caches, and the
between-process variance shows across repeats. The order of work here is the measurement
protocol:

0. leave the network and the agent's files (sandbox.py: new user, network and mount
   namespaces, while the process still has one thread); where the OS refuses, the result says
   so; then die with the agent: ask the kernel for SIGKILL when the parent goes (Linux), and
   stop at once if the parent is already gone
1. pin to the profile's cores (before anything else allocates threads)
2. import numpy and the runtime library
3. set the address-space limit (current VmSize + the job's memory limit)
4. read the baseline VmHWM / VmRSS — after the imports, so that the model's delta is the
   model's (weights, session, arena, inputs) and not the cost of importing the library
5. load the model (load_seconds), first inference (first_inference_seconds)
6. warmup: at least warmup_runs AND at least warmup_seconds, then on until latency stops
   trending (statistics.SteadyStateDetector), for at most warmup_max_seconds
7. timed runs until both min_runs and min_seconds are met, capped by max_runs / max_seconds
   (in sustained mode: for sustained_seconds of wall time, capped only by a safety count);
   only ``runtime.run()`` sits between the two perf_counter_ns calls
8. read VmHWM again; summarise the runs and judge whether they were one steady state
9. with ``profile_ops``: the per-operator profile (agent/runtimes/op_profile.py), which
   touches none of the figures above

Each step is one function below (pin, import_runtime, limit_and_baseline, load, warmup,
timed_phase, summarize, peak_memory, profile_ops); :func:`benchmark` runs them in this order.

Progress goes to the parent as JSON lines on the file descriptor named in the spec, at most a
few per second. The outcome is written as JSON to the result path (temp file + rename), so a
crash never leaves half a result behind.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# Plain Python (no threads, no numpy, no runtime library): safe before the sandbox and the pinning.
from hilfarm.agent import statistics
from hilfarm.agent.results import (
    BenchmarkResult, FailureCategory, JobFailed, JobSettings, RepeatStats, Stability, Unavailable,
)

REPORT_INTERVAL_NS = 250_000_000  # progress at most four times a second


class ProgressWriter:
    def __init__(self, fd: int, t0: float) -> None:
        self.fd = fd
        self.t0 = t0

    def report(self, phase: str, runs_done: int = 0, runs_target: int = 0, latest_ns: int = 0) -> None:
        if self.fd < 0:
            return
        now = time.time()
        line = json.dumps({
            "phase": phase,
            "runs_done": runs_done,
            "runs_target": runs_target,
            "elapsed_seconds": time.monotonic() - self.t0,
            "latest_latency_seconds": latest_ns / 1e9,
            "updated_at": now,
        }) + "\n"
        try:
            os.write(self.fd, line.encode())
        except OSError:
            # The parent stopped listening; the measurement itself must go on.
            self.fd = -1


def read_proc_status(path: str = "/proc/self/status") -> Dict[str, int]:
    """VmHWM, VmRSS, VmSize, ... in bytes (the file gives kB)."""
    out: Dict[str, int] = {}
    with open(path) as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0]) * 1024
    return out


def timed_loop(
    run: Callable[[], None],
    min_runs: int,
    min_ns: int,
    max_runs: int,
    max_ns: int,
    progress: ProgressWriter,
    phase: str,
    report_target: Optional[int] = None,
) -> Tuple[List[int], int, int]:
    """Run until both minimums are met or either cap is hit.
    Returns (samples_ns, measured_ns, wall_ns from the first start to the last end).

    The minimum duration counts measured inference time (the sum of the samples, what a result
    calls total_seconds), so a result's total is never short of what the job asked for; the
    maximum counts wall time, because it is there to bound how long the device is busy.
    Progress says ``report_target`` runs are the target (default min_runs).
    """
    perf = time.perf_counter_ns
    samples: List[int] = []
    append = samples.append
    n = 0
    measured = 0
    target = min_runs if report_target is None else report_target
    start = perf()
    next_report = start + REPORT_INTERVAL_NS
    while True:
        t0 = perf()
        run()
        t1 = perf()
        dt = t1 - t0
        append(dt)
        n += 1
        measured += dt
        if n >= max_runs or t1 - start >= max_ns or (n >= min_runs and measured >= min_ns):
            break
        if t1 >= next_report:
            progress.report(phase, n, target, dt)
            next_report = t1 + REPORT_INTERVAL_NS
    return samples, measured, t1 - start


def warm_up(
    run: Callable[[], None],
    min_runs: int,
    min_ns: int,
    max_wall_ns: int,
    progress: ProgressWriter,
) -> Tuple[int, int, bool]:
    """Warm up until both minimums are met and latency has stopped trending, or until
    ``max_wall_ns`` of wall time. Returns (runs, measured_ns, steady)."""
    perf = time.perf_counter_ns
    detector = statistics.SteadyStateDetector()
    n = 0
    measured = 0
    start = perf()
    next_report = start + REPORT_INTERVAL_NS
    while True:
        t0 = perf()
        run()
        t1 = perf()
        dt = t1 - t0
        n += 1
        measured += dt
        detector.add(dt)
        if n >= min_runs and measured >= min_ns and detector.steady:
            return n, measured, True
        if t1 - start >= max_wall_ns:
            return n, measured, False
        if t1 >= next_report:
            progress.report("warmup", n, 0, dt)
            next_report = t1 + REPORT_INTERVAL_NS


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when the agent that started it dies (Linux), so a
    benchmark never outlives its agent to run beside the job's next attempt. The parent may
    have died before the request took effect: then stop now."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent_pid and os.getppid() != parent_pid:
        os._exit(3)


def read_governor(cpu: int) -> Tuple[Optional[str], str]:
    path = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
    try:
        with open(path) as f:
            return f.read().strip(), path
    except OSError as exc:
        return None, f"{path} is not readable ({exc.strerror or exc}); no cpufreq driver on this machine"


@dataclass
class RunPlan:
    """The run parameters the parent resolved for this job (harness.resolve_settings): the
    job's value where set, else the profile's default. The parent-only limits (time, memory)
    are not here: the parent enforces the timeout, and the memory limit is the spec's."""

    warmup_runs: int
    warmup_seconds: float
    warmup_max_seconds: float
    min_runs: int
    min_seconds: float
    max_runs: int
    max_seconds: float
    repeats: int = 1
    sustained_seconds: float = 0.0  # > 0: sustained mode, the timed phase lasts this long
    sustained_max_runs: int = 0  # the safety cap on runs in sustained mode

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RunPlan":
        # The parent's dict also holds its own limits (timeout_seconds, memory_limit_bytes).
        return cls(**{f.name: d[f.name] for f in fields(cls) if d.get(f.name) is not None})


@dataclass
class ChildSpec:
    """Everything the measured process is told, built by the parent (harness.py) and written
    as JSON to the file named on the command line; parsed back here before anything runs."""

    model_format: str
    settings: JobSettings
    plan: RunPlan
    result_path: str
    model_path: str = ""
    inputs_path: Optional[str] = None  # a local .npz; None: random inputs from the seed
    pin_cores: List[int] = field(default_factory=list)
    plugins: List[str] = field(default_factory=list)  # runtime plugin modules to import
    memory_limit_bytes: int = 0  # 0: no address-space limit
    progress_fd: int = -1  # where progress lines go; -1: nowhere
    repeat_index: int = 0
    parent_pid: int = 0  # 0: not known, so not watched
    sandbox: Optional[Dict[str, Any]] = None  # sandbox.plan(): what to hide and bind

    def to_dict(self) -> Dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["settings"] = self.settings.to_dict()
        d["resolved"] = asdict(d.pop("plan"))  # the key the spec has always had
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ChildSpec":
        return cls(
            model_format=d["model_format"],
            settings=JobSettings.from_dict(d["settings"]),
            plan=RunPlan.from_dict(d["resolved"]),
            result_path=d["result_path"],
            model_path=d.get("model_path") or "",
            inputs_path=d.get("inputs_path") or None,
            pin_cores=[int(c) for c in d.get("pin_cores") or []],
            plugins=list(d.get("plugins") or []),
            memory_limit_bytes=int(d.get("memory_limit_bytes") or 0),
            progress_fd=int(d.get("progress_fd", -1)),
            repeat_index=int(d.get("repeat_index", 0)),
            parent_pid=int(d.get("parent_pid") or 0),
            sandbox=d.get("sandbox"),
        )

    def write(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def read(cls, path: str) -> "ChildSpec":
        with open(path) as f:
            return cls.from_dict(json.load(f))


# ---------------------------------------------------------------- the protocol, one step each


def pin(spec: ChildSpec) -> None:
    """Step 1: pin to the profile's cores, before anything else allocates threads."""
    if spec.pin_cores:
        try:
            os.sched_setaffinity(0, spec.pin_cores)
        except (OSError, AttributeError, ValueError) as exc:
            raise JobFailed(
                FailureCategory.CONFIGURATION,
                f"cannot pin the benchmark to cores {spec.pin_cores}: {exc}; check pin_cores in the device profile",
            ) from exc


def import_runtime(spec: ChildSpec) -> Any:
    """Step 2: import numpy and the runtime library; returns the runtime class. The harness's
    own modules come now too: whatever is imported after the baseline counts as the model's."""
    import numpy as np  # noqa: F401  (imported before the baseline on purpose)

    from hilfarm.agent import capabilities, inputs, runtimes  # noqa: F401  (the later steps use them)

    runtimes.load_plugins(spec.plugins)
    runtimes.load_plugins()  # and any named in $HILFARM_RUNTIME_PLUGINS
    cls = runtimes.runtime_for(spec.settings, spec.model_format)
    try:
        cls.probe()  # imports the library now, before the baseline
    except JobFailed:
        raise
    except Exception as exc:
        raise JobFailed(
            FailureCategory.DEVICE_FAULT,
            f"runtime {cls.name} is not usable on this device: {type(exc).__name__}: {exc}",
        ) from exc
    return cls


def limit_and_baseline(spec: ChildSpec, runtime_name: str, result: BenchmarkResult) -> bool:
    """Steps 3 and 4: the address-space limit, then the baseline memory figures (after the
    imports, so the model's delta is the model's). Returns whether /proc/self/status exists."""
    mem = result.memory
    limit = spec.memory_limit_bytes
    have_proc = os.path.exists("/proc/self/status")
    if limit > 0:
        import resource

        vm_size = read_proc_status().get("VmSize", 0) if have_proc else 0
        resource.setrlimit(resource.RLIMIT_AS, (vm_size + limit, vm_size + limit))
    if have_proc:
        base = read_proc_status()
        mem.baseline_peak_bytes = base.get("VmHWM")
        mem.baseline_rss_bytes = base.get("VmRSS")
        mem.source = (f"/proc/self/status VmHWM/VmRSS of the child; baseline read after importing "
                      f"{runtime_name}, before loading the model")
    try:
        mem.model_file_bytes = os.path.getsize(spec.model_path) if spec.model_path else None
    except OSError:
        mem.model_file_bytes = None
    if mem.model_file_bytes is None:
        result.unavailable.append(Unavailable("memory.model_file_bytes", "the job has no model file"))
    return have_proc


def load(spec: ChildSpec, cls: Any, result: BenchmarkResult, progress: ProgressWriter) -> Tuple[Any, Any]:
    """Step 5a: load the model (load_seconds) and prepare its inputs. Returns (runtime, inputs)."""
    from hilfarm.agent import inputs as inputs_mod

    settings = spec.settings
    runtime = cls(settings)
    progress.report("loading")
    t0 = time.perf_counter_ns()
    runtime.load(spec.model_path)
    result.latency.load_seconds = (time.perf_counter_ns() - t0) / 1e9

    specs = runtime.input_specs()
    if spec.inputs_path:
        prepared = inputs_mod.npz_inputs(specs, spec.inputs_path, settings.inputs_sha256)
    else:
        prepared = inputs_mod.random_inputs(specs, settings.input_shapes, settings.seed,
                                             dynamic_default=settings.dynamic_dimension_default)
    runtime.prepare(prepared.feeds)
    result.warnings.extend(prepared.warnings)
    return runtime, prepared


def warmup(run: Callable[[], None], plan: RunPlan, result: BenchmarkResult,
           progress: ProgressWriter) -> Tuple[bool, float]:
    """Steps 5b and 6: the first inference, then warmup until steady. Returns (steady, the
    warmup's wall-time cap in seconds)."""
    lat = result.latency
    progress.report("warmup")
    t0 = time.perf_counter_ns()
    run()
    lat.first_inference_seconds = (time.perf_counter_ns() - t0) / 1e9
    warm_max = max(float(plan.warmup_max_seconds), float(plan.warmup_seconds))
    warm_runs, warm_ns, steady = warm_up(
        run, plan.warmup_runs, int(plan.warmup_seconds * 1e9), int(warm_max * 1e9), progress,
    )
    lat.warmup_runs = warm_runs
    lat.warmup_seconds = warm_ns / 1e9
    if not steady:
        result.warnings.append(
            f"latency was still trending after {warm_max:g} s of warmup (warmup_max_seconds): the timed "
            f"runs may not be the steady state")
    return steady, warm_max


def timed_phase(run: Callable[[], None], plan: RunPlan, result: BenchmarkResult,
                progress: ProgressWriter) -> List[int]:
    """Step 7: the timed runs (in sustained mode: for sustained_seconds of wall time)."""
    sustained = float(plan.sustained_seconds or 0.0)
    if sustained > 0:
        # Sustained mode: wall time alone ends the phase; the run count is only a safety cap.
        cap = int(plan.sustained_max_runs)
        progress.report("measuring", 0, 0)
        samples, _measured, wall_ns = timed_loop(
            run, cap, 1 << 62, cap, int(sustained * 1e9), progress, "measuring", report_target=0,
        )
        if len(samples) >= cap:
            result.warnings.append(
                f"the sustained run stopped at its safety cap of {cap} runs after {wall_ns / 1e9:.1f} s "
                f"of the {sustained:g} s asked for")
    else:
        progress.report("measuring", 0, plan.min_runs)
        samples, _measured, wall_ns = timed_loop(
            run, plan.min_runs, int(plan.min_seconds * 1e9),
            plan.max_runs, int(plan.max_seconds * 1e9), progress, "measuring",
        )
    result.timed_wall_seconds = wall_ns / 1e9
    return samples


def summarize(samples: List[int], warm_steady: bool, warm_max: float, result: BenchmarkResult) -> List[str]:
    """Step 8a: latency figures and whether the runs were one steady state. Returns the reasons
    they were not (empty when steady)."""
    lat = result.latency
    lat.samples_ns = samples
    figures, missing = statistics.summarize(samples)
    for k, v in figures.items():
        setattr(lat, k, v)
    result.unavailable.extend(Unavailable(f, why) for f, why in missing)
    reasons = statistics.stability_reasons(samples)
    if not warm_steady:
        reasons.insert(0, f"warmup did not reach a steady state within {warm_max:g} s")
    result.stability = Stability(steady=not reasons, reasons=reasons)
    result.warnings.extend(w for w in reasons if not w.startswith("warmup did not"))
    result.warnings.extend(statistics.stability_notes(samples) if not reasons else [])
    return reasons


def peak_memory(have_proc: bool, result: BenchmarkResult) -> None:
    """Step 8b: VmHWM again, and the model's share of it."""
    mem = result.memory
    if have_proc:
        end = read_proc_status()
        mem.peak_bytes = end.get("VmHWM")
        if mem.peak_bytes is not None and mem.baseline_peak_bytes is not None:
            mem.model_delta_bytes = mem.peak_bytes - mem.baseline_peak_bytes
    else:
        for f in ("baseline_peak_bytes", "baseline_rss_bytes", "peak_bytes", "model_delta_bytes"):
            result.unavailable.append(Unavailable(f"memory.{f}", "/proc/self/status does not exist on this OS"))


def profile_ops(spec: ChildSpec, runtime: Any, result: BenchmarkResult) -> None:
    """Step 9: the per-operator profile, after the timed phase and the memory figures
    (profiling slows every node and allocates). Once per job, in its last process: the
    operators do not change between processes."""
    last_repeat = spec.repeat_index == int(spec.plan.repeats) - 1
    if spec.settings.profile_ops and last_repeat:
        from hilfarm.agent.runtimes.op_profile import profile_after_run

        result.op_profile = profile_after_run(runtime, spec.settings.profile_ops_runs)


def describe_environment(spec: ChildSpec, runtime: Any, prepared: Any, result: BenchmarkResult) -> None:
    """What the result was measured on: the system, the runtime and its settings, the inputs."""
    from hilfarm.agent.capabilities import system_info

    env = result.environment
    info = system_info()
    env.os, env.kernel, env.machine, env.python_version = (
        info["os"], info["kernel"], info["machine"], info["python_version"],
    )
    desc = runtime.describe()
    env.runtime, env.runtime_version = desc.name, desc.version
    env.execution_provider, env.threads = desc.execution_provider, desc.threads
    env.runtime_settings = desc.settings_text()
    env.input_shapes = prepared.shapes
    env.input_source = prepared.source
    env.simulated = False
    governor, why = read_governor(spec.pin_cores[0] if spec.pin_cores else 0)
    if governor is None:
        result.unavailable.append(Unavailable("environment.governor", why))
    else:
        env.governor = governor
    if desc.threads == 0:
        result.unavailable.append(Unavailable("environment.threads", f"{desc.name} chose its default thread count"))


def repeat_stats(spec: ChildSpec, started_at: float, samples: List[int], reasons: List[str],
                 result: BenchmarkResult) -> RepeatStats:
    """This process's figures as one repeat of the job (the parent joins the repeats)."""
    lat, mem = result.latency, result.memory
    repeat = RepeatStats(index=spec.repeat_index, started_at=started_at)
    repeat.steady = not reasons
    repeat.count = len(samples)
    repeat.load_seconds, repeat.first_inference_seconds = lat.load_seconds, lat.first_inference_seconds
    repeat.warmup_runs, repeat.warmup_seconds = lat.warmup_runs, lat.warmup_seconds
    repeat.p50_seconds, repeat.mean_seconds, repeat.p99_seconds = lat.p50_seconds, lat.mean_seconds, lat.p99_seconds
    repeat.min_seconds = lat.min_seconds
    repeat.cv, repeat.drift_ratio, repeat.peak_bytes = lat.cv, lat.drift_ratio, mem.peak_bytes
    repeat.warnings = list(reasons)
    repeat.wall_seconds = time.time() - started_at
    return repeat


def benchmark(spec: ChildSpec, progress: ProgressWriter, sandbox_notes: Sequence[str] = ()) -> Dict[str, Any]:
    """Steps 1 to 9 in order (the module's docstring says why this order)."""
    started_at = time.time()
    pin(spec)
    cls = import_runtime(spec)
    result = BenchmarkResult()
    result.warnings.extend(sandbox_notes)
    have_proc = limit_and_baseline(spec, cls.name, result)
    runtime, prepared = load(spec, cls, result, progress)
    try:
        warm_steady, warm_max = warmup(runtime.run, spec.plan, result, progress)
        samples = timed_phase(runtime.run, spec.plan, result, progress)
    except JobFailed:
        raise
    except Exception as exc:
        raise runtime.classify_run_error(exc) from exc
    sustained = float(spec.plan.sustained_seconds or 0.0) > 0
    progress.report("measuring", len(samples), 0 if sustained else spec.plan.min_runs, samples[-1])
    reasons = summarize(samples, warm_steady, warm_max, result)
    peak_memory(have_proc, result)
    profile_ops(spec, runtime, result)
    describe_environment(spec, runtime, prepared, result)
    result.repeats = [repeat_stats(spec, started_at, samples, reasons, result)]
    return result.to_dict()


def _write_atomic(path: str, obj: Dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def main(argv: List[str]) -> int:
    spec = ChildSpec.read(argv[1])
    from hilfarm.agent import sandbox

    sandbox_notes, moved = sandbox.enter(spec.sandbox)  # first: nothing has started a thread yet
    spec = replace(spec, **moved)  # the job's model and inputs, bound where the child can still read them
    # After the sandbox: entering a user namespace may reset the parent-death signal.
    die_with_parent(spec.parent_pid)
    progress = ProgressWriter(spec.progress_fd, time.monotonic())

    try:
        outcome: Dict[str, Any] = {"result": benchmark(spec, progress, sandbox_notes)}
    except JobFailed as exc:
        outcome = {"failure": exc.failure.to_dict()}
    except MemoryError as exc:
        outcome = {"failure": {
            "category": FailureCategory.OUT_OF_MEMORY.value,
            "message": f"ran out of memory: {exc}",
            "signal": 0,
            "detail": traceback.format_exc(),
        }}
    except Exception:
        outcome = {"failure": {
            "category": FailureCategory.INFRASTRUCTURE.value,
            "message": "the benchmark harness failed unexpectedly (a bug in the agent)",
            "signal": 0,
            "detail": traceback.format_exc(),
        }}
    _write_atomic(spec.result_path, outcome)
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: the result is written, and some runtimes' destructors are
    # slow or crash at exit, which would only blur how the job ended.
    os._exit(code)
