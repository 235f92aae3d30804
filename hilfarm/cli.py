"""The `hilfarm` command line."""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import click
import grpc

from hilfarm import __version__
from hilfarm.client import DEFAULT_CONTROLLER, FINAL_STATES, FarmClient, ModelFormatError, Upload
from hilfarm.v1 import farm_pb2

# Exit codes shared by every command that waits for results.
EXIT_OK = 0
EXIT_MODEL_FAILED = 1  # the model or the request is to blame: fix the model or the settings
EXIT_FARM_FAILED = 2  # the farm could not run it: no device, infrastructure, cancelled

_FARM_FAULTS = {
    farm_pb2.FAILURE_CATEGORY_INFRASTRUCTURE,
    farm_pb2.FAILURE_CATEGORY_DEVICE_FAULT,
    farm_pb2.FAILURE_CATEGORY_UNSPECIFIED,
}

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 1000**2, "mb": 1000**2,
               "mib": 1 << 20, "g": 1000**3, "gb": 1000**3, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """'512MiB', '2GB', '1048576' -> bytes."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise click.BadParameter(f"{text!r} is not a size (examples: 512MiB, 2GB, 1048576)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_input_shape(text: str) -> farm_pb2.InputShape:
    """'input=1,3,224,224' -> InputShape."""
    name, sep, dims = text.partition("=")
    try:
        values = [int(d) for d in dims.split(",")] if sep and dims else None
    except ValueError:
        values = None
    if not name or values is None or any(v <= 0 for v in values):
        raise click.BadParameter(f"{text!r}: expected NAME=D1,D2,... with positive sizes, e.g. input=1,3,224,224")
    return farm_pb2.InputShape(name=name, dims=values)


def exit_code_for(jobs: Sequence[farm_pb2.Job]) -> int:
    code = EXIT_OK
    for job in jobs:
        if job.state == farm_pb2.JOB_STATE_SUCCEEDED:
            continue
        if job.state == farm_pb2.JOB_STATE_FAILED and job.failure.category not in _FARM_FAULTS:
            code = max(code, EXIT_MODEL_FAILED)
        else:
            code = EXIT_FARM_FAILED
    return code


def _client(ctx: click.Context) -> FarmClient:
    return FarmClient(ctx.obj["controller"], ctx.obj["token"])


def _print_json(document: dict) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False))


def _fail_rpc(error: grpc.RpcError, address: str) -> "click.ClickException":
    code = error.code() if hasattr(error, "code") else None
    if code == grpc.StatusCode.UNAVAILABLE:
        text = (f"cannot reach the controller at {address} ({error.details()}); start one with "
                "`hilfarm up` or point HILFARM_CONTROLLER / --controller at it")
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        text = f"the controller refused the credentials: {error.details()} (set HILFARM_TOKEN or --token)"
    else:
        text = f"{code.name if code else 'error'}: {error.details() if hasattr(error, 'details') else error}"
    exc = click.ClickException(text)
    exc.exit_code = EXIT_FARM_FAILED
    return exc


class _RpcErrorsToMessages(click.Group):
    """Turns a gRPC error anywhere in a command into one readable line and exit code 2."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except grpc.RpcError as error:
            raise _fail_rpc(error, (ctx.obj or {}).get("controller", "?")) from None


@click.group(cls=_RpcErrorsToMessages)
@click.option("--controller", envvar="HILFARM_CONTROLLER", default=DEFAULT_CONTROLLER,
              show_default=True, help="Controller address HOST:PORT (env HILFARM_CONTROLLER).")
@click.option("--token", envvar="HILFARM_TOKEN", default=None,
              help="Credential sent to the controller (env HILFARM_TOKEN).")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(__version__, prog_name="hilfarm")
@click.pass_context
def main(ctx: click.Context, controller: str, token: Optional[str], verbose: int) -> None:
    """hilfarm: measure on real devices whether a model fits them."""
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    ctx.ensure_object(dict)
    ctx.obj.update(controller=controller, token=token)


# ---------------------------------------------------------------- run settings

