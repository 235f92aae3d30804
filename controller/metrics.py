"""Prometheus metrics of the controller: the farm's health, the latest benchmark figures and the
devices' live telemetry, read from the database at scrape time; plus counters and histograms of
what the controller handled (gRPC calls, job durations, artifact transfers): this process's, or,
for a controller serving from several processes (``controller serve --processes``), the sum of
all of them (``share_across_processes``).

Why most figures are read at scrape time: several controller replicas share one database, and
a gauge kept in memory would disagree between them and restart at zero with the process. A
custom collector (``FarmCollector``) yields fresh metric families from the database on every scrape,
so every replica exports the same numbers and dashboards aggregate them with ``max``.

Units are base units (seconds, bytes, watts, joules, celsius, hertz, ratios 0..1) and every
name starts with ``hilfarm_``. Labels are bounded: device profiles, agents (one per physical
device), models, runtimes, failure categories. No job ids and no run ids, ever.

A figure the agent did not measure is not exported (no series), never exported as zero: a
stored figure is present with its measured value, or absent and unknown (see farm.proto).

A scrape's work is bounded, however many jobs the farm has run: the newest result per model x
profile x runtime is a row of ``latest_results`` and finished jobs are counters in
``job_outcome_counts``, both kept by the job repository in the transaction that stores a result; only
the active jobs are counted from the jobs table. The ``model`` label is bounded too: the figures
of the ``max_models`` models with the newest results are exported (default 200), older models'
series end.
"""
from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from hilfarm.transport import listen_address_problem, split_host_port

from .database import WriteLockUse
from .errors import CannotListen
from .interceptors import WrappingInterceptor
from . import wire
from .models import Job, JobState
from .job_repository import JobRepository
from .regression_store import RegressionStore
from .scheduler import device_state

log = logging.getLogger("hilfarm.controller.metrics")


def share_across_processes(directory: Path) -> None:
    """Make this process's counters and histograms (EventMetrics) write to files in
    ``directory`` that the main process of the controller adds up at each scrape (the Prometheus
    client's multiprocess mode). Call before the controller's metrics are made, in each process
    of a controller that serves from several (``controller serve --processes``); it changes
    every counter and histogram this process makes from then on."""
    # The client picks its value store from this variable when it is imported; set both so the
    # choice holds whether or not it was imported already.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()


DEVICE_STATES = ("idle", "busy", "draining", "offline")
OUTCOMES = (JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value)
# The latency figures a result carries, as the quantile label of hilfarm_inference_latency_seconds.
LATENCY_QUANTILES = (
    ("0", "min_seconds"),
    ("0.5", "p50_seconds"),
    ("0.9", "p90_seconds"),
    ("0.95", "p95_seconds"),
    ("0.99", "p99_seconds"),
    ("1", "max_seconds"),
)
# Telemetry quantities (TelemetrySample.quantity) -> (metric, help, label for the channel).
TELEMETRY_METRICS = {
    "power_watts": ("hilfarm_device_power_watts", "Latest power reading of a device rail, relayed from its agent.", "rail"),
    "temperature_celsius": ("hilfarm_device_temperature_celsius", "Latest temperature of a device thermal zone, relayed from its agent.", "zone"),
    "clock_hz": ("hilfarm_device_clock_hz", "Latest clock frequency of a device clock domain, relayed from its agent.", "domain"),
    "throttled": ("hilfarm_device_throttled", "1 when the device reported throttling in its latest reading, else 0.", "source"),
    "energy_joules": ("hilfarm_device_energy_joules", "Latest energy counter reading of a device rail, relayed from its agent.", "rail"),
}

GRPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
JOB_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
TRANSFER_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# The most models whose figures a scrape exports (those with the newest results).
DEFAULT_MAX_MODELS = 200
# The most latest-result rows (model x profile x runtime) a scrape reads.
MAX_RESULT_KEYS = 2000


def _bool_label(value: bool) -> str:
    return "true" if value else "false"


# ---------------------------------------------------------------- benchmark figures

@dataclass(frozen=True)
class Figure:
    """One number of one benchmark result, named and labelled as Prometheus sees it."""

    name: str
    labels: Tuple[Tuple[str, str], ...]
    value: float


