"""Schema migrations on SQLite and PostgreSQL: the migrated schema is the models' schema, revisions
go down and up, a database from before migrations is adopted with its rows, one from a newer
version is refused, replicas migrating at once do not collide, and a new revision can be written."""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest
import sqlalchemy as sa
from alembic import command

from hilfarm.controller import schema
from hilfarm.controller.models import Artifact, Job, Run
from hilfarm.controller.schema import SchemaError
from hilfarm.controller.app import Repositories, open_repositories
from hilfarm.controller.database import Database

SHA = "c" * 64
T0 = 1_700_000_000.0
CORE_TABLES = {"artifacts", "runs", "jobs", "agents"}
ALL_TABLES = CORE_TABLES | {"job_evaluations", "baselines", "suite_runs", "suite_cases"}


def tables(url: str) -> set:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def revision_of(database: Database):
    with database.engine.connect() as conn:
        return schema.current_revision(conn)


def add_rows(store: Repositories) -> str:
    store.artifact_records.add_artifact(Artifact(sha256=SHA, size_bytes=5 << 30, format="onnx", filename="net.onnx", created_at=T0))
    job = Job(id="job-1", run_id="run-1", model_sha256=SHA, model_name="net.onnx", model_format="onnx",
              device_profile="rpi5", settings={"min_runs": 10}, required_tags=["usb"], created_at=T0)
    store.jobs.add_run(Run(id="run-1", created_at=T0), [job])
    return job.id


def initial_schema() -> sa.MetaData:
    """The tables of revision 0001: what create_all made before migrations existed."""
    return schema.script_directory().get_revision(schema.INITIAL_REVISION).module.schema()


def add_rows_0001(engine: sa.Engine) -> str:
    """The rows of ``add_rows``, written into tables of revision 0001 (the models have moved on)."""
    t = initial_schema().tables
    with engine.begin() as conn:
        conn.execute(t["artifacts"].insert().values(sha256=SHA, size_bytes=5 << 30, format="onnx",
                                                    filename="net.onnx", created_at=T0))
        conn.execute(t["runs"].insert().values(id="run-1", created_at=T0))
        conn.execute(t["jobs"].insert().values(
            id="job-1", run_id="run-1", model_sha256=SHA, model_name="net.onnx", model_format="onnx",
            device_profile="rpi5", settings={"min_runs": 10}, required_tags=["usb"], state="queued", attempt=0,
            max_attempts=3, created_at=T0))
    return "job-1"


@pytest.fixture
def fresh(db_url: str):
    store = open_repositories(Database(db_url))
    yield store
    store.database.close()


def test_upgrade_from_empty_gives_exactly_the_models_schema(fresh: Repositories, db_url: str):
    report = fresh.database.migrate()
    assert (report.before, report.after, report.adopted) == (None, schema.head_revision(), False)
    assert ALL_TABLES <= tables(db_url)
    with fresh.database.engine.connect() as conn:
        diffs = schema.differences(conn)
        assert diffs == [], (
            "the models differ from the schema the migrations build: add a revision with "
            f"`hilfarm controller migrate --new MESSAGE` ({schema.describe(diffs)})")
        if conn.dialect.name == "postgresql":  # the JSON documents are JSONB there, as the models declare
            types = {c["name"]: type(c["type"]).__name__ for c in sa.inspect(conn).get_columns("jobs")}
            assert types["settings"] == types["result"] == "JSONB"
    # The store works on the migrated schema, and migrating again changes nothing.
    job_id = add_rows(fresh)
    assert fresh.database.migrate() == schema.MigrationReport(before=report.after, after=report.after)
    assert fresh.jobs.get_job(job_id).settings == {"min_runs": 10}


def test_the_model_check_sees_a_change_that_has_no_revision(fresh: Repositories):
    """The comparison above would fail if models.py changed without a revision."""
    fresh.database.migrate()
    changed = sa.MetaData()
    for table in schema.target_metadata().sorted_tables:
        table.to_metadata(changed)
    changed.tables["jobs"].append_column(sa.Column("note", sa.String(100), nullable=True))
    sa.Index("ix_agents_hostname", changed.tables["agents"].c.hostname)
    changed.tables["runs"].c.created_at.type = sa.String(32)
    with fresh.database.engine.connect() as conn:
        described = schema.describe(schema.differences(conn, changed))
    assert "add_column jobs.note" in described
    assert "add_index ix_agents_hostname on agents" in described
    assert "modify_type runs.created_at" in described


