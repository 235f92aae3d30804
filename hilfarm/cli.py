"""The `hilfarm` command line."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import click
import grpc

from hilfarm import __version__
from hilfarm.admin_cli import agent_security_options, client_tls, serve_security_options
from hilfarm.admin_cli import tls_client_options as _tls_client_options
from hilfarm.client import (DEFAULT_CONTROLLER, RUNTIME_FOR_FORMAT, FarmClient, ModelFormatError,
                            Upload, model_format)
from hilfarm.v1 import farm_pb2

# Exit codes shared by every command that waits for results.
EXIT_OK = 0
EXIT_MODEL_FAILED = 1  # the model or the request is to blame: fix the model or the settings
EXIT_FARM_FAILED = 2  # the farm could not run it: no device, infrastructure, cancelled
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); SIGTERM gives 143

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
    name, sep, dims = text.rpartition("=")
    try:
        values = [int(d) for d in dims.split(",")] if sep and dims else None
    except ValueError:
        values = None
    if not name or values is None or any(v <= 0 for v in values):
        raise click.BadParameter(f"{text!r}: expected [MODEL:]NAME=D1,D2,... with positive sizes, "
                                 "e.g. input=1,3,224,224 or det.onnx:images=1,3,640,640",
                                 param_hint="--input-shape")
    return farm_pb2.InputShape(name=name, dims=values)


def _model_keys(path: Path) -> Tuple[str, ...]:
    return tuple(dict.fromkeys((str(path), path.name, path.stem)))


def input_shapes_by_model(texts: Sequence[str], models: Sequence[Path]) -> Dict[Optional[int], List[farm_pb2.InputShape]]:
    """``--input-shape`` values -> model index (None: every model) -> shapes.

    ``MODEL:NAME=D1,...`` sizes an input of one model (MODEL: its path as given, file name or
    stem; ``*`` for every model). ``NAME=D1,...`` is accepted when it cannot be misread: with
    one model. An input name may itself hold ':' (``input:0``): the text before the first ':'
    is a model only when it names one.
    """
    out: Dict[Optional[int], List[farm_pb2.InputShape]] = {}
    for text in texts:
        prefix, colon, rest = text.partition(":")
        target: Optional[int] = None
        if colon and prefix == "*":
            text = rest
        elif colon and "=" in rest:
            matches = [i for i, m in enumerate(models) if prefix in _model_keys(m)]
            if len(matches) > 1:
                raise click.BadParameter(f"{text!r}: {prefix!r} names {len(matches)} of the models "
                                         f"({', '.join(str(models[i]) for i in matches)}); write its path",
                                         param_hint="--input-shape")
            if matches:
                target, text = matches[0], rest
            elif Path(prefix).suffix.lower() in (".onnx", ".tflite"):
                raise click.BadParameter(f"{text!r}: {prefix!r} is not one of the submitted models "
                                         f"({', '.join(m.name for m in models)})", param_hint="--input-shape")
        shape = parse_input_shape(text)
        if target is None and len(models) > 1 and not (colon and prefix == "*"):
            example = f"{models[0].name}:{shape.name}={','.join(map(str, shape.dims))}"
            raise click.BadParameter(
                f"{text!r} does not say which model it is for, and {len(models)} models are submitted "
                f"({', '.join(m.name for m in models)}): write MODEL:NAME=D1,... (e.g. {example}), "
                f"or *:NAME=D1,... for every model", param_hint="--input-shape")
        out.setdefault(target, []).append(shape)
    return out


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
    return FarmClient(ctx.obj["controller"], ctx.obj["token"], tls=ctx.obj.get("tls"))


def _print_json(document: dict) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False))


def _fail_rpc(error: grpc.RpcError, address: str) -> "click.ClickException":
    code = error.code() if hasattr(error, "code") else None
    if code == grpc.StatusCode.UNAVAILABLE:
        text = (f"cannot reach the controller at {address} ({error.details()}); start one with "
                "`hilfarm up` or point HILFARM_CONTROLLER / --controller at it")
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        text = f"the controller refused the credentials: {error.details()} (set HILFARM_TOKEN or --token)"
    elif code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        text = error.details()  # the controller's sentence says what is wrong with the request
    else:
        text = f"{code.name if code else 'error'}: {error.details() if hasattr(error, 'details') else error}"
    exc = click.ClickException(text)
    exc.exit_code = EXIT_FARM_FAILED
    return exc


class _RpcErrorsToMessages(click.Group):
    """Turns a gRPC error anywhere in a command into one readable line and exit code 2, and
    Ctrl-C into exit 130 without a traceback (commands that wait say more: see _follow)."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except grpc.RpcError as error:
            raise _fail_rpc(error, (ctx.obj or {}).get("controller", "?")) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=_RpcErrorsToMessages)
