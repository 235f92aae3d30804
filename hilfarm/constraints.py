"""Constraint sets: what a deployment needs, as budgets on the figures a result reports.

A constraint set is a YAML file (schema ``hilfarm.constraints/v1``, examples in profiles/)::

    schema: hilfarm.constraints/v1
    name: doorbell-camera
    budgets:                       # every device profile
      latency.p99: 40ms
      memory.peak: {max: 300MiB}
      thermal.throttling: forbidden
      throughput: {min: 25/s}
    devices:                       # per profile: replaces the global budget of the same name
      raspberry-pi-4:
        latency.p99: 120ms

Each budget becomes one verdict per job: budget, measured value, margin, and pass, fail or
*unknown* when the device could not measure the figure (a power budget on a device without a
power sensor is unknown, never a pass). The controller evaluates verdicts when a result
arrives (``evaluate``); the CLI only loads files (``load_constraint_set``). This module needs
nothing beyond the CLI's base install (PyYAML, jsonschema, numpy).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from hilfarm.units import BYTE_UNITS, format_bytes
from hilfarm.yaml_files import check_schema, read_yaml

SCHEMA_ID = "hilfarm.constraints/v1"

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"


class ConstraintError(ValueError):
    """A constraint set the user wrote is wrong; the message names the file and the field."""


@dataclass(frozen=True)
class Budget:
    name: str                      # catalogue key, e.g. latency.p99
    max: Optional[float] = None    # base units
    min: Optional[float] = None
    device_profile: str = ""       # empty: every profile
    unit: str = ""


@dataclass(frozen=True)
class Verdict:
    constraint: str
    comparison: str                # "<=" or ">="
    budget: float
    measured: Optional[float]
    margin: Optional[float]
    status: str                    # pass, fail, unknown
    unit: str
    reason: str = ""
    device_profile: str = ""
    simulated: bool = False  # the figure came from a simulated sensor

    @property
    def gating_status(self) -> str:
        """The status that decides exit codes and suite outcomes: a simulated reading is never
        a real pass (it counts as unknown); a simulated failure still fails."""
        return UNKNOWN if self.simulated and self.status == PASS else self.status

    def to_dict(self) -> Dict[str, Any]:
        return {
            "constraint": self.constraint, "comparison": self.comparison, "budget": self.budget,
            "measured": self.measured, "margin": self.margin, "status": self.status,
            "unit": self.unit, "reason": self.reason, "device_profile": self.device_profile,
            "simulated": self.simulated,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "Verdict":
        return cls(**{k: doc.get(k) for k in (
            "constraint", "comparison", "budget", "measured", "margin", "status", "unit",
            "reason", "device_profile")}, simulated=bool(doc.get("simulated")))


@dataclass(frozen=True)
class ConstraintSet:
    name: str
    budgets: Tuple[Budget, ...] = field(default_factory=tuple)
    source: str = ""

    def for_profile(self, profile: str) -> List[Budget]:
        return resolve(self.budgets, profile)


# ---------------------------------------------------------------- the figures a budget can name

class _Missing(Exception):
    """The figure is not in the result; the message says why."""


def _unavailable_reason(result: Mapping[str, Any], *names: str) -> Optional[str]:
    reasons = {u.get("field", ""): u.get("reason", "") for u in result.get("unavailable", [])}
    for name in names:
        if name in reasons:
            return f"{name}: {reasons[name]}"
    return None


def _section(result: Mapping[str, Any], section: str) -> Mapping[str, Any]:
    if section not in result:
        why = _unavailable_reason(result, section)
        raise _Missing(why or f"the device reported no {section} figures (no {section} sensor)")
    return result[section]


def _figure(section: str, name: str) -> Callable[[Mapping[str, Any]], float]:
    def read(result: Mapping[str, Any]) -> float:
        why = _unavailable_reason(result, f"{section}.{name}", section)
        if why:
            raise _Missing(why)
        values = _section(result, section)
        if values.get(name) is None:  # absent: not measured (farm.proto's one rule)
            raise _Missing(f"{section}.{name} was not reported")
        return float(values[name])
    return read


def _percentile(q: float) -> Callable[[Mapping[str, Any]], float]:
    stored = {50.0: "p50_seconds", 90.0: "p90_seconds", 95.0: "p95_seconds", 99.0: "p99_seconds"}

    def read(result: Mapping[str, Any]) -> float:
        latency = _section(result, "latency")
        samples = latency.get("samples_ns") or []
        if samples:
            # The raw samples are the truth; the stored percentiles are their summary.
            return float(np.percentile(np.asarray(samples, dtype=np.float64), q)) / 1e9
        name = stored.get(q)
        if name and name in latency:
            return float(latency[name])
        raise _Missing(f"latency.p{q:g} needs the raw samples, and the result has none")
    return read


def _max_temperature(result: Mapping[str, Any]) -> float:
    why = _unavailable_reason(result, "thermal.zones", "thermal")
    if why:
        raise _Missing(why)
    zones = _section(result, "thermal").get("zones") or []
    values = [z["max_celsius"] for z in zones if "max_celsius" in z]
    if not values:
        raise _Missing("the device reported no temperature zone")
    return float(max(values))


def _throttled(result: Mapping[str, Any]) -> float:
    why = _unavailable_reason(result, "thermal.throttled", "thermal")
    if why:
        raise _Missing(why)
    # proto3 drops false: a thermal section without the flag measured "not throttled".
    return 1.0 if _section(result, "thermal").get("throttled") else 0.0


@dataclass(frozen=True)
class Figure:
    read: Callable[[Mapping[str, Any]], float]
    unit: str
    comparison: str  # the natural direction: "<=" (a ceiling) or ">=" (a floor)
    description: str


CATALOGUE: Dict[str, Figure] = {
    "latency.mean": Figure(_figure("latency", "mean_seconds"), "s", "<=", "mean steady-state latency"),
    "latency.min": Figure(_figure("latency", "min_seconds"), "s", "<=", "fastest timed inference"),
    "latency.max": Figure(_figure("latency", "max_seconds"), "s", "<=", "slowest timed inference"),
    "latency.std": Figure(_figure("latency", "std_seconds"), "s", "<=", "standard deviation of latency"),
    "latency.cv": Figure(_figure("latency", "cv"), "ratio", "<=", "coefficient of variation of latency"),
    "latency.load": Figure(_figure("latency", "load_seconds"), "s", "<=", "model load time"),
    "latency.first_inference": Figure(_figure("latency", "first_inference_seconds"), "s", "<=", "cold first inference"),
    "throughput": Figure(_figure("latency", "throughput_per_second"), "1/s", ">=", "inferences per second"),
    "memory.peak": Figure(_figure("memory", "peak_bytes"), "bytes", "<=", "peak resident memory of the process"),
    "memory.model_delta": Figure(_figure("memory", "model_delta_bytes"), "bytes", "<=", "memory the model added"),
    "model.size": Figure(_figure("memory", "model_file_bytes"), "bytes", "<=", "model file size"),
    "power.mean": Figure(_figure("power", "active_watts"), "W", "<=", "mean power during the timed runs"),
    "power.idle": Figure(_figure("power", "idle_watts"), "W", "<=", "idle power before the run"),
    "energy.per_inference": Figure(_figure("power", "energy_per_inference_joules"), "J", "<=", "energy per inference"),
    "temperature.max": Figure(_max_temperature, "C", "<=", "hottest zone during the run"),
    "thermal.throttling": Figure(_throttled, "bool", "<=", "whether the device throttled (0 or 1)"),
    "thermal.throttled_fraction": Figure(_figure("thermal", "throttled_fraction"), "ratio", "<=", "fraction of the run spent throttled"),
}

_PERCENTILE = re.compile(r"latency\.p(\d{1,2}(?:\.\d+)?)$")
# Friendlier spellings people write.
ALIASES = {
    "latency.median": "latency.p50", "memory.peak_rss": "memory.peak", "model.file_size": "model.size",
    "power.active": "power.mean", "energy": "energy.per_inference", "throttling": "thermal.throttling",
    "temperature": "temperature.max", "load_time": "latency.load",
}


def figure_for(name: str) -> Figure:
    """The catalogue entry a budget name names; raises KeyError for an unknown name."""
    name = ALIASES.get(name, name)
    if name in CATALOGUE:
        return CATALOGUE[name]
    match = _PERCENTILE.match(name)
    if match:
        q = float(match.group(1))
        if 0 < q < 100:
            return Figure(_percentile(q), "s", "<=", f"latency at the {q:g}th percentile")
    raise KeyError(name)


def canonical_name(name: str) -> str:
    return ALIASES.get(name, name)


def known_names() -> List[str]:
    return sorted(CATALOGUE) + ["latency.pNN (any percentile, e.g. latency.p99, latency.p99.9)"]


# ---------------------------------------------------------------- evaluation

def resolve(budgets: Sequence[Budget], profile: str) -> List[Budget]:
    """The budgets that apply on ``profile``: global ones, each replaced by the profile's own
    budget of the same name where it has one."""
    out: Dict[str, Budget] = {}
    for b in budgets:
        if not b.device_profile:
            out.setdefault(b.name, b)
    for b in budgets:
        if b.device_profile == profile:
            out[b.name] = b
    return list(out.values())


def _verdicts_for(budget: Budget, value: Optional[float], why: str, unit: str,
                  simulated: bool = False) -> List[Verdict]:
    out = []
    for comparison, limit in (("<=", budget.max), (">=", budget.min)):
        if limit is None:
            continue
        if value is None:
            out.append(Verdict(budget.name, comparison, limit, None, None, UNKNOWN, unit, why, budget.device_profile))
            continue
        margin = limit - value if comparison == "<=" else value - limit
        status = PASS if margin >= 0 else FAIL
        out.append(Verdict(budget.name, comparison, limit, value, margin, status, unit, why, budget.device_profile,
                           simulated))
    return out


def evaluate(budgets: Sequence[Budget], result: Mapping[str, Any]) -> List[Verdict]:
    """One verdict per bound of each budget, judged on a result document (the
    BenchmarkResult fields as the controller stores them). Budgets must already be resolved
    for the job's profile (``resolve``)."""
    verdicts: List[Verdict] = []
    for budget in budgets:
        try:
            fig = figure_for(budget.name)
        except KeyError:
            verdicts += _verdicts_for(budget, None, f"{budget.name} is not a figure this controller knows", budget.unit)
            continue
        try:
            value: Optional[float] = fig.read(result)
            why = ""
            if value is not None and not math.isfinite(value):
                value, why = None, f"{budget.name} was reported as {value}"
        except _Missing as missing:
            value, why = None, str(missing)
        except (TypeError, ValueError) as exc:
            value, why = None, f"{budget.name} could not be read: {exc}"
        simulated = value is not None and _simulated(result, budget.name)
        if simulated:
            why = "measured by a simulated sensor, not a device: never a real pass"
        verdicts += _verdicts_for(budget, value, why, fig.unit, simulated)
    return verdicts


