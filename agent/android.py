"""Phones: an agent on a host that drives one Android device over adb.

`hilfarm agent run --adb-serial SERIAL --profile android-phone` runs on a Linux host with
Debian's ``adb``; one agent per phone serial. For each job it pushes the model to the phone,
runs the runtime's own benchmark binary named in the profile (``android.benchmark_binaries``:
TFLite's ``benchmark_model``, ONNX Runtime's ``onnxruntime_perf_test``), pinned with
``taskset`` to the profile's cores, and parses what the binary prints into the result. While it
runs, the host samples the phone's battery current and voltage (``adb shell cat
/sys/class/power_supply/battery/...``) and ``adb shell dumpsys thermalservice``.

Neither binary prints every inference's time: the result carries the binary's own summary
(count, min, mean, max, std; ONNX Runtime's percentiles), raw samples are unavailable with
that reason. Per-operator times come from ``benchmark_model --enable_op_profiling=true``.

Every adb call goes through an :class:`AdbRunner`; tests replace it with recorded outputs of
each binary and Android version (tests/fixtures/commands/android-adb), and those results are
labelled recorded.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from hilfarm.agent.results import (
    BenchmarkResult, Capabilities, Failure, FailureCategory, JobFailed, JobOutcome, JobSettings, OpProfile,
    RuntimeInfo, Unavailable,
)
from hilfarm.agent.sensors import SensorUnavailable, SysRoot

REMOTE_DIR = "/data/local/tmp/hilfarm"
DEFAULT_BINARIES = {"tflite": "/data/local/tmp/benchmark_model",
                    "onnxruntime": "/data/local/tmp/onnxruntime_perf_test"}


class AdbError(Exception):
    """adb failed; the message says how, for a person to act on."""


class NoDevice(AdbError):
    """The phone with this serial is not attached (or not authorised)."""


# ---------------------------------------------------------------- running adb


class AdbRunner:
    """Runs ``adb -s SERIAL ARGS...`` on this host and returns what it printed (stdout+stderr)."""

    def __init__(self, serial: str, adb: str = "adb") -> None:
        self.serial = serial
        self.adb = adb
        self.recorded = ""  # non-empty for recorded outputs: what was recorded

    def __call__(self, args: Sequence[str], timeout: float = 30.0, cancel: Optional[threading.Event] = None) -> str:
        command = [self.adb, "-s", self.serial] + list(args)
        try:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except FileNotFoundError:
            raise AdbError(f"{self.adb!r} is not installed on this host (Debian: apt install adb)") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                out, _ = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if (cancel is not None and cancel.is_set()) or time.monotonic() > deadline:
                    proc.kill()
                    proc.communicate()
                    if cancel is not None and cancel.is_set():
                        raise AdbError("cancelled") from None
                    raise AdbError(f"`adb -s {self.serial} {' '.join(args)[:80]}` did not finish within {timeout:g} s")
        text = out.decode("utf-8", "replace")
        check_no_device(text, self.serial)
        if proc.returncode != 0:
            raise AdbError(f"`adb -s {self.serial} {' '.join(args)[:80]}` failed with status {proc.returncode}: "
                           f"{text.strip()[-300:]}")
        return text


_NO_DEVICE = re.compile(r"error: (device '[^']*' not found|device not found|no devices/emulators found|"
                        r"device unauthorized|device offline)")


def check_no_device(text: str, serial: str) -> None:
    m = _NO_DEVICE.search(text)
    if not m:
        return
    what = m.group(1)
    if "unauthorized" in what:
        raise NoDevice(f"Android device {serial} is attached but has not authorised this host: accept the USB "
                       f"debugging prompt on the phone (adb says: {what})")
    if "offline" in what:
        raise NoDevice(f"Android device {serial} is offline: reconnect it or restart adb (adb says: {what})")
    raise NoDevice(f"no Android device with serial {serial} is attached to this host: check the cable, "
                   f"USB debugging and `adb devices` (adb says: {what})")


class RecordedAdb:
    """Answers adb calls from recorded outputs: ``shell CMD`` from ``<dir>/<command>.txt``
    (named as RecordedRunner names them) with ``benchmark_model``/``onnxruntime_perf_test`` output
    looked up by the binary's name; push and the rest succeed without doing anything. For tests
    and demos: every result it yields is labelled recorded."""

    def __init__(self, directory: Union[str, Path], description: str, serial: str = "recorded") -> None:
        self.directory = Path(directory)
        self.serial = serial
        self.recorded = description
        self.calls: List[List[str]] = []

    def __call__(self, args: Sequence[str], timeout: float = 30.0, cancel: Optional[threading.Event] = None) -> str:
        self.calls.append(list(args))
        if not args or args[0] != "shell":
            return ""
        words = shlex.split(" ".join(args[1:]))
        if words[:1] == ["taskset"]:
            words = words[2:]
        name = os.path.basename(words[0]) if words else ""
        if name in ("test", "mkdir", "chmod", "rm", "pkill"):
            path = words[-1]
            if name == "test" and not (self.directory / "files" / path.lstrip("/")).exists() and \
                    not (self.directory / f"{os.path.basename(path)}.txt").exists():
                raise AdbError(f"`adb shell test -e {path}` failed with status 1")
            return ""
        if name == "cat":
            f = self.directory / "files" / words[1].lstrip("/")
            if not f.is_file():
                return f"cat: {words[1]}: No such file or directory\n"
            return f.read_text()
        from hilfarm.agent.sensors import recorded_command_filename

        candidates = [self.directory / f"{name}.txt", self.directory / recorded_command_filename(words)]
        for c in candidates:
            if c.is_file():
                return c.read_text()
        raise AdbError(f"no recorded output for `adb shell {' '.join(words)}` in {self.directory}")


Runner = Callable[..., str]


# ---------------------------------------------------------------- the phone


class AdbSysRoot(SysRoot):
    """The phone's sysfs as the sensors read it: each file through ``adb shell cat``."""

    def __init__(self, run: Runner) -> None:
        super().__init__("/")
        self.run = run

    def exists(self, rel: str) -> bool:
        return not self.read_text_or_none(rel) is None

    def read_text_or_none(self, rel: str) -> Optional[str]:
        try:
            text = self.run(["shell", "cat", self.display(rel)], timeout=10)
        except AdbError:
            return None
        if "No such file" in text or "Permission denied" in text:
            return None
        return text

    def read_text(self, rel: str) -> str:
        try:
            text = self.run(["shell", "cat", self.display(rel)], timeout=10)
        except AdbError as exc:
            raise SensorUnavailable(str(exc)) from None
        if "No such file" in text:
            raise SensorUnavailable(f"{self.display(rel)} does not exist on the phone")
        if "Permission denied" in text:
            raise SensorUnavailable(f"{self.display(rel)} is not readable by adb's shell user (permission denied)")
        return text.rstrip("\n").rstrip("\0")

    def glob(self, pattern: str) -> List[str]:
        return []

    @property
    def simulated(self) -> bool:
        return False


