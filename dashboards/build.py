"""Builds the Grafana dashboards in this directory from code (grafana-foundation-sdk).

    python dashboards/build.py          # write dashboards/*.json
    python dashboards/build.py --check  # exit 1 if a committed JSON differs from what this builds

The JSON files are committed (Grafana provisioning reads them; see deploy/grafana/) and a test
fails when they are stale. Every query uses only metric names the controller exports
(controller/metrics.py). Each controller replica exports the same store-derived figures, so
queries collapse replicas with ``max without (instance, ...)`` before summing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.builders.dashboard import (
    AnnotationQuery,
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueColorMode, BigValueGraphMode, GraphDrawStyle, LineInterpolation
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)

HERE = Path(__file__).resolve().parent
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Labels a scrape adds and that differ between controller replicas.
REPLICA = "without (instance, job, pod, namespace)"
TAGS = ["hilfarm"]
# Metric names that a later part of the controller will export (a query on them may return
# nothing today); the staleness and e2e tests know this list. Empty: every name is exported.
PLANNED_METRICS: tuple = ()


def dedup(expr: str) -> str:
    """One series per label set whatever the number of controller replicas."""
    return f"max {REPLICA} ({expr})"


def q(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).datasource(DS)
    if legend:
        query = query.legend_format(legend)
    return query.instant() if instant else query.range()


def ts(title: str, unit: str, *queries: prometheus.Dataquery, description: str = "", w: int = 12, h: int = 8,
       bars: bool = False, stacked: bool = False) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(DS).height(h).span(w)
    if description:
        panel = panel.description(description)
    for query in queries:
        panel = panel.with_target(query)
    panel = panel.legend(common_b.VizLegendOptions().show_legend(True).display_mode("list").placement("bottom"))
    if bars:
        panel = panel.draw_style(GraphDrawStyle.BARS).fill_opacity(60)
    else:
        panel = panel.fill_opacity(10)
    if stacked:
        panel = panel.stacking(common_b.StackingConfig().mode("normal"))
    return panel


def st(title: str, unit: str, query: prometheus.Dataquery, *, description: str = "", w: int = 6, h: int = 4,
       red_above: Optional[float] = None, graph: bool = True) -> stat.Panel:
    steps = [Threshold(color="green", value=None)]
    if red_above is not None:
        steps.append(Threshold(color="red", value=red_above))
    panel = (
        stat.Panel().title(title).unit(unit).datasource(DS).height(h).span(w).with_target(query)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(BigValueGraphMode.AREA if graph else BigValueGraphMode.NONE)
        .color_mode(BigValueColorMode.VALUE)
        .thresholds(ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
    )
    if description:
        panel = panel.description(description)
    return panel


def datasource_var() -> DatasourceVariable:
    return DatasourceVariable("datasource").label("Data source").type("prometheus")


def label_var(name: str, label: str, query: str, *, include_all: bool = True) -> QueryVariable:
    var = (
        QueryVariable(name).label(label).datasource(DS).query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC).multi(True)
    )
    if include_all:
        var = var.include_all(True).all_value(".*")
    return var


def base(uid: str, title: str, description: str) -> Dashboard:
    return (
        Dashboard(title).uid(uid).description(description).tags(TAGS).editable()
        .tooltip(DashboardCursorSync.CROSSHAIR).time("now-6h", "now").refresh("30s").timezone("browser")
        .with_variable(datasource_var())
    )


# ---------------------------------------------------------------- farm overview

def farm_overview() -> Dashboard:
    p = 'device_profile=~"$device_profile"'

    def agents(states: str) -> str:
        return "sum(" + dedup('hilfarm_agents{state=~"%s",%s}' % (states, p)) + ")"

    finished = "sum by (outcome) (" + dedup("increase(hilfarm_jobs_total{%s}[$__rate_interval])" % p) + ")"
    failures = "sum by (reason) (" + dedup('increase(hilfarm_jobs_total{outcome="failed",%s}[$__rate_interval])' % p) + ")"
    return (
        base("hilfarm-farm", "hilfarm / Farm overview",
             "Devices, queue, throughput and failures of the whole farm.")
        .with_variable(label_var("device_profile", "Device profile", "label_values(hilfarm_agents, device_profile)"))
        .with_row(Row("Devices"))
        .with_panel(st("Online", "none", q(agents("idle|busy|draining"), instant=True),
                       description="Agents that called the controller within three heartbeat intervals."))
        .with_panel(st("Busy", "none", q(agents("busy"), instant=True), description="Agents running a job now."))
        .with_panel(st("Offline", "none", q(agents("offline"), instant=True), red_above=1,
                       description="Registered agents that stopped calling the controller."))
        .with_panel(st("Draining (quarantined)", "none", q(agents("draining"), instant=True),
                       description="Agents an operator took out of service; they take no new jobs."))
        .with_panel(ts("Devices by state", "none",
                       q(f'sum by (state) ({dedup(f"hilfarm_agents{{{p}}}")})', "{{state}}"), stacked=True, w=24))
        .with_row(Row("Queue"))
        .with_panel(ts("Queued jobs", "none", q(dedup(f"hilfarm_jobs_queued{{{p}}}"), "{{device_profile}}"),
                       description="Jobs waiting for an agent that fits, by device profile.", w=8))
        .with_panel(ts("Oldest queued job", "s", q(dedup(f"hilfarm_jobs_oldest_queued_age_seconds{{{p}}}"), "{{device_profile}}"),
                       description="How long the oldest queued job has waited; a growing line is a stuck queue.", w=8))
        .with_panel(ts("Active leases", "none", q(dedup(f"hilfarm_leases_active{{{p}}}"), "{{device_profile}}"),
                       description="Jobs handed to an agent (leased or running).", w=8))
        .with_row(Row("Throughput and failures"))
        .with_panel(ts("Finished jobs by outcome", "none", q(finished, "{{outcome}}"), bars=True, stacked=True))
        .with_panel(ts("Failures by reason", "none", q(failures, "{{reason}}"), bars=True, stacked=True,
                       description="Failed jobs by whose fault it was (failure category)."))
        .with_panel(ts("Job duration (p50, p90)", "s",
                       q(f'histogram_quantile(0.5, sum by (le) (rate(hilfarm_job_duration_seconds_bucket{{{p}}}[$__rate_interval])))', "p50"),
                       q(f'histogram_quantile(0.9, sum by (le) (rate(hilfarm_job_duration_seconds_bucket{{{p}}}[$__rate_interval])))', "p90"),
                       description="Lease to stored report of one attempt."))
        .with_panel(ts("Queue wait (p90)", "s",
                       q(f'histogram_quantile(0.9, sum by (le, device_profile) (rate(hilfarm_job_queue_wait_seconds_bucket{{{p}}}[$__rate_interval])))',
                         "{{device_profile}}"),
                       description="Submission to lease."))
        .with_row(Row("Controller"))
        .with_panel(st("Database reachable", "bool", q("min(hilfarm_store_up)", instant=True), graph=False,
                       description="0 when a controller could not read its database at the last scrape."))
        .with_panel(ts("gRPC calls by method", "reqps",
                       q("sum by (method) (rate(hilfarm_grpc_server_handling_seconds_count[$__rate_interval]))", "{{method}}"), w=9))
        .with_panel(ts("gRPC latency p99 (unary calls)", "s",
                       q('histogram_quantile(0.99, sum by (le, method) (rate(hilfarm_grpc_server_handling_seconds_bucket'
                         '{method!~"WatchJob|LeaseJob|DownloadArtifact|UploadArtifact"}[$__rate_interval])))', "{{method}}"),
                       description="Long-polls and streams are left out: they are long by design.", w=9))
        .with_panel(ts("Artifact transfer", "Bps",
                       q("sum by (direction) (rate(hilfarm_artifact_transfer_bytes_total[$__rate_interval]))", "{{direction}}")))
        .with_panel(ts("Artifact transfer duration (p90)", "s",
                       q("histogram_quantile(0.9, sum by (le, direction) (rate(hilfarm_artifact_transfer_seconds_bucket[$__rate_interval])))",
                         "{{direction}}")))
        .with_panel(ts("SQLite write lock held", "percentunit",
                       q("max by (instance) (rate(hilfarm_db_write_lock_held_seconds_total[$__rate_interval]))",
                         "{{instance}}"),
                       description="Share of time a write transaction held the controller's SQLite write lock (one "
                                   "writer at a time). Near 100 % the farm is at what one SQLite file serves: move "
                                   "to PostgreSQL. No series on PostgreSQL."))
    )


# ---------------------------------------------------------------- model view

def model_view() -> Dashboard:
    sel = 'model=~"$model",device_profile=~"$device_profile",runtime=~"$runtime"'
    keys = "{{model}} on {{device_profile}} ({{runtime}})"
    g = lambda name, extra="": dedup(f"{name}{{{sel}{extra}}}")  # noqa: E731
    verdicts = "sum by (outcome) (" + dedup("increase(hilfarm_model_jobs_total{%s}[$__rate_interval])" % sel) + ")"
    budgets = g("hilfarm_constraint_pass")
    suites = 'suite=~"$suite"'
    suite_runs = "sum by (suite, outcome) (" + dedup("increase(hilfarm_suite_runs_total{%s}[$__rate_interval])" % suites) + ")"
    suite_totals = "sum by (suite, outcome) (" + dedup("hilfarm_suite_runs_total{%s}" % suites) + ")"
    return (
        base("hilfarm-models", "hilfarm / Models",
             "Latest benchmark figures per model, device profile and runtime. A value from a simulated "
             "sensor carries simulated=\"true\".")
        .with_variable(label_var("model", "Model", "label_values(hilfarm_inference_latency_seconds, model)"))
        .with_variable(label_var("device_profile", "Device profile",
                                 'label_values(hilfarm_inference_latency_seconds{model=~"$model"}, device_profile)'))
        .with_variable(label_var("runtime", "Runtime",
                                 'label_values(hilfarm_inference_latency_seconds{model=~"$model",device_profile=~"$device_profile"}, runtime)'))
        .with_variable(label_var("suite", "Suite", "label_values(hilfarm_suite_runs_total, suite)"))
        .annotation(
            AnnotationQuery().name("Regressions").datasource(DS).enable(True).icon_color("red")
            .expr(f"max by (model, device_profile, runtime) (hilfarm_regression_detected{{{sel}}}) > 0")
        )
        .annotation(
            AnnotationQuery().name("New results").datasource(DS).enable(False).icon_color("blue")
            # Present for the minute after a result was stored, so a first result counts too.
            .expr(f"time() - max by (model, device_profile, runtime) (hilfarm_inference_result_timestamp_seconds{{{sel}}}) < 60")
        )
        .with_row(Row("Latency"))
        .with_panel(st("p50 latency", "s", q(g("hilfarm_inference_latency_seconds", ',quantile="0.5"'), keys, instant=True), w=6))
        .with_panel(st("p99 latency", "s", q(g("hilfarm_inference_latency_seconds", ',quantile="0.99"'), keys, instant=True), w=6))
        .with_panel(st("Throughput", "ops", q(g("hilfarm_inference_throughput_per_second"), keys, instant=True), w=6))
        .with_panel(st("Cold start (load + first inference)", "s",
                       q(f'{g("hilfarm_model_load_seconds")} + {g("hilfarm_first_inference_seconds")}', keys, instant=True), w=6))
        .with_panel(ts("Latency quantiles", "s",
                       q(g("hilfarm_inference_latency_seconds", ',quantile=~"0.5|0.9|0.99"'), "p{{quantile}} " + keys),
                       description="Steady-state latency of the latest result at each point in time.", w=16))
        .with_panel(ts("Latency variability", "percentunit",
                       q(g("hilfarm_inference_latency_cv_ratio"), "cv " + keys),
                       description="Coefficient of variation of the timed runs (std / mean).", w=8))
        .with_row(Row("Memory and energy"))
        .with_panel(ts("Peak memory", "bytes",
                       q(g("hilfarm_inference_peak_memory_bytes"), "peak " + keys),
                       q(g("hilfarm_inference_model_memory_bytes"), "model " + keys),
                       description="Peak resident memory of the benchmark process, and the part due to the model."))
        .with_panel(ts("Energy per inference", "joule", q(g("hilfarm_inference_energy_joules"), keys + " simulated={{simulated}}")))
        .with_panel(ts("Mean power while running", "watt",
                       q(g("hilfarm_inference_power_watts"), "active " + keys),
                       q(g("hilfarm_inference_idle_power_watts"), "idle " + keys)))
        .with_panel(ts("Max temperature", "celsius", q(g("hilfarm_inference_max_temperature_celsius"), "{{zone}} " + keys)))
        .with_panel(ts("Throttled fraction", "percentunit", q(g("hilfarm_inference_throttled_ratio"), keys),
                       description="Fraction of the timed run during which the device throttled."))
        .with_panel(ts("Verdicts", "none", q(verdicts, "{{outcome}}"), bars=True, stacked=True,
                       description="Finished jobs of the selected models by outcome."))
        .with_row(Row("Budgets and regression suites"))
        .with_panel(st("Budgets met", "percentunit", q(f"avg({budgets})", instant=True), w=6, h=8,
                       description="Share of the budgets (constraint sets) the newest result of each selected model "
                                   "met. A budget the device could not measure is left out, not counted as met."))
        .with_panel(ts("Budgets", "none", q(budgets, "{{constraint}} " + keys), w=18, h=8,
                       description="Each budget of the newest judged result over time: 1 pass, 0 fail. A budget the "
                                   "device could not measure (unknown) has no line.")
                    .min(0).max(1).draw_style(GraphDrawStyle.LINE).line_interpolation(LineInterpolation.STEP_AFTER))
        .with_panel(ts("Suite runs by outcome", "none", q(suite_runs, "{{suite}} {{outcome}}"), bars=True, stacked=True,
                       description="Finished regression suite runs (nightly and hilfarm regress): pass, fail (a "
                                   "confirmed regression, a broken budget, a failing model) or error (the farm "
                                   "could not run it)."))
        .with_panel(ts("Suite runs so far", "none", q(suite_totals, "{{suite}} {{outcome}}"),
                       description="Every finished run of each suite since the database was created, by outcome."))
    )


# ---------------------------------------------------------------- device view

def device_view() -> Dashboard:
    sel = 'device_profile=~"$device_profile",agent=~"$agent"'
    g = lambda name, by: f"max by ({by}) ({name}{{{sel}}})"  # noqa: E731
    return (
        base("hilfarm-devices", "hilfarm / Devices",
             "Live telemetry relayed by the agents while they run a job: power, temperature, clocks and "
             "throttling. Readings from a simulated sensor carry simulated=\"true\".")
        .refresh("10s").time("now-1h", "now")
        .with_variable(label_var("device_profile", "Device profile", "label_values(hilfarm_device_state, device_profile)"))
        .with_variable(label_var("agent", "Device", 'label_values(hilfarm_device_state{device_profile=~"$device_profile"}, agent)'))
        .with_row(Row("State"))
        .with_panel(ts("Busy", "none", q(g("hilfarm_device_busy", "agent"), "{{agent}}"),
                       description="1 while the device runs a job.", w=8))
        .with_panel(ts("Offline", "none", q(f'max by (agent) (hilfarm_device_state{{{sel},state="offline"}})', "{{agent}}"),
                       description="1 while the device's agent is not calling the controller.", w=8))
        .with_panel(ts("Since last call", "s",
                       q(f"time() - {g('hilfarm_device_last_seen_timestamp_seconds', 'agent')}", "{{agent}}"), w=8))
        .with_row(Row("Telemetry"))
        .with_panel(ts("Power", "watt", q(g("hilfarm_device_power_watts", "agent, rail, simulated"), "{{agent}} {{rail}}")))
        .with_panel(ts("Temperature", "celsius", q(g("hilfarm_device_temperature_celsius", "agent, zone, simulated"), "{{agent}} {{zone}}")))
        .with_panel(ts("Clocks", "hertz", q(g("hilfarm_device_clock_hz", "agent, domain, simulated"), "{{agent}} {{domain}}")))
        .with_panel(ts("Throttled", "none", q(g("hilfarm_device_throttled", "agent, source, simulated"), "{{agent}} {{source}}"),
                       description="1 while the device reports throttling."))
    )


DASHBOARDS = {
    "hilfarm-farm.json": farm_overview,
    "hilfarm-models.json": model_view,
    "hilfarm-devices.json": device_view,
}


def _finish(doc: Dict[str, Any]) -> Dict[str, Any]:
    """What the SDK leaves to the caller: unique panel ids and query refIds, stable variable ids."""
    next_id = 1
    for panel in doc.get("panels", []):
        panel["id"] = next_id
        next_id += 1
        for i, target in enumerate(panel.get("targets", [])):
            target["refId"] = chr(ord("A") + i)
    for var in doc.get("templating", {}).get("list", []):
        var["id"] = var["name"]
    return doc


def render(builder: Dashboard) -> str:
    doc = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return json.dumps(_finish(doc), indent=2, sort_keys=True) + "\n"


def build_all() -> Dict[str, str]:
    return {name: render(make()) for name, make in DASHBOARDS.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed dashboard is stale")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    stale: List[str] = []
    for name, text in build_all().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale dashboards (run python dashboards/build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
