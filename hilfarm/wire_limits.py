"""Limits of the wire contract that the controller enforces and the agent keeps to.

Both sides import these numbers from here, so an agent never produces a report the controller
would refuse after the work is done: the controller accepts messages up to MAX_MESSAGE_BYTES and
results with up to MAX_RAW_SAMPLES latency samples and MAX_TIMELINE_SAMPLES sensor readings; the
agent thins anything longer evenly (saying so in the result's warnings) and computes its summary
statistics from every sample before it does.
"""
from __future__ import annotations

from typing import Any, Dict

# The largest gRPC message either side accepts. A result report must fit in it.
MAX_MESSAGE_BYTES = 16 << 20
# What an agent keeps of a report for itself: its own fields and framing.
REPORT_HEADROOM_BYTES = 256 << 10

# Timed (and warmup) runs a job may ask for, and the most raw latency samples a result carries.
MAX_RUNS = 1_000_000
MAX_RAW_SAMPLES = 1_000_000
# Sensor readings kept in a result's timeline, and sent in one progress report.
MAX_TIMELINE_SAMPLES = 200_000
MAX_PROGRESS_TELEMETRY = 10_000
# Any duration a job asks for: sustained phase, timed phase, warmup, timeout (one day).
MAX_JOB_SECONDS = 86_400.0
# Attempts a job may be given.
MAX_ATTEMPTS = 10
# The controller's defaults for jobs one submission may make (models x device profiles) and
# queued jobs one project may have (controller serve --max-jobs-per-submit, --max-queued-jobs).
DEFAULT_MAX_JOBS_PER_SUBMIT = 500
DEFAULT_MAX_QUEUED_JOBS = 5000

# ---------------------------------------------------------------- fields of any message
# Text: identifiers and names are kept in database columns of 200 characters; other text is
# bounded too. No text field may hold a NUL character (PostgreSQL cannot store one).
MAX_NAME_CHARS = 200
MAX_TEXT_CHARS = 1000
NAME_FIELDS = frozenset({
    "id", "agent_id", "job_id", "run_id", "lease_id", "job_ids", "baseline_job_id", "candidate_job_id",
    "confirm_job_ids", "suite_run_id", "sha256", "model_sha256", "inputs_sha256", "token_id",
    "device_profile", "device_profiles", "tags", "required_tags", "name", "model_name", "filename",
    "format", "model_format", "project", "suite", "baseline", "trigger", "constraint_set", "hostname",
    "agent_version", "runtime", "execution_provider", "graph_optimization", "tflite_delegate_path",
    "phase", "metric", "unit", "runtime_config", "quantity", "channel", "sensor", "zone", "domain",
    "rail", "field", "package", "version", "machine", "python_version", "schedule", "constraint",
    "comparison", "outcome", "state", "kind",
})
# Longer text, by the field's full name.
TEXT_CHARS: Dict[str, int] = {
    "hilfarm.v1.Failure.message": 16 << 10,
    "hilfarm.v1.Failure.detail": 64 << 10,
    "hilfarm.v1.BenchmarkResult.warnings": 8 << 10,
    "hilfarm.v1.Unavailable.reason": 4 << 10,
    "hilfarm.v1.Environment.runtime_settings": 4 << 10,
    "hilfarm.v1.ConstraintVerdict.reason": 4 << 10,
}
# Items of a repeated (or map) field.
DEFAULT_MAX_ITEMS = 1000
MAX_ITEMS: Dict[str, int] = {
    "hilfarm.v1.LatencyResult.samples_ns": MAX_RAW_SAMPLES,
    "hilfarm.v1.BenchmarkResult.timeline": MAX_TIMELINE_SAMPLES,
    "hilfarm.v1.Progress.telemetry": MAX_PROGRESS_TELEMETRY,
    "hilfarm.v1.SubmitRequest.models": 100,
    "hilfarm.v1.SubmitRequest.device_profiles": 100,
    "hilfarm.v1.SuiteSpec.models": 100,
    "hilfarm.v1.SuiteSpec.device_profiles": 100,
    "hilfarm.v1.JobSettings.input_shapes": 32,
    "hilfarm.v1.JobSettings.tflite_delegate_options": 64,
    "hilfarm.v1.InputShape.dims": 16,
    "hilfarm.v1.SubmitRequest.required_tags": 64,
    "hilfarm.v1.RegisterRequest.tags": 64,
    "hilfarm.v1.EnrollRequest.tags": 64,
}


def max_chars(field: Any) -> int:
    """The most characters a string field (a protobuf FieldDescriptor) may hold."""
    if field.full_name in TEXT_CHARS:
        return TEXT_CHARS[field.full_name]
    return MAX_NAME_CHARS if field.name in NAME_FIELDS else MAX_TEXT_CHARS


def max_items(field: Any) -> int:
    """The most items a repeated or map field may hold."""
    return MAX_ITEMS.get(field.full_name, DEFAULT_MAX_ITEMS)
