"""Shipped device profiles name sensors that exist with options they take; detection picks the
family from the files a device really has."""

from __future__ import annotations

from pathlib import Path

import pytest

from hilfarm.agent.telemetry.job import build_sensors, telemetry_config
from hilfarm.agent.profiles import PROFILE_DIR, ProfileError, available_profiles, detect_family, load_profile
from hilfarm.agent.sensors import RecordedRunner, SensorConfigError, sensor_kinds

SYSFS = Path(__file__).resolve().parent.parent / "fixtures" / "sysfs"

FAMILY_PROFILES = ["raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-xavier-nx", "jetson-orin-nano",
                   "jetson-agx-orin", "coral-dev-board", "coral-usb-rpi", "android-phone", "generic-x86-linux",
                   "nvidia-gpu-host", "simulated"]


def test_every_family_has_a_profile():
    assert set(FAMILY_PROFILES) <= set(available_profiles())


@pytest.mark.parametrize("name", sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
def test_profile_validates_and_its_sensors_build(name):
    profile = load_profile(name, machine="x86_64")  # validated against the schema, file by file
    cfg = telemetry_config(profile)
    for entry in cfg.sensors.values():
        assert entry["kind"] in sensor_kinds()
    # Building checks every option against the sensor kind (nothing is read yet: root is empty).
    build_sensors(cfg.sensors, root="/nonexistent-root", runner=RecordedRunner("/nonexistent"))
    if cfg.power_sensor:
        assert cfg.power_sensor in cfg.sensors
    if cfg.cooldown.max_wait_seconds:
        assert cfg.cooldown.below_celsius is not None


@pytest.mark.parametrize("name,power,zone", [
    ("raspberry-pi-5", "rpi5-pmic", "cpu-thermal"),
    ("jetson-nano", "jetson-ina3221", "CPU-therm"),
    ("jetson-agx-orin", "jetson-ina3221", "tj-thermal"),
    ("android-phone", "android-battery", "skin"),
    ("nvidia-gpu-host", "nvml-power", "gpu0"),
])
def test_family_profiles_name_power_sensor_and_cooldown_zone(name, power, zone):
    cfg = telemetry_config(load_profile(name, machine="x86_64"))
    first_power = next(v["kind"] for k, v in cfg.sensors.items()
                       if (cfg.power_sensor in ("", k)) and v["kind"] in (
                           "rpi5-pmic", "jetson-ina3221", "android-battery", "nvml-power", "rapl", "hwmon-power"))
    assert first_power == power
    assert cfg.cooldown.zone == zone


def test_rpi4_profile_has_no_power_sensor():
    cfg = telemetry_config(load_profile("raspberry-pi-4"))
    assert {v["kind"] for v in cfg.sensors.values()} == {"vcgencmd", "thermal-zones", "cpufreq"}


def test_bad_sensor_in_a_profile_is_named(tmp_path):
    p = tmp_path / "unit.yaml"
    p.write_text("name: unit\ndescription: d\nextends: raspberry-pi-5\nsensors:\n  pmic: {kind: rpi5-pmic, rail: X}\n")
    cfg = telemetry_config(load_profile(str(p)))
    with pytest.raises(SensorConfigError, match=r"sensors.pmic: sensor kind 'rpi5-pmic' has no option\(s\) rail"):
        build_sensors(cfg.sensors)
    p.write_text("name: unit\ndescription: d\nextends: raspberry-pi-5\nthermal: {cooldown: {below: 50}}\n")
    with pytest.raises(ProfileError, match="thermal.cooldown"):
        load_profile(str(p))


@pytest.mark.parametrize("device,machine,expected", [
    ("rpi4", "aarch64", "raspberry-pi-4"),
    ("rpi5", "aarch64", "raspberry-pi-5"),
    ("jetson-nano", "aarch64", "jetson-nano"),
    ("jetson-xavier-nx", "aarch64", "jetson-xavier-nx"),
    ("jetson-orin-nano", "aarch64", "jetson-orin-nano"),
    ("jetson-agx-orin", "aarch64", "jetson-agx-orin"),
    ("coral", "aarch64", "coral-dev-board"),
    ("android", "aarch64", "android-phone"),
    ("nvidia-gpu", "x86_64", "nvidia-gpu-host"),
    ("x86", "x86_64", "generic-x86-linux"),
    ("ina226", "aarch64", "generic-aarch64-linux"),
])
def test_detect_family_from_fixture_trees(device, machine, expected):
    name, why = detect_family(SYSFS / device, machine)
    assert name == expected, why
    load_profile(name, machine=machine)


def test_coral_usb_on_a_pi_and_the_reason_given(device):
    d = device("rpi5")
    d.write("sys/bus/usb/devices/2-1/idVendor", "18d1")
    d.write("sys/bus/usb/devices/2-1/idProduct", "9302")
    d.write("sys/bus/usb/devices/1-1/idVendor", "2109")
    d.write("sys/bus/usb/devices/1-1/idProduct", "3431")
    name, why = detect_family(d.root, "aarch64")
    assert name == "coral-usb-rpi"
    assert why == "/proc/device-tree/model says 'Raspberry Pi 5 Model B Rev 1.0' and a Coral USB Accelerator is on the USB bus"


def test_unknown_board_falls_back_to_generic_and_says_why(device):
    d = device("rpi4")
    (d.root / "proc/device-tree/model").write_bytes(b"Pine64 RockPro64 v2.1\0")
    name, why = detect_family(d.root, "aarch64")
    assert name == "generic-aarch64-linux"
    assert "names no known board" in why and "RockPro64" in why
