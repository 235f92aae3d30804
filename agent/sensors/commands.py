"""Sensors that parse command output: Raspberry Pi ``vcgencmd``, Jetson ``tegrastats`` and
``nvpmodel -q``, Android ``dumpsys thermalservice``.

Each parser is a plain function over the command's text, so a recorded output file
(tests/fixtures/commands/<device>/<command>.txt, read by RecordedRunner) goes through the same
code as the live command. Formats marked [unverified] in SENSORS.md are parsed tolerantly.
"""

from __future__ import annotations

import re
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from hilfarm.agent.sensors import (
    ClockReading,
    PowerReading,
    PowerSensor,
    SensorUnavailable,
    SubprocessRunner,
    ThermalReading,
    ThermalSensor,
    register_sensor,
)

# ---------------------------------------------------------------- vcgencmd

# get_throttled bits: the low nibble is "now", bits 16-19 the same four "since boot".
THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm frequency capped",
    2: "throttled",
    3: "soft temperature limit",
}


def parse_get_throttled(text: str) -> int:
    m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if not m:
        raise SensorUnavailable(f"vcgencmd get_throttled printed {text.strip()[:60]!r}, not throttled=0x...")
    return int(m.group(1), 0)


def decode_throttled(bits: int) -> Tuple[List[str], List[str]]:
    """(conditions now, conditions that have occurred since boot)."""
    now = [name + " now" for b, name in THROTTLE_BITS.items() if bits & (1 << b)]
    past = [name + " has occurred since boot" for b, name in THROTTLE_BITS.items() if bits & (1 << (b + 16))]
    return now, past


def parse_measure_temp(text: str) -> float:
    m = re.search(r"temp=(-?[0-9.]+)\s*'?C", text)
    if not m:
        raise SensorUnavailable(f"vcgencmd measure_temp printed {text.strip()[:60]!r}, not temp=N'C")
    return float(m.group(1))


def parse_measure_clock(text: str) -> float:
    m = re.search(r"frequency\(\d+\)=(\d+)", text)
    if not m:
        raise SensorUnavailable(f"vcgencmd measure_clock printed {text.strip()[:60]!r}, not frequency(N)=Hz")
    return float(m.group(1))


_PMIC_LINE = re.compile(r"^\s*(\S+?)\s+(current|volt)\(\d+\)\s*=\s*([-+0-9.eE]+)\s*[AV]?\s*$")


def parse_pmic_read_adc(text: str) -> Dict[str, Dict[str, float]]:
    """Rail -> {"A": amps, "V": volts}. Lines are paired by rail name; the index differs."""
    rails: Dict[str, Dict[str, float]] = {}
    for line in text.splitlines():
        m = _PMIC_LINE.match(line)
        if not m:
            continue
        name, what, value = m.group(1), m.group(2), float(m.group(3))
        unit = "A" if what == "current" else "V"
        if name.endswith("_" + unit):
            name = name[:-2]
        rails.setdefault(name, {})[unit] = value
    return rails


@register_sensor("vcgencmd")
class VcgencmdSensor(ThermalSensor):
    """Raspberry Pi firmware view: get_throttled bits, SoC temperature, ARM clock (and its cap
    from get_config arm_freq where the firmware says)."""

    option_names = ("command",)
    max_rate_hz = 10.0

    def _cmd(self, *args: str) -> str:
        return self.runner([self.options.get("command", "vcgencmd")] + list(args))

    def open(self) -> None:
        parse_get_throttled(self._cmd("get_throttled"))
        self._arm_max: Optional[float] = None
        try:
            m = re.search(r"arm_freq=(\d+)", self._cmd("get_config", "arm_freq"))
            if m and int(m.group(1)) > 0:
                self._arm_max = int(m.group(1)) * 1e6
        except SensorUnavailable:
            pass

    def describe(self) -> str:
        return "vcgencmd"

    def read(self) -> ThermalReading:
        self.ensure_open()
        bits = parse_get_throttled(self._cmd("get_throttled"))
        now, past = decode_throttled(bits)
        r = ThermalReading(throttled=bool(now), throttle_reasons=now, events=past)
        r.info["get_throttled"] = f"0x{bits:x}"
        try:
            r.temperatures["soc"] = parse_measure_temp(self._cmd("measure_temp"))
        except SensorUnavailable as exc:
            r.unreadable["soc"] = exc.reason
        try:
            r.clocks["arm"] = ClockReading(hz=parse_measure_clock(self._cmd("measure_clock", "arm")),
                                           hardware_max_hz=self._arm_max)
        except SensorUnavailable as exc:
            r.unreadable["arm"] = exc.reason
        return r


