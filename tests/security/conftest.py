"""A farm of real processes to attack: `hilfarm controller serve` with an operator token (and TLS,
metrics, mutual TLS when asked), `hilfarm agent run` agents that enroll with enrollment tokens,
and gRPC callers holding whatever credential a test gives them.

Certificates come from a CA made here with ``cryptography`` (a dev dependency): the controller's
certificate names 127.0.0.1 and localhost; client certificates name an agent id.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import grpc
import pytest

from hilfarm.v1 import farm_pb2 as pb
from hilfarm.v1 import farm_pb2_grpc as pb_grpc

HILFARM = [sys.executable, "-m", "hilfarm.cli"]
ROOT_OK = ["--allow-root"] if os.geteuid() == 0 else []
OPERATOR = "operator-token-of-this-lab"
QUICK = ["--runs", "10", "--min-seconds", "0.05", "--warmup-seconds", "0.01"]


# ---------------------------------------------------------------- certificates

@dataclass
class Pki:
    root: Path

    def path(self, name: str) -> str:
        return str(self.root / name)


def _key():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key: Any = None, cert: Any = None) -> None:
    from cryptography.hazmat.primitives import serialization

    if key is not None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(subject_cn: str, issuer_cn: str, issuer_key: Any, key: Any, *, ca: bool,
           names: Sequence[str] = (), ips: Sequence[str] = (), client: bool = False):  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """ca.pem (the lab's CA), server.pem/server-key.pem (127.0.0.1, localhost), other-ca.pem (a CA
    nobody uses), client-ca.pem and client certificates client-<name>.pem/-key.pem by agent id."""
    root = tmp_path_factory.mktemp("pki")
    for ca_name in ("ca", "other-ca", "client-ca"):
        key = _key()
        cert = _issue(f"hilfarm test {ca_name}", f"hilfarm test {ca_name}", key, key, ca=True)
        _write(root / f"{ca_name}.pem", cert=cert)
        _write(root / f"{ca_name}-key.pem", key=key)
        if ca_name == "ca":
            server_key = _key()
            _write(root / "server-key.pem", key=server_key)
            _write(root / "server.pem", cert=_issue("controller", "hilfarm test ca", key, server_key, ca=False,
                                                    names=["localhost"], ips=["127.0.0.1"]))
        if ca_name == "client-ca":
            for name in ("agent-a", "agent-b", "a-person"):
                client_key = _key()
                _write(root / f"client-{name}-key.pem", key=client_key)
                _write(root / f"client-{name}.pem", cert=_issue(name, "hilfarm test client-ca", key, client_key,
                                                                 ca=False, names=[name], client=True))
    return Pki(root)


# ---------------------------------------------------------------- callers

class _Metadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds one credential to every call."""

    def __init__(self, metadata: tuple) -> None:
        self.metadata = metadata

    def _details(self, details):  # type: ignore[no-untyped-def]
        return details._replace(metadata=tuple(details.metadata or ()) + self.metadata)

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), requests)


class Caller:
    """Stubs of every service, calling with one credential (or none)."""

    def __init__(self, channel: grpc.Channel, credential: Optional[str] = None) -> None:
        self.raw = channel
        self.credential = credential
        if credential is not None:
            channel = grpc.intercept_channel(channel, _Metadata((("authorization", f"Bearer {credential}"),)))
        self.channel = channel
        self.farm = pb_grpc.FarmServiceStub(channel)
        self.agents = pb_grpc.AgentServiceStub(channel)
        self.admin = pb_grpc.AdminServiceStub(channel)

    def upload(self, data: bytes, fmt: str = "onnx", filename: str = "model.onnx") -> str:
        import hashlib

        sha = hashlib.sha256(data).hexdigest()
        header = pb.ArtifactHeader(sha256=sha, size_bytes=len(data), filename=filename, format=fmt)
        chunks = [pb.ArtifactChunk(header=header, data=data[:1 << 20])]
        chunks += [pb.ArtifactChunk(data=data[i:i + (1 << 20)]) for i in range(1 << 20, len(data), 1 << 20)]
        self.farm.UploadArtifact(iter(chunks), timeout=30)
        return sha


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    """The status a call ends with (OK when it returns)."""
    try:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            list(result)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def refusal(call) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    try:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            list(result)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the call was not refused")


# ---------------------------------------------------------------- processes

