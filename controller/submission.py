"""Turning a user's submission into a run: checking the request, then one job per
(model x device profile). Everything wrong with a request is reported before anything is stored.
"""
from __future__ import annotations

import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

from hilfarm import wire_limits

from .artifacts import ArtifactStore, check_digest
from .errors import InvalidArgument, NotFound, ResourceExhausted
from hilfarm.contract import MODEL_FORMATS, RUNTIME_FORMATS, RUNTIMES

from .models import DEFAULT_PROJECT, MAX_RUNTIME_CONFIG_CHARS, Job, JobState, Run, runtime_config

GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")

# Jobs one submission may create (models x device profiles), and queued jobs a project may have.
DEFAULT_MAX_JOBS_PER_SUBMIT = wire_limits.DEFAULT_MAX_JOBS_PER_SUBMIT
DEFAULT_MAX_QUEUED_JOBS = wire_limits.DEFAULT_MAX_QUEUED_JOBS
# The largest value each numeric setting may take.
SETTING_MAXIMUMS: Dict[str, float] = {
    "warmup_runs": wire_limits.MAX_RUNS,
    "min_runs": wire_limits.MAX_RUNS,
    "max_runs": wire_limits.MAX_RUNS,
    "warmup_seconds": wire_limits.MAX_JOB_SECONDS,
    "min_seconds": wire_limits.MAX_JOB_SECONDS,
    "max_seconds": wire_limits.MAX_JOB_SECONDS,
    "sustained_seconds": wire_limits.MAX_JOB_SECONDS,
    "timeout_seconds": wire_limits.MAX_JOB_SECONDS,
    "threads": 1024,
    "memory_limit_bytes": 1 << 40,
}


@dataclass(frozen=True)
class ModelSpec:
    sha256: str
    name: str = ""
    format: str = ""


def validate_settings(settings: Dict[str, Any]) -> None:
    """Raise InvalidArgument naming the first field that cannot be right."""
    for field, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            continue
        if isinstance(value, str):
            # Documents spell non-finite doubles as strings (see wire.py).
            if value in ("NaN", "Infinity", "-Infinity") and field.endswith("_seconds"):
                raise InvalidArgument(f"settings.{field} is {value}; it must be a finite number")
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"settings.{field} is {value}; it must be a finite number")
        if value < 0:
            raise InvalidArgument(f"settings.{field} is {value}; it must not be negative")
        top = SETTING_MAXIMUMS.get(field)
        if top is not None and value > top:
            shown = int(top) if float(top).is_integer() else top
            raise InvalidArgument(f"settings.{field} is {value}; the limit is {shown}")
    for low, high in (("min_runs", "max_runs"), ("min_seconds", "max_seconds")):
        lo, hi = settings.get(low, 0), settings.get(high, 0)
        if lo and hi and lo > hi:
            raise InvalidArgument(f"settings.{low} ({lo}) is larger than settings.{high} ({hi})")
    runtime = settings.get("runtime", "")
    if runtime and runtime not in RUNTIMES:
        raise InvalidArgument(
            f"settings.runtime {runtime!r} is not a runtime the farm knows ({', '.join(RUNTIMES)})"
        )
    optimization = settings.get("graph_optimization", "")
    if optimization and optimization not in GRAPH_OPTIMIZATIONS:
        raise InvalidArgument(
            f"settings.graph_optimization {optimization!r} is not one of {', '.join(GRAPH_OPTIMIZATIONS)}"
        )
    for shape in settings.get("input_shapes", []):
        if not shape.get("name"):
            raise InvalidArgument("settings.input_shapes: every shape must name the model input it sizes")
        dims = shape.get("dims", [])
        if not dims or any(d <= 0 for d in dims):
            raise InvalidArgument(
                f"settings.input_shapes[{shape['name']}]: dims {dims} must be positive sizes"
            )


def _names(values: Sequence[str], what: str) -> List[str]:
    out: List[str] = []
    for value in values:
        value = value.strip()
        if not value:
            raise InvalidArgument(f"an empty {what} was given")
        if value not in out:
            out.append(value)
    return out


