"""The stable JSON documents that `--json` prints (schema: hilfarm/run.schema.json).

Other tools and CI consume these, so field names only ever get added, never renamed.
Units are in the names: *_seconds, *_bytes, *_ns. A figure the device did not measure
is null and listed under result.unavailable with the reason.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from hilfarm.v1 import farm_pb2

RUN_SCHEMA_ID = "hilfarm.run/v1"
JOBS_SCHEMA_ID = "hilfarm.jobs/v1"
DEVICES_SCHEMA_ID = "hilfarm.devices/v1"


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
    }


def _progress(p: farm_pb2.Progress) -> Dict[str, Any]:
    return {
        "phase": p.phase,
        "runs_done": p.runs_done,
        "runs_target": p.runs_target,
        "elapsed_seconds": p.elapsed_seconds,
        "latest_latency_seconds": p.latest_latency_seconds or None,
        "updated_at": p.updated_at or None,
    }


def _failure(f: farm_pb2.Failure) -> Dict[str, Any]:
    return {
        "category": failure_category_name(f.category),
        "message": f.message,
        "signal": f.signal or None,
        "detail": f.detail or None,
    }


_LATENCY_FIGURES = (
    "load_seconds", "first_inference_seconds", "warmup_runs", "warmup_seconds",
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

    def figure(section: str, name: str, value: Any) -> Optional[Any]:
        # proto3 has no null: a figure named unavailable is null, not a silent zero.
        if f"{section}.{name}" in unavailable or name in unavailable:
            return None
        return value

    latency = {
        name: figure("latency", name, getattr(r.latency, name)) for name in _LATENCY_FIGURES
    }
    latency["count"] = len(r.latency.samples_ns)
    latency["samples_ns"] = list(r.latency.samples_ns) if with_samples else None
    memory: Dict[str, Any] = {
        name: figure("memory", name, getattr(r.memory, name)) for name in _MEMORY_FIGURES
    }
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
            "governor": figure("environment", "governor", env.governor),
            "agent_version": env.agent_version,
            "simulated": env.simulated,
            "input_shapes": {shape.name: list(shape.dims) for shape in env.input_shapes},
            "input_source": env.input_source,
            "runtime_settings": env.runtime_settings,
        },
        "unavailable": [{"field": u.field, "reason": u.reason} for u in r.unavailable],
        "warnings": list(r.warnings),
    }
