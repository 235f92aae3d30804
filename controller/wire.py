"""Conversions between the controller's domain (SQLModel rows, dataclasses, JSON documents) and
the hilfarm.v1 wire messages. Nothing else in the controller builds or reads a protobuf message
except the gRPC servicers in server.py, which call these functions.

JSON documents (job settings, progress, benchmark results, agent capabilities) mirror the proto
fields exactly: the same field names, nested messages as objects, repeated fields as lists,
int64 as JSON integers (raw samples stay exact), enums by name, bytes as base64, non-finite doubles as the
strings "NaN", "Infinity", "-Infinity" (as in the proto3 JSON mapping; PostgreSQL JSON cannot
hold them as numbers). A plain proto3 field at its zero value is absent from the document. A
measured figure is proto3 ``optional`` (see farm.proto): present with its value, zero included,
or absent and named in the result's ``unavailable``. Absent always means "not measured".
"""
from __future__ import annotations

import base64
import functools
import json
import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Type, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from hilfarm.terminal_text import strip_terminal_escapes
from hilfarm.v1 import farm_pb2 as pb

from .models import DEFAULT_PROJECT, Agent, Artifact, DeviceStatus, Failure, FailureCategory, Job, JobState, Run

M = TypeVar("M", bound=Message)

# ---------------------------------------------------------------- generic documents

def _is_repeated(field: Any) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5.28; older ones have only label
    if flag is not None:
        return bool(flag)
    return field.label == field.LABEL_REPEATED


def _is_map(field: Any) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _non_finite_text(value: float) -> str:
    """How the proto3 JSON mapping spells a float that is not finite."""
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _scalar_to_json(field: Any, value: Any) -> Any:
    if field.enum_type is not None:
        named = field.enum_type.values_by_number.get(value)
        return named.name if named is not None else value
    if isinstance(value, float) and not math.isfinite(value):
        return _non_finite_text(value)
    if isinstance(value, bytes):
        # As in the proto3 JSON mapping: bytes travel as base64 text.
        return base64.b64encode(value).decode("ascii")
    return value


def message_to_dict(msg: Message) -> Dict[str, Any]:
    """A JSON-ready document with every field the message sets (see the module docstring)."""
    out: Dict[str, Any] = {}
    for field, value in msg.ListFields():
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None:
                out[field.name] = {k: message_to_dict(v) for k, v in value.items()}
            else:
                out[field.name] = {k: _scalar_to_json(value_field, v) for k, v in value.items()}
        elif _is_repeated(field):
            if field.message_type is not None:
                out[field.name] = [message_to_dict(v) for v in value]
            else:
                out[field.name] = [_scalar_to_json(field, v) for v in value]
        elif field.message_type is not None:
            out[field.name] = message_to_dict(value)
        else:
            out[field.name] = _scalar_to_json(field, value)
    return out


def dict_to_message(doc: Optional[Dict[str, Any]], message_type: Type[M]) -> M:
    """The message a document made by ``message_to_dict`` describes (``json_format`` reads it:
    the documents are the proto3 JSON mapping with the proto's own field names).

    Reading is tolerant: a field or an enum value this version does not know (stored by a newer
    controller during a rolling upgrade, or by one that was rolled back) is left out, and the
    rest of the document is read, so replicas of two versions can share one database.

    A small document read before is not parsed again (``_parsed``): ``json_format`` walks every
    field in Python, 14 µs for a job's settings and 100 µs for a small result, while the same
    settings are shown with every job of a run and on every watcher's update."""
    if not doc:
        return message_type()
    try:
        text = json.dumps(doc, sort_keys=True)
    except (TypeError, ValueError):  # not JSON text (only documents the database holds are)
        text = ""
    if not text or len(text) > _PARSED_MAX_CHARS:
        return _parse(doc, message_type)
    return message_type.FromString(_parsed(message_type, text))


def _parse(doc: Dict[str, Any], message_type: Type[M]) -> M:
    msg = message_type()
    json_format.ParseDict(_non_finite_as_text(doc), msg, ignore_unknown_fields=True)
    return msg


# The documents remembered by ``_parsed``, and the longest (as JSON text) it remembers: a job's
# settings are about 120 characters, a result with a few hundred samples several thousand.
_PARSED_ENTRIES = 1024
_PARSED_MAX_CHARS = 8192