class AdbShell:
    """A command runner for the command sensors (dumpsys): ``adb shell ARGV``."""

    def __init__(self, run: Runner) -> None:
        self.run = run

    def __call__(self, argv: Sequence[str]) -> str:
        try:
            return self.run(["shell"] + [shlex.quote(a) for a in argv], timeout=10)
        except AdbError as exc:
            raise SensorUnavailable(str(exc)) from None


@dataclass
class PhoneFacts:
    serial: str
    model: str = ""
    android: str = ""
    sdk: str = ""
    abi: str = ""
    kernel: str = ""
    cores: int = 0
    memory_bytes: int = 0


def phone_facts(run: Runner) -> PhoneFacts:
    """What the phone says about itself (raises NoDevice when it is not attached)."""
    def prop(name: str) -> str:
        return run(["shell", "getprop", name], timeout=15).strip()

    serial = getattr(run, "serial", "")
    facts = PhoneFacts(serial=serial, model=prop("ro.product.model"), android=prop("ro.build.version.release"),
                       sdk=prop("ro.build.version.sdk"), abi=prop("ro.product.cpu.abi"))
    try:
        facts.kernel = run(["shell", "uname", "-r"], timeout=15).strip()
        possible = run(["shell", "cat", "/sys/devices/system/cpu/possible"], timeout=15).strip()
        m = re.fullmatch(r"(\d+)-(\d+)", possible)
        facts.cores = int(m.group(2)) - int(m.group(1)) + 1 if m else 0
        meminfo = run(["shell", "cat", "/proc/meminfo"], timeout=15)
        m = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
        facts.memory_bytes = int(m.group(1)) * 1024 if m else 0
    except AdbError as exc:
        if isinstance(exc, NoDevice):
            raise
    return facts


