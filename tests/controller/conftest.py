"""Fixtures of the controller tests: stores on both backends, real controllers on loopback,
and a fake agent that speaks the agent API with plain stub calls."""
from __future__ import annotations

import hashlib
import io
import os
import struct
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

import grpc
import pytest

from hilfarm.controller.server import Controller
from hilfarm.controller.app import Repositories, open_repositories
from hilfarm.controller.database import Database
from hilfarm.v1 import farm_pb2 as pb
from hilfarm.v1 import farm_pb2_grpc as pb_grpc


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path: Path) -> str:
    """A database URL on each backend: a SQLite file, then a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'contract.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(db_url: str) -> Iterator[Repositories]:
    s = open_repositories(Database(db_url))
    s.database.migrate()
    yield s
    s.database.close()


# ---------------------------------------------------------------- artifacts the controller accepts
# The controller stores only files that are what their format says (artifact_formats.py); tests
# that move bytes around use files of the right structure with random payloads.

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def onnx_prefix(size: int) -> bytes:
    """The first bytes of an ONNX ModelProto of ``size`` bytes: ir_version, an empty graph, and
    the key and length of a field ONNX does not define (parsers skip it) holding the rest."""
    head = b"\x08\x08" + b"\x3a\x00" + _varint(1000 << 3 | 2)
    for width in range(1, 6):
        length = size - len(head) - width
        if len(_varint(length)) == width:
            return head + _varint(length)
    raise ValueError(size)


def onnx_bytes(size: int = 4096, payload: bytes = b"") -> bytes:
    """A structurally valid ONNX model of exactly ``size`` bytes (random payload unless given)."""
    prefix = onnx_prefix(size)
    rest = size - len(prefix)
    return prefix + (payload * (rest // max(len(payload), 1) + 1))[:rest] if payload else prefix + os.urandom(rest)


def tflite_bytes(size: int = 4096) -> bytes:
    """A FlatBuffer with the TFL3 identifier, schema version 3 and one subgraph, then random bytes."""
    head = struct.pack("<I4s", 24, b"TFL3")                       # root table at 24
    head += struct.pack("<HHHHH", 10, 12, 4, 0, 8).ljust(16, b"\0")  # vtable: version at +4, subgraphs at +8
    head += struct.pack("<iIIII", 16, 3, 4, 1, 4)                  # table, version 3, vector of 1 subgraph
    assert size >= len(head)
    return head + os.urandom(size - len(head))


def npz_bytes(**arrays) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **(arrays or {"x": np.arange(12, dtype=np.float32)}))
    return buf.getvalue()


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
        self.admin = pb_grpc.AdminServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._downloader: Optional["FakeAgent"] = None

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

    def download(self, sha: str, **kwargs) -> Iterator[pb.ArtifactChunk]:
        """The chunks of artifact ``sha`` as they stream, as an agent gets them: agents download only what a job
        leased to them uses, so a fake agent of a profile of its own leases a job of it first."""
        agent = self._downloader
        if agent is None:
            caps = onnx_capabilities()
            caps.runtimes.add(name="tflite", version="2.14", package="tflite-runtime")
            agent = self._downloader = self.agent("downloader", profile="download-only", capabilities=caps)
            agent.register()
        if len(sha) == 64 and agent.lease_id_for(sha) is None:
            self.submit([sha], ["download-only"])
            agent.lease()
        return self.agents.DownloadArtifact(pb.DownloadArtifactRequest(sha256=sha), metadata=agent.metadata, **kwargs)

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
        self.credential: Optional[str] = None
        self.leases: List[pb.Lease] = []

    @property
    def metadata(self):  # type: ignore[no-untyped-def]
        """The agent's own credential, got with Enroll (the farm's admin token, or none on an
        open controller) the first time it is needed."""
        if self.credential is None:
            self.credential = self.farm.agents.Enroll(
                pb.EnrollRequest(agent_id=self.id, device_profile=self.profile, tags=self.tags,
                                 hostname=f"{self.id}.local"),
                metadata=self.farm.metadata,
            ).credential
        return (("authorization", f"Bearer {self.credential}"),)

    def lease_id_for(self, sha: str) -> Optional[str]:
        return next((l.lease_id for l in self.leases if sha in (l.job.model_sha256, l.job.settings.inputs_sha256)), None)

    def register(self) -> pb.RegisterResponse:
        return self.farm.agents.Register(
            pb.RegisterRequest(agent_id=self.id, device_profile=self.profile, tags=self.tags,
                               capabilities=self.capabilities, hostname=f"{self.id}.local", agent_version="0.1.0"),
            metadata=self.metadata,
        )

    def heartbeat(self, busy: bool = False) -> bool:
        return self.farm.agents.Heartbeat(pb.HeartbeatRequest(agent_id=self.id, busy=busy),
                                          metadata=self.metadata).known

    def lease(self, wait: float = 0.0) -> Optional[pb.Lease]:
        response = self.farm.agents.LeaseJob(pb.LeaseJobRequest(agent_id=self.id, wait_seconds=wait),
                                             metadata=self.metadata)
        if not response.HasField("lease"):
            return None
        self.leases.append(response.lease)
        return response.lease

    def progress(self, lease: pb.Lease, runs_done: int = 1) -> bool:
        """True when the controller says stop."""
        return self.farm.agents.ReportProgress(
            pb.ReportProgressRequest(agent_id=self.id, lease_id=lease.lease_id,
                                     progress=pb.Progress(phase="measuring", runs_done=runs_done, runs_target=10)),
            metadata=self.metadata,
        ).cancel

    def report(self, lease: pb.Lease, *, result: Optional[pb.BenchmarkResult] = None,
               failure: Optional[pb.Failure] = None, attempt: Optional[int] = None) -> pb.ReportResultResponse:
        request = pb.ReportResultRequest(agent_id=self.id, lease_id=lease.lease_id, job_id=lease.job.id,
                                         attempt=lease.job.attempt if attempt is None else attempt)
        if failure is not None:
            request.failure.CopyFrom(failure)
        else:
            request.result.CopyFrom(result if result is not None else sample_result())
        return self.farm.agents.ReportResult(request, metadata=self.metadata)


def sample_result(samples: Sequence[int] = (1_000_000, 1_100_000, 990_000)) -> pb.BenchmarkResult:
    """A result as an agent sends it: the figures it has, and every figure it lacks named."""
    result = pb.BenchmarkResult(
        latency=pb.LatencyResult(samples_ns=list(samples), p50_seconds=0.001, mean_seconds=0.00103, repeats=1),
        memory=pb.MemoryResult(peak_bytes=50 << 20, source="/proc/self/status VmHWM"),
        unavailable=[pb.Unavailable(field="power", reason="no power sensor on this device")],
        warnings=["governor is ondemand"],
    )
    for section in (result.latency, result.memory):
        for field in section.DESCRIPTOR.fields:
            if field.message_type is None and not field.name.startswith(("repeat_p50", "between_repeat")):
                try:
                    unset = not section.HasField(field.name)
                except ValueError:  # a plain field: always there
                    continue
                if unset:
                    name = section.DESCRIPTOR.name.replace("Result", "").lower()
                    result.unavailable.add(field=f"{name}.{field.name}", reason="not in this test's result")
    return result


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
    return farm.upload(onnx_bytes(4096))


def wait_for(predicate, timeout: float, what: str):
    """``predicate()``'s first true value, asked every 50 ms; fails naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
