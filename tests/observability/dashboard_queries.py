"""Every PromQL expression in the committed dashboards (panels, template variables,
annotations), the metric names they use, and the names the controller exports."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Mapping, Set, Tuple

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
_NAME = re.compile(r"(?<![\w:])(hilfarm_[A-Za-z0-9_]+)(?![\w:])")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*(?P<label>\w+)\)$")


def dashboards() -> Dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panel_queries(doc: dict) -> List[Tuple[str, str, bool]]:
    """(panel title, expr, instant) of every panel target."""
    out = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"], bool(target.get("instant"))))
    return out


def variable_queries(doc: dict) -> List[Tuple[str, str, str]]:
    """(variable name, selector, label) of every label_values(...) variable."""
    out = []
    for var in doc["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = _LABEL_VALUES.match(var["query"])
        assert m, f"variable {var['name']}: {var['query']!r} is not label_values(SELECTOR, LABEL)"
        out.append((var["name"], m.group("selector"), m.group("label")))
    return out


def annotation_queries(doc: dict) -> List[Tuple[str, str]]:
    return [(a["name"], a["expr"]) for a in doc.get("annotations", {}).get("list", []) if a.get("expr")]


def all_queries() -> List[Tuple[str, str]]:
    out = []
    for name, doc in dashboards().items():
        out += [(f"{name} panel {t!r}", e) for t, e, _ in panel_queries(doc)]
        out += [(f"{name} variable {v}", s) for v, s, _ in variable_queries(doc)]
        out += [(f"{name} annotation {a!r}", e) for a, e in annotation_queries(doc)]
    return out


def metric_names(expr: str) -> Set[str]:
    return set(_NAME.findall(expr))


def promql_regex_escape(value: str) -> str:
    """As Grafana escapes a multi-value: regex metacharacters get a backslash, written as two
    inside the PromQL string."""
    return re.sub(r"([\\.*+?^$()\[\]{}|])", r"\\\\\1", value)


def substitute(expr: str, values: Mapping[str, List[str]], rate_interval: str = "20s") -> str:
    """The query Grafana sends with these variable values (a multi-value regex alternation)."""
    expr = expr.replace("$__rate_interval", rate_interval)

    def one(m: "re.Match[str]") -> str:
        name = m.group(1) or m.group(2)
        chosen = values[name]
        return chosen[0] if len(chosen) == 1 else "(" + "|".join(promql_regex_escape(v) for v in chosen) + ")"

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def exported_metric_names() -> Set[str]:
    """Sample names the controller's registry can produce (counters as _total, histograms as
    _bucket/_count/_sum), read from a real ControllerMetrics over an empty SQLite database, wired
    as build_controller wires it."""
    import tempfile

    from hilfarm.controller.metrics import ControllerMetrics
    from hilfarm.controller.app import open_repositories
    from hilfarm.controller.database import Database

    with tempfile.TemporaryDirectory() as tmp:
        store = open_repositories(Database(f"sqlite:///{tmp}/farm.db"))
        store.database.migrate()
        try:
            families = list(ControllerMetrics(store.jobs, store.regressions, heartbeat_interval=5,
                                              write_lock_use=store.database.write_lock_use).registry.collect())
        finally:
            store.database.close()
    names: Set[str] = set()
    for family in families:
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return {n for n in names if n.startswith("hilfarm_")}