# name -> (help, extra label names beyond RESULT_LABELS)
RESULT_METRICS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "hilfarm_inference_latency_seconds": ("Steady-state inference latency of the latest result (quantile 0 = min, 1 = max).", ("quantile",)),
    "hilfarm_inference_latency_mean_seconds": ("Mean steady-state inference latency of the latest result.", ()),
    "hilfarm_inference_latency_cv_ratio": ("Coefficient of variation (std / mean) of the latest result's latency samples.", ()),
    "hilfarm_inference_latency_drift_ratio": ("p50 of the last tenth of the timed runs over p50 of the first tenth.", ()),
    "hilfarm_inference_throughput_per_second": ("Inferences per second over the latest result's timed runs.", ()),
    "hilfarm_inference_timed_runs": ("Number of timed inferences in the latest result.", ()),
    "hilfarm_model_load_seconds": ("Time to load the model in the latest result.", ()),
    "hilfarm_first_inference_seconds": ("First (cold) inference time in the latest result.", ()),
    "hilfarm_inference_peak_memory_bytes": ("Peak resident memory (VmHWM) of the benchmark process in the latest result.", ()),
    "hilfarm_inference_model_memory_bytes": ("Peak memory due to the model (peak minus the baseline before load).", ()),
    "hilfarm_model_file_bytes": ("Size of the model file.", ()),
    "hilfarm_inference_energy_joules": ("Energy per inference in the latest result.", ()),
    "hilfarm_inference_power_watts": ("Mean power over the timed runs of the latest result.", ()),
    "hilfarm_inference_idle_power_watts": ("Mean power before the model was loaded, in the latest result.", ()),
    "hilfarm_inference_max_temperature_celsius": ("Highest temperature of a thermal zone during the latest result.", ("zone",)),
    "hilfarm_inference_throttled_ratio": ("Fraction of the latest result's timed run during which the device throttled.", ()),
    "hilfarm_inference_result_timestamp_seconds": ("When the latest result was stored (Unix seconds).", ()),
}
# emulated: the agent ran under an instruction-set emulator (its timings mean nothing);
# recorded: the figure was read from a recording (a recorded sensor tree or benchmark output).
RESULT_LABELS = ("model", "device_profile", "runtime", "simulated", "emulated", "recorded")


def _section_value(result: Dict[str, Any], section: str, field: str) -> Optional[float]:
    """A measured figure, or None when it was not measured (absent)."""
    doc = result.get(section)
    value = doc.get(field) if isinstance(doc, dict) else None
    if value is None or isinstance(value, str):  # "NaN" / "Infinity" from the JSON mapping: not usable
        return None
    return float(value)


def model_label(model_name: str) -> str:
    return model_name or "unnamed"


def result_runtime(job: Job) -> str:
    return job.runtime or "unknown"