EXT5V_NOTE = ("Pi 5 PMIC rails only: EXT5V (the 5 V input) has a voltage but no current reading, so the sum "
              "leaves out USB, peripherals and conversion losses and under-reads the board's input power")


@register_sensor("rpi5-pmic")
class Rpi5PmicSensor(PowerSensor):
    """Raspberry Pi 5 ``vcgencmd pmic_read_adc``: rails with both current and voltage, summed."""

    option_names = ("command",)
    max_rate_hz = 10.0

    def _read_rails(self) -> Dict[str, Dict[str, float]]:
        rails = parse_pmic_read_adc(self.runner([self.options.get("command", "vcgencmd"), "pmic_read_adc"]))
        if not any("A" in v and "V" in v for v in rails.values()):
            raise SensorUnavailable("vcgencmd pmic_read_adc gave no rail with both current and voltage "
                                    "(only a Raspberry Pi 5 has this PMIC)")
        return rails

    def open(self) -> None:
        self._read_rails()

    def describe(self) -> str:
        return "vcgencmd pmic_read_adc"

    def read(self) -> PowerReading:
        self.ensure_open()
        rails = self._read_rails()
        watts = {name: v["A"] * v["V"] for name, v in rails.items() if "A" in v and "V" in v}
        volt_only = sorted(name for name, v in rails.items() if "A" not in v)
        notes = [EXT5V_NOTE] if "EXT5V" in volt_only else []
        return PowerReading(total_watts=sum(watts.values()), rails=watts,
                            total_method="sum of PMIC rails (under-reads input power: EXT5V has no current)",
                            notes=notes)


# ---------------------------------------------------------------- tegrastats


@dataclass
class TegrastatsLine:
    rails_mw: Dict[str, Tuple[float, float]] = field(default_factory=dict)  # rail -> (now, running avg)
    temperatures: Dict[str, float] = field(default_factory=dict)
    cpu_mhz: Dict[str, float] = field(default_factory=dict)  # cpuN -> MHz (offline cores left out)
    gpu_mhz: Optional[float] = None
    emc_mhz: Optional[float] = None


_TS_RAIL = re.compile(r"(?<!\S)([A-Z][A-Z0-9_]*)\s+(\d+(?:\.\d+)?)(?:mW)?/(\d+(?:\.\d+)?)(?:mW)?(?=\s|$)")
_TS_TEMP = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C(?=\s|$)")
_TS_CPU = re.compile(r"CPU\s*\[([^\]]*)\]")
_TS_FREQ = re.compile(r"(?<!\S)(GR3D_FREQ|EMC_FREQ)\s+\d+%(?:@\[?(\d+)(?:,\d+)*\]?)?")


def parse_tegrastats(line: str) -> TegrastatsLine:
    """One tegrastats line, L4T 32 (``POM_5V_IN 2545/2547``, ``CPU@25C``) or JetPack 5/6
    (``VDD_IN 3913mW/3922mW``, ``cpu@62.843C``). The second rail figure is tegrastats' running
    average, which is not a mean: use the first."""
    out = TegrastatsLine()
    for name, cur, avg in _TS_RAIL.findall(line):
        if name in ("RAM", "SWAP", "IRAM", "LFB"):
            continue
        out.rails_mw[name] = (float(cur), float(avg))
    for name, c in _TS_TEMP.findall(line):
        value = float(c)
        if value <= -200:  # tegrastats prints -256C for a zone without a reading
            continue
        out.temperatures[name] = value
    m = _TS_CPU.search(line)
    if m:
        for i, item in enumerate(m.group(1).split(",")):
            fm = re.search(r"@(\d+)", item)
            if fm:
                out.cpu_mhz[f"cpu{i}"] = float(fm.group(1))
    for name, mhz in _TS_FREQ.findall(line):
        if mhz:
            if name == "GR3D_FREQ":
                out.gpu_mhz = float(mhz)
            else:
                out.emc_mhz = float(mhz)
    if not (out.rails_mw or out.temperatures or out.cpu_mhz):
        raise SensorUnavailable(f"tegrastats printed {line.strip()[:80]!r}, which has no rails, zones or CPU clocks")
    return out


class TegrastatsStream:
    """Keeps ``tegrastats --interval MS`` running and hands out its latest line."""

    def __init__(self, prefix: Sequence[str] = (), interval_ms: int = 100, command: str = "tegrastats") -> None:
        self.argv = list(prefix) + [command, "--interval", str(int(interval_ms))]
        self._latest: Optional[str] = None
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        try:
            self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          universal_newlines=True)
        except FileNotFoundError:
            raise SensorUnavailable(f"command {self.argv[0]!r} is not installed (not found on PATH)") from None
        threading.Thread(target=self._pump, name="tegrastats-reader", daemon=True).start()

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip():
                with self._lock:
                    self._latest = line

    def __call__(self, argv: Sequence[str]) -> str:
        with self._lock:
            latest = self._latest
        if latest is None:
            if self._proc is not None and self._proc.poll() is not None:
                raise SensorUnavailable(f"tegrastats exited with status {self._proc.returncode}")
            raise SensorUnavailable("tegrastats has not printed a line yet")
        return latest

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()


