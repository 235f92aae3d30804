"""Agents act only as themselves, on their own leases: the attack of the issue (LeaseJob as a
victim, a forged result stored as the victim's, its real run lost) against real agent processes,
enrollment tokens bound to a profile, tags, uses and a lifetime, and revocation that takes effect
at once."""

from __future__ import annotations

import json
import stat
import time

import grpc
import pytest

from hilfarm.v1 import farm_pb2 as pb

from .conftest import refusal

LONG = ["--runs", "1000000", "--min-seconds", "5", "--max-seconds", "5", "--warmup-seconds", "0.01"]
FORGED = pb.BenchmarkResult(latency=pb.LatencyResult(p50_seconds=1e-6, samples_ns=[1000], count=1))


def submit(farm, caller, model, *args):  # type: ignore[no-untyped-def]
    done = farm.cli("submit", str(model), "--device", "local", "--json", *args, token=caller.credential)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["jobs"][0]["id"]


def test_an_agent_cannot_lease_report_or_download_as_another(make_farm, models):
    farm = make_farm()
    farm.start_agent("victim", enroll_token=farm.enrollment_token("local", agent_id="victim"))
    farm.wait_for_device("victim")
    user = farm.caller(farm.user_token("submitter"))
    job_id = submit(farm, user, models["onnx"], *LONG)
    running = farm.wait_for_job(user, job_id, [pb.JOB_STATE_RUNNING])
    assert running.agent_id == "victim" and running.attempt == 1

    attacker = farm.enrolled("attacker", profile="local")
    # Lease as the victim: before, this took the victim's running job away.
    denied = refusal(lambda: attacker.caller.agents.LeaseJob(pb.LeaseJobRequest(agent_id="victim")))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "belongs to agent attacker; it cannot act as agent victim" in denied.details()
    for call in (
        lambda: attacker.caller.agents.Heartbeat(pb.HeartbeatRequest(agent_id="victim", busy=False)),
        lambda: attacker.caller.agents.ReportProgress(pb.ReportProgressRequest(agent_id="victim", lease_id="x")),
        lambda: attacker.caller.agents.ReportResult(pb.ReportResultRequest(
            agent_id="victim", job_id=job_id, attempt=1, result=FORGED)),
        lambda: attacker.caller.agents.Register(pb.RegisterRequest(agent_id="victim", device_profile="local")),
    ):
        assert refusal(call).code() == grpc.StatusCode.PERMISSION_DENIED
    # As itself, for a job it does not hold: the forged result is not stored.
    response = attacker.caller.agents.ReportResult(pb.ReportResultRequest(
        agent_id="attacker", job_id=job_id, attempt=1, lease_id="guessed", result=FORGED))
    assert not response.accepted and "stale" in response.message
    # Nor can it fetch a model it holds no lease for.
    sha = running.model_sha256
    assert refusal(lambda: list(attacker.caller.agents.DownloadArtifact(
        pb.DownloadArtifactRequest(sha256=sha)))).code() == grpc.StatusCode.PERMISSION_DENIED
    # A user's token opens no agent call, an agent's credential no user call.
    assert refusal(lambda: user.agents.LeaseJob(pb.LeaseJobRequest(agent_id="victim"))).code() == \
        grpc.StatusCode.PERMISSION_DENIED
    assert refusal(lambda: attacker.caller.farm.CancelJob(pb.CancelJobRequest(job_id=job_id))).code() == \
        grpc.StatusCode.PERMISSION_DENIED

    # The victim's run was never disturbed: it finishes on its first attempt with its real figures.
    done = farm.wait_for_job(user, job_id, [pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED])
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.failure
    assert (done.agent_id, done.attempt) == ("victim", 1)
    assert done.result.latency.count > 1000 and done.result.latency.p50_seconds > 1e-6
    assert farm.serving()


