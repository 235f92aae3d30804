"""Does the farm report what the runtime really does? Harness overhead and fidelity.

Side by side in one run, alternating so machine noise hits both alike:
  * a model of >= 1 ms per inference: the farm's reported median latency over the median of a
    bare loop (a fresh process timing the same onnxruntime call on the same model, thread
    count and input shape).                                   target ratio <= 1.02
  * a trivial model (Identity on 4 floats): farm median - bare-loop median, i.e. the harness's
    per-inference overhead.                                   target <= 5 us
  * the `null` runtime through the farm: the cost of the timed region itself.

    .venv/bin/python benchmarks/harness_fidelity.py [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _farm import FarmProcess, scratch_dir  # noqa: E402

from hilfarm.client import FarmClient  # noqa: E402
from hilfarm.sample_models import make_onnx_heavy, make_onnx_identity  # noqa: E402
from hilfarm.v1 import farm_pb2  # noqa: E402

BARE_LOOP = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort
path, threads, runs, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
options = ort.SessionOptions()
if threads:
    options.intra_op_num_threads = threads
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
feeds = {}
for i in session.get_inputs():
    shape = [d if isinstance(d, int) else 1 for d in i.shape]
    feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
run = session.run
for _ in range(20):
    run(None, feeds)
clock = time.perf_counter_ns
samples = []
deadline = clock() + int(seconds * 1e9)
while len(samples) < runs or clock() < deadline:
    t0 = clock()
    run(None, feeds)
    samples.append(clock() - t0)
samples.sort()
print(json.dumps({"p50_ns": samples[len(samples) // 2], "count": len(samples)}))
"""


def bare_p50(model: Path, threads: int, runs: int, seconds: float) -> float:
    out = subprocess.run([sys.executable, "-c", BARE_LOOP, str(model), str(threads), str(runs), str(seconds)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["p50_ns"] / 1e9


def farm_p50(client: FarmClient, model: Path, threads: int, runs: int, seconds: float,
             runtime: str = "") -> float:
    upload = client.upload(model)
    settings = farm_pb2.JobSettings(threads=threads, min_runs=runs, min_seconds=seconds,
                                    warmup_runs=20, runtime=runtime)
    run = client.submit([upload], ["local"], settings)
    (job,) = list(client.watch_job(run.jobs[0].id))[-1:]
    if job.state != farm_pb2.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"farm job failed: {job.failure.message}")
    return job.result.latency.p50_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    root = scratch_dir("fidelity")
    heavy = make_onnx_heavy(root / "heavy.onnx")
    trivial = make_onnx_identity(root / "identity.onnx")
    farm = FarmProcess(["up", "--bind", "127.0.0.1:0"], root / "farm")
    try:
        ratios, overheads_us, null_us = [], [], []
        with FarmClient(farm.address) as client:
            for round_ in range(args.rounds):
                bare_heavy = bare_p50(heavy, args.threads, 200, 2.0)
                farm_heavy = farm_p50(client, heavy, args.threads, 200, 2.0)
                bare_trivial = bare_p50(trivial, args.threads, 20000, 1.0)
                farm_trivial = farm_p50(client, trivial, args.threads, 20000, 1.0)
                farm_null = farm_p50(client, trivial, args.threads, 20000, 1.0, runtime="null")
                ratios.append(farm_heavy / bare_heavy)
                overheads_us.append((farm_trivial - bare_trivial) * 1e6)
                null_us.append(farm_null * 1e6)
                print(f"round {round_ + 1}: heavy model farm p50 {farm_heavy * 1e3:.3f} ms / bare "
                      f"{bare_heavy * 1e3:.3f} ms = {ratios[-1]:.4f};  trivial model farm "
                      f"{farm_trivial * 1e6:.2f} us - bare {bare_trivial * 1e6:.2f} us = "
                      f"{overheads_us[-1]:+.2f} us;  null runtime {null_us[-1]:.2f} us")
        print(f"\nthreads={args.threads}, {args.rounds} rounds, medians:")
        print(f"  fidelity (farm p50 / bare-loop p50, model >= 1 ms): {statistics.median(ratios):.4f}   target <= 1.02")
        print(f"  harness overhead per inference (trivial model):   {statistics.median(overheads_us):+.2f} us   target <= 5 us")
        print(f"  timed region with the null runtime:                {statistics.median(null_us):.2f} us")
    finally:
        farm.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