def result_figures(job: Job) -> List[Figure]:
    """The figures of one succeeded job's result, for the collector and for remote-write."""
    result = job.result or {}
    env = result.get("environment") or {}
    base_sim = bool(env.get("simulated", False))
    base = {"model": model_label(job.model_name), "device_profile": job.device_profile,
            "runtime": result_runtime(job), "emulated": _bool_label(bool(env.get("emulated", False)))}
    # Latency and memory are recorded only where the benchmark's own output was (a phone's recording).
    base_rec = any(str(s).startswith("latency") for s in env.get("recorded_sources", []))
    out: List[Figure] = []

    def add(name: str, value: Optional[float], simulated: bool = base_sim, recorded: bool = base_rec,
            **extra: str) -> None:
        if value is None:
            return
        labels = dict(base, simulated=_bool_label(simulated), recorded=_bool_label(recorded), **extra)
        out.append(Figure(name, tuple(sorted(labels.items())), value))

    def lat(field: str) -> Optional[float]:
        return _section_value(result, "latency", field)

    for quantile, field in LATENCY_QUANTILES:
        add("hilfarm_inference_latency_seconds", lat(field), quantile=quantile)
    add("hilfarm_inference_latency_mean_seconds", lat("mean_seconds"))
    add("hilfarm_inference_latency_cv_ratio", lat("cv"))
    add("hilfarm_inference_latency_drift_ratio", lat("drift_ratio"))
    add("hilfarm_inference_throughput_per_second", lat("throughput_per_second"))
    samples = (result.get("latency") or {}).get("samples_ns")
    if isinstance(samples, list):
        add("hilfarm_inference_timed_runs", float(len(samples)))
    add("hilfarm_model_load_seconds", lat("load_seconds"))
    add("hilfarm_first_inference_seconds", lat("first_inference_seconds"))

    def mem(field: str) -> Optional[float]:
        return _section_value(result, "memory", field)

    add("hilfarm_inference_peak_memory_bytes", mem("peak_bytes"))
    add("hilfarm_inference_model_memory_bytes", mem("model_delta_bytes"))
    add("hilfarm_model_file_bytes", mem("model_file_bytes"))

    power = result.get("power")
    if isinstance(power, dict):
        sim = base_sim or bool(power.get("simulated", False))
        rec = bool(power.get("recorded", False))
        add("hilfarm_inference_energy_joules", _section_value(result, "power", "energy_per_inference_joules"), sim, rec)
        add("hilfarm_inference_power_watts", _section_value(result, "power", "active_watts"), sim, rec)
        add("hilfarm_inference_idle_power_watts", _section_value(result, "power", "idle_watts"), sim, rec)
    thermal = result.get("thermal")
    if isinstance(thermal, dict):
        sim = base_sim or bool(thermal.get("simulated", False))
        rec = bool(thermal.get("recorded", False))
        for zone in thermal.get("zones", []):
            if "max_celsius" in zone and not isinstance(zone["max_celsius"], str):
                add("hilfarm_inference_max_temperature_celsius", float(zone["max_celsius"]), sim, rec,
                    zone=str(zone.get("zone", "")) or "unnamed")
        add("hilfarm_inference_throttled_ratio", _section_value(result, "thermal", "throttled_fraction"), sim, rec)
    if job.finished_at is not None:
        add("hilfarm_inference_result_timestamp_seconds", float(job.finished_at))
    return out


# ---------------------------------------------------------------- the scrape-time collector