class Proc:
    def __init__(self, args: List[str], log: Path, env: Dict[str, str]) -> None:
        self.log = log
        self._file = log.open("wb")
        self.popen = subprocess.Popen(args, stdout=self._file, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text())
            if match:
                return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen:\n{self.text()}")

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._file.close()
        return self.popen.returncode


class SecureFarm:
    """`hilfarm controller serve` with an operator token, and what talks to it."""

    def __init__(self, root: Path, pki: Optional[Pki] = None, *, tls: bool = False, mutual: bool = False,
                 metrics_token: Optional[str] = None, args: Sequence[str] = (), token: Optional[str] = OPERATOR,
                 env: Optional[Dict[str, str]] = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.tls = tls or mutual
        self.mutual = mutual
        self.metrics_token = metrics_token
        self.token = token
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HILFARM_")}
        self.env.update(env or {})
        cmd = HILFARM + ["controller", "serve", "--bind", "127.0.0.1:0", "--data-dir", str(root / "controller"),
                         "--lease-seconds", "3"] + list(args)
        if self.tls:
            assert pki is not None
            cmd += ["--tls-cert", pki.path("server.pem"), "--tls-key", pki.path("server-key.pem")]
        if mutual:
            cmd += ["--tls-client-ca", pki.path("client-ca.pem")]
        if metrics_token is not None:
            cmd += ["--metrics-bind", "127.0.0.1:0", "--metrics-token", metrics_token]
        env_c = dict(self.env, HILFARM_TOKEN=token) if token else dict(self.env)
        self.controller = Proc(cmd, root / "controller.log", env_c)
        self.address = self.controller.wait_for(r"listening on ([\d.]+:\d+)").group(1)
        self.metrics_port = (int(self.controller.wait_for(r"metrics on https?://[\d.]+:(\d+)").group(1))
                             if metrics_token is not None else None)
        self.agents: List[Proc] = []
        self._channels: List[grpc.Channel] = []

    # ---- callers
    def channel(self, client: Optional[str] = None, ca: str = "ca.pem") -> grpc.Channel:
        if not self.tls:
            channel = grpc.insecure_channel(self.address, options=[("grpc.max_send_message_length", 64 << 20)])
        else:
            from hilfarm.transport import ClientTls

            assert self.pki is not None
            tls = ClientTls(ca=self.pki.path(ca),
                            cert=self.pki.path(f"client-{client}.pem") if client else None,
                            key=self.pki.path(f"client-{client}-key.pem") if client else None)
            channel = grpc.secure_channel(self.address, tls.credentials(),
                                          options=[("grpc.max_send_message_length", 64 << 20)])
        self._channels.append(channel)
        return channel

    def caller(self, credential: Optional[str] = None, client: Optional[str] = None) -> Caller:
        return Caller(self.channel(client), credential)

    @property
    def operator(self) -> Caller:
        return self.caller(self.token, client="a-person" if self.mutual else None)

    def user_token(self, role: str, project: str = "default", *, name: str = "", expires: float = 0) -> str:
        roles = {"viewer": pb.ROLE_VIEWER, "submitter": pb.ROLE_SUBMITTER, "admin": pb.ROLE_ADMIN}
        return self.operator.admin.CreateToken(pb.CreateTokenRequest(
            project=project, role=roles[role], name=name or f"{role} of {project}",
            expires_in_seconds=expires)).secret

    def enrollment_token(self, profile: str = "local", tags: Sequence[str] = (), agent_id: str = "",
                         uses: int = 1, expires: float = 600) -> str:
        """As `hilfarm admin agents enroll` makes it: a shipped profile's own tags are granted too."""
        from hilfarm.cli.admin import profile_tags

        granted = list(dict.fromkeys((profile_tags(profile) or []) + list(tags)))
        return self.operator.admin.CreateEnrollmentToken(pb.CreateEnrollmentTokenRequest(
            device_profile=profile, tags=granted, agent_id=agent_id, uses=uses,
            expires_in_seconds=expires)).secret

    def enrolled(self, agent_id: str, profile: str = "rpi5", tags: Sequence[str] = (),
                 client: Optional[str] = None) -> "FakeAgent":
        """An agent this test speaks for: enrolled with its own enrollment token, then registered."""
        secret = self.enrollment_token(profile, tags, agent_id=agent_id)
        response = self.caller(secret, client=client).agents.Enroll(
            pb.EnrollRequest(agent_id=agent_id, device_profile=profile, tags=list(tags)))
        agent = FakeAgent(self.caller(response.credential, client=client), agent_id, profile, list(tags))
        agent.register()
        return agent

    # ---- processes
    def cli_env(self, token: Optional[str]) -> Dict[str, str]:
        env = dict(self.env, HILFARM_CONTROLLER=self.address)
        if token:
            env["HILFARM_TOKEN"] = token
        if self.tls:
            assert self.pki is not None
            env["HILFARM_TLS_CA"] = self.pki.path("ca.pem")
        return env

    def cli(self, *args: str, token: Optional[str] = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(HILFARM + list(args), capture_output=True, text=True, env=self.cli_env(token),
                              timeout=timeout)

    def start_agent(self, name: str, *, enroll_token: Optional[str] = None, profile: str = "local",
                    args: Sequence[str] = (), env: Optional[Dict[str, str]] = None) -> Proc:
        cmd = HILFARM + ["agent", "run", "--profile", profile, "--agent-id", name,
                         "--data-dir", str(self.root / name)] + ROOT_OK + list(args)
        agent_env = self.cli_env(None)
        if enroll_token:
            agent_env["HILFARM_ENROLL_TOKEN"] = enroll_token
        agent_env.update(env or {})
        proc = Proc(cmd, self.root / f"{name}.log", agent_env)
        self.agents.append(proc)
        return proc

    def wait_for_device(self, agent_id: str, timeout: float = 60) -> pb.Device:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [d for d in self.operator.farm.ListDevices(pb.ListDevicesRequest()).devices
                     if d.agent_id == agent_id and d.state != "offline"]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"agent {agent_id} did not register:\n" + "\n".join(a.text() for a in self.agents))

    def wait_for_job(self, caller: Caller, job_id: str, states: Sequence[int], timeout: float = 120) -> pb.Job:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = caller.farm.GetJob(pb.GetJobRequest(job_id=job_id))
            if job.state in states:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} is {pb.JobState.Name(job.state)}")

    def serving(self) -> bool:
        """The farm still answers: health, and an authorised call."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(self.channel("a-person" if self.mutual else None))
        ok = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        self.operator.farm.ListDevices(pb.ListDevicesRequest(), timeout=10)
        return ok and self.controller.popen.poll() is None

    def stop(self) -> None:
        for channel in self._channels:
            channel.close()
        for agent in self.agents:
            agent.stop()
        self.controller.stop()


class FakeAgent:
    """An agent whose calls a test makes one by one, with the agent's own credential."""

    def __init__(self, caller: Caller, agent_id: str, profile: str, tags: List[str]) -> None:
        self.caller, self.id, self.profile, self.tags = caller, agent_id, profile, tags

    def register(self) -> None:
        caps = pb.Capabilities(runtimes=[pb.RuntimeInfo(name="onnxruntime", version="1",
                                                        execution_providers=["CPUExecutionProvider"])])
        self.caller.agents.Register(pb.RegisterRequest(agent_id=self.id, device_profile=self.profile, tags=self.tags,
                                                       capabilities=caps))

    def lease(self, wait: float = 0.0) -> Optional[pb.Lease]:
        response = self.caller.agents.LeaseJob(pb.LeaseJobRequest(agent_id=self.id, wait_seconds=wait))
        return response.lease if response.HasField("lease") else None


@pytest.fixture
def make_farm(tmp_path, pki):
    made: List[SecureFarm] = []

    def make(**kwargs) -> SecureFarm:
        farm = SecureFarm(tmp_path / f"farm{len(made)}", pki, **kwargs)
        made.append(farm)
        return farm

    yield make
    for farm in made:
        farm.stop()


@pytest.fixture(scope="module")
def shared_farm(tmp_path_factory, pki):
    """One controller for the tests of a module that only make calls (no agents)."""
    farm = SecureFarm(tmp_path_factory.mktemp("shared-farm"), pki)
    yield farm
    farm.stop()


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Dict[str, Path]:
    from hilfarm import sample_models

    root = tmp_path_factory.mktemp("models")
    return {
        "onnx": sample_models.make_onnx_mlp(root / "mlp.onnx", in_features=8, hidden=8, layers=1),
        "tflite": sample_models.make_tflite_mlp(root / "mlp.tflite"),
    }