def plan_run(
    artifacts: ArtifactStore,
    *,
    models: Sequence[ModelSpec],
    device_profiles: Sequence[str],
    settings: Dict[str, Any],
    required_tags: Sequence[str],
    max_attempts: int,
    default_max_attempts: int,
    now: float,
    project: str = DEFAULT_PROJECT,
    max_jobs: int = DEFAULT_MAX_JOBS_PER_SUBMIT,
) -> Tuple[Run, List[Job]]:
    """Check a submission by ``project`` and build its run and jobs (not yet stored). Models and
    input tensors must have been uploaded by the project."""
    if not models:
        raise InvalidArgument("a submission needs at least one model")
    profiles = _names(device_profiles, "device profile")
    if not profiles:
        raise InvalidArgument("a submission needs at least one device profile")
    count = len(models) * len(profiles)
    if count > max_jobs:
        raise InvalidArgument(
            f"this submission makes {count} jobs ({len(models)} models x {len(profiles)} device profiles); "
            f"one submission may make at most {max_jobs}: split it")
    tags = _names(required_tags, "required tag")
    if max_attempts < 0:
        raise InvalidArgument(f"max_attempts is {max_attempts}; it must not be negative")
    if max_attempts > wire_limits.MAX_ATTEMPTS:
        raise InvalidArgument(f"max_attempts is {max_attempts}; the limit is {wire_limits.MAX_ATTEMPTS}")
    attempts = max_attempts or default_max_attempts
    validate_settings(settings)

    inputs = settings.get("inputs_sha256", "")
    if inputs:
        digest = check_digest(inputs, "settings.inputs_sha256")
        stored = artifacts.stat(digest, project=project)
        if stored is None:
            raise NotFound(f"input tensors {digest} (settings.inputs_sha256) are not stored on this controller; upload them first")
        if stored.format != "npz":
            raise InvalidArgument(f"settings.inputs_sha256 names a {stored.format} artifact; input tensors must be npz")

    resolved: List[Tuple[str, str, str]] = []
    for model in models:
        digest = check_digest(model.sha256, f"model {model.name!r}" if model.name else "model")
        stored = artifacts.stat(digest, project=project)
        label = model.name or digest
        if stored is None:
            raise NotFound(f"model {label} (sha256 {digest}) is not stored on this controller; upload it first")
        fmt = (model.format or stored.format).lower()
        if fmt not in MODEL_FORMATS:
            raise InvalidArgument(f"model {label} is a {fmt!r} artifact; only {' and '.join(MODEL_FORMATS)} models can be benchmarked")
        runtime = settings.get("runtime", "")
        if runtime and fmt not in RUNTIME_FORMATS[runtime]:
            raise InvalidArgument(f"model {label} is a {fmt} model, which settings.runtime {runtime} cannot run")
        resolved.append((digest, model.name or stored.filename or digest[:12], fmt))

    shapes_for = _input_shapes_by_model(settings, [digest for digest, _, _ in resolved])
    run = Run(id=uuid.uuid4().hex, created_at=now, project=project)
    jobs: List[Job] = []
    for digest, name, fmt in resolved:
        job_settings = dict(settings)
        job_settings.pop("input_shapes", None)
        if shapes_for[digest]:
            job_settings["input_shapes"] = shapes_for[digest]
        for profile in profiles:
            jobs.append(
                Job(
                    id=uuid.uuid4().hex,
                    run_id=run.id,
                    project=project,
                    model_sha256=digest,
                    model_name=name,
                    model_format=fmt,
                    device_profile=profile,
                    settings=dict(job_settings),
                    required_tags=list(tags),
                    state=JobState.QUEUED.value,
                    attempt=0,
                    max_attempts=attempts,
                    # Microsecond steps keep the submitted order (it is the scheduling order).
                    created_at=now + len(jobs) * 1e-6,
                )
            )
    config = runtime_config(jobs[0])
    if len(config) > MAX_RUNTIME_CONFIG_CHARS:
        raise InvalidArgument(
            f"the run configuration ({config[:60]}...) is {len(config)} characters long; baselines key on it "
            f"and keep at most {MAX_RUNTIME_CONFIG_CHARS}: use fewer or shorter input shape names and options")
    return run, jobs


