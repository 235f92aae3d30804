"""Owners: a token belongs to a project with a role. Another project's runs, jobs, artifacts,
baselines and suites do not exist for it; a viewer cannot change anything; only an admin manages
tokens, and only of its own project (the operator token of all). Through the stubs and the CLI."""

from __future__ import annotations

import json

import grpc
import pytest

from hilfarm.v1 import farm_pb2 as pb

from .conftest import refusal


@pytest.fixture
def farm(make_farm):
    return make_farm()


def test_another_projects_work_does_not_exist_for_a_token(farm, models):
    alice = farm.caller(farm.user_token("submitter", "vision", name="alice"))
    bob = farm.caller(farm.user_token("admin", "audio", name="bob"))
    data = models["onnx"].read_bytes()
    sha = alice.upload(data, filename="secret-model.onnx")
    run = alice.farm.Submit(pb.SubmitRequest(models=[pb.ModelRef(sha256=sha)], device_profiles=["rpi5"]))
    job_id = run.jobs[0].id
    assert run.project == "vision" and run.jobs[0].project == "vision"

    for call in (lambda: bob.farm.GetJob(pb.GetJobRequest(job_id=job_id)),
                 lambda: bob.farm.GetRun(pb.GetRunRequest(run_id=run.id)),
                 lambda: bob.farm.CancelJob(pb.CancelJobRequest(job_id=job_id)),
                 lambda: list(bob.farm.WatchJob(pb.WatchJobRequest(job_id=job_id))),
                 lambda: bob.farm.CompareJobs(pb.CompareJobsRequest(baseline_job_id=job_id, candidate_job_id=job_id)),
                 lambda: bob.farm.AcceptBaseline(pb.AcceptBaselineRequest(name="main", job_ids=[job_id]))):
        err = refusal(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND and "does not exist" in err.details()
    assert bob.farm.ListJobs(pb.ListJobsRequest()).jobs == []
    # The artifact: knowing its digest is not having it. Bob must send the bytes himself.
    assert not bob.farm.StatArtifact(pb.StatArtifactRequest(sha256=sha)).present
    err = refusal(lambda: bob.farm.Submit(pb.SubmitRequest(models=[pb.ModelRef(sha256=sha)], device_profiles=["x"])))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert bob.upload(data) == sha
    assert bob.farm.StatArtifact(pb.StatArtifactRequest(sha256=sha)).present
    # Alice still sees her own, and it is unchanged.
    assert [j.id for j in alice.farm.ListJobs(pb.ListJobsRequest()).jobs] == [job_id]
    assert alice.farm.GetRun(pb.GetRunRequest(run_id=run.id)).project == "vision"
    assert alice.farm.GetJob(pb.GetJobRequest(job_id=job_id)).state == pb.JOB_STATE_QUEUED


def test_a_viewer_reads_but_cannot_cancel_submit_or_upload(farm, models):
    submitter = farm.caller(farm.user_token("submitter", "vision"))
    viewer = farm.caller(farm.user_token("viewer", "vision"))
    sha = submitter.upload(models["onnx"].read_bytes())
    job_id = submitter.farm.Submit(pb.SubmitRequest(models=[pb.ModelRef(sha256=sha)],
                                                    device_profiles=["rpi5"])).jobs[0].id
    assert viewer.farm.GetJob(pb.GetJobRequest(job_id=job_id)).id == job_id
    for call, needs in ((lambda: viewer.farm.CancelJob(pb.CancelJobRequest(job_id=job_id)), "submitter"),
                        (lambda: viewer.farm.Submit(pb.SubmitRequest(models=[pb.ModelRef(sha256=sha)],
                                                                     device_profiles=["rpi5"])), "submitter"),
                        (lambda: viewer.upload(models["tflite"].read_bytes(), "tflite"), "submitter"),
                        (lambda: viewer.farm.AcceptBaseline(pb.AcceptBaselineRequest(job_ids=[job_id])), "submitter"),
                        (lambda: viewer.admin.ListTokens(pb.ListTokensRequest()), "admin")):
        err = refusal(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"needs the {needs} role" in err.details() and "viewer of project vision" in err.details()
    assert submitter.farm.GetJob(pb.GetJobRequest(job_id=job_id)).state == pb.JOB_STATE_QUEUED
    # Through the CLI the same refusal reads as one line, exit code 2.
    done = farm.cli("jobs", "cancel", job_id, token=viewer.credential)
    assert done.returncode == 2 and "PERMISSION_DENIED" in done.stderr and "needs the submitter role" in done.stderr


def test_admins_manage_their_projects_tokens_and_the_operator_every_projects(farm):
    admin_a = farm.caller(farm.user_token("admin", "vision"))
    made = admin_a.admin.CreateToken(pb.CreateTokenRequest(role=pb.ROLE_VIEWER, name="dashboard"))
    assert made.token.project == "vision" and made.secret.startswith("hfu_")
    err = refusal(lambda: admin_a.admin.CreateToken(pb.CreateTokenRequest(project="audio", role=pb.ROLE_ADMIN)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "not of audio" in err.details()
    err = refusal(lambda: admin_a.admin.ListTokens(pb.ListTokensRequest(project="audio")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    audio = farm.user_token("admin", "audio")
    audio_id = audio.split("_")[1]
    err = refusal(lambda: admin_a.admin.RevokeToken(pb.RevokeTokenRequest(id=audio_id)))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert farm.caller(audio).admin.WhoAmI(pb.WhoAmIRequest()).project == "audio"  # still works
    # Stored hashed: the database never holds a secret.
    import sqlite3

    db = sqlite3.connect(farm.root / "controller" / "hilfarm.db")
    stored = " ".join(str(v) for row in db.execute("SELECT * FROM user_tokens") for v in row)
    db.close()
    # The secret part may hold "_" itself (URL-safe base64): split at the first two only, or a
    # fragment as short as "N" would be looked for (and found in "None").
    secret_part = made.secret.split("_", 2)[2]
    assert made.secret not in stored and secret_part not in stored and made.token.id in stored


def test_tokens_from_the_cli_are_shown_once_listed_and_revoked_at_once(farm):
    created = farm.cli("admin", "tokens", "create", "--project", "vision", "--role", "submitter", "--name", "ci",
                       token=farm.token)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("hfu_") and "shown only this once" in created.stderr
    whoami = farm.cli("admin", "whoami", token=secret)
    assert whoami.stdout.strip().startswith("submitter of project vision")
    listed = json.loads(farm.cli("admin", "tokens", "list", "--project", "vision", "--json", token=farm.token).stdout)
    (entry,) = listed["tokens"]
    assert entry["name"] == "ci" and secret not in json.dumps(listed)
    revoked = farm.cli("admin", "tokens", "revoke", entry["id"], token=farm.token)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    refused = farm.cli("jobs", "list", token=secret)
    assert refused.returncode == 2 and "refused the credentials" in refused.stderr and "was revoked" in refused.stderr
    expiring = farm.cli("admin", "tokens", "create", "--role", "viewer", "--expires", "1", token=farm.token)
    import time

    time.sleep(1.5)
    gone = farm.cli("jobs", "list", token=expiring.stdout.strip())
    assert gone.returncode == 2 and "expired" in gone.stderr


def test_a_single_token_lab_needs_nothing_else(farm, models):
    """The operator token submits, watches and administers, and enrolls an agent directly."""
    farm.start_agent("bench-1", env={"HILFARM_TOKEN": farm.token})
    farm.wait_for_device("bench-1")
    done = farm.cli("submit", str(models["onnx"]), "--device", "local", "--runs", "5", "--min-seconds", "0",
                    "--wait", "--json", token=farm.token)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)["jobs"][0]
    assert job["state"] == "succeeded" and job["agent_id"] == "bench-1"
    identities = json.loads(farm.cli("admin", "agents", "list", "--json", token=farm.token).stdout)["agents"]
    assert [(a["agent_id"], a["enrolled_by"]) for a in identities] == [("bench-1", "operator token")]
