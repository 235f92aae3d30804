"""What one job costs the controller in CPU, measured without contention: one fake agent, one
job at a time (Submit, LeaseJob, ReportProgress, ReportResult, as in benchmarks/scale.py), and
the controller's CPU seconds from /proc divided by the jobs done. The same sequence runs against
benchmarks/grpc_floor.py (the farm's gRPC services doing nothing), in alternating rounds, so the
ratio of the two is what the controller's own work adds to the gRPC layer on this machine.

Heartbeats are timed the same way (one agent, one call at a time). One call at a time, each call
also pays for waking an idle server, which a loaded one shares among many calls: a heartbeat
waits ~20 ms for its batch (controller/heartbeats.py), and that wait alone adds ~1 ms of CPU
when the floor server is made to do it. The job figure has no such wait and matches the marginal
CPU per job that benchmarks/scale.py measures under load.

Throughput follows from it: at ``c`` CPU milliseconds per job, one core finishes at most
1000 / c jobs a second, less what idle agents and watchers take (benchmarks/scale.py).

With ``--db postgres`` the controller uses a fresh database on the PostgreSQL server of
``--postgres-url`` (or HILFARM_TEST_POSTGRES_URL), and when that server runs on this machine the
CPU its own processes spend per job is printed too: on PostgreSQL a job costs the machine the
controller's CPU and the server's.

    .venv/bin/python benchmarks/job_cost.py --jobs 300 --rounds 3
    .venv/bin/python benchmarks/job_cost.py --jobs 300 --rounds 3 --db postgres
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from _farm import DEFAULT_POSTGRES_URL, FarmProcess, FloorProcess, PostgresServerCpu, scratch_dir  # noqa: E402
from scale import CAPABILITIES, RESULT, postgres_database, tiny_onnx_model  # noqa: E402

from hilfarm.v1 import farm_pb2 as pb  # noqa: E402
from hilfarm.v1 import farm_pb2_grpc as pb_grpc  # noqa: E402

PROFILE = "bench"
WARMUP_JOBS = 30


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far, in nanosecond resolution (the first field of
    each thread's /proc schedstat), where /proc/PID/stat counts 10 ms clock ticks: a few calls
    would read as none."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return total / 1e9


async def measure(address: str, pid: int, jobs: int, heartbeats: int,
                  database: Optional[PostgresServerCpu] = None) -> Dict[str, float]:
    """CPU milliseconds the server at ``address`` (process ``pid``) spends per job and per heartbeat."""
    channel = grpc.aio.insecure_channel(address)
    farm, agents = pb_grpc.FarmServiceStub(channel), pb_grpc.AgentServiceStub(channel)
    data = tiny_onnx_model()
    sha = hashlib.sha256(data).hexdigest()
    header = pb.ArtifactHeader(sha256=sha, size_bytes=len(data), filename="bench.onnx", format="onnx")

    async def chunks():  # type: ignore[no-untyped-def]
        yield pb.ArtifactChunk(header=header, data=data)

    await farm.UploadArtifact(chunks(), timeout=30)
    enrolled = await agents.Enroll(pb.EnrollRequest(agent_id="cost-1", device_profile=PROFILE, hostname="cost-1"))
    me = (("authorization", f"Bearer {enrolled.credential}"),)
    await agents.Register(pb.RegisterRequest(agent_id="cost-1", device_profile=PROFILE, capabilities=CAPABILITIES,
                                             hostname="cost-1", agent_version="bench"), metadata=me, timeout=30)
    submit = pb.SubmitRequest(models=[pb.ModelRef(sha256=sha, name="bench.onnx")], device_profiles=[PROFILE],
                              settings=pb.JobSettings(runtime="null", min_runs=3))

    async def one_job() -> None:
        await farm.Submit(submit, timeout=30)
        lease = (await agents.LeaseJob(pb.LeaseJobRequest(agent_id="cost-1", wait_seconds=5),
                                       metadata=me, timeout=30)).lease
        await agents.ReportProgress(pb.ReportProgressRequest(
            agent_id="cost-1", lease_id=lease.lease_id,
            progress=pb.Progress(phase="measuring", runs_done=3, runs_target=3)), metadata=me, timeout=30)
        report = await agents.ReportResult(pb.ReportResultRequest(
            agent_id="cost-1", lease_id=lease.lease_id, job_id=lease.job.id, attempt=lease.job.attempt,
            result=RESULT), metadata=me, timeout=30)
        if not report.accepted:
            raise RuntimeError(f"result refused: {report.message}")

    def database_cpu() -> Optional[float]:
        return database.seconds() if database is not None else None

    async def timed(what, n: int) -> Dict[str, float]:  # type: ignore[no-untyped-def]
        cpu, wall, db_cpu = cpu_seconds(pid), time.perf_counter(), database_cpu()
        for _ in range(n):
            await what()
        figures = {"cpu_ms": 1000 * (cpu_seconds(pid) - cpu) / n,
                   "wall_ms": 1000 * (time.perf_counter() - wall) / n}
        db_after = database_cpu()
        if db_cpu is not None and db_after is not None:  # clock ticks: meaningful over many jobs only
            figures["database_cpu_ms"] = 1000 * (db_after - db_cpu) / n
        return figures

    async def one_heartbeat() -> None:
        await agents.Heartbeat(pb.HeartbeatRequest(agent_id="cost-1"), metadata=me, timeout=30)

    for _ in range(WARMUP_JOBS):
        await one_job()
    job = await timed(one_job, jobs)
    beat = await timed(one_heartbeat, heartbeats)
    await channel.close()
    figures = {"job_cpu_ms": job["cpu_ms"], "job_wall_ms": job["wall_ms"],
               "heartbeat_cpu_ms": beat["cpu_ms"], "heartbeat_wall_ms": beat["wall_ms"]}
    if "database_cpu_ms" in job:
        figures["job_database_cpu_ms"] = job["database_cpu_ms"]
    return figures


def one_round(floor: bool, jobs: int, heartbeats: int, postgres_url: Optional[str]) -> Dict[str, float]:
    root = scratch_dir("job-cost")
    drop = None
    database = None
    if floor:
        server: FarmProcess = FloorProcess(root / "floor")
    else:
        command = ["controller", "serve", "--bind", "127.0.0.1:0"]
        if postgres_url:
            url, drop = postgres_database(postgres_url)
            command += ["--db", url]
            database = PostgresServerCpu(url)
        server = FarmProcess(command, root / "controller")
    try:
        return asyncio.run(measure(server.address, server.popen.pid, jobs, heartbeats, database))
    finally:
        server.stop()
        if drop is not None:
            drop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300, help="jobs timed per round")
    parser.add_argument("--heartbeats", type=int, default=300, help="heartbeats timed per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each, alternating")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite",
                        help="the controller's database (the floor has none)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    postgres_url = args.postgres_url if args.db == "postgres" else None
    rounds: Dict[str, List[Dict[str, float]]] = {"controller": [], "floor": []}
    for _ in range(args.rounds):
        for name in ("controller", "floor"):
            rounds[name].append(one_round(name == "floor", args.jobs, args.heartbeats, postgres_url))
    median = {name: {key: statistics.median(r[key] for r in results) for key in results[0]}
              for name, results in rounds.items()}
    c, f = median["controller"], median["floor"]
    print(f"one job at a time, {args.jobs} jobs and {args.heartbeats} heartbeats a round, {args.db},\n"
          f"median of {args.rounds} alternating rounds")
    print(f"  {'':28}{'controller':>12}{'gRPC floor':>12}{'ratio':>8}")
    for key, label in (("job_cpu_ms", "CPU per job (ms)"), ("job_wall_ms", "wall per job (ms)"),
                       ("heartbeat_cpu_ms", "CPU per heartbeat (ms)"), ("heartbeat_wall_ms", "wall per heartbeat (ms)")):
        print(f"  {label:28}{c[key]:12.2f}{f[key]:12.2f}{c[key] / f[key]:8.1f}")
    if "job_database_cpu_ms" in c:
        print(f"  the PostgreSQL server's own CPU per job: {c['job_database_cpu_ms']:.2f} ms (its processes on this machine)")
    print(f"  at most {1000 / c['job_cpu_ms']:.0f} jobs/s per core for the controller "
          f"({1000 / f['job_cpu_ms']:.0f} for the floor),\n"
          "  before idle agents and watchers take their share")
    if args.json:
        print(json.dumps({"controller": median["controller"], "floor": median["floor"], "rounds": rounds}))


if __name__ == "__main__":
    main()
