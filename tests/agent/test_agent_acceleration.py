"""Accelerators a profile expects: the providers or delegate a job gets, and a provider the
device lacks failing before anything runs, with the providers it has."""

from __future__ import annotations

import pytest

from hilfarm import sample_models
from hilfarm.agent.runtimes import acceleration
from hilfarm.agent.capabilities import probe_capabilities
from hilfarm.agent.harness import BenchmarkJob, run_benchmark
from hilfarm.agent.profiles import load_profile
from hilfarm.agent.results import FailureCategory, JobFailed, JobSettings


@pytest.fixture(scope="module")
def caps():
    c = probe_capabilities(["onnxruntime"])
    if not c.runtimes:
        pytest.skip(f"onnxruntime is not installed here: {c.absent}")
    return c


def test_jetson_profile_expects_tensorrt_then_cuda_and_fails_before_the_run_on_a_cpu_only_onnxruntime(caps):
    profile = load_profile("jetson-orin-nano")
    assert profile.acceleration["onnx_providers"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    have = caps.runtimes[0].execution_providers
    assert "CUDAExecutionProvider" not in have  # this machine has no GPU build of onnxruntime
    with pytest.raises(JobFailed) as err:
        acceleration.resolve(JobSettings(), "onnxruntime", profile.name, profile.acceleration, caps)
    f = err.value.failure
    assert f.category is FailureCategory.DEVICE_FAULT
    assert "TensorrtExecutionProvider, CUDAExecutionProvider" in f.message
    assert f"has only {', '.join(have)}" in f.message and "jetson-orin-nano" in f.message


def test_gpu_host_expects_cuda_and_a_job_may_still_ask_for_the_cpu(caps):
    profile = load_profile("nvidia-gpu-host")
    with pytest.raises(JobFailed, match="CUDAExecutionProvider"):
        acceleration.resolve(JobSettings(), "onnxruntime", profile.name, profile.acceleration, caps)
    cpu = acceleration.resolve(JobSettings(execution_provider="CPUExecutionProvider"), "onnxruntime",
                               profile.name, profile.acceleration, caps)
    assert cpu.execution_provider == "CPUExecutionProvider"


def test_a_provider_the_job_asks_for_and_the_device_lacks_is_the_requests_fault(caps):
    profile = load_profile("generic-x86-linux")
    with pytest.raises(JobFailed) as err:
        acceleration.resolve(JobSettings(execution_provider="CUDAExecutionProvider"), "onnxruntime",
                             profile.name, profile.acceleration, caps)
    assert err.value.failure.category is FailureCategory.CONFIGURATION
    assert "CPUExecutionProvider" in err.value.failure.message


def test_coral_profiles_give_tflite_jobs_the_edge_tpu_delegate():
    for name, device in (("coral-usb-rpi", "usb"), ("coral-dev-board", "pci")):
        profile = load_profile(name)
        s = acceleration.resolve(JobSettings(), "tflite", profile.name, profile.acceleration, None)  # type: ignore[arg-type]
        assert s.tflite_delegate_path == "libedgetpu.so.1" and s.tflite_delegate_options == {"device": device}
    own = acceleration.resolve(JobSettings(tflite_delegate_path="/opt/other.so"), "tflite", "coral-usb-rpi",
                               load_profile("coral-usb-rpi").acceleration, None)  # type: ignore[arg-type]
    assert own.tflite_delegate_path == "/opt/other.so"


def test_provider_priority_list_runs_and_records_every_provider(tmp_path):
    model = sample_models.make_onnx_mlp(tmp_path / "m.onnx")
    out = run_benchmark(BenchmarkJob(str(model), "onnx", JobSettings(
        execution_provider="CPUExecutionProvider", min_runs=3, min_seconds=0.0, profile_ops=True,
        profile_ops_runs=2)))
    assert out.failure is None
    assert out.result.environment.execution_provider == "CPUExecutionProvider"
    assert out.result.op_profile.nodes_by_provider == {"CPUExecutionProvider": len(out.result.op_profile.ops)}
    missing = run_benchmark(BenchmarkJob(str(model), "onnx", JobSettings(
        execution_provider="CUDAExecutionProvider,CPUExecutionProvider", min_runs=3)))
    assert missing.failure.category is FailureCategory.CONFIGURATION
    assert "CUDAExecutionProvider" in missing.failure.message and "available:" in missing.failure.message
