"""The scrape-time collector reads the farm from a real database (SQLite file): agents by state,
queue, leases, outcomes, the latest result's figures and the live telemetry of running jobs."""
from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

pytest.importorskip("prometheus_client")
pytest.importorskip("sqlmodel")

from prometheus_client.parser import text_string_to_metric_families

from hilfarm.controller.metrics import ControllerMetrics
from hilfarm.controller.models import Artifact, Failure, FailureCategory, Job, Run
from hilfarm.controller.app import Repositories, open_repositories
from hilfarm.controller.database import Database

Sample = Tuple[str, Dict[str, str], float]


def scrape(metrics: ControllerMetrics) -> List[Sample]:
    out = []
    for family in text_string_to_metric_families(metrics.scrape_text()):
        for s in family.samples:
            out.append((s.name, dict(s.labels), s.value))
    return out


def values(samples: List[Sample], name: str, **labels: str) -> List[float]:
    return [v for n, ls, v in samples if n == name and all(ls.get(k) == val for k, val in labels.items())]


def one(samples: List[Sample], name: str, **labels: str) -> float:
    found = values(samples, name, **labels)
    assert len(found) == 1, f"{name}{labels}: expected one sample, found {found}"
    return found[0]


RESULT = {
    "latency": {
        "samples_ns": [1_000_000, 2_000_000, 3_000_000],
        "min_seconds": 0.001, "mean_seconds": 0.002, "p50_seconds": 0.002, "p90_seconds": 0.0028,
        "p95_seconds": 0.0029, "p99_seconds": 0.00298, "max_seconds": 0.003, "std_seconds": 0.0008,
        "cv": 0.4, "throughput_per_second": 500.0, "load_seconds": 0.05, "first_inference_seconds": 0.01,
    },
    "memory": {"peak_bytes": 50_000_000, "model_delta_bytes": 4_000_000, "model_file_bytes": 12345},
    "environment": {"runtime": "onnxruntime", "simulated": True},
    "power": {"active_watts": 4.5, "idle_watts": 2.0, "energy_per_inference_joules": 0.009, "simulated": True},
    # a measured zero is stored as itself (the figure is proto3 optional)
    "thermal": {"zones": [{"zone": "cpu-thermal", "start_celsius": 40.0, "max_celsius": 55.5}],
                "throttled_fraction": 0.0, "simulated": True},
    # drift_ratio absent *and* named: not measured, so not exported
    "unavailable": [{"field": "latency.drift_ratio", "reason": "too few runs"}],
}


@pytest.fixture
def store(tmp_path: Path) -> Repositories:
    st = open_repositories(Database(f"sqlite:///{tmp_path / 'farm.db'}"))
    st.database.migrate()
    yield st
    st.database.close()


ONNX = {"runtimes": [{"name": "onnxruntime", "version": "1.22"}]}


def _job(job_id: str, run_id: str, profile: str, created: float, name: str = "mlp.onnx") -> Job:
    return Job(id=job_id, run_id=run_id, model_sha256="a" * 64, model_name=name, model_format="onnx",
               device_profile=profile, created_at=created, max_attempts=1)


def _populate(store: Repositories, now: float) -> None:
    store.artifact_records.add_artifact(Artifact(sha256="a" * 64, size_bytes=12345, format="onnx", filename="mlp.onnx", created_at=now))
    store.jobs.add_run(Run(id="r1", created_at=now - 100), [
        _job("j-ok", "r1", "rpi5", now - 100),
        _job("j-fail", "r1", "rpi5", now - 99),
        _job("j-run", "r1", "rpi5", now - 98),
        _job("j-queued", "r1", "rpi5", now - 60),
        _job("j-queued-jetson", "r1", "jetson", now - 30),
    ])
    for agent in ("rpi5-01", "rpi5-02", "rpi5-03"):
        store.agents.register_agent(agent, profile="rpi5", tags=[], capabilities=ONNX, hostname=agent, version="1", now=now)
    # Leases go oldest first: j-ok, j-fail, j-run.
    ok = store.jobs.lease_next("rpi5-01", now=now - 12, lease_seconds=600).job
    store.jobs.record_result("rpi5-01", ok.lease_id, ok.id, ok.attempt, result=RESULT, failure=None, now=now - 4)
    bad = store.jobs.lease_next("rpi5-02", now=now - 12, lease_seconds=600).job
    store.jobs.record_result("rpi5-02", bad.lease_id, bad.id, bad.attempt, result=None,
                        failure=Failure(FailureCategory.OUT_OF_MEMORY, "too big"), now=now - 3)
    run = store.jobs.lease_next("rpi5-03", now=now - 3, lease_seconds=600).job
    assert (ok.id, bad.id, run.id) == ("j-ok", "j-fail", "j-run")
    store.jobs.record_progress("rpi5-03", run.lease_id, {
        "phase": "measuring",
        "telemetry": [
            {"t": 1.0, "sensor": "sim", "quantity": "temperature_celsius", "channel": "cpu-thermal", "value": 50.0, "simulated": True},
            {"t": 2.0, "sensor": "sim", "quantity": "temperature_celsius", "channel": "cpu-thermal", "value": 51.5, "simulated": True},
            {"t": 2.0, "sensor": "sim", "quantity": "power_watts", "channel": "VDD_IN", "value": 4.25, "simulated": True},
            {"t": 2.0, "sensor": "sim", "quantity": "clock_hz", "channel": "cpu0", "value": 2.4e9, "simulated": True},
            {"t": 2.0, "sensor": "sim", "quantity": "throttled", "channel": "vcgencmd", "simulated": True},
        ],
    }, now=now - 2, lease_seconds=600)
    # A fourth agent that stopped calling long ago.
    store.agents.register_agent("rpi5-04", profile="rpi5", tags=[], capabilities={}, hostname="x", version="1", now=now - 3600)


