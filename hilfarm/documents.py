"""The stable JSON documents that `--json` prints (schema: hilfarm/run.schema.json).

Other tools and CI consume these, so field names only ever get added, never renamed.
Units are in the names: *_seconds, *_bytes, *_ns. A figure the device did not measure
is null and listed under result.unavailable with the reason.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional

from hilfarm.terminal_text import strip_terminal_escapes
from hilfarm.v1 import farm_pb2

RUN_SCHEMA_ID = "hilfarm.run/v1"
JOBS_SCHEMA_ID = "hilfarm.jobs/v1"
DEVICES_SCHEMA_ID = "hilfarm.devices/v1"
SUITE_RUN_SCHEMA_ID = "hilfarm.suite-run/v1"
HISTORY_SCHEMA_ID = "hilfarm.history/v1"
COMPARISON_SCHEMA_ID = "hilfarm.comparison/v1"
BASELINES_SCHEMA_ID = "hilfarm.baselines/v1"
# Which file under hilfarm/ describes each document.
SCHEMA_FILES = {
    RUN_SCHEMA_ID: "run.schema.json",
    JOBS_SCHEMA_ID: "jobs.schema.json",
    DEVICES_SCHEMA_ID: "devices.schema.json",
    SUITE_RUN_SCHEMA_ID: "suite-run.schema.json",
    HISTORY_SCHEMA_ID: "history.schema.json",
    COMPARISON_SCHEMA_ID: "comparison.schema.json",
    BASELINES_SCHEMA_ID: "baselines.schema.json",
}


def schema_registry():  # type: ignore[no-untyped-def]
    """Every schema above, for jsonschema: they refer to each other by $id (a suite run's job is
    the job of hilfarm.run/v1). ``jsonschema.validate(doc, {"$ref": doc["schema"]}, registry=...)``."""
    import json
    from pathlib import Path

    from referencing import Registry, Resource

    here = Path(__file__).parent
    return Registry().with_resources(
        (schema_id, Resource.from_contents(json.loads((here / name).read_text())))
        for schema_id, name in SCHEMA_FILES.items()
    )


def timed_runs(latency: farm_pb2.LatencyResult) -> int:
    """How many timed runs a result has, also when a listing left the raw samples out."""
    return latency.count or len(latency.samples_ns)


def state_name(state: int) -> str:
    return farm_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def failure_category_name(category: int) -> str:
    return farm_pb2.FailureCategory.Name(category).removeprefix("FAILURE_CATEGORY_").lower()


def run_document(run: farm_pb2.Run) -> Dict[str, Any]:
    return {
        "schema": RUN_SCHEMA_ID,
        "run_id": run.id,
        "created_at": run.created_at,
        "jobs": [job_document(job) for job in run.jobs],
    }


def jobs_document(jobs: List[farm_pb2.Job], *, with_samples: bool = True) -> Dict[str, Any]:
    return {"schema": JOBS_SCHEMA_ID, "jobs": [job_document(j, with_samples=with_samples) for j in jobs]}


def job_document(job: farm_pb2.Job, *, with_samples: bool = True) -> Dict[str, Any]:
    return {
        "id": job.id,
        "run_id": job.run_id,
        "model": {"name": job.model_name, "sha256": job.model_sha256, "format": job.model_format},
        "device_profile": job.device_profile,
        "state": state_name(job.state),
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "agent_id": job.agent_id or None,
        "created_at": job.created_at or None,
        "started_at": job.started_at or None,
        "finished_at": job.finished_at or None,
        "settings": _settings(job.settings),
        "required_tags": list(job.required_tags),
        "placement_notes": list(job.placement_notes),
        "progress": _progress(job.progress) if job.HasField("progress") else None,
        "result": _result(job.result, with_samples) if job.HasField("result") else None,
        "failure": _failure(job.failure) if job.HasField("failure") else None,
        "constraint_set": job.constraint_set or None,
        "constraints": [_budget(b) for b in job.constraints],
        "verdicts": [verdict_document(v) for v in job.verdicts],
    }


_VERDICT_STATUS = {farm_pb2.VERDICT_STATUS_PASS: "pass", farm_pb2.VERDICT_STATUS_FAIL: "fail"}


def verdict_document(v: farm_pb2.ConstraintVerdict) -> Dict[str, Any]:
    """One budget's verdict; status is pass, fail or unknown (measured and margin null)."""
    return {
        "constraint": v.constraint,
        "comparison": v.comparison,
        "budget": v.budget,
        "measured": v.measured if v.HasField("measured") else None,
        "margin": v.margin if v.HasField("margin") else None,
        "status": _VERDICT_STATUS.get(v.status, "unknown"),
        "unit": v.unit,
        "reason": v.reason or None,
        "device_profile": v.device_profile or None,
        "simulated": v.simulated,
    }


