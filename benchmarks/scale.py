"""How many devices one controller holds: fake agents, watchers and a stream of null-runtime jobs
against one `hilfarm controller serve` process, all over real gRPC on loopback.

Every fake agent does what a real agent does on the wire: Register, a Heartbeat every
``--heartbeat`` seconds (random phase), LeaseJob long-polls of ``--lease-wait`` seconds, and for
each lease one ReportProgress and one ReportResult (the null runtime: nothing is measured, so
the farm's own overhead is all there is). ``--watchers`` streams are held open for the whole
run on jobs that stay queued (what people waiting in `jobs watch` / `submit --wait` cost the
controller); ``--live-watchers`` follow the submitted jobs and time how long a stored result
takes to reach a watcher. Submissions arrive open-loop at ``--rate`` per second, or, with
``--rate 0``, closed-loop as fast as the farm finishes them (``--window`` jobs outstanding).
Submissions go over ``--user-channels`` connections (1). Fake agents share a connection
``--agents-per-channel`` at a time; the report counts the
connections the controller held.

The load generator runs in this process on asyncio (one core at most); its event-loop lag is
printed, because a saturated generator inflates every latency it reports.

    .venv/bin/python benchmarks/scale.py --agents 1000 --watchers 200 --rate 100 --seconds 60
    .venv/bin/python benchmarks/scale.py --db postgres --agents 50 --rate 0 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from _farm import DEFAULT_POSTGRES_URL, FarmProcess, FloorProcess, PostgresServerCpu, proc_stat, scratch_dir  # noqa: E402

from hilfarm import wire_limits  # noqa: E402
from hilfarm.contract import OVERLOAD_RETRY_AFTER_KEY  # noqa: E402
from hilfarm.sample_models import make_onnx_mlp  # noqa: E402
from hilfarm.v1 import farm_pb2 as pb  # noqa: E402
from hilfarm.v1 import farm_pb2_grpc as pb_grpc  # noqa: E402

Metadata = Tuple[Tuple[str, str], ...]  # gRPC call metadata: an agent's bearer credential

PROFILE = "bench"
PARKED_PROFILE = "bench-parked"  # no agent has it: jobs stay queued, their watchers stay open
FINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
CAPABILITIES = pb.Capabilities(runtimes=[pb.RuntimeInfo(name="null", version="bench", package="hilfarm")],
                               cpu_cores=4, memory_bytes=4 << 30, machine="x86_64", os="Linux")
RESULT = pb.BenchmarkResult(latency=pb.LatencyResult(samples_ns=[1000, 1100, 990], p50_seconds=1e-6))


def percentile(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))]


@dataclass
class Stats:
    heartbeat: List[float] = field(default_factory=list)
    submit: List[float] = field(default_factory=list)
    submit_to_lease: List[float] = field(default_factory=list)
    result_to_watcher: List[float] = field(default_factory=list)
    report: List[float] = field(default_factory=list)
    errors: Dict[str, int] = field(default_factory=lambda: collections.Counter())
    heartbeat_timeouts: int = 0
    heartbeats_unknown: int = 0
    leases: int = 0
    finished: int = 0
    refused_reports: int = 0
    loop_lag: List[float] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace, address: str) -> None:
        self.args = args
        self.address = address
        self.stats = Stats()
        self.measuring = False
        self.seen_errors: set = set()
        self.stop = asyncio.Event()
        self.submitted_at: Dict[str, float] = {}
        self.acked_at: Dict[str, float] = {}
        self.finished_jobs: set = set()
        self.outstanding = 0
        self.progressed = asyncio.Event()
        self.live_queue: "asyncio.Queue[str]" = asyncio.Queue()
        # Each channel its own connection (--agents-per-channel agents on it): gRPC otherwise
        # shares one connection among all channels of a process with the same target and
        # options (its global subchannel pool), and a thousand agents arrive on one socket,
        # which a controller serving real devices never sees.
        options = [("grpc.max_receive_message_length", 16 << 20), ("grpc.keepalive_time_ms", 60_000),
                   ("grpc.use_local_subchannel_pool", 1)]
        n_channels = max(1, -(-args.agents // args.agents_per_channel))
        self.channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(n_channels)]
        # People and CI jobs submit from processes of their own, one connection each; one channel
        # puts every submission on one connection (of one process, with `serve --processes`).
        self.users = [grpc.aio.insecure_channel(address, options=options) for _ in range(max(1, args.user_channels))]
        self.farms = [pb_grpc.FarmServiceStub(user) for user in self.users]
        self.farm = self.farms[0]
        self.submissions = 0
        self.watch_channels = [grpc.aio.insecure_channel(address, options=options)
                               for _ in range(max(1, (args.watchers + args.live_watchers) // 50))]

    def error(self, what: str, exc: BaseException) -> None:
        code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
        kind = f"{what}:{code}"
        if kind not in self.seen_errors:  # the first of each kind, so a setup that fails says why
            self.seen_errors.add(kind)
            details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            print(f"first {what} error: {code}: {details}", file=sys.stderr, flush=True)
        if self.measuring:
            self.stats.errors[kind] += 1

    # ------------------------------------------------------------ agents

    async def agent(self, index: int, registered: asyncio.Semaphore) -> None:
        stub = pb_grpc.AgentServiceStub(self.channels[index // self.args.agents_per_channel])
        agent_id = f"bench-{index:05d}"
        request = pb.RegisterRequest(agent_id=agent_id, device_profile=PROFILE, capabilities=CAPABILITIES,
                                     hostname=agent_id, agent_version="bench")
        # An agent's identity is its own credential, got once with Enroll (the benchmark's
        # controller is open: no enrollment token), sent with every call after it.
        enroll = pb.EnrollRequest(agent_id=agent_id, device_profile=PROFILE, hostname=agent_id)
        async with registered:
            enrolled = await self._retry(lambda: stub.Enroll(enroll, timeout=30), "enroll")
            if enrolled is None:
                return
            me = (("authorization", f"Bearer {enrolled.credential}"),)
            await self._retry(lambda: stub.Register(request, timeout=30, metadata=me), "register")
        heartbeat = asyncio.ensure_future(self.heartbeats(stub, agent_id, request, me))
        try:
            await self.work(stub, agent_id, me)
        finally:
            heartbeat.cancel()

    async def _retry(self, call, what: str):  # type: ignore[no-untyped-def]
        delay = 0.5
        while not self.stop.is_set():
            try:
                return await call()
            except grpc.aio.AioRpcError as exc:
                self.error(what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        return None

    async def heartbeats(self, stub: pb_grpc.AgentServiceStub, agent_id: str, register: pb.RegisterRequest,
                         me: Metadata) -> None:
        interval = self.args.heartbeat
        await asyncio.sleep(random.uniform(0, interval))
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                response = await stub.Heartbeat(pb.HeartbeatRequest(agent_id=agent_id), timeout=10, metadata=me)
                if self.measuring:
                    self.stats.heartbeat.append(time.perf_counter() - started)
                if not response.known:
                    self.stats.heartbeats_unknown += 1
                    await stub.Register(register, timeout=30, metadata=me)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and self.measuring:
                    self.stats.heartbeat_timeouts += 1
                self.error("Heartbeat", exc)
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))

    async def work(self, stub: pb_grpc.AgentServiceStub, agent_id: str, me: Metadata) -> None:
        delay = 0.5
        wait = self.args.lease_wait
        while not self.stop.is_set():
            try:
                response = await stub.LeaseJob(pb.LeaseJobRequest(agent_id=agent_id, wait_seconds=wait),
                                                timeout=wait + 10, metadata=me)
                delay = 0.5
                if not response.HasField("lease"):
                    continue
                leased_at = time.perf_counter()
                lease = response.lease
                job_id = lease.job.id
                if self.measuring:
                    self.stats.leases += 1
                    submitted = self.submitted_at.get(job_id)
                    if submitted is not None:
                        self.stats.submit_to_lease.append(leased_at - submitted)
                for _ in range(self.args.progress_reports):
                    await stub.ReportProgress(pb.ReportProgressRequest(
                        agent_id=agent_id, lease_id=lease.lease_id,
                        progress=pb.Progress(phase="measuring", runs_done=3, runs_target=3)), timeout=30, metadata=me)
                started = time.perf_counter()
                report = await stub.ReportResult(pb.ReportResultRequest(
                    agent_id=agent_id, lease_id=lease.lease_id, job_id=job_id, attempt=lease.job.attempt,
                    result=RESULT), timeout=30, metadata=me)
                now = time.perf_counter()
                if not report.accepted:
                    self.stats.refused_reports += 1
                    continue
                self.acked_at[job_id] = now
                if job_id not in self.finished_jobs:
                    self.finished_jobs.add(job_id)
                    self.outstanding -= 1
                    self.progressed.set()
                    if self.measuring:
                        self.stats.finished += 1
                        self.stats.report.append(now - started)
            except grpc.aio.AioRpcError as exc:
                self.error("LeaseJob/Report", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # ------------------------------------------------------------ users

    async def submit_one(self, model: str, profile: str = PROFILE) -> Optional[str]:
        """Submit one run (``--run-jobs`` jobs of the benchmark's profile, one job of another);
        returns the id of its first job, None when refused."""
        settings = pb.JobSettings(runtime="null", min_runs=3)
        size = self.args.run_jobs if profile == PROFILE else 1
        models = [pb.ModelRef(sha256=model, name="bench.onnx" if size == 1 else f"bench-{i}.onnx") for i in range(size)]
        started = time.perf_counter()
        try:
            self.submissions += 1
            farm = self.farms[self.submissions % len(self.farms)]
            run = await farm.Submit(pb.SubmitRequest(models=models, device_profiles=[profile], settings=settings),
                                    timeout=30)
        except grpc.aio.AioRpcError as exc:
            self.error("Submit", exc)
            retry_after = dict(exc.trailing_metadata() or ()).get(OVERLOAD_RETRY_AFTER_KEY)
            if retry_after is not None:
                # Refused as overloaded: a closed loop waits as asked before it fills the slot again.
                await asyncio.sleep(int(retry_after) / 1000)
            return None
        if profile == PROFILE:
            for job in run.jobs:
                self.submitted_at[job.id] = started
            self.outstanding += len(run.jobs)
            if self.measuring:
                self.stats.submit.append(time.perf_counter() - started)
            if self.live_queue.qsize() < self.args.live_watchers:
                self.live_queue.put_nowait(run.id if self.args.watch_runs else run.jobs[0].id)
        return run.jobs[0].id

    async def submit_parked(self, model: str) -> str:
        """A job that stays queued (no agent has its profile), sent again while refused."""
        while True:
            job_id = await self.submit_one(model, PARKED_PROFILE)
            if job_id is not None:
                return job_id

    async def submitter(self, model: str) -> None:
        rate = self.args.rate
        pending: set = set()
        if rate > 0:
            start = time.perf_counter()
            n = 0
            while not self.stop.is_set():
                n += 1
                delay = start + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.ensure_future(self.submit_one(model))
                pending.add(task)
                task.add_done_callback(pending.discard)
            return
        window = self.args.window or max(50, 4 * self.args.agents)
        while not self.stop.is_set():
            while self.outstanding + self.args.run_jobs * len(pending) < window and not self.stop.is_set():
                task = asyncio.ensure_future(self.submit_one(model))
                pending.add(task)
                task.add_done_callback(pending.discard)
            self.progressed.clear()
            try:
                await asyncio.wait_for(self.progressed.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    async def parked_watcher(self, index: int, job_id: str) -> None:
        stub = pb_grpc.FarmServiceStub(self.watch_channels[index % len(self.watch_channels)])
        while not self.stop.is_set():
            try:
                async for _ in stub.WatchJob(pb.WatchJobRequest(job_id=job_id)):
                    if self.stop.is_set():
                        return
            except grpc.aio.AioRpcError as exc:
                if self.stop.is_set():
                    return
                self.error("WatchJob(parked)", exc)
                await asyncio.sleep(1.0)

    async def live_watcher(self, index: int) -> None:
        stub = pb_grpc.FarmServiceStub(self.watch_channels[index % len(self.watch_channels)])
        while not self.stop.is_set():
            job_id = await self.live_queue.get()
            if self.args.watch_runs:
                await self.follow_run(stub, job_id)
                continue
            first = True
            try:
                async for job in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=60):
                    if job.state in FINAL:
                        acked = self.acked_at.get(job_id)
                        if not first and acked is not None and self.measuring:
                            self.stats.result_to_watcher.append(max(0.0, time.perf_counter() - acked))
                        break
                    first = False
            except grpc.aio.AioRpcError as exc:
                self.error("WatchJob(live)", exc)

    async def follow_run(self, stub: pb_grpc.FarmServiceStub, run_id: str) -> None:
        """``--watch-runs``: follow a whole run on one WatchRun stream, as `submit --wait` does,
        timing each job's stored result to the message that shows it finished."""
        shown: set = set()
        try:
            async for job in stub.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=60):
                if job.state in FINAL and job.id not in shown:
                    shown.add(job.id)
                    acked = self.acked_at.get(job.id)
                    if acked is not None and self.measuring:
                        self.stats.result_to_watcher.append(max(0.0, time.perf_counter() - acked))
        except grpc.aio.AioRpcError as exc:
            self.error("WatchRun(live)", exc)

    async def loop_lag(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.05)
            if self.measuring:
                self.stats.loop_lag.append(time.perf_counter() - started - 0.05)

    async def close(self) -> None:
        for channel in self.channels + self.watch_channels + self.users:
            await channel.close(grace=None)


