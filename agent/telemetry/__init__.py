"""The telemetry sampler: a thread in the agent, outside the measured child, that reads the
device's sensors at a fixed rate, and the summary it derives for a job.

Start it before the job to record an idle baseline, mark the job's phases as they happen
(``sampler.mark("loading")``, ``"warmup"``, ``"measuring"``, ...), stop it after the timed runs,
then ask for :meth:`Sampler.summary`. Marking a phase takes a reading at once, so every phase
starts and ends on a reading; energy over a phase is the difference of the device's energy
counters between those two readings (wraps handled), or, where the device has no counter, the
sampled power integrated over time (the summary names which).

Figures that could not be measured are left None and named in ``summary.unavailable`` with the
reason; every figure from a simulated sensor tree is flagged simulated.

The package's other modules: job.py (telemetry around one job, as a profile configures it),
sustained.py (the windows of a sustained run) and wire.py (the only one that knows protobuf).
"""

from __future__ import annotations

import bisect
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from hilfarm.agent.sensors import PowerReading, PowerSensor, Sensor, SensorUnavailable, ThermalReading

DEFAULT_RATE_HZ = 10.0
MAX_RATE_HZ = 100.0
MAX_TIMELINE_POINTS = 2000

# ---------------------------------------------------------------- results


@dataclass
class TelemetryPoint:
    t: float  # seconds since the sampler started
    sensor: str
    quantity: str  # power_watts, energy_joules, temperature_celsius, clock_hz, throttled
    channel: str
    value: float
    simulated: bool = False
    recorded: bool = False  # read from a recording (the profile's telemetry.recorded)


@dataclass
class RailSummary:
    rail: str
    mean_watts: float


@dataclass
class PowerSummary:
    idle_watts: Optional[float] = None
    active_watts: Optional[float] = None
    energy_per_inference_joules: Optional[float] = None
    energy_joules: Optional[float] = None  # over the timed phase (not on the wire)
    energy_method: str = ""  # "energy counter" or "integrated power"
    sensor: str = ""
    sample_rate_hz: Optional[float] = None  # None: fewer than two readings, no rate
    rails: List[RailSummary] = field(default_factory=list)
    simulated: bool = False
    recorded: bool = False


@dataclass
class ZoneSummary:
    zone: str
    start_celsius: float
    max_celsius: float
    end_celsius: float
    sensor: str = ""


@dataclass
class ClockSummary:
    domain: str
    min_hz: float
    max_hz: float
    allowed_max_hz: Optional[float] = None


@dataclass
class ThermalSummary:
    zones: List[ZoneSummary] = field(default_factory=list)
    clocks: List[ClockSummary] = field(default_factory=list)
    throttled: Optional[bool] = None
    throttled_fraction: Optional[float] = None
    throttle_reasons: List[str] = field(default_factory=list)
    cooldown_seconds: Optional[float] = None
    simulated: bool = False
    recorded: bool = False


@dataclass
class TelemetrySummary:
    power: Optional[PowerSummary] = None
    thermal: Optional[ThermalSummary] = None
    timeline: List[TelemetryPoint] = field(default_factory=list)
    unavailable: Dict[str, str] = field(default_factory=dict)  # field -> reason
    warnings: List[str] = field(default_factory=list)
    info: Dict[str, str] = field(default_factory=dict)  # governor, nvpmodel, jetson_clocks ...
    simulated: bool = False
    recorded: bool = False


@dataclass
class WindowReadings:
    """Sensor figures over one window of time (a sustained run's window)."""

    mean_watts: Optional[float] = None
    max_celsius: Optional[float] = None
    min_clock_hz: Optional[float] = None
    throttled_fraction: Optional[float] = None


@dataclass
class WindowedTelemetry:
    windows: List[WindowReadings] = field(default_factory=list)
    throttled_after_seconds: Optional[float] = None  # since the windows' start
    throttle_judged: bool = False  # some reading said whether the device throttled
    # Figure (mean_watts, max_celsius, min_clock_hz, throttled_fraction) -> why some window lacks it.
    unavailable: Dict[str, str] = field(default_factory=dict)
    simulated: bool = False


