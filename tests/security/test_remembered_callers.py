"""A caller looked up a moment ago is answered without the database (auth.Authenticator.remembered),
and never past what a lookup would have said: a revocation on this controller, a token's expiry,
REMEMBER_SECONDS for a revocation made by another replica, a call the credential may not make.
A caller about to be forgotten is read again in the background, without its call waiting."""

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


def test_a_caller_about_to_be_forgotten_is_handed_out_once_to_be_read_again(farm):  # type: ignore[no-untyped-def]
    authenticator, rows, clock, agent_token, _, _, _ = farm
    first = authenticator.authenticate(HEARTBEAT, bearer(agent_token))
    clock.now += auth.REMEMBER_SECONDS - auth.REFRESH_AHEAD_SECONDS - 0.1
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) == first
    assert authenticator.refreshes_wanted() == []  # not due yet
    clock.now += 0.2
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) == first  # answered now, from memory
    assert authenticator.refreshes_wanted() == [agent_token]
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) == first
    assert authenticator.refreshes_wanted() == []  # one read at a time
    assert rows.reads == 1
    authenticator.refresh(agent_token)
    assert rows.reads == 2
    clock.now += auth.REMEMBER_SECONDS - 1.0  # past the first read's trust, within the second's
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) == first
    assert rows.reads == 2


def test_a_read_handed_out_but_never_done_leaves_the_next_one_due_as_usual(farm):  # type: ignore[no-untyped-def]
    authenticator, rows, clock, agent_token, _, _, _ = farm
    authenticator.authenticate(HEARTBEAT, bearer(agent_token))
    clock.now += auth.REMEMBER_SECONDS - auth.REFRESH_AHEAD_SECONDS + 0.1
    authenticator.remembered(HEARTBEAT, bearer(agent_token))
    assert authenticator.refreshes_wanted() == [agent_token]  # and lost: its pool never ran it
    clock.now += auth.REFRESH_AHEAD_SECONDS  # forgotten, as without reading ahead: the call reads it
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) is None
    authenticator.authenticate(HEARTBEAT, bearer(agent_token))
    clock.now += auth.REMEMBER_SECONDS - auth.REFRESH_AHEAD_SECONDS + 0.1
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) is not None
    assert authenticator.refreshes_wanted() == [agent_token]


def test_reading_again_forgets_a_caller_revoked_on_another_replica_at_once(farm):  # type: ignore[no-untyped-def]
    authenticator, rows, clock, agent_token, _, cred_id, _ = farm
    authenticator.authenticate(HEARTBEAT, bearer(agent_token))
    rows.agents[cred_id].revoked_at = clock.now  # in the shared database; this process bumps nothing
    clock.now += auth.REMEMBER_SECONDS - 1.0
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) is not None  # as before: trusted so far
    authenticator.refresh(*authenticator.refreshes_wanted())
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) is None
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticator.authenticate(HEARTBEAT, bearer(agent_token))


def test_a_token_that_expires_before_it_would_be_forgotten_is_not_read_again_ahead(farm):  # type: ignore[no-untyped-def]
    authenticator, rows, clock, _, user_token, _, user_id = farm
    rows.users[user_id].expires_at = clock.now + auth.REFRESH_AHEAD_SECONDS
    authenticator.authenticate(SUBMIT, bearer(user_token))
    clock.now += auth.REFRESH_AHEAD_SECONDS - 0.1
    assert authenticator.remembered(SUBMIT, bearer(user_token)) is not None
    assert authenticator.refreshes_wanted() == []  # a read could not trust it any longer


