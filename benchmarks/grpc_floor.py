"""The floor under any Python controller: the farm's gRPC services on ``grpc.aio`` with the
controller's server options, doing nothing but in-memory bookkeeping (no database, no
authentication, no checks, no metrics).

`benchmarks/scale.py --floor` runs its load against this server instead of `controller serve`, so
the same fake agents, watchers and submissions show what the gRPC layer alone costs on this
machine: a controller can be no cheaper than this per call, and no faster than this in jobs/s.

    .venv/bin/python benchmarks/scale.py --floor --agents 1000 --watchers 200 --rate 100 --seconds 20

Run directly it serves until interrupted and prints ``listening on HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
import uuid
from typing import Deque, Dict, List

import grpc

# The options and switch interval `controller serve` runs with, so connection handling,
# keepalive pings and message limits cost the same here.
from hilfarm.controller.server import SERVER_OPTIONS, SWITCH_INTERVAL_SECONDS
from hilfarm.transport import with_port
from hilfarm.v1 import farm_pb2 as pb
from hilfarm.v1 import farm_pb2_grpc as pb_grpc

FINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


class Farm:
    """Jobs and agents in dictionaries; a queued job goes to the agent that has waited longest."""

    def __init__(self) -> None:
        self.jobs: Dict[str, pb.Job] = {}
        self.queued: Dict[str, Deque[str]] = collections.defaultdict(collections.deque)
        self.waiting: Dict[str, Deque[asyncio.Future]] = collections.defaultdict(collections.deque)
        self.changed: Dict[str, asyncio.Event] = {}
        self.agents: Dict[str, pb.RegisterRequest] = {}

    def queue(self, profile: str, job_id: str) -> None:
        waiters = self.waiting[profile]
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(job_id)
                return
        self.queued[profile].append(job_id)

    def set_state(self, job_id: str, state: int) -> None:
        self.jobs[job_id].state = state
        event = self.changed.pop(job_id, None)
        if event is not None:
            event.set()


class AgentService(pb_grpc.AgentServiceServicer):
    def __init__(self, farm: Farm) -> None:
        self.farm = farm

    async def Enroll(self, request, context):  # type: ignore[no-untyped-def]
        return pb.EnrollResponse(agent_id=request.agent_id, credential=f"floor-{request.agent_id}",
                                 device_profile=request.device_profile)

    async def Register(self, request, context):  # type: ignore[no-untyped-def]
        self.farm.agents[request.agent_id] = request
        return pb.RegisterResponse(heartbeat_interval_seconds=5.0, lease_seconds=60.0)

    async def Heartbeat(self, request, context):  # type: ignore[no-untyped-def]
        return pb.HeartbeatResponse(known=request.agent_id in self.farm.agents)

    async def LeaseJob(self, request, context):  # type: ignore[no-untyped-def]
        agent = self.farm.agents.get(request.agent_id)
        if agent is None:
            return pb.LeaseJobResponse()
        profile = agent.device_profile
        queued = self.farm.queued[profile]
        if queued:
            job_id = queued.popleft()
        else:
            future = asyncio.get_running_loop().create_future()
            self.farm.waiting[profile].append(future)
            try:
                job_id = await asyncio.wait_for(future, request.wait_seconds)
            except asyncio.TimeoutError:
                return pb.LeaseJobResponse()
        self.farm.set_state(job_id, pb.JOB_STATE_RUNNING)
        job = self.farm.jobs[job_id]
        return pb.LeaseJobResponse(lease=pb.Lease(lease_id=uuid.uuid4().hex, job=job, expires_at=time.time() + 60))

    async def ReportProgress(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ReportProgressResponse()

    async def ReportResult(self, request, context):  # type: ignore[no-untyped-def]
        if request.job_id in self.farm.jobs:
            self.farm.set_state(request.job_id, pb.JOB_STATE_SUCCEEDED)
        return pb.ReportResultResponse(accepted=True)


class FarmService(pb_grpc.FarmServiceServicer):
    def __init__(self, farm: Farm) -> None:
        self.farm = farm

    async def UploadArtifact(self, request_iterator, context):  # type: ignore[no-untyped-def]
        header = None
        size = 0
        async for chunk in request_iterator:
            if chunk.HasField("header"):
                header = chunk.header
            size += len(chunk.data)
        return pb.ArtifactRef(sha256=header.sha256 if header else "", size_bytes=size, format="onnx")

    async def Submit(self, request, context):  # type: ignore[no-untyped-def]
        jobs: List[pb.Job] = []
        for model in request.models:
            for profile in request.device_profiles:
                job = pb.Job(id=uuid.uuid4().hex, state=pb.JOB_STATE_QUEUED, attempt=1)
                self.farm.jobs[job.id] = job
                self.farm.queue(profile, job.id)
                jobs.append(job)
        return pb.Run(id=uuid.uuid4().hex, created_at=time.time(), jobs=jobs)

    async def ListDevices(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ListDevicesResponse(devices=[
            pb.Device(agent_id=a.agent_id, device_profile=a.device_profile, state="idle")
            for a in self.farm.agents.values()])

    async def WatchJob(self, request, context):  # type: ignore[no-untyped-def]
        job = self.farm.jobs.get(request.job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such job")
        while True:
            event = self.farm.changed.setdefault(request.job_id, asyncio.Event())
            yield job
            if job.state in FINAL:
                return
            await event.wait()


async def serve(bind: str) -> None:
    farm = Farm()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_AgentServiceServicer_to_server(AgentService(farm), server)
    pb_grpc.add_FarmServiceServicer_to_server(FarmService(farm), server)
    port = server.add_insecure_port(bind)
    await server.start()
    print(f"listening on {with_port(bind, port)}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="127.0.0.1:0")
    args = parser.parse_args()
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    try:
        asyncio.run(serve(args.bind))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
