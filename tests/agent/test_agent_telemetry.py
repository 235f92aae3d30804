"""The agent's telemetry end to end: a real agent process loop against the fake controller
on loopback, with sensors read from a recorded device tree or a simulated one."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from hilfarm.agent.service import AgentConfig, run_agent

from . import test_agent_service as _svc  # FakeController, start_server, QUICK
SYSFS = Path(__file__).resolve().parent.parent / "fixtures" / "sysfs"


# Long enough for the simulated device (updated at 10 Hz) to move its energy counter.
TIMED = _svc.JobSettings(warmup_runs=1, warmup_seconds=0.01, min_runs=20, min_seconds=0.6)


def run_one_job(tmp_path, models, profile_text: str, job_id: str = "t1"):
    fake = _svc.FakeController()
    server, port = _svc.start_server(fake)
    profile = tmp_path / "test-unit.yaml"
    profile.write_text(profile_text)
    config = AgentConfig(controller=f"127.0.0.1:{port}", profile=str(profile), data_dir=tmp_path / "agent",
                         lease_wait_seconds=0.5, progress_interval_seconds=0.2, backoff_max_seconds=0.5)
    stop = threading.Event()
    thread = threading.Thread(target=run_agent, args=(config, stop), daemon=True)
    thread.start()
    try:
        sha = fake.add_artifact(models["mlp"].read_bytes())
        fake.add_job(job_id, sha, settings=TIMED)
        report = fake.result_for(job_id)
    finally:
        stop.set()
        thread.join(timeout=15)
        server.stop(0)
    assert report.WhichOneof("outcome") == "result", report.failure
    progress = [p for j, p in fake.progress if j == job_id]
    return report.result, progress


def test_simulated_profile_fills_power_thermal_timeline_and_flags_it(tmp_path, models):
    result, progress = run_one_job(tmp_path, models, (
        "name: test-unit\ndescription: simulated unit\nextends: simulated\n"
        "runtimes: {allowed: [onnxruntime]}\ntelemetry: {idle_baseline_seconds: 0.3, rate_hz: 20}\n"))
    assert result.environment.simulated
    assert result.power.simulated and result.power.energy_method == "energy counter"
    assert result.power.sensor.startswith("rapl") and result.power.idle_watts > 0
    assert result.power.energy_per_inference_joules > 0
    assert result.thermal.simulated and [z.zone for z in result.thermal.zones] == ["cpu-thermal"]
    assert len(result.timeline) > 0 and all(s.simulated for s in result.timeline)
    assert {"power_watts", "energy_joules", "temperature_celsius", "clock_hz"} <= {s.quantity for s in result.timeline}
    live = [s for p in progress for s in p.telemetry]
    assert live and all(s.simulated for s in live)
    assert "cooldown" in [p.phase for p in progress]
    assert result.power.simulated


def test_absent_sensors_are_named_with_the_profile(tmp_path, models):
    tree = tmp_path / "rpi4"
    shutil.copytree(SYSFS / "rpi4", tree, symlinks=True)
    result, _ = run_one_job(tmp_path, models, (
        "name: test-unit\ndescription: a Pi 4 seen through a recorded tree\nextends: local\n"
        "runtimes: {allowed: [onnxruntime]}\n"
        f"telemetry: {{root: {str(tree)!r}, idle_baseline_seconds: 0.2}}\n"
        "sensors:\n  package_energy: {kind: rapl}\n  zones: {kind: thermal-zones}\n"
        "  cpu_temps: {kind: hwmon-temp, chip: [coretemp, k10temp]}\n  cpu_clocks: {kind: cpufreq}\n"
        "thermal: {cooldown: {below_celsius: 60, zone: cpu-thermal, max_wait_seconds: 5}}\n"))
    reasons = {u.field: u.reason for u in result.unavailable}
    assert reasons["power.active_watts"].startswith("rapl (power): no RAPL domains")
    assert reasons["power.active_watts"].endswith("(profile test-unit)")
    assert not result.HasField("power") and not result.environment.simulated
    zone = result.thermal.zones[0]
    assert (zone.zone, zone.start_celsius, zone.max_celsius) == ("cpu-thermal", 48.686, 48.686)
    assert result.thermal.cooldown_seconds < 1 and result.thermal.throttled is False
    assert result.thermal.clocks[0].domain == "cpu0-3" and result.thermal.clocks[0].allowed_max_hz == 1.8e9
    assert any("governor is 'ondemand', not 'performance'" in w for w in result.warnings) or \
        result.environment.governor == "performance"
