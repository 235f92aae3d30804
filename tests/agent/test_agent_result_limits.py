"""The agent fits every report to what the controller accepts (hilfarm/wire_limits.py) before it
sends it, and says in the result what it changed."""

from __future__ import annotations

import math

from hilfarm import wire_limits
from hilfarm.agent.result_limits import fit_report, thin
from hilfarm.v1 import farm_pb2 as pb


def report(samples: int = 10, readings: int = 0) -> pb.ReportResultRequest:
    request = pb.ReportResultRequest(agent_id="pi", lease_id="l", job_id="j", attempt=1)
    request.result.latency.samples_ns.extend(range(1_000_000, 1_000_000 + samples))
    request.result.latency.count = samples
    request.result.latency.p50_seconds = 0.0015
    for i in range(readings):
        request.result.timeline.add(t=i / 10, sensor="rapl", quantity="energy_joules", channel="package-0", value=i)
    return request


def test_thinning_keeps_evenly_spaced_items_in_order():
    assert thin(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert thin(list(range(10)), 3) == [0, 4, 8]
    assert thin([1, 2], 5) == [1, 2]


def test_a_report_within_the_limits_is_left_alone():
    request = report(samples=1000, readings=100)
    before = request.SerializeToString()
    assert fit_report(request) == []
    assert request.SerializeToString() == before


def test_samples_and_readings_past_the_limits_are_thinned_and_the_result_says_so():
    n = wire_limits.MAX_RAW_SAMPLES * 3 + 7
    request = report(samples=n, readings=wire_limits.MAX_TIMELINE_SAMPLES + 10)
    notes = fit_report(request)
    latency = request.result.latency
    assert len(latency.samples_ns) <= wire_limits.MAX_RAW_SAMPLES and latency.count == n
    assert list(latency.samples_ns[:3]) == [1_000_000, 1_000_004, 1_000_008]  # every 4th, in order
    assert latency.p50_seconds == 0.0015  # the statistics of all samples stay
    assert len(request.result.timeline) <= wire_limits.MAX_TIMELINE_SAMPLES
    assert any(f"of the {n} raw latency samples" in w and f"summary statistics are from all {n}" in w
               for w in request.result.warnings)
    assert any("sensor readings of the timeline" in w for w in request.result.warnings)
    assert request.ByteSize() <= wire_limits.MAX_MESSAGE_BYTES and len(notes) == 2


def test_a_report_over_the_byte_budget_loses_readings_then_samples():
    request = report(samples=200_000, readings=50_000)
    notes = fit_report(request, max_bytes=1 << 20)
    assert request.ByteSize() <= 1 << 20
    assert any("over 1048576 bytes: kept" in n for n in notes)
    assert request.result.latency.count == 200_000


def test_text_is_shortened_and_nul_replaced_and_non_finite_numbers_unset():
    request = report()
    request.result.environment.os = "Linux\x00"
    request.result.warnings.append("w" * 20_000)
    request.result.latency.cv = math.nan
    request.result.power.active_watts = math.inf
    notes = fit_report(request)
    assert request.result.environment.os == "Linux\ufffd"
    assert all(len(w) <= 8 << 10 for w in request.result.warnings)
    assert request.result.latency.cv == 0
    assert {u.field for u in request.result.unavailable} >= {"latency.cv", "power.active_watts"}
    assert any("not finite" in n for n in notes)
    failure = pb.ReportResultRequest(failure=pb.Failure(message="m", detail="start " + "x" * 100_000 + " end"))
    fit_report(failure)
    assert len(failure.failure.detail) <= 64 << 10 and failure.failure.detail.endswith(" end")


def test_progress_is_fitted_too():
    from hilfarm.agent.result_limits import fit_message

    request = pb.ReportProgressRequest(progress=pb.Progress(phase="measuring\x00", elapsed_seconds=math.nan))
    for i in range(wire_limits.MAX_PROGRESS_TELEMETRY + 5):
        request.progress.telemetry.add(t=i, quantity="power_watts", value=1.0)
    notes = fit_message(request)
    assert request.progress.phase == "measuring\ufffd" and request.progress.elapsed_seconds == 0
    assert len(request.progress.telemetry) <= wire_limits.MAX_PROGRESS_TELEMETRY
    assert len(notes) == 2