def _budget(b: farm_pb2.Budget) -> Dict[str, Any]:
    return {
        "name": b.name,
        "max": b.max if b.HasField("max") else None,
        "min": b.min if b.HasField("min") else None,
        "unit": b.unit,
        "device_profile": b.device_profile or None,
    }


def devices_document(devices: List[farm_pb2.Device]) -> Dict[str, Any]:
    return {"schema": DEVICES_SCHEMA_ID, "devices": [device_document(d) for d in devices]}


def device_document(device: farm_pb2.Device) -> Dict[str, Any]:
    caps = device.capabilities
    return {
        "agent_id": device.agent_id,
        "device_profile": device.device_profile,
        "state": device.state,
        "tags": list(device.tags),
        "hostname": device.hostname,
        "agent_version": device.agent_version,
        "last_seen": device.last_seen or None,
        "current_job_id": device.current_job_id or None,
        "capabilities": {
            "runtimes": [
                {
                    "name": r.name,
                    "version": r.version,
                    "package": r.package,
                    "execution_providers": list(r.execution_providers),
                }
                for r in caps.runtimes
            ],
            "cpu_cores": caps.cpu_cores,
            "memory_bytes": caps.memory_bytes,
            "machine": caps.machine,
            "os": caps.os,
            "kernel": caps.kernel,
            "python_version": caps.python_version,
            "accelerators": list(caps.accelerators),
            "emulation": caps.emulation or None,
        },
    }


def _settings(s: farm_pb2.JobSettings) -> Dict[str, Any]:
    return {
        "warmup_runs": s.warmup_runs,
        "warmup_seconds": s.warmup_seconds,
        "min_runs": s.min_runs,
        "min_seconds": s.min_seconds,
        "max_runs": s.max_runs,
        "max_seconds": s.max_seconds,
        "threads": s.threads,
        "runtime": s.runtime,
        "execution_provider": s.execution_provider,
        "graph_optimization": s.graph_optimization,
        "tflite_disable_xnnpack": s.tflite_disable_xnnpack,
        "tflite_delegate_path": s.tflite_delegate_path,
        "tflite_delegate_options": dict(s.tflite_delegate_options),
        "input_shapes": {shape.name: list(shape.dims) for shape in s.input_shapes},
        "inputs_sha256": s.inputs_sha256 or None,
        "seed": s.seed,
        "memory_limit_bytes": s.memory_limit_bytes,
        "timeout_seconds": s.timeout_seconds,
        "sustained_seconds": s.sustained_seconds,
        "repeats": s.repeats,
        "warmup_max_seconds": s.warmup_max_seconds,
        "dynamic_dimension_default": s.dynamic_dimension_default,
    }


def _progress(p: farm_pb2.Progress) -> Dict[str, Any]:
    return {
        "telemetry": [_sample(t) for t in p.telemetry],
        "phase": p.phase,
        "runs_done": p.runs_done,
        "runs_target": p.runs_target,
        "elapsed_seconds": p.elapsed_seconds,
        "latest_latency_seconds": p.latest_latency_seconds or None,
        "updated_at": p.updated_at or None,
        "repeat": p.repeat or None,
        "repeats": p.repeats or None,
    }


def _failure(f: farm_pb2.Failure) -> Dict[str, Any]:
    return {
        "category": failure_category_name(f.category),
        "message": strip_terminal_escapes(f.message),
        "signal": f.signal or None,
        "detail": strip_terminal_escapes(f.detail) or None,
    }


_LATENCY_FIGURES = (
    "load_seconds", "first_inference_seconds", "warmup_seconds",
    "total_seconds", "min_seconds", "mean_seconds", "p50_seconds", "p90_seconds",
    "p95_seconds", "p99_seconds", "max_seconds", "std_seconds", "cv",
    "throughput_per_second", "drift_ratio",
)
_MEMORY_FIGURES = (
    "baseline_peak_bytes", "baseline_rss_bytes", "peak_bytes", "model_delta_bytes",
    "model_file_bytes",
)


