"""Artifact transfer over loopback: upload and download of a 100 MB artifact, and a resubmit.

Targets: >= 200 MB/s each way; a resubmitted artifact transfers 0 bytes. The artifact is an ONNX
model (the controller stores nothing else under that format) whose bulk is random bytes; it is
downloaded as an agent does, by an enrolled agent holding a lease on a job of it.

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

from hilfarm.client import FarmClient  # noqa: E402
from hilfarm.contract import file_sha256  # noqa: E402
from hilfarm.v1 import farm_pb2, farm_pb2_grpc  # noqa: E402


def onnx_file(path: Path, size: int) -> None:
    """An ONNX ModelProto of ``size`` bytes: ir_version, an empty graph, then random bytes in a
    field ONNX does not define (parsers skip it)."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    head = b"\x08\x08\x3a\x00" + varint(1000 << 3 | 2)
    width = next(w for w in range(1, 6) if len(varint(size - len(head) - w)) == w)
    prefix = head + varint(size - len(head) - width)
    path.write_bytes(prefix + os.urandom(size - len(prefix)))


class Downloader:
    """An agent of a profile of its own: it leases the job of each uploaded model, then downloads it."""

    def __init__(self, channel: grpc.Channel, client: FarmClient) -> None:
        api = farm_pb2_grpc.AgentServiceStub(channel)
        credential = api.Enroll(farm_pb2.EnrollRequest(agent_id="bench-downloader", device_profile="bench")).credential
        self.metadata = (("authorization", f"Bearer {credential}"),)
        self.api, self.client = api, client
        caps = farm_pb2.Capabilities(runtimes=[farm_pb2.RuntimeInfo(name="onnxruntime", version="bench")])
        api.Register(farm_pb2.RegisterRequest(device_profile="bench", capabilities=caps), metadata=self.metadata)

    def lease(self, upload) -> None:  # type: ignore[no-untyped-def]
        (job,) = self.client.submit([upload], ["bench"], farm_pb2.JobSettings()).jobs
        response = self.api.LeaseJob(farm_pb2.LeaseJobRequest(wait_seconds=5), metadata=self.metadata)
        assert response.HasField("lease") and response.lease.job.id == job.id, "the downloader got no lease"
        self.job_id = job.id

    def done(self) -> None:
        """The job is not run: cancelled, so the next lease is the next upload's."""
        self.client.cancel_job(self.job_id)

    def download(self, sha256: str):  # type: ignore[no-untyped-def]
        return self.api.DownloadArtifact(farm_pb2.DownloadArtifactRequest(sha256=sha256), metadata=self.metadata)


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
            downloader = Downloader(channel, client)
            for repeat in range(args.repeats):
                # A new random file each time: a known digest would not be sent at all.
                path = root / f"artifact-{repeat}.onnx"
                onnx_file(path, size)
                started = time.perf_counter()
                digest = file_sha256(path)
                hashing = time.perf_counter() - started
                started = time.perf_counter()
                upload = client.upload(path, sha256=digest)
                up = time.perf_counter() - started
                assert upload.bytes_sent == size, upload
                ends.append(size / (up + hashing) / 1e6)

                downloader.lease(upload)
                started = time.perf_counter()
                digest, received = hashlib.sha256(), 0
                for chunk in downloader.download(upload.sha256):
                    digest.update(chunk.data)
                    received += len(chunk.data)
                down = time.perf_counter() - started
                downloader.done()
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