def process_tree(pid: int) -> List[int]:
    """``pid`` and its child processes (a controller's serving processes, `serve --processes`)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields is not None and int(fields[1]) == pid:
                children.append(int(entry))
    return [pid] + children


def proc_sample(pid: int) -> Dict[str, float]:
    """CPU seconds (user + system) and resident memory of a process and its children (added
    up: the controller's processes), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    sample = {"cpu_seconds": 0.0, "rss_bytes": 0, "peak_rss_bytes": 0, "processes": 0}
    for member in process_tree(pid):
        fields = proc_stat(member)
        if fields is None:
            if member == pid:
                raise FileNotFoundError(f"/proc/{pid}/stat: the process is gone")
            continue
        sample["cpu_seconds"] += (int(fields[11]) + int(fields[12])) / ticks
        sample["processes"] += 1
        with open(f"/proc/{member}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    sample["rss_bytes"] += int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    sample["peak_rss_bytes"] += int(line.split()[1]) * 1024
    return sample


def connections_to(port: int) -> int:
    """Established TCP connections whose local end is ``port`` (the controller's side), from
    /proc/net/tcp and tcp6: how many sockets the controller serves the load on."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state = fields[1], fields[3]
                    if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                        count += 1
        except FileNotFoundError:
            pass
    return count


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def tiny_onnx_model() -> bytes:
    """A valid ONNX file; the null runtime never runs it."""
    with tempfile.TemporaryDirectory(prefix="hilfarm-scale-model-") as tmp:
        return make_onnx_mlp(Path(tmp) / "bench.onnx", in_features=4, hidden=4, layers=1, out_features=2).read_bytes()


async def run(args: argparse.Namespace, address: str, controller_pid: int,
              database: Optional[PostgresServerCpu] = None) -> dict:
    bench = Bench(args, address)
    loop_lag = asyncio.ensure_future(bench.loop_lag())
    data = tiny_onnx_model()  # the controller checks an upload is the format it claims
    sha = hashlib.sha256(data).hexdigest()
    header = pb.ArtifactHeader(sha256=sha, size_bytes=len(data), filename="bench.onnx", format="onnx")

    async def chunks():  # type: ignore[no-untyped-def]
        yield pb.ArtifactChunk(header=header, data=data)

    await bench.farm.UploadArtifact(chunks(), timeout=30)
    registered = asyncio.Semaphore(50)
    t0 = time.perf_counter()
    agents = [asyncio.ensure_future(bench.agent(i, registered)) for i in range(args.agents)]
    # Every agent registered and heartbeating before anything is measured.
    while True:
        devices = (await bench.farm.ListDevices(pb.ListDevicesRequest(), timeout=60)).devices
        if sum(1 for d in devices if d.state != "offline") >= args.agents:
            break
        await asyncio.sleep(0.5)
    print(f"{args.agents} agents registered in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    parked = [await bench.submit_parked(sha) for _ in range(min(args.watchers, 50))]
    watchers = [asyncio.ensure_future(bench.parked_watcher(i, parked[i % len(parked)]))
                for i in range(args.watchers) if parked]
    watchers += [asyncio.ensure_future(bench.live_watcher(i)) for i in range(args.live_watchers)]
    submitter = asyncio.ensure_future(bench.submitter(sha))
    await asyncio.sleep(args.warmup)
    before, cpu_before, wall_before = proc_sample(controller_pid), self_cpu(), time.perf_counter()
    database_before = database.seconds() if database is not None else None
    load_before = os.getloadavg()
    bench.measuring = True
    await asyncio.sleep(args.seconds)
    bench.measuring = False
    after, cpu_after, wall_after = proc_sample(controller_pid), self_cpu(), time.perf_counter()
    database_after = database.seconds() if database is not None else None
    connections = connections_to(int(address.rsplit(":", 1)[1]))
    load_after = os.getloadavg()
    bench.stop.set()
    submitter.cancel()
    for task in agents + watchers + [loop_lag]:
        task.cancel()
    await asyncio.gather(*agents, *watchers, submitter, loop_lag, return_exceptions=True)
    await bench.close()
    window = wall_after - wall_before
    s = bench.stats

    def ms(values: List[float], q: float) -> Optional[float]:
        v = percentile(values, q)
        return None if v is None else round(v * 1000, 2)

    return {
        "agents": args.agents, "watchers": args.watchers, "live_watchers": args.live_watchers,
        "user_channels": args.user_channels,
        "run_jobs": args.run_jobs, "watch_runs": args.watch_runs,
        "rate": args.rate, "seconds": round(window, 1), "db": args.db, "floor": args.floor,
        "heartbeats": len(s.heartbeat), "heartbeat_timeouts": s.heartbeat_timeouts,
        "heartbeats_unknown": s.heartbeats_unknown,
        "heartbeat_ms": {"p50": ms(s.heartbeat, 50), "p99": ms(s.heartbeat, 99), "max": ms(s.heartbeat, 100)},
        "submit_ms": {"p50": ms(s.submit, 50), "p99": ms(s.submit, 99)},
        "submit_to_lease_ms": {"p50": ms(s.submit_to_lease, 50), "p99": ms(s.submit_to_lease, 99)},
        "report_ms": {"p50": ms(s.report, 50), "p99": ms(s.report, 99)},
        "result_to_watcher_ms": {"p50": ms(s.result_to_watcher, 50), "p99": ms(s.result_to_watcher, 99),
                                 "n": len(s.result_to_watcher)},
        "jobs_per_second": round(s.finished / window, 1),
        "submitted_per_second": round(len(s.submit) / window, 1),
        "refused_reports": s.refused_reports,
        "errors": dict(s.errors),
        "controller_cpu_percent_of_one_core": round(100 * (after["cpu_seconds"] - before["cpu_seconds"]) / window, 1),
        "controller_processes": after["processes"],
        "controller_rss_mb": round(after["rss_bytes"] / 2**20, 1),
        "controller_connections": connections,
        "controller_peak_rss_mb": round(after["peak_rss_bytes"] / 2**20, 1),
        "generator_cpu_percent_of_one_core": round(100 * (cpu_after - cpu_before) / window, 1),
        "database_server_cpu_percent_of_one_core": (
            None if database_before is None or database_after is None
            else round(100 * (database_after - database_before) / window, 1)),
        "generator_loop_lag_ms": {"p50": ms(s.loop_lag, 50), "p99": ms(s.loop_lag, 99)},
        "load_average_1min": [round(load_before[0], 2), round(load_after[0], 2)],
    }


def postgres_database(base_url: str) -> tuple:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    base = make_url(base_url)
    name = f"hilfarm_scale_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), drop


def print_report(r: dict) -> None:
    def pair(d: dict) -> str:
        return f"{d['p50']} / {d['p99']} ms"

    runs = f" of {r['run_jobs']}-job runs" if r["run_jobs"] > 1 else ""
    print(f"\n{r['agents']} agents (heartbeat every {ARGS.heartbeat:g} s, {ARGS.lease_wait:g} s long-polls), "
          f"{r['watchers']} open watch streams + {r['live_watchers']} live watchers"
          f"{' of whole runs' if r['watch_runs'] else ''}, "
          f"submissions {'closed-loop' if not r['rate'] else str(r['rate']) + '/s'}"
          f"{runs}, "
          f"{'gRPC floor (no controller)' if r.get('floor') else r['db']}, {r['seconds']} s measured")
    print(f"  heartbeat p50 / p99        {pair(r['heartbeat_ms'])}  (max {r['heartbeat_ms']['max']} ms, "
          f"{r['heartbeats']} answered, {r['heartbeat_timeouts']} timed out)")
    print(f"  submit p50 / p99           {pair(r['submit_ms'])}")
    print(f"  submit->lease p50 / p99    {pair(r['submit_to_lease_ms'])}")
    print(f"  report p50 / p99           {pair(r['report_ms'])}")
    print(f"  result->watcher p50 / p99  {pair(r['result_to_watcher_ms'])}  ({r['result_to_watcher_ms']['n']} seen)")
    print(f"  null-runtime jobs/s        {r['jobs_per_second']}  (submitted {r['submitted_per_second']}/s)")
    print(f"  controller                 {r['controller_cpu_percent_of_one_core']} % of one core, "
          f"RSS {r['controller_rss_mb']} MB (peak {r['controller_peak_rss_mb']} MB), "
          f"{r['controller_connections']} connections"
          + (f", {r['controller_processes']} processes (added up)" if r["controller_processes"] > 1 else ""))
    print(f"  load generator             {r['generator_cpu_percent_of_one_core']} % of one core, "
          f"event-loop lag p50 / p99 {pair(r['generator_loop_lag_ms'])}")
    if r.get("database_server_cpu_percent_of_one_core") is not None:
        print(f"  PostgreSQL server          {r['database_server_cpu_percent_of_one_core']} % of one core "
              "(its processes on this machine)")
    print(f"  errors                     {r['errors'] or 'none'}; refused reports {r['refused_reports']}")
    print(f"  load average (1 min)       {r['load_average_1min'][0]} before, {r['load_average_1min'][1]} after "
          f"({os.cpu_count()} cores)")


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--watchers", type=int, default=0, help="watch streams held open on queued jobs")
    parser.add_argument("--live-watchers", type=int, default=20, help="watchers following the submitted jobs")
    parser.add_argument("--run-jobs", type=int, default=1, help="jobs in each submitted run (one model each)")
    parser.add_argument("--watch-runs", action="store_true",
                        help="live watchers follow whole runs (WatchRun, as `submit --wait`) instead of single jobs")
    parser.add_argument("--rate", type=float, default=100.0, help="submissions per second; 0 = closed loop")
    parser.add_argument("--window", type=int, default=0, help="closed loop: jobs outstanding (default 4 x agents, >= 50)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring")
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--lease-wait", type=float, default=10.0)
    parser.add_argument("--progress-reports", type=int, default=1, help="ReportProgress calls per job")
    parser.add_argument("--user-channels", type=int, default=1,
                        help="connections the submissions are spread over (each a person's or CI job's own)")
    parser.add_argument("--agents-per-channel", type=int, default=10, help="fake agents sharing one HTTP/2 connection")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--controller-arg", action="append", default=[], help="extra argument for `controller serve`")
    parser.add_argument("--processes", type=int, default=1,
                        help="`controller serve --processes` (PostgreSQL): processes serving the port")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--floor", action="store_true",
                        help="load benchmarks/grpc_floor.py (the farm's gRPC services doing nothing) instead of "
                             "`controller serve`: what the gRPC layer alone costs here")
    ARGS = args = parser.parse_args()
    most = wire_limits.MAX_ITEMS["hilfarm.v1.SubmitRequest.models"]
    if not 1 <= args.run_jobs <= most:
        parser.error(f"--run-jobs must be 1 to {most} (the models one submission may name)")
    if args.floor and args.watch_runs:
        parser.error("--watch-runs: the gRPC floor serves no WatchRun")

    root = scratch_dir("scale")
    drop = None
    farm = None
    database: Optional[PostgresServerCpu] = None
    try:
        if args.floor:
            farm = FloorProcess(root / "floor")
        else:
            command = ["controller", "serve", "--bind", "127.0.0.1:0"] + list(args.controller_arg)
            if args.processes != 1:
                command += ["--processes", str(args.processes)]
            if args.db == "postgres":
                url, drop = postgres_database(args.postgres_url)
                command += ["--db", url]
                database = PostgresServerCpu(url)
            farm = FarmProcess(command, root / "controller")
        print(f"{'gRPC floor server' if args.floor else 'controller'} pid {farm.popen.pid} at {farm.address}",
              file=sys.stderr, flush=True)
        result = asyncio.run(run(args, farm.address, farm.popen.pid, database))
        print_report(result)
        if args.json:
            print(json.dumps(result))
    finally:
        if farm is not None:
            farm.stop()
        if drop is not None:
            drop()
        shutil.rmtree(root, ignore_errors=True)


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