def _result(r: farm_pb2.BenchmarkResult, with_samples: bool) -> Dict[str, Any]:
    unavailable = {u.field: u.reason for u in r.unavailable}
    # A measured figure is proto3 optional: unset (not measured, named in unavailable) is null.
    latency: Dict[str, Any] = {name: _optional(r.latency, name) for name in _LATENCY_FIGURES}
    latency["warmup_runs"] = r.latency.warmup_runs  # a count, always known
    latency["count"] = timed_runs(r.latency)
    latency["samples_ns"] = list(r.latency.samples_ns) if with_samples else None
    latency["repeats"] = r.latency.repeats or max(1, len(r.repeats))
    for name in ("repeat_p50_min_seconds", "repeat_p50_max_seconds", "between_repeat_spread"):
        latency[name] = _optional(r.latency, name)
    memory: Dict[str, Any] = {name: _optional(r.memory, name) for name in _MEMORY_FIGURES}
    memory["source"] = r.memory.source
    env = r.environment
    return {
        "latency": latency,
        "memory": memory,
        "environment": {
            "agent_id": env.agent_id,
            "device_profile": env.device_profile,
            "hostname": env.hostname,
            "os": env.os,
            "kernel": env.kernel,
            "machine": env.machine,
            "python_version": env.python_version,
            "runtime": env.runtime,
            "runtime_version": env.runtime_version,
            "execution_provider": env.execution_provider,
            "threads": env.threads,
            "governor": None if "environment.governor" in unavailable else env.governor,
            "agent_version": env.agent_version,
            "simulated": env.simulated,
            "input_shapes": {shape.name: list(shape.dims) for shape in env.input_shapes},
            "input_source": env.input_source,
            "runtime_settings": env.runtime_settings,
            "emulated": env.emulated,
            "emulation": env.emulation or None,
            "recorded": env.recorded,
            "recorded_sources": list(env.recorded_sources),
        },
        "power": _power(r.power) if r.HasField("power") else None,
        "thermal": _thermal(r.thermal) if r.HasField("thermal") else None,
        "timeline": [_sample(t) for t in r.timeline] if with_samples else None,
        "sustained": _sustained(r.sustained) if r.HasField("sustained") else None,
        "repeats": [_repeat(rep) for rep in r.repeats],
        # A result from before the stability check has none: it was judged steady.
        "stability": {"steady": r.stability.steady, "reasons": list(r.stability.reasons)}
        if r.HasField("stability") else {"steady": True, "reasons": []},
        "activity": _activity(r.activity) if r.HasField("activity") else None,
        "op_profile": op_profile_document(r.op_profile) if r.HasField("op_profile") else None,
        "unavailable": [{"field": u.field, "reason": u.reason} for u in r.unavailable],
        "warnings": list(r.warnings),
    }


_REPEAT_FIGURES = ("load_seconds", "first_inference_seconds", "warmup_seconds", "p50_seconds", "mean_seconds",
                   "p99_seconds", "min_seconds", "cv", "drift_ratio", "peak_bytes")


def _repeat(rep: farm_pb2.RepeatResult) -> Dict[str, Any]:
    return dict({"index": rep.index, "first_sample": rep.first_sample, "count": rep.count,
                 "warmup_runs": rep.warmup_runs, "steady": rep.steady, "started_at": rep.started_at or None,
                 "wall_seconds": rep.wall_seconds},
                **{name: _optional(rep, name) for name in _REPEAT_FIGURES}, warnings=list(rep.warnings))


def _activity(a: farm_pb2.DeviceActivity) -> Dict[str, Any]:
    return {
        "load_average_start": _optional(a, "load_average_start"),
        "load_average_end": _optional(a, "load_average_end"),
        "other_cpu_cores": _optional(a, "other_cpu_cores"),
        "busy": [{"pid": b.pid, "name": b.name, "cpu_cores": b.cpu_cores} for b in a.busy],
        "quiet": a.quiet,
        "source": a.source,
    }


