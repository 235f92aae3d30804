"""A simulated device for demos and end-to-end tests: a thermal and power model driven by the
real CPU load of a process tree (the agent's benchmark child: see :meth:`SimulatedDevice.follow`)
or of the whole machine, written as a sysfs tree that the real sensor code reads. Following
the job's own processes keeps the model's heat independent of whatever else the machine runs.

The tree has a thermal zone with trip points, a cpufreq cooling device, per-CPU cpufreq files
whose clock drops when the zone is hot, an INA226-like hwmon power monitor and a RAPL-like
energy counter. Its root holds the marker file ``.hilfarm-simulated``, so every reading taken
from it is flagged simulated by the sensors themselves.

Model (per step of dt seconds): power P = idle + (max - idle) × load × f/fmax;
temperature T moves towards ambient + P × R with time constant tau; at or above the passive
trip the cooling state rises one step per update (each step lowers the allowed clock), and it
falls again once T is ``hysteresis_c`` below the trip.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from hilfarm.agent.sensors import SIMULATED_MARKER

SIMULATED_SENSORS: Dict[str, Dict[str, object]] = {
    # What a profile's sensors: section names to read a simulated tree. The first power sensor
    # is the one the summary uses: the energy counter, differenced across the timed runs.
    "zones": {"kind": "thermal-zones"},
    "cpu_clocks": {"kind": "cpufreq"},
    "energy": {"kind": "rapl"},
    "board_power": {"kind": "hwmon-power", "chip": "ina226"},
}


@dataclass
class SimulatedModel:
    cpus: int = 4
    ambient_c: float = 25.0
    idle_watts: float = 2.5
    max_watts: float = 9.0
    thermal_resistance_c_per_w: float = 7.0
    time_constant_s: float = 20.0
    passive_trip_c: float = 70.0
    critical_c: float = 90.0
    hysteresis_c: float = 3.0
    max_khz: int = 1800000
    min_khz: int = 600000
    cooling_states: int = 4
    supply_mv: int = 5100
    energy_range_uj: int = 262143328850
    # 0: load as a fraction of all the machine's cores. N > 0: as a fraction of N cores (at
    # most 1), so one busy core heats the model alike on a laptop and a 64-core host.
    load_cores: int = 0


class LoadMeter:
    """CPU load as a fraction of all cores: of one process and its descendants, or of the whole
    machine (/proc/stat).

    For a process tree the load is its *demand*: the time its threads ran plus the time they
    waited, runnable, for a CPU (/proc/PID/task/*/schedstat), so a benchmark that would keep a
    core busy counts as full load even while a busy host lends it only part of one. A simulated
    device stands for a device of its own; how crowded the machine that simulates it is must
    not change its heat. Where schedstat is missing, the time the tree ran (utime + stime of
    /proc/PID/stat) stands in."""

    def __init__(self, pid: Optional[int] = None, cores: Optional[int] = None, proc: Union[str, Path] = "/proc",
                 of_cores: int = 0) -> None:
        self.pid = pid
        self.proc = Path(proc)
        self.cores = cores or os.cpu_count() or 1
        # Whole-machine load relative to this many cores (0: all of them).
        self.of_cores = of_cores
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last: Optional[Tuple[float, float]] = None

    def _process_seconds(self, pid: int) -> float:
        demand = 0
        try:
            for task in (self.proc / str(pid) / "task").iterdir():
                try:
                    ran, waited = (task / "schedstat").read_text().split()[:2]
                    demand += int(ran) + int(waited)
                except (OSError, ValueError):
                    continue
        except OSError:
            pass
        if demand:
            return demand / 1e9
        text = (self.proc / str(pid) / "stat").read_text()  # raises when the process is gone
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = text.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime, stime

    def _children(self, pid: int) -> List[int]:
        out: List[int] = []
        try:
            tasks = list((self.proc / str(pid) / "task").iterdir())
        except OSError:
            return out
        for task in tasks:
            try:
                out.extend(int(c) for c in (task / "children").read_text().split())
            except (OSError, ValueError):
                continue
        return out

    def _sample(self) -> Tuple[float, float]:
        if self.pid is not None:
            busy = self._process_seconds(self.pid)  # raises when the process is gone
            todo, seen = self._children(self.pid), {self.pid}
            while todo:
                pid = todo.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                try:
                    busy += self._process_seconds(pid)
                except (OSError, IndexError, ValueError):
                    continue
                todo.extend(self._children(pid))
            return busy, time.monotonic() * self.cores
        first = (self.proc / "stat").read_text().splitlines()[0].split()[1:]
        vals = [int(v) for v in first]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        total = sum(vals[:8])
        return (total - idle) / self._tick, total / self._tick

    def read(self) -> float:
        """Load since the previous call, 0..1 (0 on the first call or if the process is gone)."""
        try:
            now = self._sample()
        except (OSError, IndexError, ValueError):
            return 0.0
        last, self._last = self._last, now
        if last is None or now[1] <= last[1]:
            return 0.0
        frac = (now[0] - last[0]) / (now[1] - last[1])
        if self.of_cores > 0:
            frac *= self.cores / self.of_cores
        return max(0.0, min(1.0, frac))


class IdleLoad:
    """The load of a simulated device with no job running: none."""

    def read(self) -> float:
        return 0.0


class SimulatedDevice:
    """Writes and updates the simulated tree below ``root``. Use :meth:`step` for a
    deterministic advance, or :meth:`start` for a thread that follows the real load."""

    def __init__(self, root: Union[str, Path], model: Optional[SimulatedModel] = None,
                 load: Optional[Union[LoadMeter, IdleLoad]] = None, rate_hz: float = 10.0, time_scale: float = 1.0) -> None:
        self.root = Path(root)
        self.model = model or SimulatedModel()
        self.load_meter = load or LoadMeter(of_cores=self.model.load_cores)
        self.rate_hz = rate_hz
        self.time_scale = time_scale
        self.temp_c = self.model.ambient_c + self.model.idle_watts * self.model.thermal_resistance_c_per_w
        self.state = 0
        self.load = 0.0
        self.watts = self.model.idle_watts
        self.energy_uj = 0.0
        self.cur_khz = self.model.min_khz
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._write_static()
        self._write_dynamic()

    # -------------------------------------------------------------- files

    def _w(self, rel: str, value: object) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(f"{value}\n")
        os.replace(tmp, p)  # a reader never sees a half-written value

    def _write_static(self) -> None:
        m = self.model
        (self.root).mkdir(parents=True, exist_ok=True)
        (self.root / SIMULATED_MARKER).write_text(
            "This tree is written by hilfarm's simulated device: every value in it comes from a model.\n")
        z = "sys/class/thermal/thermal_zone0"
        self._w(f"{z}/type", "cpu-thermal")
        self._w(f"{z}/trip_point_0_temp", int(m.passive_trip_c * 1000))
        self._w(f"{z}/trip_point_0_type", "passive")
        self._w(f"{z}/trip_point_1_temp", int(m.critical_c * 1000))
        self._w(f"{z}/trip_point_1_type", "critical")
        cd = "sys/class/thermal/cooling_device0"
        self._w(f"{cd}/type", "thermal-cpufreq-0")
        self._w(f"{cd}/max_state", m.cooling_states)
        for c in range(m.cpus):
            d = f"sys/devices/system/cpu/cpu{c}/cpufreq"
            self._w(f"{d}/cpuinfo_max_freq", m.max_khz)
            self._w(f"{d}/cpuinfo_min_freq", m.min_khz)
            self._w(f"{d}/scaling_min_freq", m.min_khz)
            self._w(f"{d}/scaling_governor", "schedutil")
        h = "sys/class/hwmon/hwmon0"
        self._w(f"{h}/name", "ina226")
        self._w(f"{h}/shunt_resistor", 10000)
        r = "sys/class/powercap/intel-rapl:0"
        self._w(f"{r}/name", "package-0")
        self._w(f"{r}/max_energy_range_uj", m.energy_range_uj)

    def follow(self, pid: Optional[int]) -> None:
        """Drive the model by the load of ``pid`` and its descendants; None: no job, no load."""
        if pid is None:
            self.load_meter = IdleLoad()
        else:
            meter = LoadMeter(pid=pid, of_cores=self.model.load_cores)
            meter.read()  # primes it: the next read covers the time since now
            self.load_meter = meter

    def allowed_khz(self) -> int:
        m = self.model
        return int(m.max_khz - self.state * (m.max_khz - m.min_khz) / m.cooling_states)

    def _write_dynamic(self) -> None:
        m = self.model
        self._w("sys/class/thermal/thermal_zone0/temp", int(round(self.temp_c * 1000)))
        self._w("sys/class/thermal/cooling_device0/cur_state", self.state)
        for c in range(m.cpus):
            d = f"sys/devices/system/cpu/cpu{c}/cpufreq"
            self._w(f"{d}/scaling_max_freq", self.allowed_khz())
            self._w(f"{d}/scaling_cur_freq", self.cur_khz)
        ma = self.watts * 1e6 / m.supply_mv  # mW / V -> mA
        self._w("sys/class/hwmon/hwmon0/in1_input", m.supply_mv)
        self._w("sys/class/hwmon/hwmon0/curr1_input", int(round(ma)))
        self._w("sys/class/hwmon/hwmon0/power1_input", int(round(self.watts * 1e6)))
        self._w("sys/class/powercap/intel-rapl:0/energy_uj", int(self.energy_uj) % m.energy_range_uj)

    # -------------------------------------------------------------- model

    def step(self, dt: float, load: Optional[float] = None) -> None:
        """Advance the model by ``dt`` simulated seconds at ``load`` (default: measured now)."""
        m = self.model
        self.load = self.load_meter.read() if load is None else max(0.0, min(1.0, load))
        allowed = self.allowed_khz()
        self.cur_khz = allowed if self.load > 0.05 else m.min_khz
        self.watts = m.idle_watts + (m.max_watts - m.idle_watts) * self.load * self.cur_khz / m.max_khz
        target = m.ambient_c + self.watts * m.thermal_resistance_c_per_w
        self.temp_c += (target - self.temp_c) * min(1.0, dt / m.time_constant_s)
        if self.temp_c >= m.passive_trip_c and self.state < m.cooling_states:
            self.state += 1
        elif self.temp_c < m.passive_trip_c - m.hysteresis_c and self.state > 0:
            self.state -= 1
        self.energy_uj += self.watts * dt * 1e6
        self._write_dynamic()

    def start(self) -> None:
        self.load_meter.read()  # the first call only primes the meter
        self._thread = threading.Thread(target=self._run, name="hilfarm-simulated-device", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        last = time.monotonic()
        while not self._stop.wait(period):
            now = time.monotonic()
            self.step((now - last) * self.time_scale)
            last = now

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "SimulatedDevice":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
