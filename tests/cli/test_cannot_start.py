"""A controller given something it cannot use stops with one line that names it, exit 2, and
leaves what is stored alone: a database URL it cannot read, a dialect or driver it does not have,
a database it cannot reach or open, an artifact directory or SQLite file it cannot create, a
remote-write URL that is none. Each of these used to end in a Python traceback. Run as a person
runs them: the installed command in a child process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from sqlalchemy.engine import make_url

HILFARM = [sys.executable, "-m", "hilfarm.cli"]


def hilfarm(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HILFARM_")}
    return subprocess.run(HILFARM + list(args), capture_output=True, text=True, timeout=90, env=env)


def refused(args: List[str], says: str) -> str:
    proc = hilfarm(*args)
    assert proc.returncode == 2, (args, proc.stderr)
    assert "Traceback" not in proc.stderr, (args, proc.stderr)
    assert says in proc.stderr, (args, proc.stderr)
    return proc.stderr


def serve(tmp_path: Path, *args: str) -> List[str]:
    return ["controller", "serve", "--bind", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"), *args]


def test_a_database_url_that_cannot_be_used_is_named(tmp_path):
    refused(serve(tmp_path, "--db", "://nowhere"), "the database URL (--db / HILFARM_DB) cannot be read")
    refused(serve(tmp_path, "--db", "oracle2://x@host/db"), "the database oracle2://x@host/db cannot be used: "
                                                             "Can't load plugin: sqlalchemy.dialects:oracle2")
    refused(serve(tmp_path, "--db", "postgresql+nosuchdriver://x@host/db"), "cannot be used")
    # A server that is not there: its address and the driver's reason, never the password.
    said = refused(serve(tmp_path, "--db", "postgresql+psycopg://farm:hunter2@127.0.0.1:1/farm"),
                   "cannot open the database postgresql+psycopg://farm:***@127.0.0.1:1/farm: ")
    assert "hunter2" not in said and "Connection refused" in said
    refused(["controller", "migrate", "--db", "postgresql+psycopg://farm@127.0.0.1:1/farm"],
            "cannot open the database postgresql+psycopg://farm@127.0.0.1:1/farm")
    refused(["up", "--bind", "127.0.0.1:0", "--no-agent", "--data-dir", str(tmp_path / "up"), "--db", "://nowhere"],
            "the database URL (--db / HILFARM_DB) cannot be read")


def test_a_sqlite_file_that_is_no_database_is_refused_and_left_as_it_was(tmp_path):
    notes = tmp_path / "notes.db"
    notes.write_text("these are someone's notes, not a database\n" * 100)
    before = notes.read_bytes()
    refused(serve(tmp_path, "--db", f"sqlite:///{notes}"), f"cannot open the database sqlite:///{notes}: "
                                                           "file is not a database")
    assert notes.read_bytes() == before
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    refused(serve(tmp_path, "--db", f"sqlite:///{blocker}/farm.db"),
            f"the SQLite database {blocker}/farm.db cannot be created: ")


@pytest.mark.postgres
def test_a_postgresql_database_that_does_not_exist_is_named(tmp_path, postgres_database_url):
    missing = make_url(postgres_database_url).set(database="hilfarm_no_such_database")
    shown = missing.render_as_string(hide_password=True)
    refused(serve(tmp_path, "--db", missing.render_as_string(hide_password=False)),
            f'cannot open the database {shown}: ')


def test_an_artifact_dir_or_remote_write_url_that_cannot_be_used_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    first, second = tmp_path / "first", tmp_path / "second"
    refused(serve(first, "--artifacts-dir", str(blocker / "artifacts")),
            f"the artifact directory {blocker / 'artifacts'} cannot be used: ")
    assert list(first.rglob("hilfarm.db"))  # the artifact dir is prepared after the schema
    refused(serve(second, "--remote-write-url", "prometheus:9090/api/v1/write"),
            "remote-write URL 'prometheus:9090/api/v1/write' must start with http:// or https:// (--remote-write-url)")
    assert not list(second.rglob("hilfarm.db"))  # refused before the database was opened


def test_a_profile_or_data_dir_that_cannot_be_used_is_a_usage_error(tmp_path):
    """`agent run` and `up` read --profile as the agent will, before dialling or starting
    anything; a data dir that cannot be created is named, from --data-dir or HILFARM_DATA_DIR."""
    not_yaml = tmp_path / "unit.yaml"
    not_yaml.write_text("runtimes: [onnx\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    agent = ["--controller", "127.0.0.1:1", "agent", "run", "--allow-root"]
    refused(agent + ["--profile", "raspbery-pi-5"],
            "Invalid value for '--profile': no device profile named 'raspbery-pi-5'; known profiles: ")
    refused(agent + ["--profile", str(not_yaml)], f"Invalid value for '--profile': {not_yaml}: not valid YAML")
    refused(agent + ["--profile", "simulated", "--data-dir", str(blocker / "agent")],
            f"Invalid value for --data-dir / HILFARM_DATA_DIR: cannot use {blocker / 'agent'}: ")
    refused(["up", "--bind", "127.0.0.1:0", "--data-dir", str(tmp_path / "up"), "--profile", "raspbery-pi-5"],
            "no device profile named 'raspbery-pi-5'")
    assert not (tmp_path / "up").exists()  # refused before the farm made anything
    refused(["up", "--bind", "127.0.0.1:0", "--data-dir", str(blocker / "farm")], f"cannot use {blocker / 'farm'}: ")
    refused(["controller", "migrate", "--data-dir", str(blocker / "controller")],
            f"cannot use {blocker / 'controller'}: ")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HILFARM_")}
    proc = subprocess.run(HILFARM + ["demo"], capture_output=True, text=True, timeout=90,
                          env=dict(env, HILFARM_DATA_DIR=str(blocker / "farm")))
    assert proc.returncode == 2 and f"cannot use {blocker / 'farm'}: " in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
