"""What the other replicas hear of a write transaction on PostgreSQL: its changes, exactly as
recorded, when it commits; nothing when it does not; and the NOTIFYs and the COMMIT in one
round trip."""
from __future__ import annotations

import re
import threading
import uuid
from typing import List

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from hilfarm.controller.database import Database
from hilfarm.controller.notifications import Change, ChangeFeed, PostgresListener


@pytest.fixture
def database(postgres_url: str):
    db = Database(postgres_url)
    db.migrate()
    yield db
    db.close()


class Heard:
    """The changes a second replica's listener publishes, of the jobs this test names."""

    def __init__(self, database: Database, job_ids: List[str]) -> None:
        self.job_ids = set(job_ids)
        self.changes: List[Change] = []
        self.arrived = threading.Condition()
        feed = ChangeFeed()
        feed.subscribe(self._publish)
        self.listener = PostgresListener(database.listen_conninfo(), feed)
        self.listener.start()
        assert self.listener.connected.wait(10), "the listener did not connect"

    def _publish(self, changes, resync: bool) -> None:  # type: ignore[no-untyped-def]
        with self.arrived:
            self.changes += [c for c in changes if c.job_id in self.job_ids]
            self.arrived.notify_all()

    def wait_for(self, n: int, timeout: float = 10.0) -> List[Change]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.changes) >= n, timeout)
            return list(self.changes)


def test_the_other_replicas_hear_each_committed_change_exactly_as_recorded(database: Database):
    # A device profile is the user's own text: quotes, a backslash and a percent sign must come
    # through the NOTIFY literal unchanged.
    profile = "o'brien's \\board \"100%\" ünï"
    ids = [uuid.uuid4().hex for _ in range(4)]
    heard = Heard(database, ids)
    try:
        with database.write_connection() as conn:  # the Core path of the hot calls
            database.record_change(conn, Change(ids[0], "run-1", profile, queued=True, finished=False))
        with database.write() as s:  # the ORM session path
            database.record_change(s, Change(ids[1], "run-1", profile, queued=False, finished=True))
        with pytest.raises(RuntimeError):
            with database.write_connection() as conn:
                database.record_change(conn, Change(ids[2], "run-2", profile, queued=True, finished=False))
                raise RuntimeError("the transaction fails before its end")
        with database.write() as s:  # after a failure, the next transaction is heard as before
            database.record_change(s, Change(ids[3], "run-3", profile, queued=True, finished=False))

        changes = heard.wait_for(3)
        assert changes == [Change(ids[0], "run-1", profile, queued=True, finished=False),
                           Change(ids[1], "run-1", profile, queued=False, finished=True),
                           Change(ids[3], "run-3", profile, queued=True, finished=False)]
    finally:
        heard.listener.stop()


def test_a_write_transaction_ends_with_one_query_that_notifies_and_commits(database: Database, tmp_path):
    """libpq's own trace of the connection (what the frontend sends): after the transaction's
    statements, one simple query carries the NOTIFY and the COMMIT, and nothing follows it
    (psycopg's commit, which SQLAlchemy still calls, finds no transaction to end)."""
    trace_path = tmp_path / "libpq.trace"
    with open(trace_path, "w") as trace:
        def traced(conn, *_):  # type: ignore[no-untyped-def]
            conn.connection.driver_connection.pgconn.trace(trace.fileno())

        event.listen(database.engine, "begin", traced)
        try:
            with database.write_connection() as conn:
                conn.execute(sa.text("SELECT 'the statements of the transaction'"))
                database.record_change(conn, Change(uuid.uuid4().hex, "run", "rpi5", queued=True, finished=False))
                pgconn = conn.connection.driver_connection.pgconn
            assert pgconn.transaction_status == 0  # IDLE: committed, no transaction open
        finally:
            event.remove(database.engine, "begin", traced)
            pgconn.untrace()
    # Each line: time, F (frontend) or B (backend), length, message type, content.
    lines = [line.split("\t", 4) for line in trace_path.read_text().splitlines()]
    sent = [(fields[3], fields[4] if len(fields) > 4 else "") for fields in lines if fields[1] == "F"]
    statements = [i for i, (kind, text) in enumerate(sent) if "the statements of the transaction" in text]
    assert statements, sent
    after = sent[statements[-1] + 1:]
    assert len(after) == 1, f"the transaction's end took {len(after)} messages: {after}"
    kind, text = after[0]
    assert kind == "Query" and "NOTIFY hilfarm_changes, '" in text and text.endswith('; COMMIT"'), after


def test_a_read_session_sends_no_transaction_and_keeps_the_prepared_statements(database: Database, tmp_path):
    """``Database.read()`` on PostgreSQL: no BEGIN and no ROLLBACK around its statements (two
    round trips), and the statements psycopg prepared on the connection stay prepared (a
    ROLLBACK would make it forget them all)."""
    trace_path = tmp_path / "libpq.trace"
    with database.connect() as conn:  # prepare a statement on a pooled connection (outside a transaction)
        pgconn = conn.connection.driver_connection.pgconn
        for _ in range(6):  # psycopg prepares a statement at its fifth execution
            conn.execute(sa.text("SELECT count(*) FROM jobs WHERE state = :state"), {"state": "queued"})
        prepared = dict(conn.connection.driver_connection._prepared._names)
        assert prepared, "psycopg prepared nothing"
    with open(trace_path, "w") as trace:
        pgconn.trace(trace.fileno())
        try:
            with database.read() as s:
                assert s.connection().connection.driver_connection.pgconn is pgconn  # the same pooled connection
                s.execute(sa.text("SELECT 'read in a session'")).all()
        finally:
            pgconn.untrace()
    lines = [line.split("\t", 4) for line in trace_path.read_text().splitlines()]
    sent = [fields[4] if len(fields) > 4 else "" for fields in lines if fields[1] == "F"]
    assert not [text for text in sent if "BEGIN" in text or "ROLLBACK" in text or "COMMIT" in text], sent
    with database.connect() as conn:
        assert conn.connection.driver_connection.pgconn is pgconn
        assert dict(conn.connection.driver_connection._prepared._names) == prepared


