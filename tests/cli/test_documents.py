"""The --json documents: every field the schema promises, nulls for unknowns."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

import hilfarm
from hilfarm.documents import devices_document, job_document, jobs_document, run_document
from hilfarm.v1 import farm_pb2

SCHEMA = json.loads((Path(hilfarm.__file__).parent / "run.schema.json").read_text())


def finished_job() -> farm_pb2.Job:
    samples = [1_000_000 + 1000 * i for i in range(20)]
    return farm_pb2.Job(
        id="job-1", run_id="run-1", model_name="mlp.onnx", model_sha256="a" * 64,
        model_format="onnx", device_profile="rpi5", state=farm_pb2.JOB_STATE_SUCCEEDED,
        attempt=1, max_attempts=3, agent_id="rpi5-01", created_at=1.0, started_at=2.0,
        finished_at=3.0,
        settings=farm_pb2.JobSettings(
            min_runs=20, threads=2, input_shapes=[farm_pb2.InputShape(name="x", dims=[1, 3])],
            tflite_delegate_options={"device": "usb"},
        ),
        progress=farm_pb2.Progress(phase="done", runs_done=20, runs_target=20, elapsed_seconds=1.5),
        result=farm_pb2.BenchmarkResult(
            latency=farm_pb2.LatencyResult(
                load_seconds=0.01, first_inference_seconds=0.002, warmup_runs=1, warmup_seconds=0.0,
                samples_ns=samples, p50_seconds=0.00101, drift_ratio=1.01,
            ),
            memory=farm_pb2.MemoryResult(
                baseline_peak_bytes=10 << 20, peak_bytes=30 << 20, model_delta_bytes=20 << 20,
                model_file_bytes=1 << 20, source="/proc/self/status VmHWM",
            ),
            environment=farm_pb2.Environment(runtime="onnxruntime", runtime_version="1.20.0",
                                             input_shapes=[farm_pb2.InputShape(name="x", dims=[1, 3])]),
            unavailable=[farm_pb2.Unavailable(field="environment.governor", reason="no cpufreq"),
                         farm_pb2.Unavailable(field="power.energy_per_inference_joules",
                                              reason="the energy counter did not advance")],
            warnings=["governor unknown"],
            power=farm_pb2.PowerResult(idle_watts=2.5, active_watts=6.0, sensor="hwmon:ina226",
                                       energy_method="integrated power", sample_rate_hz=10.0,
                                       rails=[farm_pb2.RailPower(rail="VDD_IN", mean_watts=6.0)]),
            thermal=farm_pb2.ThermalResult(
                zones=[farm_pb2.ZoneTemperature(zone="cpu-thermal", start_celsius=45.0, max_celsius=81.5,
                                                end_celsius=80.0, sensor="thermal-zones")],
                clocks=[farm_pb2.ClockRange(domain="cpu0-3", min_hz=1.2e9, max_hz=2.4e9)],
                throttled=True, throttled_fraction=0.25, throttle_reasons=["soft temperature limit"],
            ),
            timeline=[farm_pb2.TelemetrySample(t=0.1, sensor="hwmon:ina226", quantity="power_watts",
                                               channel="VDD_IN", value=6.1, simulated=True)],
        ),
    )


def failed_job() -> farm_pb2.Job:
    return farm_pb2.Job(
        id="job-2", run_id="run-1", model_name="junk.onnx", model_sha256="b" * 64,
        model_format="onnx", device_profile="rpi5", state=farm_pb2.JOB_STATE_FAILED, attempt=1,
        max_attempts=3,
        failure=farm_pb2.Failure(category=farm_pb2.FAILURE_CATEGORY_ARTIFACT_INVALID,
                                 message="not an ONNX model", detail="stderr tail"),
    )


def test_run_document_matches_its_schema_for_success_and_failure():
    document = run_document(farm_pb2.Run(id="run-1", created_at=1.0, jobs=[finished_job(), failed_job()]))
    jsonschema.validate(document, SCHEMA)
    ok, bad = document["jobs"]
    assert ok["state"] == "succeeded"
    assert ok["result"]["latency"]["count"] == 20
    assert ok["result"]["latency"]["samples_ns"][:2] == [1_000_000, 1_001_000]
    assert ok["result"]["memory"]["model_delta_bytes"] == 20 << 20
    assert ok["settings"]["input_shapes"] == {"x": [1, 3]}
    assert ok["settings"]["tflite_delegate_options"] == {"device": "usb"}
    assert bad["result"] is None
    assert bad["failure"] == {"category": "artifact_invalid", "message": "not an ONNX model",
                              "signal": None, "detail": "stderr tail"}


def test_power_thermal_and_timeline_are_in_the_document():
    result = job_document(finished_job())["result"]
    assert result["power"]["active_watts"] == 6.0 and result["power"]["rails"] == {"VDD_IN": 6.0}
    # Named unavailable, so null: a counter that did not move is not "0 J per inference".
    assert result["power"]["energy_per_inference_joules"] is None
    zone = result["thermal"]["zones"][0]
    assert (zone["zone"], zone["max_celsius"]) == ("cpu-thermal", 81.5)
    assert result["thermal"]["throttled"] is True and result["thermal"]["throttled_fraction"] == 0.25
    assert result["thermal"]["clocks"][0]["allowed_max_hz"] is None
    assert result["timeline"] == [{"t": 0.1, "sensor": "hwmon:ina226", "quantity": "power_watts",
                                   "channel": "VDD_IN", "value": 6.1, "simulated": True, "recorded": False}]
    assert jobs_document([finished_job()], with_samples=False)["jobs"][0]["result"]["timeline"] is None


def test_a_device_without_sensors_has_null_power_and_thermal():
    job = finished_job()
    job.result.ClearField("power")
    job.result.ClearField("thermal")
    document = run_document(farm_pb2.Run(id="r", jobs=[job]))
    jsonschema.validate(document, SCHEMA)
    assert document["jobs"][0]["result"]["power"] is None
    assert document["jobs"][0]["result"]["thermal"] is None


def test_unmeasured_figures_are_null_not_zero():
    document = job_document(finished_job())
    assert document["result"]["environment"]["governor"] is None
    assert document["result"]["unavailable"][0] == {"field": "environment.governor", "reason": "no cpufreq"}
    # A measured zero is a number; a figure the device did not measure is null.
    assert document["result"]["latency"]["warmup_seconds"] == 0.0
    assert document["result"]["latency"]["p99_seconds"] is None
    assert document["result"]["power"]["energy_per_inference_joules"] is None


def test_schema_rejects_a_document_missing_a_promised_field():
    document = run_document(farm_pb2.Run(id="r", jobs=[finished_job()]))
    del document["jobs"][0]["result"]["latency"]["p99_seconds"]
    with pytest.raises(jsonschema.ValidationError, match="p99_seconds"):
        jsonschema.validate(document, SCHEMA)


def test_jobs_listing_can_leave_out_raw_samples():
    document = jobs_document([finished_job()], with_samples=False)
    assert document["jobs"][0]["result"]["latency"]["samples_ns"] is None
    assert document["jobs"][0]["result"]["latency"]["count"] == 20


def test_the_run_count_survives_a_listing_without_samples():
    job = finished_job()
    job.result.latency.count = 20
    job.result.latency.ClearField("samples_ns")  # what ListJobs sends by default
    assert job_document(job)["result"]["latency"]["count"] == 20


def test_devices_document():
    device = farm_pb2.Device(
        agent_id="a1", device_profile="local", state="idle", tags=["lab"],
        capabilities=farm_pb2.Capabilities(
            runtimes=[farm_pb2.RuntimeInfo(name="onnxruntime", version="1.20",
                                           execution_providers=["CPUExecutionProvider"])],
            cpu_cores=2,
        ),
    )
    document = devices_document([device])
    assert document["devices"][0]["capabilities"]["runtimes"][0]["execution_providers"] == ["CPUExecutionProvider"]
    assert document["devices"][0]["current_job_id"] is None


def sustained_job() -> farm_pb2.Job:
    job = finished_job()
    job.settings.sustained_seconds = 2.0
    job.result.sustained.CopyFrom(farm_pb2.SustainedResult(
        requested_seconds=2.0, duration_seconds=2.0, window_seconds=1.0, simulated=True,
        windows=[farm_pb2.SustainedWindow(start_seconds=0.0, end_seconds=1.0, runs=500, p50_seconds=0.001,
                                          p90_seconds=0.0012, max_celsius=60.0, throttled_fraction=0.0),
                 farm_pb2.SustainedWindow(start_seconds=1.0, end_seconds=2.0, runs=400, p50_seconds=0.0013,
                                          p90_seconds=0.0015, max_celsius=75.5, throttled_fraction=0.5)],
        latency_change_ratio=1.3, temperature_rise_celsius=15.5, throttled_after_seconds=1.5,
    ))
    job.result.unavailable.add(field="sustained.windows.mean_watts", reason="no power sensor")
    return job


def test_sustained_windows_are_in_the_document_with_nulls_for_unmeasured_figures():
    document = run_document(farm_pb2.Run(id="r", jobs=[sustained_job(), finished_job()]))
    jsonschema.validate(document, SCHEMA)
    sustained, plain = document["jobs"]
    assert sustained["settings"]["sustained_seconds"] == 2.0
    s = sustained["result"]["sustained"]
    assert s["window_seconds"] == 1.0 and s["simulated"] is True
    assert s["windows"][0] == {"start_seconds": 0.0, "end_seconds": 1.0, "runs": 500, "p50_seconds": 0.001,
                               "p90_seconds": 0.0012, "mean_watts": None, "max_celsius": 60.0,
                               "min_clock_hz": None, "throttled_fraction": 0.0}
    assert (s["latency_change_ratio"], s["temperature_rise_celsius"], s["throttled_after_seconds"]) == (1.3, 15.5, 1.5)
    assert plain["result"]["sustained"] is None and plain["settings"]["sustained_seconds"] == 0.0
    del sustained["result"]["sustained"]["windows"][0]["runs"]
    with pytest.raises(jsonschema.ValidationError, match="runs"):
        jsonschema.validate(document, SCHEMA)


# ---------------------------------------------------------------- every --json has a schema

def validate(document):
    """Against the schema its "schema" field names, references between the files resolved."""
    from hilfarm.documents import schema_registry

    jsonschema.validate(document, {"$ref": document["schema"]}, registry=schema_registry())


def test_every_schema_file_is_a_valid_schema_named_by_its_id():
    from hilfarm.documents import SCHEMA_FILES

    here = Path(hilfarm.__file__).parent
    for schema_id, name in SCHEMA_FILES.items():
        schema = json.loads((here / name).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"] == schema_id
        assert schema["properties"]["schema"] == {"const": schema_id}


def test_jobs_and_devices_documents_match_their_schemas():
    listing = jobs_document([finished_job(), failed_job()], with_samples=False)
    validate(listing)
    device = farm_pb2.Device(agent_id="a1", device_profile="local", state="busy", current_job_id="job-1",
                             last_seen=5.0, capabilities=farm_pb2.Capabilities(cpu_cores=2))
    document = devices_document([device])
    validate(document)
    document["devices"][0]["state"] = "asleep"
    with pytest.raises(jsonschema.ValidationError, match="asleep"):
        validate(document)


def comparison(baseline_ids="b1", candidate_ids="c1"):
    return farm_pb2.Comparison(
        baseline_job_id=baseline_ids, candidate_job_id=candidate_ids, regression=True, summary="slower",
        metrics=[
            farm_pb2.MetricComparison(metric="latency.median", statistic="Mann-Whitney U", baseline=0.010,
                                      candidate=0.012, ratio=1.2, ci_low=1.15, ci_high=1.25, confidence=0.95,
                                      p_value=1e-9, threshold=0.03, verdict="regression", summary="+20 %",
                                      baseline_count=400, candidate_count=400),
            # A tolerance rule: no test, so no p-value and no interval (NaN on the wire).
            farm_pb2.MetricComparison(metric="memory.peak", statistic="tolerance 5 %", baseline=5e7,
                                      candidate=5e7, ratio=1.0, ci_low=float("nan"), ci_high=float("nan"),
                                      confidence=float("nan"), p_value=float("nan"), threshold=0.05,
                                      verdict="unchanged", summary="same"),
        ])


def test_suite_run_document_numbers_are_numbers_and_unknowns_null():
    from hilfarm.documents import suite_run_document

    verdict = farm_pb2.ConstraintVerdict(constraint="latency.p99", comparison="<=", budget=0.04, measured=0.0,
                                         margin=0.04, status=farm_pb2.VERDICT_STATUS_PASS, unit="s")
    run = farm_pb2.SuiteRun(
        id="s1", suite="vision", trigger="cli", baseline="main", state="finished", outcome="fail",
        started_at=10.0, finished_at=20.0, cases=[
            farm_pb2.SuiteCase(model_name="net.onnx", model_sha256="a" * 64, device_profile="rpi5",
                               runtime_config="onnxruntime threads=4", outcome="regression", job_id="job-1",
                               baseline_job_id="job-0", verdicts=[verdict],
                               comparison=comparison(), confirmation=comparison("b2,b3", "c2,c3"),
                               confirm_job_ids=["b2", "c2", "b3", "c3"], job=finished_job(),
                               message="confirmed by a re-run", duration_seconds=0.0),
            farm_pb2.SuiteCase(model_name="new.onnx", model_sha256="c" * 64, device_profile="rpi5",
                               outcome="no_baseline", job_id="job-2"),
        ])
    document = suite_run_document(run)
    validate(document)
    case, fresh = document["cases"]
    # Zeros stay (a zero duration, a zero measurement), rather than vanish as they did.
    assert case["duration_seconds"] == 0.0 and case["verdicts"][0]["measured"] == 0.0
    assert case["verdicts"][0]["status"] == "pass"
    tolerance = case["comparison"]["metrics"][1]
    assert tolerance["p_value"] is None and tolerance["ci_low"] is None and tolerance["baseline"] == 5e7
    assert case["comparison"]["metrics"][0]["p_value"] == 1e-9
    assert case["confirmation"]["baseline_job_ids"] == ["b2", "b3"]  # a list, not "b2,b3"
    assert case["confirm_job_ids"] == ["b2", "c2", "b3", "c3"]
    assert case["job"]["result"]["latency"]["samples_ns"] is None and case["job"]["result"]["latency"]["count"] == 20
    assert fresh["baseline_job_id"] is None and fresh["comparison"] is None and fresh["job"] is None
    assert "NaN" not in json.dumps(document)
    json.loads(json.dumps(document, allow_nan=False))  # strict JSON


def test_results_documents_match_their_schemas():
    from hilfarm.documents import baselines_document, comparison_document, history_document

    compared = comparison_document(comparison())
    validate(compared)
    assert compared["baseline_job_ids"] == ["b1"] and compared["metrics"][1]["confidence"] is None
    history = history_document("net.onnx", "rpi5", farm_pb2.HistoryResponse(
        metric="latency.p50", unit="s", method="binary segmentation + permutation test",
        points=[farm_pb2.HistoryPoint(t=1.0, job_id="j1", suite_run_id="s1", value=0.010, outcome="pass"),
                farm_pb2.HistoryPoint(t=2.0, job_id="j2", value=float("nan"), outcome="model_failed")],
        change_points=[farm_pb2.ChangePoint(index=1, t=2.0, job_id="j2", before=0.010, after=0.012, ratio=1.2,
                                            p_value=0.001)]))
    validate(history)
    assert history["points"][1]["value"] is None and history["points"][1]["suite_run_id"] is None
    baselines = baselines_document([farm_pb2.Baseline(name="main", model_name="net.onnx", device_profile="rpi5",
                                                      runtime_config="onnxruntime", job_id="j1",
                                                      model_sha256="a" * 64, accepted_at=3.0)])
    validate(baselines)
    assert baselines["baselines"][0]["suite"] is None


def test_failure_text_in_documents_has_no_terminal_escapes():
    job = failed_job()
    job.failure.detail = "\x1b[1;31mERROR\x1b[0m boom"
    assert job_document(job)["failure"]["detail"] == "ERROR boom"


def test_settings_carry_the_dynamic_dimension_default():
    job = finished_job()
    job.settings.dynamic_dimension_default = 8
    document = run_document(farm_pb2.Run(id="r", jobs=[job]))
    jsonschema.validate(document, SCHEMA)
    assert document["jobs"][0]["settings"]["dynamic_dimension_default"] == 8
