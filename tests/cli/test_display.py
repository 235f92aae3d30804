"""What the terminal shows: unknown where a device has no sensor, live readings while running."""

from __future__ import annotations

from hilfarm.display import console, live_readings, power_and_heat_cells, results_table
from hilfarm.v1 import farm_pb2


def test_a_device_without_sensors_shows_unknown_not_zero():
    result = farm_pb2.BenchmarkResult(latency=farm_pb2.LatencyResult(p50_seconds=0.001))
    assert power_and_heat_cells(result) == ["unknown", "unknown", "unknown", "unknown"]


def test_power_and_heat_cells_from_measured_figures():
    result = farm_pb2.BenchmarkResult(
        power=farm_pb2.PowerResult(active_watts=6.25, energy_per_inference_joules=0.0123),
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


def test_results_table_marks_simulated_sensors_in_plain_text():
    job = farm_pb2.Job(
        model_name="m.onnx", device_profile="simulated", state=farm_pb2.JOB_STATE_SUCCEEDED,
        result=farm_pb2.BenchmarkResult(
            latency=farm_pb2.LatencyResult(samples_ns=[1000, 2000], p50_seconds=1.5e-6),
            environment=farm_pb2.Environment(runtime="onnxruntime", runtime_version="1.2", simulated=True),
        ),
    )
    out = console()
    with out.capture() as captured:
        out.print(results_table([job]))
    assert "SIMULATED sensors" in captured.get()


def test_job_detail_shows_the_sustained_windows():
    from hilfarm.display import job_detail

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
    out = console()
    with out.capture() as captured:
        out.print(job_detail(job))
    text = captured.get()
    assert "sustained 2 s of 2 s asked, windows of 1 s (simulated)" in text
    def cells(window):
        line = next(line for line in text.splitlines() if window in line)
        return [c.strip() for c in line.strip().strip("│┃").split("│")]

    assert cells("0-1 s") == ["0-1 s", "500", "2.000", "5.25", "61.0", "0"]
    assert cells("1-2 s") == ["1-2 s", "0", "-", "-", "75.5", "25"]  # no inference ended there, no power
    assert "sustained: p50 change unknown, temperature +14.5 °C, not throttled" in text


def test_results_table_says_once_per_device_why_power_is_unknown():
    def job(name):
        return farm_pb2.Job(
            model_name=name, device_profile="local", state=farm_pb2.JOB_STATE_SUCCEEDED,
            result=farm_pb2.BenchmarkResult(
                latency=farm_pb2.LatencyResult(samples_ns=[1000]),
                unavailable=[farm_pb2.Unavailable(field="power", reason="no RAPL domains"),
                             farm_pb2.Unavailable(field="power.active_watts", reason="no RAPL domains")],
            ),
        )

    out = console()
    with out.capture() as captured:
        out.print(results_table([job("a.onnx"), job("b.onnx")]))
    text = captured.get()
    assert text.count("local: power unknown, no RAPL domains") == 1


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
