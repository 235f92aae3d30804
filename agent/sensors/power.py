"""Power sensors that read sysfs: hwmon chips (INA219/226/260 ...), Jetson INA3221, x86 RAPL,
Android battery. Units follow the kernel ABI (see SENSORS.md): µW, mV, mA, µJ, mW (iio)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hilfarm.agent.sensors import (
    EnergyCounter,
    PowerReading,
    PowerSensor,
    SensorConfigError,
    SensorUnavailable,
    register_sensor,
)

INA_CHIPS = ("ina209", "ina219", "ina220", "ina226", "ina230", "ina231", "ina238", "ina260")


def _as_list(v: Any) -> List[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v]


@dataclass
class _Channel:
    rail: str
    kind: str  # "power_uW" | "curr_in" | "iio_mW"
    files: Tuple[str, ...]


def _channel_watts(sys, ch: _Channel) -> float:
    if ch.kind == "power_uW":
        return sys.read_int(ch.files[0]) / 1e6
    if ch.kind == "iio_mW":
        return sys.read_int(ch.files[0]) / 1e3
    # curr (mA) x bus voltage (mV) = µW
    return sys.read_int(ch.files[0]) * sys.read_int(ch.files[1]) / 1e6


def _hwmon_attr_dir(sys, hw: str) -> str:
    # Kernels before 4.x kept the attributes in hwmonN/device/.
    if sys.exists(f"{hw}/name"):
        return hw
    if sys.exists(f"{hw}/device/name"):
        return f"{hw}/device"
    return hw


def _hwmon_channels(sys, d: str, first: int = 1, last: int = 8) -> List[Tuple[int, str, Tuple[str, ...]]]:
    out = []
    for k in range(first, last + 1):
        if sys.exists(f"{d}/power{k}_input"):
            out.append((k, "power_uW", (f"{d}/power{k}_input",)))
        elif sys.exists(f"{d}/power{k}_average"):
            out.append((k, "power_uW", (f"{d}/power{k}_average",)))
        elif sys.exists(f"{d}/curr{k}_input") and sys.exists(f"{d}/in{k}_input"):
            out.append((k, "curr_in", (f"{d}/curr{k}_input", f"{d}/in{k}_input")))
    return out


@register_sensor("hwmon-power")
class HwmonPowerSensor(PowerSensor):
    """Any hwmon chip with power*_input / power*_average (µW) or curr*+in* (mA × mV).

    Options: ``chip`` (name or list, default the INA2xx family), ``labels`` (``"<chip>:<K>"`` or
    ``"<K>"`` -> rail name), ``total_rail`` (one rail is the input; default: sum of all).
    """

    option_names = ("chip", "labels", "total_rail")

    def open(self) -> None:
        chips = _as_list(self.options.get("chip")) or list(INA_CHIPS)
        labels = {str(k): str(v) for k, v in (self.options.get("labels") or {}).items()}
        self._channels: List[_Channel] = []
        self._sources: List[str] = []
        seen_names: Dict[str, int] = {}
        hwmons = self.sys.glob("sys/class/hwmon/hwmon*")
        if not hwmons:
            raise SensorUnavailable("no hwmon chips on this device (/sys/class/hwmon is empty or missing)")
        found = []
        for hw in hwmons:
            d = _hwmon_attr_dir(self.sys, hw)
            name = (self.sys.read_optional(f"{d}/name") or "").strip()
            found.append(name or "?")
            if name not in chips:
                continue
            chans = _hwmon_channels(self.sys, d)
            if not chans:
                continue
            n = seen_names.get(name, 0)
            seen_names[name] = n + 1
            chip_id = name if n == 0 else f"{name}#{n}"
            self._sources.append(f"{chip_id} {self.sys.display(hw)}")
            for k, kind, files in chans:
                label = (self.sys.read_optional(f"{d}/power{k}_label") or self.sys.read_optional(f"{d}/in{k}_label")
                         or "").strip()
                rail = (labels.get(f"{chip_id}:{k}") or labels.get(str(k)) or label
                        or (chip_id if len(chans) == 1 else f"{chip_id}:{k}"))
                self._channels.append(_Channel(rail, kind, files))
        if not self._channels:
            raise SensorUnavailable(
                f"no hwmon chip named {', '.join(chips)} with power or current+voltage inputs "
                f"(chips found: {', '.join(found)})")
        total = self.options.get("total_rail")
        if total and total not in {c.rail for c in self._channels}:
            raise SensorConfigError(
                f"total_rail {total!r} is not one of the rails found: {', '.join(c.rail for c in self._channels)}")

    def describe(self) -> str:
        return "hwmon:" + ", ".join(getattr(self, "_sources", [])) if getattr(self, "_sources", None) else "hwmon"

    def read(self) -> PowerReading:
        self.ensure_open()
        rails = {c.rail: _channel_watts(self.sys, c) for c in self._channels}
        total_rail = self.options.get("total_rail")
        if total_rail:
            return PowerReading(total_watts=rails[total_rail], rails=rails, total_method=f"rail {total_rail}")
        method = "rail " + next(iter(rails)) if len(rails) == 1 else "sum of rails " + "+".join(rails)
        return PowerReading(total_watts=sum(rails.values()), rails=rails, total_method=method)


# Rails fed by another measured rail: adding them to the sum would count that power twice.
JETSON_DOWNSTREAM_RAILS = {"VDDQ_VDD2_1V8AO": "VIN_SYS_5V0"}
JETSON_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")


@register_sensor("jetson-ina3221")
class JetsonIna3221Sensor(PowerSensor):
    """Jetson module rails: JetPack 4 ina3221x (iio, mW, channels from 0) or JetPack 5/6 mainline
    ina3221 (hwmon, mV × mA, channels from 1; "NC" and the sum channel skipped).

    Options: ``total_rail`` (default VDD_IN or POM_5V_IN when present), ``downstream`` (rail ->
    the rail that feeds it; left out of the sum), ``rails`` (only these).
    """

    option_names = ("total_rail", "downstream", "rails")

    def open(self) -> None:
        self._channels: List[_Channel] = []
        self._sources: List[str] = []
        only = set(_as_list(self.options.get("rails")))
        for dev in self.sys.glob("sys/bus/i2c/drivers/ina3221x/*/iio:device*"):
            self._sources.append(self.sys.display(dev))
            for k in range(0, 8):
                name = self.sys.read_optional(f"{dev}/rail_name_{k}")
                if name is None:
                    break
                name = name.strip()
                if name and name != "NC" and (not only or name in only):
                    self._channels.append(_Channel(name, "iio_mW", (f"{dev}/in_power{k}_input",)))
        for hw in self.sys.glob("sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"):
            self._sources.append(self.sys.display(hw))
            # Channels 1-3 are the shunts; in4-7/curr4 are shunt voltages and the summation channel.
            for k in range(1, 4):
                label = self.sys.read_optional(f"{hw}/in{k}_label")
                if label is None or not self.sys.exists(f"{hw}/curr{k}_input"):
                    continue
                label = label.strip()
                if not label or label.upper() == "NC" or label.lower().startswith("sum"):
                    continue
                if only and label not in only:
                    continue
                self._channels.append(_Channel(label, "curr_in", (f"{hw}/curr{k}_input", f"{hw}/in{k}_input")))
        if not self._channels:
            if self._sources:
                raise SensorUnavailable(f"INA3221 found ({', '.join(self._sources)}) but no labelled rails")
            raise SensorUnavailable(
                "no INA3221 power monitor (neither /sys/bus/i2c/drivers/ina3221x nor /sys/bus/i2c/drivers/ina3221 "
                "has a device; the Jetson Nano 2GB has none)")
        names = [c.rail for c in self._channels]
        total = self.options.get("total_rail")
        if total and total not in names:
            raise SensorConfigError(f"total_rail {total!r} is not one of the rails found: {', '.join(names)}")
        if not total:
            total = next((r for r in JETSON_INPUT_RAILS if r in names), None)
        self._total = total
        downstream = dict(JETSON_DOWNSTREAM_RAILS)
        downstream.update({str(k): str(v) for k, v in (self.options.get("downstream") or {}).items()})
        self._summed = [r for r in names if not (r in downstream and downstream[r] in names)]
        self._excluded = [(r, downstream[r]) for r in names if r not in self._summed]

    def describe(self) -> str:
        return "jetson-ina3221 " + ", ".join(getattr(self, "_sources", []))

    def read(self) -> PowerReading:
        self.ensure_open()
        rails = {c.rail: _channel_watts(self.sys, c) for c in self._channels}
        if self._total:
            return PowerReading(total_watts=rails[self._total], rails=rails, total_method=f"rail {self._total}")
        method = "sum of rails " + "+".join(self._summed)
        if self._excluded:
            method += " (" + "; ".join(f"{r} left out: fed by {src}" for r, src in self._excluded) + ")"
        return PowerReading(total_watts=sum(rails[r] for r in self._summed), rails=rails, total_method=method)


_RAPL_TOP = re.compile(r"intel-rapl:(\d+)$")
_RAPL_SUB = re.compile(r"intel-rapl:(\d+):(\d+)$")


@register_sensor("rapl")
class RaplSensor(PowerSensor):
    """x86 RAPL energy counters (/sys/class/powercap/intel-rapl:N[:M]/energy_uj, µJ); AMD Zen too.

    Energy only: no instantaneous power. The total is ``psys`` where the platform has it, else
    the packages plus DRAM. Options: ``domains`` (only these names, e.g. [package-0]).
    """

    option_names = ("domains",)

    def open(self) -> None:
        only = set(_as_list(self.options.get("domains")))
        zones = []
        for z in self.sys.glob("sys/class/powercap/intel-rapl:*"):
            base = z.rsplit("/", 1)[-1]
            top = _RAPL_TOP.match(base)
            sub = _RAPL_SUB.match(base)
            if not (top or sub):
                continue
            name = (self.sys.read_optional(f"{z}/name") or base).strip()
            parent = None
            if sub:
                parent = (self.sys.read_optional(f"sys/class/powercap/intel-rapl:{sub.group(1)}/name") or "").strip()
            key = f"{parent}/{name}" if parent else name
            zones.append((key, name, bool(top), z))
        if not zones:
            raise SensorUnavailable("no RAPL domains (/sys/class/powercap/intel-rapl:* missing; "
                                    "not an Intel/AMD x86 CPU or the intel_rapl driver is not loaded)")
        if only:
            zones = [zz for zz in zones if zz[0] in only or zz[1] in only]
            if not zones:
                raise SensorConfigError(f"none of the RAPL domains {sorted(only)} exists on this device")
        has_psys = any(top and name == "psys" for _, name, top, _ in zones)
        self._zones = []
        for key, name, top, z in zones:
            # psys covers the whole SoC; without it, packages and DRAM are disjoint and add up.
            in_total = (name == "psys") if has_psys else (top or name == "dram")
            wrap = None
            text = self.sys.read_optional(f"{z}/max_energy_range_uj")
            if text is not None and text.strip().isdigit():
                wrap = int(text.strip())  # a drop means the counter passed max_energy_range_uj
            self._zones.append((key, f"{z}/energy_uj", wrap, in_total))
        # Since kernel 5.10 energy_uj is root-only (a power side channel, CVE-2020-8694).
        try:
            self.sys.read_int(self._zones[0][1])
        except SensorUnavailable as exc:
            if "permission denied" in exc.reason:
                raise SensorUnavailable(
                    exc.reason + "; RAPL energy counters are readable only by root since kernel 5.10: run the "
                    "agent as root or make energy_uj readable (udev rule / chmod o+r)") from None
            raise
        self._source = self.sys.display("sys/class/powercap")

    def describe(self) -> str:
        return "rapl " + getattr(self, "_source", "/sys/class/powercap")

    def read(self) -> PowerReading:
        self.ensure_open()
        counters = {}
        for key, path, wrap, in_total in self._zones:
            counters[key] = EnergyCounter(value=self.sys.read_int(path), unit_joules=1e-6, wrap=wrap,
                                          in_total=in_total)
        total = [k for k, c in counters.items() if c.in_total]
        return PowerReading(counters=counters, total_method="energy counters " + "+".join(total))


@register_sensor("android-battery")
class AndroidBatterySensor(PowerSensor):
    """Battery current × voltage from /sys/class/power_supply/<supply>/{current_now,voltage_now}.

    Vendors differ: ``current_unit`` uA (ABI) or mA, ``voltage_unit`` uV (ABI) or mV, and
    ``discharge_sign`` negative (ABI: discharging is negative) or positive. Calibrate per profile.
    While USB power is connected the battery does not see the phone's draw; the reading says so.
    """

    option_names = ("supply", "current_unit", "voltage_unit", "discharge_sign")

    def open(self) -> None:
        self._dir = f"sys/class/power_supply/{self.options.get('supply', 'battery')}"
        cu = self.options.get("current_unit", "uA")
        vu = self.options.get("voltage_unit", "uV")
        sign = self.options.get("discharge_sign", "negative")
        scale = {"uA": 1e-6, "mA": 1e-3, "uV": 1e-6, "mV": 1e-3}
        if cu not in ("uA", "mA") or vu not in ("uV", "mV") or sign not in ("negative", "positive"):
            raise SensorConfigError(
                f"android-battery options: current_unit uA|mA, voltage_unit uV|mV, discharge_sign negative|positive "
                f"(got {cu!r}, {vu!r}, {sign!r})")
        self._cs = scale[cu] * (-1.0 if sign == "negative" else 1.0)
        self._vs = scale[vu]
        for f in ("current_now", "voltage_now"):
            if not self.sys.exists(f"{self._dir}/{f}"):
                raise SensorUnavailable(f"{self.sys.display(self._dir)}/{f} does not exist (no battery gauge there)")

    def describe(self) -> str:
        return "android-battery " + self.sys.display(getattr(self, "_dir", "sys/class/power_supply/battery"))

    def read(self) -> PowerReading:
        self.ensure_open()
        amps = self.sys.read_int(f"{self._dir}/current_now") * self._cs
        volts = self.sys.read_int(f"{self._dir}/voltage_now") * self._vs
        watts = amps * volts
        notes = []
        status = (self.sys.read_optional(f"{self._dir}/status") or "").strip()
        if status and status != "Discharging":
            notes.append(f"battery status is {status}: external power feeds the phone, so the battery reading "
                         f"is not its consumption (disconnect USB charging, e.g. adb over Wi-Fi)")
        elif watts < 0:
            notes.append("battery reads as charging; check the profile's discharge_sign")
        return PowerReading(total_watts=watts, rails={"battery": watts}, total_method="battery current x voltage",
                            notes=notes)
