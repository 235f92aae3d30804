"""A lost agent's job moves to another agent; a controller with a token refuses strangers."""

from __future__ import annotations

import json
import signal
import time

from hilfarm.v1 import farm_pb2


def test_job_of_a_killed_agent_is_requeued_and_finished_by_another(make_farm, models):
    farm = make_farm(lease_seconds=2.0)
    farm.start_controller()
    try:
        doomed = farm.start_agent("doomed")
        done = farm.cli("submit", str(models["mlp"]), "--device", "local", "--runs", "20",
                        "--min-seconds", "4", "--json")
        job_id = json.loads(done.stdout)["jobs"][0]["id"]
        with farm.client() as client:
            deadline = time.monotonic() + 30
            while client.get_job(job_id).state != farm_pb2.JOB_STATE_RUNNING:
                assert time.monotonic() < deadline, "job never started"
                time.sleep(0.05)
            doomed.stop(signal.SIGKILL)
            farm.start_agent("survivor")
            deadline = time.monotonic() + 60
            while (job := client.get_job(job_id)).state not in (
                farm_pb2.JOB_STATE_SUCCEEDED, farm_pb2.JOB_STATE_FAILED
            ):
                assert time.monotonic() < deadline, f"job stuck in {job.state}"
                time.sleep(0.2)
        assert job.state == farm_pb2.JOB_STATE_SUCCEEDED, job.failure
        assert job.attempt == 2 and job.agent_id == "survivor"
    finally:
        farm.stop()


def test_token_is_required_when_the_controller_has_one(make_farm):
    farm = make_farm(token="s3cret")
    farm.start_controller()
    try:
        farm.start_agent("agent-1")  # the agent gets the token from HILFARM_TOKEN
        refused = farm.cli("devices", "list", token=None)
        assert refused.returncode == 2
        assert "HILFARM_TOKEN" in refused.stderr
        wrong = farm.cli("devices", "list", token="guess")
        assert wrong.returncode == 2
        allowed = farm.cli("devices", "list", "--json")
        assert allowed.returncode == 0
        assert json.loads(allowed.stdout)["devices"][0]["agent_id"] == "agent-1"
    finally:
        farm.stop()
