"""NVIDIA GPU power, temperature, clocks and clock-event reasons through NVML (nvidia-ml-py).

Every NVML call goes through an injectable object with pynvml's function names (the
``pynvml`` module itself on a GPU host, :class:`RecordedNvml` in tests and demos), so the
same sensor code handles real and recorded values. The energy counter
(nvmlDeviceGetTotalEnergyConsumption, mJ since driver load, Volta+) is preferred over
nvmlDeviceGetPowerUsage, which is a 1 s average on Ampere and later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from hilfarm.agent.sensors import (
    ClockReading,
    EnergyCounter,
    PowerReading,
    PowerSensor,
    SensorUnavailable,
    ThermalReading,
    ThermalSensor,
    register_sensor,
)

# nvmlClocksEventReason* bits (…ClocksThrottleReason* is the deprecated name of the same mask).
CLOCK_EVENT_REASONS: List[Tuple[int, str]] = [
    (0x1, "GpuIdle"),
    (0x2, "AppClocks"),
    (0x4, "SwPowerCap"),
    (0x8, "HwSlowdown"),
    (0x10, "SyncBoost"),
    (0x20, "SwThermalSlowdown"),
    (0x40, "HwThermalSlowdown"),
    (0x80, "HwPowerBrakeSlowdown"),
    (0x100, "DisplayClockSetting"),
]
# Reasons that slow the GPU below what the workload asked for; idle, app clocks, sync boost do not.
THROTTLING_REASONS = 0x4 | 0x8 | 0x20 | 0x40 | 0x80


def decode_clock_event_reasons(mask: int) -> List[str]:
    return [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]


class NvmlSession:
    """One GPU through an NVML-like object; NVML errors become SensorUnavailable with the reason."""

    def __init__(self, nvml: Any = None, index: int = 0) -> None:
        if nvml is None:
            try:
                import pynvml as nvml  # type: ignore[no-redef]
            except ImportError:
                raise SensorUnavailable("nvidia-ml-py is not installed (pip install 'hilfarm[nvidia]')") from None
        self.nvml = nvml
        self.index = index
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded ...
            raise SensorUnavailable(f"NVML did not start ({exc}): no NVIDIA driver or GPU on this host") from None
        count = self.call("nvmlDeviceGetCount")
        if index >= count:
            raise SensorUnavailable(f"GPU index {index} does not exist (NVML sees {count} GPU(s))")
        self.handle = self.call("nvmlDeviceGetHandleByIndex", index)
        name = self.call("nvmlDeviceGetName", self.handle)
        self.name = name.decode() if isinstance(name, bytes) else str(name)

    def call(self, fn: str, *args: Any) -> Any:
        f = getattr(self.nvml, fn, None)
        if f is None:
            raise SensorUnavailable(f"this NVML binding has no {fn}")
        try:
            return f(*args)
        except Exception as exc:
            raise SensorUnavailable(f"{fn} failed on GPU {self.index}: {exc}") from None

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:
            pass


class _NvmlBase:
    # nvml: an NVML-like object (tests); recorded: a JSON file of recorded values (demos, tests).
    option_names = ("index", "nvml", "recorded")

    def _session(self) -> NvmlSession:
        nvml = getattr(self, "_nvml_override", None)
        recorded = self.options.get("recorded")  # type: ignore[attr-defined]
        if nvml is None and recorded:
            nvml = RecordedNvml(recorded)
        return NvmlSession(nvml, int(self.options.get("index", 0)))  # type: ignore[attr-defined]

    def describe(self) -> str:
        s = getattr(self, "_s", None)
        idx = int(self.options.get("index", 0))  # type: ignore[attr-defined]
        return f"nvml gpu{idx}" + (f" {s.name}" if s is not None else "")

    def close(self) -> None:
        s = getattr(self, "_s", None)
        if s is not None:
            s.close()
            self._s = None


def _init_nvml_arg(obj: Any, options: Dict[str, Any]) -> None:
    obj._nvml_override = options.pop("nvml", None)


@register_sensor("nvml-power")
class NvmlPowerSensor(_NvmlBase, PowerSensor):
    """GPU board power: the energy counter where the GPU has one, and the power reading."""

    def __init__(self, root: Union[str, Path] = "/", runner: Any = None, **options: Any) -> None:
        _init_nvml_arg(self, options)
        super().__init__(root=root, runner=runner, **options)

    def open(self) -> None:
        self._s = self._session()
        self._has_energy = True
        try:
            self._s.call("nvmlDeviceGetTotalEnergyConsumption", self._s.handle)
        except SensorUnavailable as exc:
            self._has_energy = False
            self._energy_reason = exc.reason
        self._has_power = True
        try:
            self._s.call("nvmlDeviceGetPowerUsage", self._s.handle)
        except SensorUnavailable as exc:
            self._has_power = False
            if not self._has_energy:
                raise SensorUnavailable(f"GPU {self._s.index} reports neither energy nor power: {exc.reason}") from None

    def read(self) -> PowerReading:
        self.ensure_open()
        ch = f"gpu{self._s.index}"
        r = PowerReading()
        if self._has_energy:
            mj = int(self._s.call("nvmlDeviceGetTotalEnergyConsumption", self._s.handle))
            r.counters[ch] = EnergyCounter(value=mj, unit_joules=1e-3, wrap=None)
            r.total_method = "NVML total energy counter"
        else:
            r.notes.append(f"no NVML energy counter ({self._energy_reason}); energy integrates the 1 s averaged "
                           f"power reading")
        if self._has_power:
            w = int(self._s.call("nvmlDeviceGetPowerUsage", self._s.handle)) / 1000.0
            r.total_watts = w
            r.rails[ch] = w
            if not r.total_method:
                r.total_method = "NVML power usage"
        return r


@register_sensor("nvml-thermal")
class NvmlThermalSensor(_NvmlBase, ThermalSensor):
    """GPU temperature, graphics/SM/memory clocks against their maxima, clock-event reasons."""

    def __init__(self, root: Union[str, Path] = "/", runner: Any = None, **options: Any) -> None:
        _init_nvml_arg(self, options)
        super().__init__(root=root, runner=runner, **options)

    def open(self) -> None:
        self._s = self._session()
        self._max: Dict[str, Optional[float]] = {}
        for dom, const in (("graphics", "NVML_CLOCK_GRAPHICS"), ("sm", "NVML_CLOCK_SM"), ("mem", "NVML_CLOCK_MEM")):
            try:
                self._max[dom] = float(self._s.call("nvmlDeviceGetMaxClockInfo", self._s.handle,
                                                    getattr(self._s.nvml, const))) * 1e6
            except SensorUnavailable:
                self._max[dom] = None

    def read(self) -> ThermalReading:
        self.ensure_open()
        s = self._s
        gpu = f"gpu{s.index}"
        r = ThermalReading()
        try:
            r.temperatures[gpu] = float(s.call("nvmlDeviceGetTemperature", s.handle, s.nvml.NVML_TEMPERATURE_GPU))
        except SensorUnavailable as exc:
            r.unreadable[gpu] = exc.reason
        for dom, const in (("graphics", "NVML_CLOCK_GRAPHICS"), ("sm", "NVML_CLOCK_SM"), ("mem", "NVML_CLOCK_MEM")):
            try:
                mhz = float(s.call("nvmlDeviceGetClockInfo", s.handle, getattr(s.nvml, const)))
            except SensorUnavailable as exc:
                r.unreadable[f"{gpu}.{dom}"] = exc.reason
                continue
            r.clocks[f"{gpu}.{dom}"] = ClockReading(hz=mhz * 1e6, hardware_max_hz=self._max.get(dom))
        fn = ("nvmlDeviceGetCurrentClocksEventReasons" if hasattr(s.nvml, "nvmlDeviceGetCurrentClocksEventReasons")
              else "nvmlDeviceGetCurrentClocksThrottleReasons")
        try:
            mask = int(s.call(fn, s.handle))
        except SensorUnavailable as exc:
            r.unreadable[f"{gpu}.clock_event_reasons"] = exc.reason
            return r
        r.info["clock_event_reasons"] = f"0x{mask:x} " + ("|".join(decode_clock_event_reasons(mask)) or "none")
        r.throttle_reasons = decode_clock_event_reasons(mask & THROTTLING_REASONS)
        r.throttled = bool(r.throttle_reasons)
        return r


class RecordedNvmlError(Exception):
    """Shaped like pynvml.NVMLError: ``value`` is the NVML return code."""

    _names = {3: "Not Supported", 9: "Driver Not Loaded", 12: "NVML Shared Library Not Found", 999: "Unknown Error"}

    def __init__(self, value: int) -> None:
        super().__init__(self._names.get(value, f"NVML error {value}"))
        self.value = value


class RecordedNvmlLegacy:
    """A stand-in for the ``pynvml`` module that answers from a JSON file of values recorded on a
    real GPU (tests/fixtures/sysfs/nvidia-gpu/nvml.json). This one has only the deprecated
    ...ThrottleReasons call, as bindings before NVML 12.2 did; :class:`RecordedNvml` has both. The file is read again on every call,
    so a test changes a reading by rewriting it. Unsupported calls are listed in the JSON under
    ``not_supported`` and fail the way NVML does (NVML_ERROR_NOT_SUPPORTED)."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_GRAPHICS = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_ERROR_NOT_SUPPORTED = 3
    NVMLError = RecordedNvmlError
    _CLOCKS = {0: "graphics", 1: "sm", 2: "mem"}

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)

    def _doc(self) -> Dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            raise RecordedNvmlError(12) from None

    def _dev(self, handle: int, fn: str) -> Dict[str, Any]:
        d = self._doc()["devices"][handle]
        if fn in d.get("not_supported", []):
            raise RecordedNvmlError(3)
        return d

    def nvmlInit(self) -> None:
        doc = self._doc()
        if doc.get("init_error"):
            raise RecordedNvmlError(int(doc["init_error"]))

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self._doc()["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, h: int) -> str:
        return self._dev(h, "nvmlDeviceGetName")["name"]

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return int(self._dev(h, "nvmlDeviceGetPowerUsage")["power_usage_mw"])

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        return int(self._dev(h, "nvmlDeviceGetTotalEnergyConsumption")["total_energy_mj"])

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return int(self._dev(h, "nvmlDeviceGetTemperature")["temperature_gpu_c"])

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:
        return int(self._dev(h, "nvmlDeviceGetClockInfo")["clock_mhz"][self._CLOCKS[clock]])

    def nvmlDeviceGetMaxClockInfo(self, h: int, clock: int) -> int:
        return int(self._dev(h, "nvmlDeviceGetMaxClockInfo")["max_clock_mhz"][self._CLOCKS[clock]])

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: int) -> int:
        return int(self._dev(h, "nvmlDeviceGetCurrentClocksThrottleReasons")["clocks_event_reasons"])


class RecordedNvml(RecordedNvmlLegacy):
    """:class:`RecordedNvmlLegacy` plus nvmlDeviceGetCurrentClocksEventReasons (current bindings)."""

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: int) -> int:
        return int(self._dev(h, "nvmlDeviceGetCurrentClocksEventReasons")["clocks_event_reasons"])
