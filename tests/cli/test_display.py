"""What the terminal shows: tables that fit the width they are printed at, short job ids,
unknown where a device has no sensor (said once, with the reason), failures on lines of their
own without terminal escapes, live readings while running."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from hilfarm.display import (device_detail, job_detail, jobs_table, live_readings, power_and_heat_cells,
                             progress_table, results_table, short_ids)
from hilfarm.v1 import farm_pb2

ID_A = "1a2b3c4d5e6f47a8b9c0d1e2f3a4b5c6"
ID_B = "1a2b3c4d99999999aaaabbbbccccdddd"  # shares its first 8 characters with ID_A
ID_C = "7f00aa11bb22cc33dd44ee55ff667788"


def render(renderable, width: int) -> str:
    out = Console(width=width, file=io.StringIO(), color_system=None, highlight=False)
    out.print(renderable)
    return out.file.getvalue()


def succeeded(job_id=ID_C, model="ppocr_det_v4_mobile.onnx", device="jetson-orin-nano", *, p50=0.0123,
              p99=0.0456, power=True, simulated=False, **fields) -> farm_pb2.Job:
    result = farm_pb2.BenchmarkResult(
        latency=farm_pb2.LatencyResult(p50_seconds=p50, p90_seconds=p99 * 0.9, p99_seconds=p99, cv=0.05,
                                       throughput_per_second=81.0, count=400),
        memory=farm_pb2.MemoryResult(peak_bytes=412 << 20, model_delta_bytes=300 << 20),
        environment=farm_pb2.Environment(runtime="onnxruntime", runtime_version="1.16.3",
                                         execution_provider="CUDAExecutionProvider", simulated=simulated),
    )
    if power:
        result.power.CopyFrom(farm_pb2.PowerResult(active_watts=6.12, energy_per_inference_joules=0.075,
                                                   simulated=simulated))
        result.thermal.CopyFrom(farm_pb2.ThermalResult(
            zones=[farm_pb2.ZoneTemperature(zone="cpu", max_celsius=71.6)], simulated=simulated))
    else:
        result.unavailable.extend([farm_pb2.Unavailable(field=f, reason="no RAPL domains") for f in
                                   ("power", "power.active_watts", "power.idle_watts")])
        result.unavailable.append(farm_pb2.Unavailable(field="thermal", reason="no thermal zones"))
    return farm_pb2.Job(id=job_id, run_id="9" * 32, model_name=model, device_profile=device,
                        state=farm_pb2.JOB_STATE_SUCCEEDED, result=result, **fields)


def failed(job_id=ID_B, category=farm_pb2.FAILURE_CATEGORY_UNSUPPORTED_OP, message="the runtime lacks op FancyOp"):
    return farm_pb2.Job(id=job_id, run_id="9" * 32, model_name="fancy.onnx", device_profile="raspberry-pi-5",
                        state=farm_pb2.JOB_STATE_FAILED,
                        failure=farm_pb2.Failure(category=category, message=message, detail="\x1b[31mtrace\x1b[0m"))


@pytest.mark.parametrize("width", [80, 120])
def test_the_results_table_fits_the_terminal_with_every_headline_figure(width):
    jobs = [succeeded(ID_A), failed(ID_B), succeeded(ID_C, model="yolov8n.tflite", device="raspberry-pi-5",
                                                    p50=0.1234, p99=1.5)]
    text = render(results_table(jobs), width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, text
    assert "…" not in text, "nothing is cut off"
    header = " ".join(lines[:2])
    for column in ("job", "model", "device", "state", "p50", "p99", "peak", "W", "°C"):
        assert column in header, column
    # Ids as short prefixes, unique among those shown (A and B share eight characters).
    keys = short_ids([ID_A, ID_B, ID_C])
    assert keys == {ID_A: ID_A[:9], ID_B: ID_B[:9], ID_C: ID_C[:8]}
    row = next(line for line in lines if line.startswith(keys[ID_A]))
    assert row.split()[-5:] == ["12.30", "45.60", "412", "6.1", "72"]
    assert next(line for line in lines if line.startswith(keys[ID_C])).split()[-5:-3] == ["123.4", "1500"]
    # A failure has no figures in the table, and its reason on a line of its own.
    assert next(line for line in lines if line.startswith(keys[ID_B])).split()[-1] == "failed"
    assert f"{keys[ID_B]} failed (unsupported_op): the runtime lacks op FancyOp" in " ".join(lines)


def test_optional_columns_move_under_the_table_when_the_width_cannot_hold_them():
    jobs = [succeeded(ID_A), succeeded(ID_C, model="yolov8n.tflite", device="raspberry-pi-5")]
    text = render(results_table(jobs), 60)
    assert max(len(line) for line in text.splitlines()) <= 60, text
    assert "…" not in text
    assert f"{ID_A[:8]}: 6.1 W, 72 °C" in text and f"{ID_C[:8]}: 6.1 W, 72 °C" in text
    assert "p50" in text and "12.30" in text


def test_a_column_with_one_value_is_said_once_in_the_title():
    text = render(results_table([succeeded(ID_A), succeeded(ID_C, model="yolov8n.tflite")]), 80)
    lines = text.splitlines()
    assert lines[0] == "on jetson-orin-nano"
    assert "device" not in lines[2] and "model" in lines[2]
    one = render(results_table([succeeded(ID_A)]), 80).splitlines()
    assert one[0] == "ppocr_det_v4_mobile.onnx on jetson-orin-nano"


def test_long_names_wrap_at_their_natural_breaks():
    from hilfarm.display import wrap_name

    assert wrap_name("raspberry-pi-5", 13) == "raspberry-\npi-5"
    assert wrap_name("ppocr_det_v4_mobile.onnx", 14) == "ppocr_det_v4_\nmobile.onnx"
    assert wrap_name("yolov8n.tflite", 13) == "yolov8n.\ntflite"
    assert wrap_name("abcdefghijklmnopqrstuvwxyz", 10) == "abcdefghi\njklmnopqr\nstuvwxyz"
    assert wrap_name("short", 10) == "short"


def test_power_and_temperature_columns_appear_only_where_a_device_measured_them():
    text = render(results_table([succeeded(power=False), succeeded(ID_A, power=False, model="b.onnx")]), 80)
    header = text.splitlines()[1]
    assert " W " not in header + " " and "°C" not in text.splitlines()[0]
    # Said once per device, with where to read why.
    assert text.count("jetson-orin-nano: no power or temperature readings (why: `hilfarm jobs show ") == 1


def test_simulated_sensors_are_labelled_as_such():
    text = render(results_table([succeeded(simulated=True, device="simulated")]), 80)
    assert "6.1*" in text and "72*" in text
    assert "simulated: SIMULATED sensors" in text
    assert "SIMULATED sensors" in render(results_table([succeeded(simulated=True)], wide=True), 300)


def test_wide_shows_every_figure():
    text = render(results_table([succeeded(), failed()], wide=True), 1000)
    for column in ("p90 ms", "cv", "inf/s", "+model MiB", "mJ/inf", "max °C", "throttled", "runs", "runtime"):
        assert column in text, column
    assert "onnxruntime 1.16.3 CUDA" in text and "75.000" in text


def test_a_device_without_sensors_shows_unknown_not_zero():
    result = farm_pb2.BenchmarkResult(latency=farm_pb2.LatencyResult(p50_seconds=0.001))
    assert power_and_heat_cells(result) == ["unknown", "unknown", "unknown", "unknown"]


def test_power_and_heat_cells_from_measured_figures():
    result = farm_pb2.BenchmarkResult(
        power=farm_pb2.PowerResult(active_watts=6.25),  # energy: unset, named below
        thermal=farm_pb2.ThermalResult(
            zones=[farm_pb2.ZoneTemperature(zone="a", max_celsius=70.0),
                   farm_pb2.ZoneTemperature(zone="b", max_celsius=81.26)],
            throttled=True, throttled_fraction=0.4,
        ),
        unavailable=[farm_pb2.Unavailable(field="power.energy_per_inference_joules", reason="x")],
    )
    assert power_and_heat_cells(result) == ["6.25", "unknown", "81.3", "40%"]


def test_live_readings_take_the_newest_value_of_each_channel():
    progress = farm_pb2.Progress(telemetry=[
        farm_pb2.TelemetrySample(t=1, quantity="power_watts", channel="VDD_IN", value=5.0),
        farm_pb2.TelemetrySample(t=1, quantity="temperature_celsius", channel="cpu", value=60.0),
        farm_pb2.TelemetrySample(t=2, quantity="power_watts", channel="VDD_IN", value=7.5),
        farm_pb2.TelemetrySample(t=2, quantity="temperature_celsius", channel="cpu", value=61.5),
        farm_pb2.TelemetrySample(t=2, quantity="throttled", channel="device", value=1.0, simulated=True),
    ])
    assert live_readings(progress) == "7.5 W 61.5 °C THROTTLED (simulated)"
    assert live_readings(farm_pb2.Progress()) == ""


def test_progress_fits_and_says_why_a_job_waits_with_short_ids():
    running = farm_pb2.Job(id=ID_A, model_name="ppocr_det_v4_mobile.onnx", device_profile="jetson-orin-nano",
                           state=farm_pb2.JOB_STATE_RUNNING, attempt=2, max_attempts=3,
                           progress=farm_pb2.Progress(phase="measuring", runs_done=120, runs_target=300,
                                                      elapsed_seconds=4.25, latest_latency_seconds=0.0123))
    waiting = farm_pb2.Job(id=ID_C, model_name="m.onnx", device_profile="jetson-orin-nano",
                           state=farm_pb2.JOB_STATE_QUEUED,
                           placement_notes=[f"orin-01: busy with job {ID_A}", "orin-02: draining",
                                            "orin-03: offline", "orin-04: offline"])
    text = render(progress_table([running, waiting]), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "measuring 2/3" in text and "120/300" in text and "12.30" in text and "4.2" in text
    assert f"{ID_C[:8]} waits for jetson-orin-nano: orin-01: busy with job {ID_A[:8]}" in text
    assert ID_A not in text, "whole ids are cut to the short form"
    assert "1 more" in text  # the first three reasons, then a count


def test_jobs_list_shows_no_p50_for_jobs_without_a_result():
    cancelled = farm_pb2.Job(id=ID_A, model_name="m.onnx", device_profile="local", state=farm_pb2.JOB_STATE_CANCELLED)
    text = render(jobs_table([succeeded(), failed(), cancelled]), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "12.300" in text and "0.000" not in text
    assert "failed (unsupported_op)" in text.replace("\n", " ").replace("  ", " ") or "(unsupported_op)" in text
    for job_id in (ID_A, ID_B, ID_C):
        assert short_ids([ID_A, ID_B, ID_C])[job_id] in text


def test_job_detail_says_each_unknown_reason_once_and_strips_escapes():
    job = succeeded(power=False)
    job.failure.CopyFrom(farm_pb2.Failure(detail="\x1b[1;31mE: boom\x1b[0m\r\n\x1b]0;title\x07tail"))
    text = render(job_detail(job), 80)
    assert text.count("no RAPL domains") == 1
    assert "power, power.active_watts, power.idle_watts" in text
    assert "\x1b" not in text and "E: boom" in text and "tail" in text
    assert "why: `hilfarm jobs show" not in text, "jobs show does not point at itself"


def test_failure_text_is_shown_without_terminal_escapes():
    job = failed(message="\x1b[31mcrashed\x1b[0m on SIGSEGV")
    text = render(results_table([job]), 80)
    assert "crashed on SIGSEGV" in text and "\x1b" not in text


def test_budgets_are_one_line_each_with_measured_value_and_margin():
    job = succeeded(constraint_set="doorbell-camera", verdicts=[
        farm_pb2.ConstraintVerdict(constraint="latency.p99", comparison="<=", budget=0.04, measured=0.0456,
                                   margin=-0.0056, status=farm_pb2.VERDICT_STATUS_FAIL, unit="s"),
        farm_pb2.ConstraintVerdict(constraint="memory.peak", comparison="<=", budget=512 << 20,
                                   measured=412 << 20, margin=100 << 20, status=farm_pb2.VERDICT_STATUS_PASS,
                                   unit="bytes"),
        farm_pb2.ConstraintVerdict(constraint="energy.per_inference", comparison="<=", budget=0.15,
                                   status=farm_pb2.VERDICT_STATUS_UNKNOWN, unit="J", reason="no power sensor"),
    ])
    assert max(len(line) for line in render(results_table([job]), 80).splitlines()) <= 80
    lines = render(results_table([job]), 120).splitlines()
    assert any("budgets (doorbell-camera)" in line for line in lines)
    fail = next(line for line in lines if "latency.p99" in line)
    assert re.search(r"FAIL\s+latency\.p99 <= 40\.00 ms\s+45\.60 ms\s+margin -5\.60 ms", fail), fail
    assert re.search(r"pass\s+memory\.peak <= 512\.0 MiB\s+412\.0 MiB", next(line for line in lines if "memory.peak" in line))
    # The table points at `jobs show` for why; `jobs show` says it.
    assert re.search(r"unknown\s+energy\.per_inference <= 150\.00 mJ\s+unknown\s+not measured "
                     r"\(why: `hilfarm jobs show 7f00aa11`\)", next(line for line in lines if "energy.per_inference" in line))
    detail = render(job_detail(job), 100)
    assert re.search(r"unknown\s+energy\.per_inference <= 150\.00 mJ\s+unknown\s+no power sensor", detail)


def test_devices_show_is_a_table_not_a_python_dict():
    device = farm_pb2.Device(agent_id="rpi5-03", device_profile="raspberry-pi-5", state="busy", tags=["lab-2"],
                             current_job_id=ID_A, hostname="rpi5-03", agent_version="0.1.0", last_seen=1.8e9,
                             capabilities=farm_pb2.Capabilities(
                                 runtimes=[farm_pb2.RuntimeInfo(name="onnxruntime", version="1.16.3",
                                                                package="onnxruntime",
                                                                execution_providers=["CPUExecutionProvider"])],
                                 cpu_cores=4, memory_bytes=8 << 30, machine="aarch64", os="Debian 12"))
    text = render(device_detail(device), 80)
    assert "{'" not in text and "':" not in text
    assert re.search(r"profile\s+raspberry-pi-5", text) and re.search(r"job\s+" + ID_A, text)
    assert re.search(r"onnxruntime\s+1\.16\.3\s+onnxruntime\s+CPUExecutionProvider", text)
    assert "4 cores, 8.0 GiB" in text


def test_job_detail_shows_the_sustained_windows():
    job = farm_pb2.Job(id="j", model_name="m.onnx", device_profile="simulated", state=farm_pb2.JOB_STATE_SUCCEEDED,
                       result=farm_pb2.BenchmarkResult(
                           latency=farm_pb2.LatencyResult(samples_ns=[1000, 2000], p50_seconds=1.5e-6),
                           sustained=farm_pb2.SustainedResult(
                               requested_seconds=2.0, duration_seconds=2.0, window_seconds=1.0, simulated=True,
                               windows=[farm_pb2.SustainedWindow(start_seconds=0, end_seconds=1, runs=500,
                                                                 p50_seconds=0.002, mean_watts=5.25,
                                                                 max_celsius=61.04, throttled_fraction=0.0),
                                        farm_pb2.SustainedWindow(start_seconds=1, end_seconds=2, runs=0,
                                                                 max_celsius=75.5, throttled_fraction=0.25)],
                               temperature_rise_celsius=14.5),
                           unavailable=[farm_pb2.Unavailable(field="sustained.latency_change_ratio", reason="x")]))
    text = render(job_detail(job), 120)
    assert "sustained 2 s of 2 s asked, windows of 1 s (simulated)" in text

    def cells(window):
        line = next(line for line in text.splitlines() if window in line)
        return [c.strip() for c in line.strip().strip("│┃").split("│")]

    assert cells("0-1 s") == ["0-1 s", "500", "2.000", "5.25", "61.0", "0"]
    assert cells("1-2 s") == ["1-2 s", "0", "-", "-", "75.5", "25"]  # no inference ended there, no power
    assert "sustained: p50 change unknown, temperature +14.5 °C, not throttled" in text


def test_job_detail_shows_emulated_recorded_and_the_op_profile_at_80_and_120_columns():
    from rich.console import Console

    from hilfarm.display import job_detail

    job = farm_pb2.Job(id="j1", model_name="det.onnx", device_profile="raspberry-pi-5",
                       state=farm_pb2.JOB_STATE_SUCCEEDED)
    r = job.result
    r.latency.samples_ns.extend([1_000_000] * 5)
    r.environment.runtime, r.environment.emulated = "onnxruntime", True
    r.environment.emulation = "qemu-user: this process runs as aarch64, but /proc/cpuinfo describes an x86 CPU"
    r.environment.recorded = True
    r.environment.recorded_sources.append("sensors: Raspberry Pi 5 recorded at idle")
    r.power.active_watts, r.power.recorded, r.power.sensor = 1.73, True, "vcgencmd pmic_read_adc"
    p = r.op_profile
    p.runs, p.source = 10, "onnxruntime profiler"
    p.ops.add(node="/backbone/conv_with_a_rather_long_name_1", op_type="Conv", provider="CUDAExecutionProvider",
              calls=10, mean_seconds=0.003, share=0.75)
    p.ops.add(node="/head/resize", op_type="Resize", provider="CPUExecutionProvider", calls=10,
              mean_seconds=0.001, share=0.25)
    p.nodes_by_provider.update({"CUDAExecutionProvider": 1, "CPUExecutionProvider": 1})
    p.warnings.append("1 of 2 nodes ran on the CPU although CUDAExecutionProvider was asked for: /head/resize (Resize)")
    p.trace_sha256, p.trace_bytes, p.trace_format = "ab" * 32, 12345, "onnxruntime-chrome-trace-json"
    for width in (80, 120):
        out = Console(width=width, record=True, color_system=None)
        out.print(job_detail(job))
        text = out.export_text()
        assert max(len(line) for line in text.splitlines()) <= width
        flat = " ".join(text.split())
        assert "EMULATED: qemu-user" in flat and "sensors: Raspberry Pi 5 recorded at idle" in flat
        assert "(recorded)" in flat
        assert "per-operator profile: 2 of 2 nodes, slowest first" in flat
        assert "CPUExecutionProvider" in flat and "ran on the CPU although CUDAExecutionProvider" in flat
        assert "hilfarm jobs trace JOB" in flat
