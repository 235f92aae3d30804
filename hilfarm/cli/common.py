"""What every command group shares: exit codes, the client of the root group's controller,
JSON output, errors as one readable line."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Optional, Sequence

import click
import grpc

from hilfarm.client import FarmClient, ModelFormatError, model_format
from hilfarm.contract import RUNTIME_FOR_FORMAT, is_farm_fault
from hilfarm.v1 import farm_pb2

# Exit codes shared by every command that waits for results.
EXIT_OK = 0
EXIT_MODEL_FAILED = 1  # the model or the request is to blame: fix the model or the settings
EXIT_FARM_FAILED = 2  # the farm could not run it: no device, infrastructure, cancelled
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); SIGTERM gives 143

def exit_code_for(jobs: Sequence[farm_pb2.Job]) -> int:
    code = EXIT_OK
    for job in jobs:
        if job.state == farm_pb2.JOB_STATE_SUCCEEDED:
            continue
        if job.state == farm_pb2.JOB_STATE_FAILED and not is_farm_fault(farm_pb2.FailureCategory.Name(job.failure.category)):
            code = max(code, EXIT_MODEL_FAILED)
        else:
            code = EXIT_FARM_FAILED
    return code


def farm_client(ctx: click.Context) -> FarmClient:
    return FarmClient(ctx.obj["controller"], ctx.obj["token"], tls=ctx.obj.get("tls"))


def print_json(document: dict) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False))


def fail_rpc(error: grpc.RpcError, address: str) -> "click.ClickException":
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


wide_option = click.option("--wide", is_flag=True, help="Every figure, one row per job, however wide.")


def writable_file(ctx: click.Context, param: click.Parameter, value: Optional[Path]) -> Optional[Path]:
    """A file to write, checked before any work: its directory must exist."""
    if value is None:
        return None
    folder = value.parent if str(value.parent) else Path(".")
    if not folder.is_dir():
        raise click.BadParameter(f"cannot write {value}: the directory {folder} does not exist", ctx=ctx, param=param)
    return value


def stop_on_signals(stop: threading.Event) -> None:
    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


DATA_DIR_HELP = "HILFARM_DATA_DIR, else the user data dir"


def prepared_data_dir(path: Path) -> Path:
    """``path`` (from --data-dir or HILFARM_DATA_DIR) created if need be, before anything starts;
    a usage error naming it when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"cannot use {path}: {exc.strerror or exc} ({exc.filename or path})",
                                 param_hint="--data-dir / HILFARM_DATA_DIR") from None
    return path


def checked_profile(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """--profile read as the agent will read it (a shipped name, or a YAML file and what it extends),
    so a name that does not exist or a file that is no profile is a usage error before anything starts."""
    if value is None:
        return None
    from hilfarm.agent.profiles import ProfileError, load_profile

    try:
        load_profile(value)
    except ProfileError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None
    return value


def cannot_start(error: BaseException) -> "click.ClickException":
    exc = click.ClickException(str(error))
    exc.exit_code = EXIT_FARM_FAILED
    return exc


def check_placement(client: FarmClient, models: Sequence[Path], devices: Sequence[str],
                    settings: farm_pb2.JobSettings, tags: Sequence[str], *, hint: str) -> None:
    """Stop with exit 2, within seconds, when no agent the controller knows can take a job
    (``hint``: what the person can do about it)."""
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
        text += f"\n({hint})"
        exc = click.ClickException(text)
        exc.exit_code = EXIT_FARM_FAILED
        raise exc