def _interpolate(series: Sequence[Tuple[float, float]], t: float) -> float:
    """Value at ``t`` of the piecewise-linear function through ``series`` (sorted, covering t)."""
    k = bisect.bisect_left([p[0] for p in series], t)
    if k < len(series) and series[k][0] == t:
        return series[k][1]
    (t0, v0), (t1, v1) = series[k - 1], series[k]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def _integral(series: Sequence[Tuple[float, float]], a: float, b: float) -> float:
    """Integral over [a, b] of the piecewise-linear function through ``series`` (covering it)."""
    pts = [(a, _interpolate(series, a))] + [p for p in series if a < p[0] < b] + [(b, _interpolate(series, b))]
    return sum((t1 - t0) * (v0 + v1) / 2.0 for (t0, v0), (t1, v1) in zip(pts, pts[1:]))


# ---------------------------------------------------------------- sampling


@dataclass
class _Snapshot:
    t: float  # seconds since start
    phase: str
    power: Dict[int, PowerReading] = field(default_factory=dict)  # sensor index -> reading
    energy: Dict[Tuple[int, str], float] = field(default_factory=dict)  # (sensor, counter) -> J since start
    thermal: Dict[int, ThermalReading] = field(default_factory=dict)
    throttled: Optional[bool] = None
    reasons: List[str] = field(default_factory=list)


