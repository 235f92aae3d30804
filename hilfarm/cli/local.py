"""`hilfarm up` and `hilfarm demo`: a controller and one agent in this process."""

from __future__ import annotations

import threading
from pathlib import Path

import click

from hilfarm.cli.common import (DATA_DIR_HELP, cannot_start, check_placement, checked_profile, exit_code_for,
                                prepared_data_dir, stop_on_signals, wide_option)
from hilfarm.cli.follow import follow, live, print_created, report, upload_all
from hilfarm.cli.job_settings import add_input_shapes, build_settings, input_shapes_by_model, settings_options
from hilfarm.client import DEFAULT_CONTROLLER, FarmClient
from hilfarm.paths import default_data_dir


@click.command()
@click.option("--bind", default="127.0.0.1:50051", show_default=True, help="Controller address.")
@click.option("--db", "db_url", envvar="HILFARM_DB", default=None, help="SQLAlchemy URL [SQLite in the data dir].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Where the farm keeps its database, artifacts and cache [{DATA_DIR_HELP}].")
@click.option("--profile", default="local", show_default=True, callback=checked_profile,
              help="Profile of the local agent.")
@click.option("--no-agent", is_flag=True, help="Run only the controller.")
@click.option("--metrics-bind", default=None, metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464).")
@click.option("--nightly", "nightly_suites", multiple=True, metavar="SUITE.yaml",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run this suite on the cron schedule in its 'schedule:' field (repeatable).")
@click.pass_context
def up(ctx, bind, db_url, data_dir, profile, no_agent, metrics_bind, nightly_suites):
    """The embedded farm in the foreground: a controller and one local agent."""
    import time

    from hilfarm.embedded import EmbeddedFarm
    from hilfarm.suite_files import SuiteError

    farm = EmbeddedFarm(data_dir=prepared_data_dir(data_dir or default_data_dir()), bind=bind, db_url=db_url,
                        profile=profile, token=ctx.obj["token"], with_agent=not no_agent, metrics_bind=metrics_bind,
                        nightly=list(nightly_suites))
    from hilfarm.controller.errors import CannotStart
    from hilfarm.transport import TransportError

    try:
        farm.start()
    except SuiteError as error:
        farm.stop()
        raise click.BadParameter(str(error), param_hint="--nightly") from None
    except CannotStart as error:
        farm.stop()
        raise cannot_start(error) from None
    except TransportError as error:
        farm.stop()
        raise click.ClickException(f"{error} (hilfarm up has no --insecure: give it --token, or keep it on loopback)") from None
    stop = threading.Event()
    stop_on_signals(stop)
    click.echo(f"hilfarm is up: controller {farm.address}, data in {farm.data_dir}", err=True)
    if farm.metrics_url:
        click.echo(f"metrics:  {farm.metrics_url}", err=True)
    runner = farm.nightly_runner
    for entry in runner.entries if runner is not None else []:
        click.echo(f"nightly suite {entry.suite.name} ({entry.schedule}): next run at "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(entry.next_at))}", err=True)
    device = farm.local_profile() if not no_agent else "PROFILE"
    if farm.address == DEFAULT_CONTROLLER:
        click.echo(f"use it:   hilfarm submit MODEL.onnx --device {device} --wait", err=True)
    else:
        # Not the address hilfarm calls by default: say exactly how to reach this farm.
        click.echo(f"use it:   export HILFARM_CONTROLLER={farm.address}", err=True)
        click.echo(f"          hilfarm submit MODEL.onnx --device {device} --wait", err=True)
        click.echo(f"     or:  hilfarm --controller {farm.address} submit MODEL.onnx --device {device} --wait",
                   err=True)
    try:
        stop.wait()
    finally:
        farm.stop()


@click.command()
@click.argument("models", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Where the farm keeps its database, artifacts and cache [{DATA_DIR_HELP}].")
@settings_options
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON (schema hilfarm.run/v1).")
@wide_option
@click.pass_context
def demo(ctx, models, data_dir, as_json, wide, **options):
    """Start a farm on this machine, benchmark models, print the results, stop.

    With no MODEL it first writes a small ONNX and a small TFLite model of its own.
    """
    from hilfarm.embedded import EmbeddedFarm

    settings, inputs_file = build_settings(options)
    shapes = input_shapes_by_model(list(options.get("input_shapes") or ()), list(models))
    from hilfarm.controller.errors import CannotStart

    farm = EmbeddedFarm(data_dir=prepared_data_dir(data_dir or default_data_dir()))
    try:
        farm.start()
    except CannotStart as error:  # e.g. its data dir is served by a farm already up (DatabaseInUse)
        farm.stop()
        raise cannot_start(error) from None
    try:
        paths = list(models)
        with FarmClient(farm.address) as client:
            if not paths:
                paths = _sample_models_this_agent_runs(client, farm, settings, quiet=as_json)
                shapes = input_shapes_by_model(list(options.get("input_shapes") or ()), paths)
            # A model the local agent has no runtime for would wait forever: say so and stop.
            check_placement(client, paths, [farm.local_profile()], settings, (),
                            hint="this machine's agent has no such runtime: install it (e.g. pip install "
                                 "'hilfarm[litert]' for TFLite) or benchmark models it can run")
            uploads = upload_all(client, paths, quiet=as_json)
            add_input_shapes(settings, shapes, uploads)
            if inputs_file is not None:
                settings.inputs_sha256 = client.upload(inputs_file, fmt="npz").sha256
            run = client.submit(uploads, [farm.local_profile()], settings)
            if not as_json:
                print_created(run.jobs, err=True)
            # The farm stops with this command: an interrupted demo cancels its jobs.
            jobs_ = follow(ctx, client, run.jobs, live=live(as_json), cancel_on_interrupt=True)
        report(jobs_, as_json, run.id, run.created_at, wide=wide, farm_stays=False)
    finally:
        farm.stop()
    ctx.exit(exit_code_for(jobs_))


def _sample_models_this_agent_runs(client: FarmClient, farm, settings, quiet: bool) -> list:
    """The demo's own models (an ONNX and a TFLite one), less those the local agent has no
    runtime for: a machine without a TFLite interpreter still runs the ONNX one, and says why the
    other was left out."""
    from hilfarm.client import model_format
    from hilfarm.contract import RUNTIME_FOR_FORMAT
    from hilfarm.sample_models import make_demo_models

    paths = make_demo_models(farm.data_dir / "demo-models")
    offered = {r.name for d in client.list_devices() if d.device_profile == farm.local_profile()
               for r in d.capabilities.runtimes}
    runnable = [p for p in paths if (settings.runtime or RUNTIME_FOR_FORMAT[model_format(p)]) in offered]
    if not quiet:
        click.echo("made sample models: " + ", ".join(str(p) for p in runnable), err=True)
        for path in paths:
            if path not in runnable:
                click.echo(f"left out {path.name}: this machine's agent has no "
                           f"{settings.runtime or RUNTIME_FOR_FORMAT[model_format(path)]} runtime", err=True)
    return runnable or paths  # none runnable: check_placement names what is missing
