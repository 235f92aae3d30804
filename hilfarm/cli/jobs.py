"""`hilfarm submit` and `hilfarm jobs ...`: create jobs, then list, show, watch and cancel them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import click

from hilfarm.cli.common import (EXIT_MODEL_FAILED, EXIT_OK, check_placement, exit_code_for, farm_client,
                                print_json, wide_option, writable_file)
from hilfarm.cli.follow import follow, live, print_created, report, upload_all
from hilfarm.cli.job_settings import add_input_shapes, build_settings, input_shapes_by_model, settings_options
from hilfarm.v1 import farm_pb2


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--device", "devices", multiple=True, required=True, metavar="PROFILE",
              help="Device profile to run on (repeatable): one job per model and device.")
@click.option("--tag", "tags", multiple=True, help="Only agents with this tag (repeatable).")
@click.option("--attempts", "max_attempts", type=click.IntRange(min=0), default=0,
              help="Attempts when an agent is lost mid-job (0: controller default).")
@settings_options
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
@wide_option
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
    with farm_client(ctx) as client:
        if not queue:
            check_placement(client, models, devices, settings, tags,
                            hint="--queue submits anyway and waits for a device that is not enrolled yet")
        uploads = upload_all(client, models, quiet=as_json)
        add_input_shapes(settings, shapes, uploads)
        if inputs_file is not None:
            settings.inputs_sha256 = client.upload(inputs_file, fmt="npz").sha256
        run = client.submit(uploads, devices, settings, tags, max_attempts, constraints=budgets, constraint_set=set_name)
        if not wait:
            if as_json:
                from hilfarm.documents import run_document

                print_json(run_document(run))
            else:
                print_created(run.jobs, err=False)
            return
        if not as_json:
            print_created(run.jobs, err=True)
        jobs_ = follow(ctx, client, run.jobs, live=live(as_json), timeout=wait_timeout,
                        cancel_on_interrupt=cancel_on_interrupt)
        report(jobs_, as_json, run.id, run.created_at, wide=wide)
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

@click.group()
def jobs() -> None:
    """List, show, watch and cancel jobs. JOB is a job id or a unique prefix of one (as in git)."""


_STATE_CHOICES = ["queued", "leased", "running", "succeeded", "failed", "cancelled"]


@jobs.command("list")
@click.option("--run", "run_id", default="", help="Only the jobs of this run.")
@click.option("--state", "states", multiple=True, type=click.Choice(_STATE_CHOICES), help="Only jobs in this state (repeatable).")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema hilfarm.jobs/v1, without raw samples).")
@wide_option
@click.pass_context
def jobs_list(ctx, run_id, states, limit, as_json, wide):
    """Recent jobs, newest first."""
    wanted = [farm_pb2.JobState.Value(f"JOB_STATE_{s.upper()}") for s in states]
    with farm_client(ctx) as client:
        found = client.list_jobs(run_id=run_id, states=wanted, limit=limit)
    if as_json:
        from hilfarm.documents import jobs_document

        print_json(jobs_document(found, with_samples=False))
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
    with farm_client(ctx) as client:
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
    with farm_client(ctx) as client:
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

        print_json(job_document(job))
    else:
        from hilfarm.display import console, job_detail

        console().print(job_detail(job))


@jobs.command("watch")
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB...")
@click.option("--json", "as_json", is_flag=True, help="Print the finished jobs as JSON (schema hilfarm.run/v1).")
@wide_option
@click.pass_context
def jobs_watch(ctx, job_ids, as_json, wide):
    """Follow jobs live until they finish, then print their results (exit codes as submit --wait;
    Ctrl-C stops watching, the jobs go on)."""
    with farm_client(ctx) as client:
        jobs_ = [client.get_job(job_id) for job_id in job_ids]  # whole ids from prefixes
        finished = follow(ctx, client, jobs_, live=live(as_json))
    report(finished, as_json, finished[0].run_id if finished else "", wide=wide)
    ctx.exit(exit_code_for(finished))


@jobs.command("cancel")
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB...")
@click.pass_context
def jobs_cancel(ctx, job_ids):
    """Cancel queued or running jobs (a running one is stopped on its device)."""
    from hilfarm.display import short_id
    from hilfarm.documents import state_name

    with farm_client(ctx) as client:
        for job_id in job_ids:
            job = client.cancel_job(job_id)
            click.echo(f"{short_id(job.id)}: {state_name(job.state)}")
