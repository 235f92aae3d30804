"""The artifact cache: verified downloads, atomic placement, no second download."""

from __future__ import annotations

import hashlib

import pytest

from hilfarm.agent.cache import ArtifactCache
from hilfarm.agent.results import FailureCategory, JobFailed

DATA = bytes(range(256)) * 10000  # 2.5 MB
SHA = hashlib.sha256(DATA).hexdigest()


def chunks(data, size=1 << 20):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_download_once_then_cached(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []

    def stream():
        calls.append(1)
        return chunks(DATA)

    path = cache.fetch(SHA, stream)
    assert path.read_bytes() == DATA
    assert path.name == SHA and cache.has(SHA)
    assert cache.fetch(SHA, stream) == path
    assert len(calls) == 1
    # a new cache on the same dir (agent restart) still has it
    assert ArtifactCache(tmp_path).fetch(SHA, stream) == path and len(calls) == 1


def test_digest_mismatch_is_infrastructure_and_leaves_nothing(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(JobFailed) as info:
        cache.fetch(SHA, lambda: chunks(DATA[:-1] + b"X"))
    assert info.value.failure.category is FailureCategory.INFRASTRUCTURE
    assert "corrupted" in info.value.failure.message
    assert not cache.has(SHA)
    assert [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()] == []


def test_stream_broken_midway_is_infrastructure(tmp_path):
    def stream():
        yield DATA[:1000]
        raise ConnectionError("controller went away")

    cache = ArtifactCache(tmp_path)
    with pytest.raises(JobFailed) as info:
        cache.fetch(SHA, stream)
    assert info.value.failure.category is FailureCategory.INFRASTRUCTURE
    assert "after 1000 bytes" in info.value.failure.message and "controller went away" in info.value.failure.message
    assert not cache.has(SHA)


def test_bad_digest_name_is_refused(tmp_path):
    with pytest.raises(JobFailed, match="not a sha256"):
        ArtifactCache(tmp_path).fetch("../../etc/passwd", lambda: iter([b""]))
