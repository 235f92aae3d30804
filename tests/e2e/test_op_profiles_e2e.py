"""`submit --profile-ops` end to end: real controller and agent processes, the CLI as a user
runs it. The top nodes are in the JSON, the full trace is downloadable, two jobs compare node by
node, and the table shows them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

import hilfarm

SCHEMA = json.loads((Path(hilfarm.__file__).parent / "run.schema.json").read_text())
QUICK = ["--runs", "20", "--min-seconds", "0.1", "--warmup-seconds", "0.05"]


def test_profile_ops_json_trace_compare_and_table(farm, models, tmp_path):
    code, run = farm.submit_json(str(models["mlp"]), "--device", "local", *QUICK, "--profile-ops",
                                 "--profile-ops-runs", "5")
    assert code == 0, run
    jsonschema.validate(run, SCHEMA)
    (job,) = run["jobs"]
    p = job["result"]["op_profile"]
    assert p["runs"] == 5 and p["node_count"] == len(p["ops"]) >= 2
    assert p["nodes_by_provider"] == {"CPUExecutionProvider": p["node_count"]}
    assert p["trace_format"] == "onnxruntime-chrome-trace-json" and len(p["trace_sha256"]) == 64
    means = [op["mean_seconds"] for op in p["ops"]]
    assert all(m > 0 for m in means) and means == sorted(means, reverse=True)

    out = tmp_path / "trace.json"
    done = farm.cli("jobs", "trace", job["id"], "-o", str(out))
    assert done.returncode == 0, done.stderr
    events = json.loads(out.read_text())
    assert out.stat().st_size == p["trace_bytes"]
    nodes = {e["name"][: -len("_kernel_time")] for e in events if e.get("cat") == "Node"
             and e["name"].endswith("_kernel_time")}
    assert nodes == {op["node"] for op in p["ops"]}

    code, second = farm.submit_json(str(models["mlp"]), "--device", "local", *QUICK, "--profile-ops")
    assert code == 0
    compared = farm.cli("results", "compare", job["id"], second["jobs"][0]["id"], "--json")
    doc = json.loads(compared.stdout)
    assert {row["node"] for row in doc["op_nodes"]} == nodes
    assert all(row["ratio"] > 0 for row in doc["op_nodes"])
    table = farm.cli("results", "compare", job["id"], second["jobs"][0]["id"])
    assert "per-operator comparison" in table.stdout

    shown = farm.cli("jobs", "show", job["id"])
    assert "per-operator profile" in shown.stdout and "CPUExecutionProvider" in shown.stdout

    plain = farm.submit_json(str(models["mlp"]), "--device", "local", *QUICK)[1]
    missing = farm.cli("jobs", "trace", plain["jobs"][0]["id"])
    assert missing.returncode == 1 and "submit it with --profile-ops" in missing.stderr
