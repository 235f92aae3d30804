"""Shared fixture: a PostgreSQL database for the tests marked ``postgres``.

The server is named by HILFARM_TEST_POSTGRES_URL (default: trust auth as user postgres on
127.0.0.1:5432, database ``test``). Each test session creates its own database there and drops
it at the end; each test gets a fresh schema in it. When the server is unreachable the tests
skip with the reason, except in CI (CI=true), where they fail: CI must not pass silently
without the backend it claims to test.
"""
from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

# As hilfarm/__init__.py does, before any test module imports grpc: the tests fork (subprocess,
# pexpect) while gRPC channels of the test process close, and gRPC's fork handlers can then hang.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """URL of a database created for this test session (dropped afterwards)."""
    try:
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url
    except ImportError as exc:  # pragma: no cover - the dev install has them
        _unavailable(f"sqlalchemy is not installed ({exc})")
    base = make_url(os.environ.get("HILFARM_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    name = f"hilfarm_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any failure to reach or use the server
        _unavailable(f"{base.render_as_string(hide_password=True)}: {type(exc).__name__}: {exc}".splitlines()[0])
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_database_url: str) -> Iterator[str]:
    """URL whose connections use a schema of their own, dropped after the test."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(postgres_database_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
