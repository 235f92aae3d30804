"""The sampler fed a scripted sequence of readings: fixture files are rewritten between samples
and a fake clock sets the time of each, so every derived figure can be checked exactly."""

from __future__ import annotations

import time

import pytest

from hilfarm.agent.sensors import RecordedRunner, SIMULATED_MARKER, create_sensor
from hilfarm.agent.telemetry import Sampler

RAPL = "sys/class/powercap/intel-rapl:0/energy_uj"
DRAM = "sys/class/powercap/intel-rapl:0:2/energy_uj"
RANGE = 262143328850
INA = "sys/class/hwmon/hwmon2/power1_input"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def sensors(dev, *kinds):
    return [create_sensor(k, o, root=dev.root, runner=RecordedRunner(dev.cmds)) for k, o in kinds]


def test_energy_per_inference_from_a_rapl_counter_that_wraps_once(device):
    d = device("x86")
    clock = Clock()
    s = Sampler(sensors(d, ("rapl", {})), clock=clock)
    d.write(RAPL, 1_000_000_000)
    d.write(DRAM, 0)
    s.start(background=False)                  # t=0, idle
    clock.t += 2.0
    d.write(RAPL, 1_010_000_000)               # 10 J over 2 s idle
    d.write(DRAM, 1_000_000)
    s.mark("loading")                          # t=2
    clock.t += 1.0
    d.write(RAPL, RANGE - 5_000_000)
    s.mark("measuring")                        # t=3
    clock.t += 1.0
    d.write(RAPL, 15_000_000)                  # wrapped: +20 J
    s.sample_now()
    clock.t += 1.0
    d.write(RAPL, 35_000_000)                  # +20 J
    d.write(DRAM, 3_000_000)                   # DRAM +2 J over the timed phase
    s.mark("reporting")                        # t=5 closes the timed phase
    clock.t += 0.5
    s.stop()
    summary = s.summary(inferences=80)
    p = summary.power
    assert p.energy_method == "energy counter"
    assert p.energy_joules == pytest.approx(42.0, abs=1e-9)
    assert p.energy_per_inference_joules == pytest.approx(42.0 / 80, abs=1e-12)
    assert p.active_watts == pytest.approx(21.0, abs=1e-9)
    assert p.idle_watts == pytest.approx(5.5, abs=1e-9)  # (10 J + 1 J DRAM) / 2 s
    rails = {r.rail: r.mean_watts for r in p.rails}
    assert rails["package-0"] == pytest.approx(20.0) and rails["package-0/dram"] == pytest.approx(1.0)
    assert p.sensor == "rapl /sys/class/powercap"
    assert "power.energy_per_inference_joules" not in summary.unavailable
    assert summary.simulated is False and p.simulated is False


def test_integrated_power_idle_load_and_a_bad_reading(device):
    d = device("ina226")
    clock = Clock()
    s = Sampler(sensors(d, ("hwmon-power", {})), clock=clock)
    d.write(INA, 2_000_000)
    s.start(background=False)                  # t=0: 2 W
    clock.t += 1.0
    s.mark("measuring")                        # t=1: 2 W (idle closes at 2 W)
    clock.t += 1.0
    d.write(INA, 6_000_000)
    s.sample_now()                             # t=2: 6 W
    clock.t += 0.5
    d.write(INA, "garbage")
    s.sample_now()                             # t=2.5: no reading
    clock.t += 0.5
    d.write(INA, 6_000_000)
    s.sample_now()                             # t=3: 6 W
    clock.t += 1.0
    s.stop()                                   # t=4: 6 W
    summary = s.summary(inferences=10)
    p = summary.power
    assert p.energy_method == "integrated power"
    # trapezoids over the timed phase: (2+6)/2*1 + (6+6)/2*1 + (6+6)/2*1 = 16 J over 3 s
    assert p.energy_joules == pytest.approx(16.0)
    assert p.active_watts == pytest.approx(16.0 / 3)
    assert p.energy_per_inference_joules == pytest.approx(1.6)
    assert p.idle_watts == pytest.approx(2.0)
    assert any("1 reading(s) failed" in w and "not an integer" in w for w in summary.warnings)
    assert p.sample_rate_hz == pytest.approx(4 / 4.0)  # 5 good readings over 4 s