def _settings_options(func):
    options = [
        click.option("--runs", "min_runs", type=click.IntRange(min=1), help="Minimum timed runs [50]."),
        click.option("--min-seconds", type=click.FloatRange(min=0), help="Minimum timed duration [1 s]."),
        click.option("--max-runs", type=click.IntRange(min=1), help="Cap on timed runs [100000]."),
        click.option("--max-seconds", type=click.FloatRange(min=0), help="Cap on timed duration [150 s]."),
        click.option("--warmup", "warmup_runs", type=click.IntRange(min=0), help="Minimum warmup runs [1]."),
        click.option("--warmup-seconds", type=click.FloatRange(min=0), help="Minimum warmup time [0.5 s]."),
        click.option("--threads", type=click.IntRange(min=0), help="Runtime threads (0: runtime default)."),
        click.option("--runtime", type=click.Choice(["onnxruntime", "tflite", "null"]),
                     help="Runtime (default: from the model format)."),
        click.option("--provider", "execution_provider",
                     help="ONNX Runtime execution provider, e.g. CUDAExecutionProvider."),
        click.option("--graph-opt", "graph_optimization",
                     type=click.Choice(["disable", "basic", "extended", "all"]),
                     help="ONNX Runtime graph optimisation level."),
        click.option("--no-xnnpack", "tflite_disable_xnnpack", is_flag=True, default=None,
                     help="TFLite: run without the default XNNPACK delegate."),
        click.option("--delegate", "tflite_delegate_path", help="TFLite: external delegate library."),
        click.option("--delegate-option", "delegate_options", multiple=True, metavar="KEY=VALUE",
                     help="TFLite: option for the external delegate (repeatable)."),
        click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=D1,D2,...",
                     help="Size of an input's dynamic dimensions (repeatable)."),
        click.option("--inputs", "inputs_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Input tensors as .npz, keyed by input name (default: random)."),
        click.option("--seed", type=int, help="Seed of the random inputs [0]."),
        click.option("--memory-limit", help="Memory limit of the benchmark process, e.g. 2GiB."),
        click.option("--timeout", "timeout_seconds", type=click.FloatRange(min=0),
                     help="Wall-clock limit of the benchmark process in seconds."),
        click.option("--sustained", "sustained_seconds", type=click.FloatRange(min=0, min_open=True),
                     metavar="SECONDS",
                     help="Sustained mode: run the timed phase for SECONDS of wall time (run counts do not "
                          "apply; --timeout then covers the rest of the job) and report latency, power and "
                          "temperature per window, to expose thermal throttling."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_settings(options: Dict[str, object]) -> Tuple[farm_pb2.JobSettings, Optional[Path]]:
    """JobSettings from the command's options; also returns the .npz to upload, if any."""
    settings = farm_pb2.JobSettings()
    for name in ("min_runs", "min_seconds", "max_runs", "max_seconds", "warmup_runs",
                 "warmup_seconds", "threads", "runtime", "execution_provider",
                 "graph_optimization", "tflite_disable_xnnpack", "tflite_delegate_path",
                 "seed", "timeout_seconds", "sustained_seconds"):
        value = options.get(name)
        if value is not None:
            setattr(settings, name, value)
    for item in options.get("delegate_options") or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--delegate-option")
        settings.tflite_delegate_options[key] = value
    for text in options.get("input_shapes") or ():
        settings.input_shapes.append(parse_input_shape(str(text)))
    if options.get("memory_limit"):
        settings.memory_limit_bytes = parse_size(str(options["memory_limit"]))
    return settings, options.get("inputs_file")  # type: ignore[return-value]


def _upload_all(client: FarmClient, models: Sequence[Path], quiet: bool) -> List[Upload]:
    uploads = []
    for path in models:
        try:
            upload = client.upload(path)
        except ModelFormatError as error:
            raise click.BadParameter(str(error), param_hint="MODEL") from None
        if not quiet:
            sent = (f"sent {upload.bytes_sent / (1 << 20):.1f} MiB" if upload.bytes_sent
                    else "already stored, sent nothing")
            click.echo(f"{path.name}: {upload.format}, sha256 {upload.sha256[:12]}…, {sent}", err=True)
        uploads.append(upload)
    return uploads


def wait_for_jobs(client: FarmClient, job_ids: Sequence[str], live: bool) -> List[farm_pb2.Job]:
    """Follow every job until it finishes; redraw a progress table while `live`."""
    latest: Dict[str, farm_pb2.Job] = {}
    changed = threading.Condition()
    errors: List[BaseException] = []

    def follow(job_id: str) -> None:
        try:
            for job in client.watch_job(job_id):
                with changed:
                    latest[job_id] = job
                    changed.notify_all()
        except BaseException as error:  # re-raised in the waiting thread
            with changed:
                errors.append(error)
                changed.notify_all()

    threads = [threading.Thread(target=follow, args=(j,), daemon=True) for j in job_ids]
    for t in threads:
        t.start()

    def finished() -> bool:
        return errors != [] or (
            len(latest) == len(job_ids) and all(j.state in FINAL_STATES for j in latest.values())
        )

    def snapshot() -> List[farm_pb2.Job]:
        return [latest[j] for j in job_ids if j in latest]

    if live:
        from rich.live import Live

        from hilfarm.display import console, progress_table

        with Live(progress_table([]), console=console(stderr=True), refresh_per_second=8,
                  transient=True) as view:
            with changed:
                while not finished():
                    changed.wait(timeout=0.25)
                    view.update(progress_table(snapshot()))
    else:
        with changed:
            while not finished():
                changed.wait(timeout=0.25)
    if errors:
        raise errors[0]
    return snapshot()


def _report(jobs: Sequence[farm_pb2.Job], as_json: bool, run_id: str, created_at: float = 0.0) -> None:
    if as_json:
        from hilfarm.documents import run_document

        _print_json(run_document(farm_pb2.Run(id=run_id, created_at=created_at, jobs=jobs)))
    else:
        from hilfarm.display import console, results_table

        console().print(results_table(jobs))


# ---------------------------------------------------------------- submit

@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--device", "devices", multiple=True, required=True, metavar="PROFILE",
              help="Device profile to run on (repeatable): one job per model and device.")
