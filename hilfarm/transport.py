"""How the CLI, the agents and the controller reach each other: TLS from ordinary PEM files
off loopback, plaintext only where nothing leaves the machine.

Clients (the CLI, agents) speak TLS when given a CA to verify the controller with: ``--tls-ca
FILE`` or ``HILFARM_TLS_CA`` (a PEM bundle), or the value ``system`` for the operating system's
trust store. With mutual TLS they also present ``--tls-client-cert`` / ``--tls-client-key``
(``HILFARM_TLS_CLIENT_CERT`` / ``HILFARM_TLS_CLIENT_KEY``). The controller serves TLS with
``--tls-cert`` / ``--tls-key`` and asks every client for a certificate signed by
``--tls-client-ca`` when given one.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import grpc

SYSTEM_TRUST = "system"


class TransportError(ValueError):
    """A TLS file that cannot be used, or an address that would be exposed; says which and why."""


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise TransportError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise TransportError(f"{what} {path} is not a PEM file (no -----BEGIN line)")
    return data


def system_roots() -> bytes:
    """The operating system's trusted CA certificates (what ``ssl`` verifies with)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return _read(candidate, "system trust store")
    raise TransportError("no system trust store file was found (SSL_CERT_FILE, or the OpenSSL default "
                         f"{paths.openssl_cafile}); give the CA with --tls-ca FILE")


@dataclass(frozen=True)
class ClientTls:
    """How a client verifies the controller (and, for mutual TLS, proves who it is)."""

    ca: str = SYSTEM_TRUST  # a PEM file, or "system"
    cert: Optional[str] = None
    key: Optional[str] = None

    @classmethod
    def resolve(cls, ca: Optional[str] = None, cert: Optional[str] = None,
                key: Optional[str] = None) -> Optional["ClientTls"]:
        """From the arguments, else the environment; None when nothing asks for TLS."""
        ca = ca or os.environ.get("HILFARM_TLS_CA") or None
        cert = cert or os.environ.get("HILFARM_TLS_CLIENT_CERT") or None
        key = key or os.environ.get("HILFARM_TLS_CLIENT_KEY") or None
        if (cert is None) != (key is None):
            raise TransportError("a client certificate needs its key, and a key its certificate "
                                 "(--tls-client-cert and --tls-client-key)")
        if ca is None and cert is None:
            return None
        return cls(ca=ca or SYSTEM_TRUST, cert=cert, key=key)

    def credentials(self) -> grpc.ChannelCredentials:
        roots = system_roots() if self.ca == SYSTEM_TRUST else _read(self.ca, "CA file")
        if self.cert and self.key:
            return grpc.ssl_channel_credentials(root_certificates=roots,
                                                private_key=_read(self.key, "client key"),
                                                certificate_chain=_read(self.cert, "client certificate"))
        return grpc.ssl_channel_credentials(root_certificates=roots)


def open_channel(address: str, tls: Optional[ClientTls], options: Sequence[Tuple[str, object]] = ()) -> grpc.Channel:
    """A channel to ``address``: TLS when ``tls`` is given, plaintext otherwise."""
    if tls is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, tls.credentials(), options=list(options))


@dataclass(frozen=True)
class ServerTls:
    """The controller's certificate and key, and the CA its clients' certificates must chain to
    when it asks for them (mutual TLS)."""

    cert: str
    key: str
    client_ca: Optional[str] = None

    def credentials(self) -> grpc.ServerCredentials:
        pair = (_read(self.key, "TLS key"), _read(self.cert, "TLS certificate"))
        if self.client_ca:
            return grpc.ssl_server_credentials([pair], root_certificates=_read(self.client_ca, "client CA file"),
                                               require_client_auth=True)
        return grpc.ssl_server_credentials([pair])

    def ssl_context(self) -> ssl.SSLContext:
        """The same certificate for the metrics endpoint (HTTPS)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"TLS certificate {self.cert} / key {self.key} cannot be used: {exc}") from None
        if self.client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.client_ca)
        return context


def split_host_port(address: str) -> Tuple[str, str]:
    """HOST:PORT split at its last colon: the host as written (IPv6 brackets kept, '' for
    ':PORT') and the port's text; without a colon all of ``address`` is the host and the port
    is ''. The one place the farm takes an address apart."""
    host, colon, port = address.rpartition(":")
    return (host, port) if colon else (address, "")


def host_of(address: str) -> str:
    """The host of HOST:PORT ('' for ':PORT'), without IPv6 brackets."""
    return split_host_port(address)[0].strip("[]")


def with_port(address: str, port: int) -> str:
    """``address`` with its port replaced: where a server asked for port 0 actually listens."""
    return f"{split_host_port(address)[0]}:{port}"


def dial_address_problem(address: str) -> Optional[str]:
    """Why a client cannot dial ``address``, or None. A bare host is left to gRPC (it dials port
    443, as for a controller behind an HTTPS ingress); a port past 65535 it would wrap round into
    another port and report that one as refusing."""
    _, port = split_host_port(address)
    if port.isdigit() and not 1 <= int(port) <= 65535:
        return f"{address!r} names port {port}; a controller listens on a port from 1 to 65535"
    return None


def listen_address_problem(address: str, what: str, *, host_required: bool = True,
                           example_port: int = 50051) -> Optional[str]:
    """Why ``what`` cannot listen on ``address``, read as HOST:PORT, or None when it can be
    tried. gRPC would otherwise turn a missing port into port 443 and an empty host into a
    failure that reads like a port in use."""
    host, port = split_host_port(address)
    if not port.isdigit() or int(port) > 65535:
        return (f"{what} {address!r} is not HOST:PORT with a port from 0 to 65535 "
                f"(e.g. 127.0.0.1:{example_port}, 0.0.0.0:{example_port} or [::]:{example_port}; "
                "port 0 picks a free one)")
    if host_required and not host:
        return (f"{what} {address!r} names no host: 0.0.0.0:{port} (or [::]:{port}) listens on every "
                f"interface, 127.0.0.1:{port} on this machine only")
    return None


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT can be reached only from this machine."""
    return is_loopback_host(host_of(address))


def is_loopback_host(host: str, *, look_up: bool = True) -> bool:
    """Whether every address ``host`` names is a loopback address ('' is every interface). With
    ``look_up`` False a name other than localhost counts as not loopback, without waiting for DNS."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not look_up:
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def exposure_problem(bind: str, *, token: bool, tls: bool, insecure: bool) -> Optional[str]:
    """Why the controller must not listen on ``bind`` as configured, or None."""
    if insecure or is_loopback(bind) or token or tls:
        return None
    return (f"refusing to listen on {bind}: it is not a loopback address, and the controller has neither a "
            "token (--token / HILFARM_TOKEN) nor TLS (--tls-cert / --tls-key), so anyone who can reach it "
            "could submit work to every device and read every result. Listen on 127.0.0.1, give a token "
            "and a certificate, or pass --insecure to accept the risk")


def metrics_exposure_problem(bind: str, *, token: bool, insecure: bool) -> Optional[str]:
    if insecure or is_loopback(bind) or token:
        return None
    return (f"refusing to serve metrics on {bind}: it is not a loopback address and no metrics token "
            "(--metrics-token / HILFARM_METRICS_TOKEN) protects it; give one (Prometheus sends it as a "
            "bearer token), serve on 127.0.0.1, or pass --insecure")