def test_missing_sensor_file_midrun_and_no_inference_count(device):
    d = device("ina226")
    clock = Clock()
    s = Sampler(sensors(d, ("hwmon-power", {})), clock=clock)
    s.start(background=False)
    clock.t += 1
    s.mark("measuring")
    d.remove(INA)
    clock.t += 1
    s.sample_now()
    clock.t += 1
    s.stop()
    summary = s.summary()
    # One reading in the timed phase is a power figure, but no energy.
    assert summary.power.active_watts == 4.65 and summary.power.energy_joules is None
    assert summary.unavailable["power.energy_per_inference_joules"] == \
        "fewer than two power readings during the timed runs"
    assert any("power1_input does not exist" in w for w in summary.warnings)


def test_throttling_fraction_reasons_and_zone_figures(device):
    d = device("coral")
    clock = Clock()
    s = Sampler(sensors(d, ("thermal-zones", {"zones": ["cpu-thermal"]}), ("cpufreq", {})), clock=clock)
    zone = "sys/class/thermal/thermal_zone0/temp"
    d.write(zone, 45000)
    s.start(background=False)
    clock.t += 1
    d.write(zone, 60000)
    s.mark("measuring")                        # t=1, 60 °C
    clock.t += 2
    d.write(zone, 86000)                       # at the 85 °C passive trip
    d.write("sys/class/thermal/cooling_device0/cur_state", 1)
    for c in range(4):
        d.write(f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_max_freq", 1200000)
        d.write(f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq", 1200000)
    s.sample_now()                             # t=3, throttled
    clock.t += 1
    d.write(zone, 80000)
    d.write("sys/class/thermal/cooling_device0/cur_state", 0)
    for c in range(4):
        d.write(f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_max_freq", 1500000)
        d.write(f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq", 1500000)
    s.sample_now()                             # t=4, recovered
    clock.t += 1
    s.mark("done")                             # t=5 closes
    s.stop()
    t = s.summary(inferences=5).thermal
    assert t.throttled is True
    assert t.throttled_fraction == pytest.approx(1.0 / 4.0)  # held from t=3 to t=4 of 1..5
    assert t.throttle_reasons == [
        "cpu-thermal at 86 °C, at or above its passive trip point 85 °C",
        "cooling device cooling_device0 (thermal-cpufreq-0) active (state 1/3)",
        "cpu0-3 allowed maximum lowered from 1500 MHz to 1200 MHz",
    ]
    z = t.zones[0]
    assert (z.zone, z.start_celsius, z.max_celsius, z.end_celsius) == ("cpu-thermal", 60.0, 86.0, 80.0)
    cpu0 = next(c for c in t.clocks if c.domain == "cpu0-3")  # one cpufreq policy for the cluster
    assert (cpu0.min_hz, cpu0.max_hz, cpu0.allowed_max_hz) == (1.2e9, 1.5e9, 1.5e9)


def test_device_reported_events_and_info_reach_the_summary(device):
    d = device("rpi5")
    d.use_variant("vcgencmd_get_throttled.occurred.txt", "vcgencmd_get_throttled.txt")
    s = Sampler(sensors(d, ("vcgencmd", {}), ("cpufreq", {})), clock=Clock())
    s.start(background=False)
    s.mark("measuring")
    s.stop()
    summary = s.summary()
    assert "soft temperature limit has occurred since boot" in summary.warnings
    assert summary.info["governor"] == "ondemand" and summary.info["get_throttled"] == "0x80000"
    assert summary.thermal.throttled is False and summary.thermal.throttled_fraction == 0.0


def test_absent_sensors_are_named_with_reasons(device):
    d = device("rpi4")
    s = Sampler(sensors(d, ("rpi5-pmic", {}), ("coral-apex", {})), clock=Clock())
    s.start(background=False)
    s.mark("measuring")
    s.stop()
    summary = s.summary(inferences=3)
    assert summary.power is None and summary.thermal is None
    assert "only a Raspberry Pi 5" in summary.unavailable["power"]
    assert "no readable temperature" in summary.unavailable["thermal"]


def test_no_measuring_mark_summarises_the_whole_run(device):
    s = Sampler(sensors(device("ina226"), ("hwmon-power", {})), clock=Clock())
    s.start(background=False)
    s.stop()
    summary = s.summary()
    assert summary.warnings[0] == "no 'measuring' phase was marked: the summary covers the whole run"


def test_drain_timeline_and_downsampling(device):
    d = device("jetson-agx-orin")
    clock = Clock()
    s = Sampler(sensors(d, ("jetson-ina3221", {}), ("thermal-zones", {})), clock=clock, max_timeline_points=200)
    s.start(background=False)
    first = s.drain()
    assert {p.quantity for p in first} == {"power_watts", "temperature_celsius", "throttled"}
    assert all(p.t == 0.0 for p in first)
    assert s.drain() == []
    s.mark("measuring")
    for _ in range(30):
        clock.t += 0.1
        s.sample_now()
    s.stop()
    later = s.drain()
    per_reading = len(first)
    assert len(later) == 32 * per_reading
    tl = s.timeline()
    assert len(tl) <= 200
    times = sorted({p.t for p in tl})
    assert times[0] == 0.0 and times[-1] == pytest.approx(3.0)
    assert s.timeline(max_points=10000) == first + later
    total = next(p for p in first if p.quantity == "power_watts" and p.channel == "total")
    assert total.value == pytest.approx(8.05888) and total.sensor.startswith("jetson-ina3221")


def test_simulated_tree_flags_every_value(device):
    d = device("ina226")
    (d.root / SIMULATED_MARKER).write_text("simulated\n")
    s = Sampler(sensors(d, ("hwmon-power", {})), clock=Clock())
    s.start(background=False)
    s.mark("measuring")
    s.stop()
    summary = s.summary()
    assert summary.simulated and summary.power.simulated
    assert all(p.simulated for p in summary.timeline)


def test_background_thread_samples_at_its_rate_and_slow_sensors_less_often(device):
    d = device("jetson-nano")
    s = Sampler(sensors(d, ("jetson-ina3221", {}), ("jetson-mode", {})), rate_hz=50)
    s.start()
    time.sleep(0.5)
    s.mark("measuring")
    time.sleep(0.3)
    s.stop()
    pts = s.timeline(max_points=100000)
    power_times = {p.t for p in pts if p.quantity == "power_watts"}
    assert 20 <= len(power_times) <= 50  # ~40 at 50 Hz over 0.8 s, plus the marks
    # jetson-mode allows 0.2 Hz: read only at start, at the mark and at stop.
    assert s.summary().info["nvpmodel"] == "MAXN (mode 0)"
    assert s.rate_hz == 50


def test_rate_is_capped_at_100_hz():
    assert Sampler([], rate_hz=1000).rate_hz == 100.0
    with pytest.raises(ValueError):
        Sampler([], rate_hz=0)


def test_a_counter_that_did_not_move_is_no_figure_not_zero(device):
    d = device("x86")
    clock = Clock()
    s = Sampler(sensors(d, ("rapl", {})), clock=clock)
    s.start(background=False)
    clock.t += 1
    s.mark("measuring")
    clock.t += 0.02  # shorter than the counter's update interval: it reads the same
    s.stop()
    summary = s.summary(inferences=3)
    assert summary.power.active_watts is None and summary.power.energy_per_inference_joules is None
    assert "did not advance during the timed runs (0.020 s)" in summary.unavailable["power.active_watts"]
    assert "did not advance during the idle baseline" in summary.unavailable["power.idle_watts"]
