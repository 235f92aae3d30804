"""The agent on an emulated Raspberry Pi OS board, end to end.

`hilfarm device provision` installs the agent over SSH into an arm64 Debian bullseye board
(Python 3.9.2, aarch64 code run by qemu-user) from a wheel of this checkout and the aarch64
cp39 wheels of its dependencies (grpcio, protobuf, numpy, psutil, tflite-runtime 2.13,
onnxruntime 1.16.3). The agent registers with the raspberry-pi-5 profile, reads a recorded Pi 5
sysfs tree and recorded vcgencmd outputs for its sensors, and runs an ONNX and a TFLite model
submitted to a real controller. Every figure says where it came from: timings `emulated`,
power and temperatures `recorded`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hilfarm import sample_models
from hilfarm.embedded import EmbeddedFarm

from .emulated_board import RECORDED, REPO, WHEELHOUSE

pytestmark = pytest.mark.timeout(1500)

UNIT_PROFILE = f"""\
# One emulated unit of the raspberry-pi-5 device type: the same profile, but its sensors read
# a recorded Pi 5 (this board has no vcgencmd and no Pi sysfs) and it does not wait to cool.
name: raspberry-pi-5
description: Emulated Raspberry Pi 5 (arm64 Debian bullseye under qemu-user) with a recorded sensor tree.
extends: raspberry-pi-5
tags: [emulated]
telemetry:
  idle_baseline_seconds: 0.5
  recorded:
    root: {RECORDED}/sysfs
    commands: {RECORDED}/commands
    description: Raspberry Pi 5 sysfs tree and vcgencmd outputs recorded at idle (tests/fixtures, rpi5)
thermal:
  cooldown: {{max_wait_seconds: 0}}
"""


def _recorded_watts() -> float:
    """The recorded PMIC rails summed as the rpi5-pmic sensor sums them (rails with both readings)."""
    from hilfarm.agent.sensors.commands import parse_pmic_read_adc

    rails = parse_pmic_read_adc((REPO / "tests/fixtures/commands/rpi5/vcgencmd_pmic_read_adc.txt").read_text())
    return sum(v["A"] * v["V"] for v in rails.values() if "A" in v and "V" in v)


RECORDED_WATTS = _recorded_watts()


def _cli(args, home: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "HILFARM_TOKEN", "HILFARM_CONTROLLER")}
    env.update(HOME=str(home), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "hilfarm.cli"] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def test_provisioned_agent_runs_onnx_and_tflite_on_the_emulated_pi(board, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(board.host_key_line())
    profile = tmp_path / "rpi5-emulated.yaml"
    profile.write_text(UNIT_PROFILE)
    farm = EmbeddedFarm(data_dir=tmp_path / "farm", with_agent=False).start()
    try:
        started = time.monotonic()
        provision = _cli(["--controller", farm.address, "device", "provision", f"{board.user}@127.0.0.1",
                          "--port", str(board.port), "--identity", str(board.client_key),
                          "--known-hosts", str(known_hosts), "--profile", str(profile),
                          "--from-wheel", str(REPO), "--extras", "onnx,tflite", "--no-index",
                          "--find-links", WHEELHOUSE, "--wait-seconds", "600", "--json"], home)
        assert provision.returncode == 0, provision.stderr
        print(f"provisioning the emulated board took {time.monotonic() - started:.0f} s")
        device = json.loads(provision.stdout)
        assert device["device_profile"] == "raspberry-pi-5"
        assert "emulated" in device["tags"]
        caps = device["capabilities"]
        assert caps["machine"] == "aarch64" and caps["python_version"] == "3.9.2"
        assert "bullseye" in caps["os"]
        assert caps["emulation"].startswith("qemu-user")
        runtimes = {r["name"]: r for r in caps["runtimes"]}
        assert runtimes["onnxruntime"]["version"] == "1.16.3"
        assert runtimes["tflite"]["package"] == "tflite-runtime" and runtimes["tflite"]["version"].startswith("2.13")

        models = [sample_models.make_onnx_mlp(tmp_path / "mlp.onnx"),
                  sample_models.make_tflite_mlp(tmp_path / "mlp.tflite")]
        started = time.monotonic()
        submit = _cli(["--controller", farm.address, "submit", *map(str, models), "--device", "raspberry-pi-5",
                       "--runs", "20", "--min-seconds", "0", "--warmup", "2", "--warmup-seconds", "0",
                       "--profile-ops", "--profile-ops-runs", "3", "--wait", "--json"], home)
        assert submit.returncode == 0, submit.stdout + submit.stderr
        print(f"two jobs on the emulated board took {time.monotonic() - started:.0f} s")
        jobs = {j["model"]["format"]: j for j in json.loads(submit.stdout)["jobs"]}
        for fmt, runtime in (("onnx", "onnxruntime"), ("tflite", "tflite")):
            job = jobs[fmt]
            assert job["state"] == "succeeded", job["failure"]
            result = job["result"]
            env = result["environment"]
            assert env["emulated"] is True and env["emulation"].startswith("qemu-user")
            assert env["machine"] == "aarch64" and env["python_version"] == "3.9.2"
            assert env["runtime"] == runtime and env["device_profile"] == "raspberry-pi-5"
            assert env["simulated"] is False
            assert env["recorded"] is True
            assert any("recorded at idle" in s for s in env["recorded_sources"])
            assert result["latency"]["count"] == len(result["latency"]["samples_ns"]) >= 20
            # The recorded Pi 5: PMIC rails summed (EXT5V without current), 52.1 C from vcgencmd.
            assert result["power"]["recorded"] is True and result["power"]["sensor"] == "vcgencmd pmic_read_adc"
            assert result["power"]["active_watts"] == pytest.approx(RECORDED_WATTS, rel=1e-9)
            assert result["thermal"]["recorded"] is True
            assert all(s["recorded"] for s in result["timeline"]) and result["timeline"]
            zones = {z["zone"]: z for z in result["thermal"]["zones"]}
            assert zones["soc"]["max_celsius"] == pytest.approx(52.1)
            assert result["op_profile"]["ops"]
        onnx_ops = jobs["onnx"]["result"]["op_profile"]
        assert {op["provider"] for op in onnx_ops["ops"]} == {"CPUExecutionProvider"}
        assert all(op["mean_seconds"] > 0 for op in onnx_ops["ops"]) and onnx_ops["trace_sha256"]
        tflite_ops = jobs["tflite"]["result"]["op_profile"]
        assert {op["provider"] for op in tflite_ops["ops"]} == {"XNNPACK"}
        assert "no per-operator timer" in tflite_ops["timing_unavailable"]

        table = _cli(["--controller", farm.address, "jobs", "show", jobs["onnx"]["id"]], home)
        assert table.returncode == 0, table.stderr
        assert "EMULATED" in table.stdout and "recorded" in table.stdout

        agents = [p for p in board.pids() if b"agent\x00run" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(agents) == 1
        sys.path.insert(0, str(REPO / "benchmarks"))
        from agent_footprint import measure

        figures = measure(agents[0], 20)
        print(f"idle agent on the emulated board (qemu-user: the emulator's memory and CPU): "
              f"VmRSS {figures['rss_bytes'] / 1e6:.1f} MB, CPU {figures['cpu_fraction'] * 100:.2f} % of a core")
        report = os.environ.get("HILFARM_DEVICE_REPORT")
        if report:
            with open(report, "a") as f:
                f.write(json.dumps({"emulated_agent_footprint": figures}) + "\n")
    finally:
        farm.stop()