def test_enrollment_tokens_bind_a_profile_tags_uses_and_a_lifetime(make_farm):
    farm = make_farm()
    enroll = lambda secret, **kw: farm.caller(secret).agents.Enroll(pb.EnrollRequest(**kw))  # noqa: E731
    token = farm.enrollment_token("rpi5", tags=["lab-2"])
    for kwargs, says in (
        ({"agent_id": "pi-1", "device_profile": "jetson-orin-nano"}, "enrolls profile rpi5, not jetson-orin-nano"),
        ({"agent_id": "pi-1", "device_profile": "rpi5", "tags": ["gpu"]}, "does not grant tag gpu"),
    ):
        err = refusal(lambda: enroll(token, **kwargs))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and says in err.details()
    made = enroll(token, agent_id="pi-1", device_profile="rpi5", tags=["lab-2"])
    assert made.credential.startswith("hfa_") and list(made.tags) == ["lab-2"]
    again = refusal(lambda: enroll(token, agent_id="pi-2", device_profile="rpi5"))
    assert again.code() == grpc.StatusCode.UNAUTHENTICATED and "already used" in again.details()

    short = farm.enrollment_token("rpi5", expires=1)
    time.sleep(1.5)
    expired = refusal(lambda: enroll(short, agent_id="pi-3", device_profile="rpi5"))
    assert expired.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in expired.details()

    # The credential registers only as what was enrolled.
    agent = farm.caller(made.credential)
    caps = pb.Capabilities(runtimes=[pb.RuntimeInfo(name="onnxruntime", version="1")])
    for request, says in (
        (pb.RegisterRequest(agent_id="pi-1", device_profile="jetson-orin-nano", capabilities=caps),
         "was enrolled as profile rpi5"),
        (pb.RegisterRequest(agent_id="pi-1", device_profile="rpi5", tags=["lab-2", "gpu"], capabilities=caps),
         "was not granted tag gpu"),
    ):
        err = refusal(lambda: agent.agents.Register(request))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and says in err.details()
    agent.agents.Register(pb.RegisterRequest(agent_id="pi-1", device_profile="rpi5", tags=["lab-2"], capabilities=caps))

    # Another token cannot take over the enrolled id; one made for that id can (and the old
    # credential stops working at once).
    taken = refusal(lambda: enroll(farm.enrollment_token("rpi5"), agent_id="pi-1", device_profile="rpi5"))
    assert taken.code() == grpc.StatusCode.PERMISSION_DENIED and "already enrolled" in taken.details()
    replaced = enroll(farm.enrollment_token("rpi5", agent_id="pi-1"), agent_id="pi-1", device_profile="rpi5")
    assert refusal(lambda: agent.agents.Heartbeat(pb.HeartbeatRequest())).code() == grpc.StatusCode.UNAUTHENTICATED
    assert farm.caller(replaced.credential).agents.Heartbeat(pb.HeartbeatRequest()).known
    # A viewer or submitter makes no enrollment token.
    for role in ("viewer", "submitter"):
        caller = farm.caller(farm.user_token(role))
        err = refusal(lambda: caller.admin.CreateEnrollmentToken(pb.CreateEnrollmentTokenRequest(device_profile="rpi5")))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_revoked_agent_is_refused_at_once_and_its_job_runs_elsewhere(make_farm, models):
    farm = make_farm()
    farm.start_agent("rogue", enroll_token=farm.enrollment_token("local", agent_id="rogue"))
    farm.wait_for_device("rogue")
    user = farm.caller(farm.user_token("submitter"))
    job_id = submit(farm, user, models["onnx"], *LONG)
    assert farm.wait_for_job(user, job_id, [pb.JOB_STATE_RUNNING]).agent_id == "rogue"

    revoked = farm.cli("admin", "agents", "revoke", "rogue", token=farm.token)
    assert revoked.returncode == 0 and "agent rogue revoked" in revoked.stdout, revoked.stderr
    # At once: the job is queued again, the agent is out of the device list.
    job = user.farm.GetJob(pb.GetJobRequest(job_id=job_id))
    assert job.state == pb.JOB_STATE_QUEUED and job.agent_id == ""
    assert "rogue" not in [d.agent_id for d in farm.operator.farm.ListDevices(pb.ListDevicesRequest()).devices]
    credential = json.loads((farm.root / "rogue" / "credential.json").read_text())["credential"]
    err = refusal(lambda: farm.caller(credential).agents.Heartbeat(pb.HeartbeatRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in err.details()
    # An ordinary enrollment token does not readmit it.
    err = refusal(lambda: farm.caller(farm.enrollment_token("local")).agents.Enroll(
        pb.EnrollRequest(agent_id="rogue", device_profile="local")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "was revoked" in err.details()

    farm.start_agent("honest", enroll_token=farm.enrollment_token("local", agent_id="honest"))
    done = farm.wait_for_job(user, job_id, [pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED], timeout=180)
    assert done.state == pb.JOB_STATE_SUCCEEDED and done.agent_id == "honest" and done.attempt == 2
    listed = farm.cli("admin", "agents", "list", "--all", "--json", token=farm.token)
    states = {a["agent_id"]: a.get("revoked_at", 0) > 0 for a in json.loads(listed.stdout)["agents"]}
    assert states == {"rogue": True, "honest": False}
    farm.agents[0].wait_for(r"refused this agent \(UNAUTHENTICATED: the credential of agent rogue was revoked")


def test_the_agent_enrolls_once_and_keeps_its_credential_to_itself(make_farm):
    farm = make_farm()
    secret = farm.enrollment_token("local", agent_id="pi-local")
    agent = farm.start_agent("pi-local", enroll_token=secret)
    farm.wait_for_device("pi-local")
    data_dir = farm.root / "pi-local"
    stored = data_dir / "credential.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert json.loads(stored.read_text())["credential"].startswith("hfa_")
    assert secret not in stored.read_text()
    agent.stop()
    # Restarted without the (spent) enrollment token, it carries on with its own credential.
    farm.start_agent("pi-local")
    before = time.time()
    device = farm.wait_for_device("pi-local")
    assert device.last_seen >= before - 1
    assert farm.serving()


@pytest.mark.parametrize("role, allowed", [("viewer", False), ("submitter", False), ("admin", True)])
def test_only_an_admin_drains_and_revokes(make_farm, role, allowed):
    farm = make_farm()
    farm.enrolled("pi-9")
    caller = farm.caller(farm.user_token(role))
    calls = [lambda: caller.farm.DrainDevice(pb.DrainDeviceRequest(agent_id="pi-9", drain=True)),
             lambda: caller.admin.RevokeAgent(pb.RevokeAgentRequest(agent_id="pi-9"))]
    for call in calls:
        if allowed:
            call()
        else:
            assert refusal(call).code() == grpc.StatusCode.PERMISSION_DENIED
