"""Thermal and clock sensors that read sysfs: thermal zones with trip points and cooling devices,
cpufreq, devfreq (GPU clocks, e.g. Jetson), and the Coral Edge TPU's apex driver."""

from __future__ import annotations

import os
import re
import time
from typing import Dict, List, Optional, Tuple

from hilfarm.agent.sensors import (
    ClockReading,
    SensorConfigError,
    SensorUnavailable,
    ThermalReading,
    ThermalSensor,
    register_sensor,
)


def _as_list(v) -> List[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v]


def _is_fan(cooling_type: str) -> bool:
    # A spinning fan cools without slowing the device down; it is not throttling.
    return "fan" in cooling_type.lower()


@register_sensor("thermal-zones")
class ThermalZoneSensor(ThermalSensor):
    """/sys/class/thermal/thermal_zone*/{type,temp,trip_point_N_*} and cooling_device*.

    Throttling now = a non-fan cooling device with cur_state > 0, or a zone at or above its
    lowest passive trip point. Options: ``zones`` (types to keep; default all), ``rename``
    (type -> name to report), ``passive_trip_is_throttle`` (default true).
    """

    option_names = ("zones", "rename", "passive_trip_is_throttle")

    def open(self) -> None:
        only = set(_as_list(self.options.get("zones")))
        rename = {str(k): str(v) for k, v in (self.options.get("rename") or {}).items()}
        self._zones: List[Tuple[str, str, Optional[float]]] = []  # (name, temp path, passive trip °C)
        counts: Dict[str, int] = {}
        for z in self.sys.glob("sys/class/thermal/thermal_zone*"):
            ztype = (self.sys.read_optional(f"{z}/type") or z.rsplit("/", 1)[-1]).strip()
            if only and ztype not in only:
                continue
            n = counts.get(ztype, 0)
            counts[ztype] = n + 1
            name = rename.get(ztype, ztype) + ("" if n == 0 else f"#{n}")
            passive = None
            for tt in self.sys.glob(f"{z}/trip_point_*_type"):
                if (self.sys.read_optional(tt) or "").strip() != "passive":
                    continue
                text = (self.sys.read_optional(tt[: -len("_type")] + "_temp") or "").strip()
                # x86_pkg_temp lists passive trips at 0: unset, not "always throttling".
                if re.fullmatch(r"-?\d+", text) and int(text) > 0:
                    c = int(text) / 1000.0
                    passive = c if passive is None else min(passive, c)
            self._zones.append((name, f"{z}/temp", passive))
        self._cooling: List[Tuple[str, str, str]] = []
        for cd in self.sys.glob("sys/class/thermal/cooling_device*"):
            ctype = (self.sys.read_optional(f"{cd}/type") or "").strip()
            self._cooling.append((f"{cd.rsplit('/', 1)[-1]} ({ctype})", f"{cd}/cur_state", f"{cd}/max_state"))
        self._fan = {name: _is_fan(name) for name, _, _ in self._cooling}
        if not self._zones:
            if only:
                raise SensorUnavailable(f"no thermal zone of type {', '.join(sorted(only))} in /sys/class/thermal")
            raise SensorUnavailable("no thermal zones (/sys/class/thermal/thermal_zone* missing)")

    def describe(self) -> str:
        return "thermal-zones " + self.sys.display("sys/class/thermal")

    def read(self) -> ThermalReading:
        self.ensure_open()
        r = ThermalReading()
        passive_trip = self.options.get("passive_trip_is_throttle", True)
        for name, path, passive in self._zones:
            try:
                c = self.sys.read_int(path) / 1000.0
            except SensorUnavailable as exc:
                r.unreadable[name] = exc.reason
                continue
            if c <= -200.0:
                # Jetson reports -256 °C for a zone whose sensor is powered off (e.g. an idle CV cluster).
                r.unreadable[name] = f"reports {c:g} °C (no reading: its sensor is powered off)"
                continue
            r.temperatures[name] = c
            if passive_trip and passive is not None and c >= passive:
                r.throttle_reasons.append(f"{name} at {c:g} °C, at or above its passive trip point {passive:g} °C")
        if not r.temperatures:
            raise SensorUnavailable("no thermal zone could be read: " + "; ".join(r.unreadable.values()))
        active = []
        for name, cur_path, max_path in self._cooling:
            try:
                cur = self.sys.read_int(cur_path)
            except SensorUnavailable as exc:
                r.unreadable[name] = exc.reason
                continue
            if cur > 0:
                mx = self.sys.read_optional(max_path)
                state = f"state {cur}/{mx.strip()}" if mx else f"state {cur}"
                if self._fan[name]:
                    active.append(f"{name} {state}")
                else:
                    r.throttle_reasons.append(f"cooling device {name} active ({state})")
        if active:
            r.info["fans"] = ", ".join(active)
        r.throttled = bool(r.throttle_reasons)
        return r