def binaries(android_section: Dict[str, object]) -> Dict[str, str]:
    found = dict(DEFAULT_BINARIES)
    found.update({str(k): str(v) for k, v in dict(android_section.get("benchmark_binaries") or {}).items()})
    return found


def phone_capabilities(run: Runner, android_section: Dict[str, object]) -> Tuple[Capabilities, PhoneFacts]:
    facts = phone_facts(run)
    caps = Capabilities(cpu_cores=facts.cores, memory_bytes=facts.memory_bytes, machine=facts.abi,
                        os=f"Android {facts.android} (SDK {facts.sdk}), {facts.model}", kernel=facts.kernel,
                        python_version="")
    for runtime, path in binaries(android_section).items():
        try:
            run(["shell", "test", "-x", path], timeout=15)
        except NoDevice:
            raise
        except AdbError:
            caps.absent[runtime] = f"{path} is not on the phone (adb push {os.path.basename(path)} {path})"
            continue
        caps.runtimes.append(RuntimeInfo(name=runtime, version="", package=os.path.basename(path),
                                         execution_providers=["CPU"]))
    return caps, facts


# ---------------------------------------------------------------- parsing the binaries' output


@dataclass
class ParsedRun:
    init_seconds: Optional[float] = None
    first_seconds: Optional[float] = None
    warmup_mean_seconds: Optional[float] = None
    warmup_runs: int = 0
    count: int = 0
    min_seconds: Optional[float] = None
    mean_seconds: Optional[float] = None
    max_seconds: Optional[float] = None
    std_seconds: Optional[float] = None
    percentiles: Dict[str, float] = field(default_factory=dict)  # p50_seconds ... from the binary
    memory_bytes: Optional[int] = None
    memory_source: str = ""
    delegate: str = ""
    version: str = ""
    warnings: List[str] = field(default_factory=list)