def test_farm_health_results_and_telemetry(store: Repositories) -> None:
    now = time.time()
    _populate(store, now)
    samples = scrape(ControllerMetrics(store.jobs, store.regressions, heartbeat_interval=5))

    assert one(samples, "hilfarm_store_up") == 1
    assert one(samples, "hilfarm_agents", state="busy", device_profile="rpi5") == 1
    assert one(samples, "hilfarm_agents", state="idle", device_profile="rpi5") == 2
    assert one(samples, "hilfarm_agents", state="offline", device_profile="rpi5") == 1
    assert one(samples, "hilfarm_device_state", agent="rpi5-04", state="offline") == 1
    assert one(samples, "hilfarm_device_busy", agent="rpi5-03") == 1
    assert one(samples, "hilfarm_jobs_queued", device_profile="rpi5") == 1
    assert one(samples, "hilfarm_jobs_queued", device_profile="jetson") == 1
    assert 59 <= one(samples, "hilfarm_jobs_oldest_queued_age_seconds", device_profile="rpi5") <= 120
    assert one(samples, "hilfarm_leases_active", device_profile="rpi5") == 1
    assert one(samples, "hilfarm_jobs_total", outcome="succeeded", reason="ok") == 1
    assert one(samples, "hilfarm_jobs_total", outcome="failed", reason="out_of_memory") == 1
    assert one(samples, "hilfarm_model_jobs_total", model="mlp.onnx", device_profile="rpi5", runtime="onnxruntime",
               outcome="succeeded") == 1

    base = dict(model="mlp.onnx", device_profile="rpi5", runtime="onnxruntime", simulated="true")
    assert one(samples, "hilfarm_inference_latency_seconds", quantile="0.5", **base) == pytest.approx(0.002)
    assert one(samples, "hilfarm_inference_latency_seconds", quantile="0.99", **base) == pytest.approx(0.00298)
    assert one(samples, "hilfarm_inference_peak_memory_bytes", **base) == 50_000_000
    assert one(samples, "hilfarm_inference_energy_joules", **base) == pytest.approx(0.009)
    assert one(samples, "hilfarm_inference_power_watts", **base) == pytest.approx(4.5)
    assert one(samples, "hilfarm_inference_max_temperature_celsius", zone="cpu-thermal", **base) == 55.5
    assert one(samples, "hilfarm_inference_throttled_ratio", **base) == 0.0
    assert one(samples, "hilfarm_inference_timed_runs", **base) == 3
    assert values(samples, "hilfarm_inference_latency_drift_ratio") == []

    live = dict(agent="rpi5-03", device_profile="rpi5", simulated="true")
    assert one(samples, "hilfarm_device_temperature_celsius", zone="cpu-thermal", **live) == 51.5
    assert one(samples, "hilfarm_device_power_watts", rail="VDD_IN", **live) == 4.25
    assert one(samples, "hilfarm_device_clock_hz", domain="cpu0", **live) == 2.4e9
    assert one(samples, "hilfarm_device_throttled", source="vcgencmd", **live) == 0.0

    # No label anywhere carries a job or run id.
    for name, labels, _ in samples:
        for value in labels.values():
            assert not value.startswith(("j-", "r1")), (name, labels)


