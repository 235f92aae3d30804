"""The farm end to end: a controller process, agent processes, and the CLI as a user runs it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema

import hilfarm
from hilfarm.v1 import farm_pb2

SCHEMA = json.loads((Path(hilfarm.__file__).parent / "run.schema.json").read_text())
QUICK = ["--runs", "20", "--min-seconds", "0.2", "--warmup-seconds", "0.05"]


def test_submit_wait_json_gives_measured_latency_and_memory(farm, models):
    code, run = farm.submit_json(str(models["mlp"]), "--device", "local", *QUICK)
    assert code == 0, run
    jsonschema.validate(run, SCHEMA)
    (job,) = run["jobs"]
    assert job["state"] == "succeeded" and job["agent_id"] == "agent-1"
    latency, memory, env = job["result"]["latency"], job["result"]["memory"], job["result"]["environment"]
    assert latency["count"] >= 20 and len(latency["samples_ns"]) == latency["count"]
    assert sum(latency["samples_ns"]) / 1e9 >= 0.2 * 0.99
    assert 0 < latency["min_seconds"] <= latency["p50_seconds"] <= latency["p99_seconds"] <= latency["max_seconds"]
    assert latency["load_seconds"] > 0 and latency["first_inference_seconds"] > 0
    assert memory["peak_bytes"] >= memory["baseline_peak_bytes"] > 0
    assert memory["model_file_bytes"] == models["mlp"].stat().st_size
    assert env["runtime"] == "onnxruntime" and env["runtime_version"]
    assert env["simulated"] is False
    assert env["input_shapes"] == {"x": [1, 64]} or list(env["input_shapes"].values()) == [[1, 64]]


def test_resubmitting_a_known_model_sends_nothing(farm, models):
    first = farm.cli("submit", str(models["mlp"]), "--device", "local", *QUICK)
    assert first.returncode == 0, first.stderr
    second = farm.cli("submit", str(models["mlp"]), "--device", "local", *QUICK)
    assert second.returncode == 0, second.stderr
    assert "already stored, sent nothing" in second.stderr
    assert "already stored" not in first.stderr


def test_several_models_and_devices_fan_out_into_jobs(farm, models):
    farm.start_agent("agent-2", profile="local", tags=("lab",))
    # The shape is for one model: the other (input x of 64 features, fixed) is not touched.
    code, run = farm.submit_json(str(models["mlp"]), str(models["dynamic"]), "--device", "local",
                                 "--input-shape", "dynamic.onnx:x=4,32", *QUICK)
    assert code == 0, run
    assert len(run["jobs"]) == 2
    by_model = {j["model"]["name"]: j for j in run["jobs"]}
    dynamic, static = by_model["dynamic.onnx"], by_model["mlp.onnx"]
    assert dynamic["state"] == "succeeded" and static["state"] == "succeeded", (dynamic["failure"], static["failure"])
    assert dynamic["settings"]["input_shapes"] == {"x": [4, 32]} and static["settings"]["input_shapes"] == {}
    assert list(dynamic["result"]["environment"]["input_shapes"].values()) == [[4, 32]]
    # Without the model named, a shape for one of several models is refused before anything runs.
    refused = farm.cli("submit", str(models["mlp"]), str(models["dynamic"]), "--device", "local",
                       "--input-shape", "x=4,32", *QUICK)
    assert refused.returncode == 2 and "does not say which model" in refused.stderr


def test_an_unsized_dynamic_dimension_fails_the_job_naming_it(farm, models):
    code, run = farm.submit_json(str(models["dynamic"]), "--device", "local", *QUICK)
    assert code == 1
    failure = run["jobs"][0]["failure"]
    assert failure["category"] == "input_mismatch" and "dim 0 ('batch') is dynamic" in failure["message"]
    code, run = farm.submit_json(str(models["dynamic"]), "--device", "local", "--dynamic-default", "2", *QUICK)
    assert code == 0
    job = run["jobs"][0]
    assert job["settings"]["dynamic_dimension_default"] == 2
    assert list(job["result"]["environment"]["input_shapes"].values()) == [[2, 32]]


def test_bad_models_fail_with_a_category_and_the_farm_keeps_serving(farm, models):
    # A file that is not what it says never reaches a device: the controller refuses to store it.
    for name in ("not_a_model", "truncated"):
        refused = farm.cli("submit", str(models[name]), "--device", "local", *QUICK)
        assert refused.returncode == 2, refused.stderr
        assert f"{models[name].name} is not a valid onnx file" in refused.stderr and "Traceback" not in refused.stderr
    expected = {"corrupt": "artifact_invalid", "unsupported": "unsupported_op"}
    for name, category in expected.items():
        code, run = farm.submit_json(str(models[name]), "--device", "local", *QUICK)
        (job,) = run["jobs"]
        assert job["state"] == "failed", job
        assert job["failure"]["category"] == category, job["failure"]
        assert job["failure"]["message"]
        assert code == 1
    code, run = farm.submit_json(str(models["unsupported"]), "--device", "local", *QUICK)
    assert "FancyOp" in run["jobs"][0]["failure"]["message"]
    # Still serving: a good model right after the bad ones succeeds on the same agent.
    code, run = farm.submit_json(str(models["mlp"]), "--device", "local", *QUICK)
    assert code == 0 and run["jobs"][0]["state"] == "succeeded"


def test_input_spec_that_does_not_fit_the_model_is_an_input_mismatch(farm, models):
    code, run = farm.submit_json(str(models["mlp"]), "--device", "local", "--input-shape",
                                 "nosuchinput=1,64", *QUICK)
    assert code == 1
    assert run["jobs"][0]["failure"]["category"] == "input_mismatch"
    assert "nosuchinput" in run["jobs"][0]["failure"]["message"]


def test_job_for_an_absent_device_waits_and_says_why(farm, models):
    # Without --queue the CLI refuses at once: no agent has this profile.
    refused = farm.cli("submit", str(models["mlp"]), "--device", "jetson-orin-nano", "--json")
    assert refused.returncode == 2 and "no agent has registered with device profile 'jetson-orin-nano'" in refused.stderr
    done = farm.cli("submit", str(models["mlp"]), "--device", "jetson-orin-nano", "--queue", "--json")
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["jobs"][0]["id"]
    time.sleep(0.5)
    shown = json.loads(farm.cli("jobs", "show", job_id, "--json").stdout)
    assert shown["state"] == "queued"
    notes = " ".join(shown["placement_notes"])
    assert "jetson-orin-nano" in notes and notes
    cancelled = farm.cli("jobs", "cancel", job_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout


def test_cancelling_a_running_job_stops_it_and_the_agent_goes_on(farm, models):
    done = farm.cli("submit", str(models["mlp"]), "--device", "local", "--runs", "1000000",
                    "--min-seconds", "120", "--max-seconds", "120", "--json")
    job_id = json.loads(done.stdout)["jobs"][0]["id"]
    with farm.client() as client:
        deadline = time.monotonic() + 30
        while client.get_job(job_id).state != farm_pb2.JOB_STATE_RUNNING:
            assert time.monotonic() < deadline, "job never started"
            time.sleep(0.1)
        client.cancel_job(job_id)
        deadline = time.monotonic() + 30
        while any(d.state == "busy" for d in client.list_devices()):
            assert time.monotonic() < deadline, "agent still busy after cancel"
            time.sleep(0.1)
        assert client.get_job(job_id).state == farm_pb2.JOB_STATE_CANCELLED
    code, run = farm.submit_json(str(models["mlp"]), "--device", "local", *QUICK)
    assert code == 0


def test_devices_list_shows_probed_capabilities(farm):
    listed = json.loads(farm.cli("devices", "list", "--json").stdout)
    (device,) = listed["devices"]
    assert device["agent_id"] == "agent-1" and device["device_profile"] == "local"
    runtimes = {r["name"]: r for r in device["capabilities"]["runtimes"]}
    assert "onnxruntime" in runtimes and runtimes["onnxruntime"]["version"]
    assert device["capabilities"]["cpu_cores"] >= 1 and device["capabilities"]["memory_bytes"] > 0


def test_unreachable_controller_is_a_clear_error(make_farm):
    farm = make_farm()
    farm.address = "127.0.0.1:9"  # discard port: nothing listens
    done = farm.cli("devices", "list", timeout=60)
    assert done.returncode == 2
    assert "cannot reach the controller at 127.0.0.1:9" in done.stderr


def test_a_drained_device_takes_no_new_jobs_until_put_back(farm, models):
    drained = farm.cli("devices", "drain", "agent-1")
    assert drained.returncode == 0 and "agent-1: draining" in drained.stdout
    done = farm.cli("submit", str(models["mlp"]), "--device", "local", *QUICK, "--json")
    job_id = json.loads(done.stdout)["jobs"][0]["id"]
    time.sleep(1.0)
    shown = json.loads(farm.cli("jobs", "show", job_id, "--json").stdout)
    assert shown["state"] == "queued"
    assert any("agent-1" in note and "draining" in note for note in shown["placement_notes"])
    back = farm.cli("devices", "drain", "--undo", "agent-1")
    # Back in service: idle, or already busy with the job that was waiting for it.
    assert back.returncode == 0 and back.stdout.strip() in ("agent-1: idle", "agent-1: busy")
    watched = farm.cli("jobs", "watch", job_id, "--json")
    assert watched.returncode == 0, watched.stderr
    assert json.loads(watched.stdout)["jobs"][0]["state"] == "succeeded"
    shown = json.loads(farm.cli("devices", "show", "agent-1", "--json").stdout)
    assert shown["agent_id"] == "agent-1" and shown["state"] in ("idle", "busy")
    missing = farm.cli("devices", "show", "nobody")
    assert missing.returncode != 0 and "no agent 'nobody'" in missing.stderr