def test_the_interceptor_answers_from_memory_and_reads_again_in_the_background(farm):  # type: ignore[no-untyped-def]
    """A call whose caller is due to be read again is served at once; the read runs in the
    database pool afterwards, outside the call, and keeps the caller remembered."""
    import asyncio

    import grpc

    from hilfarm.controller import server
    from hilfarm.v1 import farm_pb2 as pb

    authenticator, rows, clock, agent_token, _, _, _ = farm
    authenticator.authenticate(HEARTBEAT, bearer(agent_token))
    clock.now += auth.REMEMBER_SECONDS - 1.0

    class Context:
        def invocation_metadata(self):  # type: ignore[no-untyped-def]
            return bearer(agent_token)

        def time_remaining(self) -> float:
            return 5.0

        async def abort(self, code, details):  # type: ignore[no-untyped-def]
            raise AssertionError(f"the call was refused: {code} {details}")

    async def scenario() -> None:
        pool_may_run = asyncio.Event()
        ran_in_pool = []

        async def blocking(fn, *args):  # type: ignore[no-untyped-def]
            await pool_may_run.wait()  # the database pool is busy
            ran_in_pool.append(server._CALL_DEADLINE.get())  # the deadline it runs under
            return fn(*args)

        async def heartbeat(request, context):  # type: ignore[no-untyped-def]
            return pb.HeartbeatResponse(known=True)

        interceptor = server._Authorization(authenticator, blocking, client_certificates=False)
        handler = interceptor.wrap(grpc.unary_unary_rpc_method_handler(heartbeat), HEARTBEAT)
        answer = await asyncio.wait_for(handler.unary_unary(pb.HeartbeatRequest(agent_id="pi-1"), Context()), 5)
        assert answer.known and rows.reads == 1  # answered while the read waits for the pool
        assert len(interceptor._refreshes) == 1
        pool_may_run.set()
        await asyncio.wait_for(asyncio.gather(*interceptor._refreshes), 5)
        assert rows.reads == 2
        assert ran_in_pool == [None]  # not under the heartbeat's deadline: the call is long answered

    asyncio.run(scenario())
    clock.now += 5.0  # past the first read's trust
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) is not None


def test_a_read_that_fails_is_not_tried_again_at_every_call(farm):  # type: ignore[no-untyped-def]
    """The database unreachable: the caller stays trusted until its time is up, as without
    reading ahead, and the calls meanwhile do not each start a read."""
    authenticator, rows, clock, agent_token, _, _, _ = farm
    authenticator.authenticate(HEARTBEAT, bearer(agent_token))
    clock.now += auth.REMEMBER_SECONDS - auth.REFRESH_AHEAD_SECONDS + 0.1

    def unreachable(credential_id: str):  # type: ignore[no-untyped-def]
        raise ConnectionError("the database is unreachable")

    rows.agent_credential = unreachable  # type: ignore[method-assign]
    authenticator.remembered(HEARTBEAT, bearer(agent_token))
    (token,) = authenticator.refreshes_wanted()
    with pytest.raises(ConnectionError):
        authenticator.refresh(token)
    clock.now += 1.0
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) is not None
    assert authenticator.refreshes_wanted() == []
    clock.now += auth.REFRESH_AHEAD_SECONDS
    assert authenticator.remembered(HEARTBEAT, bearer(agent_token)) is None


class BatchRows(Rows):
    """A database that reads many agent credentials in one go, as controller/credentials.py does."""

    def agent_credentials(self, credential_ids):  # type: ignore[no-untyped-def]
        self.reads += 1
        return {cid: self.agents[cid] for cid in credential_ids if cid in self.agents}