@functools.lru_cache(maxsize=_PARSED_ENTRIES)
def _parsed(message_type: Type[Message], text: str) -> bytes:
    """The wire form of the document whose canonical JSON text is ``text``: bytes, so that each
    caller gets a message of its own to change (parsing them back is a copy in C)."""
    return _parse(json.loads(text), message_type).SerializeToString()


def _non_finite_as_text(value: Any) -> Any:
    """Documents the controller builds in memory (comparisons) may hold float NaN or infinity;
    the JSON mapping spells them as text, which is what ``json_format`` reads."""
    if isinstance(value, float) and not math.isfinite(value):
        return _non_finite_text(value)
    if isinstance(value, dict):
        return {k: _non_finite_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_non_finite_as_text(v) for v in value]
    return value


# ---------------------------------------------------------------- documents with a name

def settings_to_pb(settings: Optional[Dict[str, Any]]) -> pb.JobSettings:
    return dict_to_message(settings, pb.JobSettings)


def settings_from_pb(msg: pb.JobSettings) -> Dict[str, Any]:
    return message_to_dict(msg)


def progress_to_pb(progress: Optional[Dict[str, Any]]) -> pb.Progress:
    return dict_to_message(progress, pb.Progress)


def progress_from_pb(msg: pb.Progress) -> Dict[str, Any]:
    return message_to_dict(msg)


def result_to_pb(result: Optional[Dict[str, Any]]) -> pb.BenchmarkResult:
    return dict_to_message(result, pb.BenchmarkResult)


# The sections whose figures carry presence. An agent from before the figures were ``optional``
# sent a measured zero as an absent field; a figure absent and not named in ``unavailable`` is
# named there on arrival, so a reading the farm cannot tell from zero is reported as unknown,
# never invented (a current agent names every figure it leaves out).
_MEASURED_SECTIONS = ("latency", "memory", "power", "thermal")
# Optional from the start, and unset by design with a single repeat: not a legacy zero.
_REPEAT_SPREAD = {"repeat_p50_min_seconds", "repeat_p50_max_seconds", "between_repeat_spread"}


def _has_presence(field: Any) -> bool:
    flag = getattr(field, "has_presence", None)  # protobuf >= 5.28
    if flag is not None:
        return bool(flag) and field.message_type is None and not _is_repeated(field)
    return field.containing_oneof is not None and field.message_type is None


def result_from_pb(msg: pb.BenchmarkResult) -> Dict[str, Any]:
    named = {u.field for u in msg.unavailable}
    for section in _MEASURED_SECTIONS:
        if not msg.HasField(section) or section in named:
            continue
        part = getattr(msg, section)
        for field in part.DESCRIPTOR.fields:
            key = f"{section}.{field.name}"
            if (_has_presence(field) and field.name not in _REPEAT_SPREAD and not part.HasField(field.name)
                    and key not in named):
                msg.unavailable.add(field=key, reason="not reported by the agent")
    return message_to_dict(msg)


def capabilities_to_pb(capabilities: Optional[Dict[str, Any]]) -> pb.Capabilities:
    return dict_to_message(capabilities, pb.Capabilities)


def capabilities_from_pb(msg: pb.Capabilities) -> Dict[str, Any]:
    return message_to_dict(msg)


# ---------------------------------------------------------------- enums and failures

_STATE_TO_PB = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.LEASED: pb.JOB_STATE_LEASED,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}
_STATE_FROM_PB = {v: k for k, v in _STATE_TO_PB.items()}

_CATEGORY_TO_PB = {
    FailureCategory.UNSPECIFIED: pb.FAILURE_CATEGORY_UNSPECIFIED,
    FailureCategory.ARTIFACT_INVALID: pb.FAILURE_CATEGORY_ARTIFACT_INVALID,
    FailureCategory.UNSUPPORTED_OP: pb.FAILURE_CATEGORY_UNSUPPORTED_OP,
    FailureCategory.INPUT_MISMATCH: pb.FAILURE_CATEGORY_INPUT_MISMATCH,
    FailureCategory.RUNTIME_CRASH: pb.FAILURE_CATEGORY_RUNTIME_CRASH,
    FailureCategory.OUT_OF_MEMORY: pb.FAILURE_CATEGORY_OUT_OF_MEMORY,
    FailureCategory.TIMEOUT: pb.FAILURE_CATEGORY_TIMEOUT,
    FailureCategory.DEVICE_FAULT: pb.FAILURE_CATEGORY_DEVICE_FAULT,
    FailureCategory.INFRASTRUCTURE: pb.FAILURE_CATEGORY_INFRASTRUCTURE,
    FailureCategory.CONFIGURATION: pb.FAILURE_CATEGORY_CONFIGURATION,
}
_CATEGORY_FROM_PB = {v: k for k, v in _CATEGORY_TO_PB.items()}


