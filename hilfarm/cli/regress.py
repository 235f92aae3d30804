"""`hilfarm regress SUITE.yaml`: run a regression suite on the farm, from the command line and CI.

Exit codes: 0 every case passed, 1 a confirmed regression, a broken budget, a budget the device
could not measure (unless --allow-unknown) or a model that failed, 2 the farm could not run the
suite (no device took a job, infrastructure failure, controller unreachable).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List

import click
from google.protobuf import json_format

from hilfarm.cli.common import (EXIT_FARM_FAILED, EXIT_INTERRUPTED, EXIT_MODEL_FAILED, EXIT_OK, farm_client,
                                print_json, writable_file)
from hilfarm.v1 import farm_pb2


def exit_code_for_suite(run: farm_pb2.SuiteRun, *, allow_unknown: bool = False) -> int:
    outcomes = {c.outcome for c in run.cases}
    if run.outcome == "error" or "error" in outcomes or not run.cases:
        return EXIT_FARM_FAILED
    if outcomes & {"regression", "budget_broken", "model_failed"}:
        return EXIT_MODEL_FAILED
    if "unknown_budget" in outcomes and not allow_unknown:
        return EXIT_MODEL_FAILED
    return EXIT_OK


@click.command()
@click.argument("suite_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--baseline", "baseline", default=None, metavar="REF",
              help="Baseline to compare with: a name (main) or @last [the suite's, else main].")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path), callback=writable_file,
              help="Write JUnit XML here.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), callback=writable_file,
              help="Write a self-contained HTML report with plots here.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path), callback=writable_file,
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
    with farm_client(ctx) as client:
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
                    ctx.exit(EXIT_FARM_FAILED)
                time.sleep(0.5)
                run = client.get_suite_run(run.id)
        except KeyboardInterrupt:
            # The suite run is state on the controller: it finishes whether anyone waits or not.
            click.echo(f"interrupted: suite run {run.id} goes on on the controller", err=True)
            ctx.exit(EXIT_INTERRUPTED)
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

        print_json(suite_run_document(run))
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