@register_sensor("cpufreq")
class CpufreqSensor(ThermalSensor):
    """CPU clocks from /sys/devices/system/cpu/cpuN/cpufreq (kHz) and the governor.

    One clock domain per cpufreq policy (the CPUs of a cluster share one), named by its CPUs.
    Throttled now = an x86 thermal_throttle counter rose since the previous reading, or (with
    ``below_max_is_throttle``, for governors that pin the clock) a clock below its allowed
    maximum. A lowered allowed maximum during a run is judged by the sampler. Options: ``cpus``.
    """

    option_names = ("cpus", "below_max_is_throttle")

    # Governor, online state and x86 throttle counters change rarely: read them once a second.
    slow_refresh_s = 1.0

    def open(self) -> None:
        wanted = self.options.get("cpus")
        # CPUs of one cluster share a policy (cpuN/cpufreq links to ../cpufreq/policyM): read each
        # policy once, and report it as one clock domain named by its CPUs ("cpu0-3").
        by_policy: Dict[str, List[Tuple[int, str]]] = {}
        self._counters: Dict[str, List[str]] = {}
        for c in self.sys.glob("sys/devices/system/cpu/cpu[0-9]*"):
            base = c.rsplit("/", 1)[-1]
            if not re.fullmatch(r"cpu\d+", base):
                continue
            n = int(base[3:])
            if wanted is not None and n not in [int(x) for x in wanted]:
                continue
            d = f"{c}/cpufreq"
            if not self.sys.exists(d):
                continue
            by_policy.setdefault(os.path.realpath(self.sys.path(d)), []).append((n, c))
            self._counters[base] = [f"{c}/thermal_throttle/{k}" for k in ("core_throttle_count", "package_throttle_count")
                                    if self.sys.exists(f"{c}/thermal_throttle/{k}")]
        # (domain, policy dir relative to the root, current-clock file, [(cpu name, cpu dir)], hardware max)
        self._policies: List[Tuple[str, str, str, List[Tuple[str, str]], Optional[float]]] = []
        for members in sorted(by_policy.values()):
            members.sort()
            d = f"{members[0][1]}/cpufreq"
            if self.sys.exists(f"{d}/scaling_cur_freq"):
                cur = f"{d}/scaling_cur_freq"
            elif self.sys.exists(f"{d}/cpuinfo_cur_freq"):
                cur = f"{d}/cpuinfo_cur_freq"
            else:
                continue
            hmax = self.sys.read_optional(f"{d}/cpuinfo_max_freq")
            self._policies.append((_cpu_domain([n for n, _ in members]), d, cur,
                                   [(f"cpu{n}", c) for n, c in members],
                                   int(hmax) * 1000.0 if hmax and hmax.strip().isdigit() else None))
        if not self._policies:
            raise SensorUnavailable("no cpufreq (/sys/devices/system/cpu/cpu*/cpufreq missing: no cpufreq driver "
                                    "for this CPU, e.g. inside a VM or container)")
        self._throttle_counts: Dict[str, int] = {}
        self._slow_at = float("-inf")
        self._online: Dict[str, bool] = {}
        self._governor = ""

    def describe(self) -> str:
        return "cpufreq " + self.sys.display("sys/devices/system/cpu")

    def _refresh_slow(self, r: ThermalReading) -> None:
        governors: Dict[str, str] = {}
        for dom, d, _, members, _ in self._policies:
            online = False
            for cpu, c in members:
                up = (self.sys.read_optional(f"{c}/online") or "1").strip() != "0"
                online = online or up
                if not up:
                    continue
                for path in self._counters.get(cpu, []):
                    text = self.sys.read_optional(path)
                    if text is None or not text.strip().isdigit():
                        continue
                    key = f"{cpu} {path.rsplit('/', 1)[-1]}"
                    now = int(text.strip())
                    before = self._throttle_counts.get(key)
                    self._throttle_counts[key] = now
                    if before is not None and now > before:
                        r.throttle_reasons.append(f"{key} rose by {now - before}")
            self._online[dom] = online
            gov = self.sys.read_optional(f"{d}/scaling_governor") if online else None
            if gov:
                governors[dom] = gov.strip()
        distinct = sorted(set(governors.values()))
        if len(distinct) == 1:
            self._governor = distinct[0]
        elif distinct:
            self._governor = ",".join(f"{k}={v}" for k, v in governors.items())

    def read(self) -> ThermalReading:
        self.ensure_open()
        r = ThermalReading()
        now = time.monotonic()
        if now - self._slow_at >= self.slow_refresh_s:
            self._slow_at = now
            self._refresh_slow(r)
        below = self.options.get("below_max_is_throttle", False)
        for dom, d, cur_file, _, hw_max in self._policies:
            if not self._online.get(dom, True):
                continue
            try:
                khz = self.sys.read_int(cur_file)
            except SensorUnavailable as exc:
                r.unreadable[dom] = exc.reason
                continue
            smax = self.sys.read_optional(f"{d}/scaling_max_freq")
            clock = ClockReading(
                hz=khz * 1000.0,
                allowed_max_hz=int(smax) * 1000.0 if smax and smax.strip().isdigit() else None,
                hardware_max_hz=hw_max,
            )
            r.clocks[dom] = clock
            if below and clock.allowed_max_hz and clock.hz < 0.98 * clock.allowed_max_hz:
                r.throttle_reasons.append(
                    f"{dom} at {clock.hz / 1e6:g} MHz, below its allowed {clock.allowed_max_hz / 1e6:g} MHz")
        if not r.clocks:
            raise SensorUnavailable("no CPU clock could be read: " + "; ".join(r.unreadable.values()))
        if self._governor:
            r.info["governor"] = self._governor
        r.throttled = bool(r.throttle_reasons)
        return r


