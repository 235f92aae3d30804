"""A caller looked up a moment ago is answered without the database (auth.Authenticator.remembered),
and never past what a lookup would have said: a revocation on this controller, a token's expiry,
REMEMBER_SECONDS for a revocation made by another replica, a call the credential may not make."""

from __future__ import annotations

from typing import Dict, Optional

import pytest

from hilfarm.controller import auth
from hilfarm.controller.errors import PermissionDenied, Unauthenticated
from hilfarm.controller.models import AgentCredential, UserToken

HEARTBEAT = "/hilfarm.v1.AgentService/Heartbeat"
SUBMIT = "/hilfarm.v1.FarmService/Submit"
OPERATOR = "the-operator-token"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Rows(auth.CredentialLookup):
    """The database, as the authenticator reads it; counts the reads."""

    def __init__(self) -> None:
        self.users: Dict[str, UserToken] = {}
        self.agents: Dict[str, AgentCredential] = {}
        self.reads = 0

    def user_token(self, token_id: str) -> Optional[UserToken]:
        self.reads += 1
        return self.users.get(token_id)

    def agent_credential(self, credential_id: str) -> Optional[AgentCredential]:
        self.reads += 1
        return self.agents.get(credential_id)

    def enrollment_token(self, token_id: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        return None


def bearer(token: str):  # type: ignore[no-untyped-def]
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def farm():  # type: ignore[no-untyped-def]
    rows, clock = Rows(), Clock()
    authenticator = auth.Authenticator(rows, operator_token=OPERATOR, clock=clock)
    cred_id, agent_token, digest = auth.new_token(auth.AGENT_PREFIX)
    rows.agents[cred_id] = AgentCredential(id=cred_id, secret_hash=digest, agent_id="pi-1", device_profile="rpi5",
                                           tags=[], enrolled_at=clock.now)
    user_id, user_token, digest = auth.new_token(auth.USER_PREFIX)
    rows.users[user_id] = UserToken(id=user_id, secret_hash=digest, project="vision", role="submitter",
                                    created_at=clock.now)
    return authenticator, rows, clock, agent_token, user_token, cred_id, user_id


def test_a_caller_read_once_is_answered_from_memory_until_remember_seconds_pass(farm):  # type: ignore[no-untyped-def]
    authenticator, rows, clock, agent_token, user_token, _, _ = farm
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) is None  # never read: the database must
    assert rows.reads == 0
    first = authenticator.authenticate(HEARTBEAT, bearer(agent_token))
    assert rows.reads == 1 and first.agent_id == "pi-1"
    clock.now += auth.REMEMBER_SECONDS - 0.1
    again = authenticator.remembered(HEARTBEAT, bearer(agent_token))
    assert again == first and rows.reads == 1
    user = authenticator.authenticate(SUBMIT, bearer(user_token))
    assert authenticator.remembered(SUBMIT, bearer(user_token)) == user and user.project == "vision"
    assert rows.reads == 2
    clock.now += 0.2  # the agent's entry is now older than REMEMBER_SECONDS
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) is None


def test_a_revocation_on_this_controller_is_seen_by_the_next_call(farm):  # type: ignore[no-untyped-def]
    authenticator, rows, clock, agent_token, user_token, cred_id, _ = farm
    authenticator.authenticate(HEARTBEAT, bearer(agent_token))
    authenticator.authenticate(SUBMIT, bearer(user_token))
    rows.agents[cred_id].revoked_at = clock.now
    rows.revocations += 1  # what credentials.py does after committing a revocation
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) is None
    assert authenticator.remembered(SUBMIT, bearer(user_token)) is None  # everyone is forgotten
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticator.authenticate(HEARTBEAT, bearer(agent_token))


def test_a_lookup_that_raced_a_revocation_is_not_remembered(farm):  # type: ignore[no-untyped-def]
    authenticator, rows, clock, agent_token, _, cred_id, _ = farm

    original = rows.agent_credential

    def read_then_revoke(credential_id: str):  # type: ignore[no-untyped-def]
        row = original(credential_id)  # read before the revocation commits ...
        rows.revocations += 1          # ... which lands before the caller is remembered
        return row

    rows.agent_credential = read_then_revoke  # type: ignore[method-assign]
    authenticator.authenticate(HEARTBEAT, bearer(agent_token))
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) is None


def test_another_replicas_revocation_takes_at_most_remember_seconds(farm):  # type: ignore[no-untyped-def]
    authenticator, rows, clock, agent_token, _, cred_id, _ = farm
    authenticator.authenticate(HEARTBEAT, bearer(agent_token))
    rows.agents[cred_id].revoked_at = clock.now  # in the shared database; this process bumps nothing
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) is not None
    clock.now += auth.REMEMBER_SECONDS
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) is None
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticator.authenticate(HEARTBEAT, bearer(agent_token))


def test_a_token_is_not_trusted_past_its_expiry(farm):  # type: ignore[no-untyped-def]
    authenticator, rows, clock, _, user_token, _, user_id = farm
    rows.users[user_id].expires_at = clock.now + 1.0
    authenticator.authenticate(SUBMIT, bearer(user_token))
    clock.now += 0.5
    assert authenticator.remembered(SUBMIT, bearer(user_token)) is not None
    clock.now += 0.5
    assert authenticator.remembered(SUBMIT, bearer(user_token)) is None
    with pytest.raises(Unauthenticated, match="expired"):
        authenticator.authenticate(SUBMIT, bearer(user_token))


def test_what_a_remembered_caller_may_not_do_is_refused_the_same_way(farm):  # type: ignore[no-untyped-def]
    authenticator, rows, clock, agent_token, user_token, _, _ = farm
    authenticator.authenticate(HEARTBEAT, bearer(agent_token))
    authenticator.authenticate(SUBMIT, bearer(user_token))
    with pytest.raises(PermissionDenied) as from_memory:
        authenticator.remembered(SUBMIT, bearer(agent_token))
    with pytest.raises(PermissionDenied) as from_database:
        authenticator.authenticate(SUBMIT, bearer(agent_token))
    assert str(from_memory.value) == str(from_database.value)
    with pytest.raises(PermissionDenied):
        authenticator.remembered(HEARTBEAT, bearer(user_token))
    # a wrong secret with a known id is never answered from memory
    forged = agent_token[:-4] + ("AAAA" if not agent_token.endswith("AAAA") else "BBBB")
    assert authenticator.remembered(HEARTBEAT, bearer(forged)) is None
    with pytest.raises(Unauthenticated):
        authenticator.authenticate(HEARTBEAT, bearer(forged))


def test_callers_that_need_no_lookup_are_answered_without_one(farm):  # type: ignore[no-untyped-def]
    authenticator, rows, clock, _, _, _, _ = farm
    operator = authenticator.remembered(SUBMIT, bearer(OPERATOR))
    assert operator is not None and operator.operator
    with pytest.raises(Unauthenticated):
        authenticator.remembered(SUBMIT, bearer("not-a-token-of-this-controller"))
    with pytest.raises(Unauthenticated, match="needs the agent's own credential"):
        authenticator.remembered(HEARTBEAT, ())
    assert rows.reads == 0
