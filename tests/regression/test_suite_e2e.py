"""Suites end to end on an embedded farm (real controller, real agent, real child processes):
exit codes 0/1/2, JUnit validity, baselines, confirmation re-runs, history and compare."""
from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hilfarm.cli import main
from hilfarm.embedded import EmbeddedFarm
from hilfarm.controller.regression import CONFIRMATION_ROUNDS
from hilfarm.controller.suites import CONFIRMATION_PAIRS
from hilfarm.sample_models import make_onnx_mlp

pytest.importorskip("onnxruntime")

# Three repeats keep the tests quick; a suite's own default is five. The tolerances are the
# defaults (a 3 % minimum effect): with the repeat as the unit and a confirmation interleaved
# on one device, an unchanged model passes on a busy shared machine too.
SETTINGS = {"min_runs": 80, "min_seconds": 0.2, "warmup_runs": 5, "threads": 1, "repeats": 3}


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    root = tmp_path_factory.mktemp("farm")
    with EmbeddedFarm(data_dir=root / "farm") as f:
        yield f


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "fast": make_onnx_mlp(root / "fast.onnx", hidden=512, batch=16),
        "slow": make_onnx_mlp(root / "slow.onnx", hidden=1024, batch=128, layers=3),
    }


def cli(farm, *args):
    return CliRunner().invoke(main, ["--controller", farm.address, *args], catch_exceptions=False)


def write_suite(path: Path, **fields) -> Path:
    doc = {"schema": "hilfarm.suite/v1", "name": "e2e", "devices": [fields.pop("device", "local")],
           "settings": SETTINGS, **fields}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_suite_lifecycle(farm, models, tmp_path):
    profile = farm.local_profile()
    suite = write_suite(tmp_path / "suite.yaml", device=profile, baseline="main",
                        models=[{"path": str(models["fast"]), "name": "net.onnx"}],
                        constraints={"budgets": {"latency.p99": "5s", "memory.peak": "4GiB"}})
    # No baseline yet: said so, not a failure; --accept makes this run the baseline.
    junit = tmp_path / "first.xml"
    done = cli(farm, "regress", str(suite), "--accept", "--junit", str(junit), "--json")
    assert done.exit_code == 0, done.output
    run = json.loads(done.stdout)
    assert run["cases"][0]["outcome"] == "no_baseline"
    assert "no baseline 'main'" in run["cases"][0]["message"]
    assert run["accepted"] is True
    tree = ET.parse(junit).getroot()
    assert tree.tag == "testsuites" and tree.get("skipped") == "1" and tree.get("failures") == "0"

    # Same model again: compared with the accepted baseline repeat by repeat, no regression.
    done = cli(farm, "regress", str(suite), "--json", "--junit", str(tmp_path / "second.xml"))
    assert done.exit_code == 0, done.output
    case = json.loads(done.stdout)["cases"][0]
    assert case["outcome"] in ("pass", "inconclusive") and case["baseline_job_id"], case["message"]
    latency = [m for m in case["comparison"]["metrics"] if m["metric"] == "latency.median"][0]
    assert "of each repeat" in latency["statistic"] and "repeats as units" in latency["statistic"]
    assert latency["baseline_count"] + latency["candidate_count"] <= 6
    if latency.get("noise") is not None:  # the report says what noise it measured
        assert "between-repeat spread" in latency["summary"] and latency["noise_floor"] > 0
    if latency["verdict"] == "regression":  # a first attempt fooled by the machine: the re-run clears it
        assert case["confirmation"]["regression"] is False and "not confirmed" in case["message"]
    assert {v["status"] for v in case["verdicts"]} == {"pass"}
    assert ET.parse(tmp_path / "second.xml").getroot().get("failures") == "0"

    # A much slower model under the same name: a regression, confirmed by an interleaved re-run.
    # Ten repeats make rounds of ten pairs, as many as the sign test needs to confirm a change,
    # so a busy machine's unsteady pairs leave three more rounds to make them up.
    slow = write_suite(tmp_path / "slow.yaml", device=profile, baseline="main",
                       models=[{"path": str(models["slow"]), "name": "net.onnx"}],
                       settings=dict(SETTINGS, repeats=10))
    report, md, junit = tmp_path / "report.html", tmp_path / "summary.md", tmp_path / "slow.xml"
    done = cli(farm, "regress", str(slow), "--junit", str(junit), "--report", str(report), "--markdown", str(md))
    assert done.exit_code == 1, done.output
    assert "suite e2e: fail (baseline main)" in done.output
    assert re.search(r"^regression\s+[0-9a-f]{8}\s+net\.onnx", done.output, re.MULTILINE), done.output
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "1"
    failure = root.find(".//failure")
    assert failure is not None and "round(s) of interleaved pairs" in failure.get("message")
    assert failure.get("message").startswith("confirmed by")
    page = report.read_text()
    assert "<svg" in page and "Confirmation re-run" in page and "regression" in page
    assert "regression" in md.read_text()

    # History lists every run; compare shows the regression between two jobs.
    done = cli(farm, "results", "history", "net.onnx", "--device", profile, "--json")
    assert done.exit_code == 0, done.output
    points = json.loads(done.stdout)["points"]
    assert len(points) == 3 and points[-1]["outcome"] == "regression"
    noise = json.loads(cli(farm, "results", "history", "net.onnx", "--device", profile, "--metric",
                           "latency.between_repeat_spread", "--json").stdout)["points"]
    assert len(noise) == 3 and all(p["value"] >= 0 for p in noise)  # the device's noise history
    done = cli(farm, "results", "compare", points[0]["job_id"], points[-1]["job_id"])
    assert done.exit_code == 1 and "REGRESSION" in done.output
    # A model path, as the suite file has it, names the model by its file name.
    by_path = cli(farm, "results", "history", str(models["fast"].parent / "net.onnx"), "--device", profile, "--json")
    assert by_path.exit_code == 0 and json.loads(by_path.output)["points"] == points
    unknown = cli(farm, "results", "history", "nosuch.onnx", "--device", profile)
    assert unknown.exit_code == 1
    assert "no suite results for 'nosuch.onnx'" in unknown.output and "net.onnx" in unknown.output
    # Job ids in a shortened form are accepted, as everywhere.
    done = cli(farm, "results", "compare", points[0]["job_id"][:8], points[-1]["job_id"][:8], "--json")
    assert done.exit_code == 1 and json.loads(done.stdout)["candidate_job_ids"] == [points[-1]["job_id"]]