def _optional(msg: Any, name: str) -> Optional[Any]:
    # Measured figures are proto3 optional: unset (not measured) is null.
    return getattr(msg, name) if msg.HasField(name) else None


_WINDOW_FIGURES = ("p50_seconds", "p90_seconds", "mean_watts", "max_celsius", "min_clock_hz", "throttled_fraction")


def _sustained(s: farm_pb2.SustainedResult) -> Dict[str, Any]:
    return {
        "requested_seconds": s.requested_seconds,
        "duration_seconds": s.duration_seconds,
        "window_seconds": s.window_seconds,
        "windows": [
            dict({"start_seconds": w.start_seconds, "end_seconds": w.end_seconds, "runs": w.runs},
                 **{name: _optional(w, name) for name in _WINDOW_FIGURES})
            for w in s.windows
        ],
        "latency_change_ratio": _optional(s, "latency_change_ratio"),
        "temperature_rise_celsius": _optional(s, "temperature_rise_celsius"),
        "throttled_after_seconds": _optional(s, "throttled_after_seconds"),
        "simulated": s.simulated,
    }


def _power(p: farm_pb2.PowerResult) -> Dict[str, Any]:
    return {
        "idle_watts": _optional(p, "idle_watts"),
        "active_watts": _optional(p, "active_watts"),
        "energy_per_inference_joules": _optional(p, "energy_per_inference_joules"),
        "energy_method": p.energy_method or None,
        "sensor": p.sensor,
        "sample_rate_hz": _optional(p, "sample_rate_hz"),
        "rails": {rail.rail: _optional(rail, "mean_watts") for rail in p.rails},
        "simulated": p.simulated,
        "recorded": p.recorded,
    }


def _thermal(t: farm_pb2.ThermalResult) -> Dict[str, Any]:
    return {
        "zones": [
            {"zone": z.zone, "start_celsius": _optional(z, "start_celsius"), "max_celsius": _optional(z, "max_celsius"),
             "end_celsius": _optional(z, "end_celsius"), "sensor": z.sensor}
            for z in t.zones
        ],
        "clocks": [
            {"domain": c.domain, "min_hz": _optional(c, "min_hz"), "max_hz": _optional(c, "max_hz"),
             "allowed_max_hz": _optional(c, "allowed_max_hz")}
            for c in t.clocks
        ],
        "throttled": _optional(t, "throttled"),
        "throttled_fraction": _optional(t, "throttled_fraction"),
        "throttle_reasons": list(t.throttle_reasons),
        "cooldown_seconds": _optional(t, "cooldown_seconds"),
        "simulated": t.simulated,
        "recorded": t.recorded,
    }


def _sample(t: farm_pb2.TelemetrySample) -> Dict[str, Any]:
    return {"t": t.t, "sensor": t.sensor, "quantity": t.quantity, "channel": t.channel,
            "value": t.value, "simulated": t.simulated, "recorded": t.recorded}


OP_PROFILE_TOP = 20  # nodes in the run document; the full list is in the trace


def op_profile_document(p: farm_pb2.OpProfile, top: int = OP_PROFILE_TOP) -> Dict[str, Any]:
    """The per-operator profile: the ``top`` slowest nodes (all with top=0), slowest first."""
    ops = list(p.ops)[:top] if top > 0 else list(p.ops)
    return {
        "source": p.source,
        "runs": p.runs,
        "node_count": len(p.ops),
        "ops": [{"node": o.node, "op_type": o.op_type, "provider": o.provider, "calls": o.calls,
                 "mean_seconds": o.mean_seconds if o.HasField("mean_seconds") else None,
                 "share": o.share if o.HasField("share") else None, "order": o.order} for o in ops],
        "nodes_by_provider": dict(p.nodes_by_provider),
        "timing_unavailable": p.timing_unavailable or None,
        "trace_sha256": p.trace_sha256 or None,
        "trace_bytes": p.trace_bytes,
        "trace_format": p.trace_format or None,
        "warnings": list(p.warnings),
    }


# ---------------------------------------------------------------- regression testing

def _number(value: float) -> Optional[float]:
    """A figure as a JSON number; NaN (not computed, e.g. no p-value for a tolerance rule) is null."""
    return value if math.isfinite(value) else None


def _job_ids(text: str) -> List[str]:
    # A confirmation pools several jobs on each side; the message carries their ids joined by commas.
    return [j for j in text.split(",") if j]


