"""The controller killed with SIGKILL while a job runs, then started again on the same port and
database: the agent's finished work is stored, the job succeeds at its first attempt, and a
`submit --wait` that was waiting all along reconnects and prints the result."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from hilfarm.v1 import farm_pb2

from .conftest import HILFARM, Controller, start_agent, wait_for

pytest.importorskip("onnxruntime")

LEASE_SECONDS = 3.0
# The job measures for this long, so the controller dies while it runs.
JOB_SECONDS = 5


def running_job(controller: Controller):
    with controller.client() as client:
        jobs = client.list_jobs(states=[farm_pb2.JOB_STATE_RUNNING])
        return jobs[0] if jobs else None


@pytest.mark.parametrize("outage", [1.0, 8.0], ids=["outage-shorter-than-the-lease", "outage-longer-than-the-lease"])
def test_a_killed_controller_loses_no_finished_result(tmp_path, processes, slow_model, db_url, outage):
    controller = Controller(tmp_path, db_url=db_url, lease_seconds=LEASE_SECONDS)
    processes.append(controller.start())
    agent = start_agent(tmp_path, controller, "agent-1")
    processes.append(agent)
    env = dict(os.environ, HILFARM_CONTROLLER=controller.address)
    env.pop("HILFARM_TOKEN", None)
    waiting = subprocess.Popen(
        HILFARM + ["submit", str(slow_model), "--device", "local", "--runs", "20", "--min-seconds", str(JOB_SECONDS),
                   "--warmup", "1", "--warmup-seconds", "0", "--attempts", "1", "--wait", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        job = wait_for(lambda: running_job(controller), 60, "the job to run")
        controller.kill()
        time.sleep(outage)
        controller.start()
        out, err = waiting.communicate(timeout=180)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, (f"submit --wait exited {waiting.returncode}:\n{out[-2000:]}\n{err}\n"
                                     f"controller:\n{controller.text()[-3000:]}\nagent:\n{agent.text()[-3000:]}")
    (done,) = json.loads(out)["jobs"]
    assert (done["id"], done["state"], done["attempt"]) == (job.id, "succeeded", 1)
    assert done["result"]["latency"]["count"] >= 20
    assert "lost the controller" in err and "reconnecting" in err, "the CLI said that it reconnected"


def test_a_result_reported_after_its_lease_expired_is_stored_when_no_one_else_started_the_job(
        tmp_path, processes, slow_model, db_url):
    """No restart grace: the restarted controller takes the lease back at once and, on the job's
    last attempt, fails it. The agent's late result is still stored, and the job succeeds."""
    controller = Controller(tmp_path, db_url=db_url, lease_seconds=LEASE_SECONDS, restart_grace=0)
    processes.append(controller.start())
    agent = start_agent(tmp_path, controller, "agent-1")
    processes.append(agent)
    with controller.client() as client:
        upload = client.upload(slow_model)
        settings = farm_pb2.JobSettings(min_runs=20, min_seconds=JOB_SECONDS, warmup_runs=1)
        (job,) = client.submit([upload], ["local"], settings, max_attempts=1).jobs
    wait_for(lambda: running_job(controller), 60, "the job to run")
    controller.kill()
    time.sleep(LEASE_SECONDS + 2)
    controller.start()
    with controller.client() as client:
        final = wait_for(lambda: (j := client.get_job(job.id)).state == farm_pb2.JOB_STATE_SUCCEEDED and j, 120,
                         f"the late result to be stored\n{agent.text()[-3000:]}")
    assert final.attempt == 1 and final.agent_id == "agent-1" and not final.HasField("failure")
    assert len(final.result.latency.samples_ns) >= 20
    log = controller.text()
    # The restarted controller takes the lease back before it answers a call, so the order is fixed.
    lost = log.find(f"during the last attempt (1) of job {job.id}; job failed")
    came_back = log.find("which it had lost")
    stored = log.find(f"job {job.id} succeeded on agent agent-1")
    assert 0 <= lost < came_back < stored, "the lease was taken back, then the late result was stored"


def test_a_suite_run_survives_a_killed_controller(tmp_path, processes, slow_model, db_url):
    """The suite is state in the database: the restarted controller picks it up where it was."""
    controller = Controller(tmp_path, db_url=db_url, lease_seconds=LEASE_SECONDS)
    processes.append(controller.start())
    processes.append(start_agent(tmp_path, controller, "agent-1"))
    with controller.client() as client:
        upload = client.upload(slow_model)
        spec = farm_pb2.SuiteSpec(
            name="survivor", models=[farm_pb2.ModelRef(sha256=upload.sha256, name="mlp.onnx")],
            device_profiles=["local"],
            settings=farm_pb2.JobSettings(min_runs=20, min_seconds=3, warmup_runs=1),
            constraints=[farm_pb2.Budget(name="latency.p99", max=5.0, unit="s")])
        run = client.start_suite_run(spec)
    wait_for(lambda: running_job(controller), 60, "the suite's job to run")
    controller.kill()
    time.sleep(2)
    controller.start()
    with controller.client() as client:
        done = wait_for(lambda: (r := client.get_suite_run(run.id)).state == "finished" and r, 120,
                        f"the suite run to finish\n{controller.text()[-3000:]}")
    assert done.outcome == "pass", done.message
    (case,) = done.cases
    assert case.outcome == "no_baseline" and [v.status for v in case.verdicts] == [farm_pb2.VERDICT_STATUS_PASS]
