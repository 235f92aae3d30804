"""Sustained mode's windows from scripted samples and a scripted sampler (fixture trees rewritten
between readings, a fake clock), so every window figure can be checked exactly; and the wire
round trip of the windows."""

from __future__ import annotations

import pytest

from hilfarm.agent import wire
from hilfarm.v1 import farm_pb2
from hilfarm.agent.results import BenchmarkResult, JobSettings, Unavailable
from hilfarm.agent.sensors import RecordedRunner, create_sensor
from hilfarm.agent.telemetry.sustained import (
    SustainedSummary, SustainedWindow, attach_sustained, sustained_summary, window_edges, window_length,
)
from hilfarm.agent.telemetry import Sampler

INA = "sys/class/hwmon/hwmon2/power1_input"
ZONE = "sys/class/thermal/thermal_zone0/temp"
RAPL = "sys/class/powercap/intel-rapl:0/energy_uj"
MS = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def sensor(dev, kind, options=None):
    return create_sensor(kind, options or {}, root=dev.root, runner=RecordedRunner(dev.cmds))


def set_clocks(coral, khz: int) -> None:
    for c in range(4):
        coral.write(f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_max_freq", khz)
        coral.write(f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq", khz)


def test_windows_of_a_scripted_run_have_exact_figures(device):
    ina, coral = device("ina226"), device("coral")
    clock = Clock()
    s = Sampler([sensor(ina, "hwmon-power"), sensor(coral, "thermal-zones", {"zones": ["cpu-thermal"]}),
                 sensor(coral, "cpufreq")], clock=clock)
    set_clocks(coral, 1500000)
    ina.write(INA, 2_000_000)
    coral.write(ZONE, 45000)
    s.start(background=False)                      # t=0 idle
    # (t since start, watts, °C, throttled: cooling device on and clocks capped at 1.2 GHz)
    script = [(1.0, 2, 50, False), (1.5, 4, 60, False), (2.0, 4, 70, False), (2.5, 6, 86, True),
              (3.0, 6, 86, True), (3.5, 6, 80, False)]
    for t, watts, celsius, hot in script:
        clock.t = 100.0 + t
        ina.write(INA, watts * 1_000_000)
        coral.write(ZONE, celsius * 1000)
        coral.write("sys/class/thermal/cooling_device0/cur_state", 1 if hot else 0)
        set_clocks(coral, 1200000 if hot else 1500000)
        if t == 1.0:
            s.mark("measuring")                    # the timed phase starts at t=1
        else:
            s.sample_now()
    clock.t = 104.0
    s.mark("finished")
    s.stop()                                       # t=4: 6 W, 80 °C

    # Inferences end at 0.2 0.4 0.6 0.9 | 1.2 1.5 1.8 | 2.2 2.6 3.0 s of the timed phase.
    samples = [200 * MS] * 3 + [300 * MS] * 4 + [400 * MS] * 3
    out = sustained_summary(samples, 3.0, s, wall_seconds=3.0, window_seconds=1.0)

    assert out.duration_seconds == pytest.approx(3.0) and out.window_seconds == 1.0
    assert [(w.start_seconds, w.end_seconds, w.runs) for w in out.windows] == [
        (0.0, 1.0, 4), (1.0, 2.0, 3), (2.0, 3.0, 3)]
    w1, w2, w3 = out.windows
    assert (w1.p50_seconds, w1.p90_seconds) == (pytest.approx(0.2), pytest.approx(0.27))  # numpy linear
    assert (w2.p50_seconds, w3.p50_seconds, w3.p90_seconds) == (pytest.approx(0.3), pytest.approx(0.4),
                                                                 pytest.approx(0.4))
    # Power integrated across each window: (2+4)/2*0.5 + 4*0.5, then (4+6)/2*0.5 + 6*0.5, then 6.
    assert [w.mean_watts for w in out.windows] == [pytest.approx(3.5), pytest.approx(5.5), pytest.approx(6.0)]
    assert [w.max_celsius for w in out.windows] == [60.0, 86.0, 86.0]
    assert [w.min_clock_hz for w in out.windows] == [1.5e9, 1.2e9, 1.2e9]
    # Each verdict holds until the next reading: throttled 2.5..3.0 and 3.0..3.5.
    assert [w.throttled_fraction for w in out.windows] == [0.0, pytest.approx(0.5), pytest.approx(0.5)]
    assert out.latency_change_ratio == pytest.approx(2.0)
    assert out.temperature_rise_celsius == pytest.approx(26.0)
    assert out.throttled_after_seconds == pytest.approx(1.5)
    assert out.unavailable == {} and out.simulated is False


def test_inferences_are_stretched_to_the_wall_time_of_the_phase(device):
    ina = device("ina226")
    clock = Clock()
    s = Sampler([sensor(ina, "hwmon-power")], clock=clock)
    s.start(background=False)
    s.mark("measuring")
    clock.t += 4.0
    s.stop()
    # 2 s of inference over 4 s of wall time: the 1st..4th end at 1, 2, 3, 4 s of wall time.
    out = sustained_summary([500 * MS] * 4, 4.0, s, wall_seconds=4.0, window_seconds=2.0)
    assert [(w.start_seconds, w.end_seconds, w.runs) for w in out.windows] == [(0.0, 2.0, 2), (2.0, 4.0, 2)]
    assert out.duration_seconds == 4.0
    # No thermal sensor: every thermal figure is named with the reason, nothing invented.
    assert all(w.max_celsius is None and w.throttled_fraction is None for w in out.windows)
    assert out.unavailable["sustained.windows.max_celsius"] == "no thermal sensor is configured for this device"
    assert out.unavailable["sustained.throttled_after_seconds"] == "no thermal sensor is configured for this device"
    assert "sustained.temperature_rise_celsius" in out.unavailable
    assert out.windows[0].mean_watts == pytest.approx(4.65)  # the fixture's reading, held
    assert out.latency_change_ratio == pytest.approx(1.0)


def test_energy_counter_windows_and_a_counter_that_did_not_move(device):
    x86 = device("x86")
    clock = Clock()
    s = Sampler([sensor(x86, "rapl")], clock=clock)
    x86.write(RAPL, 0)
    x86.write("sys/class/powercap/intel-rapl:0:2/energy_uj", 0)
    s.start(background=False)
    s.mark("measuring")                            # t=0, 0 J
    for t, uj in ((0.5, 4_000_000), (1.5, 14_000_000), (2.0, 14_000_000), (3.0, 14_000_000)):
        clock.t = 100.0 + t
        x86.write(RAPL, uj)
        s.sample_now()
    s.stop()
    out = sustained_summary([1000 * MS] * 3, 3.0, s, wall_seconds=3.0, window_seconds=1.0)
    # Energy interpolated at the edges: 0 J at 0, 9 J at 1 s, 14 J at 2 s (and after).
    assert out.windows[0].mean_watts == pytest.approx(9.0)
    assert out.windows[1].mean_watts == pytest.approx(5.0)
    assert out.windows[2].mean_watts is None  # not zero watts: the counter stood still
    assert "did not advance during 2-3 s" in out.unavailable["sustained.windows.mean_watts"]


def test_window_edges_and_length():
    assert window_length(10) == 1.0 and window_length(600) == 10.0
    assert window_edges(3.2, 1.0) == [0.0, 1.0, 2.0, 3.2]   # a short tail joins the last window
    assert window_edges(3.6, 1.0) == [0.0, 1.0, 2.0, 3.0, 3.6]
    assert window_edges(0.4, 1.0) == [0.0, 0.4]
    assert window_edges(0.0, 1.0) == []


def test_a_run_of_one_window_and_no_sampler():
    out = sustained_summary([100 * MS] * 5, 1.0, None, wall_seconds=0.5)
    assert len(out.windows) == 1 and out.windows[0].runs == 5
    assert "single window" in out.unavailable["sustained.latency_change_ratio"]
    assert out.unavailable["sustained.windows.mean_watts"] == "no sensors were sampled during the job"


def test_sustained_windows_round_trip_the_wire():
    summary = SustainedSummary(
        requested_seconds=60.0, duration_seconds=60.01, window_seconds=1.0,
        windows=[SustainedWindow(0.0, 1.0, 120, 0.008, 0.009, 6.5, 55.0, 1.8e9, 0.0),
                 SustainedWindow(1.0, 2.0, 0, None, None, None, 71.5, None, 0.25)],
        latency_change_ratio=1.31, temperature_rise_celsius=16.5, throttled_after_seconds=None, simulated=True,
        unavailable={"sustained.windows.p50_seconds": "no inference ended in some windows"},
    )
    result = BenchmarkResult(unavailable=[Unavailable("latency.drift_ratio", "too few runs")])
    attach_sustained(result, summary)
    assert result.environment.simulated is True
    assert {u.field for u in result.unavailable} == {"latency.drift_ratio", "sustained.windows.p50_seconds"}
    pb = wire.result_to_pb(result)
    assert pb.sustained.windows[1].HasField("max_celsius") and not pb.sustained.windows[1].HasField("p50_seconds")
    assert not pb.sustained.HasField("throttled_after_seconds")
    assert (pb.sustained.requested_seconds, pb.sustained.duration_seconds, pb.sustained.window_seconds) == \
        (summary.requested_seconds, summary.duration_seconds, summary.window_seconds)
    assert [w.runs for w in pb.sustained.windows] == [w.runs for w in summary.windows]
    for w, want in zip(pb.sustained.windows, summary.windows):
        for name in ("p50_seconds", "p90_seconds", "mean_watts", "max_celsius", "min_clock_hz", "throttled_fraction"):
            assert (getattr(w, name) if w.HasField(name) else None) == getattr(want, name), name
    # A result without sustained mode has no sustained section.
    assert not wire.result_to_pb(BenchmarkResult()).HasField("sustained")


def test_sustained_seconds_are_read_from_the_settings():
    s = JobSettings(sustained_seconds=90.0, min_runs=5)
    assert wire.settings_from_pb(farm_pb2.JobSettings(sustained_seconds=90.0, min_runs=5)) == s
    assert JobSettings.from_dict(s.to_dict()) == s