def test_downgrade_to_base_and_up_again(fresh: Repositories, db_url: str):
    fresh.database.migrate()
    with fresh.database.engine.connect() as conn:
        command.downgrade(schema.alembic_config(connection=conn), "base")
        conn.commit()
    assert not (tables(db_url) & ALL_TABLES)
    assert revision_of(fresh.database) is None
    assert fresh.database.migrate().before is None
    with fresh.database.engine.connect() as conn:
        assert schema.differences(conn) == []
    add_rows(fresh)


def test_a_database_made_by_create_all_is_adopted_with_its_rows(fresh: Repositories, db_url: str):
    initial = initial_schema()
    initial.create_all(fresh.database.engine, tables=[initial.tables[n] for n in ALL_TABLES])
    job_id = add_rows_0001(fresh.database.engine)
    with fresh.database.engine.begin() as conn:
        conn.execute(initial.tables["job_evaluations"].insert().values(
            job_id=job_id, constraint_set="doorbell", budgets=[{"name": "latency_p50", "max": 0.01}]))

    report = fresh.database.migrate()
    assert (report.before, report.after, report.adopted) == (None, schema.head_revision(), True)
    assert revision_of(fresh.database) == schema.head_revision()
    assert fresh.jobs.get_job(job_id).required_tags == ["usb"]
    assert fresh.artifact_records.get_artifact(SHA).size_bytes == 5 << 30
    assert fresh.regressions.evaluations([job_id])[job_id].constraint_set == "doorbell"
    # Later revisions moved the old rows along: they are the default project's.
    assert fresh.jobs.get_job(job_id).project == "default" and fresh.artifact_records.artifact_owned(SHA, "default")
    with fresh.database.engine.connect() as conn:
        assert schema.differences(conn) == []
    assert fresh.database.migrate().adopted is False  # stamped: the second start is an ordinary one


def test_adopting_an_older_create_all_database_adds_the_tables_it_lacked(fresh: Repositories, db_url: str):
    """create_all of the first versions made only the core tables; later ones added the rest."""
    initial = initial_schema()
    initial.create_all(fresh.database.engine, tables=[initial.tables[n] for n in CORE_TABLES])
    job_id = add_rows_0001(fresh.database.engine)
    assert fresh.database.migrate().adopted
    assert ALL_TABLES <= tables(db_url)
    assert fresh.jobs.get_job(job_id).state == "queued"
    with fresh.database.engine.connect() as conn:
        assert schema.differences(conn) == []


def test_a_create_all_database_that_differs_is_refused_and_left_alone(fresh: Repositories, db_url: str):
    changed = initial_schema()
    changed.tables["jobs"].append_column(sa.Column("hand_added", sa.Integer, nullable=True))
    changed.create_all(fresh.database.engine)
    with pytest.raises(SchemaError, match=r"(?s)no migration record.*remove_column jobs\.hand_added"):
        fresh.database.migrate()
    assert "alembic_version" not in tables(db_url)


