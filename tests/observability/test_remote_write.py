"""Remote-write against a real Prometheus with its remote-write receiver: results arrive under
their own timestamps, and what a store refuses is reported with the store's answer."""
from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

pytest.importorskip("cramjam")
pytest.importorskip("sqlmodel")

from hilfarm.controller.metrics import ControllerMetrics, Figure
from hilfarm.controller.models import Artifact, Job, Run
from hilfarm.controller.remote_write import (
    RemoteWriteError,
    RemoteWriter,
    encode_write_request,
    snappy_compress,
    snappy_decompress,
)
from hilfarm.controller.app import open_repositories
from hilfarm.controller.database import Database

from .promserver import Prometheus


def test_write_request_encoding_matches_the_protobuf_wire_format() -> None:
    body = encode_write_request([((("b", "2"), ("__name__", "m")), ((1500, 0.25),))])
    # One TimeSeries (field 1) with labels sorted by name: __name__ before b.
    label1 = b"\x0a\x08__name__" + b"\x12\x01m"
    label2 = b"\x0a\x01b" + b"\x12\x012"
    sample = b"\x09" + struct.pack("<d", 0.25) + b"\x10" + bytes([0xDC, 0x0B])  # 1500 as a varint
    ts = b"\x0a" + bytes([len(label1)]) + label1 + b"\x0a" + bytes([len(label2)]) + label2 + b"\x12" + bytes([len(sample)]) + sample
    assert body == b"\x0a" + bytes([len(ts)]) + ts
    assert snappy_decompress(snappy_compress(body)) == body


def test_figures_arrive_with_their_own_timestamp(tmp_path: Path) -> None:
    with Prometheus(tmp_path / "prom", remote_write_receiver=True) as prom:
        writer = RemoteWriter(f"{prom.url}/api/v1/write", extra_labels={"farm": "test"})
        measured_at = time.time() - 120  # two minutes ago: not the time of the write
        fig = Figure("hilfarm_inference_latency_seconds",
                     (("device_profile", "rpi5"), ("model", "m.onnx"), ("quantile", "0.5"),
                      ("runtime", "onnxruntime"), ("simulated", "false")), 0.0123)
        writer.write(writer.series_for([fig], measured_at))
        result = prom.query('hilfarm_inference_latency_seconds{farm="test",quantile="0.5"}', at=measured_at + 1)
        assert len(result) == 1
        assert float(result[0]["value"][1]) == pytest.approx(0.0123)
        assert result[0]["metric"]["model"] == "m.onnx"
        # The raw sample carries the measurement time, to the millisecond.
        raw = prom.query('hilfarm_inference_latency_seconds{farm="test"}[5m]', at=measured_at + 1)
        assert raw[0]["values"][0][0] == pytest.approx(round(measured_at, 3), abs=0.001)

        # A sample older than the one stored for the same series is refused with Prometheus's reason.
        with pytest.raises(RemoteWriteError, match="HTTP 400") as info:
            writer.write(writer.series_for([fig], measured_at - 30))
        assert not info.value.retryable


def test_reported_results_are_sent_by_the_controller_metrics(tmp_path: Path) -> None:
    store = open_repositories(Database(f"sqlite:///{tmp_path / 'farm.db'}"))
    store.database.migrate()
    now = time.time()
    store.artifact_records.add_artifact(Artifact(sha256="b" * 64, size_bytes=1, format="onnx", filename="x.onnx", created_at=now))
    store.jobs.add_run(Run(id="r", created_at=now), [Job(id="j", run_id="r", model_sha256="b" * 64, model_name="x.onnx",
                                                    model_format="onnx", device_profile="local", created_at=now)])
    store.agents.register_agent("a1", profile="local", tags=[], capabilities={"runtimes": [{"name": "onnxruntime"}]},
                         hostname="h", version="1", now=now)
    job = store.jobs.lease_next("a1", now=now, lease_seconds=60).job
    finished = now - 30
    result = {"latency": {"p50_seconds": 0.004, "samples_ns": [4_000_000]}, "environment": {"runtime": "onnxruntime"}}
    with Prometheus(tmp_path / "prom", remote_write_receiver=True) as prom:
        writer = RemoteWriter(f"{prom.url}/api/v1/write")
        metrics = ControllerMetrics(store.jobs, store.regressions, heartbeat_interval=5, remote_write=writer)
        writer.start()
        try:
            for _ in range(2):  # an agent's retry of a stored report is sent once
                assert store.jobs.record_result("a1", job.lease_id, job.id, job.attempt, failure=None, now=finished,
                                                result=result, on_stored=metrics.result_stored)[0]
            assert writer.flush(10)
        finally:
            writer.stop()
        result = prom.query('hilfarm_inference_latency_seconds{quantile="0.5",device_profile="local"}', at=finished + 1)
        assert [float(r["value"][1]) for r in result] == [pytest.approx(0.004)]
        assert result[0]["metric"]["simulated"] == "false"
        sent = [s for s in metrics.scrape_text().splitlines() if s.startswith('hilfarm_remote_write_samples_total{outcome="sent"}')]
        assert sent and float(sent[0].split()[-1]) >= 1
        assert 'hilfarm_job_duration_seconds_count{device_profile="local",outcome="succeeded"} 1.0' in metrics.scrape_text()
    store.database.close()


def test_unreachable_store_is_retryable_and_named(tmp_path: Path) -> None:
    from .promserver import free_port

    writer = RemoteWriter(f"http://127.0.0.1:{free_port()}/api/v1/write", timeout=2)
    with pytest.raises(RemoteWriteError, match="cannot reach the remote-write store") as info:
        writer.write([((("__name__", "x"),), ((0, 1.0),))])
    assert info.value.retryable
