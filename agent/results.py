"""Domain objects of the agent: job settings, progress, results and failures.

These are plain dataclasses. Protobuf messages never appear here; ``wire.py`` converts at the
boundary. A figure that was not measured is ``None`` here and is named in
``BenchmarkResult.unavailable`` with the reason.

The child process hands its outcome to the parent as JSON, so every object here converts to
and from a plain dict (``to_dict`` / ``*_from_dict``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from hilfarm.contract import FailureCategory  # noqa: F401  (the agent's name for it)

if TYPE_CHECKING:  # the child process never needs the telemetry types
    from hilfarm.agent.telemetry.sustained import SustainedSummary
    from hilfarm.agent.telemetry import TelemetryPoint, TelemetrySummary


@dataclass
class Failure:
    category: FailureCategory
    message: str
    signal: int = 0
    detail: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {
            "category": self.category.value,
            "message": self.message,
            "signal": self.signal,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Failure":
        return cls(
            category=FailureCategory(d["category"]),
            message=d["message"],
            signal=int(d.get("signal", 0)),
            detail=d.get("detail", ""),
        )


class JobFailed(Exception):
    """Raised anywhere in the agent to end a job with a categorised failure."""

    def __init__(self, category: FailureCategory, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.failure = Failure(category=category, message=message, detail=detail)


@dataclass
class JobSettings:
    """How one job is run. Zero / empty means "use the default" (see harness.resolve_settings)."""

    warmup_runs: int = 0
    warmup_seconds: float = 0.0
    min_runs: int = 0
    min_seconds: float = 0.0
    max_runs: int = 0
    max_seconds: float = 0.0
    threads: int = 0
    runtime: str = ""
    execution_provider: str = ""
    graph_optimization: str = ""
    tflite_disable_xnnpack: bool = False
    tflite_delegate_path: str = ""
    tflite_delegate_options: Dict[str, str] = field(default_factory=dict)
    # Input name -> concrete dims for its dynamic dimensions (insertion-ordered).
    input_shapes: Dict[str, List[int]] = field(default_factory=dict)
    inputs_sha256: str = ""
    seed: int = 0
    memory_limit_bytes: int = 0
    timeout_seconds: float = 0.0
    sustained_seconds: float = 0.0  # > 0: sustained mode (see agent/telemetry/sustained.py)
    repeats: int = 0  # fresh child processes to measure in (0: the profile's default)
    warmup_max_seconds: float = 0.0  # cap on warming up until steady (0: the profile's default)
    profile_ops: bool = False  # per-operator profile after the timed phase (agent/runtimes/op_profile.py)
    profile_ops_runs: int = 0  # profiled inferences; 0 = op_profile.DEFAULT_RUNS
    # > 0: the size of a dynamic dimension input_shapes leaves unset; 0: such a dimension fails the job.
    dynamic_dimension_default: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "JobSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Progress:
    phase: str  # fetching, loading, warmup, measuring, reporting
    runs_done: int = 0
    runs_target: int = 0
    elapsed_seconds: float = 0.0
    latest_latency_seconds: float = 0.0
    updated_at: float = 0.0
    # Sensor readings since the previous report, added by the agent (never by the child).
    telemetry: List["TelemetryPoint"] = field(default_factory=list)
    repeat: int = 0  # the repeat running now, from 1; set by the parent, not the child
    repeats: int = 0

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("telemetry")
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Progress":
        return cls(**{k: v for k, v in d.items() if k != "telemetry"})


@dataclass
class LatencyStats:
    load_seconds: Optional[float] = None
    first_inference_seconds: Optional[float] = None
    warmup_runs: int = 0
    warmup_seconds: Optional[float] = None
    samples_ns: List[int] = field(default_factory=list)
    total_seconds: Optional[float] = None
    min_seconds: Optional[float] = None
    mean_seconds: Optional[float] = None
    p50_seconds: Optional[float] = None
    p90_seconds: Optional[float] = None
    p95_seconds: Optional[float] = None
    p99_seconds: Optional[float] = None
    max_seconds: Optional[float] = None
    std_seconds: Optional[float] = None
    cv: Optional[float] = None
    throughput_per_second: Optional[float] = None
    drift_ratio: Optional[float] = None
    # Timed runs when there are no raw samples (a phone's benchmark binary prints only a summary).
    count: Optional[int] = None
    # Over several repeats: the figures above pool every repeat's samples; these say how far
    # apart the repeats were (see LatencyResult in the proto).
    repeats: int = 1
    repeat_p50_min_seconds: Optional[float] = None
    repeat_p50_max_seconds: Optional[float] = None
    between_repeat_spread: Optional[float] = None


@dataclass
class RepeatStats:
    """One child process of a job (RepeatResult on the wire)."""

    index: int = 0
    first_sample: int = 0  # where its samples begin in LatencyStats.samples_ns
    count: int = 0
    load_seconds: Optional[float] = None
    first_inference_seconds: Optional[float] = None
    warmup_runs: int = 0
    warmup_seconds: Optional[float] = None
    steady: bool = False  # warmup converged and the timed runs were one steady state
    p50_seconds: Optional[float] = None
    mean_seconds: Optional[float] = None
    p99_seconds: Optional[float] = None
    min_seconds: Optional[float] = None  # its fastest timed inference
    cv: Optional[float] = None
    drift_ratio: Optional[float] = None
    peak_bytes: Optional[int] = None
    started_at: float = 0.0
    wall_seconds: float = 0.0
    warnings: List[str] = field(default_factory=list)


@dataclass
class Stability:
    steady: bool = True
    reasons: List[str] = field(default_factory=list)


@dataclass
class BusyProcess:
    pid: int
    name: str
    cpu_cores: float


@dataclass
class DeviceActivity:
    """How quiet the device was while a job measured (agent/activity.py)."""

    load_average_start: Optional[float] = None
    load_average_end: Optional[float] = None
    other_cpu_cores: Optional[float] = None
    busy: List[BusyProcess] = field(default_factory=list)
    quiet: bool = True
    source: str = ""


@dataclass
class MemoryStats:
    baseline_peak_bytes: Optional[int] = None
    baseline_rss_bytes: Optional[int] = None
    peak_bytes: Optional[int] = None
    model_delta_bytes: Optional[int] = None
    model_file_bytes: Optional[int] = None
    source: str = ""


@dataclass
class Environment:
    agent_id: str = ""
    device_profile: str = ""
    hostname: str = ""
    os: str = ""
    kernel: str = ""
    machine: str = ""
    python_version: str = ""
    runtime: str = ""
    runtime_version: str = ""
    execution_provider: str = ""
    threads: int = 0
    governor: str = ""
    agent_version: str = ""
    simulated: bool = False
    input_shapes: Dict[str, List[int]] = field(default_factory=dict)
    input_source: str = ""
    runtime_settings: str = ""
    emulated: bool = False  # ran under an instruction-set emulator: timings are the emulator's
    emulation: str = ""  # which emulator, and how it was recognised
    recorded: bool = False  # some figures were read from recordings, not measured here
    recorded_sources: List[str] = field(default_factory=list)


@dataclass
class Unavailable:
    field: str
    reason: str


@dataclass
class OpTime:
    node: str
    op_type: str = ""
    provider: str = ""
    calls: int = 0
    mean_seconds: Optional[float] = None  # None: the runtime has no per-op timer
    share: Optional[float] = None
    order: int = 0


@dataclass
class OpProfile:
    """Per-operator profile of a job (JobSettings.profile_ops), taken after the timed phase."""

    source: str = ""
    runs: int = 0
    ops: List[OpTime] = field(default_factory=list)
    nodes_by_provider: Dict[str, int] = field(default_factory=dict)
    timing_unavailable: str = ""  # why ops have no times
    trace_format: str = ""
    trace: Optional[str] = None  # the runtime's own full trace (text); the controller stores it
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "OpProfile":
        d = dict(d)
        d["ops"] = [OpTime(**o) for o in d.get("ops", [])]
        return cls(**d)


@dataclass
class BenchmarkResult:
    latency: LatencyStats = field(default_factory=LatencyStats)
    memory: MemoryStats = field(default_factory=MemoryStats)
    environment: Environment = field(default_factory=Environment)
    unavailable: List[Unavailable] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    # Power, thermal and the timeline: measured by the agent outside the child, added after it.
    telemetry: Optional["TelemetrySummary"] = None
    # Sustained mode's windows, formed by the agent from the samples and the telemetry.
    sustained: Optional["SustainedSummary"] = None
    # Wall time of the timed phase, as the child measured it (not on the wire: it places the
    # samples on the telemetry's clock in sustained mode).
    timed_wall_seconds: Optional[float] = None
    repeats: List[RepeatStats] = field(default_factory=list)
    stability: Stability = field(default_factory=Stability)
    activity: Optional[DeviceActivity] = None
    op_profile: Optional[OpProfile] = None  # with JobSettings.profile_ops

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("telemetry")
        d.pop("sustained")
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "BenchmarkResult":
        activity = d.get("activity")
        if activity is not None:
            activity = dict(activity)
            activity["busy"] = [BusyProcess(**b) for b in activity.get("busy", [])]
            activity = DeviceActivity(**activity)
        return cls(
            latency=LatencyStats(**d.get("latency", {})),
            memory=MemoryStats(**d.get("memory", {})),
            environment=Environment(**d.get("environment", {})),
            unavailable=[Unavailable(**u) for u in d.get("unavailable", [])],
            warnings=list(d.get("warnings", [])),
            timed_wall_seconds=d.get("timed_wall_seconds"),
            repeats=[RepeatStats(**r) for r in d.get("repeats", [])],
            stability=Stability(**d.get("stability", {})),
            activity=activity,
            op_profile=OpProfile.from_dict(d["op_profile"]) if d.get("op_profile") else None,
        )


@dataclass
class JobOutcome:
    """What the harness hands back: a result, a failure, or a cancellation (neither)."""

    result: Optional[BenchmarkResult] = None
    failure: Optional[Failure] = None
    cancelled: bool = False


@dataclass
class RuntimeInfo:
    name: str
    version: str = ""
    package: str = ""
    execution_providers: List[str] = field(default_factory=list)


@dataclass
class Capabilities:
    runtimes: List[RuntimeInfo] = field(default_factory=list)
    cpu_cores: int = 0
    memory_bytes: int = 0
    machine: str = ""
    os: str = ""
    kernel: str = ""
    python_version: str = ""
    accelerators: List[str] = field(default_factory=list)
    emulation: str = ""  # non-empty: the agent runs under an emulator (agent/emulation.py)
    # Runtimes that failed to import, with the reason. Not on the wire; logged by the agent.
    absent: Dict[str, str] = field(default_factory=dict)


@dataclass
class LeasedJob:
    """One job the controller leased to this agent."""

    lease_id: str
    job_id: str
    attempt: int
    model_sha256: str
    model_format: str
    model_name: str = ""
    device_profile: str = ""
    expires_at: float = 0.0
    settings: JobSettings = field(default_factory=JobSettings)
