"""The agent's boundary with the wire: domain dataclasses -> hilfarm.v1 protobuf messages
(and the lease the controller sends back in).

A measured figure is proto3 ``optional``: a figure the agent measured is set (zero included),
one it did not is left unset and named in ``BenchmarkResult.unavailable`` with the reason, so
``result_to_pb`` names every ``None`` figure that its result forgot to name. Only the agent
writes results; the controller and the CLI read the messages themselves.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

from hilfarm.agent.results import (
    BenchmarkResult, Capabilities, DeviceActivity, Environment, Failure, FailureCategory, JobSettings,
    LatencyStats, LeasedJob, MemoryStats, OpProfile, Progress, RepeatStats, Unavailable,
)
from hilfarm.agent.telemetry import wire as telemetry_wire
from hilfarm.v1 import farm_pb2

# ---------------------------------------------------------------- settings


def _shapes_to_pb(shapes: Dict[str, List[int]]) -> List[farm_pb2.InputShape]:
    return [farm_pb2.InputShape(name=n, dims=list(d)) for n, d in shapes.items()]


def _shapes_from_pb(shapes) -> Dict[str, List[int]]:
    return {s.name: list(s.dims) for s in shapes}


_SETTINGS_SCALARS = [
    f.name for f in dataclasses.fields(JobSettings)
    if f.name not in ("tflite_delegate_options", "input_shapes")
]


def settings_from_pb(pb: farm_pb2.JobSettings) -> JobSettings:
    return JobSettings(
        **{n: getattr(pb, n) for n in _SETTINGS_SCALARS},
        tflite_delegate_options=dict(pb.tflite_delegate_options),
        input_shapes=_shapes_from_pb(pb.input_shapes),
    )


def lease_from_pb(pb: farm_pb2.Lease) -> LeasedJob:
    job = pb.job
    return LeasedJob(
        lease_id=pb.lease_id,
        job_id=job.id,
        attempt=job.attempt,
        model_sha256=job.model_sha256,
        model_format=job.model_format,
        model_name=job.model_name,
        device_profile=job.device_profile,
        expires_at=pb.expires_at,
        settings=settings_from_pb(job.settings),
    )


# ---------------------------------------------------------------- progress and failure


def progress_to_pb(p: Progress) -> farm_pb2.Progress:
    pb = farm_pb2.Progress(**{f.name: getattr(p, f.name) for f in dataclasses.fields(Progress)
                              if f.name != "telemetry"})
    pb.telemetry.extend(telemetry_wire.samples_to_pb(p.telemetry))
    return pb


def _category_to_pb(c: FailureCategory) -> int:
    return farm_pb2.FailureCategory.Value(f"FAILURE_CATEGORY_{c.name}")


def failure_to_pb(f: Failure) -> farm_pb2.Failure:
    return farm_pb2.Failure(
        category=_category_to_pb(f.category), message=f.message, signal=f.signal, detail=f.detail
    )


# ---------------------------------------------------------------- result

_SECTIONS = (("latency", LatencyStats), ("memory", MemoryStats))


def result_to_pb(r: BenchmarkResult) -> farm_pb2.BenchmarkResult:
    named = {u.field for u in r.unavailable}
    unavailable = list(r.unavailable)
    pb = farm_pb2.BenchmarkResult()
    for section, cls in _SECTIONS:
        obj = getattr(r, section)
        target = getattr(pb, section)
        for f in dataclasses.fields(cls):
            v = getattr(obj, f.name)
            if f.name == "samples_ns":
                target.samples_ns.extend(int(x) for x in v)
                target.count = len(v)
            elif f.name == "count":
                if v:
                    target.count = v
            elif v is None:
                key = f"{section}.{f.name}"
                if key not in named:
                    unavailable.append(Unavailable(key, "not measured"))
            else:
                setattr(target, f.name, v)
    pb.repeats.extend(_repeat_to_pb(rep) for rep in r.repeats)
    pb.stability.steady = r.stability.steady
    pb.stability.reasons.extend(r.stability.reasons)
    if r.activity is not None:
        pb.activity.CopyFrom(_activity_to_pb(r.activity))
    env = r.environment
    for f in dataclasses.fields(Environment):
        if f.name == "input_shapes":
            pb.environment.input_shapes.extend(_shapes_to_pb(env.input_shapes))
        elif f.name == "recorded_sources":
            pb.environment.recorded_sources.extend(env.recorded_sources)
        else:
            setattr(pb.environment, f.name, getattr(env, f.name))
    pb.unavailable.extend(farm_pb2.Unavailable(field=u.field, reason=u.reason) for u in unavailable)
    pb.warnings.extend(r.warnings)
    if r.telemetry is not None:
        # Adds power, thermal, timeline, their unavailable figures and warnings, and simulated.
        telemetry_wire.apply_summary(pb, r.telemetry)
    if r.sustained is not None:
        pb.sustained.CopyFrom(telemetry_wire.sustained_to_pb(r.sustained))
        known = {u.field for u in pb.unavailable}
        for name, reason in r.sustained.unavailable.items():
            if name not in known:
                pb.unavailable.add(field=name, reason=reason)
        if r.sustained.simulated:
            pb.environment.simulated = True
    if r.op_profile is not None:
        pb.op_profile.CopyFrom(op_profile_to_pb(r.op_profile))
    return pb


def _optional_fields(msg, obj) -> None:
    """Copy a dataclass's fields onto a message of the same field names, leaving None unset."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if v is None or isinstance(v, list):
            continue
        setattr(msg, f.name, v)