class FarmCollector:
    """Yields the farm's gauges and store-derived counters, read from the database per scrape."""

    def __init__(self, jobs: JobRepository, regressions: RegressionStore, *, heartbeat_interval: float,
                 clock: Callable[[], float] = time.time, max_models: int = DEFAULT_MAX_MODELS) -> None:
        """``jobs``: agents, jobs, results and counters; ``regressions``: suite runs and verdicts."""
        self.jobs = jobs
        self.regressions = regressions
        self.heartbeat_interval = heartbeat_interval
        self.clock = clock
        self.max_models = max_models
        self._figures_lock = threading.Lock()
        # job id -> its figures: a result document is read once, when it becomes the latest.
        self._figures: Dict[str, List[Figure]] = {}

    def describe(self) -> Iterable[Metric]:
        # Returning nothing keeps registration from running a scrape (and a database query).
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("hilfarm_store_up", "1 when the controller could read its database at this scrape, else 0.")
        try:
            families = list(self._collect_farm()) + list(self._collect_results()) + list(self._collect_telemetry())
            families += list(self._collect_regressions())
        except Exception:
            # A scrape must answer even when the database is down: the alert is on hilfarm_store_up.
            log.exception("reading the database for a metrics scrape failed")
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families

    def _collect_regressions(self) -> Iterator[Metric]:
        yield from regression_metric_families(self.regressions)

    # ---- agents, queue, leases, outcomes

    def _collect_farm(self) -> Iterator[Metric]:
        now = self.clock()
        agents, active_rows, job_rows = self.jobs.live_state()
        outcome_rows = self.jobs.outcome_counts()
        current = {agent_id: job_id for agent_id, job_id in active_rows if agent_id}
        # A profile is a label while an agent has registered with it or a job waits for or runs
        # on it. Only cancelled jobs can have finished under a profile no agent ever had (a typo,
        # say): once cancelled, they leave the labels rather than stay in them for good.
        profiles = sorted({a.profile for a in agents} | {row[1] for row in job_rows}
                          | {row[2] for row in outcome_rows if row[0] != JobState.CANCELLED.value})
        outcome_rows = [row for row in outcome_rows if row[2] in profiles]

        by_state = GaugeMetricFamily("hilfarm_agents", "Agents by device state and profile.", labels=["state", "device_profile"])
        device = GaugeMetricFamily("hilfarm_device_state", "1 for the device's current state, 0 for the others.",
                                   labels=["agent", "device_profile", "state"])
        busy = GaugeMetricFamily("hilfarm_device_busy", "1 while the device runs a job, 0 when idle, draining or offline.",
                                 labels=["agent", "device_profile"])
        seen = GaugeMetricFamily("hilfarm_device_last_seen_timestamp_seconds", "When the device's agent last called the controller.",
                                 labels=["agent", "device_profile"])
        counts: Dict[Tuple[str, str], int] = collections.Counter()
        for agent in agents:
            state = device_state(agent, now=now, heartbeat_interval=self.heartbeat_interval,
                                 current_job_id=current.get(agent.id, ""))
            counts[(state, agent.profile)] += 1
            for candidate in DEVICE_STATES:
                device.add_metric([agent.id, agent.profile, candidate], 1.0 if candidate == state else 0.0)
            busy.add_metric([agent.id, agent.profile], 1.0 if state == "busy" else 0.0)
            seen.add_metric([agent.id, agent.profile], float(agent.last_seen))
        for profile in sorted({a.profile for a in agents}):
            for state in DEVICE_STATES:
                by_state.add_metric([state, profile], float(counts.get((state, profile), 0)))
        yield by_state
        yield device
        yield busy
        yield seen

        queued = GaugeMetricFamily("hilfarm_jobs_queued", "Jobs waiting for an agent, by device profile.", labels=["device_profile"])
        oldest = GaugeMetricFamily("hilfarm_jobs_oldest_queued_age_seconds",
                                   "Age of the oldest queued job, by device profile (0 when none waits).", labels=["device_profile"])
        leases = GaugeMetricFamily("hilfarm_leases_active", "Jobs leased to an agent (leased or running), by device profile.",
                                   labels=["device_profile"])
        outcomes = CounterMetricFamily("hilfarm_jobs", "Finished jobs by outcome and reason (failure category), read from the database.",
                                       labels=["outcome", "reason", "device_profile"])
        q_count: Dict[str, int] = collections.Counter()
        q_oldest: Dict[str, float] = {}
        l_count: Dict[str, int] = collections.Counter()
        finished: Dict[Tuple[str, str, str], int] = collections.Counter()
        for state, profile, count, min_created in job_rows:
            if state == JobState.QUEUED.value:
                q_count[profile] += count
                q_oldest[profile] = min(q_oldest.get(profile, min_created), min_created)
            else:
                l_count[profile] += count
        for outcome, reason, profile, _model, _runtime, count in outcome_rows:
            finished[(outcome, reason, profile)] += count
        for profile in profiles:
            queued.add_metric([profile], float(q_count.get(profile, 0)))
            oldest.add_metric([profile], max(0.0, now - q_oldest[profile]) if profile in q_oldest else 0.0)
            leases.add_metric([profile], float(l_count.get(profile, 0)))
        for (state, reason, profile), count in sorted(finished.items()):
            outcomes.add_metric([state, reason, profile], float(count))
        yield queued
        yield oldest
        yield leases
        yield outcomes

        # The models whose figures are exported: the model label stays bounded.
        exported = {model_label(row.model_name) for row in self.latest_rows()}
        per_model = CounterMetricFamily("hilfarm_model_jobs", "Finished jobs by model, device profile, runtime and outcome "
                                        "(the models with the newest results).",
                                        labels=["model", "device_profile", "runtime", "outcome"])
        merged: Dict[Tuple[str, str, str, str], int] = collections.Counter()
        for outcome, _reason, profile, name, runtime, count in outcome_rows:
            if model_label(name) in exported:
                merged[(model_label(name), profile, runtime or "unknown", outcome)] += count
        for labels, count in sorted(merged.items()):
            per_model.add_metric(list(labels), float(count))
        yield per_model

    # ---- latest benchmark figures

    def _collect_results(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, help_text, labels=list(RESULT_LABELS) + list(extra))
            for name, (help_text, extra) in RESULT_METRICS.items()
        }
        for fig in self.latest_figures():
            labels = dict(fig.labels)
            family = families[fig.name]
            family.add_metric([labels[k] for k in family._labelnames], fig.value)  # type: ignore[attr-defined]
        yield from families.values()

    def latest_rows(self) -> List[Any]:
        """latest_results rows of the ``max_models`` models with the newest results."""
        rows = self.jobs.latest_results(MAX_RESULT_KEYS)
        models: Dict[str, None] = {}
        kept = []
        for row in rows:  # newest first
            label = model_label(row.model_name)
            if label not in models and len(models) >= self.max_models:
                continue
            models[label] = None
            kept.append(row)
        return kept

    def latest_figures(self) -> List[Figure]:
        """Figures of the newest succeeded result per (model, device profile, runtime), for the
        ``max_models`` models with the newest results. A result document is read once, when
        it becomes the latest of its key."""
        rows = self.latest_rows()
        wanted = [row.job_id for row in rows]
        with self._figures_lock:
            missing = [j for j in wanted if j not in self._figures]
        fresh: Dict[str, List[Figure]] = {}
        for start in range(0, len(missing), 500):
            for job in self.jobs.get_jobs(missing[start:start + 500]):
                fresh[job.id] = result_figures(job)
        with self._figures_lock:
            self._figures.update(fresh)
            # Keep only what is still the latest: the cache is as bounded as the export.
            self._figures = {j: self._figures[j] for j in wanted if j in self._figures}
            return [fig for j in wanted for fig in self._figures.get(j, [])]

    # ---- live telemetry of the devices running a job

    def _collect_telemetry(self) -> Iterator[Metric]:
        families = {
            quantity: GaugeMetricFamily(name, help_text, labels=["agent", "device_profile", channel_label, "simulated"])
            for quantity, (name, help_text, channel_label) in TELEMETRY_METRICS.items()
        }
        for agent_id, profile, progress in self.jobs.active_progress():
            if not agent_id or not isinstance(progress, dict):
                continue
            latest: Dict[Tuple[str, str], Dict[str, Any]] = {}
            for sample in progress.get("telemetry", []) or []:
                quantity = sample.get("quantity", "")
                if quantity not in families or isinstance(sample.get("value", 0.0), str):
                    continue
                key = (quantity, sample.get("channel", "") or "")
                if key not in latest or float(sample.get("t", 0.0)) >= float(latest[key].get("t", 0.0)):
                    latest[key] = sample
            for (quantity, channel), sample in sorted(latest.items()):
                families[quantity].add_metric(
                    [agent_id, profile, channel or "total", _bool_label(bool(sample.get("simulated", False)))],
                    float(sample.get("value", 0.0)),
                )
        yield from families.values()


