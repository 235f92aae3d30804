"""Waiting for jobs with a real embedded farm over gRPC: the jobs of one run are followed on one
WatchRun stream, jobs of several runs on one WatchJob stream each, and either way the wait ends
with every job's final state."""
from __future__ import annotations

import collections

import pytest

from hilfarm.client import FarmClient
from hilfarm.embedded import EmbeddedFarm
from hilfarm.sample_models import make_onnx_mlp
from hilfarm.v1 import farm_pb2
from hilfarm.waiting import JobFollower

# The waits are what is tested, not the figures: the warmup and the timed phase are not left to go
# on until the null runtime's nanosecond latencies look steady (up to 30 s each on a busy machine).
QUICK = farm_pb2.JobSettings(runtime="null", min_runs=5, min_seconds=0.01, warmup_runs=1, warmup_seconds=0.01,
                           warmup_max_seconds=0.2, max_seconds=0.5, repeats=1)


class CountingClient(FarmClient):
    """The real client, counting the watch streams it opens."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.streams = collections.Counter()

    def watch_run(self, run_id):
        self.streams["WatchRun"] += 1
        return super().watch_run(run_id)

    def watch_job(self, job_id):
        self.streams["WatchJob"] += 1
        return super().watch_job(job_id)


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    root = tmp_path_factory.mktemp("waiting")
    with EmbeddedFarm(data_dir=root / "farm") as f:
        f.models = [make_onnx_mlp(root / f"m{i}.onnx", hidden=8 + i) for i in range(2)]
        yield f


def test_the_jobs_of_one_run_are_followed_on_one_stream(farm):
    with CountingClient(farm.address) as client:
        uploads = [client.upload(m) for m in farm.models]
        run = client.submit(uploads, [farm.local_profile()], QUICK)
        done = JobFollower(client, run.jobs).wait(timeout=180)
    assert [j.id for j in done] == [j.id for j in run.jobs]
    assert all(j.state == farm_pb2.JOB_STATE_SUCCEEDED for j in done), [j.failure.message for j in done]
    assert client.streams == {"WatchRun": 1}


def test_jobs_of_several_runs_are_followed_one_stream_each(farm):
    with CountingClient(farm.address) as client:
        uploads = [client.upload(m) for m in farm.models]
        jobs = [client.submit([u], [farm.local_profile()], QUICK).jobs[0] for u in uploads]
        done = JobFollower(client, jobs).wait(timeout=180)
    assert all(j.state == farm_pb2.JOB_STATE_SUCCEEDED for j in done)
    assert client.streams == {"WatchJob": 2}