@click.option("--controller", envvar="HILFARM_CONTROLLER", default=DEFAULT_CONTROLLER,
              show_default=True, help="Controller address HOST:PORT (env HILFARM_CONTROLLER).")
@click.option("--token", envvar="HILFARM_TOKEN", default=None,
              help="Credential sent to the controller (env HILFARM_TOKEN).")
@_tls_client_options
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(__version__, prog_name="hilfarm")
@click.pass_context
def main(ctx: click.Context, controller: str, token: Optional[str], verbose: int, **tls_options: Optional[str]) -> None:
    """hilfarm: measure on real devices whether a model fits them."""
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    ctx.ensure_object(dict)
    ctx.obj.update(controller=controller, token=token, tls=client_tls(**tls_options))


# ---------------------------------------------------------------- run settings

def _settings_options(func):
    options = [
        click.option("--runs", "min_runs", type=click.IntRange(min=1), help="Minimum timed runs [50]."),
        click.option("--min-seconds", type=click.FloatRange(min=0), help="Minimum timed duration [1 s]."),
        click.option("--max-runs", type=click.IntRange(min=1), help="Cap on timed runs [100000]."),
        click.option("--max-seconds", type=click.FloatRange(min=0), help="Cap on timed duration [150 s]."),
        click.option("--warmup", "warmup_runs", type=click.IntRange(min=0), help="Minimum warmup runs [1]."),
        click.option("--warmup-seconds", type=click.FloatRange(min=0), help="Minimum warmup time [0.5 s]."),
        click.option("--warmup-max-seconds", type=click.FloatRange(min=0, min_open=True),
                     help="Warmup goes on until latency stops trending, at most this long [30 s]."),
        click.option("--repeats", type=click.IntRange(min=1, max=100),
                     help="Fresh processes to measure in, each with its own load, warmup and timed runs "
                          "[profile default, 1; regress: 5]. Comparisons take the repeat as their unit."),
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
        click.option("--input-shape", "input_shapes", multiple=True, metavar="[MODEL:]NAME=D1,D2,...",
                     help="Shape of a model input with dynamic dimensions (repeatable). MODEL (file name, stem "
                          "or path; * for all) says which model; it may be left out with one model."),
        click.option("--dynamic-default", "dynamic_dimension_default", type=click.IntRange(min=1), metavar="N",
                     help="Size of every dynamic dimension no --input-shape sets (without it such a dimension "
                          "fails the job, naming it)."),
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
        click.option("--profile-ops", "profile_ops", is_flag=True, default=None,
                     help="After the timed runs, profile every node/operator (time, and the provider or "
                          "delegate that ran it); the full trace is kept with the result."),
        click.option("--profile-ops-runs", "profile_ops_runs", type=click.IntRange(min=1, max=1000),
                     help="Inferences the per-operator profile averages over [10]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_settings(options: Dict[str, object]) -> Tuple[farm_pb2.JobSettings, Optional[Path]]:
    """JobSettings from the command's options but the input shapes (``add_input_shapes`` adds
    them once the models are uploaded); also returns the .npz to upload, if any."""
    settings = farm_pb2.JobSettings()
    for name in ("min_runs", "min_seconds", "max_runs", "max_seconds", "warmup_runs",
                 "warmup_seconds", "threads", "runtime", "execution_provider",
                 "graph_optimization", "tflite_disable_xnnpack", "tflite_delegate_path",
                 "seed", "timeout_seconds", "sustained_seconds", "repeats", "warmup_max_seconds",
                 "profile_ops", "profile_ops_runs", "dynamic_dimension_default"):
        value = options.get(name)
        if value is not None:
            setattr(settings, name, value)
    for item in options.get("delegate_options") or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--delegate-option")
        settings.tflite_delegate_options[key] = value
    if options.get("memory_limit"):
        settings.memory_limit_bytes = parse_size(str(options["memory_limit"]))
    return settings, options.get("inputs_file")  # type: ignore[return-value]


def add_input_shapes(settings: farm_pb2.JobSettings, by_model: Dict[Optional[int], List[farm_pb2.InputShape]],
                     uploads: Sequence[Upload]) -> None:
    """Put the shapes of ``input_shapes_by_model`` into ``settings``, each model's own named by
    the sha256 its upload got (the controller gives every job only its model's shapes)."""
    for index, shapes in by_model.items():
        for shape in shapes:
            if index is not None:
                shape.model_sha256 = uploads[index].sha256
            settings.input_shapes.append(shape)


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


def _hilfarm_command(ctx: click.Context) -> str:
    """How to call hilfarm so that it reaches this command's controller."""
    address = (ctx.find_root().obj or {}).get("controller", DEFAULT_CONTROLLER)
    if address in (DEFAULT_CONTROLLER, os.environ.get("HILFARM_CONTROLLER")):
        return "hilfarm"
    return f"hilfarm --controller {address}"


def _follow(ctx: click.Context, client: FarmClient, jobs: Sequence[farm_pb2.Job], *, live: bool,
            timeout: Optional[float] = None, cancel_on_interrupt: bool = False) -> List[farm_pb2.Job]:
    """Wait until every job is finished. Ctrl-C (or SIGTERM) leaves the jobs running and says how
    to follow or cancel them (exit 130 / 143), or cancels them with ``cancel_on_interrupt``;
    ``timeout`` gives up the same way with exit 2."""
    from hilfarm.waiting import Interrupted, JobFollower, WaitTimedOut, signals_interrupt

    follower = JobFollower(client, jobs)
    try:
        with signals_interrupt():
            return follower.wait(live=live, timeout=timeout, on_state=None if live else _say_state(jobs))
    except Interrupted as stop:
        code, why = stop.exit_code, "interrupted"
    except WaitTimedOut:
        code, why = EXIT_FARM_FAILED, f"gave up waiting after {timeout:g} s"
    _leave_unfinished(ctx, client, follower.unfinished(), why, cancel=cancel_on_interrupt)
    ctx.exit(code)
    raise AssertionError("unreachable")  # ctx.exit raises


def _count(items: Sequence[object], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _say_state(jobs: Sequence[farm_pb2.Job]):  # type: ignore[no-untyped-def]
    """Where nothing redraws (a pipe, a CI log): one line on stderr each time a job changes state,
    so a wait is never silent; a waiting job says why."""
    from hilfarm.display import short_ids, shorten_ids
    from hilfarm.documents import failure_category_name, state_name

    keys = short_ids(j.id for j in jobs)

    def say(job: farm_pb2.Job) -> None:
        state = state_name(job.state)
        if job.HasField("failure"):
            state += f" ({failure_category_name(job.failure.category)})"
        elif job.agent_id and job.state in (farm_pb2.JOB_STATE_LEASED, farm_pb2.JOB_STATE_RUNNING):
            state += f" on {job.agent_id}"
        elif job.placement_notes:
            state += f", waits: {shorten_ids(job.placement_notes[0])}"
        click.echo(f"{keys.get(job.id, job.id[:8])} {state}", err=True)

    return say


def _leave_unfinished(ctx: click.Context, client: FarmClient, unfinished: Sequence[farm_pb2.Job], why: str,
                      *, cancel: bool) -> None:
    from hilfarm.display import short_ids
    from hilfarm.documents import state_name

    if not unfinished:
        click.echo(f"{why}", err=True)
        return
    keys = short_ids(j.id for j in unfinished)
    if cancel:
        click.echo(f"{why}: cancelling {_count(unfinished, 'job')}", err=True)
        for job in unfinished:
            try:
                done = client.cancel_job(job.id)
                click.echo(f"  {keys[job.id]}  {job.model_name} on {job.device_profile}: {state_name(done.state)}", err=True)
            except grpc.RpcError as error:  # finished meanwhile, or the controller went away
                click.echo(f"  {keys[job.id]}  not cancelled: {error.details()}", err=True)
        return
    hilfarm = _hilfarm_command(ctx)
    ids = " ".join(keys[j.id] for j in unfinished)
    click.echo(f"{why}: {_count(unfinished, 'job')} {'goes' if len(unfinished) == 1 else 'go'} on "
               "running on the farm", err=True)
    for job in unfinished:
        click.echo(f"  {keys[job.id]}  {job.model_name} on {job.device_profile}, {state_name(job.state)}", err=True)
    click.echo(f"follow:  {hilfarm} jobs watch {ids}", err=True)
    click.echo(f"cancel:  {hilfarm} jobs cancel {ids}", err=True)


def _report(jobs: Sequence[farm_pb2.Job], as_json: bool, run_id: str, created_at: float = 0.0,
            wide: bool = False, farm_stays: bool = True) -> None:
    """``farm_stays``: the controller goes on answering, so `jobs show` can say more later."""
    if as_json:
        from hilfarm.documents import run_document

        _print_json(run_document(farm_pb2.Run(id=run_id, created_at=created_at, jobs=jobs)))
    else:
        from hilfarm.display import console, results_table

        console(wide=wide).print(results_table(jobs, wide=wide, point_to_detail=farm_stays))


def _live(as_json: bool) -> bool:
    """Redraw progress only for a person: on a terminal, and never around JSON."""
    return not as_json and sys.stderr.isatty()


def _print_created(jobs: Sequence[farm_pb2.Job], err: bool) -> None:
    from hilfarm.display import short_ids

    keys = short_ids(j.id for j in jobs)
    for job in jobs:
        click.echo(f"job {keys[job.id]}  {job.model_name} on {job.device_profile}", err=err)


def _check_placement(client: FarmClient, models: Sequence[Path], devices: Sequence[str],
                     settings: farm_pb2.JobSettings, tags: Sequence[str]) -> None:
    """Stop with exit 2, within seconds, when no agent the controller knows can take a job."""
    from hilfarm.preflight import placement_problems

    runtimes = {}
    for path in models:
        try:
            runtimes[path.name] = settings.runtime or RUNTIME_FOR_FORMAT[model_format(path)]
        except ModelFormatError as error:
            raise click.BadParameter(str(error), param_hint="MODEL") from None
    problems = placement_problems(client.list_devices(), profiles=devices, runtimes=runtimes,
                                  provider=settings.execution_provider, tags=tags)
    if problems:
        text = "no device can run this:\n" + "\n".join(f"  {p}" for p in problems)
        text += "\n(--queue submits anyway and waits for a device that is not enrolled yet)"
        exc = click.ClickException(text)
        exc.exit_code = EXIT_FARM_FAILED
        raise exc


_wide_option = click.option("--wide", is_flag=True, help="Every figure, one row per job, however wide.")


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
@click.option("--queue", is_flag=True,
              help="Submit even when no agent the controller knows can take a job (a device not enrolled yet); "
                   "without it such a submission stops at once with exit 2, naming what the farm has.")
@click.option("--wait", is_flag=True, help="Wait for the results, showing progress.")
@click.option("--wait-timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="With --wait: give up after SECONDS (exit 2); the jobs go on unless --cancel-on-interrupt.")
@click.option("--cancel-on-interrupt", is_flag=True,
              help="With --wait: Ctrl-C, SIGTERM or --wait-timeout cancels the unfinished jobs (default: they "
                   "go on, and the command says how to follow or cancel them).")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON (schema hilfarm.run/v1).")
@_wide_option
@click.pass_context
def submit(ctx, models, devices, tags, max_attempts, constraints_file, allow_unknown, queue, wait, wait_timeout,
           cancel_on_interrupt, as_json, wide, **options):
    """Benchmark MODEL(s) on the named device profiles.

    Prints each job id as the jobs are created. With --wait the exit code says how it went: 0
    every job succeeded (and met every budget), 1 a job failed because of the model or its
    settings, or broke a budget, or a budget could not be measured on the device (unless
    --allow-unknown), 2 the farm could not run a job (no agent has the profile, runtime,
    provider or tags asked for; infrastructure; cancelled; --wait-timeout), 130 Ctrl-C.
    """
    settings, inputs_file = build_settings(options)
    shapes = input_shapes_by_model(list(options.get("input_shapes") or ()), list(models))
    budgets, set_name = [], ""
    if constraints_file is not None:
        from hilfarm.constraints import ConstraintError, budget_to_pb, load_constraint_set

        try:
            constraint_set = load_constraint_set(constraints_file)
        except ConstraintError as error:
            raise click.BadParameter(str(error), param_hint="--constraints") from None
        budgets, set_name = [budget_to_pb(b) for b in constraint_set.budgets], constraint_set.name
    with _client(ctx) as client:
        if not queue:
            _check_placement(client, models, devices, settings, tags)
        uploads = _upload_all(client, models, quiet=as_json)
        add_input_shapes(settings, shapes, uploads)
        if inputs_file is not None:
            settings.inputs_sha256 = client.upload(inputs_file, fmt="npz").sha256
        run = client.submit(uploads, devices, settings, tags, max_attempts, constraints=budgets, constraint_set=set_name)
        if not wait:
            if as_json:
                from hilfarm.documents import run_document

                _print_json(run_document(run))
            else:
                _print_created(run.jobs, err=False)
            return
        if not as_json:
            _print_created(run.jobs, err=True)
        jobs_ = _follow(ctx, client, run.jobs, live=_live(as_json), timeout=wait_timeout,
                        cancel_on_interrupt=cancel_on_interrupt)
        _report(jobs_, as_json, run.id, run.created_at, wide=wide)
        code = exit_code_for(jobs_)
        if code == EXIT_OK:
            code = exit_code_for_verdicts(jobs_, allow_unknown=allow_unknown)
        ctx.exit(code)


def exit_code_for_verdicts(jobs: Sequence[farm_pb2.Job], *, allow_unknown: bool = False) -> int:
    """1 when a budget is broken, or unknown (never a silent pass) unless allowed. A pass on a
    simulated reading counts as unknown: a simulation never makes a real pass."""
    for job in jobs:
        for verdict in job.verdicts:
            if verdict.status == farm_pb2.VERDICT_STATUS_FAIL:
                return EXIT_MODEL_FAILED
            real_pass = verdict.status == farm_pb2.VERDICT_STATUS_PASS and not verdict.simulated
            if not real_pass and not allow_unknown:
                return EXIT_MODEL_FAILED
    return EXIT_OK


# ---------------------------------------------------------------- jobs

@main.group()
def jobs() -> None:
    """List, show, watch and cancel jobs. JOB is a job id or a unique prefix of one (as in git)."""


_STATE_CHOICES = ["queued", "leased", "running", "succeeded", "failed", "cancelled"]


def writable_file(ctx: click.Context, param: click.Parameter, value: Optional[Path]) -> Optional[Path]:
    """A file to write, checked before any work: its directory must exist."""
    if value is None:
        return None
    folder = value.parent if str(value.parent) else Path(".")
    if not folder.is_dir():
        raise click.BadParameter(f"cannot write {value}: the directory {folder} does not exist", ctx=ctx, param=param)
    return value


@jobs.command("list")
@click.option("--run", "run_id", default="", help="Only the jobs of this run.")
@click.option("--state", "states", multiple=True, type=click.Choice(_STATE_CHOICES), help="Only jobs in this state (repeatable).")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema hilfarm.jobs/v1, without raw samples).")
@_wide_option
@click.pass_context
def jobs_list(ctx, run_id, states, limit, as_json, wide):
    """Recent jobs, newest first."""
    wanted = [farm_pb2.JobState.Value(f"JOB_STATE_{s.upper()}") for s in states]
    with _client(ctx) as client:
        found = client.list_jobs(run_id=run_id, states=wanted, limit=limit)
    if as_json:
        from hilfarm.documents import jobs_document

        _print_json(jobs_document(found, with_samples=False))
    else:
        from hilfarm.display import console, jobs_table

        console(wide=wide).print(jobs_table(found, wide=wide))


@jobs.command("trace")
@click.argument("job_id")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the trace here [standard output].")
@click.pass_context
def jobs_trace(ctx, job_id, output):
    """The full per-operator trace of a job run with --profile-ops (the runtime's own format,
    e.g. ONNX Runtime's Chrome trace JSON: open it in chrome://tracing or Perfetto)."""
    with _client(ctx) as client:
        job = client.get_job(job_id)
        profile = job.result.op_profile
        if not job.result.HasField("op_profile"):
            raise click.ClickException(f"job {job_id} has no per-operator profile (submit it with --profile-ops)")
        if not profile.trace_sha256:
            why = profile.timing_unavailable or "the runtime wrote none"
            raise click.ClickException(f"job {job_id} has a per-operator profile but no trace: {why}")
        stream = output.open("wb") if output is not None else sys.stdout.buffer
        try:
            for block in client.download(profile.trace_sha256):
                stream.write(block)
        finally:
            if output is not None:
                stream.close()
    if output is not None:
        click.echo(f"wrote {output} ({profile.trace_bytes} bytes, {profile.trace_format})", err=True)


@jobs.command("show")
@click.argument("job_id", metavar="JOB")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the job object of hilfarm.run/v1).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              callback=writable_file,
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
        except OSError as exc:
            raise click.ClickException(f"cannot write {plot_path}: {exc.strerror or exc}") from None
        click.echo(f"wrote {plot_path}", err=True)
    if as_json:
        from hilfarm.documents import job_document

        _print_json(job_document(job))
    else:
        from hilfarm.display import console, job_detail

        console().print(job_detail(job))


@jobs.command("watch")
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB...")
@click.option("--json", "as_json", is_flag=True, help="Print the finished jobs as JSON (schema hilfarm.run/v1).")
@_wide_option
@click.pass_context
def jobs_watch(ctx, job_ids, as_json, wide):
    """Follow jobs live until they finish, then print their results (exit codes as submit --wait;
    Ctrl-C stops watching, the jobs go on)."""
    with _client(ctx) as client:
        jobs_ = [client.get_job(job_id) for job_id in job_ids]  # whole ids from prefixes
        finished = _follow(ctx, client, jobs_, live=_live(as_json))
    _report(finished, as_json, finished[0].run_id if finished else "", wide=wide)
    ctx.exit(exit_code_for(finished))


@jobs.command("cancel")
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB...")
@click.pass_context
def jobs_cancel(ctx, job_ids):
    """Cancel queued or running jobs (a running one is stopped on its device)."""
    from hilfarm.display import short_id
    from hilfarm.documents import state_name

    with _client(ctx) as client:
        for job_id in job_ids:
            job = client.cancel_job(job_id)
            click.echo(f"{short_id(job.id)}: {state_name(job.state)}")


# ---------------------------------------------------------------- devices

@main.group()
def devices() -> None:
    """The agents the controller knows."""


@devices.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema hilfarm.devices/v1).")
@_wide_option
@click.pass_context
def devices_list(ctx, as_json, wide):
    """Every registered agent with its profile, state and runtimes."""
    with _client(ctx) as client:
        found = client.list_devices()
    if as_json:
        from hilfarm.documents import devices_document

        _print_json(devices_document(found))
    else:
        from hilfarm.display import console, devices_table

        console(wide=wide).print(devices_table(found, wide=wide))


def _find_device(every: Sequence[farm_pb2.Device], agent_id: str) -> farm_pb2.Device:
    """The agent with this id, or the one whose id starts with it."""
    exact = [d for d in every if d.agent_id == agent_id]
    found = exact or [d for d in every if d.agent_id.startswith(agent_id)]
    if len(found) == 1:
        return found[0]
    if found:
        raise click.ClickException(f"{agent_id!r} starts {len(found)} agent ids: "
                                   f"{', '.join(d.agent_id for d in found)}; give more characters")
    known = ", ".join(d.agent_id for d in every) or "none"
    raise click.ClickException(f"no agent {agent_id!r} has registered (known: {known})")


@devices.command("show")
@click.argument("agent_id", metavar="AGENT")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one device of hilfarm.devices/v1).")
@click.pass_context
def devices_show(ctx, agent_id, as_json):
    """One agent: profile, state, tags, runtimes with their providers, machine."""
    with _client(ctx) as client:
        device = _find_device(client.list_devices(), agent_id)
    if as_json:
        from hilfarm.documents import device_document

        _print_json(device_document(device))
    else:
        from hilfarm.display import console, device_detail

        console().print(device_detail(device))


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


