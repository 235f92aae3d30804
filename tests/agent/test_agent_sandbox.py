"""The benchmark process has no network: a model that dials out while it loads reaches nothing.
Where the OS refuses the namespaces, the job still runs and its result says so."""

from __future__ import annotations

import errno
import socket
import sys
import threading

import pytest

from hilfarm.agent import sandbox
from hilfarm.agent.harness import BenchmarkJob, run_benchmark
from hilfarm.agent.results import JobSettings


@pytest.fixture
def listener():
    """A TCP server on loopback that counts the connections it accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname(), accepted
    server.close()
    for conn in accepted:
        conn.close()


def run_network_job(plugins):
    job = BenchmarkJob("", "none", JobSettings(runtime="test-network", min_runs=1, min_seconds=0.0,
                                                warmup_runs=1, warmup_seconds=0.0), plugins=plugins)
    return run_benchmark(job)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="network namespaces are Linux's")
def test_a_model_that_dials_out_while_loading_reaches_nothing(plugins, listener, monkeypatch):
    (host, port), accepted = listener
    # This process can reach the server: the isolation is the child's, not the test machine's.
    socket.create_connection((host, port), timeout=3).close()
    assert _wait_for(lambda: len(accepted) == 1)
    monkeypatch.setenv("HILFARM_TEST_NET_ADDRESS", f"{host}:{port}")
    outcome = run_network_job(plugins)
    assert outcome.result is not None, outcome.failure
    env = outcome.result.environment
    if any("has network access" in w for w in outcome.result.warnings):
        pytest.skip("this machine does not allow unprivileged network namespaces: "
                    + next(w for w in outcome.result.warnings if "has network access" in w))
    assert "network=unreachable" in env.runtime_settings, env.runtime_settings
    assert len(accepted) == 1, "the benchmark process connected to the lab"


def test_where_namespaces_are_refused_the_reason_is_given(monkeypatch):
    monkeypatch.setattr(sandbox, "_unshare", lambda flags: errno.EPERM)
    note = sandbox.isolate_network()
    assert note is not None and "has network access" in note and "Operation not permitted" in note
    assert "user namespaces" in note  # what the device owner can change


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