@click.option("--tag", "tags", multiple=True, help="Only agents with this tag (repeatable).")
@click.option("--attempts", "max_attempts", type=click.IntRange(min=0), default=0,
              help="Attempts when an agent is lost mid-job (0: controller default).")
@_settings_options
@click.option("--constraints", "constraints_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Constraint set (YAML, hilfarm.constraints/v1): every job gets a verdict per budget.")
@click.option("--allow-unknown", is_flag=True,
              help="With --constraints: a budget the device cannot measure does not fail (exit 0).")
@click.option("--wait", is_flag=True, help="Wait for the results, showing progress.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON (schema hilfarm.run/v1).")
@click.pass_context
def submit(ctx, models, devices, tags, max_attempts, constraints_file, allow_unknown, wait, as_json, **options):
    """Benchmark MODEL(s) on the named device profiles.

    With --wait the exit code says how it went: 0 every job succeeded (and met every budget),
    1 a job failed because of the model or its settings, or broke a budget, or a budget could
    not be measured on the device (unless --allow-unknown), 2 the farm could not run a job.
    """
    settings, inputs_file = build_settings(options)
    budgets, set_name = [], ""
    if constraints_file is not None:
        from hilfarm.constraints import ConstraintError, budget_to_pb, load_constraint_set

        try:
            constraint_set = load_constraint_set(constraints_file)
        except ConstraintError as error:
            raise click.BadParameter(str(error), param_hint="--constraints") from None
        budgets, set_name = [budget_to_pb(b) for b in constraint_set.budgets], constraint_set.name
    with _client(ctx) as client:
        uploads = _upload_all(client, models, quiet=as_json)
        if inputs_file is not None:
            settings.inputs_sha256 = client.upload(inputs_file, fmt="npz").sha256
        run = client.submit(uploads, devices, settings, tags, max_attempts, constraints=budgets, constraint_set=set_name)
        if not wait:
            if as_json:
                from hilfarm.documents import run_document

                _print_json(run_document(run))
            else:
                click.echo(f"run {run.id}")
                for job in run.jobs:
                    click.echo(f"  job {job.id}: {job.model_name} on {job.device_profile}")
            return
        jobs = wait_for_jobs(client, [j.id for j in run.jobs], live=not as_json and sys.stderr.isatty())
        _report(jobs, as_json, run.id, run.created_at)
        code = exit_code_for(jobs)
        if code == EXIT_OK:
            code = exit_code_for_verdicts(jobs, allow_unknown=allow_unknown)
        ctx.exit(code)


def exit_code_for_verdicts(jobs: Sequence[farm_pb2.Job], *, allow_unknown: bool = False) -> int:
    """1 when a budget is broken, or unknown (never a silent pass) unless allowed."""
    for job in jobs:
        for verdict in job.verdicts:
            if verdict.status == farm_pb2.VERDICT_STATUS_FAIL:
                return EXIT_MODEL_FAILED
            if verdict.status != farm_pb2.VERDICT_STATUS_PASS and not allow_unknown:
                return EXIT_MODEL_FAILED
    return EXIT_OK


