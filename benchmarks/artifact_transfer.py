"""Artifact transfer over loopback: upload and download of a 100 MB artifact, and a resubmit.

Targets: >= 200 MB/s each way; a resubmitted artifact transfers 0 bytes.

    .venv/bin/python benchmarks/artifact_transfer.py [--mb 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from _farm import FarmProcess, scratch_dir  # noqa: E402

from hilfarm.client import FarmClient, sha256_of  # noqa: E402
from hilfarm.v1 import farm_pb2, farm_pb2_grpc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    root = scratch_dir("transfer")
    controller = FarmProcess(["controller", "serve", "--bind", "127.0.0.1:0"], root / "controller")
    try:
        size = args.mb * 1000 * 1000
        ups, downs, ends = [], [], []
        with FarmClient(controller.address) as client:
            client.wait_ready()
            channel = grpc.insecure_channel(controller.address)
            agent_api = farm_pb2_grpc.AgentServiceStub(channel)
            for repeat in range(args.repeats):
                # A new random file each time: a known digest would not be sent at all.
                path = root / f"artifact-{repeat}.onnx"
                path.write_bytes(os.urandom(size))
                started = time.perf_counter()
                digest = sha256_of(path)
                hashing = time.perf_counter() - started
                started = time.perf_counter()
                upload = client.upload(path, sha256=digest)
                up = time.perf_counter() - started
                assert upload.bytes_sent == size, upload
                ends.append(size / (up + hashing) / 1e6)

                started = time.perf_counter()
                digest, received = hashlib.sha256(), 0
                for chunk in agent_api.DownloadArtifact(farm_pb2.DownloadArtifactRequest(sha256=upload.sha256)):
                    digest.update(chunk.data)
                    received += len(chunk.data)
                down = time.perf_counter() - started
                assert received == size and digest.hexdigest() == upload.sha256
                ups.append(size / up / 1e6)
                downs.append(size / down / 1e6)
                print(f"repeat {repeat + 1}: upload {ups[-1]:.0f} MB/s ({up:.2f} s; the controller "
                      f"hashes, writes and fsyncs), download {downs[-1]:.0f} MB/s ({down:.2f} s); "
                      f"hashing the file on the client first {hashing:.2f} s")
            started = time.perf_counter()
            again = client.upload(root / "artifact-0.onnx")
            resubmit = time.perf_counter() - started
            channel.close()
        print(f"\nartifact of {args.mb} MB over loopback, {args.repeats} repeats (median):")
        print(f"  upload   {statistics.median(ups):7.0f} MB/s   target >= 200 MB/s")
        print(f"  download {statistics.median(downs):7.0f} MB/s   target >= 200 MB/s")
        print(f"  upload including the client's own sha256 of the file: {statistics.median(ends):.0f} MB/s")
        print(f"  resubmit of a stored artifact: {again.bytes_sent} bytes sent in {resubmit:.2f} s "
              f"(local hashing only)   target 0 bytes")
    finally:
        controller.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