def test_broken_budget_fails_and_unknown_budget_needs_allow_unknown(farm, models, tmp_path):
    profile = farm.local_profile()
    suite = write_suite(tmp_path / "b.yaml", device=profile, name="budgets",
                        models=[{"path": str(models["fast"]), "name": "budget-net.onnx"}],
                        constraints={"budgets": {"latency.p50": "1ns"}})
    done = cli(farm, "regress", str(suite), "--json")
    assert done.exit_code == 1, done.output
    case = json.loads(done.stdout)["cases"][0]
    assert case["outcome"] == "budget_broken"
    assert case["verdicts"][0]["status"] == "fail" and case["verdicts"][0]["margin"] < 0

    # submit --constraints: a budget on a figure this agent did not measure is unknown -> exit 1
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(yaml.safe_dump({"name": "t", "budgets": {"latency.p99": "10s", "energy.per_inference": "1J"}}))
    args = ["submit", str(models["fast"]), "--device", profile, "--runs", "20", "--constraints", str(budgets),
            "--wait", "--json"]
    done = cli(farm, *args)
    job = json.loads(done.stdout)["jobs"][0]
    verdicts = {v["constraint"]: v for v in job["verdicts"]}
    assert verdicts["latency.p99"]["status"] == "pass"
    energy = verdicts["energy.per_inference"]
    if energy["status"] == "unknown":
        assert energy["measured"] is None and energy["reason"]
        assert done.exit_code == 1
        assert cli(farm, *args, "--allow-unknown").exit_code == 0
    else:  # a simulated power sensor: measured, and said to be simulated
        assert "simulated" in energy["reason"]


