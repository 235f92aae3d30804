"""A controller serving from several processes (`controller serve --processes`, PostgreSQL):
the kernel spreads connections among them, a job submitted through one is run by agents on
another, /metrics adds every process's calls up, a serving process killed with SIGKILL is
started again with no acknowledged result lost, and none outlives the main process."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from typing import Dict, List

import grpc
import pytest

from hilfarm.v1 import farm_pb2 as pb
from hilfarm.v1 import farm_pb2_grpc as pb_grpc

from ..controller.conftest import onnx_bytes
from .conftest import HILFARM, Controller, wait_for
from .test_replicas import OWN_CONNECTION, Ledger, fake_agent, retrying, stored_jobs

JOBS = 400
AGENTS = 12


def established_connections(pid: int, port: int) -> int:
    """TCP connections to ``port`` that process ``pid`` holds open (its sockets' inodes matched
    against /proc/net/tcp): which of a controller's processes took which connections."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                    count += 1
    return count


def scrape(url: str) -> Dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def _stat(pid: int) -> List[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); [] once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"  # Z: exited, not yet reaped


@pytest.mark.postgres
def test_calls_spread_over_the_processes_and_metrics_add_them_up(tmp_path, processes, postgres_url):
    controller = Controller(tmp_path, db_url=postgres_url, processes=3, metrics=True)
    processes.append(controller.start())
    pids = [controller.popen.pid] + controller.serving_pids
    assert len(pids) == 3 and all(alive(pid) for pid in pids), controller.text()
    calls = 24

    async def calls_on_their_own_connections() -> List[int]:
        channels = [grpc.aio.insecure_channel(controller.address, options=OWN_CONNECTION) for _ in range(calls)]
        try:
            for channel in channels:
                await pb_grpc.FarmServiceStub(channel).ListDevices(pb.ListDevicesRequest(), timeout=10)
            # While every connection is open: which process holds each.
            return [established_connections(pid, controller.port) for pid in pids]
        finally:
            for channel in channels:
                await channel.close()

    held = asyncio.run(calls_on_their_own_connections())
    assert sum(held) == calls, held
    # The kernel spreads connections at random: that all 24 land on one process is 3 in 3^24.
    assert sum(1 for n in held if n > 0) >= 2, held
    samples = scrape(controller.metrics_url)
    handled = 'hilfarm_grpc_server_handling_seconds_count{code="OK",method="ListDevices",service="hilfarm.v1.FarmService"}'
    assert samples[handled] == calls, {k: v for k, v in samples.items() if "ListDevices" in k}


