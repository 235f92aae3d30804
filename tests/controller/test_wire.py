"""Every wire conversion round-trips a fully populated message: each field of the proto (found
by walking its descriptor, so a field added to the contract is covered without editing here)."""
from __future__ import annotations

import itertools
import json
import math

import pytest

from hilfarm.controller import wire
from hilfarm.controller.models import Failure, FailureCategory, JobState
from hilfarm.v1 import farm_pb2 as pb

_counter = itertools.count(1)


def _repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


def _scalar(field):
    n = next(_counter)
    if field.enum_type is not None:
        return field.enum_type.values[-1].number
    cpp = field.cpp_type
    if field.type == field.TYPE_BYTES:
        return bytes([n % 256, 0, 255]) + f"{field.name}-{n}".encode()
    if cpp == field.CPPTYPE_STRING:
        return f"{field.name}-{n}"
    if cpp == field.CPPTYPE_BOOL:
        return True
    if cpp in (field.CPPTYPE_DOUBLE, field.CPPTYPE_FLOAT):
        return n + 0.25
    if cpp in (field.CPPTYPE_INT64, field.CPPTYPE_UINT64):
        return (1 << 60) + n  # beyond 2**53: JSON documents must keep int64 exact
    return n


def populate(msg):
    """Set every field of ``msg`` (recursively) to a non-default value."""
    for field in msg.DESCRIPTOR.fields:
        if field.containing_oneof is not None and msg.WhichOneof(field.containing_oneof.name):
            continue
        target = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key in ("a", "b"):
                if value_field.message_type is not None:
                    populate(target[key])
                else:
                    target[key] = _scalar(value_field)
        elif _repeated(field):
            for _ in range(2):
                if field.message_type is not None:
                    populate(target.add())
                else:
                    target.append(_scalar(field))
        elif field.message_type is not None:
            populate(target)
        else:
            setattr(msg, field.name, _scalar(field))
    return msg


def _through_json(doc):
    # What the database stores: strict JSON (no NaN literals), read back.
    return json.loads(json.dumps(doc, allow_nan=False))


@pytest.mark.parametrize("message_type, to_pb, from_pb", [
    (pb.JobSettings, wire.settings_to_pb, wire.settings_from_pb),
    (pb.Progress, wire.progress_to_pb, wire.progress_from_pb),
    (pb.BenchmarkResult, wire.result_to_pb, wire.result_from_pb),
    (pb.Capabilities, wire.capabilities_to_pb, wire.capabilities_from_pb),
])
def test_documents_round_trip_every_field(message_type, to_pb, from_pb):
    original = populate(message_type())
    doc = _through_json(from_pb(original))
    assert to_pb(doc) == original
    # Every field appears in the document under its proto name.
    assert set(doc) == {f.name for f in message_type.DESCRIPTOR.fields}


def test_result_document_mirrors_the_proto_names_and_keeps_raw_samples():
    samples = [1, 999_999_999_999, (1 << 62) + 7]
    doc = wire.result_from_pb(pb.BenchmarkResult(
        latency=pb.LatencyResult(samples_ns=samples, p99_seconds=0.5, cv=0.0),
        unavailable=[pb.Unavailable(field="latency", reason="one test figure only"),
                     pb.Unavailable(field="memory.peak_bytes", reason="no /proc")],
        warnings=["simulated sensor"],
    ))
    assert doc == {
        "latency": {"samples_ns": samples, "p99_seconds": 0.5, "cv": 0.0},  # a measured zero is kept
        "unavailable": [{"field": "latency", "reason": "one test figure only"},
                        {"field": "memory.peak_bytes", "reason": "no /proc"}],
        "warnings": ["simulated sensor"],
    }
    assert all(type(s) is int for s in _through_json(doc)["latency"]["samples_ns"])


def test_a_figure_an_older_agent_left_out_is_stored_as_unknown_never_as_zero():
    """An agent from before figures were proto3 optional sent a measured zero as an absent
    field, and named only what it could not measure: the rest arrives named, never invented."""
    doc = wire.result_from_pb(pb.BenchmarkResult(
        latency=pb.LatencyResult(samples_ns=[1000], p50_seconds=1e-6),
        memory=pb.MemoryResult(peak_bytes=5 << 20),
        unavailable=[pb.Unavailable(field="memory.baseline_rss_bytes", reason="no /proc")],
    ))
    named = {u["field"]: u["reason"] for u in doc["unavailable"]}
    assert named["memory.baseline_rss_bytes"] == "no /proc"
    assert named["latency.drift_ratio"] == named["memory.model_delta_bytes"] == "not reported by the agent"
    assert "latency.p50_seconds" not in named and "memory.peak_bytes" not in named
    # The spread between repeats is unset by design with one repeat: not named.
    assert "latency.between_repeat_spread" not in named
    assert "drift_ratio" not in doc["latency"] and "power.active_watts" not in named  # no power section


