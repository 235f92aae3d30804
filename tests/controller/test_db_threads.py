"""How many threads do a controller's database work when ``--db-threads`` is not given: none for
SQLite, whose work runs on the event loop (it is CPU alone, and a thread handed it back and
forth), one for a PostgreSQL server on this host (round trips too short to be worth overlapping,
and each extra thread waits for the interpreter lock), four for a server elsewhere, whose round
trips overlap (controller/app.py, benchmarks/SCALE.md)."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy.engine import make_url

from hilfarm.controller.app import ControllerConfig, build_controller, default_db_workers
from hilfarm.v1 import farm_pb2 as pb


@pytest.mark.parametrize("url, threads", [
    ("sqlite:////var/lib/hilfarm/hilfarm.db", 0),
    ("postgresql+psycopg://farm@127.0.0.1:5432/farm", 1),
    ("postgresql+psycopg://farm@127.0.0.2/farm", 1),
    ("postgresql+psycopg://farm@localhost/farm", 1),
    ("postgresql+psycopg://farm@[::1]:5432/farm", 1),
    ("postgresql+psycopg:///farm", 1),  # libpq's default: the Unix socket
    ("postgresql+psycopg://farm@/farm?host=/var/run/postgresql", 1),
    ("postgresql+psycopg://farm@db.internal:5432/farm", 4),  # a name is not looked up
    ("postgresql+psycopg://farm@10.0.0.5/farm", 4),
    ("postgresql+psycopg://farm@/farm?host=10.0.0.5", 4),
    ("postgresql+psycopg://farm@127.0.0.1/farm?host=10.0.0.5", 4),  # one of them remote
])
def test_default_database_threads_follow_where_the_database_is(url: str, threads: int) -> None:
    assert default_db_workers(make_url(url)) == threads


def test_a_controller_on_a_local_postgresql_uses_one_thread_unless_told(postgres_url: str, tmp_path) -> None:
    for given, expected in ((None, 1), (3, 3)):
        parts = build_controller(ControllerConfig(db_url=postgres_url, data_dir=tmp_path, db_workers=given))
        try:
            assert parts.db_workers == expected
        finally:
            parts.database.close()


@pytest.mark.parametrize("given, runs_on", [(None, "hilfarm-grpc"), (0, "hilfarm-grpc"), (1, "hilfarm-db")])
def test_a_sqlite_controller_runs_its_database_work_where_it_was_told(make_farm, monkeypatch, given, runs_on) -> None:
    farm = make_farm() if given is None else make_farm(db_workers=given)
    scheduler = farm.controller.parts.scheduler
    real_devices, threads = scheduler.devices, []
    monkeypatch.setattr(scheduler, "devices", lambda: threads.append(threading.current_thread().name) or real_devices())
    agent = farm.agent("pi-1")
    agent.register()
    assert [d.agent_id for d in farm.farm.ListDevices(pb.ListDevicesRequest(), timeout=10).devices] == ["pi-1"]
    assert len(threads) == 1 and threads[0].startswith(runs_on), threads
    # Heartbeats are written where the rest is, and answered.
    assert agent.heartbeat() is True
