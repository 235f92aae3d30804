"""Nightly suites on the embedded farm (`hilfarm up --nightly`): the controllable clock of the
nightly runner in process, a real `hilfarm up` process whose suite fires within seconds, and a
wrong suite file refused before the farm starts."""
from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
import yaml
from click.testing import CliRunner

from hilfarm.cli import main
from hilfarm.client import FarmClient
from hilfarm.embedded import EmbeddedFarm
from hilfarm.sample_models import make_onnx_mlp
from hilfarm.v1 import farm_pb2

pytest.importorskip("onnxruntime")
pytest.importorskip("croniter")

SETTINGS = {"min_runs": 5, "min_seconds": 0.05, "warmup_runs": 1, "threads": 1}


def write_suite(path: Path, model: Path, schedule: str, name: str) -> Path:
    doc = {"schema": "hilfarm.suite/v1", "name": name, "devices": ["local"], "settings": SETTINGS,
           "schedule": schedule, "models": [{"path": str(model), "name": "nightly-net.onnx"}],
           "constraints": {"budgets": {"latency.p99": "10s"}}}
    path.write_text(yaml.safe_dump(doc))
    return path


def finished_runs(client: FarmClient, suite: str) -> List[farm_pb2.SuiteRun]:
    return [r for r in client.list_suite_runs(suite=suite) if r.state == "finished"]


def wait_for_runs(client: FarmClient, suite: str, n: int, timeout: float, what: str = "") -> List[farm_pb2.SuiteRun]:
    deadline = time.monotonic() + timeout
    while True:
        runs = finished_runs(client, suite)
        if len(runs) >= n:
            return runs
        assert time.monotonic() < deadline, f"{n} finished nightly run(s) of {suite} expected, got {len(runs)}\n{what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_onnx_mlp(tmp_path_factory.mktemp("nightly-model") / "net.onnx", hidden=32)


def test_embedded_farm_runs_its_suites_when_the_clock_reaches_the_schedule(tmp_path, model):
    now = [dt.datetime(2026, 11, 3, 1, 59, 58).timestamp()]
    suite = write_suite(tmp_path / "vision.yaml", model, "0 2 * * *", "vision-nightly")
    with EmbeddedFarm(data_dir=tmp_path / "farm", nightly=[suite], nightly_clock=lambda: now[0]) as farm:
        (entry,) = farm.nightly_runner.entries
        assert entry.next_at == dt.datetime(2026, 11, 3, 2, 0).timestamp()
        with FarmClient(farm.address) as client:
            time.sleep(1.5)  # the runner polls every second: nothing is due before 02:00
            assert client.list_suite_runs(suite="vision-nightly") == []
            now[0] += 2  # 02:00:00
            (run,) = wait_for_runs(client, "vision-nightly", 1, timeout=60)
            assert (run.trigger, run.outcome) == ("nightly", "pass")
            (case,) = client.get_suite_run(run.id).cases
            assert case.model_name == "nightly-net.onnx" and case.outcome == "no_baseline"
            assert [v.status for v in case.verdicts] == [farm_pb2.VERDICT_STATUS_PASS]
            time.sleep(1.5)
            assert len(client.list_suite_runs(suite="vision-nightly")) == 1, "one run per night"
            now[0] += 86400  # the next night
            runs = wait_for_runs(client, "vision-nightly", 2, timeout=60)
            assert [r.trigger for r in runs] == ["nightly", "nightly"]
            history = client.history("nightly-net.onnx", farm.local_profile())
            assert len(history.points) == 2 and all(p.value > 0 for p in history.points)


def test_hilfarm_up_nightly_runs_the_suite_on_its_schedule(tmp_path, model):
    # croniter's sixth field is seconds: a schedule that comes due within two seconds.
    suite = write_suite(tmp_path / "smoke.yaml", model, "* * * * * */2", "smoke-nightly")
    env = {k: v for k, v in os.environ.items() if k not in ("HILFARM_TOKEN", "HILFARM_DB", "HILFARM_CONTROLLER")}
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hilfarm.cli", "up", "--bind", "127.0.0.1:0",
                                 "--data-dir", str(tmp_path / "farm"), "--nightly", str(suite)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"controller (127\.0\.0\.1:\d+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert re.search(r"nightly suite smoke-nightly \(\* \* \* \* \* \*/2\): next run at \d{4}-", log.read_text())
        with FarmClient(found.group(1)) as client:
            runs = wait_for_runs(client, "smoke-nightly", 1, timeout=90, what=log.read_text())
            assert runs[-1].trigger == "nightly" and runs[-1].outcome == "pass"
            (case,) = client.get_suite_run(runs[-1].id).cases
            assert case.job_id and client.get_job(case.job_id).state == farm_pb2.JOB_STATE_SUCCEEDED
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()


def test_up_refuses_a_nightly_suite_without_a_schedule(tmp_path, model):
    suite = tmp_path / "adhoc.yaml"
    suite.write_text(yaml.safe_dump({"schema": "hilfarm.suite/v1", "name": "adhoc", "devices": ["local"],
                                     "models": [{"path": str(model)}]}))
    done = CliRunner().invoke(main, ["up", "--bind", "127.0.0.1:0", "--data-dir", str(tmp_path / "farm"),
                                     "--nightly", str(suite)])
    assert done.exit_code == 2, done.output
    assert "--nightly" in done.output and "needs a schedule" in done.output and "adhoc.yaml" in done.output