def test_non_finite_doubles_survive_strict_json():
    original = pb.BenchmarkResult(latency=pb.LatencyResult(cv=math.nan, drift_ratio=math.inf, min_seconds=-math.inf))
    doc = _through_json(wire.result_from_pb(original))
    assert doc["latency"] == {"cv": "NaN", "drift_ratio": "Infinity", "min_seconds": "-Infinity"}
    back = wire.result_to_pb(doc).latency
    assert math.isnan(back.cv) and back.drift_ratio == math.inf and back.min_seconds == -math.inf


def test_a_document_built_in_memory_may_hold_float_nan():
    """Comparisons are built as dicts, not through message_to_dict: a NaN interval is read."""
    comparison = wire.comparison_to_pb({"metrics": [{"ci_low": math.nan, "ci_high": math.inf}]})
    assert math.isnan(comparison.metrics[0].ci_low) and comparison.metrics[0].ci_high == math.inf


def test_a_document_stored_by_a_newer_version_is_read_with_what_this_version_knows():
    """A rolling upgrade: a newer replica stored fields (top level, nested, in lists and maps)
    and an enum value this version does not know; an older replica still reads the result."""
    doc = wire.result_from_pb(populate(pb.BenchmarkResult()))
    expected = wire.result_to_pb(doc)
    newer = json.loads(json.dumps(doc))
    newer["repeats"][0]["child_pid"] = 42
    newer["later_section"] = [{"p50_seconds": 0.001}]
    newer["latency"]["p999_seconds"] = 0.5
    newer["environment"]["kernel_config"] = {"preempt": "full"}
    newer["unavailable"][0]["severity"] = "low"
    assert wire.result_to_pb(newer) == expected
    failure = {"category": "FAILURE_CATEGORY_THERMAL_SHUTDOWN", "message": "too hot", "signal": 0}
    read = wire.dict_to_message(failure, pb.Failure)
    assert read.message == "too hot" and read.category == pb.FAILURE_CATEGORY_UNSPECIFIED


def test_a_document_read_again_is_the_same_message_and_each_reader_gets_its_own():
    """Small documents read before are remembered (wire._parsed): a repeat must read exactly as
    a first read, a change one caller makes to its message must not reach the next caller, and
    the same values in another key order are the same document."""
    settings = {"runtime": "null", "min_runs": 3, "tflite_delegate_options": {"a": "1"}, "seed": (1 << 60) + 1}
    first = wire.settings_to_pb(settings)
    first.min_runs = 99
    first.tflite_delegate_options["b"] = "2"
    again = wire.settings_to_pb(dict(reversed(list(settings.items()))))
    assert again.min_runs == 3 and dict(again.tflite_delegate_options) == {"a": "1"}
    assert again.seed == (1 << 60) + 1
    assert again == wire._parse(settings, pb.JobSettings)
    result = wire.result_from_pb(populate(pb.BenchmarkResult()))
    assert wire.result_to_pb(result) == wire.result_to_pb(json.loads(json.dumps(result))) == wire._parse(result, pb.BenchmarkResult)
    assert wire.result_to_pb({"latency": {"p50_seconds": math.nan}}).latency.p50_seconds != 0.0  # NaN, still


def test_job_round_trips_with_placement_notes():
    original = populate(pb.Job())
    # Budgets and verdicts live in their own table; they round-trip through add_evaluation.
    for name in ("constraints", "verdicts", "constraint_set"):
        original.ClearField(name)
    job = wire.job_from_pb(original)
    assert wire.job_to_pb(job, list(original.placement_notes)) == original


def test_a_job_without_progress_result_or_failure_leaves_them_unset():
    job = wire.job_from_pb(pb.Job(id="j", run_id="r", state=pb.JOB_STATE_QUEUED, created_at=1.5))
    assert job.progress is None and job.result is None and job.failure is None
    msg = wire.job_to_pb(job)
    assert not msg.HasField("progress") and not msg.HasField("result") and not msg.HasField("failure")


@pytest.mark.parametrize("state", list(JobState))
def test_every_job_state_round_trips(state):
    assert wire.job_state_from_pb(wire.job_state_to_pb(state)) is state


def test_unspecified_job_state_is_refused():
    with pytest.raises(ValueError):
        wire.job_state_from_pb(pb.JOB_STATE_UNSPECIFIED)


@pytest.mark.parametrize("category", list(FailureCategory))
def test_every_failure_category_round_trips(category):
    failure = Failure(category=category, message="m", signal=11, detail="tail")
    assert wire.failure_from_pb(wire.failure_to_pb(failure)) == failure


def test_a_failure_category_from_a_newer_agent_reads_as_unspecified():
    assert wire.failure_from_pb(pb.Failure(category=99, message="x")).category is FailureCategory.UNSPECIFIED


def test_a_failure_is_stored_without_terminal_escapes():
    # The tail of a runtime's coloured log must not repaint terminals, JSON or JUnit later.
    reported = pb.Failure(category=pb.FAILURE_CATEGORY_RUNTIME_CRASH, message="\x1b[31mcrashed\x1b[0m",
                          detail="\x1b[1;31m2026-11-30 [E:onnxruntime] boom\x1b[m\nloading 10%\rloading 99%\r\nend")
    failure = wire.failure_from_pb(reported)
    assert failure.message == "crashed"
    assert failure.detail == "2026-11-30 [E:onnxruntime] boom\nloading 99%\nend"