def job_state_to_pb(state: JobState) -> int:
    return _STATE_TO_PB[JobState(state)]


def job_state_from_pb(value: int) -> JobState:
    """Raises ValueError for JOB_STATE_UNSPECIFIED or a value this controller does not know."""
    try:
        return _STATE_FROM_PB[value]
    except KeyError:
        raise ValueError(f"job state {value} is not one this controller knows") from None


def failure_to_pb(failure: Failure) -> pb.Failure:
    return pb.Failure(
        category=_CATEGORY_TO_PB[failure.category],
        message=failure.message,
        signal=failure.signal,
        detail=failure.detail,
    )


def failure_from_pb(msg: pb.Failure) -> Failure:
    # A category from a newer agent that this controller does not know still says nothing
    # about whose fault it is: keep it as unspecified rather than refuse the report.
    # The detail is the tail of a runtime's output: stored without its terminal escapes.
    return Failure(
        category=_CATEGORY_FROM_PB.get(msg.category, FailureCategory.UNSPECIFIED),
        message=strip_terminal_escapes(msg.message),
        signal=msg.signal,
        detail=strip_terminal_escapes(msg.detail),
    )


# ---------------------------------------------------------------- jobs and runs

def job_to_pb(job: Job, placement_notes: Sequence[str] = ()) -> pb.Job:
    msg = pb.Job(
        id=job.id,
        run_id=job.run_id,
        project=job.project,
        model_name=job.model_name,
        model_sha256=job.model_sha256,
        model_format=job.model_format,
        device_profile=job.device_profile,
        state=job_state_to_pb(job.job_state),
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        agent_id=job.agent_id or "",
        created_at=job.created_at,
        started_at=job.started_at or 0.0,
        finished_at=job.finished_at or 0.0,
        settings=settings_to_pb(job.settings),
        required_tags=list(job.required_tags),
        placement_notes=list(placement_notes),
    )
    if job.progress is not None:
        msg.progress.CopyFrom(progress_to_pb(job.progress))
    if job.result is not None:
        msg.result.CopyFrom(result_to_pb(job.result))
    failure = job.failure
    if failure is not None:
        msg.failure.CopyFrom(failure_to_pb(failure))
    return msg


def job_from_pb(msg: pb.Job) -> Job:
    """The job a message describes. Placement notes are derived, not stored: read them from
    ``msg.placement_notes``. Lease fields are not on the wire and stay unset."""
    job = Job(
        id=msg.id,
        run_id=msg.run_id,
        project=msg.project or DEFAULT_PROJECT,
        model_name=msg.model_name,
        model_sha256=msg.model_sha256,
        model_format=msg.model_format,
        device_profile=msg.device_profile,
        state=job_state_from_pb(msg.state).value,
        attempt=msg.attempt,
        max_attempts=msg.max_attempts,
        agent_id=msg.agent_id or None,
        created_at=msg.created_at,
        started_at=msg.started_at or None,
        finished_at=msg.finished_at or None,
        settings=settings_from_pb(msg.settings),
        required_tags=list(msg.required_tags),
        progress=progress_from_pb(msg.progress) if msg.HasField("progress") else None,
        result=result_from_pb(msg.result) if msg.HasField("result") else None,
    )
    if msg.HasField("failure"):
        job.set_failure(failure_from_pb(msg.failure))
    return job


def run_to_pb(run: Run, jobs: Iterable[Job], notes: Optional[Dict[str, List[str]]] = None) -> pb.Run:
    notes = notes or {}
    return pb.Run(
        id=run.id,
        created_at=run.created_at,
        project=run.project,
        jobs=[job_to_pb(job, notes.get(job.id, ())) for job in jobs],
    )


def run_from_pb(msg: pb.Run) -> Tuple[Run, List[Job]]:
    return (Run(id=msg.id, created_at=msg.created_at, project=msg.project or DEFAULT_PROJECT),
            [job_from_pb(j) for j in msg.jobs])


def lease_to_pb(job: Job) -> pb.Lease:
    return pb.Lease(lease_id=job.lease_id or "", job=job_to_pb(job), expires_at=job.lease_expires_at or 0.0)


# ---------------------------------------------------------------- devices