def test_no_device_for_the_profile_is_a_farm_error(farm, models, tmp_path):
    suite = write_suite(tmp_path / "nodev.yaml", device="no-such-device", name="nodev",
                        models=[{"path": str(models["fast"])}], placement_timeout_seconds=0.5)
    junit = tmp_path / "nodev.xml"
    done = cli(farm, "regress", str(suite), "--junit", str(junit))
    assert done.exit_code == 2, done.output
    root = ET.parse(junit).getroot()
    assert root.get("errors") == "1"
    assert "no agent took the job" in root.find(".//error").get("message")


def test_a_confirmation_of_an_artifact_against_itself_comes_out_clean(farm, models):
    """The confirmation step on its own, with real processes: a suspect whose candidate and
    baseline are the same file is re-run on the agent that measured it, one repeat per job,
    interleaved A B, B A, and the comparison of those runs finds no regression."""
    from hilfarm.client import FarmClient
    from hilfarm.controller.models import SuiteCaseRow, runtime_config
    from hilfarm.controller.models import pin_tag

    controller = farm.controller
    runner = controller.parts.suites
    profile = farm.local_profile()
    with FarmClient(farm.address) as client:
        sha = client.upload(models["fast"]).sha256
    spec = {"name": "self", "settings": dict(SETTINGS, repeats=2), "placement_timeout_seconds": 120,
            "models": [{"sha256": sha, "name": "self.onnx", "format": "onnx"}], "device_profiles": [profile]}
    # This test takes the steps the driver would take, with one forced: the first attempt is
    # declared a suspect, as if the comparison with a baseline had flagged it.
    runner.stop_driving()
    try:
        run = runner.start(spec, project="default")
        deadline = time.monotonic() + 120
        while not all(j.job_state.finished for j in controller.parts.jobs.get_jobs(run.job_ids)):
            assert time.monotonic() < deadline, "the suite's job did not finish"
            time.sleep(0.2)
        (job,) = controller.parts.jobs.get_jobs(run.job_ids)
        assert job.state == "succeeded" and job.agent_id
        claimed = runner._claim(run.id)
        assert claimed is not None
        case = SuiteCaseRow(suite_run_id=run.id, position=0, model_name=job.model_name, model_sha256=sha,
                            device_profile=profile, runtime_config=runtime_config(job), job_id=job.id,
                            baseline_job_id=job.id, message="first attempt (forced)")
        runner._submit_confirmation(claimed, spec, [case], [(case, job, job)])
        assert runner.join(240, run_ids=[run.id]), "the confirmation finished"
    finally:
        runner.start_driving()
    done, (case,) = controller.parts.regressions.get_suite_run(run.id)
    assert done.state == "finished"
    confirm = [controller.parts.jobs.get_job(j) for j in case.confirm_job_ids]
    # Rounds of CONFIRMATION_PAIRS pairs at least, although the suite measured two repeats; a
    # round more only while the pairs could not tell, making up for pairs left out as
    # unsteady (up to twice as many).
    rounds = int(case.message.split(" round(s) of interleaved pairs")[0].rsplit(" ", 1)[-1])
    assert 1 <= rounds <= CONFIRMATION_ROUNDS
    per_round = 2 * CONFIRMATION_PAIRS  # jobs
    assert len(confirm) % 2 == 0 and per_round * rounds <= len(confirm) <= per_round * (1 + 2 * (rounds - 1))
    assert [j.model_sha256 for j in confirm] == [sha] * len(confirm)
    # Pinned to the agent that found the suspect, one repeat each, run in the order submitted.
    assert [(j.required_tags, j.agent_id) for j in confirm] == [([pin_tag(job.agent_id)], job.agent_id)] * len(confirm)
    assert all(len(j.result["repeats"]) == 1 for j in confirm)
    starts = [j.started_at for j in confirm]
    assert starts == sorted(starts)
    assert case.confirmation is not None and case.confirmation["regression"] is False, case.message
    assert case.outcome in ("pass", "inconclusive") and "not confirmed" in case.message
    latency = [m for m in case.confirmation["metrics"] if m["metric"] == "latency.median"][0]
    # Pairs with an unsteady side are left out of the test.
    assert "paired Student t" in latency["statistic"] and "sign test" in latency["statistic"]
    assert 2 <= latency["baseline_count"] <= len(confirm) // 2


