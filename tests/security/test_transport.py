"""Someone on the network: a relay between a client and the controller reads the token off a
plaintext connection and nothing off a TLS one; clients verify the controller's certificate; with
mutual TLS every client shows one and an agent's names it; /metrics is loopback-only or behind a
bearer token; and the controller refuses to listen beyond loopback without protection."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request

import grpc
import pytest

from hilfarm.v1 import farm_pb2 as pb

from .conftest import HILFARM, OPERATOR, Caller, refusal


class Relay:
    """A TCP relay that keeps every byte it forwards (what a machine on the path sees)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.seen = bytearray()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                self.seen.extend(data)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def close(self) -> None:
        self.server.close()


def test_a_relay_reads_the_token_off_plaintext_but_nothing_off_tls(make_farm, pki):
    from hilfarm.transport import ClientTls

    plain = make_farm()
    relay = Relay(plain.address)
    with grpc.insecure_channel(relay.address) as channel:
        Caller(channel, OPERATOR).farm.ListDevices(pb.ListDevicesRequest(), timeout=10)
    assert OPERATOR.encode() in relay.seen  # the attack of the issue, on a plaintext controller
    relay.close()

    secure = make_farm(tls=True)
    relay = Relay(secure.address)
    tls = ClientTls(ca=pki.path("ca.pem"))
    # The certificate names 127.0.0.1, not the relay's port: gRPC checks the name, not the port.
    with grpc.secure_channel(relay.address, tls.credentials()) as channel:
        Caller(channel, OPERATOR).farm.ListDevices(pb.ListDevicesRequest(), timeout=10)
    assert relay.seen and OPERATOR.encode() not in relay.seen and b"authorization" not in relay.seen
    relay.close()


def test_clients_verify_the_controllers_certificate(make_farm, pki, tmp_path):
    farm = make_farm(tls=True)
    assert farm.cli("devices", "list", token=farm.token).returncode == 0  # HILFARM_TLS_CA
    env = farm.cli_env(farm.token)
    del env["HILFARM_TLS_CA"]
    plaintext = subprocess.run(HILFARM + ["devices", "list"], capture_output=True, text=True, env=env, timeout=60)
    assert plaintext.returncode == 2 and "cannot reach the controller" in plaintext.stderr
    stranger = subprocess.run(HILFARM + ["--tls-ca", pki.path("other-ca.pem"), "devices", "list"],
                              capture_output=True, text=True, env=env, timeout=60)
    assert stranger.returncode == 2 and "cannot reach the controller" in stranger.stderr
    # "system": the trust store the OS gives Python (here made to hold the lab's CA).
    system = subprocess.run(HILFARM + ["--tls-ca", "system", "devices", "list"], capture_output=True, text=True,
                            env=dict(env, SSL_CERT_FILE=pki.path("ca.pem")), timeout=60)
    assert system.returncode == 0, system.stderr
    # An agent verifies it too, and works over TLS end to end.
    farm.start_agent("tls-agent", enroll_token=farm.enrollment_token("local", agent_id="tls-agent"))
    assert farm.wait_for_device("tls-agent").agent_id == "tls-agent"


def test_mutual_tls_requires_a_client_certificate_and_an_agents_names_it(make_farm, pki):
    farm = make_farm(mutual=True)
    # No client certificate: the handshake fails, nothing is served.
    bare = Caller(farm.channel(), OPERATOR)
    assert refusal(lambda: bare.farm.ListDevices(pb.ListDevicesRequest(), timeout=10)).code() == \
        grpc.StatusCode.UNAVAILABLE
    assert farm.caller(OPERATOR, client="a-person").farm.ListDevices(pb.ListDevicesRequest()) is not None
    agent_a = farm.enrolled("agent-a", client="agent-a")
    # agent-a's credential over agent-b's certificate: refused.
    stolen = farm.caller(agent_a.caller.credential, client="agent-b")
    err = refusal(lambda: stolen.agents.Heartbeat(pb.HeartbeatRequest()))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "names agent-b, not agent agent-a" in err.details()
    assert agent_a.caller.agents.Heartbeat(pb.HeartbeatRequest()).known
    assert farm.serving()


def _get(url: str, token: str = None, context=None):  # type: ignore[no-untyped-def]
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_metrics_need_the_bearer_token_and_travel_over_tls(make_farm, pki):
    farm = make_farm(tls=True, metrics_token="scrape-me")
    context = ssl.create_default_context(cafile=pki.path("ca.pem"))
    url = f"https://127.0.0.1:{farm.metrics_port}/metrics"
    status, body = _get(url, context=context)
    assert status == 401 and b"Bearer" in body
    assert _get(url, "wrong", context)[0] == 401
    status, body = _get(url, "scrape-me", context)
    assert status == 200 and b"hilfarm_agents" in body
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{farm.metrics_port}/metrics", timeout=10).read()
    # A client that connects and never speaks holds up nobody.
    with socket.create_connection(("127.0.0.1", farm.metrics_port)):
        assert _get(url, "scrape-me", context)[0] == 200


