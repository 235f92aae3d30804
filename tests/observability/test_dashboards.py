"""The committed dashboards are what dashboards/build.py makes, parse as Grafana dashboard
models, and query only metric names the controller exports."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("grafana_foundation_sdk")

from .dashboard_queries import all_queries, exported_metric_names, metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"


def load_build():
    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_are_not_stale() -> None:
    build = load_build()
    built = build.build_all()
    assert sorted(built) == sorted(p.name for p in DASHBOARDS.glob("*.json"))
    for name, text in built.items():
        assert (DASHBOARDS / name).read_text() == text, f"{name} is stale: run python dashboards/build.py"
    assert build.main(["--check"]) == 0


def test_dashboards_parse_as_grafana_models() -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    uids = set()
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        again = json.loads(json.dumps(Dashboard.from_json(doc), cls=JSONEncoder))
        assert again == doc, f"{path.name} has fields the dashboard schema does not know"
        assert doc["uid"] not in uids
        uids.add(doc["uid"])
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        variables = {v["name"] for v in doc["templating"]["list"]}
        for panel in doc["panels"]:
            pos = panel["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, (path.name, panel["title"])
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}"
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), (path.name, panel["title"])
            for target in panel["targets"]:
                used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__range", "__interval"}
                assert used <= variables, (path.name, panel["title"], used - variables)


def test_queries_use_only_exported_metric_names() -> None:
    build = load_build()
    exported = exported_metric_names()
    queries = all_queries()
    assert len(queries) > 40
    for where, expr in queries:
        for name in metric_names(expr):
            assert name in exported or name in build.PLANNED_METRICS, f"{where}: {name} is not exported by the controller"
