"""Power sensors against recorded device layouts (tests/fixtures/sysfs, tests/fixtures/commands)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import shutil
from pathlib import Path

import pytest

from hilfarm.agent.sensors.nvml import RecordedNvml
from hilfarm.agent.sensors import RecordedRunner, SensorConfigError, SensorUnavailable, create_sensor


def make(kind, dev, **options):
    return create_sensor(kind, options, root=dev.root, runner=RecordedRunner(dev.cmds))


def test_ina226_power_input_in_microwatts(device):
    d = device("ina226")
    s = make("hwmon-power", d)
    r = s.read()
    assert r.total_watts == 4.65 and r.rails == {"ina226": 4.65}
    assert s.describe() == "hwmon:ina226 /sys/class/hwmon/hwmon2"
    assert not s.simulated


def test_hwmon_current_times_voltage_and_old_device_layout(device):
    # An ina219 on an old kernel: attributes in hwmonN/device/, no power file: mA x mV.
    d = device("rpi4")
    base = "sys/class/hwmon/hwmon3/device"
    d.write(f"{base}/name", "ina219")
    d.write(f"{base}/curr1_input", 500)
    d.write(f"{base}/in1_input", 5120)
    s = make("hwmon-power", d, labels={"1": "USB_5V"})
    r = s.read()
    assert r.rails == {"USB_5V": pytest.approx(2.56, abs=1e-12)}
    assert r.total_method == "rail USB_5V"


def test_hwmon_without_a_power_chip_names_the_chips_it_found(device):
    with pytest.raises(SensorUnavailable) as e:
        make("hwmon-power", device("x86")).open()
    assert "chips found: acpitz, nvme, coretemp" in e.value.reason


def test_hwmon_garbage_and_missing_values_are_unavailable_not_zero(device):
    d = device("ina226")
    s = make("hwmon-power", d)
    s.open()
    d.write("sys/class/hwmon/hwmon2/power1_input", "garbage")
    with pytest.raises(SensorUnavailable, match="power1_input holds 'garbage', not an integer"):
        s.read()
    d.remove("sys/class/hwmon/hwmon2/power1_input")
    with pytest.raises(SensorUnavailable, match="power1_input does not exist"):
        s.read()


def test_jetson_nano_jetpack4_iio_milliwatts_from_channel_0(device):
    s = make("jetson-ina3221", device("jetson-nano"))
    r = s.read()
    assert r.rails == {"POM_5V_IN": 2.545, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.418}
    assert r.total_watts == 2.545 and r.total_method == "rail POM_5V_IN"
    assert "ina3221x/6-0040/iio:device0" in s.describe()


def test_xavier_nx_jetpack5_hwmon_millivolts_times_milliamps(device):
    r = make("jetson-ina3221", device("jetson-xavier-nx")).read()
    assert r.rails == {
        "VDD_IN": pytest.approx(5096 * 904 / 1e6),
        "VDD_CPU_GPU_CV": pytest.approx(5096 * 168 / 1e6),
        "VDD_SOC": pytest.approx(5096 * 272 / 1e6),
    }
    assert r.total_watts == pytest.approx(4.606784)
    assert r.total_method == "rail VDD_IN"


def test_orin_nano_without_input_rail_sums_the_rails(device):
    d = device("jetson-orin-nano")
    hw = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"
    d.write(f"{hw}/in1_label", "NC")
    r = make("jetson-ina3221", d).read()
    assert set(r.rails) == {"VDD_CPU_GPU_CV", "VDD_SOC"}
    assert r.total_watts == pytest.approx((5056 * 121 + 5056 * 285) / 1e6)
    assert r.total_method == "sum of rails VDD_CPU_GPU_CV+VDD_SOC"


def test_agx_orin_two_chips_skip_nc_and_do_not_double_count_1v8ao(device):
    s = make("jetson-ina3221", device("jetson-agx-orin"))
    r = s.read()
    assert set(r.rails) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
    assert r.total_watts == pytest.approx((5008 * 640 + 5008 * 216 + 5016 * 752) / 1e6)
    assert "VDDQ_VDD2_1V8AO left out: fed by VIN_SYS_5V0" in r.total_method
    assert "1-0041" in s.describe()


def test_jetson_total_rail_must_exist(device):
    with pytest.raises(SensorConfigError, match="VDD_IN"):
        make("jetson-ina3221", device("jetson-agx-orin"), total_rail="VDD_IN").open()


def test_no_ina3221_says_so(device):
    with pytest.raises(SensorUnavailable, match="Nano 2GB has none"):
        make("jetson-ina3221", device("rpi4")).open()


def test_rapl_counters_and_total_domains(device):
    r = make("rapl", device("x86")).read()
    assert r.total_watts is None  # energy only
    assert r.counters["package-0"].value == 73405829152
    assert r.counters["package-0"].wrap == 262143328850
    assert r.counters["package-0/dram"].wrap == 65712999613
    assert [k for k, c in r.counters.items() if c.in_total] == ["package-0", "package-0/dram"]


def test_rapl_with_psys_counts_psys_only(device):
    d = device("x86")
    d.write("sys/class/powercap/intel-rapl:1/name", "psys")
    d.write("sys/class/powercap/intel-rapl:1/energy_uj", 5)
    d.write("sys/class/powercap/intel-rapl:1/max_energy_range_uj", 262143328850)
    r = make("rapl", d).read()
    assert [k for k, c in r.counters.items() if c.in_total] == ["psys"]


def test_rapl_missing_is_unavailable(device):
    with pytest.raises(SensorUnavailable, match="no RAPL domains"):
        make("rapl", device("rpi5")).open()


def test_rapl_unreadable_without_root_says_why(device, tmp_path):
    d = device("x86")
    energy = d.root / "sys/class/powercap/intel-rapl:0/energy_uj"
    energy.chmod(0o400)
    if os.geteuid() != 0:
        with pytest.raises(SensorUnavailable, match="readable only by root"):
            make("rapl", d).open()
        return
    # As root, read it as an unprivileged user from a tree that user can traverse.
    shared = Path(tempfile.mkdtemp(prefix="hilfarm-rapl-"))
    try:
        shared.chmod(0o755)
        tree = shared / "x86"
        shutil.copytree(d.root, tree, symlinks=True)
        for dirpath, dirnames, _ in os.walk(shared):
            os.chmod(dirpath, 0o755)
        (tree / "sys/class/powercap/intel-rapl:0/energy_uj").chmod(0o400)
        # Import as root (the virtualenv may live under /root), then drop to nobody to read.
        code = ("import os\nfrom hilfarm.agent.sensors import create_sensor, sensor_kinds, SensorUnavailable\n"
                "sensor_kinds()\nos.setgid(65534); os.setuid(65534)\n"
                f"s = create_sensor('rapl', root={str(tree)!r})\n"
                "try:\n    s.open()\nexcept SensorUnavailable as e:\n    print(e.reason)\n")
        out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=60, cwd="/")
        assert "permission denied" in out.stdout, out.stderr
        assert "readable only by root" in out.stdout
    finally:
        shutil.rmtree(shared)


@pytest.mark.parametrize("name,options", [
    ("android", {}),
    ("android-vendor-ma", {"current_unit": "mA", "discharge_sign": "positive"}),
    ("android-vendor-positive", {"discharge_sign": "positive"}),
])
def test_android_battery_calibrated_per_vendor(device, name, options):
    r = make("android-battery", device(name), **options).read()
    assert r.total_watts == pytest.approx(0.412 * 3.987)
    assert r.notes == []


def test_android_wrong_sign_and_charging_are_flagged(device):
    d = device("android-vendor-positive")
    r = make("android-battery", d).read()  # profile forgot discharge_sign: positive
    assert r.total_watts == pytest.approx(-0.412 * 3.987)
    assert "discharge_sign" in r.notes[0]
    d.write("sys/class/power_supply/battery/status", "Charging")
    r = make("android-battery", d, discharge_sign="positive").read()
    assert "battery status is Charging" in r.notes[0]


def test_android_bad_calibration_option_is_a_config_error(device):
    with pytest.raises(SensorConfigError, match="current_unit"):
        make("android-battery", device("android"), current_unit="A").open()


def test_rpi5_pmic_pairs_current_and_voltage_by_rail(device):
    r = make("rpi5-pmic", device("rpi5")).read()
    assert r.rails["VDD_CORE"] == pytest.approx(0.75012 * 0.861733)
    assert r.rails["HDMI"] == pytest.approx(0.0232212 * 5.14932)
    assert "EXT5V" not in r.rails and "BATT" not in r.rails
    assert len(r.rails) == 12
    assert r.total_watts == pytest.approx(sum(r.rails.values()))
    assert "under-reads" in r.notes[0] and "EXT5V" in r.notes[0]


def test_rpi5_pmic_unsuffixed_variant(device):
    d = device("rpi5")
    d.use_variant("vcgencmd_pmic_read_adc.nosuffix.txt", "vcgencmd_pmic_read_adc.txt")
    r = make("rpi5-pmic", d).read()
    assert r.rails == {"VDD_CORE": pytest.approx(0.75012 * 0.861733), "3V3_SYS": pytest.approx(0.0512322 * 3.31108)}
    assert r.notes  # EXT5V volt-only


def test_rpi4_has_no_pmic(device):
    with pytest.raises(SensorUnavailable, match="only a Raspberry Pi 5"):
        make("rpi5-pmic", device("rpi4")).open()


def test_tegrastats_l4t32_uses_the_current_value_not_the_running_average(device):
    r = make("tegrastats-power", device("jetson-nano")).read()
    assert r.rails == {"POM_5V_IN": 4.79, "POM_5V_GPU": 0.04, "POM_5V_CPU": 2.131}
    assert r.total_watts == 4.79


@pytest.mark.parametrize("variant", [None, "tegrastats.l4t32-style.txt"])
def test_tegrastats_jetpack6_units_and_l4t32_style(device, variant):
    d = device("jetson-orin-nano")
    if variant:
        d.use_variant(variant, "tegrastats.txt")
    r = make("tegrastats-power", d).read()
    assert r.rails == {"VDD_IN": 4.831, "VDD_CPU_GPU_CV": 0.611, "VDD_SOC": 1.441}
    assert r.total_method == "rail VDD_IN"


def test_tegrastats_agx_orin_sum_leaves_out_downstream_rail(device):
    r = make("tegrastats-power", device("jetson-agx-orin")).read()
    assert r.total_watts == pytest.approx(3.205 + 1.081 + 3.772)


def test_nvml_prefers_the_energy_counter(device):
    d = device("nvidia-gpu")
    s = make("nvml-power", d, nvml=RecordedNvml(d.root / "nvml.json"))
    r = s.read()
    assert r.counters["gpu0"].value == 8461375204 and r.counters["gpu0"].unit_joules == 1e-3
    assert r.total_watts == 69.843
    assert r.total_method == "NVML total energy counter"
    assert s.describe() == "nvml gpu0 NVIDIA H100 80GB HBM3"


def test_nvml_without_energy_counter_falls_back_to_power(device):
    d = device("nvidia-gpu")
    doc = json.loads((d.root / "nvml.json").read_text())
    doc["devices"][0]["not_supported"] = ["nvmlDeviceGetTotalEnergyConsumption"]
    (d.root / "nvml.json").write_text(json.dumps(doc))
    r = make("nvml-power", d, recorded=str(d.root / "nvml.json")).read()
    assert r.counters == {} and r.total_watts == 69.843
    assert "Not Supported" in r.notes[0]


def test_nvml_without_driver_is_unavailable(device):
    d = device("nvidia-gpu")
    (d.root / "nvml.json").write_text(json.dumps({"init_error": 9, "devices": []}))
    with pytest.raises(SensorUnavailable, match="Driver Not Loaded"):
        make("nvml-power", d, recorded=str(d.root / "nvml.json")).open()


def test_unknown_kind_and_option_are_config_errors():
    with pytest.raises(SensorConfigError, match="unknown sensor kind 'ina'.*hwmon-power"):
        create_sensor("ina")
    with pytest.raises(SensorConfigError, match="has no option.*rial"):
        create_sensor("hwmon-power", {"rial": "x"})
