"""The agent's boundary with the wire: domain dataclasses <-> hilfarm.v1 protobuf messages.

proto3 scalars have no "unset": a figure that was not measured goes out as zero and is named
in ``BenchmarkResult.unavailable``; coming back, a field named there is ``None`` again. So
``result_to_pb`` names every ``None`` figure that its result forgot to name.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

from hilfarm.agent.results import (
    BenchmarkResult, BusyProcess, Capabilities, DeviceActivity, Environment, Failure, FailureCategory,
    JobSettings, LatencyStats, LeasedJob, MemoryStats, OpProfile, OpTime, Progress, RepeatStats, RuntimeInfo,
    Stability, Unavailable,
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


def settings_to_pb(s: JobSettings) -> farm_pb2.JobSettings:
    pb = farm_pb2.JobSettings(**{n: getattr(s, n) for n in _SETTINGS_SCALARS})
    pb.tflite_delegate_options.update(s.tflite_delegate_options)
    pb.input_shapes.extend(_shapes_to_pb(s.input_shapes))
    return pb


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


def progress_from_pb(pb: farm_pb2.Progress) -> Progress:
    p = Progress(**{f.name: getattr(pb, f.name) for f in dataclasses.fields(Progress) if f.name != "telemetry"})
    p.telemetry = telemetry_wire.samples_from_pb(pb.telemetry)
    return p


def _category_to_pb(c: FailureCategory) -> int:
    return farm_pb2.FailureCategory.Value(f"FAILURE_CATEGORY_{c.name}")


def _category_from_pb(v: int) -> FailureCategory:
    name = farm_pb2.FailureCategory.Name(v)[len("FAILURE_CATEGORY_"):]
    return FailureCategory[name]


def failure_to_pb(f: Failure) -> farm_pb2.Failure:
    return farm_pb2.Failure(
        category=_category_to_pb(f.category), message=f.message, signal=f.signal, detail=f.detail
    )


def failure_from_pb(pb: farm_pb2.Failure) -> Failure:
    return Failure(
        category=_category_from_pb(pb.category), message=pb.message, signal=pb.signal, detail=pb.detail
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


def _present(msg, name: str) -> bool:
    """False only for a proto3 ``optional`` field left unset (other scalars are always there)."""
    field = msg.DESCRIPTOR.fields_by_name[name]
    has_presence = getattr(field, "has_presence", None)  # protobuf >= 5.28
    if has_presence is None:
        has_presence = field.containing_oneof is not None
    return msg.HasField(name) if has_presence and field.message_type is None else True


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


def _repeat_from_pb(msg: farm_pb2.RepeatResult) -> RepeatStats:
    values = {f.name: (getattr(msg, f.name) if _present(msg, f.name) else None)
              for f in dataclasses.fields(RepeatStats) if f.name != "warnings"}
    return RepeatStats(**values, warnings=list(msg.warnings))


def _activity_to_pb(a: DeviceActivity) -> farm_pb2.DeviceActivity:
    msg = farm_pb2.DeviceActivity()
    _optional_fields(msg, a)
    msg.busy.extend(farm_pb2.BusyProcess(pid=b.pid, name=b.name, cpu_cores=b.cpu_cores) for b in a.busy)
    return msg


def _activity_from_pb(msg: farm_pb2.DeviceActivity) -> DeviceActivity:
    values = {f.name: (getattr(msg, f.name) if _present(msg, f.name) else None)
              for f in dataclasses.fields(DeviceActivity) if f.name != "busy"}
    return DeviceActivity(**values, busy=[BusyProcess(b.pid, b.name, b.cpu_cores) for b in msg.busy])
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


def op_profile_from_pb(pb: farm_pb2.OpProfile) -> OpProfile:
    return OpProfile(
        source=pb.source, runs=pb.runs, timing_unavailable=pb.timing_unavailable, trace_format=pb.trace_format,
        warnings=list(pb.warnings), nodes_by_provider=dict(pb.nodes_by_provider),
        trace=pb.trace.decode("utf-8", "replace") if pb.trace else None,
        ops=[OpTime(node=o.node, op_type=o.op_type, provider=o.provider, calls=o.calls, order=o.order,
                    mean_seconds=o.mean_seconds if o.HasField("mean_seconds") else None,
                    share=o.share if o.HasField("share") else None) for o in pb.ops],
    )


def result_from_pb(pb: farm_pb2.BenchmarkResult) -> BenchmarkResult:
    named = {u.field for u in pb.unavailable}
    r = BenchmarkResult(
        unavailable=[Unavailable(u.field, u.reason) for u in pb.unavailable],
        warnings=list(pb.warnings),
    )
    for section, cls in _SECTIONS:
        src = getattr(pb, section)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name == "samples_ns":
                values[f.name] = list(src.samples_ns)
            elif f.name == "count":
                values[f.name] = src.count if src.count and not src.samples_ns else None
            elif f"{section}.{f.name}" in named or not _present(src, f.name):
                values[f.name] = None
            else:
                values[f.name] = getattr(src, f.name)
        setattr(r, section, cls(**values))
    r.repeats = [_repeat_from_pb(rep) for rep in pb.repeats]
    r.stability = Stability(steady=pb.stability.steady, reasons=list(pb.stability.reasons)) \
        if pb.HasField("stability") else Stability()
    r.activity = _activity_from_pb(pb.activity) if pb.HasField("activity") else None
    env = {}
    for f in dataclasses.fields(Environment):
        if f.name == "input_shapes":
            env[f.name] = _shapes_from_pb(pb.environment.input_shapes)
        elif f.name == "recorded_sources":
            env[f.name] = list(pb.environment.recorded_sources)
        else:
            env[f.name] = getattr(pb.environment, f.name)
    r.environment = Environment(**env)
    if pb.HasField("power") or pb.HasField("thermal") or len(pb.timeline):
        r.telemetry = telemetry_wire.summary_from_result(pb)
        # The result's own lists hold the telemetry's unavailable figures and warnings (as
        # telemetry.job.attach_summary leaves them); the summary keeps only the figures.
        r.telemetry.warnings, r.telemetry.unavailable = [], {}
    if pb.HasField("sustained"):
        r.sustained = telemetry_wire.sustained_from_pb(pb.sustained)
    if pb.HasField("op_profile"):
        r.op_profile = op_profile_from_pb(pb.op_profile)
    return r


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


def capabilities_from_pb(pb: farm_pb2.Capabilities) -> Capabilities:
    return Capabilities(
        runtimes=[
            RuntimeInfo(r.name, r.version, r.package, list(r.execution_providers)) for r in pb.runtimes
        ],
        cpu_cores=pb.cpu_cores,
        memory_bytes=pb.memory_bytes,
        machine=pb.machine,
        os=pb.os,
        kernel=pb.kernel,
        python_version=pb.python_version,
        accelerators=list(pb.accelerators),
        emulation=pb.emulation,
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