def test_every_failure_category_of_the_contract_is_known():
    known = {wire.failure_to_pb(wire.failure_from_pb(pb.Failure(category=v.number))).category
             for v in pb.FailureCategory.DESCRIPTOR.values}
    assert known == {v.number for v in pb.FailureCategory.DESCRIPTOR.values}


def test_run_round_trips():
    original = populate(pb.Run())
    for job in original.jobs:  # budgets and verdicts: see add_evaluation
        for name in ("constraints", "verdicts", "constraint_set"):
            job.ClearField(name)
    run, jobs = wire.run_from_pb(original)
    notes = {j.id: list(m.placement_notes) for j, m in zip(jobs, original.jobs)}
    assert wire.run_to_pb(run, jobs, notes) == original


@pytest.mark.parametrize("state", ["idle", "busy", "offline", "draining"])
def test_device_round_trips(state):
    original = populate(pb.Device())
    original.state = state
    device = wire.device_from_pb(original)
    assert device.agent.busy == (state == "busy") and device.agent.draining == (state == "draining")
    assert wire.device_to_pb(device) == original


def test_lease_carries_the_job_and_its_expiry():
    job = wire.job_from_pb(populate(pb.Job()))
    job.lease_id, job.lease_expires_at = "lease-1", 1234.5
    lease = wire.lease_to_pb(job)
    assert (lease.lease_id, lease.expires_at) == ("lease-1", 1234.5)
    assert wire.job_from_pb(lease.job) == wire.job_from_pb(wire.job_to_pb(job))


def test_artifact_header_and_ref_round_trip():
    header = pb.ArtifactHeader(sha256="ab" * 32, size_bytes=(1 << 40) + 1, filename="Net.onnx", format="onnx")
    artifact = wire.artifact_from_header(header, created_at=5.0)
    assert wire.artifact_to_header(artifact) == header
    ref = populate(pb.ArtifactRef())
    artifact, already, received = wire.artifact_ref_from_pb(ref)
    assert wire.artifact_ref_to_pb(artifact, already_stored=already, bytes_received=received) == ref


def test_budgets_and_verdicts_round_trip():
    budget = {"name": "latency.p99", "max": 0.04, "device_profile": "rpi5", "unit": "s"}
    assert wire.budget_doc_from_pb(wire.budget_doc_to_pb(budget)) == budget
    for verdict in (
        {"constraint": "latency.p99", "comparison": "<=", "budget": 0.04, "measured": 0.05, "margin": -0.01,
         "status": "fail", "unit": "s", "reason": "", "device_profile": "rpi5", "simulated": False},
        {"constraint": "power.mean", "comparison": "<=", "budget": 3.0, "measured": None, "margin": None,
         "status": "unknown", "unit": "W", "reason": "no power sensor", "device_profile": "", "simulated": False},
        {"constraint": "power.mean", "comparison": "<=", "budget": 3.0, "measured": 2.5, "margin": 0.5,
         "status": "pass", "unit": "W", "reason": "measured by a simulated sensor", "device_profile": "",
         "simulated": True},
    ):
        assert wire.verdict_doc_from_pb(wire.verdict_doc_to_pb(verdict)) == verdict


def test_sustained_windows_keep_which_figures_were_measured():
    # proto3 optional: a measured 0.0 (no throttling, no temperature change) must come back as
    # measured, and a figure the device could not give must come back unset, not as 0.0.
    original = pb.BenchmarkResult(sustained=pb.SustainedResult(
        requested_seconds=60.0, duration_seconds=60.0, window_seconds=1.0, simulated=True,
        windows=[pb.SustainedWindow(start_seconds=0.0, end_seconds=1.0, runs=120, p50_seconds=0.008,
                                    p90_seconds=0.009, max_celsius=55.0, throttled_fraction=0.0),
                 pb.SustainedWindow(start_seconds=1.0, end_seconds=2.0, runs=0, max_celsius=55.0,
                                    throttled_fraction=0.25)],
        latency_change_ratio=1.0, temperature_rise_celsius=0.0,
    ), unavailable=[pb.Unavailable(field="sustained.windows.mean_watts", reason="no power sensor")])
    doc = _through_json(wire.result_from_pb(original))
    first, second = doc["sustained"]["windows"]
    assert first["throttled_fraction"] == 0.0 and "mean_watts" not in first
    assert "p50_seconds" not in second and "start_seconds" in second
    assert doc["sustained"]["temperature_rise_celsius"] == 0.0
    assert "throttled_after_seconds" not in doc["sustained"]
    back = wire.result_to_pb(doc)
    assert back == original
    assert back.sustained.windows[0].HasField("throttled_fraction")
    assert not back.sustained.windows[0].HasField("mean_watts")
    assert back.sustained.HasField("temperature_rise_celsius")
    assert not back.sustained.HasField("throttled_after_seconds")