def test_replicas_agree_and_a_restart_keeps_the_gauges(store: Repositories) -> None:
    now = time.time()
    _populate(store, now)
    first = ControllerMetrics(store.jobs, store.regressions, heartbeat_interval=5, clock=lambda: now)
    second = ControllerMetrics(store.jobs, store.regressions, heartbeat_interval=5, clock=lambda: now)
    def farm(metrics: ControllerMetrics) -> list:
        # Only what the store-reading collector yields: event counters are per process by design.
        return sorted((s.name, sorted(s.labels.items()), s.value)
                      for family in metrics.collector.collect() for s in family.samples)

    assert farm(first) == farm(second)
    assert len(farm(first)) > 40
    assert any(n == "hilfarm_jobs_total" for n, _, _ in scrape(second))


def test_newest_result_per_model_device_runtime_wins(store: Repositories) -> None:
    now = time.time()
    _populate(store, now)
    metrics = ControllerMetrics(store.jobs, store.regressions, heartbeat_interval=5)
    assert one(scrape(metrics), "hilfarm_inference_latency_seconds", quantile="0.5", device_profile="rpi5") == pytest.approx(0.002)
    store.jobs.cancel_job("j-queued", now=now)
    store.jobs.add_run(Run(id="r2", created_at=now), [_job("j-new", "r2", "rpi5", now)])
    faster = {**RESULT, "latency": {**RESULT["latency"], "p50_seconds": 0.0015}}
    job = store.jobs.lease_next("rpi5-01", now=now, lease_seconds=60).job
    assert job.id == "j-new"
    store.jobs.record_result("rpi5-01", job.lease_id, job.id, job.attempt, result=faster, failure=None, now=now + 1)
    assert one(scrape(metrics), "hilfarm_inference_latency_seconds", quantile="0.5", device_profile="rpi5") == pytest.approx(0.0015)


def test_http_endpoint_serves_the_registry(store: Repositories) -> None:
    metrics = ControllerMetrics(store.jobs, store.regressions, heartbeat_interval=5)
    port = metrics.start_http("127.0.0.1:0")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        metrics.stop()
    assert "hilfarm_store_up 1.0" in body
    assert "hilfarm_grpc_server_handling_seconds" in body


def test_bad_metrics_address_names_the_problem(store: Repositories) -> None:
    from hilfarm.controller.errors import CannotListen

    for bad in ("localhost", "127.0.0.1:99999", "127.0.0.1:metrics"):
        with pytest.raises(CannotListen, match=f"the metrics address '{bad}' is not HOST:PORT"):
            ControllerMetrics(store.jobs, store.regressions, heartbeat_interval=5).start_http(bad)


def test_database_down_still_answers_with_store_up_zero(tmp_path: Path) -> None:
    st = open_repositories(Database(f"sqlite:///{tmp_path / 'never-created' / 'x.db'}"))  # no schema: every query fails
    samples = scrape(ControllerMetrics(st.jobs, st.regressions, heartbeat_interval=5))
    assert one(samples, "hilfarm_store_up") == 0


def test_a_mistyped_profile_leaves_the_labels_once_its_jobs_are_cancelled(store: Repositories) -> None:
    now = time.time()
    _populate(store, now)
    store.jobs.add_run(Run(id="r2", created_at=now), [_job("j-typo", "r2", "locl", now)])
    metrics = ControllerMetrics(store.jobs, store.regressions, heartbeat_interval=5)
    # While it waits, the queue shows it: that is what a stuck-queue alert needs to see.
    assert one(scrape(metrics), "hilfarm_jobs_queued", device_profile="locl") == 1
    store.jobs.cancel_job("j-typo", now=now + 1)
    samples = scrape(metrics)
    assert [ls for _, ls, _ in samples if ls.get("device_profile") == "locl"] == []
    # Profiles that have agents keep every series, and a queued job for a profile without
    # agents (jetson) is still shown.
    assert one(samples, "hilfarm_jobs_queued", device_profile="rpi5") == 1
    assert one(samples, "hilfarm_jobs_queued", device_profile="jetson") == 1
    assert one(samples, "hilfarm_jobs_total", outcome="failed", reason="out_of_memory") == 1


def _finish(store: Repositories, job_id: str, name: str, finished: float, p50: float = 0.002) -> None:
    store.jobs.add_run(Run(id=f"run-{job_id}", created_at=finished - 1), [_job(job_id, f"run-{job_id}", "rpi5", finished - 1, name)])
    leased = store.jobs.lease_next("rpi5-01", now=finished - 1, lease_seconds=60).job
    assert leased.id == job_id
    result = {**RESULT, "latency": {**RESULT["latency"], "p50_seconds": p50}}
    assert store.jobs.record_result("rpi5-01", leased.lease_id, job_id, 1, result=result, failure=None, now=finished)[0]


