"""`hilfarm controller serve | migrate`: run the central controller, upgrade its database."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import click

from hilfarm.cli.common import DATA_DIR_HELP, cannot_start, prepared_data_dir
from hilfarm.cli.job_settings import parse_size
from hilfarm.cli.security import serve_security_options
from hilfarm.paths import default_data_dir

SERVE_GRACE_SECONDS = 5.0  # what running calls get to finish at SIGTERM (serve_forever's default)


@click.group()
def controller() -> None:
    """Run the central controller."""


@controller.command("serve")
@click.option("--bind", default="127.0.0.1:50051", show_default=True,
              help="Address to listen on. Only this machine can reach the default; to serve agents and users "
                   "elsewhere bind to their network (e.g. 0.0.0.0:50051) and give the controller a token.")
@click.option("--db", "db_url", envvar="HILFARM_DB", default=None,
              help="SQLAlchemy URL (env HILFARM_DB); default SQLite in the data dir. "
                   "PostgreSQL: postgresql+psycopg://user@host/db")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Artifacts and the SQLite database [{DATA_DIR_HELP}, /controller].")
@click.option("--max-artifact-bytes", default="4GiB", show_default=True, help="Largest artifact accepted.")
@click.option("--lease-seconds", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="How long a job stays with an agent that stopped heartbeating.")
@click.option("--restart-grace-seconds", type=click.FloatRange(min=0), default=40.0, show_default=True,
              help="After the start, every lease is kept at least this long, so agents that could not "
                   "reach the controller report their work (at least the agents' longest backoff, 30 s).")
@click.option("--artifacts-dir", envvar="HILFARM_ARTIFACTS_DIR", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="The artifact store (env HILFARM_ARTIFACTS_DIR) [data dir/artifacts]; "
                                 "every replica of a farm must use the same one (a shared volume).")
@click.option("--metrics-bind", default=None, metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 0.0.0.0:9464).")
@click.option("--remote-write-url", envvar="HILFARM_REMOTE_WRITE_URL", default=None, metavar="URL",
              help="Also send every result, stamped with its own time, to this Prometheus remote-write endpoint.")
@click.option("--db-threads", type=click.IntRange(min=0, max=64), default=None,
              help="Threads for database work; 0 runs it on the event loop [0 on SQLite, whose work is CPU alone; "
                   "1 for a PostgreSQL server on this host; 4 for one elsewhere].")
@click.option("--event-loop", type=click.Choice(["auto", "uvloop", "asyncio"]), default="auto", show_default=True,
              help="The gRPC server's event loop: auto is uvloop when installed (the controller extra installs it "
                   "on Linux and macOS), else asyncio's own.")
@click.option("--nightly", "nightly_suites", multiple=True, metavar="SUITE.yaml",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run this suite on the cron schedule in its 'schedule:' field (repeatable).")
@click.option("--processes", type=int, default=1, show_default=True,
              help="Processes serving the port (PostgreSQL only): one serves at most a core's worth of calls; "
                   "the main one also runs the background work and /metrics, which adds up all of them.")
@serve_security_options
@click.pass_context
def controller_serve(ctx, bind, db_url, data_dir, max_artifact_bytes, lease_seconds, restart_grace_seconds,
                     artifacts_dir, metrics_bind, remote_write_url, db_threads, event_loop, nightly_suites, processes,
                     **security):
    """Serve the user and agent APIs until SIGTERM / Ctrl-C."""
    from hilfarm.controller.processes import processes_problem, shared_metrics
    from hilfarm.controller.server import Controller, serve_forever

    from hilfarm.controller.errors import CannotStart
    from hilfarm.suite_files import SuiteError

    problem = processes_problem(processes, db_url)
    if problem:
        raise click.BadParameter(problem, param_hint="--processes")
    with contextlib.ExitStack() as cleanup:
        # Only /metrics reads the counters and histograms the processes share.
        metrics_dir = cleanup.enter_context(shared_metrics()) if processes > 1 and metrics_bind else None
        try:
            server = Controller(
                db_url=db_url,
                data_dir=prepared_data_dir(data_dir or default_data_dir() / "controller"),
                token=ctx.obj["token"],
                artifacts_dir=artifacts_dir,
                max_artifact_bytes=parse_size(max_artifact_bytes),
                lease_seconds=lease_seconds,
                restart_grace=restart_grace_seconds,
                metrics_bind=metrics_bind,
                remote_write_url=remote_write_url,
                db_workers=db_threads,
                event_loop=event_loop,
                nightly=list(nightly_suites),
                metrics_dir=metrics_dir,
                **security,
            )
        except SuiteError as error:  # only the --nightly suite files raise it
            raise click.BadParameter(str(error), param_hint="--nightly") from None
        except CannotStart as error:  # a database or remote-write URL that cannot be used; nothing is open
            raise cannot_start(error) from None
        from hilfarm.controller.schema import SchemaError
        from hilfarm.transport import TransportError, with_port

        try:
            port = server.start(bind)
        except SchemaError as error:
            raise click.ClickException(f"the database cannot be used: {error}") from None
        except CannotStart as error:
            server.parts.database.close()
            raise cannot_start(error) from None
        except TransportError as error:
            raise click.ClickException(str(error)) from None
        address = with_port(bind, port)
        click.echo(f"hilfarm controller listening on {address}, data in {server.data_dir}", err=True)
        if server.metrics_port is not None:
            scheme = "https" if server.config.tls is not None else "http"
            click.echo(f"metrics on {scheme}://{with_port(metrics_bind, server.metrics_port)}/metrics", err=True)
        click.echo(f"clients and agents: export HILFARM_CONTROLLER={address}  (or hilfarm --controller {address} ...)",
                   err=True)
        if processes == 1:
            serve_forever(server)
            return
        from hilfarm.controller.processes import ServingProcesses, settings_for_serving

        serving = ServingProcesses(processes - 1, _serving_process_command(),
                                   settings_for_serving(server.config, event_loop=server.event_loop, address=address))
        try:
            serving.start()
        except CannotStart as error:
            server.stop()
            raise cannot_start(error) from None
        click.echo(f"serving from {processes} processes (pids {os.getpid()}, {', '.join(map(str, serving.pids))})",
                   err=True)
        try:
            serve_forever(server, look_after=serving.look_after, on_stop=serving.terminate)
        finally:
            serving.stop(grace=SERVE_GRACE_SECONDS)


def _serving_process_command():
    """How the main process starts a serving process: this hilfarm, as verbose as it is."""
    level = logging.getLogger().getEffectiveLevel()
    verbosity = ["-vv"] if level <= logging.DEBUG else ["-v"] if level <= logging.INFO else []
    return [sys.executable, "-m", "hilfarm.cli", *verbosity, "controller", "serve-process"]


@controller.command("serve-process", hidden=True)
def controller_serve_process():
    """Serve calls beside a controller's main process (controller serve --processes), with the
    settings it writes to this process's standard input."""
    from hilfarm.controller.errors import CannotStart
    from hilfarm.controller.metrics import share_across_processes
    from hilfarm.controller.processes import READY, ServingSettings
    from hilfarm.controller.schema import SchemaError
    from hilfarm.controller.server import Controller, serve_forever
    from hilfarm.transport import TransportError

    settings = ServingSettings.read(sys.stdin.read())
    if settings.controller.get("metrics_dir") is not None:
        share_across_processes(settings.controller["metrics_dir"])
    try:
        server = Controller(**settings.controller)
        server.start(settings.bind)
    except (SchemaError, CannotStart, TransportError) as error:
        raise click.ClickException(f"a serving process of the controller cannot start: {error}") from None
    click.echo(READY)
    sys.stdout.flush()
    serve_forever(server, look_after=settings.main_process_alive, grace=SERVE_GRACE_SECONDS)