def _repeat_to_pb(rep: RepeatStats) -> farm_pb2.RepeatResult:
    msg = farm_pb2.RepeatResult()
    _optional_fields(msg, rep)
    msg.warnings.extend(rep.warnings)
    return msg


def _activity_to_pb(a: DeviceActivity) -> farm_pb2.DeviceActivity:
    msg = farm_pb2.DeviceActivity()
    _optional_fields(msg, a)
    msg.busy.extend(farm_pb2.BusyProcess(pid=b.pid, name=b.name, cpu_cores=b.cpu_cores) for b in a.busy)
    return msg


def op_profile_to_pb(p: OpProfile) -> farm_pb2.OpProfile:
    pb = farm_pb2.OpProfile(source=p.source, runs=p.runs, timing_unavailable=p.timing_unavailable,
                            trace_format=p.trace_format, warnings=list(p.warnings))
    for op in p.ops:
        item = pb.ops.add(node=op.node, op_type=op.op_type, provider=op.provider, calls=op.calls, order=op.order)
        if op.mean_seconds is not None:
            item.mean_seconds = op.mean_seconds
        if op.share is not None:
            item.share = op.share
    pb.nodes_by_provider.update(p.nodes_by_provider)
    if p.trace is not None:
        data = p.trace.encode("utf-8")
        pb.trace = data
        pb.trace_bytes = len(data)
    return pb


# ---------------------------------------------------------------- capabilities


def capabilities_to_pb(c: Capabilities) -> farm_pb2.Capabilities:
    return farm_pb2.Capabilities(
        runtimes=[
            farm_pb2.RuntimeInfo(
                name=r.name, version=r.version, package=r.package,
                execution_providers=list(r.execution_providers),
            )
            for r in c.runtimes
        ],
        cpu_cores=c.cpu_cores,
        memory_bytes=c.memory_bytes,
        machine=c.machine,
        os=c.os,
        kernel=c.kernel,
        python_version=c.python_version,
        accelerators=list(c.accelerators),
        emulation=c.emulation,
    )


def outcome_request(
    agent_id: str, job: LeasedJob, result: Optional[BenchmarkResult], failure: Optional[Failure]
) -> farm_pb2.ReportResultRequest:
    req = farm_pb2.ReportResultRequest(
        agent_id=agent_id, lease_id=job.lease_id, job_id=job.job_id, attempt=job.attempt
    )
    if failure is not None:
        req.failure.CopyFrom(failure_to_pb(failure))
    elif result is not None:
        req.result.CopyFrom(result_to_pb(result))
    return req