def test_an_unprotected_controller_stays_on_loopback(tmp_path):
    def serve(*args: str) -> subprocess.Popen:
        return subprocess.Popen(HILFARM + ["controller", "serve", "--data-dir", str(tmp_path / "c")] + list(args),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={k: v for k, v in __import__("os").environ.items() if not k.startswith("HILFARM_")})

    for args, says in ((["--bind", "0.0.0.0:0"], "refusing to listen on 0.0.0.0:0"),
                       (["--bind", "[::]:0"], "refusing to listen on [::]:0"),
                       (["--bind", "127.0.0.1:0", "--metrics-bind", "0.0.0.0:0"], "refusing to serve metrics on 0.0.0.0:0")):
        proc = serve(*args)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1, out
        assert says in out and "--insecure" in out
    help_text = subprocess.run(HILFARM + ["controller", "serve", "--help"], capture_output=True, text=True).stdout
    assert "127.0.0.1:50051" in help_text  # the default
    proc = serve("--bind", "0.0.0.0:0", "--insecure")
    try:
        line = ""
        while "listening on" not in line:
            line = proc.stdout.readline()
            assert line, "the controller did not start with --insecure"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_an_address_that_is_not_host_port_is_named_before_anything_starts(tmp_path):
    """gRPC reads a bare host as port 443 and fails an empty host as if the port were taken; the
    metrics server raised a traceback for a port past 65535. Each is one line naming the option."""
    data = tmp_path / "c"
    for args, says in (
        (["--bind", "localhost"], "the controller's address 'localhost' is not HOST:PORT"),
        (["--bind", "127.0.0.1:grpc"], "the controller's address '127.0.0.1:grpc' is not HOST:PORT"),
        (["--bind", ":50051", "--insecure"], "the controller's address ':50051' names no host: 0.0.0.0:50051"),
        (["--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:99999"],
         "the metrics address '127.0.0.1:99999' is not HOST:PORT with a port from 0 to 65535"),
        (["--bind", "127.0.0.1:0", "--metrics-bind", "localhost"], "the metrics address 'localhost' is not HOST:PORT"),
    ):
        proc = subprocess.run(HILFARM + ["controller", "serve", "--data-dir", str(data)] + args,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert says in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert "in use" not in proc.stderr  # not mistaken for a busy port
        assert not list(data.rglob("hilfarm.db"))  # refused before the database is touched


def test_addresses_are_taken_apart_in_one_place():
    from hilfarm.transport import dial_address_problem, host_of, listen_address_problem, split_host_port, with_port

    assert split_host_port("127.0.0.1:50051") == ("127.0.0.1", "50051")
    assert split_host_port("[::1]:50051") == ("[::1]", "50051")  # brackets kept: gRPC needs them back
    assert split_host_port(":9464") == ("", "9464")
    assert split_host_port("controller.lab") == ("controller.lab", "")
    assert host_of("[::1]:50051") == "::1" and host_of("controller.lab") == "controller.lab"
    assert with_port("0.0.0.0:0", 41234) == "0.0.0.0:41234" and with_port("[::]:0", 7) == "[::]:7"
    assert listen_address_problem("[::]:0", "x") is None
    assert listen_address_problem(":9464", "x", host_required=False) is None
    assert "names no host" in listen_address_problem(":9464", "x")
    assert "not HOST:PORT" in listen_address_problem("127.0.0.1:65536", "x")
    assert dial_address_problem("controller.lab") is None  # gRPC dials 443: an HTTPS ingress
    assert dial_address_problem("[::1]:50051") is None and dial_address_problem("unix:/run/hilfarm.sock") is None
    assert "port 65536" in dial_address_problem("[::1]:65536")


def test_a_client_is_told_when_the_controllers_port_cannot_exist():
    """gRPC wraps a port past 65535 round (99999 dials 34463) and then reports that port as
    refusing: the CLI names the address it was given instead, before dialling anything."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("HILFARM_")}
    for how, address in (("option", "127.0.0.1:99999"), ("environment", "127.0.0.1:0")):
        args = HILFARM + (["--controller", address] if how == "option" else []) + ["jobs", "list"]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=60,
                              env=dict(env, HILFARM_CONTROLLER=address) if how == "environment" else env)
        assert proc.returncode == 2, proc.stderr
        assert f"'{address}' names port {address.rsplit(':', 1)[1]}; a controller listens on a port from 1 to 65535" \
            in proc.stderr, proc.stderr
        assert "cannot reach" not in proc.stderr