# ---------------------------------------------------------------- jobs

@main.group()
def jobs() -> None:
    """List, show, watch and cancel jobs."""


_STATE_CHOICES = ["queued", "leased", "running", "succeeded", "failed", "cancelled"]


@jobs.command("list")
@click.option("--run", "run_id", default="", help="Only the jobs of this run.")
@click.option("--state", "states", multiple=True, type=click.Choice(_STATE_CHOICES), help="Only jobs in this state (repeatable).")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema hilfarm.jobs/v1, without raw samples).")
@click.pass_context
def jobs_list(ctx, run_id, states, limit, as_json):
    """Recent jobs, newest first."""
    wanted = [farm_pb2.JobState.Value(f"JOB_STATE_{s.upper()}") for s in states]
    with _client(ctx) as client:
        found = client.list_jobs(run_id=run_id, states=wanted, limit=limit)
    if as_json:
        from hilfarm.documents import jobs_document

        _print_json(jobs_document(found, with_samples=False))
    else:
        from hilfarm.display import console, jobs_table

        console().print(jobs_table(found))


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the job object of hilfarm.run/v1).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw latency and power/temperature/clock traces to FILE (.png or .html).")
@click.pass_context
def jobs_show(ctx, job_id, as_json, plot_path):
    """Everything about one job: figures, where they came from, failure detail."""
    with _client(ctx) as client:
        job = client.get_job(job_id)
    if plot_path is not None:
        from hilfarm import plots

        missing = plots.load_optional()
        if missing:
            raise click.ClickException(missing)
        try:
            plots.plot_job(job, plot_path)
        except ValueError as exc:  # no samples, or a file name without .png / .html
            raise click.ClickException(str(exc)) from None
        click.echo(f"wrote {plot_path}", err=True)
    if as_json:
        from hilfarm.documents import job_document

        _print_json(job_document(job))
    else:
        from hilfarm.display import console, job_detail

        console().print(job_detail(job))


@jobs.command("watch")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the finished job as JSON.")
@click.pass_context
def jobs_watch(ctx, job_id, as_json):
    """Follow a job live until it finishes, then print its result."""
    with _client(ctx) as client:
        finished = wait_for_jobs(client, [job_id], live=not as_json and sys.stderr.isatty())
    _report(finished, as_json, finished[0].run_id if finished else "")
    ctx.exit(exit_code_for(finished))


@jobs.command("cancel")
@click.argument("job_ids", nargs=-1, required=True)
@click.pass_context
def jobs_cancel(ctx, job_ids):
    """Cancel queued or running jobs (a running one is stopped on its device)."""
    from hilfarm.documents import state_name

    with _client(ctx) as client:
        for job_id in job_ids:
            job = client.cancel_job(job_id)
            click.echo(f"{job.id}: {state_name(job.state)}")


# ---------------------------------------------------------------- devices

@main.group()
def devices() -> None:
    """The agents the controller knows."""


@devices.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema hilfarm.devices/v1).")
@click.pass_context
def devices_list(ctx, as_json):
    """Every registered agent with its profile, state and runtimes."""
    with _client(ctx) as client:
        found = client.list_devices()
    if as_json:
        from hilfarm.documents import devices_document

        _print_json(devices_document(found))
    else:
        from hilfarm.display import console, devices_table

        console().print(devices_table(found))


@devices.command("show")
@click.argument("agent_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one device of hilfarm.devices/v1).")
@click.pass_context
def devices_show(ctx, agent_id, as_json):
    """One agent: profile, state, tags, runtimes with their providers, machine."""
    with _client(ctx) as client:
        every = client.list_devices()
    found = [d for d in every if d.agent_id == agent_id]
    if not found:
        known = ", ".join(d.agent_id for d in every) or "none"
        raise click.ClickException(f"no agent {agent_id!r} has registered (known: {known})")
    from hilfarm.documents import device_document

    document = device_document(found[0])
    if as_json:
        _print_json(document)
    else:
        from rich.pretty import Pretty

        from hilfarm.display import console

        console().print(Pretty(document))