_DATA_DIR_HELP = "HILFARM_DATA_DIR, else the user data dir"


def _cannot_start(error: BaseException) -> "click.ClickException":
    exc = click.ClickException(str(error))
    exc.exit_code = EXIT_FARM_FAILED
    return exc


@controller.command("serve")
@click.option("--bind", default="127.0.0.1:50051", show_default=True,
              help="Address to listen on. Only this machine can reach the default; to serve agents and users "
                   "elsewhere bind to their network (e.g. 0.0.0.0:50051) and give the controller a token.")
@click.option("--db", "db_url", envvar="HILFARM_DB", default=None,
              help="SQLAlchemy URL (env HILFARM_DB); default SQLite in the data dir. "
                   "PostgreSQL: postgresql+psycopg://user@host/db")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Artifacts and the SQLite database [{_DATA_DIR_HELP}, /controller].")
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
@serve_security_options
@click.pass_context
def controller_serve(ctx, bind, db_url, data_dir, max_artifact_bytes, lease_seconds, restart_grace_seconds,
                     artifacts_dir, metrics_bind, remote_write_url, nightly_suites, **security):
    """Serve the user and agent APIs until SIGTERM / Ctrl-C."""
    from hilfarm.controller.server import Controller, serve_forever
    from hilfarm.embedded import default_data_dir

    from hilfarm.suite_files import SuiteError

    try:
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
            nightly=list(nightly_suites),
            **security,
        )
    except SuiteError as error:  # only the --nightly suite files raise it
        raise click.BadParameter(str(error), param_hint="--nightly") from None
    from hilfarm.controller.schema import SchemaError
    from hilfarm.transport import TransportError

    from hilfarm.controller.errors import CannotListen

    try:
        port = server.start(bind)
    except SchemaError as error:
        raise click.ClickException(f"the database cannot be used: {error}") from None
    except CannotListen as error:
        server.store.close()
        raise _cannot_start(error) from None
    except TransportError as error:
        raise click.ClickException(str(error)) from None
    address = f"{bind.rsplit(':', 1)[0]}:{port}"
    click.echo(f"hilfarm controller listening on {address}, data in {server.data_dir}", err=True)
    if server.metrics_port is not None:
        scheme = "https" if server.tls is not None else "http"
        click.echo(f"metrics on {scheme}://{metrics_bind.rsplit(':', 1)[0]}:{server.metrics_port}/metrics", err=True)
    click.echo(f"clients and agents: export HILFARM_CONTROLLER={address}  (or hilfarm --controller {address} ...)",
               err=True)
    serve_forever(server)


