from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_LEASED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class FailureCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_CATEGORY_UNSPECIFIED: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_ARTIFACT_INVALID: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_UNSUPPORTED_OP: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_INPUT_MISMATCH: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_RUNTIME_CRASH: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_OUT_OF_MEMORY: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_TIMEOUT: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_DEVICE_FAULT: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_INFRASTRUCTURE: _ClassVar[FailureCategory]
    FAILURE_CATEGORY_CONFIGURATION: _ClassVar[FailureCategory]

class VerdictStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_STATUS_UNSPECIFIED: _ClassVar[VerdictStatus]
    VERDICT_STATUS_PASS: _ClassVar[VerdictStatus]
    VERDICT_STATUS_FAIL: _ClassVar[VerdictStatus]
    VERDICT_STATUS_UNKNOWN: _ClassVar[VerdictStatus]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_VIEWER: _ClassVar[Role]
    ROLE_SUBMITTER: _ClassVar[Role]
    ROLE_ADMIN: _ClassVar[Role]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_LEASED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
FAILURE_CATEGORY_UNSPECIFIED: FailureCategory
FAILURE_CATEGORY_ARTIFACT_INVALID: FailureCategory
FAILURE_CATEGORY_UNSUPPORTED_OP: FailureCategory
FAILURE_CATEGORY_INPUT_MISMATCH: FailureCategory
FAILURE_CATEGORY_RUNTIME_CRASH: FailureCategory
FAILURE_CATEGORY_OUT_OF_MEMORY: FailureCategory
FAILURE_CATEGORY_TIMEOUT: FailureCategory
FAILURE_CATEGORY_DEVICE_FAULT: FailureCategory
FAILURE_CATEGORY_INFRASTRUCTURE: FailureCategory
FAILURE_CATEGORY_CONFIGURATION: FailureCategory
VERDICT_STATUS_UNSPECIFIED: VerdictStatus
VERDICT_STATUS_PASS: VerdictStatus
VERDICT_STATUS_FAIL: VerdictStatus
VERDICT_STATUS_UNKNOWN: VerdictStatus
ROLE_UNSPECIFIED: Role
ROLE_VIEWER: Role
ROLE_SUBMITTER: Role
ROLE_ADMIN: Role

class ArtifactHeader(_message.Message):
    __slots__ = ("sha256", "size_bytes", "filename", "format")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    filename: str
    format: str
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., filename: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ArtifactHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ArtifactHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ArtifactRef(_message.Message):
    __slots__ = ("sha256", "size_bytes", "format", "filename", "already_stored", "bytes_received")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    ALREADY_STORED_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    format: str
    filename: str
    already_stored: bool
    bytes_received: int
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., format: _Optional[str] = ..., filename: _Optional[str] = ..., already_stored: bool = ..., bytes_received: _Optional[int] = ...) -> None: ...

class StatArtifactRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class StatArtifactResponse(_message.Message):
    __slots__ = ("present", "ref")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    present: bool
    ref: ArtifactRef
    def __init__(self, present: bool = ..., ref: _Optional[_Union[ArtifactRef, _Mapping]] = ...) -> None: ...

class DownloadArtifactRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("category", "message", "signal", "detail")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    category: FailureCategory
    message: str
    signal: int
    detail: str
    def __init__(self, category: _Optional[_Union[FailureCategory, str]] = ..., message: _Optional[str] = ..., signal: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class InputShape(_message.Message):
    __slots__ = ("name", "dims", "model_sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    dims: _containers.RepeatedScalarFieldContainer[int]
    model_sha256: str
    def __init__(self, name: _Optional[str] = ..., dims: _Optional[_Iterable[int]] = ..., model_sha256: _Optional[str] = ...) -> None: ...

class JobSettings(_message.Message):
    __slots__ = ("warmup_runs", "warmup_seconds", "min_runs", "min_seconds", "max_runs", "max_seconds", "threads", "runtime", "execution_provider", "graph_optimization", "tflite_disable_xnnpack", "tflite_delegate_path", "tflite_delegate_options", "input_shapes", "inputs_sha256", "seed", "memory_limit_bytes", "timeout_seconds", "sustained_seconds", "repeats", "warmup_max_seconds", "profile_ops", "profile_ops_runs", "dynamic_dimension_default")
    class TfliteDelegateOptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WARMUP_RUNS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_RUNS_FIELD_NUMBER: _ClassVar[int]
    MIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNS_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    GRAPH_OPTIMIZATION_FIELD_NUMBER: _ClassVar[int]
    TFLITE_DISABLE_XNNPACK_FIELD_NUMBER: _ClassVar[int]
    TFLITE_DELEGATE_PATH_FIELD_NUMBER: _ClassVar[int]
    TFLITE_DELEGATE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPES_FIELD_NUMBER: _ClassVar[int]
    INPUTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SUSTAINED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_OPS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_OPS_RUNS_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_DIMENSION_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    warmup_runs: int
    warmup_seconds: float
    min_runs: int
    min_seconds: float
    max_runs: int
    max_seconds: float
    threads: int
    runtime: str
    execution_provider: str
    graph_optimization: str
    tflite_disable_xnnpack: bool
    tflite_delegate_path: str
    tflite_delegate_options: _containers.ScalarMap[str, str]
    input_shapes: _containers.RepeatedCompositeFieldContainer[InputShape]
    inputs_sha256: str
    seed: int
    memory_limit_bytes: int
    timeout_seconds: float
    sustained_seconds: float
    repeats: int
    warmup_max_seconds: float
    profile_ops: bool
    profile_ops_runs: int
    dynamic_dimension_default: int
    def __init__(self, warmup_runs: _Optional[int] = ..., warmup_seconds: _Optional[float] = ..., min_runs: _Optional[int] = ..., min_seconds: _Optional[float] = ..., max_runs: _Optional[int] = ..., max_seconds: _Optional[float] = ..., threads: _Optional[int] = ..., runtime: _Optional[str] = ..., execution_provider: _Optional[str] = ..., graph_optimization: _Optional[str] = ..., tflite_disable_xnnpack: bool = ..., tflite_delegate_path: _Optional[str] = ..., tflite_delegate_options: _Optional[_Mapping[str, str]] = ..., input_shapes: _Optional[_Iterable[_Union[InputShape, _Mapping]]] = ..., inputs_sha256: _Optional[str] = ..., seed: _Optional[int] = ..., memory_limit_bytes: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., sustained_seconds: _Optional[float] = ..., repeats: _Optional[int] = ..., warmup_max_seconds: _Optional[float] = ..., profile_ops: bool = ..., profile_ops_runs: _Optional[int] = ..., dynamic_dimension_default: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("phase", "runs_done", "runs_target", "elapsed_seconds", "latest_latency_seconds", "updated_at", "telemetry", "repeat", "repeats")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    RUNS_DONE_FIELD_NUMBER: _ClassVar[int]
    RUNS_TARGET_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LATEST_LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    REPEAT_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    phase: str
    runs_done: int
    runs_target: int
    elapsed_seconds: float
    latest_latency_seconds: float
    updated_at: float
    telemetry: _containers.RepeatedCompositeFieldContainer[TelemetrySample]
    repeat: int
    repeats: int
    def __init__(self, phase: _Optional[str] = ..., runs_done: _Optional[int] = ..., runs_target: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ..., latest_latency_seconds: _Optional[float] = ..., updated_at: _Optional[float] = ..., telemetry: _Optional[_Iterable[_Union[TelemetrySample, _Mapping]]] = ..., repeat: _Optional[int] = ..., repeats: _Optional[int] = ...) -> None: ...

class TelemetrySample(_message.Message):
    __slots__ = ("t", "sensor", "quantity", "channel", "value", "simulated", "recorded")
    T_FIELD_NUMBER: _ClassVar[int]
    SENSOR_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    t: float
    sensor: str
    quantity: str
    channel: str
    value: float
    simulated: bool
    recorded: bool
    def __init__(self, t: _Optional[float] = ..., sensor: _Optional[str] = ..., quantity: _Optional[str] = ..., channel: _Optional[str] = ..., value: _Optional[float] = ..., simulated: bool = ..., recorded: bool = ...) -> None: ...

class LatencyResult(_message.Message):
    __slots__ = ("load_seconds", "first_inference_seconds", "warmup_runs", "warmup_seconds", "samples_ns", "total_seconds", "min_seconds", "mean_seconds", "p50_seconds", "p90_seconds", "p95_seconds", "p99_seconds", "max_seconds", "std_seconds", "cv", "throughput_per_second", "drift_ratio", "count", "repeats", "repeat_p50_min_seconds", "repeat_p50_max_seconds", "between_repeat_spread")
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_INFERENCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RUNS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_NS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P90_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P95_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P99_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CV_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    DRIFT_RATIO_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    REPEAT_P50_MIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPEAT_P50_MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BETWEEN_REPEAT_SPREAD_FIELD_NUMBER: _ClassVar[int]
    load_seconds: float
    first_inference_seconds: float
    warmup_runs: int
    warmup_seconds: float
    samples_ns: _containers.RepeatedScalarFieldContainer[int]
    total_seconds: float
    min_seconds: float
    mean_seconds: float
    p50_seconds: float
    p90_seconds: float
    p95_seconds: float
    p99_seconds: float
    max_seconds: float
    std_seconds: float
    cv: float
    throughput_per_second: float
    drift_ratio: float
    count: int
    repeats: int
    repeat_p50_min_seconds: float
    repeat_p50_max_seconds: float
    between_repeat_spread: float
    def __init__(self, load_seconds: _Optional[float] = ..., first_inference_seconds: _Optional[float] = ..., warmup_runs: _Optional[int] = ..., warmup_seconds: _Optional[float] = ..., samples_ns: _Optional[_Iterable[int]] = ..., total_seconds: _Optional[float] = ..., min_seconds: _Optional[float] = ..., mean_seconds: _Optional[float] = ..., p50_seconds: _Optional[float] = ..., p90_seconds: _Optional[float] = ..., p95_seconds: _Optional[float] = ..., p99_seconds: _Optional[float] = ..., max_seconds: _Optional[float] = ..., std_seconds: _Optional[float] = ..., cv: _Optional[float] = ..., throughput_per_second: _Optional[float] = ..., drift_ratio: _Optional[float] = ..., count: _Optional[int] = ..., repeats: _Optional[int] = ..., repeat_p50_min_seconds: _Optional[float] = ..., repeat_p50_max_seconds: _Optional[float] = ..., between_repeat_spread: _Optional[float] = ...) -> None: ...

class MemoryResult(_message.Message):
    __slots__ = ("baseline_peak_bytes", "baseline_rss_bytes", "peak_bytes", "model_delta_bytes", "model_file_bytes", "source")
    BASELINE_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    BASELINE_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_DELTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    baseline_peak_bytes: int
    baseline_rss_bytes: int
    peak_bytes: int
    model_delta_bytes: int
    model_file_bytes: int
    source: str
    def __init__(self, baseline_peak_bytes: _Optional[int] = ..., baseline_rss_bytes: _Optional[int] = ..., peak_bytes: _Optional[int] = ..., model_delta_bytes: _Optional[int] = ..., model_file_bytes: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class Environment(_message.Message):
    __slots__ = ("agent_id", "device_profile", "hostname", "os", "kernel", "machine", "python_version", "runtime", "runtime_version", "execution_provider", "threads", "governor", "agent_version", "simulated", "input_shapes", "input_source", "runtime_settings", "emulated", "emulation", "recorded", "recorded_sources")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    MACHINE_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    GOVERNOR_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    EMULATED_FIELD_NUMBER: _ClassVar[int]
    EMULATION_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    RECORDED_SOURCES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    device_profile: str
    hostname: str
    os: str
    kernel: str
    machine: str
    python_version: str
    runtime: str
    runtime_version: str
    execution_provider: str
    threads: int
    governor: str
    agent_version: str
    simulated: bool
    input_shapes: _containers.RepeatedCompositeFieldContainer[InputShape]
    input_source: str
    runtime_settings: str
    emulated: bool
    emulation: str
    recorded: bool
    recorded_sources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_id: _Optional[str] = ..., device_profile: _Optional[str] = ..., hostname: _Optional[str] = ..., os: _Optional[str] = ..., kernel: _Optional[str] = ..., machine: _Optional[str] = ..., python_version: _Optional[str] = ..., runtime: _Optional[str] = ..., runtime_version: _Optional[str] = ..., execution_provider: _Optional[str] = ..., threads: _Optional[int] = ..., governor: _Optional[str] = ..., agent_version: _Optional[str] = ..., simulated: bool = ..., input_shapes: _Optional[_Iterable[_Union[InputShape, _Mapping]]] = ..., input_source: _Optional[str] = ..., runtime_settings: _Optional[str] = ..., emulated: bool = ..., emulation: _Optional[str] = ..., recorded: bool = ..., recorded_sources: _Optional[_Iterable[str]] = ...) -> None: ...

class Unavailable(_message.Message):
    __slots__ = ("field", "reason")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    field: str
    reason: str
    def __init__(self, field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RailPower(_message.Message):
    __slots__ = ("rail", "mean_watts")
    RAIL_FIELD_NUMBER: _ClassVar[int]
    MEAN_WATTS_FIELD_NUMBER: _ClassVar[int]
    rail: str
    mean_watts: float
    def __init__(self, rail: _Optional[str] = ..., mean_watts: _Optional[float] = ...) -> None: ...

class PowerResult(_message.Message):
    __slots__ = ("idle_watts", "active_watts", "energy_per_inference_joules", "energy_method", "sensor", "sample_rate_hz", "rails", "simulated", "recorded")
    IDLE_WATTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_WATTS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_PER_INFERENCE_JOULES_FIELD_NUMBER: _ClassVar[int]
    ENERGY_METHOD_FIELD_NUMBER: _ClassVar[int]
    SENSOR_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    RAILS_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    idle_watts: float
    active_watts: float
    energy_per_inference_joules: float
    energy_method: str
    sensor: str
    sample_rate_hz: float
    rails: _containers.RepeatedCompositeFieldContainer[RailPower]
    simulated: bool
    recorded: bool
    def __init__(self, idle_watts: _Optional[float] = ..., active_watts: _Optional[float] = ..., energy_per_inference_joules: _Optional[float] = ..., energy_method: _Optional[str] = ..., sensor: _Optional[str] = ..., sample_rate_hz: _Optional[float] = ..., rails: _Optional[_Iterable[_Union[RailPower, _Mapping]]] = ..., simulated: bool = ..., recorded: bool = ...) -> None: ...

class ZoneTemperature(_message.Message):
    __slots__ = ("zone", "start_celsius", "max_celsius", "end_celsius", "sensor")
    ZONE_FIELD_NUMBER: _ClassVar[int]
    START_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    MAX_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    END_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    SENSOR_FIELD_NUMBER: _ClassVar[int]
    zone: str
    start_celsius: float
    max_celsius: float
    end_celsius: float
    sensor: str
    def __init__(self, zone: _Optional[str] = ..., start_celsius: _Optional[float] = ..., max_celsius: _Optional[float] = ..., end_celsius: _Optional[float] = ..., sensor: _Optional[str] = ...) -> None: ...

class ClockRange(_message.Message):
    __slots__ = ("domain", "min_hz", "max_hz", "allowed_max_hz")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    MIN_HZ_FIELD_NUMBER: _ClassVar[int]
    MAX_HZ_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MAX_HZ_FIELD_NUMBER: _ClassVar[int]
    domain: str
    min_hz: float
    max_hz: float
    allowed_max_hz: float
    def __init__(self, domain: _Optional[str] = ..., min_hz: _Optional[float] = ..., max_hz: _Optional[float] = ..., allowed_max_hz: _Optional[float] = ...) -> None: ...

class ThermalResult(_message.Message):
    __slots__ = ("zones", "clocks", "throttled", "throttled_fraction", "throttle_reasons", "cooldown_seconds", "simulated", "recorded")
    ZONES_FIELD_NUMBER: _ClassVar[int]
    CLOCKS_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_REASONS_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    zones: _containers.RepeatedCompositeFieldContainer[ZoneTemperature]
    clocks: _containers.RepeatedCompositeFieldContainer[ClockRange]
    throttled: bool
    throttled_fraction: float
    throttle_reasons: _containers.RepeatedScalarFieldContainer[str]
    cooldown_seconds: float
    simulated: bool
    recorded: bool
    def __init__(self, zones: _Optional[_Iterable[_Union[ZoneTemperature, _Mapping]]] = ..., clocks: _Optional[_Iterable[_Union[ClockRange, _Mapping]]] = ..., throttled: bool = ..., throttled_fraction: _Optional[float] = ..., throttle_reasons: _Optional[_Iterable[str]] = ..., cooldown_seconds: _Optional[float] = ..., simulated: bool = ..., recorded: bool = ...) -> None: ...

class SustainedWindow(_message.Message):
    __slots__ = ("start_seconds", "end_seconds", "runs", "p50_seconds", "p90_seconds", "mean_watts", "max_celsius", "min_clock_hz", "throttled_fraction")
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P90_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEAN_WATTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    MIN_CLOCK_HZ_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    start_seconds: float
    end_seconds: float
    runs: int
    p50_seconds: float
    p90_seconds: float
    mean_watts: float
    max_celsius: float
    min_clock_hz: float
    throttled_fraction: float
    def __init__(self, start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ..., runs: _Optional[int] = ..., p50_seconds: _Optional[float] = ..., p90_seconds: _Optional[float] = ..., mean_watts: _Optional[float] = ..., max_celsius: _Optional[float] = ..., min_clock_hz: _Optional[float] = ..., throttled_fraction: _Optional[float] = ...) -> None: ...

class SustainedResult(_message.Message):
    __slots__ = ("requested_seconds", "duration_seconds", "window_seconds", "windows", "latency_change_ratio", "temperature_rise_celsius", "throttled_after_seconds", "simulated")
    REQUESTED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_CHANGE_RATIO_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_RISE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    requested_seconds: float
    duration_seconds: float
    window_seconds: float
    windows: _containers.RepeatedCompositeFieldContainer[SustainedWindow]
    latency_change_ratio: float
    temperature_rise_celsius: float
    throttled_after_seconds: float
    simulated: bool
    def __init__(self, requested_seconds: _Optional[float] = ..., duration_seconds: _Optional[float] = ..., window_seconds: _Optional[float] = ..., windows: _Optional[_Iterable[_Union[SustainedWindow, _Mapping]]] = ..., latency_change_ratio: _Optional[float] = ..., temperature_rise_celsius: _Optional[float] = ..., throttled_after_seconds: _Optional[float] = ..., simulated: bool = ...) -> None: ...

class RepeatResult(_message.Message):
    __slots__ = ("index", "first_sample", "count", "load_seconds", "first_inference_seconds", "warmup_runs", "warmup_seconds", "steady", "p50_seconds", "mean_seconds", "p99_seconds", "cv", "drift_ratio", "peak_bytes", "started_at", "wall_seconds", "warnings", "min_seconds")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRST_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_INFERENCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RUNS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STEADY_FIELD_NUMBER: _ClassVar[int]
    P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P99_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CV_FIELD_NUMBER: _ClassVar[int]
    DRIFT_RATIO_FIELD_NUMBER: _ClassVar[int]
    PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    MIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    index: int
    first_sample: int
    count: int
    load_seconds: float
    first_inference_seconds: float
    warmup_runs: int
    warmup_seconds: float
    steady: bool
    p50_seconds: float
    mean_seconds: float
    p99_seconds: float
    cv: float
    drift_ratio: float
    peak_bytes: int
    started_at: float
    wall_seconds: float
    warnings: _containers.RepeatedScalarFieldContainer[str]
    min_seconds: float
    def __init__(self, index: _Optional[int] = ..., first_sample: _Optional[int] = ..., count: _Optional[int] = ..., load_seconds: _Optional[float] = ..., first_inference_seconds: _Optional[float] = ..., warmup_runs: _Optional[int] = ..., warmup_seconds: _Optional[float] = ..., steady: bool = ..., p50_seconds: _Optional[float] = ..., mean_seconds: _Optional[float] = ..., p99_seconds: _Optional[float] = ..., cv: _Optional[float] = ..., drift_ratio: _Optional[float] = ..., peak_bytes: _Optional[int] = ..., started_at: _Optional[float] = ..., wall_seconds: _Optional[float] = ..., warnings: _Optional[_Iterable[str]] = ..., min_seconds: _Optional[float] = ...) -> None: ...

class Stability(_message.Message):
    __slots__ = ("steady", "reasons")
    STEADY_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    steady: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, steady: bool = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class BusyProcess(_message.Message):
    __slots__ = ("pid", "name", "cpu_cores")
    PID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    pid: int
    name: str
    cpu_cores: float
    def __init__(self, pid: _Optional[int] = ..., name: _Optional[str] = ..., cpu_cores: _Optional[float] = ...) -> None: ...

class DeviceActivity(_message.Message):
    __slots__ = ("load_average_start", "load_average_end", "other_cpu_cores", "busy", "quiet", "source")
    LOAD_AVERAGE_START_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVERAGE_END_FIELD_NUMBER: _ClassVar[int]
    OTHER_CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    QUIET_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    load_average_start: float
    load_average_end: float
    other_cpu_cores: float
    busy: _containers.RepeatedCompositeFieldContainer[BusyProcess]
    quiet: bool
    source: str
    def __init__(self, load_average_start: _Optional[float] = ..., load_average_end: _Optional[float] = ..., other_cpu_cores: _Optional[float] = ..., busy: _Optional[_Iterable[_Union[BusyProcess, _Mapping]]] = ..., quiet: bool = ..., source: _Optional[str] = ...) -> None: ...

class BenchmarkResult(_message.Message):
    __slots__ = ("latency", "memory", "environment", "unavailable", "warnings", "power", "thermal", "timeline", "sustained", "repeats", "stability", "activity", "op_profile")
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    POWER_FIELD_NUMBER: _ClassVar[int]
    THERMAL_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    SUSTAINED_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    STABILITY_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    OP_PROFILE_FIELD_NUMBER: _ClassVar[int]
    latency: LatencyResult
    memory: MemoryResult
    environment: Environment
    unavailable: _containers.RepeatedCompositeFieldContainer[Unavailable]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    power: PowerResult
    thermal: ThermalResult
    timeline: _containers.RepeatedCompositeFieldContainer[TelemetrySample]
    sustained: SustainedResult
    repeats: _containers.RepeatedCompositeFieldContainer[RepeatResult]
    stability: Stability
    activity: DeviceActivity
    op_profile: OpProfile
    def __init__(self, latency: _Optional[_Union[LatencyResult, _Mapping]] = ..., memory: _Optional[_Union[MemoryResult, _Mapping]] = ..., environment: _Optional[_Union[Environment, _Mapping]] = ..., unavailable: _Optional[_Iterable[_Union[Unavailable, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ..., power: _Optional[_Union[PowerResult, _Mapping]] = ..., thermal: _Optional[_Union[ThermalResult, _Mapping]] = ..., timeline: _Optional[_Iterable[_Union[TelemetrySample, _Mapping]]] = ..., sustained: _Optional[_Union[SustainedResult, _Mapping]] = ..., repeats: _Optional[_Iterable[_Union[RepeatResult, _Mapping]]] = ..., stability: _Optional[_Union[Stability, _Mapping]] = ..., activity: _Optional[_Union[DeviceActivity, _Mapping]] = ..., op_profile: _Optional[_Union[OpProfile, _Mapping]] = ...) -> None: ...

class OpTime(_message.Message):
    __slots__ = ("node", "op_type", "provider", "calls", "mean_seconds", "share", "order")
    NODE_FIELD_NUMBER: _ClassVar[int]
    OP_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    MEAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    node: str
    op_type: str
    provider: str
    calls: int
    mean_seconds: float
    share: float
    order: int
    def __init__(self, node: _Optional[str] = ..., op_type: _Optional[str] = ..., provider: _Optional[str] = ..., calls: _Optional[int] = ..., mean_seconds: _Optional[float] = ..., share: _Optional[float] = ..., order: _Optional[int] = ...) -> None: ...

class OpProfile(_message.Message):
    __slots__ = ("source", "runs", "ops", "nodes_by_provider", "timing_unavailable", "trace_format", "trace_sha256", "trace_bytes", "trace", "warnings")
    class NodesByProviderEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    NODES_BY_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    TIMING_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    TRACE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    TRACE_SHA256_FIELD_NUMBER: _ClassVar[int]
    TRACE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    source: str
    runs: int
    ops: _containers.RepeatedCompositeFieldContainer[OpTime]
    nodes_by_provider: _containers.ScalarMap[str, int]
    timing_unavailable: str
    trace_format: str
    trace_sha256: str
    trace_bytes: int
    trace: bytes
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, source: _Optional[str] = ..., runs: _Optional[int] = ..., ops: _Optional[_Iterable[_Union[OpTime, _Mapping]]] = ..., nodes_by_provider: _Optional[_Mapping[str, int]] = ..., timing_unavailable: _Optional[str] = ..., trace_format: _Optional[str] = ..., trace_sha256: _Optional[str] = ..., trace_bytes: _Optional[int] = ..., trace: _Optional[bytes] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "run_id", "model_name", "model_sha256", "model_format", "device_profile", "state", "attempt", "max_attempts", "agent_id", "created_at", "started_at", "finished_at", "settings", "required_tags", "placement_notes", "progress", "result", "failure", "constraints", "verdicts", "constraint_set", "project")
    ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_TAGS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_NOTES_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_SET_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    id: str
    run_id: str
    model_name: str
    model_sha256: str
    model_format: str
    device_profile: str
    state: JobState
    attempt: int
    max_attempts: int
    agent_id: str
    created_at: float
    started_at: float
    finished_at: float
    settings: JobSettings
    required_tags: _containers.RepeatedScalarFieldContainer[str]
    placement_notes: _containers.RepeatedScalarFieldContainer[str]
    progress: Progress
    result: BenchmarkResult
    failure: Failure
    constraints: _containers.RepeatedCompositeFieldContainer[Budget]
    verdicts: _containers.RepeatedCompositeFieldContainer[ConstraintVerdict]
    constraint_set: str
    project: str
    def __init__(self, id: _Optional[str] = ..., run_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_sha256: _Optional[str] = ..., model_format: _Optional[str] = ..., device_profile: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., agent_id: _Optional[str] = ..., created_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., settings: _Optional[_Union[JobSettings, _Mapping]] = ..., required_tags: _Optional[_Iterable[str]] = ..., placement_notes: _Optional[_Iterable[str]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[BenchmarkResult, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., constraints: _Optional[_Iterable[_Union[Budget, _Mapping]]] = ..., verdicts: _Optional[_Iterable[_Union[ConstraintVerdict, _Mapping]]] = ..., constraint_set: _Optional[str] = ..., project: _Optional[str] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("id", "created_at", "jobs", "project")
    ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    id: str
    created_at: float
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    project: str
    def __init__(self, id: _Optional[str] = ..., created_at: _Optional[float] = ..., jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., project: _Optional[str] = ...) -> None: ...

class RuntimeInfo(_message.Message):
    __slots__ = ("name", "version", "package", "execution_providers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    package: str
    execution_providers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., package: _Optional[str] = ..., execution_providers: _Optional[_Iterable[str]] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("runtimes", "cpu_cores", "memory_bytes", "machine", "os", "kernel", "python_version", "accelerators", "emulation")
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MACHINE_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCELERATORS_FIELD_NUMBER: _ClassVar[int]
    EMULATION_FIELD_NUMBER: _ClassVar[int]
    runtimes: _containers.RepeatedCompositeFieldContainer[RuntimeInfo]
    cpu_cores: int
    memory_bytes: int
    machine: str
    os: str
    kernel: str
    python_version: str
    accelerators: _containers.RepeatedScalarFieldContainer[str]
    emulation: str
    def __init__(self, runtimes: _Optional[_Iterable[_Union[RuntimeInfo, _Mapping]]] = ..., cpu_cores: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., machine: _Optional[str] = ..., os: _Optional[str] = ..., kernel: _Optional[str] = ..., python_version: _Optional[str] = ..., accelerators: _Optional[_Iterable[str]] = ..., emulation: _Optional[str] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("agent_id", "device_profile", "tags", "state", "last_seen", "hostname", "agent_version", "capabilities", "current_job_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CURRENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    device_profile: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    state: str
    last_seen: float
    hostname: str
    agent_version: str
    capabilities: Capabilities
    current_job_id: str
    def __init__(self, agent_id: _Optional[str] = ..., device_profile: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., state: _Optional[str] = ..., last_seen: _Optional[float] = ..., hostname: _Optional[str] = ..., agent_version: _Optional[str] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., current_job_id: _Optional[str] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("sha256", "name", "format")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    name: str
    format: str
    def __init__(self, sha256: _Optional[str] = ..., name: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("models", "device_profiles", "settings", "required_tags", "max_attempts", "constraints", "constraint_set")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILES_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_TAGS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_SET_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    device_profiles: _containers.RepeatedScalarFieldContainer[str]
    settings: JobSettings
    required_tags: _containers.RepeatedScalarFieldContainer[str]
    max_attempts: int
    constraints: _containers.RepeatedCompositeFieldContainer[Budget]
    constraint_set: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., device_profiles: _Optional[_Iterable[str]] = ..., settings: _Optional[_Union[JobSettings, _Mapping]] = ..., required_tags: _Optional[_Iterable[str]] = ..., max_attempts: _Optional[int] = ..., constraints: _Optional[_Iterable[_Union[Budget, _Mapping]]] = ..., constraint_set: _Optional[str] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("run_id", "states", "limit", "include_samples")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    states: _containers.RepeatedScalarFieldContainer[JobState]
    limit: int
    include_samples: bool
    def __init__(self, run_id: _Optional[str] = ..., states: _Optional[_Iterable[_Union[JobState, str]]] = ..., limit: _Optional[int] = ..., include_samples: bool = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...

class DrainDeviceRequest(_message.Message):
    __slots__ = ("agent_id", "drain")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    drain: bool
    def __init__(self, agent_id: _Optional[str] = ..., drain: bool = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("name", "max", "min", "device_profile", "unit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    max: float
    min: float
    device_profile: str
    unit: str
    def __init__(self, name: _Optional[str] = ..., max: _Optional[float] = ..., min: _Optional[float] = ..., device_profile: _Optional[str] = ..., unit: _Optional[str] = ...) -> None: ...

class ConstraintVerdict(_message.Message):
    __slots__ = ("constraint", "comparison", "budget", "measured", "margin", "status", "unit", "reason", "device_profile", "simulated")
    CONSTRAINT_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    MEASURED_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    constraint: str
    comparison: str
    budget: float
    measured: float
    margin: float
    status: VerdictStatus
    unit: str
    reason: str
    device_profile: str
    simulated: bool
    def __init__(self, constraint: _Optional[str] = ..., comparison: _Optional[str] = ..., budget: _Optional[float] = ..., measured: _Optional[float] = ..., margin: _Optional[float] = ..., status: _Optional[_Union[VerdictStatus, str]] = ..., unit: _Optional[str] = ..., reason: _Optional[str] = ..., device_profile: _Optional[str] = ..., simulated: bool = ...) -> None: ...

class MetricComparison(_message.Message):
    __slots__ = ("metric", "statistic", "baseline", "candidate", "ratio", "ci_low", "ci_high", "confidence", "p_value", "threshold", "verdict", "summary", "baseline_count", "candidate_count", "simulated", "noise", "noise_floor", "noise_source", "inconclusive")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    BASELINE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    NOISE_FLOOR_FIELD_NUMBER: _ClassVar[int]
    NOISE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    INCONCLUSIVE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    statistic: str
    baseline: float
    candidate: float
    ratio: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    threshold: float
    verdict: str
    summary: str
    baseline_count: int
    candidate_count: int
    simulated: bool
    noise: float
    noise_floor: float
    noise_source: str
    inconclusive: bool
    def __init__(self, metric: _Optional[str] = ..., statistic: _Optional[str] = ..., baseline: _Optional[float] = ..., candidate: _Optional[float] = ..., ratio: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., confidence: _Optional[float] = ..., p_value: _Optional[float] = ..., threshold: _Optional[float] = ..., verdict: _Optional[str] = ..., summary: _Optional[str] = ..., baseline_count: _Optional[int] = ..., candidate_count: _Optional[int] = ..., simulated: bool = ..., noise: _Optional[float] = ..., noise_floor: _Optional[float] = ..., noise_source: _Optional[str] = ..., inconclusive: bool = ...) -> None: ...

class Comparison(_message.Message):
    __slots__ = ("baseline_job_id", "candidate_job_id", "metrics", "regression", "summary", "simulated")
    BASELINE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    baseline_job_id: str
    candidate_job_id: str
    metrics: _containers.RepeatedCompositeFieldContainer[MetricComparison]
    regression: bool
    summary: str
    simulated: bool
    def __init__(self, baseline_job_id: _Optional[str] = ..., candidate_job_id: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[MetricComparison, _Mapping]]] = ..., regression: bool = ..., summary: _Optional[str] = ..., simulated: bool = ...) -> None: ...

class Baseline(_message.Message):
    __slots__ = ("name", "model_name", "device_profile", "runtime_config", "job_id", "model_sha256", "accepted_at", "suite", "project")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_CONFIG_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    SUITE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_name: str
    device_profile: str
    runtime_config: str
    job_id: str
    model_sha256: str
    accepted_at: float
    suite: str
    project: str
    def __init__(self, name: _Optional[str] = ..., model_name: _Optional[str] = ..., device_profile: _Optional[str] = ..., runtime_config: _Optional[str] = ..., job_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., accepted_at: _Optional[float] = ..., suite: _Optional[str] = ..., project: _Optional[str] = ...) -> None: ...

class Tolerances(_message.Message):
    __slots__ = ("latency_ratio", "memory_ratio", "energy_ratio", "temperature_celsius", "alpha")
    LATENCY_RATIO_FIELD_NUMBER: _ClassVar[int]
    MEMORY_RATIO_FIELD_NUMBER: _ClassVar[int]
    ENERGY_RATIO_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    latency_ratio: float
    memory_ratio: float
    energy_ratio: float
    temperature_celsius: float
    alpha: float
    def __init__(self, latency_ratio: _Optional[float] = ..., memory_ratio: _Optional[float] = ..., energy_ratio: _Optional[float] = ..., temperature_celsius: _Optional[float] = ..., alpha: _Optional[float] = ...) -> None: ...

class SuiteSpec(_message.Message):
    __slots__ = ("name", "models", "device_profiles", "settings", "constraints", "constraint_set", "baseline", "tolerances", "no_confirm", "placement_timeout_seconds", "required_tags", "schedule")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILES_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_SET_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    TOLERANCES_FIELD_NUMBER: _ClassVar[int]
    NO_CONFIRM_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_TAGS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    name: str
    models: _containers.RepeatedCompositeFieldContainer[ModelRef]
    device_profiles: _containers.RepeatedScalarFieldContainer[str]
    settings: JobSettings
    constraints: _containers.RepeatedCompositeFieldContainer[Budget]
    constraint_set: str
    baseline: str
    tolerances: Tolerances
    no_confirm: bool
    placement_timeout_seconds: float
    required_tags: _containers.RepeatedScalarFieldContainer[str]
    schedule: str
    def __init__(self, name: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., device_profiles: _Optional[_Iterable[str]] = ..., settings: _Optional[_Union[JobSettings, _Mapping]] = ..., constraints: _Optional[_Iterable[_Union[Budget, _Mapping]]] = ..., constraint_set: _Optional[str] = ..., baseline: _Optional[str] = ..., tolerances: _Optional[_Union[Tolerances, _Mapping]] = ..., no_confirm: bool = ..., placement_timeout_seconds: _Optional[float] = ..., required_tags: _Optional[_Iterable[str]] = ..., schedule: _Optional[str] = ...) -> None: ...

class SuiteCase(_message.Message):
    __slots__ = ("model_name", "model_sha256", "device_profile", "runtime_config", "outcome", "job_id", "baseline_job_id", "verdicts", "comparison", "confirmation", "message", "job", "confirm_job_ids", "duration_seconds", "simulated")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_CONFIG_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BASELINE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_sha256: str
    device_profile: str
    runtime_config: str
    outcome: str
    job_id: str
    baseline_job_id: str
    verdicts: _containers.RepeatedCompositeFieldContainer[ConstraintVerdict]
    comparison: Comparison
    confirmation: Comparison
    message: str
    job: Job
    confirm_job_ids: _containers.RepeatedScalarFieldContainer[str]
    duration_seconds: float
    simulated: bool
    def __init__(self, model_name: _Optional[str] = ..., model_sha256: _Optional[str] = ..., device_profile: _Optional[str] = ..., runtime_config: _Optional[str] = ..., outcome: _Optional[str] = ..., job_id: _Optional[str] = ..., baseline_job_id: _Optional[str] = ..., verdicts: _Optional[_Iterable[_Union[ConstraintVerdict, _Mapping]]] = ..., comparison: _Optional[_Union[Comparison, _Mapping]] = ..., confirmation: _Optional[_Union[Comparison, _Mapping]] = ..., message: _Optional[str] = ..., job: _Optional[_Union[Job, _Mapping]] = ..., confirm_job_ids: _Optional[_Iterable[str]] = ..., duration_seconds: _Optional[float] = ..., simulated: bool = ...) -> None: ...

class SuiteRun(_message.Message):
    __slots__ = ("id", "suite", "trigger", "baseline", "state", "outcome", "started_at", "finished_at", "cases", "message", "accepted", "simulated", "project")
    ID_FIELD_NUMBER: _ClassVar[int]
    SUITE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    CASES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    id: str
    suite: str
    trigger: str
    baseline: str
    state: str
    outcome: str
    started_at: float
    finished_at: float
    cases: _containers.RepeatedCompositeFieldContainer[SuiteCase]
    message: str
    accepted: bool
    simulated: bool
    project: str
    def __init__(self, id: _Optional[str] = ..., suite: _Optional[str] = ..., trigger: _Optional[str] = ..., baseline: _Optional[str] = ..., state: _Optional[str] = ..., outcome: _Optional[str] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., cases: _Optional[_Iterable[_Union[SuiteCase, _Mapping]]] = ..., message: _Optional[str] = ..., accepted: bool = ..., simulated: bool = ..., project: _Optional[str] = ...) -> None: ...

class CompareJobsRequest(_message.Message):
    __slots__ = ("baseline_job_id", "candidate_job_id", "tolerances")
    BASELINE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOLERANCES_FIELD_NUMBER: _ClassVar[int]
    baseline_job_id: str
    candidate_job_id: str
    tolerances: Tolerances
    def __init__(self, baseline_job_id: _Optional[str] = ..., candidate_job_id: _Optional[str] = ..., tolerances: _Optional[_Union[Tolerances, _Mapping]] = ...) -> None: ...

class AcceptBaselineRequest(_message.Message):
    __slots__ = ("name", "job_ids", "suite")
    NAME_FIELD_NUMBER: _ClassVar[int]
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    SUITE_FIELD_NUMBER: _ClassVar[int]
    name: str
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    suite: str
    def __init__(self, name: _Optional[str] = ..., job_ids: _Optional[_Iterable[str]] = ..., suite: _Optional[str] = ...) -> None: ...

class AcceptBaselineResponse(_message.Message):
    __slots__ = ("baselines",)
    BASELINES_FIELD_NUMBER: _ClassVar[int]
    baselines: _containers.RepeatedCompositeFieldContainer[Baseline]
    def __init__(self, baselines: _Optional[_Iterable[_Union[Baseline, _Mapping]]] = ...) -> None: ...

class ListBaselinesRequest(_message.Message):
    __slots__ = ("name", "model_name", "device_profile")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_name: str
    device_profile: str
    def __init__(self, name: _Optional[str] = ..., model_name: _Optional[str] = ..., device_profile: _Optional[str] = ...) -> None: ...

class ListBaselinesResponse(_message.Message):
    __slots__ = ("baselines",)
    BASELINES_FIELD_NUMBER: _ClassVar[int]
    baselines: _containers.RepeatedCompositeFieldContainer[Baseline]
    def __init__(self, baselines: _Optional[_Iterable[_Union[Baseline, _Mapping]]] = ...) -> None: ...

class StartSuiteRunRequest(_message.Message):
    __slots__ = ("suite", "trigger", "accept")
    SUITE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    suite: SuiteSpec
    trigger: str
    accept: bool
    def __init__(self, suite: _Optional[_Union[SuiteSpec, _Mapping]] = ..., trigger: _Optional[str] = ..., accept: bool = ...) -> None: ...

class GetSuiteRunRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListSuiteRunsRequest(_message.Message):
    __slots__ = ("suite", "limit")
    SUITE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    suite: str
    limit: int
    def __init__(self, suite: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListSuiteRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[SuiteRun]
    def __init__(self, runs: _Optional[_Iterable[_Union[SuiteRun, _Mapping]]] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("model_name", "device_profile", "metric", "runtime_config", "limit")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_CONFIG_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    device_profile: str
    metric: str
    runtime_config: str
    limit: int
    def __init__(self, model_name: _Optional[str] = ..., device_profile: _Optional[str] = ..., metric: _Optional[str] = ..., runtime_config: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryPoint(_message.Message):
    __slots__ = ("t", "job_id", "suite_run_id", "value", "model_sha256", "runtime_config", "outcome")
    T_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SUITE_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_CONFIG_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    t: float
    job_id: str
    suite_run_id: str
    value: float
    model_sha256: str
    runtime_config: str
    outcome: str
    def __init__(self, t: _Optional[float] = ..., job_id: _Optional[str] = ..., suite_run_id: _Optional[str] = ..., value: _Optional[float] = ..., model_sha256: _Optional[str] = ..., runtime_config: _Optional[str] = ..., outcome: _Optional[str] = ...) -> None: ...

class ChangePoint(_message.Message):
    __slots__ = ("index", "t", "job_id", "before", "after", "ratio", "p_value")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    T_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    index: int
    t: float
    job_id: str
    before: float
    after: float
    ratio: float
    p_value: float
    def __init__(self, index: _Optional[int] = ..., t: _Optional[float] = ..., job_id: _Optional[str] = ..., before: _Optional[float] = ..., after: _Optional[float] = ..., ratio: _Optional[float] = ..., p_value: _Optional[float] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("metric", "unit", "points", "change_points", "method")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    CHANGE_POINTS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    metric: str
    unit: str
    points: _containers.RepeatedCompositeFieldContainer[HistoryPoint]
    change_points: _containers.RepeatedCompositeFieldContainer[ChangePoint]
    method: str
    def __init__(self, metric: _Optional[str] = ..., unit: _Optional[str] = ..., points: _Optional[_Iterable[_Union[HistoryPoint, _Mapping]]] = ..., change_points: _Optional[_Iterable[_Union[ChangePoint, _Mapping]]] = ..., method: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("agent_id", "device_profile", "tags", "capabilities", "hostname", "agent_version")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    device_profile: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    capabilities: Capabilities
    hostname: str
    agent_version: str
    def __init__(self, agent_id: _Optional[str] = ..., device_profile: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., hostname: _Optional[str] = ..., agent_version: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("heartbeat_interval_seconds", "lease_seconds")
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_seconds: float
    lease_seconds: float
    def __init__(self, heartbeat_interval_seconds: _Optional[float] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("agent_id", "busy")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    busy: bool
    def __init__(self, agent_id: _Optional[str] = ..., busy: bool = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("known",)
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    known: bool
    def __init__(self, known: bool = ...) -> None: ...

class LeaseJobRequest(_message.Message):
    __slots__ = ("agent_id", "wait_seconds")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    wait_seconds: float
    def __init__(self, agent_id: _Optional[str] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "job", "expires_at")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    job: Job
    expires_at: float
    def __init__(self, lease_id: _Optional[str] = ..., job: _Optional[_Union[Job, _Mapping]] = ..., expires_at: _Optional[float] = ...) -> None: ...

class LeaseJobResponse(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class ReportProgressRequest(_message.Message):
    __slots__ = ("agent_id", "lease_id", "progress")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    lease_id: str
    progress: Progress
    def __init__(self, agent_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ...) -> None: ...

class ReportProgressResponse(_message.Message):
    __slots__ = ("cancel",)
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    cancel: bool
    def __init__(self, cancel: bool = ...) -> None: ...

class ReportResultRequest(_message.Message):
    __slots__ = ("agent_id", "lease_id", "job_id", "attempt", "result", "failure")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    lease_id: str
    job_id: str
    attempt: int
    result: BenchmarkResult
    failure: Failure
    def __init__(self, agent_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., result: _Optional[_Union[BenchmarkResult, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class ReportResultResponse(_message.Message):
    __slots__ = ("accepted", "message")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message: str
    def __init__(self, accepted: bool = ..., message: _Optional[str] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("agent_id", "device_profile", "tags", "hostname")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    device_profile: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    hostname: str
    def __init__(self, agent_id: _Optional[str] = ..., device_profile: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., hostname: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("agent_id", "credential", "device_profile", "tags")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    credential: str
    device_profile: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_id: _Optional[str] = ..., credential: _Optional[str] = ..., device_profile: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class UserToken(_message.Message):
    __slots__ = ("id", "project", "role", "name", "created_at", "expires_at", "revoked_at", "created_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    project: str
    role: Role
    name: str
    created_at: float
    expires_at: float
    revoked_at: float
    created_by: str
    def __init__(self, id: _Optional[str] = ..., project: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., name: _Optional[str] = ..., created_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., revoked_at: _Optional[float] = ..., created_by: _Optional[str] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("project", "role", "name", "expires_in_seconds")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    project: str
    role: Role
    name: str
    expires_in_seconds: float
    def __init__(self, project: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., name: _Optional[str] = ..., expires_in_seconds: _Optional[float] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "secret")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    token: UserToken
    secret: str
    def __init__(self, token: _Optional[_Union[UserToken, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ("project", "include_revoked")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    project: str
    include_revoked: bool
    def __init__(self, project: _Optional[str] = ..., include_revoked: bool = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[UserToken]
    def __init__(self, tokens: _Optional[_Iterable[_Union[UserToken, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class EnrollmentToken(_message.Message):
    __slots__ = ("id", "device_profile", "tags", "agent_id", "uses_left", "expires_at", "created_at", "created_by", "revoked_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    USES_LEFT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    device_profile: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    agent_id: str
    uses_left: int
    expires_at: float
    created_at: float
    created_by: str
    revoked_at: float
    def __init__(self, id: _Optional[str] = ..., device_profile: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., agent_id: _Optional[str] = ..., uses_left: _Optional[int] = ..., expires_at: _Optional[float] = ..., created_at: _Optional[float] = ..., created_by: _Optional[str] = ..., revoked_at: _Optional[float] = ...) -> None: ...

class CreateEnrollmentTokenRequest(_message.Message):
    __slots__ = ("device_profile", "tags", "agent_id", "uses", "expires_in_seconds")
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    device_profile: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    agent_id: str
    uses: int
    expires_in_seconds: float
    def __init__(self, device_profile: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., agent_id: _Optional[str] = ..., uses: _Optional[int] = ..., expires_in_seconds: _Optional[float] = ...) -> None: ...

class CreateEnrollmentTokenResponse(_message.Message):
    __slots__ = ("token", "secret")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    token: EnrollmentToken
    secret: str
    def __init__(self, token: _Optional[_Union[EnrollmentToken, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class AgentIdentity(_message.Message):
    __slots__ = ("agent_id", "device_profile", "tags", "enrolled_at", "enrolled_by", "revoked_at")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    device_profile: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    enrolled_at: float
    enrolled_by: str
    revoked_at: float
    def __init__(self, agent_id: _Optional[str] = ..., device_profile: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., enrolled_at: _Optional[float] = ..., enrolled_by: _Optional[str] = ..., revoked_at: _Optional[float] = ...) -> None: ...

class ListAgentIdentitiesRequest(_message.Message):
    __slots__ = ("include_revoked",)
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    include_revoked: bool
    def __init__(self, include_revoked: bool = ...) -> None: ...

class ListAgentIdentitiesResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentIdentity]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentIdentity, _Mapping]]] = ...) -> None: ...

class RevokeAgentRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("kind", "project", "role", "token_id", "agent_id", "open")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    kind: str
    project: str
    role: Role
    token_id: str
    agent_id: str
    open: bool
    def __init__(self, kind: _Optional[str] = ..., project: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., token_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., open: bool = ...) -> None: ...
