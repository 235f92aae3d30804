"""The /metrics endpoint: prometheus_client's exposition, optionally over HTTPS and behind a
bearer token (``authorization: Bearer <token>``, as Prometheus sends with ``authorization:
credentials_file:`` in a scrape config). Without a token it serves only on loopback unless the
operator says otherwise (transport.metrics_exposure_problem)."""
from __future__ import annotations

import hmac
import ssl
import threading
from typing import Any, Callable, Iterable, Optional, Tuple
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

Start = Callable[[str, list], Any]


def bearer_protected(app: Callable, token: str) -> Callable:
    """``app``, answering 401 to a request without ``Authorization: Bearer <token>``."""
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict, start_response: Start) -> Iterable[bytes]:
        sent = environ.get("HTTP_AUTHORIZATION", "").encode()
        if hmac.compare_digest(sent, expected):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                            ("WWW-Authenticate", 'Bearer realm="hilfarm metrics"')])
        return [b"this metrics endpoint needs 'Authorization: Bearer <metrics token>'\n"]

    return guarded


def serve_metrics(registry: CollectorRegistry, host: str, port: int, *, ssl_context: Optional[ssl.SSLContext] = None,
                  bearer_token: Optional[str] = None) -> Tuple[WSGIServer, threading.Thread]:
    """Serve ``registry`` at http(s)://host:port/metrics in a daemon thread."""
    app = make_wsgi_app(registry)
    if bearer_token:
        app = bearer_protected(app, bearer_token)

    class Server(ThreadingWSGIServer):
        address_family = ThreadingWSGIServer.address_family

    if ":" in host:
        import socket

        Server.address_family = socket.AF_INET6
    httpd = make_server(host, port, app, Server, handler_class=_SilentHandler)
    if ssl_context is not None:
        # The handshake happens in the request's own thread: a client that connects and says
        # nothing (or speaks plain HTTP) cannot hold up the accepting thread.
        httpd.socket = ssl_context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=httpd.serve_forever, name="hilfarm-metrics-http", daemon=True)
    thread.start()
    return httpd, thread
