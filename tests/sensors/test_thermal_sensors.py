"""Thermal, clock and throttle sensors against recorded device layouts."""

from __future__ import annotations

import json

import pytest

from hilfarm.agent.sensors.commands import decode_throttled, parse_get_throttled, parse_tegrastats
from hilfarm.agent.sensors.nvml import RecordedNvml, RecordedNvmlLegacy, decode_clock_event_reasons
from hilfarm.agent.sensors import RecordedRunner, SensorUnavailable, create_sensor


def make(kind, dev, **options):
    return create_sensor(kind, options, root=dev.root, runner=RecordedRunner(dev.cmds))


def test_rpi5_zone_and_a_spinning_fan_is_not_throttling(device):
    r = make("thermal-zones", device("rpi5")).read()
    assert r.temperatures == {"cpu-thermal": 52.15}
    assert r.throttled is False and r.throttle_reasons == []
    assert r.info["fans"] == "cooling_device0 (pwm-fan) state 1/4"


def test_x86_zones_ignore_unset_passive_trips_and_idle_powerclamp(device):
    d = device("x86")
    s = make("thermal-zones", d)
    r = s.read()
    assert r.temperatures == {"acpitz": 27.8, "INT3400 Thermal": 20.0, "x86_pkg_temp": 45.0, "TCPU": 45.05}
    assert r.throttled is False  # x86_pkg_temp's passive trips at 0 are unset; powerclamp -1 is idle
    d.write("sys/class/thermal/thermal_zone3/temp", 95500)
    r = s.read()
    assert r.throttled is True
    assert r.throttle_reasons == ["TCPU at 95.5 °C, at or above its passive trip point 95 °C"]


def test_active_cpufreq_cooling_device_is_throttling(device):
    d = device("coral")
    s = make("thermal-zones", d, zones=["cpu-thermal"])
    assert s.read().throttled is False
    d.write("sys/class/thermal/cooling_device0/cur_state", 2)
    r = s.read()
    assert r.throttle_reasons == ["cooling device cooling_device0 (thermal-cpufreq-0) active (state 2/3)"]
    assert list(r.temperatures) == ["cpu-thermal"]


def test_orin_zones_without_a_reading_are_named_not_zero(device):
    r = make("thermal-zones", device("jetson-orin-nano")).read()
    assert "cv0-thermal" not in r.temperatures
    assert r.unreadable["cv0-thermal"] == "reports -256 °C (no reading: its sensor is powered off)"
    assert r.temperatures["tj-thermal"] == 47.625


def test_zone_garbage_value_is_unreadable(device):
    d = device("jetson-nano")
    d.write("sys/class/thermal/thermal_zone1/temp", "N/A")
    r = make("thermal-zones", d).read()
    assert "CPU-therm" not in r.temperatures
    assert "holds 'N/A'" in r.unreadable["CPU-therm"]


def test_cpufreq_clocks_governor_and_x86_throttle_counter(device):
    d = device("x86")
    s = make("cpufreq", d)
    s.slow_refresh_s = 0.0  # read the counters on every reading (normally once a second)
    r = s.read()
    assert r.clocks["cpu3"].hz == 4500012000.0
    assert r.clocks["cpu0"].allowed_max_hz == 4.7e9 and r.clocks["cpu0"].hardware_max_hz == 4.7e9
    assert r.info["governor"] == "powersave"
    assert r.throttled is False
    d.write("sys/devices/system/cpu/cpu2/thermal_throttle/package_throttle_count", 3)
    r = s.read()
    assert r.throttle_reasons == ["cpu2 package_throttle_count rose by 3"]
    assert s.read().throttled is False  # no further rise


def test_cpufreq_one_domain_per_policy_offline_cpus_and_mixed_governors(device):
    d = device("jetson-orin-nano")
    assert set(make("cpufreq", d).read().clocks) == {"cpu0-3", "cpu4-5"}
    d.write("sys/devices/system/cpu/cpu4/cpufreq/scaling_governor", "performance")  # policy4, via the link
    r = make("cpufreq", d).read()
    assert r.info["governor"] == "cpu0-3=schedutil,cpu4-5=performance"
    d.write("sys/devices/system/cpu/cpu4/online", 0)
    d.write("sys/devices/system/cpu/cpu5/online", 0)
    r = make("cpufreq", d).read()
    assert set(r.clocks) == {"cpu0-3"} and r.info["governor"] == "schedutil"
    x86 = make("cpufreq", device("x86")).read()  # intel_pstate: a policy per CPU
    assert set(x86.clocks) == {"cpu0", "cpu1", "cpu2", "cpu3"}