class _TegrastatsBase:
    option_names = ("interval_ms", "command", "command_prefix")
    max_rate_hz = 10.0

    def _start_source(self) -> None:
        self._stream: Optional[TegrastatsStream] = None
        if isinstance(self.runner, SubprocessRunner):  # type: ignore[attr-defined]
            # The live command never exits by itself: keep it running and read its latest line.
            self._stream = TegrastatsStream(self.runner.prefix, int(self.options.get("interval_ms", 100)),  # type: ignore[attr-defined]
                                            self.options.get("command", "tegrastats"))  # type: ignore[attr-defined]
            self._stream.start()
            self.runner = self._stream  # type: ignore[assignment]

    def _line(self) -> TegrastatsLine:
        text = self.runner([self.options.get("command", "tegrastats")])  # type: ignore[attr-defined]
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            raise SensorUnavailable("tegrastats printed nothing")
        return parse_tegrastats(lines[-1])

    def close(self) -> None:
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.stop()


@register_sensor("tegrastats-power")
class TegrastatsPowerSensor(_TegrastatsBase, PowerSensor):
    """Jetson rails from tegrastats, the fallback where the INA3221 files are not readable."""

    option_names = _TegrastatsBase.option_names + ("total_rail",)

    def open(self) -> None:
        self._start_source()

    def describe(self) -> str:
        return "tegrastats"

    def read(self) -> PowerReading:
        self.ensure_open()
        line = self._line()
        if not line.rails_mw:
            raise SensorUnavailable("tegrastats shows no power rails (a Jetson Nano 2GB has no power monitor)")
        rails = {k: cur / 1000.0 for k, (cur, _) in line.rails_mw.items()}
        total = self.options.get("total_rail") or next((r for r in ("VDD_IN", "POM_5V_IN") if r in rails), None)
        if total and total in rails:
            return PowerReading(total_watts=rails[total], rails=rails, total_method=f"rail {total}")
        from hilfarm.agent.sensors.power import JETSON_DOWNSTREAM_RAILS

        summed = [r for r in rails if not (r in JETSON_DOWNSTREAM_RAILS and JETSON_DOWNSTREAM_RAILS[r] in rails)]
        return PowerReading(total_watts=sum(rails[r] for r in summed), rails=rails,
                            total_method="sum of rails " + "+".join(summed))


@register_sensor("tegrastats-thermal")
class TegrastatsThermalSensor(_TegrastatsBase, ThermalSensor):
    """Jetson zones and CPU/GPU/EMC clocks from tegrastats."""

    def open(self) -> None:
        self._start_source()

    def describe(self) -> str:
        return "tegrastats"

    def read(self) -> ThermalReading:
        self.ensure_open()
        line = self._line()
        r = ThermalReading(temperatures=dict(line.temperatures))
        for cpu, mhz in line.cpu_mhz.items():
            r.clocks[cpu] = ClockReading(hz=mhz * 1e6)
        if line.gpu_mhz is not None:
            r.clocks["gpu"] = ClockReading(hz=line.gpu_mhz * 1e6)
        if line.emc_mhz is not None:
            r.clocks["emc"] = ClockReading(hz=line.emc_mhz * 1e6)
        return r


# ---------------------------------------------------------------- nvpmodel / jetson_clocks


def parse_nvpmodel(text: str) -> Tuple[str, Optional[int]]:
    """``NV Power Mode: MAXN`` followed by the mode id on its own line."""
    m = re.search(r"NV Power Mode:\s*(\S[^\n]*)", text)
    if not m:
        raise SensorUnavailable(f"nvpmodel -q printed {text.strip()[:60]!r}, without 'NV Power Mode:'")
    rest = text[m.end():]
    idm = re.search(r"^\s*(\d+)\s*$", rest, re.M)
    return m.group(1).strip(), int(idm.group(1)) if idm else None