@controller.command("migrate")
@click.option("--db", "db_url", envvar="HILFARM_DB", default=None,
              help="SQLAlchemy URL (env HILFARM_DB); default SQLite in the data dir.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Where the default SQLite database is [{DATA_DIR_HELP}, /controller].")
@click.option("--sql", "as_sql", is_flag=True, help="Print the upgrade SQL for the database's dialect; change nothing.")
@click.option("--from", "from_revision", default=None, metavar="REV",
              help="With --sql: the revision the database is at [none: an empty database].")
@click.option("--new", "new_message", default=None, metavar="MESSAGE",
              help="Development: write a revision for what the models changed (in controller/migrations/versions/).")
def controller_migrate(db_url, data_dir, as_sql, from_revision, new_message):
    """Upgrade the database schema to this version (the controller also does this at start)."""
    from hilfarm.controller import schema
    from hilfarm.controller.database import Database, default_sqlite_url
    from hilfarm.controller.errors import CannotStart

    try:
        if new_message is not None:
            click.echo(f"wrote {schema.new_revision(new_message)}: check it, then commit it")
            return
        url = db_url or default_sqlite_url(prepared_data_dir(data_dir or default_data_dir() / "controller"))
        if as_sql:
            click.echo(schema.upgrade_sql(url, from_revision=from_revision), nl=False)
            return
        database = Database(url)
        try:
            report = database.migrate()
        finally:
            database.close()
    except schema.SchemaError as error:
        raise click.ClickException(str(error)) from None
    except CannotStart as error:  # a URL that cannot be used, a database that cannot be reached
        raise cannot_start(error) from None
    if report.adopted:
        click.echo(f"adopted a database from before migrations at revision {schema.INITIAL_REVISION}")
    click.echo(f"schema revision {report.before or '(empty)'} -> {report.after}" if report.changed
               else f"schema is current (revision {report.after})")