@devices.command("drain")
@click.argument("agent_ids", nargs=-1, required=True)
@click.option("--undo", is_flag=True, help="Put the devices back in service.")
@click.pass_context
def devices_drain(ctx, agent_ids, undo):
    """Take devices out of service: no new jobs; a running job finishes."""
    with _client(ctx) as client:
        for agent_id in agent_ids:
            device = client.drain_device(agent_id, drain=not undo)
            click.echo(f"{device.agent_id}: {device.state}")


# ---------------------------------------------------------------- serving

def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@main.group()
def controller() -> None:
    """Run the central controller."""


@controller.command("serve")
@click.option("--bind", default="0.0.0.0:50051", show_default=True, help="Address to listen on.")
@click.option("--db", "db_url", envvar="HILFARM_DB", default=None,
              help="SQLAlchemy URL (env HILFARM_DB); default SQLite in the data dir. "
                   "PostgreSQL: postgresql+psycopg://user@host/db")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Artifacts and the SQLite database [user data dir].")
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
@click.option("--nightly", "nightly_suites", multiple=True, metavar="SUITE.yaml",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run this suite on the cron schedule in its 'schedule:' field (repeatable).")
@click.pass_context
def controller_serve(ctx, bind, db_url, data_dir, max_artifact_bytes, lease_seconds, restart_grace_seconds,
                     artifacts_dir, metrics_bind, remote_write_url, nightly_suites):
    """Serve the user and agent APIs until SIGTERM / Ctrl-C."""
    from hilfarm.controller.server import Controller, serve_forever
    from hilfarm.embedded import default_data_dir

    server = Controller(
        db_url=db_url,
        data_dir=data_dir or default_data_dir() / "controller",
        token=ctx.obj["token"],
        artifacts_dir=artifacts_dir,
        max_artifact_bytes=parse_size(max_artifact_bytes),
        lease_seconds=lease_seconds,
        restart_grace=restart_grace_seconds,
        metrics_bind=metrics_bind,
        remote_write_url=remote_write_url,
    )
    if nightly_suites:
        from hilfarm.controller.nightly import NightlyRunner
        from hilfarm.suite_files import SuiteError

        try:
            server.nightly = NightlyRunner.from_files(server, list(nightly_suites))
        except (SuiteError, ValueError) as error:
            raise click.BadParameter(str(error), param_hint="--nightly") from None
    from hilfarm.controller.schema import SchemaError

    try:
        port = server.start(bind)
    except SchemaError as error:
        raise click.ClickException(f"the database cannot be used: {error}") from None
    click.echo(f"hilfarm controller listening on {bind.rsplit(':', 1)[0]}:{port}", err=True)
    if server.metrics_port is not None:
        click.echo(f"metrics on http://{metrics_bind.rsplit(':', 1)[0]}:{server.metrics_port}/metrics", err=True)
    serve_forever(server)


@controller.command("migrate")
@click.option("--db", "db_url", envvar="HILFARM_DB", default=None,
              help="SQLAlchemy URL (env HILFARM_DB); default SQLite in the data dir.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the default SQLite database is [user data dir/controller].")
@click.option("--sql", "as_sql", is_flag=True, help="Print the upgrade SQL for the database's dialect; change nothing.")
@click.option("--from", "from_revision", default=None, metavar="REV",
              help="With --sql: the revision the database is at [none: an empty database].")
@click.option("--new", "new_message", default=None, metavar="MESSAGE",
              help="Development: write a revision for what the models changed (in controller/migrations/versions/).")
def controller_migrate(db_url, data_dir, as_sql, from_revision, new_message):
    """Upgrade the database schema to this version (the controller also does this at start)."""
    from hilfarm.controller import schema
    from hilfarm.controller.store import Store, default_sqlite_url
    from hilfarm.embedded import default_data_dir

    try:
        if new_message is not None:
            click.echo(f"wrote {schema.new_revision(new_message)}: check it, then commit it")
            return
        url = db_url or default_sqlite_url(data_dir or default_data_dir() / "controller")
        if as_sql:
            click.echo(schema.upgrade_sql(url, from_revision=from_revision), nl=False)
            return
        store = Store(url)
        try:
            report = store.migrate()
        finally:
            store.close()
    except schema.SchemaError as error:
        raise click.ClickException(str(error)) from None
    if report.adopted:
        click.echo(f"adopted a database from before migrations at revision {schema.INITIAL_REVISION}")
    click.echo(f"schema revision {report.before or '(empty)'} -> {report.after}" if report.changed
               else f"schema is current (revision {report.after})")


@main.group()
def agent() -> None:
    """Run an agent on a device."""


@agent.command("run")
@click.option("--profile", default=None, help="Device profile name or YAML path (default: detected).")
@click.option("--tag", "tags", multiple=True, help="Tag this device (repeatable).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Artifact cache and agent state [user data dir/agent].")
@click.option("--agent-id", default=None, help="Stable id of this device (default: derived and stored).")
@click.pass_context
def agent_run(ctx, profile, tags, data_dir, agent_id):
    """Dial out to the controller and run the jobs it leases to this device."""
    from hilfarm.agent.service import AgentConfig, run_agent
    from hilfarm.embedded import default_data_dir

    config = AgentConfig(
        controller=ctx.obj["controller"],
        token=ctx.obj["token"],
        profile=profile,
        tags=list(tags),
        data_dir=data_dir or default_data_dir() / "agent",
        agent_id=agent_id,
    )
    stop = threading.Event()
    _stop_on_signals(stop)
    run_agent(config, stop)


@main.command()
@click.option("--bind", default="127.0.0.1:50051", show_default=True, help="Controller address.")
@click.option("--db", "db_url", envvar="HILFARM_DB", default=None, help="SQLAlchemy URL [SQLite in the data dir].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the farm keeps its database, artifacts and cache [user data dir].")
@click.option("--profile", default="local", show_default=True, help="Profile of the local agent.")
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

    farm = EmbeddedFarm(data_dir=data_dir, bind=bind, db_url=db_url, profile=profile,
                        token=ctx.obj["token"], with_agent=not no_agent, metrics_bind=metrics_bind,
                        nightly=list(nightly_suites))
    try:
        farm.start()
    except SuiteError as error:
        farm.stop()
        raise click.BadParameter(str(error), param_hint="--nightly") from None
    stop = threading.Event()
    _stop_on_signals(stop)
    click.echo(f"hilfarm is up: controller {farm.address}, data in {farm.data_dir}", err=True)
    runner = farm.nightly_runner
    for entry in runner.entries if runner is not None else []:
        click.echo(f"nightly suite {entry.suite.name} ({entry.schedule}): next run at "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(entry.next_at))}", err=True)
    if not no_agent:
        click.echo(f"benchmark a model:  hilfarm submit MODEL.onnx --device {farm.local_profile()} --wait", err=True)
    try:
        stop.wait()
    finally:
        farm.stop()


