"""benchmarks/scale.py is the proof behind the README's scale figures: run small, it must load a
real `controller serve` the way devices do (one connection per channel of fake agents, not one
shared socket), finish the jobs it submits and account for every heartbeat."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_scale_benchmark_loads_the_controller_over_one_connection_per_channel() -> None:
    agents, per_channel, watchers, live = 30, 10, 4, 2
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--agents", str(agents),
         "--agents-per-channel", str(per_channel), "--watchers", str(watchers), "--live-watchers", str(live),
         "--rate", "5", "--seconds", "3", "--warmup", "1", "--heartbeat", "1", "--json"],
        capture_output=True, text=True, timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # Three channels of agents, the submitting user's channel and one for the watch streams:
    # with gRPC's shared subchannel pool all of them were a single connection.
    assert report["controller_connections"] == agents // per_channel + 1 + 1, report
    assert report["errors"] == {}, report
    assert report["jobs_per_second"] > 0, report
    assert report["heartbeats"] >= agents and report["heartbeat_timeouts"] == 0, report
    assert report["result_to_watcher_ms"]["n"] > 0, report
