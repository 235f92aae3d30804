"""What `submit`, `jobs watch` and `demo` share: uploading models, waiting for jobs (Ctrl-C,
SIGTERM and timeouts leave them running or cancel them) and printing what they found."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import click
import grpc

from hilfarm.cli.common import EXIT_FARM_FAILED, print_json
from hilfarm.client import DEFAULT_CONTROLLER, FarmClient, ModelFormatError, Upload
from hilfarm.units import format_bytes
from hilfarm.v1 import farm_pb2


def upload_all(client: FarmClient, models: Sequence[Path], quiet: bool) -> List[Upload]:
    uploads = []
    for path in models:
        try:
            upload = client.upload(path)
        except ModelFormatError as error:
            raise click.BadParameter(str(error), param_hint="MODEL") from None
        if not quiet:
            sent = (f"sent {format_bytes(upload.bytes_sent, 'MiB')}" if upload.bytes_sent
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


def follow(ctx: click.Context, client: FarmClient, jobs: Sequence[farm_pb2.Job], *, live: bool,
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


def report(jobs: Sequence[farm_pb2.Job], as_json: bool, run_id: str, created_at: float = 0.0,
            wide: bool = False, farm_stays: bool = True) -> None:
    """``farm_stays``: the controller goes on answering, so `jobs show` can say more later."""
    if as_json:
        from hilfarm.documents import run_document

        print_json(run_document(farm_pb2.Run(id=run_id, created_at=created_at, jobs=jobs)))
    else:
        from hilfarm.display import console, results_table

        console(wide=wide).print(results_table(jobs, wide=wide, point_to_detail=farm_stays))


def live(as_json: bool) -> bool:
    """Redraw progress only for a person: on a terminal, and never around JSON."""
    return not as_json and sys.stderr.isatty()


def print_created(jobs: Sequence[farm_pb2.Job], err: bool) -> None:
    from hilfarm.display import short_ids

    keys = short_ids(j.id for j in jobs)
    for job in jobs:
        click.echo(f"job {keys[job.id]}  {job.model_name} on {job.device_profile}", err=err)