def _cpu_domain(cpus: List[int]) -> str:
    """[0, 1, 2, 3] -> cpu0-3; [4] -> cpu4; [0, 2] -> cpu0,2."""
    cpus = sorted(cpus)
    if len(cpus) == 1:
        return f"cpu{cpus[0]}"
    if cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"cpu{cpus[0]}-{cpus[-1]}"
    return "cpu" + ",".join(str(c) for c in cpus)


@register_sensor("hwmon-temp")
class HwmonTemperatureSensor(ThermalSensor):
    """temp*_input (m°C) of named hwmon chips, e.g. coretemp, k10temp, nvme, cpu_thermal.

    Options: ``chip`` (name or list; required), ``labels`` (only temperatures with these labels).
    """

    option_names = ("chip", "labels")

    def open(self) -> None:
        chips = _as_list(self.options.get("chip"))
        if not chips:
            raise SensorConfigError("hwmon-temp needs option chip (e.g. coretemp)")
        only = set(_as_list(self.options.get("labels")))
        self._temps: List[Tuple[str, str]] = []
        found = []
        for hw in self.sys.glob("sys/class/hwmon/hwmon*"):
            d = hw if self.sys.exists(f"{hw}/name") else f"{hw}/device"
            name = (self.sys.read_optional(f"{d}/name") or "").strip()
            found.append(name or "?")
            if name not in chips:
                continue
            for f in self.sys.glob(f"{d}/temp*_input"):
                k = f.rsplit("/", 1)[-1][4:-len("_input")]
                label = (self.sys.read_optional(f"{d}/temp{k}_label") or "").strip()
                if only and label not in only:
                    continue
                self._temps.append((f"{name} {label}" if label else f"{name} temp{k}", f))
        if not self._temps:
            raise SensorUnavailable(f"no hwmon chip named {', '.join(chips)} with temperatures "
                                    f"(chips found: {', '.join(found) or 'none'})")

    def describe(self) -> str:
        return "hwmon-temp " + ",".join(_as_list(self.options.get("chip")))

    def read(self) -> ThermalReading:
        self.ensure_open()
        r = ThermalReading()
        for name, f in self._temps:
            try:
                r.temperatures[name] = self.sys.read_int(f) / 1000.0
            except SensorUnavailable as exc:
                r.unreadable[name] = exc.reason
        if not r.temperatures:
            raise SensorUnavailable("no hwmon temperature could be read: " + "; ".join(r.unreadable.values()))
        return r


_GPU_DEVFREQ = re.compile(r"(gpu|gv11b|ga10b|gp10b|gm20b|mali|adreno|kgsl)", re.I)


