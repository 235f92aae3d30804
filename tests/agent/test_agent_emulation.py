"""An agent knows when it runs under an emulator (timings labelled emulated) and when its sensors
read a recording (figures labelled recorded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hilfarm.agent.emulation import detect_emulation
from hilfarm.agent.telemetry.job import JobTelemetry, telemetry_config
from hilfarm.agent.profiles import load_profile

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
"""


@pytest.fixture(autouse=True)
def no_override(monkeypatch):
    monkeypatch.delenv("HILFARM_EMULATION", raising=False)


def test_aarch64_process_seeing_an_x86_cpu_is_qemu_user(tmp_path):
    (tmp_path / "cpuinfo").write_text(X86_CPUINFO)
    found = detect_emulation("aarch64", str(tmp_path / "cpuinfo"))
    assert found.startswith("qemu-user") and "x86 CPU" in found


def test_native_machines_are_not_emulated(tmp_path):
    (tmp_path / "arm").write_text(ARM_CPUINFO)
    (tmp_path / "x86").write_text(X86_CPUINFO)
    assert detect_emulation("aarch64", str(tmp_path / "arm")) == ""
    assert detect_emulation("x86_64", str(tmp_path / "x86")) == ""
    assert detect_emulation("aarch64", str(tmp_path / "missing")) == ""


def test_the_environment_overrides_the_check(tmp_path, monkeypatch):
    (tmp_path / "x86").write_text(X86_CPUINFO)
    monkeypatch.setenv("HILFARM_EMULATION", "none")
    assert detect_emulation("aarch64", str(tmp_path / "x86")) == ""
    monkeypatch.setenv("HILFARM_EMULATION", "box64 on an Arm host")
    assert detect_emulation("x86_64", str(tmp_path / "x86")) == "box64 on an Arm host (set by $HILFARM_EMULATION)"


def test_a_profile_reading_a_recorded_pi5_flags_every_figure_recorded(tmp_path):
    unit = tmp_path / "unit.yaml"
    unit.write_text(f"""name: raspberry-pi-5
description: a unit whose sensors read a recording
extends: raspberry-pi-5
telemetry:
  idle_baseline_seconds: 0.2
  recorded:
    root: {FIXTURES}/sysfs/rpi5
    commands: {FIXTURES}/commands/rpi5
    description: Raspberry Pi 5 recorded at idle
thermal: {{cooldown: {{max_wait_seconds: 0}}}}
""")
    config = telemetry_config(load_profile(str(unit)))
    assert config.recorded == "Raspberry Pi 5 recorded at idle" and config.root.endswith("sysfs/rpi5")
    tel = JobTelemetry(config)
    tel.before_run()
    tel.mark("measuring")
    live = tel.drain()
    summary = tel.finish(inferences=10)
    assert summary.recorded and summary.power.recorded and summary.thermal.recorded
    assert summary.power.sensor == "vcgencmd pmic_read_adc"
    assert live and all(p.recorded for p in live) and all(p.recorded for p in summary.timeline)
    assert {z.zone for z in summary.thermal.zones} >= {"soc", "cpu-thermal"}