def device_to_pb(device: DeviceStatus) -> pb.Device:
    agent = device.agent
    return pb.Device(
        agent_id=agent.id,
        device_profile=agent.profile,
        tags=list(agent.tags),
        state=device.state,
        last_seen=agent.last_seen,
        hostname=agent.hostname,
        agent_version=agent.version,
        capabilities=capabilities_to_pb(agent.capabilities),
        current_job_id=device.current_job_id,
    )


def device_from_pb(msg: pb.Device) -> DeviceStatus:
    """Registration time is not on the wire; it is taken to be the last contact."""
    agent = Agent(
        id=msg.agent_id,
        profile=msg.device_profile,
        tags=list(msg.tags),
        capabilities=capabilities_from_pb(msg.capabilities),
        hostname=msg.hostname,
        version=msg.agent_version,
        registered_at=msg.last_seen,
        last_seen=msg.last_seen,
        busy=msg.state == "busy",
        draining=msg.state == "draining",
    )
    return DeviceStatus(agent=agent, state=msg.state, current_job_id=msg.current_job_id)


# ---------------------------------------------------------------- artifacts

def artifact_from_header(header: pb.ArtifactHeader, *, created_at: float) -> Artifact:
    return Artifact(
        sha256=header.sha256.lower(),
        size_bytes=header.size_bytes,
        format=header.format.lower(),
        filename=header.filename,
        created_at=created_at,
    )


def artifact_to_header(artifact: Artifact) -> pb.ArtifactHeader:
    return pb.ArtifactHeader(
        sha256=artifact.sha256, size_bytes=artifact.size_bytes, filename=artifact.filename, format=artifact.format
    )


def artifact_ref_to_pb(artifact: Artifact, *, already_stored: bool = False, bytes_received: int = 0) -> pb.ArtifactRef:
    return pb.ArtifactRef(
        sha256=artifact.sha256,
        size_bytes=artifact.size_bytes,
        format=artifact.format,
        filename=artifact.filename,
        already_stored=already_stored,
        bytes_received=bytes_received,
    )


def artifact_ref_from_pb(msg: pb.ArtifactRef) -> Tuple[Artifact, bool, int]:
    """(artifact, already_stored, bytes_received); the stored time is not on the wire (0)."""
    artifact = Artifact(
        sha256=msg.sha256, size_bytes=msg.size_bytes, format=msg.format, filename=msg.filename, created_at=0.0
    )
    return artifact, msg.already_stored, msg.bytes_received


# ---------------------------------------------------------------- constraints, baselines, suites
# (documents made by hilfarm.constraints, regression.py and the regression tables in models.py)

def budget_doc_to_pb(doc: Dict[str, Any]) -> pb.Budget:
    return dict_to_message(doc, pb.Budget)


def budget_doc_from_pb(msg: pb.Budget) -> Dict[str, Any]:
    doc = message_to_dict(msg)
    doc.setdefault("name", "")
    return doc


_VERDICT_STATUS = {"pass": pb.VERDICT_STATUS_PASS, "fail": pb.VERDICT_STATUS_FAIL,
                   "unknown": pb.VERDICT_STATUS_UNKNOWN}
_VERDICT_STATUS_FROM_PB = {v: k for k, v in _VERDICT_STATUS.items()}


def verdict_doc_to_pb(doc: Dict[str, Any]) -> pb.ConstraintVerdict:
    msg = pb.ConstraintVerdict(
        constraint=doc.get("constraint", ""), comparison=doc.get("comparison", ""),
        budget=float(doc.get("budget") or 0.0), status=_VERDICT_STATUS.get(doc.get("status", ""), pb.VERDICT_STATUS_UNKNOWN),
        unit=doc.get("unit") or "", reason=doc.get("reason") or "", device_profile=doc.get("device_profile") or "",
        simulated=bool(doc.get("simulated")),
    )
    if doc.get("measured") is not None:
        msg.measured = float(doc["measured"])
    if doc.get("margin") is not None:
        msg.margin = float(doc["margin"])
    return msg


def verdict_doc_from_pb(msg: pb.ConstraintVerdict) -> Dict[str, Any]:
    return {
        "constraint": msg.constraint, "comparison": msg.comparison, "budget": msg.budget,
        "measured": msg.measured if msg.HasField("measured") else None,
        "margin": msg.margin if msg.HasField("margin") else None,
        "status": _VERDICT_STATUS_FROM_PB.get(msg.status, "unknown"), "unit": msg.unit,
        "reason": msg.reason, "device_profile": msg.device_profile, "simulated": msg.simulated,
    }


