"""`hilfarm results ...`: nightly history, comparisons and baselines of results."""

from __future__ import annotations

import time
from pathlib import Path

import click

from hilfarm.cli.common import EXIT_MODEL_FAILED, EXIT_OK, farm_client, print_json


@click.group()
def results() -> None:
    """History, comparisons and baselines of results."""


@results.command("history")
@click.argument("model")
@click.option("--device", "device", required=True, metavar="PROFILE", help="Device profile.")
@click.option("--metric", default="latency.p50", show_default=True,
              help="latency.p50, latency.p99, latency.mean, latency.load, latency.fastest (median of the "
                   "repeats' fastest inferences), latency.between_repeat_spread and latency.fastest_spread "
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
    with farm_client(ctx) as client:
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

        print_json(history_document(name, device, history))
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

    with farm_client(ctx) as client:
        comparison = client.compare_jobs(baseline_job, candidate_job)
        # Node by node, where both jobs ran with --profile-ops.
        a, b = (client.get_job(j).result for j in (baseline_job, candidate_job))
    nodes = (op_profiles.compare_op_profiles(a.op_profile, b.op_profile)
             if a.HasField("op_profile") and b.HasField("op_profile") else None)
    if as_json:
        from hilfarm.documents import comparison_document

        doc = comparison_document(comparison)
        doc["op_nodes"] = op_profiles.comparison_document(nodes) if nodes is not None else None
        print_json(doc)
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
    ctx.exit(EXIT_MODEL_FAILED if comparison.regression else EXIT_OK)


@results.command("baselines")
@click.option("--name", default="", help="Only this baseline name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema hilfarm.baselines/v1).")
@click.pass_context
def results_baselines(ctx, name, as_json):
    """The current baseline of every model, device and runtime configuration."""
    with farm_client(ctx) as client:
        found = client.list_baselines(name=name)
    if as_json:
        from hilfarm.documents import baselines_document

        print_json(baselines_document(found))
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

    with farm_client(ctx) as client:
        for b in client.accept_baseline(name, job_ids):
            click.echo(f"baseline {b.name}: {b.model_name} on {b.device_profile} [{b.runtime_config}] "
                       f"= job {short_id(b.job_id)}")