def test_a_database_from_a_newer_version_is_refused_and_left_alone(fresh: Repositories, db_url: str):
    fresh.database.migrate()
    job_id = add_rows(fresh)
    with fresh.database.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0999'"))
    head = schema.head_revision()
    with pytest.raises(SchemaError, match=rf"revision '0999'.*newest revision is '{head}'.*nothing was changed"):
        fresh.database.migrate()
    assert revision_of(fresh.database) == "0999"
    assert fresh.jobs.get_job(job_id).settings == {"min_runs": 10}
    # The command line says the same and exits 1, without a traceback.
    done = subprocess.run([sys.executable, "-m", "hilfarm.cli", "controller", "migrate", "--db", db_url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "'0999'" in done.stderr and f"'{head}'" in done.stderr and "Traceback" not in done.stderr


def test_the_controller_migrates_at_start_and_refuses_a_newer_database(make_farm, db_url: str, tmp_path: Path):
    farm = make_farm(db_url=db_url)
    assert revision_of(farm.controller.parts.database) == schema.head_revision()
    with farm.controller.parts.database.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0999'"))
    from hilfarm.controller.server import Controller

    # Stopped first: a SQLite file takes one controller at a time.
    farm.close()
    farm.controller.stop(grace=0.5)
    late = Controller(db_url=db_url, data_dir=tmp_path / "late")
    try:
        with pytest.raises(SchemaError, match="'0999'"):
            late.start("127.0.0.1:0")
    finally:
        late.parts.database.close()


REPLICA = """
import sys, time, pathlib
from hilfarm.controller.database import Database
database = Database(sys.argv[1])
print("ready", flush=True)
gate = pathlib.Path(sys.argv[2])
while not gate.exists():
    time.sleep(0.002)
print(database.migrate().before, flush=True)
"""


@pytest.mark.postgres
def test_replicas_starting_at_once_migrate_once(postgres_url: str, tmp_path: Path):
    """Controller processes on one PostgreSQL database, released together: one migrates, the
    others wait on the schema lock and then find the schema current."""
    gate = tmp_path / "go"
    replicas = [subprocess.Popen([sys.executable, "-c", REPLICA, postgres_url, str(gate)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        for r in replicas:
            assert r.stdout.readline().strip() == "ready", r.stderr.read()
        gate.touch()
        outcomes = [r.communicate(timeout=60) for r in replicas]
    finally:
        for r in replicas:
            if r.poll() is None:
                r.kill()
    assert [r.returncode for r in replicas] == [0, 0, 0], [err for _, err in outcomes]
    head = schema.head_revision()
    assert sorted(out.split()[-1] for out, _ in outcomes) == sorted(["None", head, head])
    database = Database(postgres_url)
    try:
        with database.engine.connect() as conn:
            assert schema.differences(conn) == []
    finally:
        database.close()


def test_stores_in_one_process_migrating_at_once(db_url: str):
    databases = [Database(db_url) for _ in range(3)]
    reports: List[schema.MigrationReport] = []
    errors: List[BaseException] = []
    start = threading.Barrier(len(databases))

    def migrate(database: Database) -> None:
        start.wait()
        try:
            reports.append(database.migrate())
        except BaseException as exc:  # reported below with the others
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(d,)) for d in databases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert sorted(str(r.before) for r in reports) == sorted(["None"] + [schema.head_revision()] * 2)
    finally:
        for database in databases:
            database.close()


@pytest.mark.postgres
def test_a_migration_waits_while_another_replica_holds_the_schema_lock(postgres_url: str):
    holder = sa.create_engine(postgres_url)
    database = Database(postgres_url)
    try:
        with holder.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": schema._PG_LOCK_KEY})
            conn.commit()
            worker = threading.Thread(target=database.migrate)
            worker.start()
            time.sleep(1.0)
            assert worker.is_alive() and "jobs" not in tables(postgres_url)
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": schema._PG_LOCK_KEY})
            conn.commit()
            worker.join(30)
        assert not worker.is_alive()
        assert revision_of(database) == schema.head_revision()
        with database.engine.connect() as conn:  # the lock went back with the migration
            assert conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": schema._PG_LOCK_KEY}).scalar()
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": schema._PG_LOCK_KEY})
            conn.commit()
    finally:
        database.close()
        holder.dispose()


def test_a_new_revision_is_written_for_a_model_change_and_applies(db_url: str, tmp_path: Path, monkeypatch):
    """What `hilfarm controller migrate --new` does, on a copy of the migrations directory."""
    checkout = tmp_path / "checkout"
    shutil.copytree(schema.MIGRATIONS_DIR, checkout / "controller" / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (checkout / "pyproject.toml").write_text("")
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", checkout / "controller" / "migrations")
    monkeypatch.setattr(schema, "VERSIONS_DIR", checkout / "controller" / "migrations" / "versions")
    shipped = sorted(p.name for p in schema.VERSIONS_DIR.glob("*.py"))
    with pytest.raises(SchemaError, match="nothing to migrate"):
        schema.new_revision("no change")
    assert sorted(p.name for p in schema.VERSIONS_DIR.glob("*.py")) == shipped
    head = schema.head_revision()
    following = f"{int(head) + 1:04d}"

    changed = sa.MetaData()
    for table in schema.target_metadata().sorted_tables:
        table.to_metadata(changed)
    changed.tables["jobs"].append_column(sa.Column("note", sa.String(100), nullable=True))
    sa.Index("ix_agents_hostname", changed.tables["agents"].c.hostname)
    monkeypatch.setattr(schema, "target_metadata", lambda: changed)

    path = schema.new_revision("jobs get a note")
    assert path.name == f"{following}_jobs_get_a_note.py"
    text = path.read_text()
    assert "note" in text and "ix_agents_hostname" in text and "hilfarm" not in text.split('"""', 2)[2]

    database = Database(db_url)
    try:
        assert database.migrate().after == following
        with database.engine.connect() as conn:
            assert schema.differences(conn) == []
            command.downgrade(schema.alembic_config(connection=conn), head)
            conn.commit()
            assert "note" not in {c["name"] for c in sa.inspect(conn).get_columns("jobs")}
    finally:
        database.close()


def test_upgrade_sql_is_written_without_a_database():
    sql = schema.upgrade_sql("postgresql+psycopg://nobody@unreachable.invalid/x")
    assert "CREATE TABLE jobs" in sql and "JSONB" in sql and "CREATE INDEX ix_jobs_state_profile_created" in sql
    assert "INSERT INTO alembic_version" in sql
    assert "CREATE TABLE" not in schema.upgrade_sql("sqlite://", from_revision=schema.head_revision())


def test_revision_0003_fills_what_leases_and_metrics_read_and_ends_orphaned_suite_runs(fresh: Repositories):
    """A database at 0001 with jobs and a suite run that a thread of an old controller carried."""
    with fresh.database.engine.connect() as conn:
        command.upgrade(schema.alembic_config(connection=conn), "0001")
        conn.commit()
    t = initial_schema().tables
    with fresh.database.engine.begin() as conn:
        conn.execute(t["artifacts"].insert().values(sha256=SHA, size_bytes=10, format="onnx", filename="n.onnx",
                                                    created_at=T0))
        conn.execute(t["runs"].insert().values(id="r", created_at=T0))
        # executemany: every row names the same columns.
        common = dict(run_id="r", model_sha256=SHA, model_name="net.onnx", device_profile="rpi5",
                      required_tags=[], attempt=1, max_attempts=3, finished_at=None, result=None)
        conn.execute(t["jobs"].insert(), [
            dict(common, id="queued", model_format="onnx", state="queued", created_at=T0,
                 settings={"execution_provider": "CUDAExecutionProvider"}),
            dict(common, id="null", model_format="tflite", state="queued", created_at=T0, settings={"runtime": "null"}),
            dict(common, id="old", model_format="onnx", state="succeeded", created_at=T0, finished_at=T0 + 1,
                 settings={}, result={"latency": {"p50_seconds": 0.1}}),
            dict(common, id="new", model_format="onnx", state="succeeded", created_at=T0, finished_at=T0 + 2,
                 settings={}, result={"latency": {"p50_seconds": 0.2}}),
        ])
        conn.execute(t["suite_runs"].insert().values(id="s1", suite="nightly", trigger="nightly", baseline="main",
                                                     state="running", outcome="", started_at=T0, message="",
                                                     accept=False, accepted=False, spec={}))
    assert fresh.database.migrate().before == "0001"
    queued, null = fresh.jobs.get_job("queued"), fresh.jobs.get_job("null")
    assert (queued.required_runtime, queued.required_provider) == ("onnxruntime", "CUDAExecutionProvider")
    assert (null.required_runtime, null.required_provider) == ("null", "")
    with fresh.database.engine.connect() as conn:
        latest = conn.execute(sa.text("SELECT model_name, device_profile, runtime, job_id FROM latest_results")).all()
        assert [tuple(r) for r in latest] == [("net.onnx", "rpi5", "onnxruntime", "new")]
    run, _ = fresh.regressions.get_suite_run("s1")
    assert (run.state, run.outcome, run.stage) == ("finished", "error", "done")
    assert "start the suite again" in run.message


def test_revision_0004_writes_the_zeros_old_results_left_out_and_keeps_unknown_figures_absent(fresh: Repositories):
    """Before 0004 a stored result dropped every figure whose value was zero; a figure named in
    ``unavailable`` (by itself or by its section) was not measured."""
    with fresh.database.engine.connect() as conn:
        command.upgrade(schema.alembic_config(connection=conn), "0003")
        conn.commit()
    t = initial_schema().tables
    old = {
        "latency": {"p50_seconds": 0.01, "samples_ns": [10_000_000]},   # load_seconds etc. were 0
        "memory": {"peak_bytes": 1000},                                 # baseline_rss_bytes: not measured
        "thermal": {"throttled": True},                                 # throttled_fraction was 0
        "unavailable": [{"field": "memory.baseline_rss_bytes", "reason": "no /proc"},
                        {"field": "power", "reason": "no power sensor"}],
    }
    with fresh.database.engine.begin() as conn:
        conn.execute(t["artifacts"].insert().values(sha256=SHA, size_bytes=10, format="onnx", filename="n.onnx",
                                                    created_at=T0))
        conn.execute(t["runs"].insert().values(id="r", created_at=T0))
        common = dict(run_id="r", model_sha256=SHA, model_name="net.onnx", model_format="onnx", device_profile="rpi5",
                      required_tags=[], attempt=1, max_attempts=3, created_at=T0, settings={})
        conn.execute(t["jobs"].insert(), [
            dict(common, id="old", state="succeeded", finished_at=T0 + 1, result=old),
            dict(common, id="queued", state="queued", finished_at=None, result=None),
        ])
    assert fresh.database.migrate().before == "0003"
    result = fresh.jobs.get_job("old").result
    latency, memory, thermal = result["latency"], result["memory"], result["thermal"]
    assert latency["p50_seconds"] == 0.01 and latency["samples_ns"] == [10_000_000]
    assert latency["load_seconds"] == 0 and latency["drift_ratio"] == 0 and latency["cv"] == 0
    assert memory["peak_bytes"] == 1000 and memory["model_delta_bytes"] == 0
    assert "baseline_rss_bytes" not in memory                     # named unavailable: stays unknown
    assert "power" not in result                                  # a section never reported is not invented
    assert thermal["throttled"] is True and thermal["throttled_fraction"] == 0 and thermal["cooldown_seconds"] == 0
    assert fresh.jobs.get_job("queued").result is None


def test_a_submissions_queue_count_reads_only_the_projects_queued_jobs(tmp_path: Path):
    """The queue-room check runs on every submission: its count must use the (project, state)
    index, not read every job the project ever ran (SQLite's plan for the statement it runs)."""
    store = open_repositories(Database(f"sqlite:///{tmp_path / 'plan.db'}"))
    try:
        store.database.migrate()
        statements: List[tuple] = []

        def seen(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            statements.append((statement, parameters))

        sa.event.listen(store.database.engine, "before_cursor_execute", seen)
        assert store.jobs.count_queued("vision") == 0
        sa.event.remove(store.database.engine, "before_cursor_execute", seen)
        ((statement, parameters),) = [(s, p) for s, p in statements if "count" in s.lower()]
        with store.database.engine.connect() as conn:
            plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
        assert "ix_jobs_project_state" in plan, plan
    finally:
        store.database.close()


def test_finding_the_job_an_agent_holds_reads_only_its_active_jobs(tmp_path: Path):
    """A lease, a heartbeat batch, a placement note and a download check each ask which job an
    agent holds. With an index on agent_id alone that read went through every job the agent had
    ever run, more each day a device serves; the (agent_id, state) index finds the held job
    directly (SQLite's plan for every statement these run that searches jobs by agent)."""
    store = open_repositories(Database(f"sqlite:///{tmp_path / 'plan.db'}"))
    try:
        store.database.migrate()
        capabilities = {"runtimes": [{"name": "onnxruntime", "execution_providers": ["CPUExecutionProvider"]}]}
        store.agents.register_agent("pi-1", profile="rpi5", tags=[], capabilities=capabilities, hostname="pi-1",
                                    version="test", now=T0)
        statements: List[tuple] = []

        def seen(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            statements.append((statement, parameters))

        sa.event.listen(store.database.engine, "before_cursor_execute", seen)
        store.jobs.lease_next("pi-1", now=T0, lease_seconds=60)
        store.agents.placement_candidates("rpi5", 10)
        store.agents.heartbeat("pi-1", busy=False, now=T0, lease_seconds=60)
        store.jobs.agent_may_download("pi-1", SHA)
        sa.event.remove(store.database.engine, "before_cursor_execute", seen)
        by_agent = [(s, p) for s, p in statements if "jobs.agent_id" in s and "FROM jobs" in s]
        assert len(by_agent) >= 4, statements
        with store.database.engine.connect() as conn:
            for statement, parameters in by_agent:
                plan = [str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]
                on_jobs = [line for line in plan if " jobs " in f" {line} " and "agent_id" in line]
                assert on_jobs, (statement, plan)
                assert all("ix_jobs_agent_state (agent_id=? AND state=?)" in line for line in on_jobs), (statement, plan)
    finally:
        store.database.close()