class Sampler:
    """Samples ``sensors`` at ``rate_hz`` (at most 100 Hz, and no sensor faster than it allows)."""

    def __init__(self, sensors: Sequence[Sensor], rate_hz: float = DEFAULT_RATE_HZ,
                 clock: Callable[[], float] = time.monotonic, max_timeline_points: int = MAX_TIMELINE_POINTS,
                 unavailable: Optional[Dict[str, str]] = None) -> None:
        if rate_hz <= 0:
            raise ValueError(f"sample rate must be positive, got {rate_hz}")
        self.rate_hz = min(float(rate_hz), MAX_RATE_HZ)
        self.clock = clock
        self.max_timeline_points = max_timeline_points
        self._candidates = list(sensors)
        self.sensors: List[Sensor] = []
        # Sensors that could not be opened: description -> reason (plus any the caller knew of).
        self.unavailable_sensors: Dict[str, str] = dict(unavailable or {})
        self._names: List[str] = []
        self._sim: List[bool] = []
        self._last_read: List[float] = []
        self._errors: Dict[int, Tuple[int, str]] = {}
        self._unreadable: Dict[Tuple[int, str], str] = {}
        self._counter_state: Dict[Tuple[int, str], Tuple[int, int]] = {}  # raw last, cumulative units
        self._counter_notes: List[str] = []
        self._snapshots: List[_Snapshot] = []
        self._marks: List[Tuple[str, float]] = []
        self._drained = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._t0 = 0.0
        self._t_stop: Optional[float] = None
        self._baseline_allowed: Dict[Tuple[int, str], float] = {}
        self._phase = "idle"

    # -------------------------------------------------------------- control

    def start(self, background: bool = True, phase: str = "idle") -> None:
        """Open the sensors (recording those this device lacks), take the first reading, and
        start sampling in a thread unless ``background`` is False (tests call sample_now)."""
        for s in self._candidates:
            try:
                s.ensure_open()
            except SensorUnavailable as exc:
                self.unavailable_sensors[f"{s.kind} ({s.role})"] = exc.reason
                s.close()
                continue
            self.sensors.append(s)
            self._names.append(s.describe())
            self._sim.append(s.simulated)
            self._last_read.append(float("-inf"))
        self._t0 = self.clock()
        self._phase = phase
        self._marks.append((phase, 0.0))
        self.sample_now(force=True)
        if background:
            self._thread = threading.Thread(target=self._run, name="hilfarm-telemetry", daemon=True)
            self._thread.start()

    def mark(self, phase: str) -> None:
        """The job entered ``phase`` now: record the time and take a reading at the boundary."""
        with self._lock:
            self._phase = phase
            self._marks.append((phase, self.clock() - self._t0))
        self.sample_now(force=True)

    def stop(self) -> None:
        """Take the closing reading, end the thread and release the sensors."""
        if self._t_stop is not None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample_now(force=True)
        self._t_stop = self.clock() - self._t0
        for s in self.sensors:
            s.close()

    def __enter__(self) -> "Sampler":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def phase(self) -> str:
        return self._phase

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        next_t = time.monotonic() + period
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            self.sample_now()
            next_t += period
            now = time.monotonic()
            if next_t < now:  # a slow sensor made us miss slots: skip them rather than burst
                next_t = now + period

    def sample_now(self, force: bool = False) -> None:
        """Read every sensor that is due (all of them with ``force``) and keep the reading."""
        with self._lock:
            now = self.clock()
            snap = _Snapshot(t=now - self._t0, phase=self._phase)
            for i, s in enumerate(self.sensors):
                if not force and now - self._last_read[i] < 1.0 / s.max_rate_hz - 1e-9:
                    continue
                self._last_read[i] = now
                try:
                    reading = s.read()
                except SensorUnavailable as exc:
                    n, _ = self._errors.get(i, (0, ""))
                    self._errors[i] = (n + 1, exc.reason)
                    continue
                if isinstance(s, PowerSensor):
                    snap.power[i] = reading  # type: ignore[assignment]
                    self._accumulate(i, reading, snap)  # type: ignore[arg-type]
                else:
                    snap.thermal[i] = reading  # type: ignore[assignment]
                    for ch, why in reading.unreadable.items():  # type: ignore[union-attr]
                        self._unreadable[(i, ch)] = why
            self._judge_throttle(snap)
            self._snapshots.append(snap)

    def _accumulate(self, i: int, r: PowerReading, snap: _Snapshot) -> None:
        for name, c in r.counters.items():
            key = (i, name)
            prev = self._counter_state.get(key)
            if prev is None:
                cum = 0
            else:
                delta = c.value - prev[0]
                if delta < 0:
                    if c.wrap:
                        delta += c.wrap
                    else:
                        # A counter without a wrap point went backwards: the driver was reloaded.
                        self._counter_notes.append(
                            f"{self._names[i]} counter {name} went back from {prev[0]} to {c.value} "
                            f"(driver reloaded?); the interval counts as zero energy")
                        delta = 0
                cum = prev[1] + delta
            self._counter_state[key] = (c.value, cum)
            snap.energy[key] = cum * c.unit_joules

    def _judge_throttle(self, snap: _Snapshot) -> None:
        verdicts: List[Optional[bool]] = []
        for i, r in snap.thermal.items():
            verdicts.append(r.throttled)
            snap.reasons.extend(r.throttle_reasons)
            for dom, clk in r.clocks.items():
                if clk.allowed_max_hz is None:
                    continue
                base = self._baseline_allowed.setdefault((i, dom), clk.allowed_max_hz)
                verdicts.append(False)
                if clk.allowed_max_hz < base:
                    snap.reasons.append(f"{dom} allowed maximum lowered from {base / 1e6:g} MHz to "
                                        f"{clk.allowed_max_hz / 1e6:g} MHz")
        if snap.reasons:
            snap.throttled = True
        elif any(v is not None for v in verdicts):
            snap.throttled = False

    # -------------------------------------------------------------- live telemetry

    def drain(self) -> List[TelemetryPoint]:
        """The readings taken since the previous drain, as points (for Progress.telemetry)."""
        with self._lock:
            snaps = self._snapshots[self._drained:]
            self._drained = len(self._snapshots)
        out: List[TelemetryPoint] = []
        for s in snaps:
            out.extend(self._points(s))
        return out

    def latest(self) -> Optional[_Snapshot]:
        with self._lock:
            return self._snapshots[-1] if self._snapshots else None

    def latest_temperatures(self) -> Dict[str, float]:
        """Zone -> °C from the most recent reading of each thermal sensor (for cooldown)."""
        out: Dict[str, float] = {}
        with self._lock:
            for snap in reversed(self._snapshots):
                for r in snap.thermal.values():
                    for z, c in r.temperatures.items():
                        out.setdefault(z, c)
                if out:
                    break
        return out

    def _points(self, s: _Snapshot) -> List[TelemetryPoint]:
        pts = []
        for i, r in s.power.items():
            name, sim = self._names[i], self._sim[i]
            if r.total_watts is not None:
                pts.append(TelemetryPoint(s.t, name, "power_watts", "total", r.total_watts, sim))
            for rail, w in r.rails.items():
                pts.append(TelemetryPoint(s.t, name, "power_watts", rail, w, sim))
        for (i, ch), j in s.energy.items():
            pts.append(TelemetryPoint(s.t, self._names[i], "energy_joules", ch, j, self._sim[i]))
        for i, r in s.thermal.items():
            name, sim = self._names[i], self._sim[i]
            for z, c in r.temperatures.items():
                pts.append(TelemetryPoint(s.t, name, "temperature_celsius", z, c, sim))
            for dom, clk in r.clocks.items():
                pts.append(TelemetryPoint(s.t, name, "clock_hz", dom, clk.hz, sim))
            if r.throttled is not None:
                pts.append(TelemetryPoint(s.t, name, "throttled", "device", 1.0 if r.throttled else 0.0, sim))
        return pts

    # -------------------------------------------------------------- summary

    def _segments(self, phase: str) -> List[List[_Snapshot]]:
        """Each stretch of ``phase`` (a job of several repeats has one timed stretch per repeat),
        as its readings plus the first reading after it (the one that closes it)."""
        snaps = self._snapshots
        out: List[List[_Snapshot]] = []
        k = 0
        while k < len(snaps):
            if snaps[k].phase != phase:
                k += 1
                continue
            first = k
            while k < len(snaps) and snaps[k].phase == phase:
                k += 1
            out.append(snaps[first:min(k + 1, len(snaps))])
        return out

    @staticmethod
    def _over(segments: List[List[_Snapshot]],
              measure: Callable[[List[_Snapshot]], Tuple[Optional[float], float]]) -> Tuple[Optional[float], float]:
        """A quantity and the time it covers, summed over segments; a lone reading (no time
        covered) stands for itself when no segment covers any time."""
        parts = [measure(seg) for seg in segments]
        covered = [(e, d) for e, d in parts if e is not None and d > 0]
        if covered:
            return sum(e for e, _ in covered), sum(d for _, d in covered)
        singles = [e for e, _ in parts if e is not None]
        return (singles[0], 0.0) if singles else (None, 0.0)

    def mark_time(self, phase: str) -> Optional[float]:
        """When ``phase`` was first marked, in seconds since the sampler started."""
        with self._lock:
            for name, t in self._marks:
                if name == phase:
                    return t
        return None

    def windows(self, start: float, edges: Sequence[float]) -> WindowedTelemetry:
        """Power, hottest temperature, lowest clock and throttled fraction in each window
        [start + edges[k], start + edges[k+1]] (sampler seconds), and when throttling was first
        seen after ``start``.

        Energy counters and sampled power are taken as linear between readings, so a window's
        energy is the counter interpolated at its edges (or the power integrated across it).
        Temperatures and clocks are the readings taken inside the window (the one in effect at
        its start when none was); each throttle verdict holds until the next reading, as in the
        summary. A window the readings do not cover gets no figure, and the reason is named.
        """
        with self._lock:
            snaps = list(self._snapshots)
        out = WindowedTelemetry(simulated=any(self._sim))
        bounds = [(start + a, start + b) for a, b in zip(edges, edges[1:])]
        power_idx = [i for i, s in enumerate(self.sensors) if isinstance(s, PowerSensor)]
        thermal_idx = [i for i, s in enumerate(self.sensors) if not isinstance(s, PowerSensor)]

        def absent(role: str, what: str) -> str:
            return "; ".join(f"{k}: {v}" for k, v in self.unavailable_sensors.items() if f"({role})" in k) or \
                f"no {what} sensor is configured for this device"

        def missing(name: str, why: str) -> None:
            out.unavailable.setdefault(name, why)

        out.windows = [WindowReadings() for _ in bounds]
        if not power_idx:
            missing("mean_watts", absent("power", "power"))
        else:
            self._window_power(snaps, power_idx[0], bounds, out)
        if not thermal_idx:
            why = absent("thermal", "thermal")
            for name in ("max_celsius", "min_clock_hz", "throttled_fraction"):
                missing(name, why)
            return out
        judged = [s for s in snaps if s.throttled is not None]
        out.throttle_judged = bool(judged)
        last = len(bounds) - 1
        for k, ((a, b), w) in enumerate(zip(bounds, out.windows)):
            inside = [s for s in snaps if s.thermal and a <= s.t and (s.t < b or (k == last and s.t <= b))]
            if not inside:
                before = [s for s in snaps if s.thermal and s.t <= a]
                inside = before[-1:]
            temps = [c for s in inside for r in s.thermal.values() for c in r.temperatures.values()]
            clocks = [clk.hz for s in inside for r in s.thermal.values() for clk in r.clocks.values()]
            w.max_celsius = max(temps) if temps else None
            w.min_clock_hz = min(clocks) if clocks else None
            if w.max_celsius is None:
                missing("max_celsius", f"no temperature was read during {a - start:g}-{b - start:g} s")
            if w.min_clock_hz is None:
                missing("min_clock_hz", f"no clock was read during {a - start:g}-{b - start:g} s")
            w.throttled_fraction = self._held_fraction(judged, a, b)
            if w.throttled_fraction is None:
                missing("throttled_fraction", "no sensor on this device reports throttling" if not judged else
                        f"no throttle reading before {b - start:g} s")
        end = bounds[-1][1] if bounds else start
        for s in judged:
            if start <= s.t <= end and s.throttled:
                out.throttled_after_seconds = s.t - start
                break
        return out

    @staticmethod
    def _held_fraction(judged: List[_Snapshot], a: float, b: float) -> Optional[float]:
        held = [s for s in judged if s.t <= a][-1:] + [s for s in judged if a < s.t < b]
        if not held or b <= a:
            return None
        from_t = max(a, held[0].t)
        hot = 0.0
        for s, nxt in zip(held, held[1:] + [None]):
            t0 = max(a, s.t)
            t1 = b if nxt is None else nxt.t
            if s.throttled:
                hot += t1 - t0
        return hot / (b - from_t) if b > from_t else None

    def _window_power(self, snaps: List[_Snapshot], i: int, bounds: List[Tuple[float, float]],
                      out: WindowedTelemetry) -> None:
        counters = [name for (j, name) in self._counter_state if j == i and self._in_total(i, name)]
        series: List[List[Tuple[float, float]]] = []
        if counters:
            for name in counters:
                series.append([(s.t, s.energy[(i, name)]) for s in snaps if (i, name) in s.energy])
        else:
            series.append([(s.t, s.power[i].total_watts) for s in snaps
                           if i in s.power and s.power[i].total_watts is not None])
        for (a, b), w in zip(bounds, out.windows):
            if b <= a or any(len(ser) < 2 or ser[0][0] > a or ser[-1][0] < b for ser in series):
                out.unavailable.setdefault("mean_watts", f"the power readings do not cover the window "
                                                         f"{a - bounds[0][0]:g}-{b - bounds[0][0]:g} s")
                continue
            if counters:
                energy = sum(_interpolate(ser, b) - _interpolate(ser, a) for ser in series)
                if energy == 0:
                    # Not zero watts: the counter updates more slowly than the window lasts.
                    out.unavailable.setdefault("mean_watts", f"the energy counter did not advance during "
                                                             f"{a - bounds[0][0]:g}-{b - bounds[0][0]:g} s; "
                                                             f"use longer windows")
                    continue
            else:
                energy = _integral(series[0], a, b)
            w.mean_watts = energy / (b - a)

    def timeline(self, max_points: Optional[int] = None) -> List[TelemetryPoint]:
        """Every reading as points, thinned evenly (keeping the first and last reading) so that
        there are at most ``max_points`` of them."""
        limit = max_points or self.max_timeline_points
        with self._lock:
            snaps = list(self._snapshots)
        per = [self._points(s) for s in snaps]
        total = sum(len(p) for p in per)
        if total <= limit or len(snaps) <= 2:
            return [p for ps in per for p in ps]
        avg = total / len(snaps)
        keep_n = max(2, int(limit // max(avg, 1.0)))
        step = (len(snaps) - 1) / (keep_n - 1)
        chosen = sorted({int(round(k * step)) for k in range(keep_n)})
        out = [p for k in chosen for p in per[k]]
        return out[:limit]

    def summary(self, inferences: Optional[int] = None, timed_phase: str = "measuring",
                idle_phase: str = "idle") -> TelemetrySummary:
        """Idle and active power, energy per inference (over ``inferences`` timed runs),
        per-zone temperatures, clock ranges and throttling over the timed phase."""
        with self._lock:
            out = TelemetrySummary()
            out.simulated = any(self._sim)
            timed = self._segments(timed_phase)
            if not timed:
                out.warnings.append(f"no '{timed_phase}' phase was marked: the summary covers the whole run")
                timed = [list(self._snapshots)]
            idle = self._segments(idle_phase)[:1]  # the baseline before the first repeat
            out.power = self._power_summary(timed, idle, inferences, out)
            out.thermal = self._thermal_summary(timed, out)
            for (i, ch), why in self._unreadable.items():
                out.warnings.append(f"{self._names[i]}: {ch} gave no reading ({why})")
            for i, (n, why) in self._errors.items():
                out.warnings.append(f"{self._names[i]}: {n} reading(s) failed, last because {why}")
            out.warnings.extend(self._counter_notes)
        out.timeline = self.timeline()
        return out

    def _power_summary(self, timed: List[List[_Snapshot]], idle: List[List[_Snapshot]],
                       inferences: Optional[int], out: TelemetrySummary) -> Optional[PowerSummary]:
        power_idx = [i for i, s in enumerate(self.sensors) if isinstance(s, PowerSensor)]
        if not power_idx:
            why = "; ".join(f"{k}: {v}" for k, v in self.unavailable_sensors.items() if "(power)" in k) or \
                "no power sensor is configured for this device"
            out.unavailable["power"] = why
            return None
        i = power_idx[0]
        ps = PowerSummary(sensor=self._names[i], simulated=self._sim[i])
        readings = [s for s in self._snapshots if i in s.power]
        if len(readings) >= 2 and readings[-1].t > readings[0].t:
            ps.sample_rate_hz = (len(readings) - 1) / (readings[-1].t - readings[0].t)
        counters = [name for (j, name) in self._counter_state if j == i]
        totals = [name for name in counters if self._in_total(i, name)]
        for note in self._power_notes(i):
            out.warnings.append(note)
        if totals:
            ps.energy_method = "energy counter"
            e_timed, d_timed = self._over(timed, lambda seg: self._counter_energy(seg, i, totals))
            e_idle, d_idle = self._over(idle, lambda seg: self._counter_energy(seg, i, totals))
            for name in counters:
                e, d = self._over(timed, lambda seg: self._counter_energy(seg, i, [name]))
                if e is not None and d:
                    ps.rails.append(RailSummary(name, e / d))
        else:
            ps.energy_method = "integrated power"
            e_timed, d_timed = self._over(timed, lambda seg: self._integrate(seg, i, None))
            e_idle, d_idle = self._over(idle, lambda seg: self._integrate(seg, i, None))
            rails = []
            for s in (snap for seg in timed for snap in seg):
                if i in s.power:
                    rails = list(s.power[i].rails)
                    break
            for rail in rails:
                e, d = self._over(timed, lambda seg: self._integrate(seg, i, rail))
                if e is not None and d:
                    ps.rails.append(RailSummary(rail, e / d))
                elif e is not None:
                    ps.rails.append(RailSummary(rail, e))
        stalled = {}
        if totals:
            # A counter that did not move while time passed updates more slowly than the phase
            # lasted (NVML's energy counter ticks every few tens of ms): no figure, not zero.
            for label, e, d in (("timed runs", e_timed, d_timed), ("idle baseline", e_idle, d_idle)):
                if e == 0 and d > 0:
                    stalled[label] = (f"the energy counter did not advance during the {label} ({d:.3f} s): they were "
                                      f"shorter than its update interval; run longer (min_seconds)")
            if "timed runs" in stalled:
                e_timed = None
            if "idle baseline" in stalled:
                e_idle = None
        ps.active_watts = self._mean(e_timed, d_timed)
        ps.idle_watts = self._mean(e_idle, d_idle)
        ps.energy_joules = e_timed if d_timed and e_timed is not None else None
        if ps.idle_watts is None:
            out.unavailable["power.idle_watts"] = stalled.get("idle baseline") or (
                "no idle readings before the job started" if not idle else
                "one idle reading of an energy counter gives no energy difference")
        if ps.active_watts is None:
            out.unavailable["power.active_watts"] = stalled.get("timed runs") or \
                "fewer than two power readings during the timed runs"
        if ps.energy_joules is None:
            out.unavailable["power.energy_per_inference_joules"] = stalled.get("timed runs") or \
                "fewer than two power readings during the timed runs"
        elif not inferences:
            out.unavailable["power.energy_per_inference_joules"] = "the number of timed inferences is not known"
        else:
            ps.energy_per_inference_joules = ps.energy_joules / inferences
        return ps

    @staticmethod
    def _mean(energy: Optional[float], duration: float) -> Optional[float]:
        if energy is None:
            return None
        # _integrate returns the single value itself (duration 0) when only one reading exists.
        return energy / duration if duration else energy

    def _in_total(self, i: int, name: str) -> bool:
        for s in reversed(self._snapshots):
            r = s.power.get(i)
            if r is not None and name in r.counters:
                return r.counters[name].in_total
        return False

    def _power_notes(self, i: int) -> List[str]:
        seen: List[str] = []
        for s in self._snapshots:
            r = s.power.get(i)
            if r is not None:
                for n in r.notes:
                    if n not in seen:
                        seen.append(n)
        return seen

    @staticmethod
    def _counter_energy(window: List[_Snapshot], i: int, names: List[str]) -> Tuple[Optional[float], float]:
        pts = [s for s in window if all((i, n) in s.energy for n in names)]
        if len(pts) < 2:
            return None, 0.0
        a, b = pts[0], pts[-1]
        return sum(b.energy[(i, n)] - a.energy[(i, n)] for n in names), b.t - a.t

    @staticmethod
    def _integrate(window: List[_Snapshot], i: int, rail: Optional[str]) -> Tuple[Optional[float], float]:
        pts = []
        for s in window:
            r = s.power.get(i)
            if r is None:
                continue
            v = r.total_watts if rail is None else r.rails.get(rail)
            if v is not None:
                pts.append((s.t, v))
        if not pts:
            return None, 0.0
        if len(pts) == 1:
            return pts[0][1], 0.0
        e = sum((t1 - t0) * (v0 + v1) / 2.0 for (t0, v0), (t1, v1) in zip(pts, pts[1:]))
        return e, pts[-1][0] - pts[0][0]

    def _thermal_summary(self, segments: List[List[_Snapshot]], out: TelemetrySummary) -> Optional[ThermalSummary]:
        thermal_idx = [i for i, s in enumerate(self.sensors) if not isinstance(s, PowerSensor)]
        if not thermal_idx:
            why = "; ".join(f"{k}: {v}" for k, v in self.unavailable_sensors.items() if "(thermal)" in k) or \
                "no thermal sensor is configured for this device"
            out.unavailable["thermal"] = why
            return None
        ts = ThermalSummary(simulated=any(self._sim[i] for i in thermal_idx))
        timed = [snap for seg in segments for snap in seg]
        zones: Dict[Tuple[int, str], List[float]] = {}
        clocks: Dict[str, List[Tuple[float, Optional[float], Optional[float]]]] = {}
        for s in timed:
            for i, r in s.thermal.items():
                for z, c in r.temperatures.items():
                    zones.setdefault((i, z), []).append(c)
                for dom, clk in r.clocks.items():
                    clocks.setdefault(dom, []).append((clk.hz, clk.allowed_max_hz, clk.hardware_max_hz))
        for (i, z), vals in zones.items():
            ts.zones.append(ZoneSummary(z, vals[0], max(vals), vals[-1], self._names[i]))
        for dom, vals in clocks.items():
            allowed = [a for _, a, _ in vals if a is not None] or [h for _, _, h in vals if h is not None]
            ts.clocks.append(ClockSummary(dom, min(v for v, _, _ in vals), max(v for v, _, _ in vals),
                                          max(allowed) if allowed else None))
        if not ts.zones:
            out.unavailable["thermal.zones"] = "no temperature was read during the timed runs"
        if not ts.clocks:
            out.unavailable["thermal.clocks"] = "no clock was read during the timed runs"
        judged = [s for s in timed if s.throttled is not None]
        if not judged:
            out.unavailable["thermal.throttled"] = "no sensor on this device reports throttling"
        else:
            ts.throttled = any(s.throttled for s in judged)
            # Each reading holds until the next one of its own stretch; the time between two
            # repeats' timed runs is not the run's.
            span = hot = 0.0
            for seg in segments:
                seen_here = [s for s in seg if s.throttled is not None]
                span += seen_here[-1].t - seen_here[0].t if seen_here else 0.0
                hot += sum(b.t - a.t for a, b in zip(seen_here, seen_here[1:]) if a.throttled)
            if span > 0:
                ts.throttled_fraction = hot / span
            else:
                ts.throttled_fraction = 1.0 if judged[0].throttled else 0.0
            seen = set()
            for s in judged:
                for reason in s.reasons:
                    key = re.sub(r"[-+]?\d+(?:\.\d+)?", "#", reason)
                    if key not in seen and len(ts.throttle_reasons) < 20:
                        seen.add(key)
                        ts.throttle_reasons.append(reason)
        events: List[str] = []
        for s in self._snapshots:
            for r in s.thermal.values():
                for e in r.events:
                    if e not in events:
                        events.append(e)
                out.info.update(r.info)
        out.warnings.extend(events)
        return ts