@register_sensor("jetson-mode")
class JetsonModeSensor(ThermalSensor):
    """Records the nvpmodel power mode and whether jetson_clocks is on. jetson_clocks pins every
    online CPU's and the GPU's minimum clock to its maximum, which is how it is recognised here
    (``jetson_clocks --show`` needs root)."""

    option_names = ()
    max_rate_hz = 0.2

    def open(self) -> None:
        parse_nvpmodel(self.runner(["nvpmodel", "-q"]))

    def describe(self) -> str:
        return "nvpmodel -q + cpufreq/devfreq"

    def read(self) -> ThermalReading:
        self.ensure_open()
        name, mode_id = parse_nvpmodel(self.runner(["nvpmodel", "-q"]))
        r = ThermalReading()
        r.info["nvpmodel"] = name if mode_id is None else f"{name} (mode {mode_id})"
        pinned: List[bool] = []
        for c in self.sys.glob("sys/devices/system/cpu/cpu[0-9]*"):
            if (self.sys.read_optional(f"{c}/online") or "1").strip() == "0":
                continue
            mn = self.sys.read_optional(f"{c}/cpufreq/scaling_min_freq")
            mx = self.sys.read_optional(f"{c}/cpufreq/scaling_max_freq")
            if mn is not None and mx is not None:
                pinned.append(mn.strip() == mx.strip())
        for d in self.sys.glob("sys/class/devfreq/*"):
            base = d.rsplit("/", 1)[-1]
            if re.search(r"gpu|gv11b|ga10b|gp10b|gm20b", base):
                mn = self.sys.read_optional(f"{d}/min_freq")
                mx = self.sys.read_optional(f"{d}/max_freq")
                if mn is not None and mx is not None:
                    pinned.append(mn.strip() == mx.strip())
        if pinned:
            r.info["jetson_clocks"] = "on" if all(pinned) else "off"
        else:
            r.unreadable["jetson_clocks"] = "no cpufreq or GPU devfreq limits to tell whether jetson_clocks is on"
        return r


# ---------------------------------------------------------------- Android


THERMAL_STATUS = {0: "none", 1: "light", 2: "moderate", 3: "severe", 4: "critical", 5: "emergency", 6: "shutdown"}

_ANDROID_TEMP = re.compile(r"Temperature\{([^}]*)\}")


def _fields(body: str) -> Dict[str, str]:
    out = {}
    for part in body.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


@dataclass
class AndroidThermal:
    status: Optional[int]
    temperatures: Dict[str, Tuple[float, int]]  # mName -> (°C, mStatus)


def parse_dumpsys_thermalservice(text: str) -> AndroidThermal:
    sm = re.search(r"Thermal Status:\s*(\d+)", text)
    status = int(sm.group(1)) if sm else None
    temps: Dict[str, Tuple[float, int]] = {}
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip().startswith("Current temperatures from HAL")), None)
    if start is not None:
        for ln in lines[start + 1:]:
            if ln.strip() and not ln[:1].isspace() and not ln.strip().startswith("Temperature{"):
                break  # the next section begins at the left margin
            m = _ANDROID_TEMP.search(ln)
            if not m:
                continue
            f = _fields(m.group(1))
            name = f.get("mName")
            try:
                value = float(f.get("mValue", "nan"))
            except ValueError:
                continue
            if not name or value != value:  # NaN: the HAL has no reading for it
                continue
            try:
                sev = int(f.get("mStatus", "0"))
            except ValueError:
                sev = 0
            temps[name] = (value, sev)
    if status is None and not temps:
        raise SensorUnavailable("dumpsys thermalservice printed neither 'Thermal Status:' nor HAL temperatures")
    return AndroidThermal(status, temps)


@register_sensor("android-thermalservice")
class AndroidThermalServiceSensor(ThermalSensor):
    """Android ``dumpsys thermalservice``: the framework's Thermal Status (0 none .. 6 shutdown)
    and the HAL temperatures keyed on mName. Options: ``zones`` (mNames to keep)."""

    option_names = ("zones", "command_prefix")
    max_rate_hz = 2.0

    def open(self) -> None:
        parse_dumpsys_thermalservice(self.runner(["dumpsys", "thermalservice"]))

    def describe(self) -> str:
        return "dumpsys thermalservice"

    def read(self) -> ThermalReading:
        self.ensure_open()
        t = parse_dumpsys_thermalservice(self.runner(["dumpsys", "thermalservice"]))
        only = set(self.options.get("zones") or [])
        r = ThermalReading()
        for name, (c, sev) in t.temperatures.items():
            if only and name not in only:
                continue
            r.temperatures[name] = c
            if sev > 0:
                r.throttle_reasons.append(f"{name} severity {sev} ({THERMAL_STATUS.get(sev, '?')})")
        if t.status is not None:
            r.info["thermal_status"] = f"{t.status} ({THERMAL_STATUS.get(t.status, 'unknown')})"
            if t.status > 0:
                r.throttle_reasons.insert(0, f"thermal status {t.status} ({THERMAL_STATUS.get(t.status, 'unknown')})")
            r.throttled = t.status > 0
        return r