@pytest.mark.postgres
def test_a_killed_serving_process_is_started_again_and_no_acknowledged_result_is_lost(tmp_path, processes,
                                                                                     postgres_url):
    controller = Controller(tmp_path, db_url=postgres_url, processes=3, lease_seconds=5)
    processes.append(controller.start())
    first_pids = controller.serving_pids
    models = []
    with controller.client() as client:
        for i in range(4):
            path = tmp_path / f"m{i}.onnx"
            path.write_bytes(onnx_bytes(96))
            models.append(client.upload(path).sha256)
    ledger = Ledger()

    async def scenario() -> List[str]:
        stop = asyncio.Event()
        agents = [asyncio.ensure_future(fake_agent(f"agent-{i:02d}", controller.address, ledger, stop,
                                                     own_connection=True))
                  for i in range(AGENTS)]
        ids: List[str] = []
        channels = [grpc.aio.insecure_channel(controller.address, options=OWN_CONNECTION) for _ in range(4)]
        killed: List[int] = []
        deadline = time.monotonic() + 240

        def kill_the_busiest_serving_process() -> None:
            # The one holding the most connections, so that calls are cut off mid-way.
            busiest = max(first_pids, key=lambda pid: established_connections(pid, controller.port))
            os.kill(busiest, signal.SIGKILL)
            killed.append(busiest)

        try:
            for i in range(JOBS // len(models)):
                stub = pb_grpc.FarmServiceStub(channels[i % len(channels)])
                request = pb.SubmitRequest(models=[pb.ModelRef(sha256=m) for m in models], device_profiles=["bench"],
                                           settings=pb.JobSettings(runtime="null", min_runs=1), max_attempts=5)
                ids += [j.id for j in (await retrying(lambda: stub.Submit(request, timeout=30), stop)).jobs]
                if not killed and sum(1 for reports in ledger.accepted.values() if reports) >= 40:
                    kill_the_busiest_serving_process()
                await asyncio.sleep(0.02)
            if not killed:  # the agents were slower than the submissions: kill it now
                kill_the_busiest_serving_process()
            # A Submit whose answer the kill cut off may have been stored and sent again: those
            # jobs are done too, but it is the submitted ones that are waited for.
            while not all(ledger.accepted.get(job_id) for job_id in ids):
                for agent in agents:
                    if agent.done() and agent.exception() is not None:
                        raise agent.exception()
                assert time.monotonic() < deadline, f"{len(ledger.accepted)} of {len(ids)} jobs done after 240 s"
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await asyncio.gather(*agents, return_exceptions=True)
            for channel in channels:
                await channel.close()
        return ids

    job_ids = asyncio.run(scenario())
    restarted = wait_for(lambda: re.search(r"serving process \d \(pid (\d+)\) exited with code -9 .*starting another",
                                           controller.text()), 10, "the main process to start another")
    assert int(restarted.group(1)) in first_pids
    stored = stored_jobs(postgres_url)
    assert set(job_ids) <= set(stored)
    for job_id in job_ids:
        attempt, lease_id, result = stored[job_id]
        reports = ledger.accepted[job_id]
        # Done exactly once, and the job holds the result its agent was told was stored.
        assert len({lease for _, lease, _ in reports}) == 1, (job_id, reports)
        assert (attempt, lease_id, result["warnings"]) == (reports[0][0], reports[0][1], [reports[0][2]]), job_id
    # Three processes serve again: the main one and two serving ones, one of them new.
    now = _children(controller.popen.pid)
    assert len(now) == 2 and len(set(now) - set(first_pids)) == 1, (first_pids, now)


def _children(pid: int) -> List[int]:
    """The live child processes of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else []
        if fields and fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry))
    return found


@pytest.mark.postgres
def test_no_serving_process_outlives_the_main_one(tmp_path, processes, postgres_url):
    stopped = Controller(tmp_path, db_url=postgres_url, processes=2, name="stopped")
    processes.append(stopped.start())
    serving = stopped.serving_pids
    assert len(serving) == 1 and alive(serving[0])
    stopped.popen.send_signal(signal.SIGTERM)
    assert stopped.popen.wait(30) == 0, stopped.text()
    assert not alive(serving[0]), "a serving process outlived the main one's SIGTERM"

    killed = Controller(tmp_path, db_url=postgres_url, processes=2, name="killed")
    processes.append(killed.start())
    serving = killed.serving_pids
    killed.kill()  # SIGKILL: the main process cannot stop them itself
    wait_for(lambda: not alive(serving[0]), 15, "the serving process to stop once the main one is gone")


def test_serving_from_several_processes_needs_postgresql(tmp_path):
    done = subprocess.run(HILFARM + ["controller", "serve", "--processes", "2", "--bind", "127.0.0.1:0",
                                     "--data-dir", str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "serving from 2 processes needs PostgreSQL" in done.stderr, done.stderr
    assert not (tmp_path / "c" / "controller.db").exists()


def test_a_serving_process_gets_every_setting_of_the_main_one_but_those_of_its_background_work(tmp_path):
    """A setting added to ControllerConfig and forgotten here would silently differ between the
    processes of one controller."""
    import dataclasses

    from hilfarm.controller.app import ControllerConfig
    from hilfarm.controller.processes import ServingSettings, settings_for_serving
    from hilfarm.transport import ServerTls

    config = ControllerConfig(db_url="postgresql+psycopg://u@db/farm", data_dir=tmp_path / "d",
                              artifacts_dir=tmp_path / "a", token="operator", lease_seconds=7.0,
                              tls=ServerTls("c.pem", "k.pem", "ca.pem"), metrics_dir=tmp_path / "m",
                              metrics_bind="0.0.0.0:9464", metrics_token="scrape", nightly=(tmp_path / "s.yaml",))
    read = ServingSettings.read(json.dumps(settings_for_serving(config, event_loop="uvloop", address="127.0.0.1:5")))
    assert (read.bind, read.main_pid) == ("127.0.0.1:5", os.getpid())
    kwargs = read.controller
    main_only = {"metrics_bind", "metrics_token", "nightly", "nightly_clock"}
    for field in dataclasses.fields(ControllerConfig):
        if field.name in main_only:
            assert field.name not in kwargs, field.name
        elif field.name == "serving_only":
            assert kwargs["serving_only"] is True
        else:
            assert kwargs[field.name] == getattr(config, field.name), field.name
    assert kwargs["event_loop"] == "uvloop"


def test_which_databases_a_controller_may_serve_from_several_processes():
    from hilfarm.controller.processes import processes_problem

    assert processes_problem(1, None) is None
    assert processes_problem(2, "postgresql+psycopg://u@db/farm") is None
    assert "needs PostgreSQL" in processes_problem(2, None)
    assert "needs PostgreSQL" in processes_problem(2, "sqlite:////var/lib/hilfarm/hilfarm.db")
    assert "1 to 64" in processes_problem(0, "postgresql+psycopg://u@db/farm")
