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


def _print_json(document: dict) -> None:
    click.echo(json.dumps(document, indent=2))


def _writable(ctx: click.Context, param: click.Parameter, value: Optional[Path]) -> Optional[Path]:
    from hilfarm.cli import writable_file

    return writable_file(ctx, param, value)


@click.command()
@click.argument("suite_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--baseline", "baseline", default=None, metavar="REF",
              help="Baseline to compare with: a name (main) or @last [the suite's, else main].")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path), callback=_writable,
              help="Write JUnit XML here.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), callback=_writable,
              help="Write a self-contained HTML report with plots here.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path), callback=_writable,
              help="Write a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY).")
@click.option("--accept", is_flag=True, help="Promote this run's results to the baseline when the farm ran every case.")
@click.option("--allow-unknown", is_flag=True,
              help="A budget the device cannot measure does not fail the run (it still shows as unknown).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=None,
              help="Give up waiting after this many seconds (exit 2).")
@click.option("--json", "as_json", is_flag=True, help="Print the suite run as JSON (schema hilfarm.suite-run/v1).")
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
        try:
            while run.state != "finished":
                if deadline is not None and time.monotonic() > deadline:
                    click.echo(f"gave up waiting for suite run {run.id} after {timeout_s:g} s", err=True)
                    ctx.exit(EXIT_FARM)
                time.sleep(0.5)
                run = client.get_suite_run(run.id)
        except KeyboardInterrupt:
            # The suite run is state on the controller: it finishes whether anyone waits or not.
            click.echo(f"interrupted: suite run {run.id} goes on on the controller", err=True)
            ctx.exit(130)
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
        from hilfarm.documents import suite_run_document

        _print_json(suite_run_document(run))
    else:
        from hilfarm.display import console

        console().print(suite_view(run))
    ctx.exit(exit_code_for_suite(run, allow_unknown=allow_unknown))


_OUTCOME_STYLE = {"pass": "green", "no_baseline": "yellow", "unknown_budget": "yellow", "inconclusive": "yellow"}


def suite_view(run: farm_pb2.SuiteRun):  # type: ignore[no-untyped-def]
    """The suite run as people read it: one row per case, what each found on lines under it."""
    from rich.console import Group
    from rich.text import Text

    from hilfarm.display import Column, FittedTable, Row, short_ids, verdicts_table

    keys = short_ids(c.job_id for c in run.cases)
    rows, notes = [], []
    for case in run.cases:
        key = keys.get(case.job_id, "")
        budgets = "-"
        if case.verdicts:
            # A pass on a simulated sensor is not a pass.
            passed = sum(1 for v in case.verdicts if v.status == farm_pb2.VERDICT_STATUS_PASS and not v.simulated)
            budgets = f"{passed}/{len(case.verdicts)} met"
        rows.append(Row(key or case.model_name, [
            Text(case.outcome + (" (simulated)" if case.simulated else ""),
                 style=_OUTCOME_STYLE.get(case.outcome, "red")), key, case.model_name,
            case.device_profile, budgets, f"{case.duration_seconds:.0f}",
        ]))
        if case.message:
            notes.append(Text(f"{key or case.model_name}: {case.message}",
                              style="" if case.outcome == "pass" else _OUTCOME_STYLE.get(case.outcome, "red")))
        if case.verdicts and case.HasField("job"):
            notes.append(verdicts_table(case.job, key))
    table = FittedTable([Column("outcome"), Column("job"), Column("model", flexible=True),
                         Column("device", flexible=True), Column("budgets"), Column("s", "right")], rows,
                        title=f"suite {run.suite}: {run.outcome or run.state} (baseline {run.baseline})")
    tail = []
    if run.accepted:
        tail.append(Text(f"results accepted as baseline {run.baseline}"))
    if run.message:
        tail.append(Text(run.message))
    return Group(table, *notes, *tail)


# ---------------------------------------------------------------- results

@click.group()
def results() -> None:
    """History, comparisons and baselines of results."""


@results.command("history")
@click.argument("model")
@click.option("--device", "device", required=True, metavar="PROFILE", help="Device profile.")
@click.option("--metric", default="latency.p50", show_default=True,
              help="latency.p50, latency.p99, latency.mean, latency.load, latency.between_repeat_spread "
                   "(the device's noise), memory.peak, energy.per_inference, power.mean, temperature.max")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="Newest N points (0: up to a year).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema hilfarm.history/v1).")