def test_the_model_label_is_bounded_to_the_models_with_the_newest_results(store: Repositories) -> None:
    now = time.time()
    store.artifact_records.add_artifact(Artifact(sha256="a" * 64, size_bytes=1, format="onnx", filename="m", created_at=now))
    store.agents.register_agent("rpi5-01", profile="rpi5", tags=[], capabilities=ONNX, hostname="h", version="1", now=now)
    for i, name in enumerate(("old.onnx", "mid.onnx", "new.onnx")):
        _finish(store, f"j{i}", name, now + i)
    samples = scrape(ControllerMetrics(store.jobs, store.regressions, heartbeat_interval=5, max_models=2))
    for family in ("hilfarm_inference_latency_seconds", "hilfarm_model_jobs_total"):
        assert {ls["model"] for n, ls, _ in samples if n == family} == {"mid.onnx", "new.onnx"}, family
    assert one(samples, "hilfarm_jobs_total", outcome="succeeded", reason="ok") == 3, "farm totals still count every job"


def test_a_scrape_reads_the_new_result_only_not_every_stored_result(store: Repositories) -> None:
    """A new result costs the next scrape one document read, however many results are stored."""
    import sqlalchemy as sa

    now = time.time()
    store.artifact_records.add_artifact(Artifact(sha256="a" * 64, size_bytes=1, format="onnx", filename="m", created_at=now))
    store.agents.register_agent("rpi5-01", profile="rpi5", tags=[], capabilities=ONNX, hostname="h", version="1", now=now)
    for i in range(40):
        _finish(store, f"old-{i}", "mlp.onnx", now + i)
    metrics = ControllerMetrics(store.jobs, store.regressions, heartbeat_interval=5)
    scrape(metrics)
    _finish(store, "newest", "mlp.onnx", now + 100, p50=0.0042)
    statements: List[Tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    sa.event.listen(store.database.engine, "before_cursor_execute", record)
    try:
        samples = scrape(metrics)
    finally:
        sa.event.remove(store.database.engine, "before_cursor_execute", record)
    assert one(samples, "hilfarm_inference_latency_seconds", quantile="0.5") == pytest.approx(0.0042)
    reads = [(s, p) for s, p in statements if "jobs.result" in s and "FROM jobs" in s]
    assert len(reads) == 1 and "newest" in str(reads[0][1]), reads
    assert not any("'succeeded'" in s or "succeeded" in str(p) for s, p in statements if "FROM jobs" in s), \
        "no scan of the succeeded jobs"


def test_the_sqlite_write_lock_is_exported_as_the_time_transactions_held_and_waited_for_it(store: Repositories) -> None:
    """A write transaction that holds the lock while another waits shows in both counters; every
    transaction is counted once (nested write()s are one), and PostgreSQL exports none."""
    db = store.database
    metrics = ControllerMetrics(store.jobs, store.regressions, heartbeat_interval=5, write_lock_use=db.write_lock_use)
    before = scrape(metrics)
    count0 = one(before, "hilfarm_db_write_transactions_total")

    holding, release = threading.Event(), threading.Event()
    at: Dict[str, float] = {}

    def hold() -> None:
        with db.write() as s:
            with db.write():  # the lock is re-entrant: one transaction, counted once
                s.add(Run(id="held", created_at=time.time()))
            at["holding"] = time.perf_counter()
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    waiter = threading.Thread(target=lambda: store.jobs.add_run(Run(id="waited", created_at=time.time()), []))
    waiter.start()
    time.sleep(0.3)
    at["released"] = time.perf_counter()
    release.set()
    holder.join(10)
    waiter.join(10)

    after = scrape(metrics)
    assert one(after, "hilfarm_db_write_transactions_total") == count0 + 2
    held = one(after, "hilfarm_db_write_lock_held_seconds_total") - one(before, "hilfarm_db_write_lock_held_seconds_total")
    waited = (one(after, "hilfarm_db_write_lock_waited_seconds_total")
              - one(before, "hilfarm_db_write_lock_waited_seconds_total"))
    # The holder held it from before it said so until after the release.
    assert at["released"] - at["holding"] <= held < 5 and 0.25 <= waited < 5, (held, waited, at)
    assert waited <= held


@pytest.mark.postgres
def test_postgresql_has_no_write_lock_to_export(postgres_url: str) -> None:
    st = open_repositories(Database(postgres_url))
    st.database.migrate()
    try:
        assert st.database.write_lock_use() is None
        samples = scrape(ControllerMetrics(st.jobs, st.regressions, heartbeat_interval=5,
                                           write_lock_use=st.database.write_lock_use))
        assert not [n for n, _, _ in samples if n.startswith("hilfarm_db_write")]
        assert one(samples, "hilfarm_store_up") == 1
    finally:
        st.database.close()