def test_cpufreq_below_max_under_a_pinning_governor(device):
    d = device("rpi4")
    r = make("cpufreq", d, below_max_is_throttle=True).read()
    assert r.throttled is True
    assert r.throttle_reasons[0] == "cpu0-3 at 1500 MHz, below its allowed 1800 MHz"


def test_no_cpufreq_in_a_container(device):
    with pytest.raises(SensorUnavailable, match="no cpufreq"):
        make("cpufreq", device("nvidia-gpu")).open()


def test_devfreq_gpu_and_jetson_mode(device):
    d = device("jetson-nano")
    r = make("devfreq", d).read()
    assert r.clocks["gpu"].hz == 76800000.0 and r.clocks["gpu"].allowed_max_hz == 921600000.0
    mode = make("jetson-mode", d)
    info = mode.read().info
    assert info == {"nvpmodel": "MAXN (mode 0)", "jetson_clocks": "off"}
    # jetson_clocks pins each minimum to the maximum.
    for c in range(4):
        d.write(f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_min_freq", 1479000)
    d.write("sys/class/devfreq/57000000.gpu/min_freq", 921600000)
    assert mode.read().info["jetson_clocks"] == "on"


def test_xavier_nvpmodel_mode_name(device):
    assert make("jetson-mode", device("jetson-xavier-nx")).read().info["nvpmodel"] == "MODE_20W_6CORE (mode 8)"


def test_coral_apex_trip_points_and_thermal_scaling(device):
    d = device("coral")
    s = make("coral-apex", d)
    r = s.read()
    assert r.temperatures == {"apex_0": 42.5} and r.throttled is False
    assert r.info["edgetpu_thermal_scaling"] == "off"
    d.write("sys/class/apex/apex_0/temp", 91000)
    r = s.read()
    assert r.throttled is False  # temp_poll_interval=0: the driver does not scale
    assert "trip point 1 (90 °C) but thermal clock scaling is off" in r.events[0]
    d.write("sys/class/apex/apex_0/temp_poll_interval", 5000)
    r = s.read()
    assert r.throttle_reasons == ["apex_0 at 91 °C, at or above trip point 1 (90 °C)"]


def test_coral_usb_host_has_no_tpu_temperature(device):
    with pytest.raises(SensorUnavailable, match="Coral USB accelerator has no readable temperature"):
        make("coral-apex", device("rpi4")).open()


def test_coretemp_hwmon(device):
    r = make("hwmon-temp", device("x86"), chip="coretemp", labels=["Package id 0"]).read()
    assert r.temperatures == {"coretemp Package id 0": 45.0}


@pytest.mark.parametrize("text,now,past", [
    ("throttled=0x0\n", [], []),
    ("throttled=0x50005\n", ["under-voltage now", "throttled now"],
     ["under-voltage has occurred since boot", "throttled has occurred since boot"]),
    ("throttled=0x80000\n", [], ["soft temperature limit has occurred since boot"]),
    ("throttled=0xe000e\n", ["arm frequency capped now", "throttled now", "soft temperature limit now"],
     ["arm frequency capped has occurred since boot", "throttled has occurred since boot",
      "soft temperature limit has occurred since boot"]),
])
def test_get_throttled_bits(text, now, past):
    assert decode_throttled(parse_get_throttled(text)) == (now, past)


def test_vcgencmd_sensor_on_rpi4_and_rpi5(device):
    r4 = make("vcgencmd", device("rpi4")).read()
    assert r4.temperatures == {"soc": 48.7}
    assert r4.clocks["arm"].hz == 1500398464.0 and r4.clocks["arm"].hardware_max_hz == 1.8e9
    assert r4.throttled is False
    d = device("rpi5")
    s = make("vcgencmd", d)
    assert s.read().clocks["arm"].hz == 2400002048.0  # index 0 on a Pi 5
    d.use_variant("vcgencmd_get_throttled.throttling.txt", "vcgencmd_get_throttled.txt")
    r = s.read()
    assert r.throttled is True and r.throttle_reasons == ["under-voltage now", "throttled now"]
    assert r.info["get_throttled"] == "0x50005"
    d.use_variant("vcgencmd_get_throttled.occurred.txt", "vcgencmd_get_throttled.txt")
    r = s.read()
    assert r.throttled is False and r.events == ["soft temperature limit has occurred since boot"]


def test_vcgencmd_absent_is_unavailable(device):
    with pytest.raises(SensorUnavailable, match="vcgencmd get_throttled"):
        make("vcgencmd", device("x86")).open()


def test_tegrastats_zones_and_clocks_both_formats():
    old = parse_tegrastats("RAM 2201/3964MB (lfb 4x4MB) CPU [95%@1479,97%@1479,off,off] EMC_FREQ 4%@1600 "
                           "GR3D_FREQ 0%@76 PLL@27.5C CPU@31C PMIC@100C GPU@25C POM_5V_IN 4790/3668")
    assert old.cpu_mhz == {"cpu0": 1479.0, "cpu1": 1479.0}
    assert old.gpu_mhz == 76.0 and old.emc_mhz == 1600.0
    assert old.temperatures == {"PLL": 27.5, "CPU": 31.0, "PMIC": 100.0, "GPU": 25.0}
    new = parse_tegrastats("11-23-2026 19:14:23 RAM 2037/7620MB (lfb 2x4MB) CPU [1%@729,off] GR3D_FREQ 0%@[305] "
                           "cpu@47.625C cv0@-256C tj@47.625C VDD_IN 4831mW/4831mW")
    assert new.temperatures == {"cpu": 47.625, "tj": 47.625}  # -256C is "no reading"
    assert new.gpu_mhz == 305.0 and new.rails_mw == {"VDD_IN": (4831.0, 4831.0)}
    with pytest.raises(SensorUnavailable):
        parse_tegrastats("tegrastats: command not found")


def test_tegrastats_thermal_sensor(device):
    r = make("tegrastats-thermal", device("jetson-agx-orin")).read()
    assert r.temperatures["tj"] == 45.031 and r.temperatures["CPU"] == 45.031
    assert r.clocks["gpu"].hz == 306e6 and len([c for c in r.clocks if c.startswith("cpu")]) == 12


def test_android_thermalservice_status_and_hal_block(device):
    d = device("android")
    s = make("android-thermalservice", d)
    r = s.read()
    assert r.temperatures == {"battery": 28.0, "cpu0": 36.5, "cpu4": 37.1, "gpu": 34.2, "skin": 33.4}
    assert r.throttled is False and r.info["thermal_status"] == "0 (none)"
    d.use_variant("dumpsys_thermalservice.moderate.txt", "dumpsys_thermalservice.txt")
    r = s.read()
    assert r.throttled is True
    assert r.throttle_reasons == ["thermal status 2 (moderate)", "skin severity 2 (moderate)"]
    assert r.temperatures["skin"] == 41.6


def test_android10_thermalservice_variant(device):
    d = device("android")
    d.use_variant("dumpsys_thermalservice.android10.txt", "dumpsys_thermalservice.txt")
    r = make("android-thermalservice", d).read()
    assert r.temperatures == {"CPU0": 38.9, "BATTERY": 30.0}
    assert r.throttled is True and r.throttle_reasons[0] == "thermal status 1 (light)"


def test_nvml_thermal_clocks_and_event_reasons(device):
    d = device("nvidia-gpu")
    s = make("nvml-thermal", d, nvml=RecordedNvml(d.root / "nvml.json"))
    r = s.read()
    assert r.temperatures == {"gpu0": 31.0}
    assert r.clocks["gpu0.sm"].hz == 345e6 and r.clocks["gpu0.sm"].hardware_max_hz == 1980e6
    assert r.throttled is False and r.info["clock_event_reasons"] == "0x1 GpuIdle"
    doc = json.loads((d.root / "nvml.json").read_text())
    doc["devices"][0]["clocks_event_reasons"] = 0x4 | 0x40 | 0x10
    (d.root / "nvml.json").write_text(json.dumps(doc))
    r = s.read()
    assert r.throttled is True and r.throttle_reasons == ["SwPowerCap", "HwThermalSlowdown"]
    assert r.info["clock_event_reasons"] == "0x54 SwPowerCap|SyncBoost|HwThermalSlowdown"


def test_nvml_legacy_throttle_reasons_call(device):
    d = device("nvidia-gpu")
    r = make("nvml-thermal", d, nvml=RecordedNvmlLegacy(d.root / "nvml.json")).read()
    assert r.info["clock_event_reasons"] == "0x1 GpuIdle"


def test_clock_event_reason_names():
    assert decode_clock_event_reasons(0xFF) == ["GpuIdle", "AppClocks", "SwPowerCap", "HwSlowdown", "SyncBoost",
                                                "SwThermalSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown"]