def add_evaluation(msg: pb.Job, evaluation: Any) -> pb.Job:
    """Budgets and verdicts of a job (a models.JobEvaluation, or None)."""
    if evaluation is not None:
        msg.constraint_set = evaluation.constraint_set
        msg.constraints.extend(budget_doc_to_pb(b) for b in evaluation.budgets)
        msg.verdicts.extend(verdict_doc_to_pb(v) for v in evaluation.verdicts or [])
    return msg


def comparison_to_pb(doc: Optional[Dict[str, Any]]) -> pb.Comparison:
    return dict_to_message(doc, pb.Comparison)


def comparison_from_pb(msg: pb.Comparison) -> Dict[str, Any]:
    return message_to_dict(msg)


def baseline_to_pb(row: Any) -> pb.Baseline:
    return pb.Baseline(name=row.name, model_name=row.model_name, device_profile=row.device_profile,
                       runtime_config=row.runtime_config, job_id=row.job_id, model_sha256=row.model_sha256,
                       accepted_at=row.accepted_at, suite=row.suite, project=row.project)


def tolerances_from_pb(msg: pb.Tolerances) -> Dict[str, Any]:
    return message_to_dict(msg)


def suite_spec_from_pb(msg: pb.SuiteSpec) -> Dict[str, Any]:
    return message_to_dict(msg)


def suite_spec_to_pb(doc: Dict[str, Any]) -> pb.SuiteSpec:
    return dict_to_message(doc, pb.SuiteSpec)


def suite_case_to_pb(row: Any, job: Optional[pb.Job] = None) -> pb.SuiteCase:
    msg = pb.SuiteCase(
        model_name=row.model_name, model_sha256=row.model_sha256, device_profile=row.device_profile,
        runtime_config=row.runtime_config, outcome=row.outcome, job_id=row.job_id,
        baseline_job_id=row.baseline_job_id, message=row.message, confirm_job_ids=list(row.confirm_job_ids),
        duration_seconds=row.duration_seconds,
        verdicts=[verdict_doc_to_pb(v) for v in row.verdicts],
        simulated=case_simulated(row),
    )
    if row.comparison:
        msg.comparison.CopyFrom(comparison_to_pb(row.comparison))
    if row.confirmation:
        msg.confirmation.CopyFrom(comparison_to_pb(row.confirmation))
    if job is not None:
        msg.job.CopyFrom(job)
    return msg


def case_simulated(row: Any) -> bool:
    """A suite case was judged on a simulated figure: a verdict or a comparison says so."""
    return (any(v.get("simulated") for v in row.verdicts or [])
            or bool((row.comparison or {}).get("simulated")) or bool((row.confirmation or {}).get("simulated")))


def suite_run_to_pb(row: Any, cases: Sequence[pb.SuiteCase] = ()) -> pb.SuiteRun:
    return pb.SuiteRun(id=row.id, suite=row.suite, trigger=row.trigger, baseline=row.baseline, state=row.state,
                       outcome=row.outcome, started_at=row.started_at, finished_at=row.finished_at or 0.0,
                       message=row.message, accepted=row.accepted, cases=list(cases), project=row.project,
                       simulated=any(c.simulated for c in cases))


# ---------------------------------------------------------------- identity and access
# (rows of controller/models.py; roles are auth.Role, converted in auth.py)

def user_token_to_pb(row: Any) -> pb.UserToken:
    from .auth import Role, role_to_pb

    return pb.UserToken(id=row.id, project=row.project, role=role_to_pb(Role.parse(row.role)), name=row.name,
                        created_at=row.created_at, expires_at=row.expires_at or 0.0,
                        revoked_at=row.revoked_at or 0.0, created_by=row.created_by)


def enrollment_token_to_pb(row: Any) -> pb.EnrollmentToken:
    return pb.EnrollmentToken(id=row.id, device_profile=row.device_profile, tags=list(row.tags),
                              agent_id=row.agent_id or "", uses_left=-1 if row.uses_left is None else row.uses_left,
                              expires_at=row.expires_at or 0.0, created_at=row.created_at,
                              created_by=row.created_by, revoked_at=row.revoked_at or 0.0)


def agent_identity_to_pb(row: Any) -> pb.AgentIdentity:
    return pb.AgentIdentity(agent_id=row.agent_id, device_profile=row.device_profile, tags=list(row.tags),
                            enrolled_at=row.enrolled_at, enrolled_by=row.enrolled_by,
                            revoked_at=row.revoked_at or 0.0)
