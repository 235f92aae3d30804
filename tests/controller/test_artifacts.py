"""Artifact upload and download over real gRPC on loopback."""
from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, List, Tuple

import grpc
import pytest

from hilfarm.v1 import farm_pb2 as pb

from .conftest import onnx_bytes, onnx_prefix, tflite_bytes

MIB = 1 << 20


def pattern_blocks(count: int) -> Iterator[bytes]:
    """Deterministic 1 MiB blocks of one ONNX model, generated on the fly (never the whole file
    at once): the first starts with the model's fields, the rest is a payload they skip."""
    prefix = onnx_prefix(count * MIB)
    for i in range(count):
        block = hashlib.sha256(i.to_bytes(8, "little")).digest() * (MIB // 32)
        yield prefix + block[len(prefix):] if i == 0 else block


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def header_chunk(sha: str, size: int, fmt: str = "onnx", data: bytes = b"") -> pb.ArtifactChunk:
    return pb.ArtifactChunk(header=pb.ArtifactHeader(sha256=sha, size_bytes=size, filename="m." + fmt, format=fmt),
                            data=data)


def stream_after_header(first: pb.ArtifactChunk, release: threading.Event, pulled: List[int]) -> Iterator[pb.ArtifactChunk]:
    """The header, then chunks only once ``release`` is set: the controller must answer
    without reading them."""
    yield first
    release.wait(30)
    pulled.append(1)
    yield pb.ArtifactChunk(data=b"x" * 10)


def test_a_200_mib_artifact_streams_up_and_down_without_being_held_in_memory(farm):
    count = 200
    digest = hashlib.sha256()
    for block in pattern_blocks(count):
        digest.update(block)
    sha = digest.hexdigest()
    measure = reset_peak_rss()
    rss_before = vm_kib("VmRSS")

    def chunks() -> Iterator[pb.ArtifactChunk]:
        for i, block in enumerate(pattern_blocks(count)):
            yield header_chunk(sha, count * MIB, data=block) if i == 0 else pb.ArtifactChunk(data=block)

    ref = farm.farm.UploadArtifact(chunks())
    assert (ref.sha256, ref.size_bytes, ref.already_stored, ref.bytes_received) == (sha, count * MIB, False, count * MIB)
    path = farm.controller.data_dir / "artifacts" / sha[:2] / sha
    assert path.stat().st_size == count * MIB
    assert list((farm.controller.data_dir / "artifacts" / "tmp").glob("**/*.part")) == []

    down = hashlib.sha256()
    sizes = []
    header = None
    for chunk in farm.download(sha):
        if chunk.HasField("header"):
            assert header is None, "only the first chunk carries the header"
            header = chunk.header
        sizes.append(len(chunk.data))
        down.update(chunk.data)
    assert header.sha256 == sha and header.size_bytes == count * MIB and header.format == "onnx"
    assert down.hexdigest() == sha and max(sizes) == MIB and len(sizes) == count
    if measure:
        grown_mib = (vm_kib("VmHWM") - rss_before) / 1024
        assert grown_mib < 100, f"peak memory grew by {grown_mib:.0f} MiB while moving a 200 MiB artifact"


def test_reupload_of_a_stored_digest_reads_nothing_more(farm):
    data = onnx_bytes(3 * MIB)
    sha = farm.upload(data)
    stat = farm.farm.StatArtifact(pb.StatArtifactRequest(sha256=sha))
    assert stat.present and stat.ref.size_bytes == len(data) and stat.ref.filename == "model.onnx"
    release, pulled = threading.Event(), []
    # The stream blocks after the header until the answer came: a controller that read on
    # would hang here until the deadline.
    try:
        ref = farm.farm.UploadArtifact(stream_after_header(header_chunk(sha, len(data)), release, pulled), timeout=10)
    finally:
        release.set()
    assert ref.already_stored and ref.bytes_received == 0 and ref.size_bytes == len(data)


def test_an_artifact_over_the_limit_is_refused_before_any_data(make_farm):
    farm = make_farm(max_artifact_bytes=1000)
    release, pulled = threading.Event(), []
    try:
        with pytest.raises(grpc.RpcError) as err:
            farm.farm.UploadArtifact(stream_after_header(header_chunk("c" * 64, 5000), release, pulled), timeout=10)
    finally:
        release.set()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = err.value.details()
    assert "5000 bytes" in details and "1000 bytes" in details and "--max-artifact-bytes" in details


def test_a_digest_mismatch_is_refused_and_nothing_is_stored(farm):
    data = onnx_bytes(2 * MIB + 5)
    wrong = hashlib.sha256(b"something else").hexdigest()
    chunks = [header_chunk(wrong, len(data), data=data[:MIB]), pb.ArtifactChunk(data=data[MIB:])]
    with pytest.raises(grpc.RpcError) as err:
        farm.farm.UploadArtifact(iter(chunks))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert hashlib.sha256(data).hexdigest() in err.value.details() and wrong in err.value.details()
    assert not farm.farm.StatArtifact(pb.StatArtifactRequest(sha256=wrong)).present
    assert not (farm.controller.data_dir / "artifacts" / wrong[:2]).exists()
    assert list((farm.controller.data_dir / "artifacts" / "tmp").glob("**/*.part")) == []


@pytest.mark.parametrize("sent, message", [(99, "ended after 99 of the declared 100 bytes"),
                                           (101, "sent more than the declared 100 bytes")])
def test_a_size_mismatch_is_refused(farm, sent, message):
    data = onnx_bytes(100) + os.urandom(sent - 100) if sent > 100 else onnx_bytes(100)[:sent]
    with pytest.raises(grpc.RpcError) as err:
        farm.farm.UploadArtifact(iter([header_chunk(hashlib.sha256(data[:100]).hexdigest(), 100, data=data)]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()


@pytest.mark.parametrize("first, message", [
    (pb.ArtifactChunk(data=b"abc"), "first chunk of an upload must carry the artifact header"),
    (header_chunk("d" * 64, 10, fmt="pt"), "format 'pt' is not one of onnx, tflite, npz"),
    (header_chunk("xyz", 10), "sha256 must be 64 hex digits"),
    (header_chunk("d" * 64, 0), "must be positive"),
])
def test_a_bad_header_is_refused(farm, first, message):
    with pytest.raises(grpc.RpcError) as err:
        farm.farm.UploadArtifact(iter([first]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()


def test_concurrent_uploads_of_one_digest_both_succeed(farm):
    data = tflite_bytes(4 * MIB)
    sha = hashlib.sha256(data).hexdigest()

    def upload(_: int) -> pb.ArtifactRef:
        chunks = [header_chunk(sha, len(data), fmt="tflite", data=data[:MIB])]
        chunks += [pb.ArtifactChunk(data=data[i:i + MIB]) for i in range(MIB, len(data), MIB)]
        return farm.farm.UploadArtifact(iter(chunks))

    with ThreadPoolExecutor(4) as pool:
        refs = list(pool.map(upload, range(4)))
    assert all(r.sha256 == sha for r in refs)
    assert sum(not r.already_stored for r in refs) == 1, "exactly one upload recorded the digest"
    path = farm.controller.data_dir / "artifacts" / sha[:2] / sha
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha


def test_a_recorded_artifact_whose_file_vanished_is_absent_and_can_be_uploaded_again(farm):
    data = onnx_bytes(1000)
    sha = farm.upload(data)
    list(farm.download(sha))  # the downloading agent now holds a lease on a job of this model
    (farm.controller.data_dir / "artifacts" / sha[:2] / sha).unlink()
    assert not farm.farm.StatArtifact(pb.StatArtifactRequest(sha256=sha)).present
    with pytest.raises(grpc.RpcError) as err:
        list(farm.download(sha))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and sha in err.value.details()
    farm.upload(data)
    assert farm.farm.StatArtifact(pb.StatArtifactRequest(sha256=sha)).present


def test_stat_and_download_name_a_malformed_digest(farm):
    for call in (lambda: farm.farm.StatArtifact(pb.StatArtifactRequest(sha256="nope")),
                 lambda: list(farm.download("nope"))):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'nope'" in err.value.details()


def test_replicas_sharing_an_artifact_store_keep_their_uploads_apart(tmp_path, store):
    """A replica starting up removes only uploads no one has written to for an hour, never the
    running upload of another replica in the same shared directory."""
    from hilfarm.controller.artifacts import STALE_UPLOAD_SECONDS, ArtifactStore
    from hilfarm.controller.models import Artifact

    root = tmp_path / "shared"
    first = ArtifactStore(root, store.artifact_records, replica="replica-a")
    first.prepare()
    data = onnx_bytes(3 * MIB)
    artifact = Artifact(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), format="onnx",
                        filename="m.onnx", created_at=0.0)
    upload = first.begin(artifact)
    upload.write(data[:MIB])
    assert upload.tmp.parent == root / "tmp" / "replica-a"
    crashed = root / "tmp" / "replica-gone" / ("f" * 64 + ".x.part")
    crashed.parent.mkdir(parents=True)
    crashed.write_bytes(b"left by a controller that was killed")
    old = os.stat(crashed).st_mtime - STALE_UPLOAD_SECONDS - 60
    os.utime(crashed, (old, old))

    second = ArtifactStore(root, store.artifact_records, replica="replica-b")
    second.prepare()
    assert not crashed.exists() and not crashed.parent.exists(), "the stale upload and its directory are gone"
    assert upload.tmp.exists(), "the other replica's running upload is left alone"
    upload.write(data[MIB:])
    recorded, already, received = upload.finish()
    upload.close()
    assert (recorded.sha256, already, received) == (artifact.sha256, False, len(data))
    assert second.stat(artifact.sha256) is not None, "the other replica finds the file in the shared store"


def test_a_download_of_a_recorded_artifact_missing_here_says_the_store_must_be_shared(make_farm, tmp_path):
    """Two replicas on one database but separate artifact directories: the misconfiguration is named."""
    uploader = make_farm(db_url=f"sqlite:///{tmp_path / 'shared.db'}", artifacts_dir=tmp_path / "a")
    sha = uploader.upload(onnx_bytes(100))
    from hilfarm.controller.artifacts import ArtifactStore
    from hilfarm.controller.errors import NotFound

    elsewhere = ArtifactStore(tmp_path / "b", uploader.controller.parts.artifact_records)
    with pytest.raises(NotFound) as err:
        elsewhere.open_chunks(sha)
    assert "same artifact store" in str(err.value) and "--artifacts-dir" in str(err.value)


def test_a_projects_ownership_of_an_artifact_is_read_once_and_never_granted_to_another(tmp_path, store):
    """Every submission looks its models up for its project; a "yes" is remembered (ownership is
    only ever added), a "no" is asked again, so a later upload by that project counts."""
    from hilfarm.controller.artifacts import ArtifactStore
    from hilfarm.controller.models import Artifact

    records = store.artifact_records
    reads: List[Tuple[str, str]] = []
    owned = records.artifact_owned

    def counted(sha256: str, project: str) -> bool:
        reads.append((sha256, project))
        return owned(sha256, project)

    records.artifact_owned = counted  # type: ignore[method-assign]
    artifacts = ArtifactStore(tmp_path / "artifacts", records)
    artifacts.prepare()
    data = onnx_bytes(MIB)
    artifact = Artifact(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), format="onnx",
                        filename="m.onnx", created_at=0.0)
    upload = artifacts.begin(artifact, project="vision")
    upload.write(data)
    upload.finish()
    upload.close()
    for _ in range(3):
        assert artifacts.stat(artifact.sha256, project="vision") is not None
        assert artifacts.stat(artifact.sha256, project="audio") is None
    assert reads.count((artifact.sha256, "vision")) == 1 and reads.count((artifact.sha256, "audio")) == 3
    upload = artifacts.begin(artifact, project="audio")
    upload.write(data)
    upload.finish()
    upload.close()
    assert artifacts.stat(artifact.sha256, project="audio") is not None
