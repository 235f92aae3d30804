"""The controller's database schema: alembic migrations, and the checks before any of them runs.

The revisions live in ``migrations/versions/`` beside this module and ship as package data
(``controller/`` stays flat: the migration directory is data, not a subpackage), so alembic is
configured here in code rather than from an ``alembic.ini``. ``migrations/env.py`` only calls
:func:`run_migrations`.

:func:`migrate` is what a controller runs at start, and it refuses rather than guesses:

- a database migrated by a newer hilfarm (a revision this code does not know) is left alone;
- a database made before migrations existed (tables from ``create_all``, no ``alembic_version``)
  is adopted only when its tables are those of the initial revision: tables it lacks are
  created (old code added tables that way), then it is stamped; any other difference stops;
- on PostgreSQL an advisory lock serialises replicas that start at once, so one migrates and
  the others then find the schema current.

Revisions never import the models: a revision is the schema as it was when written, while the
models move on.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlmodel import SQLModel

from . import models  # noqa: F401 - importing it declares every table

log = logging.getLogger("hilfarm.controller")

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
# The revision whose schema equals what create_all made before migrations existed.
INITIAL_REVISION = "0001"
# pg_advisory_lock key for "the schema is being migrated": one constant per database, so it
# must not collide with another application's lock in a shared database ("hilfarm" in ASCII).
_PG_LOCK_KEY = 0x68696C6661726D
# alembic's ``context`` and ``op`` are process-wide proxies: two threads running migrations at
# once (two stores in one process) would swap each other's configuration mid-run.
_IN_PROCESS = threading.RLock()


class SchemaError(RuntimeError):
    """The database's schema is not one this controller can use or migrate. Whose fault it is
    (the operator's deployment: versions, or a database changed by hand) is in the message."""


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` did: revision before (None: no schema) and after."""

    before: Optional[str]
    after: str
    adopted: bool = False  # a database from before migrations was stamped

    @property
    def changed(self) -> bool:
        return self.adopted or self.before != self.after


def target_metadata() -> sa.MetaData:
    """Every table the controller's models declare (models.py holds them all)."""
    return SQLModel.metadata


def alembic_config(url: Optional[str] = None, *, connection: Optional[sa.Connection] = None,
                   output: Optional[io.StringIO] = None) -> Config:
    """An alembic ``Config`` for the installed migration directory; ``connection`` is used
    instead of opening one from ``url``; offline SQL goes to ``output``."""
    config = Config(output_buffer=output, stdout=output or sys.stdout)
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # %% because the value goes through ConfigParser interpolation.
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        config.set_main_option("sqlalchemy.url", _url_text(url).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    if head is None:  # pragma: no cover - the package ships its revisions
        raise SchemaError(f"no migration revisions found in {VERSIONS_DIR}: this hilfarm install is incomplete")
    return head


def current_revision(connection: sa.Connection) -> Optional[str]:
    """The revision the database is stamped with; None when it has no ``alembic_version``."""
    return MigrationContext.configure(connection).get_current_revision()


def differences(connection: sa.Connection, metadata: Optional[sa.MetaData] = None, *,
                ignore_foreign_tables: bool = False) -> List[Any]:
    """alembic's autogenerate comparison of the database with ``metadata`` (default: the
    models). Empty when they match. ``ignore_foreign_tables`` leaves out tables the metadata
    does not name (another application's, in a shared database)."""
    metadata = target_metadata() if metadata is None else metadata
    opts = dict(_comparison_options())
    if ignore_foreign_tables:
        names = set(metadata.tables)

        def include_object(obj, name, type_, reflected, compare_to):
            return not (type_ == "table" and reflected and name not in names)

        opts["include_object"] = include_object
    return compare_metadata(MigrationContext.configure(connection, opts=opts), metadata)


def describe(diffs: Sequence[Any]) -> str:
    """One line per difference, in words an operator can check against the database."""
    return "; ".join(_describe(d) for d in diffs)


def migrate(engine: sa.Engine) -> MigrationReport:
    """Bring the database to the newest revision this code knows. Safe to run from several
    controllers at once on PostgreSQL; a no-op when the schema is current."""
    script = script_directory()
    head = script.get_current_head()
    with engine.connect() as conn:
        with _schema_lock(conn), _IN_PROCESS:
            report = _migrate_locked(conn, script, head)
    if report.changed:
        log.info("database schema %s -> %s%s", report.before or "(empty)", report.after,
                 " (adopted a database from before migrations)" if report.adopted else "")
    return report


def upgrade_sql(url: str, *, from_revision: Optional[str] = None, to_revision: str = "head") -> str:
    """The SQL that upgrades a database at ``from_revision`` (default: empty) to ``to_revision``,
    for the dialect of ``url``, without connecting to it."""
    output = io.StringIO()
    spec = f"{from_revision}:{to_revision}" if from_revision else to_revision
    try:
        with _IN_PROCESS:
            command.upgrade(alembic_config(url, output=output), spec, sql=True)
    except CommandError as exc:
        raise SchemaError(f"cannot write the upgrade SQL {spec}: {exc}") from None
    return output.getvalue()


def new_revision(message: str) -> Path:
    """Write a revision for what the models changed since the newest revision: autogenerate
    against a scratch SQLite database migrated to head. Returns the file written. Only in a
    source checkout: an installed package's revisions are not to be edited."""
    if not (MIGRATIONS_DIR.parent.parent / "pyproject.toml").is_file():
        raise SchemaError(f"{VERSIONS_DIR} is not in a source checkout (an installed package); "
                          "add revisions in a clone of the repository, installed with pip install -e")
    numbers = [int(r.revision) for r in script_directory().walk_revisions() if r.revision.isdigit()]
    rev_id = f"{max(numbers, default=0) + 1:04d}"
    with tempfile.TemporaryDirectory(prefix="hilfarm-revision-") as tmp:
        engine = sa.create_engine(f"sqlite:///{Path(tmp) / 'head.db'}")
        try:
            migrate(engine)
            with engine.connect() as conn:
                if not differences(conn):
                    raise SchemaError("the models match the newest revision "
                                      f"({head_revision()}): there is nothing to migrate")
                with _IN_PROCESS:
                    script = command.revision(alembic_config(connection=conn), message,
                                              autogenerate=True, rev_id=rev_id)
        finally:
            engine.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


def run_migrations(context: Any) -> None:
    """The body of ``migrations/env.py``: ``context`` is ``alembic.context``."""
    config = context.config
    options = dict(_comparison_options(), target_metadata=target_metadata(),
                   # SQLite cannot ALTER most things; batch mode rebuilds the table there.
                   render_as_batch=True, render_item=_render_item)
    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                          dialect_opts={"paramstyle": "named"}, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            context.configure(connection=conn, **options)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


# ---------------------------------------------------------------- internals


def _comparison_options() -> dict:
    return {"compare_type": True, "compare_server_default": _server_defaults_differ}


def _server_defaults_differ(context: Any, inspected_column: Any, metadata_column: Any, inspected_default: Optional[str],
                            metadata_default: Any, rendered_metadata_default: Optional[str]) -> Optional[bool]:
    """Compare string-literal defaults here (alembic's SQLite comparison takes ``''`` for a
    difference from ``''``); anything else is left to alembic (None)."""
    arg = getattr(metadata_column.server_default, "arg", None)
    model = arg if isinstance(arg, str) else None  # a plain str default is the literal's text
    database = _string_literal(inspected_default)
    if database is None or model is None:
        return None
    return database != model


def _string_literal(sql: Optional[str]) -> Optional[str]:
    text = (sql or "").strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    # PostgreSQL reflects a literal with its cast: ''::text
    match = re.fullmatch(r"'((?:[^']|'')*)'(?:::[\w ]+)?", text)
    return match.group(1).replace("''", "'") if match else None


def _render_item(type_: str, obj: Any, autogen_context: Any) -> Any:
    """Write generic SQLAlchemy types into revisions, never the models' own classes, which a
    later version may change or remove."""
    if type_ != "type":
        return False
    from sqlmodel.sql.sqltypes import AutoString

    if isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    if isinstance(obj, sa.types.TypeDecorator) and isinstance(obj.impl, sa.JSON) or (
            isinstance(obj, sa.JSON) and "postgresql" in getattr(obj, "_variant_mapping", {})):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    return False


@contextlib.contextmanager
def _schema_lock(conn: sa.Connection) -> Iterator[None]:
    if conn.dialect.name != "postgresql":
        yield
        return
    key = {"key": _PG_LOCK_KEY}
    if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), key).scalar():
        log.info("waiting for another controller to finish migrating the database schema")
        conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), key)
    conn.commit()
    try:
        yield
    finally:
        try:
            conn.rollback()
            conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), key)
            conn.commit()
        except sa.exc.DBAPIError:
            # A session lock lives as long as its connection: never pool one that may hold it.
            conn.invalidate()


def _migrate_locked(conn: sa.Connection, script: ScriptDirectory, head: str) -> MigrationReport:
    before = current_revision(conn)
    if before is not None:
        try:
            script.get_revision(before)
        except CommandError:
            raise SchemaError(
                f"the database is at schema revision {before!r}, which this hilfarm does not know "
                f"(its newest revision is {head!r}): a newer hilfarm has migrated it. Run that "
                "newer version, or restore the database from before its upgrade; nothing was changed"
            ) from None
    adopted = False
    if before is None:
        initial = _initial_schema(script)
        if set(sa.inspect(conn).get_table_names()) & set(initial.tables):
            _adopt(conn, initial)
            adopted = True
    conn.commit()
    if current_revision(conn) != head:
        command.upgrade(alembic_config(connection=conn), "head")
    conn.commit()
    return MigrationReport(before=before, after=head, adopted=adopted)


def _initial_schema(script: ScriptDirectory) -> sa.MetaData:
    return script.get_revision(INITIAL_REVISION).module.schema()


def _adopt(conn: sa.Connection, initial: sa.MetaData) -> None:
    """Stamp a database made by create_all before migrations, if it is what that code made."""
    diffs = differences(conn, initial, ignore_foreign_tables=True)
    missing = [d[1] for d in diffs if isinstance(d, tuple) and d[0] == "add_table"]
    missing_names = {t.name for t in missing}
    other = [d for d in diffs if not (isinstance(d, tuple) and (
        d[0] == "add_table" or (d[0] == "add_index" and d[1].table.name in missing_names)))]
    if other:
        raise SchemaError(
            "the database has hilfarm tables but no migration record (alembic_version), and its "
            f"tables are not those of the first schema revision {INITIAL_REVISION!r}: {describe(other)}. "
            "It was changed by hand or by an unreleased hilfarm; nothing was changed. Make it "
            "match, or migrate its rows into a new database")
    if missing:
        # By name: the diff's tables are alembic's copies, without their indexes.
        initial.create_all(conn, tables=[initial.tables[name] for name in sorted(missing_names)])
    MigrationContext.configure(conn).stamp(script_directory(), INITIAL_REVISION)
    log.info("database from before schema migrations adopted at revision %s%s", INITIAL_REVISION,
             f" (created its missing tables {sorted(missing_names)})" if missing else "")


def _describe(diff: Any) -> str:
    if isinstance(diff, list):
        return "; ".join(_describe(d) for d in diff)
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        return f"{kind} {diff[1].name}"
    if kind in ("add_column", "remove_column"):
        return f"{kind} {diff[2]}.{diff[3].name}"
    if kind in ("add_index", "remove_index"):
        return f"{kind} {diff[1].name} on {diff[1].table.name}"
    if kind.startswith("modify_"):
        _, _schema, table, column, _existing, in_database, in_models = diff
        return f"{kind} {table}.{column} (database: {_shown(in_database)}, expected: {_shown(in_models)})"
    return " ".join(str(part) for part in diff)


def _shown(value: Any) -> str:
    arg = getattr(value, "arg", value)  # a server default: its SQL
    return repr(getattr(arg, "text", arg))


def _url_text(url: Any) -> str:
    if isinstance(url, sa.URL):
        return url.render_as_string(hide_password=False)
    return str(url)