@main.command()
@click.argument("models", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the farm keeps its database, artifacts and cache [user data dir].")
@_settings_options
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON (schema hilfarm.run/v1).")
@click.pass_context
def demo(ctx, models, data_dir, as_json, **options):
    """Start a farm on this machine, benchmark models, print the results, stop.

    With no MODEL it first writes a small ONNX and a small TFLite model of its own.
    """
    from hilfarm.embedded import EmbeddedFarm

    settings, inputs_file = build_settings(options)
    farm = EmbeddedFarm(data_dir=data_dir)
    farm.start()
    try:
        paths = list(models)
        if not paths:
            from hilfarm.sample_models import make_demo_models

            paths = make_demo_models(farm.data_dir / "demo-models")
            if not as_json:
                click.echo("made sample models: " + ", ".join(str(p) for p in paths), err=True)
        with FarmClient(farm.address) as client:
            uploads = _upload_all(client, paths, quiet=as_json)
            if inputs_file is not None:
                settings.inputs_sha256 = client.upload(inputs_file, fmt="npz").sha256
            run = client.submit(uploads, [farm.local_profile()], settings)
            jobs_ = wait_for_jobs(client, [j.id for j in run.jobs], live=not as_json and sys.stderr.isatty())
        _report(jobs_, as_json, run.id, run.created_at)
    finally:
        farm.stop()
    ctx.exit(exit_code_for(jobs_))


# ---------------------------------------------------------------- regression testing (hilfarm/regress.py)

from hilfarm.regress import attach as _attach_regress  # noqa: E402 - commands join the group defined above

_attach_regress(main)

# ---------------------------------------------------------------- provisioning devices over SSH (hilfarm/provision.py)

from hilfarm.provision import attach as _attach_provision  # noqa: E402 - paramiko is imported only when used

_attach_provision(main)


if __name__ == "__main__":
    main()
