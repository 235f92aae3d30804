"""Suite files (YAML, schema ``hilfarm.suite/v1``): what `hilfarm regress` and the controller's
nightly runner read. Pure parsing: no connection, no heavy dependency::

    schema: hilfarm.suite/v1
    name: vision
    schedule: "0 2 * * *"          # nightly runs on the controller (cron, controller's local time)
    baseline: main                  # or @last: the last accepted run under any name
    models:
      - path: models/detector.onnx  # relative to this file
      - sha256: 3f5a...             # an artifact already stored on the controller
        name: classifier.onnx
    devices: [raspberry-pi-5, local]
    settings: {min_runs: 200, threads: 2}     # JobSettings fields
    constraints: budgets.yaml       # a constraint-set file, or the set itself inline
    tolerances: {latency_ratio: 0.03, memory_ratio: 0.05, energy_ratio: 0.10, temperature_celsius: 3}
    confirm: true                   # re-run a suspected regression before failing
    placement_timeout_seconds: 300  # a job no agent takes by then is a farm error (exit 2)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hilfarm.constraints import ConstraintError, ConstraintSet, load_constraint_set, parse_constraint_set
from hilfarm.yaml_files import load_yaml

SCHEMA_ID = "hilfarm.suite/v1"

SCHEMA: Dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "type": "object",
    "required": ["name", "models", "devices"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "schedule": {"type": "string"},
        "baseline": {"type": "string"},
        "models": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "properties": {"path": {"type": "string"}, "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                           "name": {"type": "string"}, "format": {"enum": ["onnx", "tflite"]}},
            "oneOf": [{"required": ["path"]}, {"required": ["sha256"]}]}},
        "devices": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        "tags": {"type": "array", "items": {"type": "string"}},
        "settings": {"type": "object"},
        "constraints": {"type": ["string", "object"]},
        "tolerances": {"type": "object", "additionalProperties": False, "properties": {
            k: {"type": "number", "exclusiveMinimum": 0} for k in
            ("latency_ratio", "memory_ratio", "energy_ratio", "temperature_celsius", "alpha")}},
        "confirm": {"type": "boolean"},
        "placement_timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
    },
}


class SuiteError(ValueError):
    """The suite file is wrong; the message names the file and the field."""


@dataclass
class SuiteModel:
    path: Optional[Path] = None
    sha256: str = ""
    name: str = ""
    format: str = ""


@dataclass
class SuiteFile:
    name: str
    source: Path
    models: List[SuiteModel]
    devices: List[str]
    settings: Dict[str, Any] = field(default_factory=dict)
    constraints: Optional[ConstraintSet] = None
    baseline: str = "main"
    schedule: str = ""
    tolerances: Dict[str, float] = field(default_factory=dict)
    confirm: bool = True
    placement_timeout_seconds: float = 0.0
    tags: List[str] = field(default_factory=list)

    def spec(self, models: List[Dict[str, str]], baseline: Optional[str] = None) -> Dict[str, Any]:
        """The SuiteSpec document (proto field names) once every model is stored (``models``:
        sha256, name, format)."""
        doc: Dict[str, Any] = {
            "name": self.name, "models": models, "device_profiles": list(self.devices),
            "settings": dict(self.settings), "baseline": baseline or self.baseline,
            "no_confirm": not self.confirm, "required_tags": list(self.tags),
        }
        if self.constraints is not None:
            from hilfarm.constraints import Budget

            doc["constraint_set"] = self.constraints.name
            doc["constraints"] = [_budget_doc(b) for b in self.constraints.budgets]
        if self.tolerances:
            doc["tolerances"] = dict(self.tolerances)
        if self.placement_timeout_seconds:
            doc["placement_timeout_seconds"] = self.placement_timeout_seconds
        if self.schedule:
            doc["schedule"] = self.schedule
        return doc


def _budget_doc(b: Any) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"name": b.name}
    for key in ("max", "min"):
        if getattr(b, key) is not None:
            doc[key] = getattr(b, key)
    if b.device_profile:
        doc["device_profile"] = b.device_profile
    if b.unit:
        doc["unit"] = b.unit
    return doc


def load_suite(path: Path) -> SuiteFile:
    path = Path(path)
    doc = load_yaml(path, SCHEMA, SuiteError, what="suite",
                    shape=f"a suite is a mapping with name, models and devices (schema {SCHEMA_ID})")
    base = path.parent
    models = []
    for i, m in enumerate(doc["models"]):
        model = SuiteModel(sha256=m.get("sha256", "").lower(), name=m.get("name", ""), format=m.get("format", ""))
        if "path" in m:
            model.path = (base / m["path"]).resolve()
            if not model.path.is_file():
                raise SuiteError(f"{path}: field models.{i}.path: {model.path} does not exist")
            model.name = model.name or model.path.name
        models.append(model)
    constraints = None
    if "constraints" in doc:
        try:
            if isinstance(doc["constraints"], str):
                constraints = load_constraint_set(base / doc["constraints"])
            else:
                constraints = parse_constraint_set(doc["constraints"], f"{path}: constraints")
        except ConstraintError as exc:
            raise SuiteError(str(exc)) from None
    if doc.get("schedule"):
        try:
            from croniter import croniter

            if not croniter.is_valid(doc["schedule"]):
                raise SuiteError(f"{path}: field schedule: {doc['schedule']!r} is not a cron expression")
        except ImportError:  # the CLI alone does not need croniter; the controller checks again
            pass
    return SuiteFile(
        name=doc["name"], source=path, models=models, devices=list(doc["devices"]),
        settings=dict(doc.get("settings") or {}), constraints=constraints, baseline=doc.get("baseline", "main"),
        schedule=doc.get("schedule", ""), tolerances=dict(doc.get("tolerances") or {}),
        confirm=bool(doc.get("confirm", True)), placement_timeout_seconds=float(doc.get("placement_timeout_seconds", 0)),
        tags=list(doc.get("tags") or []),
    )