@controller.command("migrate")
@click.option("--db", "db_url", envvar="HILFARM_DB", default=None,
              help="SQLAlchemy URL (env HILFARM_DB); default SQLite in the data dir.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Where the default SQLite database is [{_DATA_DIR_HELP}, /controller].")
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
              help=f"Artifact cache and agent state [{_DATA_DIR_HELP}, /agent].")
@click.option("--agent-id", default=None, help="Stable id of this device (default: derived and stored).")
@click.option("--adb-serial", default=None, metavar="SERIAL",
              help="Phone mode: drive the Android device with this serial over adb from this host "
                   "(one agent per phone; use --profile android-phone or a unit profile extending it).")
@agent_security_options
@click.pass_context
def agent_run(ctx, profile, tags, data_dir, agent_id, adb_serial, enroll_token, allow_root):
    """Dial out to the controller and run the jobs it leases to this device."""
    from hilfarm.admin_cli import refuse_root
    from hilfarm.agent.service import AgentConfig, run_agent
    from hilfarm.embedded import default_data_dir

    refuse_root(allow_root)
    if adb_serial and not agent_id:
        agent_id = f"android-{re.sub(r'[^A-Za-z0-9._-]+', '-', adb_serial)}"
    config = AgentConfig(
        controller=ctx.obj["controller"],
        token=ctx.obj["token"],
        profile=profile or ("android-phone" if adb_serial else None),
        tags=list(tags),
        data_dir=data_dir or default_data_dir() / ("agent" if not adb_serial else f"agent-{agent_id}"),
        agent_id=agent_id,
        adb_serial=adb_serial,
        enroll_token=enroll_token,
        tls=ctx.obj.get("tls"),
    )
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        run_agent(config, stop)
    except Exception as exc:
        from hilfarm.agent.android import AdbError

        if isinstance(exc, AdbError):
            raise click.ClickException(str(exc)) from None
        raise


