"""The benchmark process has no network and cannot read the agent's files: a model that dials out
or reads the agent's credential while it loads gets nothing, yet reads its own model. Where the
OS refuses the namespaces, the job still runs and its result says so."""

from __future__ import annotations

import errno
import socket
import sys
import threading
import time

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
    # What is looked at is the sandbox, not the figures: warming up is not left to go on until the
    # runtime's nanosecond latencies look steady (up to its 30 s cap on a busy machine).
    job = BenchmarkJob("", "none", JobSettings(runtime="test-network", min_runs=1, min_seconds=0.0,
                                                warmup_runs=1, warmup_seconds=0.0, warmup_max_seconds=0.5),
                       plugins=plugins)
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
    if any("network access" in w for w in outcome.result.warnings):
        pytest.skip("this machine does not allow unprivileged network namespaces: "
                    + next(w for w in outcome.result.warnings if "network access" in w))
    assert "network=unreachable" in env.runtime_settings, env.runtime_settings
    assert len(accepted) == 1, "the benchmark process connected to the lab"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mount namespaces are Linux's")
def test_the_agents_files_are_hidden_but_the_jobs_model_is_not(plugins, tmp_path, monkeypatch):
    data_dir = tmp_path / "agent"
    secret = data_dir / "credential.json"
    model = data_dir / "artifacts" / "ab" / "abcdef"
    model.parent.mkdir(parents=True)
    secret.write_text('{"credential": "hfa_secret"}')
    model.write_bytes(b"\x08" * 1234)
    monkeypatch.setenv("HILFARM_TEST_SECRET", str(secret))
    job = BenchmarkJob(str(model), "none", JobSettings(runtime="test-snoop", min_runs=1, min_seconds=0.0,
                                                       warmup_runs=1, warmup_seconds=0.0, warmup_max_seconds=0.5),
                       plugins=plugins, private_dir=str(data_dir))
    outcome = run_benchmark(job)
    assert outcome.result is not None, outcome.failure
    if any("can read the agent's files" in w for w in outcome.result.warnings):
        pytest.skip("this machine does not allow mount namespaces: " + "; ".join(outcome.result.warnings))
    settings = outcome.result.environment.runtime_settings
    assert "secret=unreadable" in settings and "model=read 1234 bytes" in settings, settings
    assert outcome.result.memory.model_file_bytes == 1234
    # Outside the benchmark process nothing changed.
    assert secret.read_text() == '{"credential": "hfa_secret"}'


def test_where_namespaces_are_refused_the_reason_is_given(monkeypatch):
    monkeypatch.setattr(sandbox, "_unshare", lambda flags: errno.EPERM)
    notes, moved = sandbox.enter({"hide": ["/nowhere"], "binds": []})
    assert moved == {} and len(notes) == 1
    assert "has network access and can read the agent's files" in notes[0] and "Operation not permitted" in notes[0]
    assert "user namespaces" in notes[0]  # what the device owner can change


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_the_agent_process_is_not_dumpable():
    """Its /proc files (environ: the tokens it started with) become root's, not its user's."""
    import ctypes
    import os

    # As root, the agent-to-be runs as nobody: otherwise its files are root's anyway.
    user = 65534 if os.geteuid() == 0 else os.geteuid()
    owners = {}
    for protect in (False, True):
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the agent-to-be
            try:
                os.close(ready_r)
                if os.geteuid() == 0:
                    os.setuid(user)
                ctypes.CDLL(None).prctl(sandbox.PR_SET_DUMPABLE, 1, 0, 0, 0)  # as a fresh process is
                if protect:
                    sandbox.protect_agent()
                os.write(ready_w, b"x")
                time.sleep(30)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.read(ready_r, 1)
        try:
            owners[protect] = os.stat(f"/proc/{pid}/environ").st_uid
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(ready_r)
    assert owners == {False: user, True: 0}


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
