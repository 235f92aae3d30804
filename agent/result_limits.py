"""Fit a report to what the controller accepts, before it is sent (hilfarm/wire_limits.py).

The work is done by the time a report is built: a report the controller refused would lose it.
So the agent keeps to the contract's limits itself, and says in the result what it changed:

- raw latency samples beyond MAX_RAW_SAMPLES, and sensor readings beyond MAX_TIMELINE_SAMPLES,
  are thinned evenly (every k-th, in order); the summary statistics were computed by the
  benchmark process from every sample, and ``latency.count`` still says how many runs there were;
- a report still larger than the message limit loses half of its timeline, then half of its
  samples, until it fits;
- text longer than its field allows is shortened (a log tail keeps its end), and NUL characters
  become U+FFFD;
- a number that is not finite becomes unset, named in ``unavailable``.
"""

from __future__ import annotations

import math
from typing import Any, List

from google.protobuf.message import Message

from hilfarm import wire_limits
from hilfarm.v1 import farm_pb2

_TRUNCATED = " [shortened to fit the controller's limit]"
# Fields whose end matters more than their start (a process's output tail).
_KEEP_END = frozenset({"hilfarm.v1.Failure.detail"})


def thin(values: List[Any], limit: int) -> List[Any]:
    """At most ``limit`` of ``values``, evenly spaced, in order (every k-th)."""
    if len(values) <= limit:
        return list(values)
    step = math.ceil(len(values) / limit)
    return list(values[::step])


def _is_repeated(field: Any) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


def _fit_text(field: Any, text: str) -> str:
    text = text.replace("\x00", "\ufffd")
    limit = wire_limits.max_chars(field)
    if len(text) <= limit:
        return text
    room = max(0, limit - len(_TRUNCATED))
    return (_TRUNCATED + text[-room:])[-limit:] if field.full_name in _KEEP_END else text[:room] + _TRUNCATED


def _fit_fields(msg: Message, path: str, notes: List[str], non_finite: List[str]) -> None:
    prefix = f"{path}." if path else ""
    for field, value in msg.ListFields():
        where = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue  # agents send no maps
        if _is_repeated(field):
            limit = wire_limits.max_items(field)
            if len(value) > limit:
                kept = thin(list(value), limit)
                notes.append(f"{where}: kept {len(kept)} of {len(value)} items (evenly spaced) to fit the "
                             f"controller's limit of {limit}")
                del value[:]
                value.extend(kept)
            if field.message_type is not None:
                for i, item in enumerate(value):
                    _fit_fields(item, f"{where}[{i}]", notes, non_finite)
            elif field.type == field.TYPE_STRING:
                fixed = [_fit_text(field, v) for v in value]
                if fixed != list(value):
                    del value[:]
                    value.extend(fixed)
            continue
        if field.message_type is not None:
            _fit_fields(value, where, notes, non_finite)
        elif field.type == field.TYPE_STRING:
            fixed = _fit_text(field, value)
            if fixed != value:
                setattr(msg, field.name, fixed)
        elif field.cpp_type in (field.CPPTYPE_DOUBLE, field.CPPTYPE_FLOAT) and not math.isfinite(value):
            msg.ClearField(field.name)
            non_finite.append(where)


def fit_message(msg: Message) -> List[str]:
    """Any message made to fit: counts thinned, text shortened, non-finite numbers unset.
    Returns what was changed."""
    notes: List[str] = []
    non_finite: List[str] = []
    _fit_fields(msg, "", notes, non_finite)
    if non_finite:
        notes.append(f"not finite, left unset: {', '.join(non_finite)}")
    return notes


def fit_report(request: farm_pb2.ReportResultRequest,
               max_bytes: int = wire_limits.MAX_MESSAGE_BYTES - wire_limits.REPORT_HEADROOM_BYTES) -> List[str]:
    """Make ``request`` acceptable to the controller, in place. Returns what was changed (also
    added to the result's warnings when it carries a result)."""
    notes: List[str] = []
    has_result = request.HasField("result")
    result = request.result
    if has_result:
        samples = result.latency.samples_ns
        if len(samples) > wire_limits.MAX_RAW_SAMPLES:
            kept = thin(list(samples), wire_limits.MAX_RAW_SAMPLES)
            notes.append(f"kept {len(kept)} of the {len(samples)} raw latency samples (every "
                         f"{math.ceil(len(samples) / len(kept))}th, in order) to fit the controller's limit of "
                         f"{wire_limits.MAX_RAW_SAMPLES}; the summary statistics are from all {len(samples)}")
            del samples[:]
            samples.extend(kept)
        timeline = result.timeline
        if len(timeline) > wire_limits.MAX_TIMELINE_SAMPLES:
            kept_readings = thin(list(timeline), wire_limits.MAX_TIMELINE_SAMPLES)
            notes.append(f"kept {len(kept_readings)} of the {len(timeline)} sensor readings of the timeline "
                         f"(evenly spaced) to fit the controller's limit of {wire_limits.MAX_TIMELINE_SAMPLES}")
            del timeline[:]
            timeline.extend(kept_readings)
    non_finite: List[str] = []
    _fit_fields(request, "", notes, non_finite)
    for where in non_finite:
        field = where.split(".", 1)[1] if where.startswith("result.") else where
        if has_result:
            result.unavailable.add(field=field, reason="the measured value was not a finite number")
    if non_finite:
        notes.append(f"not finite, left unset: {', '.join(non_finite)}")
    while has_result and request.ByteSize() > max_bytes:
        if len(result.timeline) > 1:
            before = len(result.timeline)
            kept_readings = list(result.timeline)[::2]
            del result.timeline[:]
            result.timeline.extend(kept_readings)
            notes.append(f"the report was over {max_bytes} bytes: kept {len(kept_readings)} of {before} sensor readings")
        elif len(result.latency.samples_ns) > 1:
            before = len(result.latency.samples_ns)
            kept = list(result.latency.samples_ns)[::2]
            del result.latency.samples_ns[:]
            result.latency.samples_ns.extend(kept)
            notes.append(f"the report was over {max_bytes} bytes: kept {len(kept)} of {before} raw latency samples")
        else:
            break
    if has_result and notes:
        result.warnings.extend(_fit_text(farm_pb2.BenchmarkResult.DESCRIPTOR.fields_by_name["warnings"], n)
                               for n in notes)
    return notes