# ---------------------------------------------------------------- regression suites and constraint verdicts

def regression_metric_families(regressions: RegressionStore) -> Iterator[Metric]:
    """Prometheus families for the Grafana model view, read at scrape time:
    hilfarm_regression_detected{model,device_profile,runtime} (0/1, newest suite case),
    hilfarm_suite_runs_total{suite,outcome}, and
    hilfarm_constraint_pass{model,device_profile,runtime,constraint} (1 pass, 0 fail; a budget the
    device could not measure has no sample rather than a made-up one)."""
    reg = regressions
    detected = GaugeMetricFamily("hilfarm_regression_detected",
                                 "1 when the newest suite run of this model found a confirmed regression",
                                 labels=["model", "device_profile", "runtime", "simulated"])
    for case in reg.latest_cases():
        if case.outcome in ("error", "model_failed"):
            continue
        runtime = case.runtime_config.split(" ", 1)[0]
        simulated = "true" if wire.case_simulated(case) else "false"
        detected.add_metric([case.model_name, case.device_profile, runtime, simulated],
                            1.0 if case.outcome == "regression" else 0.0)
    yield detected
    runs = CounterMetricFamily("hilfarm_suite_runs_total", "Finished regression suite runs by outcome",
                               labels=["suite", "outcome"])
    for (suite, outcome), n in sorted(reg.suite_run_counts().items()):
        runs.add_metric([suite, outcome], float(n))
    yield runs
    passes = GaugeMetricFamily("hilfarm_constraint_pass", "1 when the newest result met the budget, 0 when it broke it "
                               "(simulated=\"true\": judged on a simulated sensor, never a real pass)",
                               labels=["model", "device_profile", "runtime", "constraint", "simulated"])
    for job, evaluation in reg.latest_verdicts():
        worst: Dict[Tuple[str, bool], float] = {}
        for v in evaluation.verdicts or []:
            if v.get("status") in ("pass", "fail"):
                key = (v.get("constraint", ""), bool(v.get("simulated")))
                worst[key] = min(worst.get(key, 1.0), 0.0 if v.get("status") == "fail" else 1.0)
        for (name, simulated), value in sorted(worst.items()):
            passes.add_metric([job.model_name, job.device_profile, job.runtime, name,
                               "true" if simulated else "false"], value)
    yield passes


