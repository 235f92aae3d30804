"""Telemetry around one job, as a device profile configures it: which sensors, the cooldown
before the run, the sampler with its idle baseline, phase marks from the child's progress, and
the summary that goes into the result.

Profile sections used (see profiles/device-profile.schema.json):

  sensors:       name -> {kind: <registered sensor kind>, <its options>}; order matters: the
                 first power sensor is the one power figures come from
  telemetry:     {rate_hz, idle_baseline_seconds, root, simulate, simulated_model}
  thermal:       {cooldown: {below_celsius, zone, max_wait_seconds, idle_seconds, idle_load_below,
                 poll_seconds}, expect_governor}
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from hilfarm.agent.sensors import (
    CommandRunner,
    Sensor,
    SensorConfigError,
    SensorUnavailable,
    ThermalSensor,
    create_sensor,
)
from hilfarm.agent.sensors.simulated import (
    SIMULATED_SENSORS, IdleLoad, LoadMeter, SimulatedDevice, SimulatedModel,
)
from hilfarm.agent.telemetry import DEFAULT_RATE_HZ, Sampler, TelemetryPoint, TelemetrySummary

log = logging.getLogger("hilfarm.agent")


@dataclass
class CooldownRule:
    below_celsius: Optional[float] = None
    zone: Optional[str] = None  # None: the hottest zone read
    max_wait_seconds: float = 0.0
    idle_seconds: float = 0.0  # > 0: the machine must also be idle this long
    idle_load_below: float = 0.2  # fraction of all cores
    poll_seconds: float = 1.0


@dataclass
class TelemetryConfig:
    sensors: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    rate_hz: float = DEFAULT_RATE_HZ
    power_sensor: str = ""  # the entry the power figures come from; "" = first present
    idle_baseline_seconds: float = 0.5
    root: str = "/"
    simulate: bool = False
    cooldown: CooldownRule = field(default_factory=CooldownRule)
    expect_governor: str = "performance"
    profile_name: str = ""
    simulated_model: Dict[str, float] = field(default_factory=dict)  # SimulatedModel overrides
    # telemetry.recorded: the sensors read a recording (root and/or command outputs), not this
    # machine; every reading is flagged recorded and the description goes with the result.
    recorded: str = ""
    recorded_commands: str = ""

    def command_runner(self) -> Optional[CommandRunner]:
        """Recorded command outputs when the profile names them, else None (run the commands)."""
        if not self.recorded_commands:
            return None
        from hilfarm.agent.sensors import RecordedRunner

        return RecordedRunner(self.recorded_commands)


def telemetry_config(profile: Any) -> TelemetryConfig:
    """From a loaded Profile (agent/profiles.py): its sensors, telemetry and thermal sections."""
    data = getattr(profile, "data", {}) or {}
    tel = dict(data.get("telemetry") or {})
    thermal = dict(getattr(profile, "thermal", None) or data.get("thermal") or {})
    cd = dict(thermal.get("cooldown") or {})
    rule = CooldownRule(
        below_celsius=cd.get("below_celsius"),
        zone=cd.get("zone"),
        max_wait_seconds=float(cd.get("max_wait_seconds", 0.0)),
        idle_seconds=float(cd.get("idle_seconds", 0.0)),
        idle_load_below=float(cd.get("idle_load_below", 0.2)),
        poll_seconds=float(cd.get("poll_seconds", 1.0)),
    )
    sensors = dict(getattr(profile, "sensors", None) or data.get("sensors") or {})
    if tel.get("simulate") and not sensors:
        sensors = {k: dict(v) for k, v in SIMULATED_SENSORS.items()}
    recorded = dict(tel.get("recorded") or {})
    return TelemetryConfig(
        sensors=sensors,
        rate_hz=float(tel.get("rate_hz", DEFAULT_RATE_HZ)),
        power_sensor=str(tel.get("power_sensor", "")),
        idle_baseline_seconds=float(tel.get("idle_baseline_seconds", 0.5)),
        root=str(recorded.get("root") or tel.get("root", "/")),
        recorded=str(recorded.get("description", "")),
        recorded_commands=str(recorded.get("commands", "")),
        simulate=bool(tel.get("simulate", False)),
        cooldown=rule,
        expect_governor=str(thermal.get("expect_governor", "performance")),
        profile_name=getattr(profile, "name", ""),
        simulated_model=dict(tel.get("simulated_model") or {}),
    )


def build_sensors(config: Mapping[str, Mapping[str, Any]], root: Union[str, Path] = "/",
                  runner: Optional[CommandRunner] = None) -> List[Sensor]:
    """One sensor per profile entry, in order; an entry with ``fallback_for: <name>`` is kept
    only when the sensor it stands in for is absent (tegrastats for unreadable INA3221 files).
    SensorConfigError names the entry at fault."""
    built: List[Tuple[str, Sensor, Optional[str]]] = []
    for name, entry in config.items():
        entry = dict(entry)
        kind = entry.pop("kind", None)
        fallback_for = entry.pop("fallback_for", None)
        if not kind:
            raise SensorConfigError(f"sensors.{name}: no kind given")
        if fallback_for is not None and fallback_for not in config:
            raise SensorConfigError(f"sensors.{name}: fallback_for names {fallback_for!r}, which is not a sensor here")
        try:
            sensor = create_sensor(kind, entry, root=root, runner=runner)
        except SensorConfigError as exc:
            raise SensorConfigError(f"sensors.{name}: {exc}") from None
        sensor.name = name
        built.append((name, sensor, fallback_for))
    present = set()
    for name, sensor, fallback_for in built:
        if fallback_for is None:
            try:
                sensor.ensure_open()
                present.add(name)
            except SensorUnavailable:
                pass  # the sampler opens it again and records why it is absent
    return [s for name, s, fallback_for in built if fallback_for is None or fallback_for not in present]


@dataclass
class CooldownOutcome:
    seconds: float
    reached: bool
    message: str = ""
    celsius: Optional[float] = None


def _zone_temperature(sensors: Sequence[Sensor], zone: Optional[str]) -> Tuple[Optional[float], str]:
    temps: Dict[str, float] = {}
    for s in sensors:
        if not isinstance(s, ThermalSensor):
            continue
        try:
            temps.update(s.read().temperatures)
        except SensorUnavailable:
            continue
    if not temps:
        return None, ""
    if zone:
        if zone in temps:
            return temps[zone], zone
        return None, zone
    hottest = max(temps, key=lambda z: temps[z])
    return temps[hottest], hottest


def cooldown(rule: CooldownRule, sensors: Sequence[Sensor], load: Optional[LoadMeter] = None,
             cancel: Optional[threading.Event] = None, clock: Callable[[], float] = time.monotonic) -> CooldownOutcome:
    """Wait (at most rule.max_wait_seconds) until the zone is below rule.below_celsius and, when
    the rule asks, the machine has been idle for rule.idle_seconds."""
    if rule.max_wait_seconds <= 0 or (rule.below_celsius is None and rule.idle_seconds <= 0):
        return CooldownOutcome(0.0, True)
    for s in sensors:
        try:
            s.ensure_open()
        except SensorUnavailable:
            pass
    opened = [s for s in sensors if getattr(s, "_opened", False)]
    meter = load or LoadMeter()
    meter.read()
    start = clock()
    idle_since: Optional[float] = start if rule.idle_seconds <= 0 else None
    wait = cancel or threading.Event()
    celsius: Optional[float] = None
    zone = rule.zone or ""
    while True:
        now = clock()
        cool = True
        if rule.below_celsius is not None:
            celsius, zone = _zone_temperature(opened, rule.zone)
            if celsius is None:
                # Nothing to wait for: say so instead of waiting blind.
                what = f"zone {rule.zone}" if rule.zone else "any thermal zone"
                return CooldownOutcome(now - start, False, f"cooldown skipped: no temperature from {what}")
            cool = celsius < rule.below_celsius
        if rule.idle_seconds > 0:
            busy = meter.read()
            if busy < rule.idle_load_below:
                idle_since = idle_since if idle_since is not None else now
            else:
                idle_since = None
        idle = idle_since is not None and now - idle_since >= rule.idle_seconds
        if cool and idle:
            return CooldownOutcome(now - start, True, celsius=celsius)
        if now - start >= rule.max_wait_seconds:
            why = []
            if not cool:
                why.append(f"{zone} still at {celsius:g} °C (start below {rule.below_celsius:g} °C)")
            if not idle:
                why.append(f"the machine was not idle (load under {rule.idle_load_below:.0%}) "
                           f"for {rule.idle_seconds:g} s")
            return CooldownOutcome(now - start, False,
                                   f"cooldown gave up after {now - start:.0f} s: " + " and ".join(why), celsius)
        if wait.wait(rule.poll_seconds):
            return CooldownOutcome(clock() - start, False, "cooldown interrupted: the job was cancelled", celsius)


class JobTelemetry:
    """Cooldown, sampling and summary for one job. The caller: ``before_run()``, then feeds
    every progress phase to ``mark()``, takes ``drain()`` for live reports, and ends with
    ``finish(inferences)`` (or ``abort()``)."""

    def __init__(self, config: TelemetryConfig, root: Optional[Union[str, Path]] = None,
                 runner: Optional[CommandRunner] = None, cancel: Optional[threading.Event] = None) -> None:
        self.config = config
        # A path, or a SysRoot (a phone read over adb).
        self.root = root if root is not None and not isinstance(root, (str, Path)) else str(
            root if root is not None else config.root)
        self.runner = runner if runner is not None else config.command_runner()
        self.cancel = cancel
        self.cooldown: Optional[CooldownOutcome] = None
        self.sampler: Optional[Sampler] = None
        self._phase = ""

    def before_run(self) -> None:
        sensors = build_sensors(self.config.sensors, self.root, self.runner)
        if self.config.power_sensor:
            # The sampler takes power figures from the first power sensor present: put the chosen one first.
            sensors.sort(key=lambda s: s.name != self.config.power_sensor)
        self.cooldown = cooldown(self.config.cooldown, sensors, cancel=self.cancel)
        if self.cooldown.message:
            log.info("%s", self.cooldown.message)
        elif self.cooldown.seconds >= 1:
            log.info("cooled down for %.0f s before the run", self.cooldown.seconds)
        self.sampler = Sampler(sensors, rate_hz=self.config.rate_hz)
        self.sampler.start(phase="idle")
        for name, why in self.sampler.unavailable_sensors.items():
            log.debug("sensor %s unavailable: %s", name, why)
        if self.config.idle_baseline_seconds > 0:
            # The idle baseline: readings of the device with nothing loaded, before the child starts.
            (self.cancel or threading.Event()).wait(self.config.idle_baseline_seconds)

    def mark(self, phase: str) -> None:
        if self.sampler is not None and phase and phase != self._phase:
            self._phase = phase
            self.sampler.mark(phase)

    def drain(self) -> List[TelemetryPoint]:
        points = self.sampler.drain() if self.sampler is not None else []
        if self.config.recorded:
            for p in points:
                p.recorded = True
        return points

    def abort(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()

    def finish(self, inferences: Optional[int]) -> TelemetrySummary:
        """Stop sampling and summarise: idle figures from before the child, active figures and
        energy per inference over the 'measuring' phase."""
        assert self.sampler is not None, "before_run() was not called"
        self.sampler.stop()
        summary = self.sampler.summary(inferences=inferences)
        if self.config.recorded:
            mark_recorded(summary)
        if summary.thermal is not None and self.cooldown is not None:
            summary.thermal.cooldown_seconds = self.cooldown.seconds
        if self.cooldown is not None and self.cooldown.message:
            summary.warnings.insert(0, self.cooldown.message)
        gov = summary.info.get("governor")
        if gov and self.config.expect_governor and gov != self.config.expect_governor:
            summary.warnings.append(
                f"CPU frequency governor is {gov!r}, not {self.config.expect_governor!r}: clocks vary with load, "
                f"so latency is less repeatable (set it with cpupower frequency-set -g {self.config.expect_governor})")
        return summary


class SimulatedDeviceHost:
    """Runs a SimulatedDevice under the agent's data directory for a profile with
    ``telemetry: {simulate: true}``, driven by the load of the job's benchmark process tree
    (``follow``), idle between jobs."""

    def __init__(self, data_dir: Union[str, Path], model: Optional[Mapping[str, float]] = None) -> None:
        """``model``: SimulatedModel fields to override (the profile's telemetry.simulated_model);
        an unknown name raises SensorConfigError naming it."""
        known = set(SimulatedModel.__dataclass_fields__)
        for name in model or {}:
            if name not in known:
                raise SensorConfigError(f"telemetry.simulated_model.{name}: not a parameter of the simulated model "
                                        f"(known: {', '.join(sorted(known))})")
        self.root = Path(data_dir) / "simulated-device"
        defaults = SimulatedModel()
        # YAML numbers: counts (cpus, load_cores, ...) stay integers, as the model writes them to files.
        params = {k: type(getattr(defaults, k))(v) for k, v in (model or {}).items()}
        self.device = SimulatedDevice(self.root, SimulatedModel(**params), load=IdleLoad())
        self.device.start()

    def follow(self, pid: Optional[int]) -> None:
        self.device.follow(pid)

    def stop(self) -> None:
        self.device.stop()


def mark_recorded(summary: TelemetrySummary) -> None:
    """Flag every figure of a summary read from a recording (profile telemetry.recorded)."""
    summary.recorded = True
    if summary.power is not None:
        summary.power.recorded = True
    if summary.thermal is not None:
        summary.thermal.recorded = True
    for p in summary.timeline:
        p.recorded = True


def attach_summary(result: Any, summary: TelemetrySummary, profile_name: str = "",
                   recorded: str = "") -> None:
    """Put a job's telemetry into its BenchmarkResult (agent/results.py): the summary itself,
    its unavailable figures (with the profile named, so a person knows which device setup lacks
    the sensor) and warnings into the result's own lists, the governor into the environment and
    the device's state (Jetson power mode, jetson_clocks, ...) into its runtime settings, and
    the simulated flag."""
    from hilfarm.agent.results import Unavailable
    from hilfarm.agent.telemetry.wire import summary_unavailable

    context = f"profile {profile_name}" if profile_name else ""
    named = {u.field for u in result.unavailable}
    for name, reason in summary_unavailable(summary).items():
        if name not in named:
            result.unavailable.append(Unavailable(name, f"{reason} ({context})" if context else reason))
    for w in summary.warnings:
        if w not in result.warnings:
            result.warnings.append(w)
    env = result.environment
    gov = summary.info.get("governor")
    if gov and not env.governor:
        env.governor = gov
        result.unavailable = [u for u in result.unavailable if u.field != "environment.governor"]
    # The device's own state (nvpmodel mode, jetson_clocks, get_throttled, thermal status ...)
    # has no field of its own on the wire: it goes with the runtime settings.
    state = [f"{k} {v}" for k, v in summary.info.items() if k != "governor"]
    if state:
        note = "device: " + ", ".join(state)
        env.runtime_settings = f"{env.runtime_settings}; {note}" if env.runtime_settings else note
    if summary.simulated:
        env.simulated = True
    if summary.recorded:
        env.recorded = True
        source = f"sensors: {recorded}" if recorded else "sensors: a recording"
        if source not in env.recorded_sources:
            env.recorded_sources.append(source)
    # Kept once, in the result's lists and environment.
    summary.warnings = []
    summary.unavailable = {}
    summary.info = {}
    result.telemetry = summary
