"""Sensor protocols, their registry, and the readings they return.

A sensor is a small plugin over real files: it reads a sysfs-like tree below a root path
(default ``/``), or the output of a command run through a replaceable runner, so the code that
reads a recorded fixture is the code that reads a device. Implementations register under a
*kind* name with :func:`register_sensor`; a device profile names that kind in its ``sensors:``
section and the agent builds it with :func:`create_sensor`.

A sensor that is absent or cannot be read raises :class:`SensorUnavailable` with the reason;
it never returns zero in place of a reading. When the root holds the marker file
``.hilfarm-simulated`` every reading from it is flagged simulated.

This module is the protocol and the registry; the implementations are its modules (power.py,
thermal.py, commands.py for command-line tools, nvml.py), and simulated.py writes the tree of
a simulated device that they read.
"""

from __future__ import annotations

import abc
import errno
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Type, Union

SIMULATED_MARKER = ".hilfarm-simulated"


class SensorUnavailable(Exception):
    """A sensor that is absent or unreadable; ``reason`` says why, for a person to act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SensorConfigError(Exception):
    """A profile names a sensor kind or option that does not exist (the profile's fault)."""


# ---------------------------------------------------------------- readings


@dataclass
class EnergyCounter:
    """A monotonically increasing energy counter in integer device units.

    ``wrap`` is the value at which the counter rolls over to zero (RAPL's max_energy_range_uj),
    or None where it does not wrap in practice (NVML's 64-bit mJ counter).
    """

    value: int
    unit_joules: float
    wrap: Optional[int] = None
    in_total: bool = True  # part of the device's total (False: a sub-domain already inside another)


@dataclass
class PowerReading:
    total_watts: Optional[float] = None  # input power now; None for energy-only sensors
    rails: Dict[str, float] = field(default_factory=dict)  # rail -> watts
    counters: Dict[str, EnergyCounter] = field(default_factory=dict)  # domain -> counter
    total_method: str = ""  # how total_watts was formed, e.g. "rail VDD_IN"
    notes: List[str] = field(default_factory=list)  # caveats a person should see


@dataclass
class ClockReading:
    hz: float
    allowed_max_hz: Optional[float] = None  # the ceiling in force now (scaling_max_freq)
    hardware_max_hz: Optional[float] = None  # the part's own maximum (cpuinfo_max_freq)


@dataclass
class ThermalReading:
    temperatures: Dict[str, float] = field(default_factory=dict)  # zone -> °C
    clocks: Dict[str, ClockReading] = field(default_factory=dict)  # domain -> clock
    throttled: Optional[bool] = None  # None: this sensor cannot tell
    throttle_reasons: List[str] = field(default_factory=list)  # active now, as the device says
    events: List[str] = field(default_factory=list)  # happened earlier (e.g. since boot)
    info: Dict[str, str] = field(default_factory=dict)  # governor, power mode, ...
    unreadable: Dict[str, str] = field(default_factory=dict)  # channel -> why it gave no value now


# ---------------------------------------------------------------- file access


class SysRoot:
    """Read-only access to a sysfs/procfs tree below ``root``."""

    def __init__(self, root: Union[str, Path] = "/") -> None:
        self.root = Path(root)
        self._root_str = str(self.root).rstrip("/")

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def display(self, rel: str) -> str:
        """The path as it would be on the device (what a person would look at)."""
        return "/" + rel.lstrip("/")

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def glob(self, pattern: str) -> List[str]:
        """Relative paths matching ``pattern`` (relative to the root), sorted naturally."""
        base = self.root
        hits = [str(p.relative_to(base)) for p in base.glob(pattern.lstrip("/"))]
        return sorted(hits, key=natural_key)

    def read_text(self, rel: str) -> str:
        """The file's text without the trailing newline; SensorUnavailable with the reason if not."""
        # os.open/os.read and string paths: this runs ~100 times per reading at 10 Hz, and the
        # sampler must stay well under 1 % of a small core.
        p = self._root_str + rel if rel.startswith("/") else self._root_str + "/" + rel
        try:
            fd = os.open(p, os.O_RDONLY)
            try:
                data = os.read(fd, 65536)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise SensorUnavailable(f"{self.display(rel)} does not exist") from None
        except PermissionError:
            raise SensorUnavailable(
                f"{self.display(rel)} is not readable by uid {os.getuid()} (permission denied)"
            ) from None
        except OSError as exc:
            # sysfs answers some reads with an errno (EIO, ENODATA, EAGAIN) while the device sleeps.
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            raise SensorUnavailable(f"{self.display(rel)} could not be read ({name}: {exc.strerror})") from None
        return data.decode("utf-8", "replace").rstrip("\n").rstrip("\0")

    def read_optional(self, rel: str) -> Optional[str]:
        try:
            return self.read_text(rel)
        except SensorUnavailable:
            return None

    def read_int(self, rel: str) -> int:
        text = self.read_text(rel).strip()
        try:
            return int(text)
        except ValueError:
            raise SensorUnavailable(f"{self.display(rel)} holds {text[:40]!r}, not an integer") from None

    def read_float(self, rel: str) -> float:
        text = self.read_text(rel).strip()
        try:
            return float(text)
        except ValueError:
            raise SensorUnavailable(f"{self.display(rel)} holds {text[:40]!r}, not a number") from None

    @property
    def simulated(self) -> bool:
        return (self.root / SIMULATED_MARKER).exists()


def natural_key(s: str) -> List[Any]:
    """Sort hwmon10 after hwmon9."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


# ---------------------------------------------------------------- commands

CommandRunner = Callable[[Sequence[str]], str]


class SubprocessRunner:
    """Runs a command on this machine (optionally behind a prefix such as ``adb -s X shell``)."""

    def __init__(self, prefix: Sequence[str] = (), timeout: float = 5.0) -> None:
        self.prefix = list(prefix)
        self.timeout = timeout

    def __call__(self, argv: Sequence[str]) -> str:
        full = self.prefix + list(argv)
        try:
            proc = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise SensorUnavailable(f"command {full[0]!r} is not installed (not found on PATH)") from None
        except PermissionError:
            raise SensorUnavailable(f"command {full[0]!r} may not be run by uid {os.getuid()}") from None
        except subprocess.TimeoutExpired:
            raise SensorUnavailable(f"command {' '.join(full)!r} did not answer within {self.timeout:g} s") from None
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            tail = err[-1] if err else "no message"
            raise SensorUnavailable(f"command {' '.join(full)!r} failed with exit status {proc.returncode}: {tail}")
        return proc.stdout.decode("utf-8", "replace")


def recorded_command_filename(argv: Sequence[str]) -> str:
    """``vcgencmd measure_clock arm`` -> ``vcgencmd_measure_clock_arm.txt``; ``nvpmodel -q`` -> ``nvpmodel_q.txt``."""
    parts = [os.path.basename(argv[0])] + [a.lstrip("-") for a in argv[1:]]
    return "_".join(p for p in parts if p) + ".txt"


class RecordedRunner:
    """Answers commands from recorded output files (tests/fixtures/commands/<device>/<name>.txt)."""

    def __init__(self, directory: Union[str, Path]) -> None:
        self.directory = Path(directory)
        self.calls: List[List[str]] = []

    def __call__(self, argv: Sequence[str]) -> str:
        self.calls.append(list(argv))
        p = self.directory / recorded_command_filename(argv)
        try:
            return p.read_text()
        except FileNotFoundError:
            raise SensorUnavailable(f"command {' '.join(argv)!r} is not available (no recorded output {p})") from None


# ---------------------------------------------------------------- protocols


class Sensor(abc.ABC):
    """Common base of every sensor: a root to read, a runner for commands, options from a profile."""

    kind: str = ""
    name: str = ""  # the profile's name for this sensor (its key under sensors:)
    role: str = ""  # "power" or "thermal"
    max_rate_hz: float = 100.0  # how often reading it makes sense (command sensors are slower)

    def __init__(self, root: Union[str, Path] = "/", runner: Optional[CommandRunner] = None,
                 **options: Any) -> None:
        # A SysRoot itself may be given: a phone's files read over adb (agent/android.py).
        self.sys = root if isinstance(root, SysRoot) else SysRoot(root)
        self.options: Dict[str, Any] = dict(options)
        # A prefix such as ["adb", "-s", "SERIAL", "shell"] runs the device's commands from a host.
        prefix = self.options.pop("command_prefix", None) or ()
        self.runner: CommandRunner = runner if runner is not None else SubprocessRunner(prefix=prefix)
        self._opened = False

    @property
    def simulated(self) -> bool:
        return self.sys.simulated

    def open(self) -> None:
        """Find the device's files; raise SensorUnavailable(reason) if this device lacks the sensor."""
        self._opened = True

    def close(self) -> None:
        """Release anything held (a background process); safe to call twice."""

    def ensure_open(self) -> None:
        if not self._opened:
            self.open()
            self._opened = True

    def describe(self) -> str:
        """The plugin and its source, e.g. ``hwmon:ina226 /sys/class/hwmon/hwmon3``."""
        return self.kind


class PowerSensor(Sensor):
    role = "power"

    @abc.abstractmethod
    def read(self) -> PowerReading:
        """One reading now; SensorUnavailable(reason) if it cannot be taken."""


class ThermalSensor(Sensor):
    role = "thermal"

    @abc.abstractmethod
    def read(self) -> ThermalReading:
        """Temperatures, clocks and throttle state now; SensorUnavailable(reason) if unreadable."""


# ---------------------------------------------------------------- registry

_REGISTRY: Dict[str, Type[Sensor]] = {}


def register_sensor(kind: str) -> Callable[[Type[Sensor]], Type[Sensor]]:
    """Class decorator: make ``kind`` name this implementation in profiles."""

    def deco(cls: Type[Sensor]) -> Type[Sensor]:
        if kind in _REGISTRY and _REGISTRY[kind] is not cls:
            raise SensorConfigError(f"sensor kind {kind!r} is registered twice ({_REGISTRY[kind].__name__}, {cls.__name__})")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return deco


def _load_builtin() -> None:
    # Importing the modules runs their @register_sensor decorators.
    from hilfarm.agent.sensors import commands, nvml, power, thermal  # noqa: F401


def sensor_kinds() -> Dict[str, Type[Sensor]]:
    _load_builtin()
    return dict(_REGISTRY)


def create_sensor(kind: str, options: Optional[Mapping[str, Any]] = None, root: Union[str, Path] = "/",
                  runner: Optional[CommandRunner] = None) -> Sensor:
    """Build the sensor a profile names; SensorConfigError if the kind or an option is unknown."""
    kinds = sensor_kinds()
    try:
        cls = kinds[kind]
    except KeyError:
        raise SensorConfigError(f"unknown sensor kind {kind!r}; known kinds: {', '.join(sorted(kinds))}") from None
    opts = dict(options or {})
    opts.pop("kind", None)
    allowed = getattr(cls, "option_names", None)
    if allowed is not None:
        bad = sorted(set(opts) - set(allowed) - {"command_prefix"})
        if bad:
            raise SensorConfigError(
                f"sensor kind {kind!r} has no option(s) {', '.join(bad)}; it takes: {', '.join(sorted(allowed)) or 'none'}")
    return cls(root=root, runner=runner, **opts)