@register_sensor("devfreq")
class DevfreqSensor(ThermalSensor):
    """Device clocks from /sys/class/devfreq/<dev>/{cur_freq,max_freq,min_freq} (Hz).

    Options: ``devices`` (devfreq name -> domain to report; default every GPU-like device as
    ``gpu``). Reports ``<domain>_min_eq_max`` in info, which is how jetson_clocks pins a clock.
    """

    option_names = ("devices",)

    def open(self) -> None:
        wanted = {str(k): str(v) for k, v in (self.options.get("devices") or {}).items()}
        self._devs: List[Tuple[str, str]] = []
        for d in self.sys.glob("sys/class/devfreq/*"):
            base = d.rsplit("/", 1)[-1]
            if wanted:
                if base in wanted:
                    self._devs.append((wanted[base], d))
            elif _GPU_DEVFREQ.search(base):
                n = sum(1 for dom, _ in self._devs if dom.startswith("gpu"))
                self._devs.append(("gpu" if n == 0 else f"gpu{n}", d))
        self._hw_max: Dict[str, Optional[int]] = {}
        for dom, d in self._devs:
            avail = (self.sys.read_optional(f"{d}/available_frequencies") or "").split()
            self._hw_max[dom] = max((int(a) for a in avail if a.isdigit()), default=None)
        if not self._devs:
            raise SensorUnavailable("no devfreq device" + (f" named {', '.join(wanted)}" if wanted else " for a GPU")
                                    + " in /sys/class/devfreq")

    def describe(self) -> str:
        return "devfreq " + ", ".join(self.sys.display(d) for _, d in getattr(self, "_devs", []))

    def read(self) -> ThermalReading:
        self.ensure_open()
        r = ThermalReading()
        for dom, d in self._devs:
            try:
                hz = self.sys.read_int(f"{d}/cur_freq")
            except SensorUnavailable as exc:
                r.unreadable[dom] = exc.reason
                continue
            mx = self.sys.read_optional(f"{d}/max_freq")
            mn = self.sys.read_optional(f"{d}/min_freq")
            hw = self._hw_max.get(dom)
            r.clocks[dom] = ClockReading(hz=float(hz), allowed_max_hz=float(mx) if mx and mx.strip().isdigit() else None,
                                         hardware_max_hz=float(hw) if hw else None)
            if mx and mn:
                r.info[f"{dom}_min_eq_max"] = "yes" if mx.strip() == mn.strip() else "no"
        if not r.clocks:
            raise SensorUnavailable("no devfreq clock could be read: " + "; ".join(r.unreadable.values()))
        return r


@register_sensor("coral-apex")
class CoralApexSensor(ThermalSensor):
    """Coral PCIe/M.2 Edge TPU: /sys/class/apex/apex_N/temp (m°C) and trip_point{0,1,2}_temp.

    The driver scales the TPU clock at the trip points only when temp_poll_interval > 0.
    Options: ``device`` (default apex_0).
    """

    option_names = ("device",)

    def open(self) -> None:
        dev = self.options.get("device", "apex_0")
        self._dir = f"sys/class/apex/{dev}"
        if not self.sys.exists(f"{self._dir}/temp"):
            raise SensorUnavailable(
                f"{self.sys.display(self._dir)}/temp does not exist (no PCIe/M.2 Edge TPU with the apex driver; "
                f"a Coral USB accelerator has no readable temperature)")
        self._trips = []
        for k in range(3):
            t = self.sys.read_optional(f"{self._dir}/trip_point{k}_temp")
            if t is not None and t.strip().lstrip("-").isdigit():
                self._trips.append((k, int(t.strip()) / 1000.0))

    def describe(self) -> str:
        return "coral-apex " + self.sys.display(getattr(self, "_dir", "sys/class/apex/apex_0"))

    def read(self) -> ThermalReading:
        self.ensure_open()
        c = self.sys.read_int(f"{self._dir}/temp") / 1000.0
        name = self._dir.rsplit("/", 1)[-1]
        r = ThermalReading(temperatures={name: c})
        poll = (self.sys.read_optional(f"{self._dir}/temp_poll_interval") or "").strip()
        scaling = poll.isdigit() and int(poll) > 0
        r.info["edgetpu_thermal_scaling"] = "on" if scaling else ("off" if poll else "unknown")
        crossed = [(k, t) for k, t in self._trips if c >= t]
        if crossed:
            k, t = crossed[-1]
            if scaling:
                r.throttle_reasons.append(f"{name} at {c:g} °C, at or above trip point {k} ({t:g} °C)")
            else:
                r.events.append(f"{name} at {c:g} °C passed trip point {k} ({t:g} °C) but thermal clock scaling "
                                f"is off (temp_poll_interval={poll or '?'})")
        r.throttled = bool(r.throttle_reasons)
        return r