def _input_shapes_by_model(settings: Dict[str, Any], digests: Sequence[str]) -> Dict[str, List[Dict[str, Any]]]:
    """Each model's input shapes: those for every model (no model_sha256) and its own. A shape
    for a model the submission does not hold is an error, not silently dropped."""
    out: Dict[str, List[Dict[str, Any]]] = {d: [] for d in digests}
    for shape in settings.get("input_shapes", []):
        model = str(shape.get("model_sha256", "")).lower()
        if model and model not in out:
            raise InvalidArgument(
                f"settings.input_shapes[{shape.get('name')}] is for model sha256 {model}, "
                "which is not one of this submission's models"
            )
        unqualified = {k: v for k, v in shape.items() if k != "model_sha256"}
        for digest in ([model] if model else digests):
            out[digest].append(unqualified)
    return out


def check_queue_room(jobs: Any, project: str, new_jobs: int, limit: int = DEFAULT_MAX_QUEUED_JOBS) -> None:
    """ResourceExhausted when ``new_jobs`` more would put ``project`` over its queued-job limit
    (``jobs``: a job_repository.JobRepository, or anything with its ``count_queued``)."""
    _refuse_over_limit(project, jobs.count_queued(project), new_jobs, limit)


# How long a project's count of queued jobs stands in for counting again (QueueRoom).
QUEUE_COUNT_MAX_AGE_SECONDS = 1.0


class QueueRoom:
    """``check_queue_room`` for a stream of submissions, without counting the project's queue at
    each: counting is a scan of its queued jobs (thousands of rows near the limit) and, on
    PostgreSQL, a round trip, for a limit that only a runaway submitter reaches.

    A count read less than QUEUE_COUNT_MAX_AGE_SECONDS ago, plus every job this controller
    accepted since, bounds the queue from above (jobs leave a queue by themselves; they enter it
    by a submission), except for jobs queued again after a lost lease and, with replicas, jobs
    the other replicas accepted, in that last second. A submission the bound keeps under the
    limit is accepted on it; one it would put over is decided on a fresh count, so the limit is
    enforced as exactly as ``check_queue_room``'s (which counts, then inserts in another
    transaction) whenever the queue is near it."""

    def __init__(self, count_queued: Callable[[str], int], limit: int, *,
                 max_age: float = QUEUE_COUNT_MAX_AGE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.count_queued = count_queued
        self.limit = limit
        self.max_age = max_age
        self.clock = clock
        self._lock = threading.Lock()  # submissions are checked in several database threads
        self._bounds: Dict[str, Tuple[float, int]] = {}  # project -> (when counted, queued bound)

    def take(self, project: str, new_jobs: int) -> None:
        """Room for ``new_jobs`` more of ``project``, or ResourceExhausted; counts them as
        queued from now. Errs towards counting again sooner: a submission that then fails stays
        in the bound, and so do jobs other threads accepted while this one counted (the count
        may already hold them)."""
        now = self.clock()
        with self._lock:
            counted_at, seen = self._bounds.get(project, (None, 0))
            if counted_at is not None and now - counted_at <= self.max_age and seen + new_jobs <= self.limit:
                self._bounds[project] = (counted_at, seen + new_jobs)
                return
        queued = self.count_queued(project)  # outside the lock: a database read
        _refuse_over_limit(project, queued, new_jobs, self.limit)
        with self._lock:
            _, bound = self._bounds.get(project, (None, seen))
            self._bounds[project] = (now, queued + new_jobs + max(0, bound - seen))


def _refuse_over_limit(project: str, queued: int, new_jobs: int, limit: int) -> None:
    if queued + new_jobs > limit:
        raise ResourceExhausted(
            f"project {project} has {queued} queued jobs and this submission adds {new_jobs}; a project may "
            f"have at most {limit} queued (the operator sets it with --max-queued-jobs): wait for some to "
            "finish or cancel them")
