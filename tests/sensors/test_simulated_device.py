"""The simulated device: its model drives a sysfs tree that the real sensors read, flagged simulated."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hilfarm.agent.sensors import create_sensor
from hilfarm.agent.sensors.simulated import SIMULATED_SENSORS, LoadMeter, SimulatedDevice, SimulatedModel
from hilfarm.agent.telemetry import Sampler


def sim_sensors(root):
    return [create_sensor(o["kind"], {k: v for k, v in o.items() if k != "kind"}, root=root)
            for o in SIMULATED_SENSORS.values()]


def test_heating_under_load_throttles_and_real_sensors_see_it(tmp_path):
    dev = SimulatedDevice(tmp_path, SimulatedModel(time_constant_s=5.0))
    zones, cpufreq, rapl, power = sim_sensors(tmp_path)
    idle = power.read().total_watts
    assert idle == pytest.approx(2.5) and power.simulated and zones.simulated
    for _ in range(40):
        dev.step(1.0, load=1.0)
    r = zones.read()
    assert r.temperatures["cpu-thermal"] >= 70.0 - 3.0
    assert dev.state > 0
    clocks = cpufreq.read().clocks
    assert clocks["cpu0"].allowed_max_hz < 1.8e9 and clocks["cpu0"].hz == clocks["cpu0"].allowed_max_hz
    assert power.read().total_watts > idle
    # energy counter: 40 s of power (µJ, rounded down)
    assert rapl.read().counters["package-0"].value == int(dev.energy_uj)
    for _ in range(120):
        dev.step(1.0, load=0.0)
    assert dev.state == 0 and zones.read().throttled is False
    assert cpufreq.read().clocks["cpu0"].hz == 600e6  # idle clock


def test_sampler_over_the_simulated_tree_marks_everything_simulated(tmp_path):
    dev = SimulatedDevice(tmp_path, SimulatedModel(time_constant_s=2.0))
    s = Sampler(sim_sensors(tmp_path), clock=lambda: clock[0])
    clock = [0.0]
    s.start(background=False)
    clock[0] += 1
    s.mark("measuring")
    for _ in range(20):
        dev.step(1.0, load=1.0)
        clock[0] += 1
        s.sample_now()
    s.stop()
    summary = s.summary(inferences=100)
    assert summary.simulated and summary.power.simulated and summary.thermal.simulated
    assert summary.power.energy_method == "energy counter"  # the RAPL-like counter is preferred
    assert summary.thermal.throttled is True and 0 < summary.thermal.throttled_fraction < 1
    assert all(p.simulated for p in summary.timeline)


def test_load_meter_follows_a_real_busy_process():
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<5: pass"])
    try:
        meter = LoadMeter(pid=child.pid, cores=1)
        meter.read()
        time.sleep(0.6)
        busy = meter.read()
    finally:
        child.kill()
        child.wait()
    assert busy > 0.25  # a spinning process, even on a loaded 2-core machine
    idle = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(5)"],
                            stdout=subprocess.PIPE)
    try:
        assert idle.stdout.readline() == b"ready\n"  # done starting up: from now on it only sleeps
        meter = LoadMeter(pid=idle.pid, cores=1)
        meter.read()
        time.sleep(0.4)
        assert meter.read() < 0.2
    finally:
        idle.kill()
        idle.wait()
    whole = LoadMeter()
    whole.read()
    time.sleep(0.1)
    assert 0.0 <= whole.read() <= 1.0


SPIN = "import time\nt=time.time()\nwhile time.time()-t<8: pass"


def test_the_load_of_a_process_tree_is_its_demand_however_crowded_the_machine():
    """A spinning benchmark is full load for the simulated device even when the host lends it
    a fraction of a core: the device it stands for would be its own. Crowd every core of this
    machine twice over, then read a process whose spinning child does the work."""
    crowd = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(2 * (os.cpu_count() or 1))]
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {SPIN!r}])"])
    try:
        time.sleep(0.5)  # the child has started
        meter = LoadMeter(pid=parent.pid, of_cores=1)
        meter.read()
        time.sleep(1.0)
        demand = meter.read()
        before, t0 = ran_seconds(crowd[0].pid), time.monotonic()
        time.sleep(1.0)
        got = (ran_seconds(crowd[0].pid) - before) / (time.monotonic() - t0)
    finally:
        for p in crowd + [parent]:
            p.kill()
            p.wait()
    assert demand >= 0.9, demand
    assert got < 0.8, got  # the machine really was crowded: no spinner had a core to itself


def ran_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_thread_follows_the_load_of_a_process(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<5: pass"])
    try:
        dev = SimulatedDevice(tmp_path, SimulatedModel(time_constant_s=1.0), load=LoadMeter(pid=child.pid, cores=1),
                              rate_hz=20, time_scale=10.0)
        start_temp = dev.temp_c
        with dev:
            time.sleep(0.8)
    finally:
        child.kill()
        child.wait()
    assert dev.load > 0.25 and dev.temp_c > start_temp + 5
