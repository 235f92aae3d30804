"""Was the device quiet while the job measured? Other processes' CPU use, read from /proc.

A benchmark shares its device with whatever else runs there: a neighbour that takes a core
for a second shifts one repeat's median and, without a record of it, looks like the model's
own change. The agent takes a snapshot of every process's CPU time (utime + stime of
/proc/PID/stat) before the first repeat and after the last, and reports the CPU used meanwhile
by everything except the benchmark children and the agent itself, the busiest processes by
name, and the 1-minute load average at both ends. Past ``NOT_QUIET_CORES`` of other use the
result carries a warning.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Set, Tuple, Union

from hilfarm.agent.results import BusyProcess, DeviceActivity

NOT_QUIET_CORES = 0.25   # other processes together used more than a quarter of a core
REPORT_MIN_CORES = 0.02  # processes below this are not listed
MAX_LISTED = 5


def _cpu_times(proc: Path) -> Dict[int, Tuple[str, float, int]]:
    """pid -> (name, CPU seconds, start ticks) for every readable process."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: Dict[int, Tuple[str, float, int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        head, _, rest = text.rpartition(")")
        name = head.partition("(")[2]
        fields = rest.split()
        try:
            out[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / tick, int(fields[19]))
        except (IndexError, ValueError):
            continue
    return out


def _load_average(proc: Path) -> Optional[float]:
    try:
        return float((proc / "loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class ActivityMeter:
    """``start()`` before the first repeat, ``exclude(pid)`` for each benchmark child,
    ``finish()`` after the last repeat."""

    def __init__(self, proc: Union[str, Path] = "/proc", exclude: Iterable[int] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.proc = Path(proc)
        self.clock = clock
        self._excluded: Set[int] = {os.getpid(), *exclude}
        self._start: Optional[Dict[int, Tuple[str, float, int]]] = None
        self._t0 = 0.0
        self._load0: Optional[float] = None

    @property
    def available(self) -> bool:
        return (self.proc / "self" / "stat").exists()

    def exclude(self, pid: Optional[int]) -> None:
        if pid is not None:
            self._excluded.add(pid)

    def start(self) -> None:
        if not self.available:
            return
        self._t0 = self.clock()
        self._start = _cpu_times(self.proc)
        self._load0 = _load_average(self.proc)

    def finish(self) -> Optional[DeviceActivity]:
        """The activity since ``start``; None where /proc cannot be read."""
        if self._start is None:
            return None
        wall = self.clock() - self._t0
        end = _cpu_times(self.proc)
        used: Dict[int, Tuple[str, float]] = {}
        for pid, (name, cpu, ticks) in end.items():
            if pid in self._excluded:
                continue
            before = self._start.get(pid)
            # A process that started meanwhile (or a reused pid) counts from zero.
            spent = cpu - before[1] if before is not None and before[2] == ticks else cpu
            if spent > 0:
                used[pid] = (name, spent)
        other = sum(spent for _, spent in used.values()) / wall if wall > 0 else 0.0
        busiest = sorted(used.items(), key=lambda kv: kv[1][1], reverse=True)
        listed = [BusyProcess(pid, name, spent / wall) for pid, (name, spent) in busiest[:MAX_LISTED]
                  if wall > 0 and spent / wall >= REPORT_MIN_CORES]
        return DeviceActivity(
            load_average_start=self._load0,
            load_average_end=_load_average(self.proc),
            other_cpu_cores=other,
            busy=listed,
            quiet=other <= NOT_QUIET_CORES,
            source=f"{self.proc}/*/stat CPU time of every other process over {wall:.1f} s, {self.proc}/loadavg",
        )


def activity_warning(activity: DeviceActivity) -> Optional[str]:
    if activity.quiet:
        return None
    top = ", ".join(f"{b.name} (pid {b.pid}) {b.cpu_cores:.2f}" for b in activity.busy) or "many small processes"
    return (f"the device was not quiet: other processes used {activity.other_cpu_cores:.2f} cores while the job "
            f"measured (busiest: {top}); the figures may include their interference")