_COMPARISON_FIGURES = ("baseline", "candidate", "ratio", "ci_low", "ci_high", "confidence", "p_value", "threshold")


def comparison_document(c: farm_pb2.Comparison) -> Dict[str, Any]:
    """``results compare --json`` and each comparison of a suite case."""
    return {
        "schema": COMPARISON_SCHEMA_ID,
        "baseline_job_ids": _job_ids(c.baseline_job_id),
        "candidate_job_ids": _job_ids(c.candidate_job_id),
        "regression": c.regression,
        "summary": c.summary or None,
        "simulated": c.simulated,
        "metrics": [
            dict({"metric": m.metric, "statistic": m.statistic or None},
                 **{name: _number(getattr(m, name)) for name in _COMPARISON_FIGURES},
                 verdict=m.verdict, summary=m.summary or None,
                 baseline_count=m.baseline_count, candidate_count=m.candidate_count,
                 simulated=m.simulated, inconclusive=m.inconclusive,
                 noise=m.noise if m.HasField("noise") else None,
                 noise_floor=m.noise_floor if m.HasField("noise_floor") else None,
                 noise_source=m.noise_source or None)
            for m in c.metrics
        ],
    }


def suite_run_document(run: farm_pb2.SuiteRun) -> Dict[str, Any]:
    """``regress --json``: the suite run and one entry per case. Each case's job is the job
    object of hilfarm.run/v1 without raw samples (``jobs show --json ID`` has them)."""
    return {
        "schema": SUITE_RUN_SCHEMA_ID,
        "id": run.id,
        "suite": run.suite,
        "trigger": run.trigger,
        "baseline": run.baseline,
        "state": run.state,
        "outcome": run.outcome or None,
        "started_at": run.started_at,
        "finished_at": run.finished_at or None,
        "accepted": run.accepted,
        "message": run.message or None,
        "simulated": run.simulated,
        "cases": [
            {
                "model_name": c.model_name,
                "model_sha256": c.model_sha256,
                "device_profile": c.device_profile,
                "runtime_config": c.runtime_config,
                "outcome": c.outcome or None,
                "simulated": c.simulated,
                "message": c.message or None,
                "job_id": c.job_id or None,
                "baseline_job_id": c.baseline_job_id or None,
                "confirm_job_ids": list(c.confirm_job_ids),
                "duration_seconds": c.duration_seconds,
                "verdicts": [verdict_document(v) for v in c.verdicts],
                "comparison": comparison_document(c.comparison) if c.HasField("comparison") else None,
                "confirmation": comparison_document(c.confirmation) if c.HasField("confirmation") else None,
                "job": job_document(c.job, with_samples=False) if c.HasField("job") else None,
            }
            for c in run.cases
        ],
    }


def history_document(model: str, device_profile: str, h: farm_pb2.HistoryResponse) -> Dict[str, Any]:
    """``results history --json``: one point per suite result, oldest first, and the change points."""
    return {
        "schema": HISTORY_SCHEMA_ID,
        "model": model,
        "device_profile": device_profile,
        "metric": h.metric,
        "unit": h.unit,
        "method": h.method or None,
        "points": [
            {"t": p.t, "value": _number(p.value), "outcome": p.outcome, "job_id": p.job_id,
             "suite_run_id": p.suite_run_id or None, "model_sha256": p.model_sha256,
             "runtime_config": p.runtime_config}
            for p in h.points
        ],
        "change_points": [
            {"index": c.index, "t": c.t, "job_id": c.job_id, "before": _number(c.before),
             "after": _number(c.after), "ratio": _number(c.ratio), "p_value": _number(c.p_value)}
            for c in h.change_points
        ],
    }


def baselines_document(baselines: Iterable[farm_pb2.Baseline]) -> Dict[str, Any]:
    """``results baselines --json``."""
    return {
        "schema": BASELINES_SCHEMA_ID,
        "baselines": [
            {"name": b.name, "model_name": b.model_name, "device_profile": b.device_profile,
             "runtime_config": b.runtime_config, "job_id": b.job_id, "model_sha256": b.model_sha256,
             "accepted_at": b.accepted_at, "suite": b.suite or None}
            for b in baselines
        ],
    }
