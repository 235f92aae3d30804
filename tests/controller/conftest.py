"""Fixtures of the controller tests: stores on both backends, real controllers on loopback,
and a fake agent that speaks the agent API with plain stub calls."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

import grpc
import pytest

from hilfarm.controller.server import Controller
from hilfarm.controller.store import Store
from hilfarm.v1 import farm_pb2 as pb
from hilfarm.v1 import farm_pb2_grpc as pb_grpc


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path: Path) -> str:
    """A database URL on each backend: a SQLite file, then a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'contract.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.create_schema()
    yield s
    s.close()


class Farm:
    """A started controller with stubs for both services."""

    def __init__(self, controller: Controller, token: Optional[str] = None) -> None:
        self.controller = controller
        self.channel = grpc.insecure_channel(
            controller.address,
            options=[("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)],
        )
        self.farm = pb_grpc.FarmServiceStub(self.channel)
        self.agents = pb_grpc.AgentServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None

    def upload(self, data: bytes, *, fmt: str = "onnx", filename: str = "model.onnx") -> str:
        sha = hashlib.sha256(data).hexdigest()
        header = pb.ArtifactHeader(sha256=sha, size_bytes=len(data), filename=filename, format=fmt)
        chunks = [pb.ArtifactChunk(header=header, data=data[:1 << 20])]
        chunks += [pb.ArtifactChunk(data=data[i:i + (1 << 20)]) for i in range(1 << 20, len(data), 1 << 20)]
        self.farm.UploadArtifact(iter(chunks), metadata=self.metadata)
        return sha

    def submit(self, shas: Sequence[str], profiles: Sequence[str], **kwargs) -> pb.Run:
        settings = kwargs.pop("settings", None)
        request = pb.SubmitRequest(
            models=[pb.ModelRef(sha256=s) for s in shas], device_profiles=list(profiles),
            settings=settings, **kwargs,
        )
        return self.farm.Submit(request, metadata=self.metadata)

    def job(self, job_id: str) -> pb.Job:
        return self.farm.GetJob(pb.GetJobRequest(job_id=job_id), metadata=self.metadata)

    def agent(self, agent_id: str, profile: str = "rpi5", **kwargs) -> "FakeAgent":
        return FakeAgent(self, agent_id, profile, **kwargs)

    def close(self) -> None:
        self.channel.close()


def onnx_capabilities(version: str = "1.22.0", providers: Sequence[str] = ("CPUExecutionProvider",)) -> pb.Capabilities:
    return pb.Capabilities(
        runtimes=[pb.RuntimeInfo(name="onnxruntime", version=version, package="onnxruntime",
                                 execution_providers=list(providers))],
        cpu_cores=4, memory_bytes=8 << 30, machine="aarch64", os="Linux",
    )


class FakeAgent:
    """What a real agent sends, as plain stub calls a test controls step by step."""

    def __init__(self, farm: Farm, agent_id: str, profile: str, *, tags: Sequence[str] = (),
                 capabilities: Optional[pb.Capabilities] = None) -> None:
        self.farm = farm
        self.id = agent_id
        self.profile = profile
        self.tags = list(tags)
        self.capabilities = capabilities if capabilities is not None else onnx_capabilities()

    def register(self) -> pb.RegisterResponse:
        return self.farm.agents.Register(
            pb.RegisterRequest(agent_id=self.id, device_profile=self.profile, tags=self.tags,
                               capabilities=self.capabilities, hostname=f"{self.id}.local", agent_version="0.1.0"),
            metadata=self.farm.metadata,
        )

    def heartbeat(self, busy: bool = False) -> bool:
        return self.farm.agents.Heartbeat(pb.HeartbeatRequest(agent_id=self.id, busy=busy),
                                          metadata=self.farm.metadata).known

    def lease(self, wait: float = 0.0) -> Optional[pb.Lease]:
        response = self.farm.agents.LeaseJob(pb.LeaseJobRequest(agent_id=self.id, wait_seconds=wait),
                                             metadata=self.farm.metadata)
        return response.lease if response.HasField("lease") else None

    def progress(self, lease: pb.Lease, runs_done: int = 1) -> bool:
        """True when the controller says stop."""
        return self.farm.agents.ReportProgress(
            pb.ReportProgressRequest(agent_id=self.id, lease_id=lease.lease_id,
                                     progress=pb.Progress(phase="measuring", runs_done=runs_done, runs_target=10)),
            metadata=self.farm.metadata,
        ).cancel

    def report(self, lease: pb.Lease, *, result: Optional[pb.BenchmarkResult] = None,
               failure: Optional[pb.Failure] = None, attempt: Optional[int] = None) -> pb.ReportResultResponse:
        request = pb.ReportResultRequest(agent_id=self.id, lease_id=lease.lease_id, job_id=lease.job.id,
                                         attempt=lease.job.attempt if attempt is None else attempt)
        if failure is not None:
            request.failure.CopyFrom(failure)
        else:
            request.result.CopyFrom(result if result is not None else sample_result())
        return self.farm.agents.ReportResult(request, metadata=self.farm.metadata)


def sample_result(samples: Sequence[int] = (1_000_000, 1_100_000, 990_000)) -> pb.BenchmarkResult:
    return pb.BenchmarkResult(
        latency=pb.LatencyResult(samples_ns=list(samples), p50_seconds=0.001, mean_seconds=0.00103),
        memory=pb.MemoryResult(peak_bytes=50 << 20, source="/proc/self/status VmHWM"),
        unavailable=[pb.Unavailable(field="power", reason="no power sensor on this device")],
        warnings=["governor is ondemand"],
    )


@pytest.fixture
def make_farm(tmp_path: Path) -> Iterator[Callable[..., Farm]]:
    """Start controllers (on a SQLite file unless db_url is given); all stop at teardown."""
    farms: List[Farm] = []

    def make(**kwargs) -> Farm:
        kwargs.setdefault("data_dir", tmp_path / f"controller{len(farms)}")
        controller = Controller(**kwargs)
        controller.start("127.0.0.1:0")
        farm = Farm(controller, kwargs.get("token"))
        farms.append(farm)
        return farm

    yield make
    for farm in farms:
        farm.close()
        farm.controller.stop(grace=0.5)


@pytest.fixture
def farm(make_farm) -> Farm:
    return make_farm()


@pytest.fixture
def model(farm: Farm) -> str:
    """The digest of a small model stored on ``farm``."""
    return farm.upload(os.urandom(4096))