def test_a_job_s_submission_lease_progress_and_result_are_writes_of_one_statement_that_notify_as_recorded(
        database: Database, tmp_path):
    """The usual life of a job without budgets on PostgreSQL: its submission, its lease's take, a
    progress report and its result each commit by themselves (Database.write_alone): libpq's
    trace shows one statement each and no BEGIN or COMMIT. The other replicas hear each change
    from the statement itself (queued, then changed twice, then finished), and this process's
    feed gets the same."""
    from hilfarm.controller.app import open_repositories
    from hilfarm.controller.models import Artifact, Job, Run

    store = open_repositories(database)
    store.artifact_records.add_artifact(Artifact(sha256="a" * 64, size_bytes=5, format="onnx", filename="net.onnx",
                                                 created_at=1.0))
    profile = "o'brien's \"100%\" ünï"  # the user's own text, through the statement's JSON
    store.agents.register_agent("pi-1", profile=profile, tags=[], capabilities={"runtimes": [{"name": "onnxruntime"}]},
                                hostname="h", version="0.1", now=1.0)
    assert store.jobs.lease_next("pi-1", now=1.0, lease_seconds=30).job is None  # reads the agent's kind
    run = Run(id=uuid.uuid4().hex, created_at=1.0, project="vision")
    job = Job(id=uuid.uuid4().hex, run_id=run.id, project="vision", model_sha256="a" * 64, model_name="net.onnx",
              model_format="onnx", device_profile=profile, settings={}, created_at=1.0)
    here: List[Change] = []
    unsubscribe = database.feed.subscribe(lambda changes, resync: here.extend(c for c in changes if c.job_id == job.id))
    heard = Heard(database, [job.id])
    trace_path = tmp_path / "libpq.trace"
    try:
        with open(trace_path, "w") as trace:
            pgconns = []

            def traced(dbapi_conn, *_):  # type: ignore[no-untyped-def]
                if dbapi_conn.pgconn not in pgconns:
                    dbapi_conn.pgconn.trace(trace.fileno())
                    pgconns.append(dbapi_conn.pgconn)

            event.listen(database.engine, "checkout", traced)
            try:
                store.jobs.add_run(run, [job])
                leased = store.jobs.lease_next("pi-1", now=2.0, lease_seconds=30).job
                assert leased is not None and leased.id == job.id
                assert store.jobs.record_progress("pi-1", leased.lease_id, {"runs_done": 1}, now=3.0,
                                                  lease_seconds=30) == (False, "")
                assert store.jobs.record_result("pi-1", leased.lease_id, job.id, 1, result={"ok": True}, failure=None,
                                                now=4.0)[0]
            finally:
                event.remove(database.engine, "checkout", traced)
                for pgconn in pgconns:
                    pgconn.untrace()
        changes = heard.wait_for(4)
    finally:
        heard.listener.stop()
        unsubscribe()
    expected = ([Change(job.id, run.id, profile, queued=True)] + [Change(job.id, run.id, profile)] * 2
                + [Change(job.id, run.id, profile, finished=True)])
    assert changes == expected and here == expected
    # A message's text may span lines (a statement's own newlines): each starts with a timestamp.
    messages = [m.split("\t", 4) for m in re.split(r"\n(?=\d{4}-\d\d-\d\d )", trace_path.read_text())]
    sent = [fields[4] for fields in messages if len(fields) > 4 and fields[1] == "F" and fields[3] in ("Parse", "Query")]
    writes = [text for text in sent if "INSERT INTO" in text or "UPDATE jobs" in text]
    assert len(writes) == 4 and all("pg_notify" in text for text in writes), sent
    assert not [text for text in sent if "BEGIN" in text or "COMMIT" in text or "NOTIFY " in text], sent
    state = store.jobs.get_job(job.id)
    assert state.state == "succeeded" and state.progress["runs_done"] == 1 and state.result == {"ok": True}
    # The run and its job are the submitter's project's.
    assert store.jobs.get_run(run.id, project="vision")[0].project == "vision"


@pytest.mark.postgres
def test_a_token_revoked_on_one_replica_is_refused_by_the_others_at_once(make_farm, postgres_url):
    """The other replicas (or processes of one controller) remember the caller for up to
    auth.REMEMBER_SECONDS; the revoking transaction's notification makes them forget it."""
    import grpc

    from hilfarm.controller import auth
    from hilfarm.v1 import farm_pb2 as pb

    from .conftest import wait_for

    revoking = make_farm(db_url=postgres_url, token="the-operator-token")
    other = make_farm(db_url=postgres_url, token="the-operator-token")
    credentials = revoking.controller.parts.credentials
    row, secret = credentials.create_user_token(project="default", role=auth.Role.VIEWER, name="ci",
                                                expires_at=None, created_by="test")
    me = (("authorization", f"Bearer {secret}"),)
    other.farm.ListDevices(pb.ListDevicesRequest(), metadata=me)  # read once: remembered from now on
    assert other.controller.parts.authenticator.remembered("/hilfarm.v1.FarmService/ListDevices", me) is not None

    credentials.revoke_user_token(row.id, project=None)

    def refused() -> bool:
        try:
            other.farm.ListDevices(pb.ListDevicesRequest(), metadata=me)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in exc.details(), exc
            return True
        return False

    # Without the notification the other replica would trust it for another 20-30 s.
    wait_for(refused, 5, "the other replica to refuse the revoked token")
