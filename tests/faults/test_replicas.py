"""Two controller replicas on one PostgreSQL database and one shared artifact directory, 2,000
null-runtime jobs, fake agents on both replicas over real gRPC, and one replica killed with
SIGKILL halfway and started again: every job is done exactly once, and every result a replica
acknowledged is the result the job holds."""
from __future__ import annotations

import asyncio
import collections
import os
import random
import time
from typing import Dict, List, Tuple

import grpc
import pytest
import sqlalchemy as sa

from hilfarm.v1 import farm_pb2 as pb
from hilfarm.v1 import farm_pb2_grpc as pb_grpc

from ..controller.conftest import onnx_bytes
from .conftest import Controller

JOBS = 2000
MODELS_PER_SUBMIT = 20
AGENTS = 16
NULL = pb.Capabilities(runtimes=[pb.RuntimeInfo(name="null", version="test", package="hilfarm")])
RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


class Ledger:
    """What the agents were told: every accepted report, every refused one."""

    def __init__(self) -> None:
        self.accepted: Dict[str, List[Tuple[int, str, str]]] = collections.defaultdict(list)
        self.refused: List[Tuple[str, str]] = []
        self.after_restart: Dict[str, int] = collections.Counter()  # agent -> reports acknowledged
        self.restarted = False


async def retrying(call, stop: asyncio.Event):  # type: ignore[no-untyped-def]
    """A call repeated with backoff while its replica is away, as a real agent does."""
    delay = 0.2
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRY or stop.is_set():
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


# gRPC shares one connection among a process's channels to one address unless told otherwise.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


async def fake_agent(name: str, address: str, ledger: Ledger, stop: asyncio.Event, *,
                     own_connection: bool = False) -> None:
    async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION if own_connection else None) as channel:
        stub = pb_grpc.AgentServiceStub(channel)
        # An agent's identity is its own credential, got once with Enroll (open controller: no token).
        enroll = pb.EnrollRequest(agent_id=name, device_profile="bench", hostname=f"{name}.local")
        credential = (await retrying(lambda: stub.Enroll(enroll, timeout=10), stop)).credential
        me = (("authorization", f"Bearer {credential}"),)
        register = pb.RegisterRequest(agent_id=name, device_profile="bench", capabilities=NULL, agent_version="test")
        await retrying(lambda: stub.Register(register, timeout=10, metadata=me), stop)

        async def heartbeats() -> None:
            while not stop.is_set():
                try:
                    if not (await stub.Heartbeat(pb.HeartbeatRequest(agent_id=name), timeout=5, metadata=me)).known:
                        await stub.Register(register, timeout=10, metadata=me)
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(1.0)

        beating = asyncio.ensure_future(heartbeats())
        try:
            while not stop.is_set():
                try:
                    response = await stub.LeaseJob(pb.LeaseJobRequest(agent_id=name, wait_seconds=1), timeout=10, metadata=me)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in RETRY:
                        raise
                    await asyncio.sleep(0.2 + random.random() * 0.3)
                    continue
                if not response.HasField("lease"):
                    continue
                lease = response.lease
                # The result names who measured it under which lease: the job must hold exactly this.
                marker = f"{name}:{lease.lease_id}"
                report = pb.ReportResultRequest(agent_id=name, lease_id=lease.lease_id, job_id=lease.job.id,
                                                attempt=lease.job.attempt,
                                                result=pb.BenchmarkResult(warnings=[marker]))
                answer = await retrying(lambda: stub.ReportResult(report, timeout=10, metadata=me), stop)
                if answer.accepted:
                    ledger.accepted[lease.job.id].append((lease.job.attempt, lease.lease_id, marker))
                    if ledger.restarted:
                        ledger.after_restart[name] += 1
                else:
                    ledger.refused.append((lease.job.id, answer.message))
        finally:
            beating.cancel()