@click.pass_context
def results_history(ctx, model, device, metric, limit, as_json):
    """Suite results of MODEL on a device over time, with the nights a figure shifted.

    MODEL is the name a suite gave the model (by default its file name): a path is taken by
    its file name. Exit 1 when there is no suite result for it on the device.
    """
    from hilfarm.constraints import format_value

    name = Path(model).name  # a path, as in the suite file, names the model by its file name
    with _client(ctx) as client:
        history = client.history(name, device, metric, limit)
        if not history.points:
            known = sorted({c.model_name for r in client.list_suite_runs(limit=200) for c in r.cases
                            if c.device_profile == device})
            raise click.ClickException(
                f"no suite results for {name!r} on {device}"
                + (f"; models with results there: {', '.join(known)}" if known
                   else " (run `hilfarm regress SUITE.yaml` or a nightly suite first)"))
    if as_json:
        from hilfarm.documents import history_document

        _print_json(history_document(name, device, history))
        return
    from rich.text import Text

    from hilfarm.display import Column, FittedTable, Row, console, short_ids

    shifts = {c.index: c for c in history.change_points}
    keys = short_ids(p.job_id for p in history.points)
    rows = []
    for i, p in enumerate(history.points):
        mark = ""
        if i in shifts:
            c = shifts[i]
            mark = (f"◀ shift {c.ratio - 1:+.1%} (median {format_value(c.before, history.unit)} → "
                    f"{format_value(c.after, history.unit)}, p={c.p_value:.3g})")
        rows.append(Row(keys[p.job_id], [time.strftime("%Y-%m-%d %H:%M", time.localtime(p.t)),
                                         format_value(p.value, history.unit), p.outcome, keys[p.job_id],
                                         Text(mark, style="bold yellow")]))
    out = console()
    out.print(FittedTable([Column("when"), Column(history.metric, "right"), Column("outcome"), Column("job"),
                           Column("change", flexible=True, optional=True)], rows,
                          title=f"{name} on {device}: {history.metric}, {len(history.points)} runs"))
    if not history.change_points:
        out.print("no change point found")
    click.echo(f"method: {history.method}", err=True)


@results.command("compare")
@click.argument("baseline_job")
@click.argument("candidate_job")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema hilfarm.comparison/v1).")
@click.pass_context
def results_compare(ctx, baseline_job, candidate_job, as_json):
    """Compare job CANDIDATE_JOB with BASELINE_JOB (ids or unique prefixes), repeat by repeat
    (each job's per-process medians are the units) with the device's noise history, and node by
    node where both ran with --profile-ops. Exit 1 on a regression."""
    from hilfarm import op_profiles

    with _client(ctx) as client:
        comparison = client.compare_jobs(baseline_job, candidate_job)
        # Node by node, where both jobs ran with --profile-ops.
        a, b = (client.get_job(j).result for j in (baseline_job, candidate_job))
    nodes = (op_profiles.compare_op_profiles(a.op_profile, b.op_profile)
             if a.HasField("op_profile") and b.HasField("op_profile") else None)
    if as_json:
        from hilfarm.documents import comparison_document

        doc = comparison_document(comparison)
        doc["op_nodes"] = op_profiles.comparison_document(nodes) if nodes is not None else None
        _print_json(doc)
    else:
        from rich.console import Group
        from rich.padding import Padding
        from rich.text import Text

        from hilfarm.display import console, short_id

        if comparison.regression:
            verdict = Text("REGRESSION", style="bold red")
        elif any(m.inconclusive for m in comparison.metrics):
            verdict = Text("inconclusive", style="yellow")
        else:
            verdict = Text("no regression", style="green")
        if comparison.simulated:
            verdict.append(" (simulated figures compared)", style="yellow")
        lines: list = [Text(f"baseline {short_id(comparison.baseline_job_id)} vs candidate "
                            f"{short_id(comparison.candidate_job_id)}: ").append_text(verdict)]
        for m in comparison.metrics:
            style = "red" if m.verdict == "regression" else ("green" if m.verdict == "improvement" else "")
            lines.append(Padding(Text(f"{m.verdict:<12} {m.summary}", style=style), (0, 0, 0, 2)))
            if m.statistic:
                lines.append(Padding(Text(m.statistic, style="dim"), (0, 0, 0, 15)))
        if nodes is not None:
            lines.append(op_profiles.comparison_table(nodes))
        console().print(Group(*lines))
    ctx.exit(EXIT_FAIL if comparison.regression else EXIT_OK)


@results.command("baselines")
@click.option("--name", default="", help="Only this baseline name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema hilfarm.baselines/v1).")
@click.pass_context
def results_baselines(ctx, name, as_json):
    """The current baseline of every model, device and runtime configuration."""
    with _client(ctx) as client:
        found = client.list_baselines(name=name)
    if as_json:
        from hilfarm.documents import baselines_document

        _print_json(baselines_document(found))
        return
    from hilfarm.display import Column, FittedTable, Row, console, short_ids

    keys = short_ids(b.job_id for b in found)
    console().print(FittedTable(
        [Column("name"), Column("model", flexible=True), Column("device", flexible=True),
         Column("runtime configuration", flexible=True), Column("job"), Column("accepted")],
        [Row(keys[b.job_id], [b.name, b.model_name, b.device_profile, b.runtime_config, keys[b.job_id],
                              time.strftime("%Y-%m-%d %H:%M", time.localtime(b.accepted_at))]) for b in found]))
    if not found:
        click.echo("no baselines yet (`hilfarm regress SUITE.yaml --accept` or `hilfarm results accept JOB...`)")


@results.command("accept")
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--name", default="main", show_default=True, help="Baseline name.")
@click.pass_context
def results_accept(ctx, job_ids, name):
    """Make finished jobs (ids or unique prefixes) the baseline NAME for their model, device and
    runtime configuration."""
    from hilfarm.display import short_id

    with _client(ctx) as client:
        for b in client.accept_baseline(name, job_ids):
            click.echo(f"baseline {b.name}: {b.model_name} on {b.device_profile} [{b.runtime_config}] "
                       f"= job {short_id(b.job_id)}")


def attach(main: click.Group) -> None:
    """Add these commands to the `hilfarm` group."""
    main.add_command(regress)
    main.add_command(results)
