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


def test_the_scale_benchmark_follows_whole_runs_on_one_stream_each() -> None:
    """``--run-jobs`` submits runs of several jobs, ``--watch-runs`` has the live watchers follow
    them on WatchRun: every job of a run is seen finished on its run's stream."""
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--agents", "10", "--watchers", "0",
         "--live-watchers", "2", "--run-jobs", "5", "--watch-runs", "--rate", "2", "--seconds", "3", "--warmup", "1",
         "--heartbeat", "1", "--json"],
        capture_output=True, text=True, timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "live watchers of whole runs" in done.stdout and "of 5-job runs" in done.stdout, done.stdout
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == {} and report["run_jobs"] == 5 and report["watch_runs"] is True, report
    # Two runs a second of five jobs each: jobs, not submissions, are what finishes.
    assert report["jobs_per_second"] > report["submitted_per_second"] > 0, report
    assert report["result_to_watcher_ms"]["n"] >= 5, report
    refused = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--run-jobs", "101"],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
    assert refused.returncode == 2 and "--run-jobs must be 1 to 100" in refused.stderr, refused.stderr


def test_the_grpc_floor_serves_the_same_load_with_no_controller_behind_it() -> None:
    """`--floor` runs the same fake agents, watchers and submissions against
    benchmarks/grpc_floor.py: every submitted job must be leased, reported and seen finished by
    its watcher there too, or the floor's figures would not be comparable."""
    agents, rate, seconds = 20, 10, 3
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--floor", "--agents", str(agents),
         "--watchers", "3", "--live-watchers", "2", "--rate", str(rate), "--seconds", str(seconds),
         "--warmup", "1", "--heartbeat", "1", "--json"],
        capture_output=True, text=True, timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gRPC floor (no controller)" in done.stdout, done.stdout
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["floor"] is True and report["errors"] == {}, report
    # An open loop at 10/s for 3 s: nearly every job submitted in the window finishes in it.
    assert report["jobs_per_second"] >= 0.8 * rate, report
    assert report["heartbeats"] >= agents * seconds * 0.8 and report["heartbeat_timeouts"] == 0, report
    assert report["result_to_watcher_ms"]["n"] > 0, report


def test_the_job_cost_benchmark_measures_the_controller_and_the_floor_side_by_side() -> None:
    """benchmarks/job_cost.py: CPU per job and per heartbeat of a real controller and of the gRPC
    floor, from /proc, each job really leased and its result accepted (the script stops on a
    refused result)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "job_cost.py"), "--jobs", "10", "--heartbeats", "10",
         "--rounds", "1", "--json"],
        capture_output=True, text=True, timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("controller", "floor"):
        figures = report[name]
        assert figures["job_cpu_ms"] > 0 and figures["heartbeat_cpu_ms"] > 0, report
        # Four calls a job, one at a time: each job takes at least the CPU time it was charged.
        assert figures["job_wall_ms"] >= figures["job_cpu_ms"] / 2, report
    assert len(report["rounds"]["controller"]) == len(report["rounds"]["floor"]) == 1, report
    assert "CPU per job (ms)" in done.stdout and "gRPC floor" in done.stdout, done.stdout


def test_on_postgresql_the_job_cost_benchmark_counts_the_database_servers_cpu_too(postgres_database_url: str) -> None:
    """On PostgreSQL a job costs the machine the controller's CPU and the database server's:
    with the server on this machine, job_cost.py reads the second from its processes' /proc
    (those that ended included) and prints it beside the first."""
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "job_cost.py"), "--jobs", "60", "--heartbeats", "5",
         "--rounds", "1", "--db", "postgres", "--postgres-url", postgres_database_url, "--json"],
        capture_output=True, text=True, timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    controller = report["controller"]
    # Sixty jobs of a dozen statements each: tens of milliseconds of the server's CPU at least,
    # several of /proc's 10 ms clock ticks.
    assert controller["job_database_cpu_ms"] > 0, report
    assert "job_database_cpu_ms" not in report["floor"], report
    assert "the PostgreSQL server's own CPU per job" in done.stdout and ", postgres," in done.stdout, done.stdout