def _simulated(result: Mapping[str, Any], name: str) -> bool:
    section = {"power": "power", "energy": "power", "temperature": "thermal", "thermal": "thermal"}.get(name.split(".")[0])
    return bool(section and result.get(section, {}).get("simulated"))


def overall(verdicts: Sequence[Verdict]) -> str:
    """fail if any budget is broken, else unknown if any figure is unknown (or only simulated),
    else pass."""
    statuses = {v.gating_status for v in verdicts}
    if FAIL in statuses:
        return FAIL
    if UNKNOWN in statuses:
        return UNKNOWN
    return PASS


# ---------------------------------------------------------------- YAML files

_UNITS: Dict[str, Dict[str, float]] = {
    "s": {"": 1, "s": 1, "sec": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "min": 60},
    "bytes": dict(BYTE_UNITS),
    "W": {"": 1, "w": 1, "mw": 1e-3, "kw": 1e3},
    "J": {"": 1, "j": 1, "mj": 1e-3, "uj": 1e-6, "µj": 1e-6},
    "C": {"": 1, "c": 1, "°c": 1, "degc": 1},
    "1/s": {"": 1, "/s": 1, "1/s": 1, "ips": 1, "fps": 1},
    "ratio": {"": 1, "%": 0.01},
    "bool": {"": 1},
}
_QUANTITY = re.compile(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([^\s0-9].*)?\s*$")

SCHEMA: Dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "type": "object",
    "required": ["budgets"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "budgets": {"$ref": "#/$defs/budgets"},
        "devices": {"type": "object", "additionalProperties": {"$ref": "#/$defs/budgets"}},
    },
    "$defs": {
        "limit": {"type": ["number", "string"]},
        "budgets": {
            "type": "object",
            "additionalProperties": {
                "oneOf": [
                    {"$ref": "#/$defs/limit"},
                    {"type": "object", "additionalProperties": False, "minProperties": 1,
                     "properties": {"max": {"$ref": "#/$defs/limit"}, "min": {"$ref": "#/$defs/limit"}}},
                ]
            },
        },
    },
}