# ---------------------------------------------------------------- events of this process

class WriteLockCollector:
    """SQLite's one writer at a time, as this process used it (database.Database.write_lock_use):
    ``rate(hilfarm_db_write_lock_held_seconds_total[1m])`` is the share of time a write
    transaction held the lock; near 1 the farm is at what one SQLite file serves (README, *How
    many devices one controller holds*), and more load only queues."""

    def __init__(self, use: Callable[[], Optional[WriteLockUse]]) -> None:
        self._use = use

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        use = self._use()
        if use is None:
            return
        held = CounterMetricFamily("hilfarm_db_write_lock_held_seconds",
                                   "Seconds write transactions held this controller's SQLite write lock.")
        held.add_metric([], use.held_seconds)
        waited = CounterMetricFamily("hilfarm_db_write_lock_waited_seconds",
                                     "Seconds write transactions waited for this controller's SQLite write lock.")
        waited.add_metric([], use.waited_seconds)
        transactions = CounterMetricFamily("hilfarm_db_write_transactions",
                                           "Write transactions this controller ran on its SQLite database.")
        transactions.add_metric([], float(use.transactions))
        yield held
        yield waited
        yield transactions


class EventMetrics:
    """Counters and histograms of what this controller process handled."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.grpc_seconds = Histogram(
            "hilfarm_grpc_server_handling_seconds",
            "Time the controller took to handle a gRPC call, by service, method and status code "
            "(streams and long-polls included: WatchJob and LeaseJob are long by design).",
            ["service", "method", "code"], buckets=GRPC_BUCKETS, registry=registry,
        )
        self.job_seconds = Histogram(
            "hilfarm_job_duration_seconds",
            "Time from lease to stored report of one job attempt, by device profile and outcome.",
            ["device_profile", "outcome"], buckets=JOB_BUCKETS, registry=registry,
        )
        self.queue_wait_seconds = Histogram(
            "hilfarm_job_queue_wait_seconds",
            "Time a job waited from submission to its lease, by device profile.",
            ["device_profile"], buckets=JOB_BUCKETS, registry=registry,
        )
        self.transfer_seconds = Histogram(
            "hilfarm_artifact_transfer_seconds",
            "Duration of one artifact upload or download stream.",
            ["direction"], buckets=TRANSFER_BUCKETS, registry=registry,
        )
        self.transfer_bytes = Counter(
            "hilfarm_artifact_transfer_bytes",
            "Artifact bytes carried by upload and download streams.",
            ["direction"], registry=registry,
        )
        self.remote_write_samples = Counter(
            "hilfarm_remote_write_samples",
            "Result samples sent to the remote-write endpoint, by outcome (sent, failed).",
            ["outcome"], registry=registry,
        )
        for direction in ("upload", "download"):
            self.transfer_bytes.labels(direction)
            self.transfer_seconds.labels(direction)
        for outcome in ("sent", "failed"):
            self.remote_write_samples.labels(outcome)


_TRANSFER_METHODS = {"UploadArtifact": "upload", "DownloadArtifact": "download"}


class MetricsInterceptor(WrappingInterceptor):
    """Times every call and watches the few calls whose outcome is an event worth counting.
    An interceptor of the asynchronous server: it wraps each handler in a coroutine (or an
    async generator for streamed answers) around the servicer's own."""

    def __init__(self, owner: "ControllerMetrics") -> None:
        super().__init__()
        self.owner = owner

    def wrap(self, handler: Any, full: str) -> Any:
        service, _, method = full.lstrip("/").rpartition("/")
        events = self.owner.events
        direction = _TRANSFER_METHODS.get(method)

        def finish(started: float, context: Any, exc: Optional[BaseException]) -> None:
            elapsed = time.perf_counter() - started
            try:
                events.grpc_seconds.labels(service or "unknown", method or "unknown", _code_name(context, exc)).observe(elapsed)
                if direction is not None:
                    events.transfer_seconds.labels(direction).observe(elapsed)
            except Exception:  # metrics must never fail a call
                log.exception("recording gRPC metrics failed")

        def after(request: Any, response: Any) -> None:
            try:
                # Stored results reach result_stored from the servicer itself (server.py).
                if method == "LeaseJob" and response is not None and response.HasField("lease"):
                    job = response.lease.job
                    if job.started_at and job.created_at:
                        events.queue_wait_seconds.labels(job.device_profile).observe(max(0.0, job.started_at - job.created_at))
            except Exception:
                log.exception("recording job metrics after %s failed", method)

        def count_bytes(message: Any) -> None:
            if direction is not None:
                size = len(getattr(message, "data", b""))
                if size:
                    events.transfer_bytes.labels(direction).inc(size)

        async def counted(iterator: Any) -> AsyncIterator[Any]:
            async for message in iterator:
                count_bytes(message)
                yield message

        async def answers(result: Any) -> AsyncIterator[Any]:
            """The messages of a streamed answer, however the servicer produces them."""
            if hasattr(result, "__aiter__"):
                async for message in result:
                    count_bytes(message)
                    yield message
            elif inspect.isawaitable(result):  # a servicer that writes with context.write
                await result
            else:
                for message in result:
                    count_bytes(message)
                    yield message

        kwargs = dict(request_deserializer=handler.request_deserializer,
                      response_serializer=handler.response_serializer)

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request, context):  # type: ignore[no-untyped-def]
                started = time.perf_counter()
                exc = None
                try:
                    response = inner_uu(request, context)
                    if inspect.isawaitable(response):
                        response = await response
                except BaseException as e:
                    exc = e
                    raise
                finally:
                    finish(started, context, exc)
                after(request, response)
                return response

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)

        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request, context):  # type: ignore[no-untyped-def]
                started = time.perf_counter()
                exc = None
                try:
                    async for message in answers(inner_us(request, context)):
                        yield message
                except BaseException as e:
                    exc = e
                    raise
                finally:
                    finish(started, context, exc)

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)

        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(request_iterator, context):  # type: ignore[no-untyped-def]
                started = time.perf_counter()
                exc = None
                try:
                    response = inner_su(counted(request_iterator), context)
                    if inspect.isawaitable(response):
                        response = await response
                    return response
                except BaseException as e:
                    exc = e
                    raise
                finally:
                    finish(started, context, exc)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)

        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            async def stream_stream(request_iterator, context):  # type: ignore[no-untyped-def]
                started = time.perf_counter()
                exc = None
                try:
                    async for message in answers(inner_ss(counted(request_iterator), context)):
                        yield message
                except BaseException as e:
                    exc = e
                    raise
                finally:
                    finish(started, context, exc)

            return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)
        return handler