def test_callers_due_together_are_read_again_in_one_read(farm):  # type: ignore[no-untyped-def]
    """A thousand agents come due some fifty a second: their credentials are read in one lookup,
    and each is kept or forgotten as its own read would have said."""
    _, _, clock, _, user_token, _, _ = farm
    rows = BatchRows()
    authenticator = auth.Authenticator(rows, operator_token=OPERATOR, clock=clock)
    tokens = {}
    for n in range(5):
        cred_id, token, digest = auth.new_token(auth.AGENT_PREFIX)
        rows.agents[cred_id] = AgentCredential(id=cred_id, secret_hash=digest, agent_id=f"pi-{n}",
                                               device_profile="rpi5", tags=[], enrolled_at=clock.now)
        tokens[cred_id] = token
        authenticator.authenticate(HEARTBEAT, bearer(token))
    user_id, user_token, digest = auth.new_token(auth.USER_PREFIX)
    rows.users[user_id] = UserToken(id=user_id, secret_hash=digest, project="vision", role="submitter",
                                    created_at=clock.now)
    authenticator.authenticate(SUBMIT, bearer(user_token))
    ids = list(tokens)
    rows.agents[ids[1]].revoked_at = clock.now  # on another replica
    del rows.agents[ids[2]]  # gone from the database
    clock.now += auth.REMEMBER_SECONDS - 1.0
    for token in tokens.values():
        assert authenticator.remembered(HEARTBEAT, bearer(token)) is not None
    assert authenticator.remembered(SUBMIT, bearer(user_token)) is not None
    wanted = authenticator.refreshes_wanted()
    assert sorted(wanted) == sorted([*tokens.values(), user_token])
    reads = rows.reads
    authenticator.refresh(*wanted)
    assert rows.reads == reads + 2  # the five agents in one read, the user token in its own
    clock.now += 5.0  # past the first reads' trust
    kept = {cid for cid, token in tokens.items() if authenticator.remembered(HEARTBEAT, bearer(token)) is not None}
    assert kept == {ids[0], ids[3], ids[4]}
    assert authenticator.remembered(SUBMIT, bearer(user_token)) is not None
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticator.authenticate(HEARTBEAT, bearer(tokens[ids[1]]))
    with pytest.raises(Unauthenticated, match="not known"):
        authenticator.authenticate(HEARTBEAT, bearer(tokens[ids[2]]))


def test_the_interceptor_reads_callers_that_come_due_during_a_read_together_after_it(farm):  # type: ignore[no-untyped-def]
    """One read at a time: callers that come due while one waits for the database are read by
    the next, in one go, not one read each."""
    import asyncio

    import grpc

    from hilfarm.controller import server
    from hilfarm.v1 import farm_pb2 as pb

    _, _, clock, _, _, _, _ = farm
    rows = BatchRows()
    authenticator = auth.Authenticator(rows, operator_token=OPERATOR, clock=clock)
    tokens = []
    for n in range(4):
        cred_id, token, digest = auth.new_token(auth.AGENT_PREFIX)
        rows.agents[cred_id] = AgentCredential(id=cred_id, secret_hash=digest, agent_id=f"pi-{n}",
                                               device_profile="rpi5", tags=[], enrolled_at=clock.now)
        tokens.append(token)
        authenticator.authenticate(HEARTBEAT, bearer(token))
    clock.now += auth.REMEMBER_SECONDS - 1.0

    class Context:
        def __init__(self, token: str) -> None:
            self.token = token

        def invocation_metadata(self):  # type: ignore[no-untyped-def]
            return bearer(self.token)

        def time_remaining(self) -> float:
            return 5.0

        async def abort(self, code, details):  # type: ignore[no-untyped-def]
            raise AssertionError(f"the call was refused: {code} {details}")

    batches = []

    async def scenario() -> None:
        pool_may_run = asyncio.Event()

        async def blocking(fn, *args):  # type: ignore[no-untyped-def]
            await pool_may_run.wait()  # the database is busy
            batches.append(len(args))
            return fn(*args)

        async def heartbeat(request, context):  # type: ignore[no-untyped-def]
            return pb.HeartbeatResponse(known=True)

        interceptor = server._Authorization(authenticator, blocking, client_certificates=False)
        handler = interceptor.wrap(grpc.unary_unary_rpc_method_handler(heartbeat), HEARTBEAT)
        for token in tokens:  # every call answered at once, from memory
            answer = await asyncio.wait_for(handler.unary_unary(pb.HeartbeatRequest(), Context(token)), 5)
            assert answer.known
        assert len(interceptor._refreshes) == 1 and rows.reads == 4
        pool_may_run.set()
        for _ in range(100):
            await asyncio.sleep(0)
            if not interceptor._refreshes and len(batches) == 2:
                break
        assert batches == [1, 3] and rows.reads == 6
        assert not interceptor._refreshes and authenticator.refreshes_wanted() == []

    asyncio.run(scenario())
    clock.now += 5.0  # past the first reads' trust
    assert all(authenticator.remembered(HEARTBEAT, bearer(t)) is not None for t in tokens)
