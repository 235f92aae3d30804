"""Every RPC of every service, called with no credential, a wrong one and a revoked one, and with
each kind of credential where it does not belong: refused with the right status, and the farm
keeps serving. The RPCs are read from the contract, so a new one is covered without a change
here; what each role may call is written out below (it is the specification, not auth.POLICY)."""

from __future__ import annotations

from typing import Callable, Iterator, Tuple

import grpc
import pytest

from hilfarm.v1 import farm_pb2 as pb

from .conftest import code_of

STUBS = {"FarmService": "farm", "AgentService": "agents", "AdminService": "admin"}


# RPCs by Service.Method: two services may have a method of the same name (DownloadArtifact).
def _in(service: str, *methods: str) -> set:
    return {f"{service}.{m}" for m in methods}


WHO_AM_I = "AdminService.WhoAmI"
ENROLL = "AgentService.Enroll"
VIEWER_MAY = _in("FarmService", "StatArtifact", "DownloadArtifact", "GetRun", "GetJob", "ListJobs", "WatchJob", "WatchRun",
                 "ListDevices", "CompareJobs", "ListBaselines", "GetSuiteRun", "ListSuiteRuns",
                 "GetHistory") | {WHO_AM_I}
SUBMITTER_MAY = VIEWER_MAY | _in("FarmService", "UploadArtifact", "Submit", "CancelJob", "AcceptBaseline",
                                 "StartSuiteRun")
AGENT_CALLS = _in("AgentService", "Register", "Heartbeat", "LeaseJob", "DownloadArtifact", "ReportProgress",
                  "ReportResult")
ADMIN_ONLY = {"FarmService.DrainDevice"} | _in("AdminService", "CreateToken", "ListTokens", "RevokeToken",
                                              "CreateEnrollmentToken", "ListAgentIdentities", "RevokeAgent")


def every_rpc() -> Iterator[Tuple[str, object]]:
    for service in pb.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            yield service.name, method


RPCS = list(every_rpc())
NAMES = [f"{s}.{m.name}" for s, m in RPCS]


def test_the_lists_above_name_every_rpc_of_the_contract():
    named = SUBMITTER_MAY | AGENT_CALLS | ADMIN_ONLY | {ENROLL}
    assert set(NAMES) == named


def invoke(caller, service: str, method) -> Callable:  # type: ignore[no-untyped-def]
    stub = getattr(caller, STUBS[service])
    request = getattr(pb, method.input_type.name)()
    call = getattr(stub, method.name)
    if method.client_streaming:
        return lambda: call(iter([request]), timeout=20)
    return lambda: call(request, timeout=20)


@pytest.fixture(scope="module")
def credentials(shared_farm):
    farm = shared_farm
    revoked_user = farm.user_token("admin", "default", name="to be revoked")
    token_id = revoked_user.split("_")[1]
    farm.operator.admin.RevokeToken(pb.RevokeTokenRequest(id=token_id))
    doomed = farm.enrolled("doomed-agent")
    farm.operator.admin.RevokeAgent(pb.RevokeAgentRequest(agent_id="doomed-agent"))
    agent = farm.enrolled("good-agent")
    return {
        "revoked user": revoked_user,
        "revoked agent": doomed.caller.credential,
        "agent": agent.caller.credential,
        "viewer": farm.user_token("viewer", "default"),
        "submitter": farm.user_token("submitter", "default"),
        "admin": farm.user_token("admin", "default"),
        "enrollment": farm.enrollment_token("rpi5"),
    }


@pytest.mark.parametrize("credential", [None, "wrong-token", "hfu_0123456789abcdef_" + "A" * 43,
                                        "hfa_0123456789abcdef_" + "A" * 43])
@pytest.mark.parametrize("service, method", RPCS, ids=NAMES)
def test_no_or_a_wrong_credential_is_unauthenticated(shared_farm, service, method, credential):
    assert code_of(invoke(shared_farm.caller(credential), service, method)) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("service, method", RPCS, ids=NAMES)
def test_a_revoked_credential_is_unauthenticated(shared_farm, credentials, service, method):
    which = "revoked agent" if f"{service}.{method.name}" in AGENT_CALLS else "revoked user"
    caller = shared_farm.caller(credentials[which])
    assert code_of(invoke(caller, service, method)) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("service, method", RPCS, ids=NAMES)
def test_each_credential_works_only_where_it_belongs(shared_farm, credentials, service, method):
    """PERMISSION_DENIED where the credential may not call; anything else (the request is
    empty, so often INVALID_ARGUMENT or NOT_FOUND) means it got past authorisation."""
    name = f"{service}.{method.name}"
    allowed = {
        "agent": AGENT_CALLS | {WHO_AM_I},
        "enrollment": {ENROLL},
        "viewer": VIEWER_MAY,
        "submitter": SUBMITTER_MAY,
        "admin": SUBMITTER_MAY | ADMIN_ONLY | {ENROLL},
    }
    for who, may in allowed.items():
        if method.name in ("ReportProgress", "ReportResult", "Heartbeat", "LeaseJob", "Register") and who == "agent":
            continue  # allowed; their empty requests act as the agent, covered in test_agent_identity
        code = code_of(invoke(shared_farm.caller(credentials[who]), service, method))
        if name in may:
            assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), (who, name, code)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (who, name, code)


def test_the_farm_keeps_serving_after_every_refusal(shared_farm, credentials):
    assert shared_farm.serving()
    who = shared_farm.caller(credentials["viewer"]).admin.WhoAmI(pb.WhoAmIRequest())
    assert (who.kind, who.project, who.role) == ("user", "default", pb.ROLE_VIEWER)