def _code_name(context: grpc.ServicerContext, exc: Optional[BaseException]) -> str:
    code = None
    try:
        code = context.code()
    except Exception:
        code = None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if exc is None:
        return "OK"
    if isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
        return "CANCELLED"
    return "UNKNOWN"


# ---------------------------------------------------------------- the controller's metrics

class ControllerMetrics:
    """Everything the controller exports: one registry, one interceptor, one HTTP endpoint.

    ``remote_write`` (a ``RemoteWriter``) also sends every stored result's figures, stamped
    with the time the result was stored, to a Prometheus-compatible long-term store.
    """

    def __init__(
        self,
        jobs: JobRepository,
        regressions: RegressionStore,
        *,
        heartbeat_interval: float,
        clock: Callable[[], float] = time.time,
        remote_write: Optional[Any] = None,
        max_models: int = DEFAULT_MAX_MODELS,
        write_lock_use: Optional[Callable[[], Optional[WriteLockUse]]] = None,
        shared_dir: Optional[Path] = None,
    ) -> None:
        """``jobs``: what the farm's gauges and counters are read from, and each reported
        result; ``regressions``: suite runs and verdicts. ``max_models``: the figures of this
        many models (those with the newest results) are exported, which bounds the ``model``
        label. ``write_lock_use``: the database's (Database.write_lock_use), exported on SQLite.
        ``shared_dir``: the directory share_across_processes was called with; the counters and
        histograms exported are then the sum of every process of the controller."""
        self.jobs = jobs
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = FarmCollector(jobs, regressions, heartbeat_interval=heartbeat_interval, clock=clock,
                                       max_models=max_models)
        self.registry.register(self.collector)
        if write_lock_use is not None:
            self.registry.register(WriteLockCollector(write_lock_use))
        ProcessCollector(registry=self.registry)
        if shared_dir is None:
            self.events = EventMetrics(self.registry)
        else:
            # This process's own values are in the files too: exported once, as part of the sum.
            from prometheus_client.multiprocess import MultiProcessCollector

            self.events = EventMetrics(CollectorRegistry(auto_describe=False))
            MultiProcessCollector(self.registry, path=str(shared_dir))
        self.interceptor = MetricsInterceptor(self)
        self.remote_write = remote_write
        if remote_write is not None:
            remote_write.report_outcomes_to(lambda outcome, count: self.events.remote_write_samples.labels(outcome).inc(count))
        self._http: Optional[Any] = None
        self._http_thread: Optional[threading.Thread] = None
        self.port: Optional[int] = None

    def start(self, bind: Optional[str], *, ssl_context: Optional[Any] = None,
              bearer_token: Optional[str] = None) -> Optional[int]:
        """Start remote-write (when configured) and, when ``bind`` is given, the HTTP endpoint
        (HTTPS with ``ssl_context``, behind ``bearer_token`` when given). Returns the HTTP port,
        or None without one."""
        if self.remote_write is not None:
            self.remote_write.start()
        return self.start_http(bind, ssl_context=ssl_context, bearer_token=bearer_token) if bind else None

    def start_http(self, bind: str, *, ssl_context: Optional[Any] = None, bearer_token: Optional[str] = None) -> int:
        """Serve /metrics on ``bind`` (host:port, port 0 picks one). Returns the port."""
        from .metrics_http import serve_metrics

        problem = listen_address_problem(bind, "the metrics address", host_required=False,
                                         example_port=9464)
        if problem:
            raise CannotListen(problem)
        host_text, port_text = split_host_port(bind)
        host = host_text.strip("[]") or "0.0.0.0"  # ':PORT': every interface
        try:
            self._http, self._http_thread = serve_metrics(self.registry, host, int(port_text),
                                                          ssl_context=ssl_context, bearer_token=bearer_token)
        except OSError as exc:
            raise CannotListen(f"cannot serve metrics on {bind}: {exc.strerror or exc} "
                               f"(choose another port with --metrics-bind)") from exc
        self.port = int(self._http.server_address[1])
        log.info("metrics on %s://%s:%d/metrics%s", "https" if ssl_context is not None else "http", host, self.port,
                 " (bearer token required)" if bearer_token else "")
        return self.port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self.remote_write is not None:
            self.remote_write.stop()

    def result_stored(self, job: Job) -> None:
        """An agent's report was stored (``job`` as stored; JobRepository.record_result's
        ``on_stored``, once per report however often the agent sends it): observe the attempt's
        duration, send its figures. The job is not read again."""
        if job.finished_at is None:
            return
        if job.started_at is not None:
            self.events.job_seconds.labels(job.device_profile, job.state).observe(max(0.0, job.finished_at - job.started_at))
        if self.remote_write is not None and job.state == JobState.SUCCEEDED.value:
            self.remote_write.submit(result_figures(job), timestamp=job.finished_at)

    def scrape_text(self) -> str:
        """The exposition text a scrape would get now (for tests and debugging)."""
        from prometheus_client.exposition import generate_latest

        return generate_latest(self.registry).decode()


def figures_by_name(figures: Sequence[Figure]) -> Dict[str, List[Figure]]:
    out: Dict[str, List[Figure]] = collections.defaultdict(list)
    for fig in figures:
        out[fig.name].append(fig)
    return out