def parse_quantity(value: Any, unit: str, where: str) -> float:
    """``30ms`` -> 0.03 for a figure in seconds; plain numbers are base units."""
    if isinstance(value, bool):
        raise ConstraintError(f"{where}: {value!r} is not a number")
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value))
    factors = _UNITS.get(unit, {"": 1})
    suffix = (match.group(2) or "").strip().lower() if match else None
    if match is None or suffix not in factors:
        shown = ", ".join(k for k in factors if k) or "none"
        raise ConstraintError(f"{where}: {value!r} is not a quantity in {unit} (units: {shown})")
    return float(match.group(1)) * factors[suffix]


def _budget(name: str, spec: Any, profile: str, where: str) -> Budget:
    try:
        fig = figure_for(name)
    except KeyError:
        raise ConstraintError(f"{where}: {name!r} is not a figure a result reports; known: {', '.join(known_names())}") from None
    key = canonical_name(name)
    if fig.unit == "bool":
        if spec in ("forbidden", "not allowed", False, "no"):
            return Budget(key, max=0.0, device_profile=profile, unit="bool")
        if spec in ("allowed", True, "yes"):
            return Budget(key, max=1.0, device_profile=profile, unit="bool")
        raise ConstraintError(f"{where}: {spec!r}: write 'allowed' or 'forbidden'")
    if isinstance(spec, Mapping):
        low = parse_quantity(spec["min"], fig.unit, f"{where}.min") if "min" in spec else None
        high = parse_quantity(spec["max"], fig.unit, f"{where}.max") if "max" in spec else None
        if low is not None and high is not None and low > high:
            raise ConstraintError(f"{where}: min {spec['min']} is above max {spec['max']}")
    elif fig.comparison == ">=":
        low, high = parse_quantity(spec, fig.unit, where), None
    else:
        low, high = None, parse_quantity(spec, fig.unit, where)
    return Budget(key, max=high, min=low, device_profile=profile, unit=fig.unit)


