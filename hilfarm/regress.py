"""`hilfarm regress SUITE.yaml` and `hilfarm results ...`: regression suites, baselines,
nightly history and comparisons, from the command line and CI.

Exit codes of `regress`: 0 every case passed, 1 a confirmed regression, a broken budget, a
budget the device could not measure (unless --allow-unknown) or a model that failed, 2 the farm
could not run the suite (no device took a job, infrastructure failure, controller unreachable).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import click
from google.protobuf import json_format

from hilfarm.client import FarmClient
from hilfarm.v1 import farm_pb2

EXIT_OK, EXIT_FAIL, EXIT_FARM = 0, 1, 2


def exit_code_for_suite(run: farm_pb2.SuiteRun, *, allow_unknown: bool = False) -> int:
    outcomes = {c.outcome for c in run.cases}
    if run.outcome == "error" or "error" in outcomes or not run.cases:
        return EXIT_FARM
    if outcomes & {"regression", "budget_broken", "model_failed"}:
        return EXIT_FAIL
    if "unknown_budget" in outcomes and not allow_unknown:
        return EXIT_FAIL
    return EXIT_OK


def _client(ctx: click.Context) -> FarmClient:
    return FarmClient(ctx.obj["controller"], ctx.obj["token"], tls=ctx.obj.get("tls"))


def _message_json(msg) -> dict:  # type: ignore[no-untyped-def]
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


@click.command()
@click.argument("suite_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--baseline", "baseline", default=None, metavar="REF",
              help="Baseline to compare with: a name (main) or @last [the suite's, else main].")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path), help="Write JUnit XML here.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a self-contained HTML report with plots here.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY).")
@click.option("--accept", is_flag=True, help="Promote this run's results to the baseline when the farm ran every case.")
@click.option("--allow-unknown", is_flag=True,
              help="A budget the device cannot measure does not fail the run (it still shows as unknown).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=None,
              help="Give up waiting after this many seconds (exit 2).")
@click.option("--json", "as_json", is_flag=True, help="Print the suite run as JSON (the SuiteRun message).")
@click.pass_context
def regress(ctx, suite_file, baseline, junit_path, report_path, markdown_path, accept, allow_unknown, timeout_s, as_json):
    """Run SUITE_FILE on the farm, compare with the baseline, judge the budgets, write reports.

    Exit 0 all passed, 1 a regression or a broken (or unmeasurable) budget, 2 the farm could
    not run it.
    """
    from hilfarm.suite_files import SuiteError, load_suite

    try:
        suite = load_suite(suite_file)
    except SuiteError as exc:
        raise click.UsageError(str(exc)) from None
    with _client(ctx) as client:
        models: List[Dict[str, str]] = []
        for m in suite.models:
            if m.path is not None:
                up = client.upload(m.path)
                models.append({"sha256": up.sha256, "name": m.name, "format": up.format})
            else:
                models.append({"sha256": m.sha256, "name": m.name, "format": m.format})
        spec = json_format.ParseDict(suite.spec(models, baseline), farm_pb2.SuiteSpec())
        run = client.start_suite_run(spec, accept=accept)
        if not as_json:
            click.echo(f"suite {suite.name}: run {run.id}, {len(suite.models)} model(s) on "
                       f"{', '.join(suite.devices)}, baseline {run.baseline}", err=True)
        deadline = time.monotonic() + timeout_s if timeout_s else None
        while run.state != "finished":
            if deadline is not None and time.monotonic() > deadline:
                click.echo(f"gave up waiting for suite run {run.id} after {timeout_s:g} s", err=True)
                ctx.exit(EXIT_FARM)
            time.sleep(0.5)
            run = client.get_suite_run(run.id)
        baselines = {}
        if report_path is not None:
            for case in run.cases:
                if case.baseline_job_id and case.baseline_job_id not in baselines:
                    baselines[case.baseline_job_id] = client.get_job(case.baseline_job_id)
    from hilfarm import reports

    if junit_path is not None:
        junit_path.write_text(reports.junit_xml(run, allow_unknown=allow_unknown))
    if markdown_path is not None:
        with markdown_path.open("a") as f:  # appending: $GITHUB_STEP_SUMMARY collects several steps
            f.write(reports.markdown(run))
    if report_path is not None:
        report_path.write_text(reports.html_report(run, baselines))
    if as_json:
        click.echo(json.dumps(_message_json(run), indent=2))
    else:
        _print_suite(run)
    ctx.exit(exit_code_for_suite(run, allow_unknown=allow_unknown))


def _print_suite(run: farm_pb2.SuiteRun) -> None:
    from rich.table import Table

    from hilfarm.display import console
    from hilfarm.reports import status_name

    table = Table(title=f"suite {run.suite}: {run.outcome}", show_lines=False)
    for column in ("outcome", "model", "device", "runtime", "budgets", "detail"):
        table.add_column(column, overflow="fold")
    style = {"pass": "green", "no_baseline": "yellow", "unknown_budget": "yellow"}
    for case in run.cases:
        budgets = " ".join(f"{v.constraint}:{status_name(v.status)}" for v in case.verdicts) or "-"
        table.add_row(f"[{style.get(case.outcome, 'red')}]{case.outcome}[/]", case.model_name, case.device_profile,
                      case.runtime_config, budgets, case.message)
    console().print(table)
    if run.accepted:
        console().print(f"results accepted as baseline {run.baseline}")
    if run.message:
        console().print(run.message)


# ---------------------------------------------------------------- results

@click.group()
def results() -> None:
    """History, comparisons and baselines of results."""


@results.command("history")
@click.argument("model")
@click.option("--device", "device", required=True, metavar="PROFILE", help="Device profile.")
@click.option("--metric", default="latency.p50", show_default=True,
              help="latency.p50, latency.p99, latency.mean, latency.load, memory.peak, energy.per_inference, "
                   "power.mean, temperature.max")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="Newest N points (0: up to a year).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the HistoryResponse message).")
@click.pass_context
def results_history(ctx, model, device, metric, limit, as_json):
    """Suite results of MODEL on a device over time, with the nights a figure shifted."""
    from hilfarm.constraints import format_value

    with _client(ctx) as client:
        history = client.history(model, device, metric, limit)
    if as_json:
        click.echo(json.dumps(_message_json(history), indent=2))
        return
    shifts = {c.index: c for c in history.change_points}
    click.echo(f"{model} on {device}: {history.metric} ({len(history.points)} runs)")
    for i, p in enumerate(history.points):
        mark = ""
        if i in shifts:
            c = shifts[i]
            mark = f"  ◀ shift {c.ratio - 1:+.1%} (median {format_value(c.before, history.unit)} → " \
                   f"{format_value(c.after, history.unit)}, p={c.p_value:.3g})"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.t))
        click.echo(f"  {when}  {format_value(p.value, history.unit):>12}  {p.outcome:<14} {p.job_id[:12]}{mark}")
    if not history.points:
        click.echo("  no suite results yet (run `hilfarm regress` or a nightly suite)")
    elif not history.change_points:
        click.echo("  no change point found")
    click.echo(f"method: {history.method}", err=True)


@results.command("compare")
@click.argument("baseline_job")
@click.argument("candidate_job")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the Comparison message).")
@click.pass_context
def results_compare(ctx, baseline_job, candidate_job, as_json):
    """Compare job CANDIDATE_JOB with BASELINE_JOB on their raw samples. Exit 1 on a regression."""
    with _client(ctx) as client:
        comparison = client.compare_jobs(baseline_job, candidate_job)
    if as_json:
        click.echo(json.dumps(_message_json(comparison), indent=2))
    else:
        click.echo(f"baseline {baseline_job} vs candidate {candidate_job}: "
                   f"{'REGRESSION' if comparison.regression else 'no regression'}")
        for m in comparison.metrics:
            click.echo(f"  [{m.verdict}] {m.summary}")
            click.echo(f"      {m.statistic}")
    ctx.exit(EXIT_FAIL if comparison.regression else EXIT_OK)


@results.command("baselines")
@click.option("--name", default="", help="Only this baseline name.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def results_baselines(ctx, name, as_json):
    """The current baseline of every model, device and runtime configuration."""
    with _client(ctx) as client:
        found = client.list_baselines(name=name)
    if as_json:
        click.echo(json.dumps([_message_json(b) for b in found], indent=2))
        return
    for b in found:
        click.echo(f"{b.name:<10} {b.model_name:<24} {b.device_profile:<18} {b.runtime_config:<30} job {b.job_id}")


@results.command("accept")
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--name", default="main", show_default=True, help="Baseline name.")
@click.pass_context
def results_accept(ctx, job_ids, name):
    """Make finished jobs the baseline NAME for their model, device and runtime configuration."""
    with _client(ctx) as client:
        for b in client.accept_baseline(name, job_ids):
            click.echo(f"baseline {b.name}: {b.model_name} on {b.device_profile} [{b.runtime_config}] = job {b.job_id}")


def attach(main: click.Group) -> None:
    """Add these commands to the `hilfarm` group."""
    main.add_command(regress)
    main.add_command(results)