_NUM = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def parse_benchmark_model(text: str) -> ParsedRun:
    """TFLite ``benchmark_model``'s summary. The warmup and regular phases each print a
    ``count=N first=F curr=C min=m max=M avg=A std=S`` line (µs; the second is the timed one),
    then ``Inference timings in us: Init: X, First inference: Y, Warmup (avg): Z, Inference
    (avg): W`` (numbers may be printed as 2.71985e+06) and ``Memory footprint delta from the
    start of the tool (MB): init=... overall=...``. Lines may carry an ``INFO: `` prefix."""
    r = ParsedRun()
    # Only the phases' own lines: the op profiler's "Timings (microseconds): count=..." is not one.
    stats = re.findall(rf"^(?:INFO: )?count={_NUM}\s+first={_NUM}\s+curr={_NUM}\s+min={_NUM}\s+max={_NUM}\s+avg={_NUM}\s+std={_NUM}",
                       text, re.M)
    m = re.search(rf"Inference timings in us:\s*Init:\s*{_NUM},\s*First inference:\s*{_NUM},\s*"
                  rf"Warmup \(avg\):\s*{_NUM},\s*Inference \(avg\):\s*{_NUM}", text)
    if not stats and not m:
        err = next((ln.strip() for ln in text.splitlines() if re.search(r"ERROR|Failed|failed|error", ln)), "")
        raise JobFailed(FailureCategory.RUNTIME_CRASH,
                        "benchmark_model printed no timings" + (f": {err[:300]}" if err else ""), detail=text[-4000:])
    if m:
        r.init_seconds, r.first_seconds, r.warmup_mean_seconds, r.mean_seconds = (float(x) / 1e6 for x in m.groups())
    if stats:
        timed = stats[-1]
        r.count = int(float(timed[0]))
        r.min_seconds, r.max_seconds = float(timed[3]) / 1e6, float(timed[4]) / 1e6
        r.mean_seconds = float(timed[5]) / 1e6
        r.std_seconds = float(timed[6]) / 1e6
        if len(stats) > 1:
            r.warmup_runs = int(float(stats[0][0]))
    # TFLite <= 2.5 print "Peak memory footprint (MB): init=.. overall=..", later ones "Memory
    # footprint delta from the start of the tool (MB): ...".
    mem = re.search(rf"(Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\):\s*"
                    rf"init={_NUM}\s+overall={_NUM}", text)
    if mem:
        r.memory_bytes = int(float(mem.group(3)) * 1024 * 1024)
        r.memory_source = f"benchmark_model: {mem.group(1).lower()} (overall; the tool says approximate)"
    peak = re.search(rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*{_NUM}", text)
    if peak:
        r.memory_bytes = int(float(peak.group(1)) * 1024 * 1024)
        r.memory_source = "benchmark_model: overall peak memory footprint via periodic monitoring"
    d = re.search(r"Created TensorFlow Lite ([A-Za-z0-9 ]+?) delegate", text) or \
        re.search(r"Explicitly applied ([A-Za-z0-9 ]+?) delegate", text)
    r.delegate = d.group(1) if d else "builtin kernels"
    partial = re.search(r"partially executed by the delegate w/ (\d+) delegate kernels", text)
    if partial:
        r.warnings.append(f"the {r.delegate} delegate ran only part of the model ({partial.group(1)} delegate "
                          f"kernels); the rest ran on the CPU")
    return r


def parse_onnxruntime_perf_test(text: str) -> ParsedRun:
    """ONNX Runtime's ``onnxruntime_perf_test`` summary: ``Session creation time cost: S s``,
    ``First inference time cost: N ms``, ``Total inference requests: N``, ``Average inference
    time cost: N ms``, ``Peak working set size: N bytes``, ``Min Latency: S s``, ``Max
    Latency``, ``P50/P90/P95/P99/P999 Latency: S s``."""
    r = ParsedRun()

    def num(pattern: str) -> Optional[float]:
        m = re.search(pattern + rf"\s*:?\s*{_NUM}", text)
        return float(m.group(1)) if m else None

    avg_ms = num(r"Average inference time cost")
    runs = num(r"Total inference requests") or num(r"Runs")
    if avg_ms is None or runs is None:
        err = next((ln.strip() for ln in text.splitlines() if re.search(r"\[E:|error|Error|failed", ln)), "")
        raise JobFailed(FailureCategory.RUNTIME_CRASH,
                        "onnxruntime_perf_test printed no timings" + (f": {err[:300]}" if err else ""),
                        detail=text[-4000:])
    r.mean_seconds = avg_ms / 1e3
    r.count = int(runs)
    created = num(r"Session creation time cost")
    r.init_seconds = created
    first = num(r"First inference time cost")
    r.first_seconds = first / 1e3 if first is not None else None
    r.min_seconds = num(r"Min Latency")
    r.max_seconds = num(r"Max Latency")
    for p in ("50", "90", "95", "99"):
        v = num(rf"P{p} Latency")
        if v is not None:
            r.percentiles[f"p{p}_seconds"] = v
    peak = num(r"Peak working set size")
    if peak is not None:
        r.memory_bytes = int(peak)
        r.memory_source = "onnxruntime_perf_test: peak working set size"
    ep = re.search(r"Setting (\w+) as the execution provider|execution provider[:\s]+(\w+)", text)
    r.delegate = "CPUExecutionProvider"
    if ep:
        r.delegate = ep.group(1) or ep.group(2)
    return r


# ---------------------------------------------------------------- running a job


@dataclass
class AndroidJob:
    model_path: str
    model_format: str
    runtime: str
    settings: JobSettings
    sha256: str
    resolved: Dict[str, float]  # run parameters (harness.resolve_settings)


def _tflite_command(binary: str, remote_model: str, job: AndroidJob, taskset: str) -> List[str]:
    s, r = job.settings, job.resolved
    argv = [binary, f"--graph={remote_model}", f"--warmup_runs={int(r['warmup_runs'])}",
            f"--warmup_min_secs={r['warmup_seconds']:g}", f"--num_runs={int(r['min_runs'])}",
            f"--min_secs={r['min_seconds']:g}", f"--max_secs={r['max_seconds']:g}"]
    if s.threads:
        argv.append(f"--num_threads={s.threads}")
    if s.tflite_disable_xnnpack:
        argv.append("--use_xnnpack=false")
    if s.profile_ops:
        argv.append("--enable_op_profiling=true")
    return (["taskset", taskset] if taskset else []) + argv


def _ort_command(binary: str, remote_model: str, job: AndroidJob, taskset: str) -> List[str]:
    s, r = job.settings, job.resolved
    argv = [binary, "-m", "times", "-r", str(int(r["min_runs"])), "-e", "cpu", "-I"]
    if s.threads:
        argv += ["-x", str(s.threads)]
    argv += [remote_model, "/data/local/tmp/hilfarm/perf_test_result.txt"]
    return (["taskset", taskset] if taskset else []) + argv


def run_on_phone(run: Runner, job: AndroidJob, android_section: Dict[str, object],
                 cancel: Optional[threading.Event] = None,
                 on_phase: Optional[Callable[[str], None]] = None) -> JobOutcome:
    """Push the model, run the profile's benchmark binary, parse its output into a result."""
    phase = on_phase or (lambda _p: None)
    binary = binaries(android_section).get(job.runtime)
    if binary is None:
        raise JobFailed(FailureCategory.CONFIGURATION, f"this phone agent has no benchmark binary for runtime {job.runtime}")
    taskset = str(android_section.get("taskset", ""))
    remote = f"{REMOTE_DIR}/{job.sha256}.{job.model_format}"
    timeout = float(job.resolved.get("timeout_seconds") or 600)
    try:
        run(["shell", "test", "-x", binary], timeout=15)
    except NoDevice:
        raise
    except AdbError:
        raise JobFailed(FailureCategory.DEVICE_FAULT,
                        f"{binary} is not on the phone {getattr(run, 'serial', '')}: push the runtime's benchmark binary "
                        f"there (adb push {os.path.basename(binary)} {binary} && adb shell chmod +x {binary})") from None
    phase("fetching")
    try:
        run(["shell", "test", "-e", remote], timeout=15)
    except NoDevice:
        raise
    except AdbError:
        run(["shell", "mkdir", "-p", REMOTE_DIR], timeout=15)
        run(["push", job.model_path, remote], timeout=600, cancel=cancel)
    phase("measuring")
    command = (_tflite_command if job.runtime == "tflite" else _ort_command)(binary, remote, job, taskset)
    try:
        text = run(["shell", " ".join(shlex.quote(a) for a in command)], timeout=timeout, cancel=cancel)
    except AdbError as exc:
        if cancel is not None and cancel.is_set():
            return JobOutcome(cancelled=True)
        if isinstance(exc, NoDevice):
            raise
        if "did not finish" in str(exc):
            raise JobFailed(FailureCategory.TIMEOUT, f"{os.path.basename(binary)} ran past the job's time limit of "
                            f"{timeout:g} s on the phone and was stopped") from None
        raise JobFailed(FailureCategory.RUNTIME_CRASH, f"{os.path.basename(binary)} failed on the phone: {exc}",
                        detail=str(exc)) from None
    _check_model_errors(text, job.runtime)
    parsed = parse_benchmark_model(text) if job.runtime == "tflite" else parse_onnxruntime_perf_test(text)
    result = result_from_parsed(parsed, job, os.path.basename(binary))
    if job.settings.profile_ops:
        result.op_profile = _phone_op_profile(text, job.runtime, os.path.basename(binary), parsed)
    recorded = getattr(run, "recorded", "")
    if recorded:
        result.environment.recorded = True
        result.environment.recorded_sources.append(f"latency and memory: {recorded}")
    return JobOutcome(result=result)


def _check_model_errors(text: str, runtime: str) -> None:
    m = re.search(r"Encountered unresolved custom op: ([^\s.]+)", text)
    if m:
        from hilfarm.agent.runtimes.tflite import classify_tflite_error

        raise classify_tflite_error(RuntimeError(text[m.start():m.start() + 300]), "model load")
    if re.search(r"Failed to mmap model|Could not open|not a valid|failed to verify", text, re.I):
        raise JobFailed(FailureCategory.ARTIFACT_INVALID, "the phone's benchmark binary could not read the model "
                        "(truncated or not a model)", detail=text[-4000:])


def result_from_parsed(p: ParsedRun, job: AndroidJob, binary: str) -> BenchmarkResult:
    r = BenchmarkResult()
    lat, un = r.latency, r.unavailable
    lat.load_seconds, lat.first_inference_seconds = p.init_seconds, p.first_seconds
    lat.warmup_runs = p.warmup_runs
    lat.warmup_seconds = (p.warmup_mean_seconds * p.warmup_runs) if p.warmup_mean_seconds and p.warmup_runs else None
    lat.min_seconds, lat.mean_seconds, lat.max_seconds = p.min_seconds, p.mean_seconds, p.max_seconds
    lat.std_seconds = p.std_seconds
    lat.total_seconds = p.mean_seconds * p.count if p.mean_seconds is not None else None
    lat.throughput_per_second = 1.0 / p.mean_seconds if p.mean_seconds else None
    lat.cv = (p.std_seconds / p.mean_seconds) if (p.std_seconds is not None and p.mean_seconds) else None
    for name, value in p.percentiles.items():
        setattr(lat, name, value)
    why = f"{binary} prints a summary of its runs, not each inference's time"
    for name in ("p50_seconds", "p90_seconds", "p95_seconds", "p99_seconds", "std_seconds", "cv", "drift_ratio",
                 "min_seconds", "max_seconds", "warmup_seconds", "load_seconds", "first_inference_seconds"):
        if getattr(lat, name) is None:
            un.append(Unavailable(f"latency.{name}", why))
    un.append(Unavailable("latency.samples_ns", f"{why}: raw samples are not available from it"))
    lat.count = p.count
    mem = r.memory
    mem.peak_bytes = p.memory_bytes
    mem.source = p.memory_source
    try:
        mem.model_file_bytes = os.path.getsize(job.model_path)
    except OSError:
        pass
    for name in ("baseline_peak_bytes", "baseline_rss_bytes", "model_delta_bytes"):
        un.append(Unavailable(f"memory.{name}", f"{binary} reports no memory baseline"))
    if p.memory_bytes is None:
        un.append(Unavailable("memory.peak_bytes", f"{binary} printed no memory figure"))
    env = r.environment
    env.runtime = job.runtime
    env.runtime_version = p.version
    env.execution_provider = p.delegate
    env.threads = job.settings.threads
    env.runtime_settings = f"binary={binary}"
    if not p.version:
        un.append(Unavailable("environment.runtime_version", f"{binary} does not print its version"))
    r.warnings.extend(p.warnings)
    return r


def _phone_op_profile(text: str, runtime: str, binary: str, parsed: ParsedRun) -> OpProfile:
    from hilfarm.agent.runtimes import op_profile

    if runtime != "tflite":
        return OpProfile(source=binary, timing_unavailable=f"{binary} is run without its profiler on phones")
    ops = op_profile.parse_benchmark_model_op_profile(text)
    if not ops:
        return OpProfile(source=f"{binary} --enable_op_profiling=true",
                         timing_unavailable=f"{binary} printed no operator-wise profile")
    start = text.find(op_profile._BM_SECTION)
    profile = OpProfile(source=f"{binary} --enable_op_profiling=true (Run Order table)", runs=parsed.count, ops=ops,
                        trace_format="benchmark_model-text", trace=text[start:])
    return op_profile.finish(profile)