def parse_constraint_set(doc: Any, source: str = "<constraints>") -> ConstraintSet:
    """Check a constraint-set document against the schema and build it. Errors name the
    source and the field."""
    if not isinstance(doc, Mapping):
        raise ConstraintError(f"{source}: a constraint set is a mapping with 'budgets:' (schema {SCHEMA_ID})")
    check_schema(doc, SCHEMA, source, ConstraintError)
    budgets: List[Budget] = []
    for name, spec in (doc.get("budgets") or {}).items():
        budgets.append(_budget(str(name), spec, "", f"{source}: budgets.{name}"))
    for profile, entries in (doc.get("devices") or {}).items():
        for name, spec in (entries or {}).items():
            budgets.append(_budget(str(name), spec, str(profile), f"{source}: devices.{profile}.{name}"))
    return ConstraintSet(name=str(doc.get("name") or Path(source).stem), budgets=tuple(budgets), source=source)


def load_constraint_set(path: Path) -> ConstraintSet:
    # Inline sets (a suite's constraints:) are checked by parse_constraint_set alone.
    return parse_constraint_set(read_yaml(path, "constraint set", ConstraintError), str(path))


# ---------------------------------------------------------------- wire (hilfarm.v1)

def budget_to_pb(budget: Budget) -> Any:
    from hilfarm.v1 import farm_pb2

    msg = farm_pb2.Budget(name=budget.name, device_profile=budget.device_profile, unit=budget.unit)
    if budget.max is not None:
        msg.max = budget.max
    if budget.min is not None:
        msg.min = budget.min
    return msg


def budget_from_pb(msg: Any) -> Budget:
    return Budget(
        name=msg.name,
        max=msg.max if msg.HasField("max") else None,
        min=msg.min if msg.HasField("min") else None,
        device_profile=msg.device_profile,
        unit=msg.unit,
    )


_STATUS_PB = {PASS: 1, FAIL: 2, UNKNOWN: 3}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_PB.items()}


def verdict_to_pb(v: Verdict) -> Any:
    from hilfarm.v1 import farm_pb2

    msg = farm_pb2.ConstraintVerdict(
        constraint=v.constraint, comparison=v.comparison, budget=v.budget, status=_STATUS_PB[v.status],
        unit=v.unit, reason=v.reason, device_profile=v.device_profile, simulated=v.simulated,
    )
    if v.measured is not None:
        msg.measured = v.measured
    if v.margin is not None:
        msg.margin = v.margin
    return msg


def verdict_from_pb(msg: Any) -> Verdict:
    return Verdict(
        constraint=msg.constraint, comparison=msg.comparison, budget=msg.budget,
        measured=msg.measured if msg.HasField("measured") else None,
        margin=msg.margin if msg.HasField("margin") else None,
        status=_STATUS_FROM_PB.get(msg.status, UNKNOWN), unit=msg.unit, reason=msg.reason,
        device_profile=msg.device_profile, simulated=msg.simulated,
    )


def format_value(value: Optional[float], unit: str) -> str:
    """A figure for people: 0.0123 s -> '12.30 ms'."""
    if value is None:
        return "unknown"
    if unit == "s":
        return f"{value * 1e3:.2f} ms" if abs(value) < 10 else f"{value:.2f} s"
    if unit == "bytes":
        return format_bytes(value, "MiB")
    if unit == "bool":
        return "yes" if value else "no"
    if unit == "ratio":
        return f"{value:.3g}"
    if unit == "J":
        return f"{value * 1e3:.2f} mJ" if abs(value) < 1 else f"{value:.3g} J"
    if unit == "C":
        return f"{value:.1f} °C"
    return f"{value:.3g} {unit}"