async def submit_all(replicas: List[Controller], models: List[str]) -> List[str]:
    ids: List[str] = []
    settings = pb.JobSettings(runtime="null", min_runs=1)
    channels = [grpc.aio.insecure_channel(r.address) for r in replicas]
    stop = asyncio.Event()
    try:
        for i in range(JOBS // MODELS_PER_SUBMIT):
            stub = pb_grpc.FarmServiceStub(channels[i % len(channels)])
            request = pb.SubmitRequest(models=[pb.ModelRef(sha256=m) for m in models], device_profiles=["bench"],
                                       settings=settings, max_attempts=5)
            run = await retrying(lambda: stub.Submit(request, timeout=30), stop)
            ids += [j.id for j in run.jobs]
    finally:
        for channel in channels:
            await channel.close()
    return ids


def stored_jobs(url: str) -> Dict[str, Tuple[int, str, dict]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {row.id: (row.attempt, row.lease_id, row.result) for row in
                    conn.execute(sa.text("SELECT id, attempt, lease_id, result FROM jobs"))}
    finally:
        engine.dispose()


def states(url: str) -> Dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT state, count(*) FROM jobs GROUP BY state")).all())
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_two_replicas_run_2000_jobs_each_exactly_once_through_a_replica_crash(tmp_path, processes, postgres_url):
    shared = tmp_path / "shared-artifacts"
    replicas = [Controller(tmp_path, db_url=postgres_url, name=name, artifacts_dir=shared, lease_seconds=5)
                for name in ("replica-a", "replica-b")]
    for replica in replicas:
        processes.append(replica.start())
    models = []
    for i, replica in enumerate(replicas * (MODELS_PER_SUBMIT // 2)):
        data = onnx_bytes(96)
        with replica.client() as client:
            path = tmp_path / f"m{i}.onnx"
            path.write_bytes(data)
            models.append(client.upload(path).sha256)
    # Both replicas serve every artifact from the one store, whichever received it.
    for replica in replicas:
        with replica.client() as client:
            assert all(client._stub.StatArtifact(pb.StatArtifactRequest(sha256=m)).present for m in models)

    ledger = Ledger()

    async def scenario() -> List[str]:
        stop = asyncio.Event()
        agents = [asyncio.ensure_future(fake_agent(f"agent-{i:02d}", replicas[i % 2].address, ledger, stop))
                  for i in range(AGENTS)]
        submitted = asyncio.ensure_future(submit_all(replicas, models))
        killed = False
        deadline = time.monotonic() + 300
        while True:
            await asyncio.sleep(0.2)
            for agent in agents:
                if agent.done() and agent.exception() is not None:
                    raise agent.exception()
            done = sum(1 for reports in ledger.accepted.values() if reports)
            if not killed and done >= JOBS // 3:
                replicas[0].kill()
                killed = True
                await asyncio.sleep(2.0)
                await asyncio.get_running_loop().run_in_executor(None, replicas[0].start)
                ledger.restarted = True
            if submitted.done() and done >= JOBS:
                counts = states(postgres_url)
                if set(counts) == {"succeeded"}:  # the jobs of a Submit sent twice are done too
                    break
            assert time.monotonic() < deadline, f"{done} of {JOBS} jobs done after 300 s"
        stop.set()
        await asyncio.gather(*agents, return_exceptions=True)
        return submitted.result()

    job_ids = asyncio.run(scenario())
    assert len(job_ids) == len(set(job_ids)) == JOBS
    assert replicas[0].text().count("hilfarm controller listening on") == 2, "replica-a was killed and started again"
    on_a = [f"agent-{i:02d}" for i in range(0, AGENTS, 2)]
    assert sum(ledger.after_restart[a] for a in on_a) > 0, "the agents of the killed replica worked on after its restart"
    # A Submit whose answer the crash swallowed may have been stored and sent again by the client
    # (Submit is not idempotent): those jobs are real jobs too, and are held to the same rules.
    stored = stored_jobs(postgres_url)
    assert set(job_ids) <= set(stored) and len(stored) - JOBS <= 2 * MODELS_PER_SUBMIT
    assert states(postgres_url) == {"succeeded": len(stored)}
    for job_id in stored:
        attempt, lease_id, result = stored[job_id]
        reports = ledger.accepted[job_id]
        # Done exactly once: one lease's result was acknowledged (a repeat of it is the same one).
        assert len({lease for _, lease, _ in reports}) == 1, (job_id, reports)
        acked_attempt, acked_lease, marker = reports[0]
        # No acknowledged result lost: the job holds what its agent was told was stored.
        assert (attempt, lease_id, result["warnings"]) == (acked_attempt, acked_lease, [marker]), job_id
    for job_id, message in ledger.refused:
        assert "stale" in message or "cancelled" in message, message