def test_a_confirmation_queues_its_pairs_interleaved_a_b_then_b_a(farm, models):
    """The order a confirmation's jobs are queued in (the pinned agent takes them in that
    order): baseline and candidate alternate A B, B A, ... so a device that speeds up or slows
    down over the round favours neither side. Checked on the queue, before any job runs."""
    from hilfarm.client import FarmClient
    from hilfarm.controller.models import SuiteCaseRow, runtime_config

    controller = farm.controller
    runner = controller.parts.suites
    profile = farm.local_profile()
    with FarmClient(farm.address) as client:
        base_sha = client.upload(models["fast"]).sha256
        cand_sha = client.upload(models["slow"]).sha256
    spec = {"name": "order", "settings": dict(SETTINGS, repeats=1), "placement_timeout_seconds": 120,
            "models": [{"sha256": base_sha, "name": "order.onnx", "format": "onnx"}], "device_profiles": [profile],
            "required_tags": ["no-agent-has-this-tag"]}
    runner.stop_driving()
    try:
        run = runner.start(spec, project="default")
        (base_job,) = controller.parts.jobs.get_jobs(run.job_ids)
        cand_job = base_job.model_copy(update={"id": "candidate", "model_sha256": cand_sha})
        claimed = runner._claim(run.id)
        case = SuiteCaseRow(suite_run_id=run.id, position=0, model_name=base_job.model_name, model_sha256=cand_sha,
                            device_profile=profile, runtime_config=runtime_config(base_job), job_id=base_job.id,
                            baseline_job_id=base_job.id, message="first attempt (forced)")
        runner._submit_confirmation(claimed, spec, [case], [(case, cand_job, base_job)])
        by_id = {j.id: j for j in controller.parts.jobs.get_jobs(case.confirm_job_ids)}
        queued = [by_id[j] for j in case.confirm_job_ids]
        assert [j.created_at for j in queued] == sorted(j.created_at for j in queued)
        order = ["A" if j.model_sha256 == base_sha else "B" for j in queued]
        assert order == ["A", "B", "B", "A"] * (CONFIRMATION_PAIRS // 2) + ["A", "B"] * (CONFIRMATION_PAIRS % 2)
        assert all(j.settings["repeats"] == 1 for j in queued)
    finally:
        for job_id in [*run.job_ids, *case.confirm_job_ids]:
            controller.parts.jobs.cancel_job(job_id, now=time.time())
        runner.start_driving()


def test_a_budget_met_on_a_simulated_sensor_is_never_a_real_pass(models, tmp_path):
    """On the simulated device, a power budget the model meets is judged, flagged simulated and
    counted as unknown: `submit --constraints --wait` exits 1 unless --allow-unknown."""
    budgets = tmp_path / "power.yaml"
    budgets.write_text(yaml.safe_dump({"name": "sim", "budgets": {"power.mean": "100W", "latency.p99": "10s"}}))
    with EmbeddedFarm(data_dir=tmp_path / "sim-farm", profile="simulated") as sim:
        args = ["submit", str(models["fast"]), "--device", "simulated", "--runs", "20", "--constraints",
                str(budgets), "--wait", "--json"]
        done = cli(sim, *args)
        job = json.loads(done.stdout)["jobs"][0]
        verdicts = {v["constraint"]: v for v in job["verdicts"]}
        assert verdicts["power.mean"]["status"] == "pass" and verdicts["power.mean"]["simulated"] is True
        assert verdicts["latency.p99"]["simulated"] is False
        assert done.exit_code == 1
        assert cli(sim, *args, "--allow-unknown").exit_code == 0