@main.command()
@click.option("--bind", default="127.0.0.1:50051", show_default=True, help="Controller address.")
@click.option("--db", "db_url", envvar="HILFARM_DB", default=None, help="SQLAlchemy URL [SQLite in the data dir].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Where the farm keeps its database, artifacts and cache [{_DATA_DIR_HELP}].")
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
    from hilfarm.controller.errors import CannotListen
    from hilfarm.transport import TransportError

    try:
        farm.start()
    except SuiteError as error:
        farm.stop()
        raise click.BadParameter(str(error), param_hint="--nightly") from None
    except CannotListen as error:
        farm.stop()
        raise _cannot_start(error) from None
    except TransportError as error:
        farm.stop()
        raise click.ClickException(f"{error} (hilfarm up has no --insecure: give it --token, or keep it on loopback)") from None
    stop = threading.Event()
    _stop_on_signals(stop)
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


@main.command()
@click.argument("models", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Where the farm keeps its database, artifacts and cache [{_DATA_DIR_HELP}].")
@_settings_options
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON (schema hilfarm.run/v1).")
@_wide_option
@click.pass_context
def demo(ctx, models, data_dir, as_json, wide, **options):
    """Start a farm on this machine, benchmark models, print the results, stop.

    With no MODEL it first writes a small ONNX and a small TFLite model of its own.
    """
    from hilfarm.embedded import EmbeddedFarm

    settings, inputs_file = build_settings(options)
    shapes = input_shapes_by_model(list(options.get("input_shapes") or ()), list(models))
    farm = EmbeddedFarm(data_dir=data_dir)
    farm.start()
    try:
        paths = list(models)
        if not paths:
            from hilfarm.sample_models import make_demo_models

            paths = make_demo_models(farm.data_dir / "demo-models")
            shapes = input_shapes_by_model(list(options.get("input_shapes") or ()), paths)
            if not as_json:
                click.echo("made sample models: " + ", ".join(str(p) for p in paths), err=True)
        with FarmClient(farm.address) as client:
            uploads = _upload_all(client, paths, quiet=as_json)
            add_input_shapes(settings, shapes, uploads)
            if inputs_file is not None:
                settings.inputs_sha256 = client.upload(inputs_file, fmt="npz").sha256
            run = client.submit(uploads, [farm.local_profile()], settings)
            if not as_json:
                _print_created(run.jobs, err=True)
            # The farm stops with this command: an interrupted demo cancels its jobs.
            jobs_ = _follow(ctx, client, run.jobs, live=_live(as_json), cancel_on_interrupt=True)
        _report(jobs_, as_json, run.id, run.created_at, wide=wide, farm_stays=False)
    finally:
        farm.stop()
    ctx.exit(exit_code_for(jobs_))


# ---------------------------------------------------------------- regression testing (hilfarm/regress.py)

from hilfarm.regress import attach as _attach_regress  # noqa: E402 - commands join the group defined above

_attach_regress(main)

# ---------------------------------------------------------------- provisioning devices over SSH (hilfarm/provision.py)

from hilfarm.provision import attach as _attach_provision  # noqa: E402 - paramiko is imported only when used

_attach_provision(main)

# ---------------------------------------------------------------- tokens and agent identities (hilfarm/admin_cli.py)

from hilfarm.admin_cli import attach as _attach_admin  # noqa: E402 - commands join the group defined above

_attach_admin(main)


if __name__ == "__main__":
    main()
