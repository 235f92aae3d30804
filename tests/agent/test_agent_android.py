"""Phones over adb: the benchmark binaries' output parsed exactly (recorded outputs of each
binary and Android version, tests/fixtures/commands/android-adb), a phone agent running jobs
end to end through a real controller on those recordings (labelled recorded), and a real adb
server with no phone attached (a clear "no device" error)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hilfarm import sample_models
from hilfarm.agent import android
from hilfarm.agent.results import FailureCategory, JobFailed

# The agent refuses to run as root unless told: these tests may run as root (a CI container).
ROOT_OK = ["--allow-root"] if os.geteuid() == 0 else []

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "commands" / "android-adb"


def _text(case: str, name: str) -> str:
    return (FIXTURES / case / name).read_text()


def test_benchmark_model_of_tflite_2_15_on_android_14():
    r = android.parse_benchmark_model(_text("tflite-2.15-android14", "benchmark_model.txt"))
    assert r.count == 11203 and r.warmup_runs == 5837
    assert r.min_seconds == pytest.approx(80e-6) and r.max_seconds == pytest.approx(402e-6)
    assert r.mean_seconds == pytest.approx(88.6317e-6) and r.std_seconds == pytest.approx(9e-6)
    assert r.init_seconds == pytest.approx(4117e-6) and r.first_seconds == pytest.approx(311e-6)
    assert r.memory_bytes == int(6.89844 * 1024 * 1024)  # the periodic peak, when printed
    assert r.delegate == "XNNPACK"
    assert "partially" not in " ".join(r.warnings) and "only part of the model" in r.warnings[0]


def test_benchmark_model_of_tflite_2_4_on_android_10_without_info_prefix():
    r = android.parse_benchmark_model(_text("tflite-2.4-android10", "benchmark_model.txt"))
    assert (r.count, r.warmup_runs) == (7036, 3519)
    assert r.mean_seconds == pytest.approx(141.212e-6) and r.max_seconds == pytest.approx(1213e-6)
    assert r.memory_bytes == int(3.33594 * 1024 * 1024)
    assert r.delegate == "builtin kernels" and r.warnings == []


def test_benchmark_model_numbers_in_exponent_form():
    text = ("count=50 first=2.71985e+06 curr=2.6e+06 min=2.5e+06 max=2.8e+06 avg=2.65e+06 std=90000\n"
            "Inference timings in us: Init: 1.2e+05, First inference: 2.71985e+06, Warmup (avg): 2.7e+06, "
            "Inference (avg): 2.65e+06\n")
    r = android.parse_benchmark_model(text)
    assert r.first_seconds == pytest.approx(2.71985) and r.mean_seconds == pytest.approx(2.65)


def test_benchmark_model_error_output_is_a_crash_with_the_line():
    with pytest.raises(JobFailed) as err:
        android.parse_benchmark_model("STARTING!\nERROR: Failed to allocate tensors!\n")
    assert err.value.failure.category is FailureCategory.RUNTIME_CRASH
    assert "Failed to allocate tensors" in err.value.failure.message


def test_onnxruntime_perf_test_of_1_16_on_android_13():
    r = android.parse_onnxruntime_perf_test(_text("onnxruntime-1.16-android13", "onnxruntime_perf_test.txt"))
    assert r.count == 200 and r.mean_seconds == pytest.approx(0.182093e-3)
    assert r.percentiles == {"p50_seconds": pytest.approx(0.000178125), "p90_seconds": pytest.approx(0.000192917),
                             "p95_seconds": pytest.approx(0.000201875), "p99_seconds": pytest.approx(0.000298541)}
    assert r.memory_bytes == 19283968 and r.init_seconds == pytest.approx(0.0213454)


def test_op_profile_table_of_benchmark_model_shows_the_cpu_fallback():
    from hilfarm.agent.runtimes.op_profile import parse_benchmark_model_op_profile

    ops = parse_benchmark_model_op_profile(_text("tflite-2.15-android14", "benchmark_model.txt"))
    assert [(o.op_type, o.provider, o.node, o.order) for o in ops] == [
        ("TfLiteXNNPackDelegate", "TfLiteXNNPackDelegate", "[relu1]:3", 3),
        ("FULLY_CONNECTED", "CPU (builtin kernels)", "[y]:2", 2)]
    assert ops[0].mean_seconds == pytest.approx(0.071e-3) and ops[1].calls == 1


# ---------------------------------------------------------------- a phone agent end to end


@pytest.mark.parametrize("case, model_kind, runtime", [
    ("tflite-2.15-android14", "tflite", "tflite"),
    ("tflite-2.4-android10", "tflite", "tflite"),
    ("onnxruntime-1.16-android13", "onnx", "onnxruntime"),
])
def test_phone_agent_runs_a_job_from_recorded_outputs(tmp_path, case, model_kind, runtime):
    pytest.importorskip("sqlmodel", reason="the controller's extra is not installed in this environment")
    from hilfarm.agent.service import AgentConfig, run_agent
    from hilfarm.client import FarmClient
    from hilfarm.embedded import EmbeddedFarm
    from hilfarm.v1 import farm_pb2

    model = (sample_models.make_tflite_mlp(tmp_path / "m.tflite") if model_kind == "tflite"
             else sample_models.make_onnx_mlp(tmp_path / "m.onnx"))
    profile = tmp_path / "phone.yaml"
    vendor = ("\nsensors:\n  battery: {kind: android-battery, current_unit: mA, discharge_sign: positive}\n"
              if "android10" in case else "\n")
    profile.write_text("name: android-phone\ndescription: a recorded phone\nextends: android-phone\n"
                       "thermal: {cooldown: {max_wait_seconds: 0}}\ntelemetry: {idle_baseline_seconds: 0.3, rate_hz: 5}"
                       + vendor)
    adb = android.RecordedAdb(FIXTURES / case, f"recorded adb outputs {case} (tests/fixtures)", serial="R5CT123")
    farm = EmbeddedFarm(data_dir=tmp_path / "farm", with_agent=False).start()
    stop = threading.Event()
    agent = threading.Thread(target=run_agent, args=(AgentConfig(
        controller=farm.address, profile=str(profile), data_dir=tmp_path / "agent", agent_id="android-R5CT123",
        adb_runner=adb, lease_wait_seconds=1.0), stop), daemon=True)
    agent.start()
    try:
        with FarmClient(farm.address) as client:
            up = client.upload(model)
            run = client.submit([up], ["android-phone"], farm_pb2.JobSettings(profile_ops=True, threads=1))
            job_id = run.jobs[0].id
            deadline = time.monotonic() + 60
            while client.get_job(job_id).state not in (farm_pb2.JOB_STATE_SUCCEEDED, farm_pb2.JOB_STATE_FAILED):
                assert time.monotonic() < deadline, "the phone job did not finish"
                time.sleep(0.2)
            job = client.get_job(job_id)
            devices = client.list_devices()
    finally:
        stop.set()
        agent.join(timeout=20)
        farm.stop()
    assert job.state == farm_pb2.JOB_STATE_SUCCEEDED, job.failure.message
    r = job.result
    env = r.environment
    assert env.recorded and any(case in s for s in env.recorded_sources)
    assert env.os.startswith("Android ") and env.machine == "arm64-v8a" and env.runtime == runtime
    assert r.latency.count > 0 and not r.latency.samples_ns
    assert "latency.samples_ns" in {u.field for u in r.unavailable}
    assert r.power.recorded and r.thermal.recorded and r.power.sensor.startswith("android-battery")
    assert r.power.active_watts == pytest.approx({"tflite-2.15-android14": 0.512345 * 3.98125,
                                                  "tflite-2.4-android10": 0.412 * 3.902,
                                                  "onnxruntime-1.16-android13": 0.389 * 4.0125}[case], rel=1e-6)
    assert {z.zone for z in r.thermal.zones} >= ({"BATTERY", "CPU0"} if "android10" in case else {"skin", "cpu4"})
    phone = next(d for d in devices if d.agent_id == "android-R5CT123")
    assert phone.capabilities.machine == "arm64-v8a" and runtime in {rt.name for rt in phone.capabilities.runtimes}
    pushes = [c for c in adb.calls if c[0] == "push"]
    assert len(pushes) == 1 and pushes[0][2].startswith(android.REMOTE_DIR)
    shell = [" ".join(c[1:]) for c in adb.calls if c[0] == "shell"]
    ran = next(c for c in shell if "--graph=" in c or " -I " in c)
    assert ran.startswith("taskset f0 ")
    if case == "tflite-2.15-android14":
        assert "--enable_op_profiling=true" in ran and "--num_threads=1" in ran
        assert r.op_profile.nodes_by_provider == {"TfLiteXNNPackDelegate": 1, "CPU (builtin kernels)": 1}
        assert r.op_profile.trace_sha256


# ---------------------------------------------------------------- a real adb server, no phone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def adb_server(monkeypatch):
    adb = shutil.which("adb")
    if adb is None:
        reason = "Debian's adb is not installed (scripts/test-devices.sh installs it)"
        if os.environ.get("HILFARM_DEVICE_TESTS") == "required":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    port = str(_free_port())
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", port)
    subprocess.run([adb, "start-server"], check=True, capture_output=True, timeout=60)
    try:
        yield adb
    finally:
        subprocess.run([adb, "kill-server"], capture_output=True, timeout=30)


def test_no_phone_attached_is_a_clear_error_from_adb_and_from_the_agent(adb_server, tmp_path):
    listed = subprocess.run([adb_server, "devices"], capture_output=True, text=True, timeout=30)
    assert "List of devices attached" in listed.stdout
    run = android.AdbRunner("R5CT00000", adb=adb_server)
    with pytest.raises(android.NoDevice) as err:
        android.phone_facts(run)
    assert "no Android device with serial R5CT00000 is attached" in str(err.value)
    env = dict(os.environ, HOME=str(tmp_path))
    cli = subprocess.run([sys.executable, "-m", "hilfarm.cli", "--controller", "127.0.0.1:1", "agent", "run",
                          *ROOT_OK, "--adb-serial", "R5CT00000", "--data-dir", str(tmp_path / "agent")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert cli.returncode == 1
    assert "no Android device with serial R5CT00000 is attached" in cli.stderr
    assert "Traceback" not in cli.stderr
