"""Content-addressed model and input files on the controller's disk.

A file lives at ``<root>/<sha[:2]>/<sha>``. An upload streams into a temporary file under
``<root>/tmp/<replica>/`` while it is hashed, is checked against the declared size and sha256,
and is then renamed into place, so a name under ``<root>`` always holds exactly the bytes its
digest says. No artifact is ever held in memory as a whole.

Several controller replicas share one artifact store (the deployment mounts one volume at
``--artifacts-dir``, see deploy/kubernetes): the database says which digests exist, and every
replica must find their files. Each replica writes its uploads in a directory of its own, and
at start removes only leftovers that no upload has touched for ``STALE_UPLOAD_SECONDS`` (an
upload in progress writes every chunk), never another replica's upload in progress.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Deque, Iterable, Iterator, Optional, Tuple

from hilfarm.contract import ARTIFACT_FORMATS
from hilfarm.units import format_bytes

from .artifact_formats import check_format
from .errors import InvalidArgument, NotFound, ResourceExhausted
from .models import DEFAULT_PROJECT, Artifact
from .artifact_repository import ArtifactRepository

log = logging.getLogger("hilfarm.controller")

CHUNK_BYTES = 1 << 20
# Chunks received but not yet hashed and written: bounds an upload's memory to a few MiB.
_WRITE_AHEAD_CHUNKS = 8
DEFAULT_MAX_ARTIFACT_BYTES = 4 << 30
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A temporary upload file nobody wrote for this long was left by a controller that stopped.
STALE_UPLOAD_SECONDS = 3600.0


def check_digest(sha256: str, what: str = "artifact") -> str:
    """The digest in canonical (lower-case) form, or InvalidArgument naming what was sent."""
    digest = (sha256 or "").strip().lower()
    if not _SHA256.match(digest):
        raise InvalidArgument(f"{what} sha256 must be 64 hex digits, got {sha256!r}")
    return digest


def _keep(cache: "OrderedDict[Any, Any]", key: Any, value: Any, most: int = 4096) -> None:
    """Put ``key`` in one of the store's read-once caches, dropping the oldest past ``most``."""
    cache[key] = value
    while len(cache) > most:
        cache.popitem(last=False)


class ArtifactStore:
    def __init__(self, root: Path, records: ArtifactRepository, *, max_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
                 replica: Optional[str] = None) -> None:
        """``records``: which digests are stored and which projects sent them (the database)."""
        self.root = Path(root)
        self.records = records
        self.max_bytes = max_bytes
        self.replica = replica or uuid.uuid4().hex[:12]
        self._tmp_root = self.root / "tmp"
        self._tmp = self._tmp_root / self.replica
        # Records of stored digests: a digest's record never changes once written, so it is read
        # from the database once (every submission looks its models up).
        self._records: "OrderedDict[str, Artifact]" = OrderedDict()
        self._owned: "OrderedDict[Tuple[str, str], None]" = OrderedDict()  # (digest, project) known owned

    def prepare(self, *, now: Optional[float] = None) -> None:
        """Create this replica's upload directory; remove uploads cut short by a crash, that is
        temporary files untouched for STALE_UPLOAD_SECONDS (another replica's running upload
        is left alone)."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        cutoff = (time.time() if now is None else now) - STALE_UPLOAD_SECONDS
        for stale in self._tmp_root.glob("**/*.part"):
            try:
                if stale.stat().st_mtime < cutoff:
                    stale.unlink(missing_ok=True)
                    log.info("removed %s, an upload cut short by a stopped controller", stale)
            except FileNotFoundError:
                pass
        for directory in self._tmp_root.iterdir():
            if directory.is_dir() and directory != self._tmp:
                try:
                    directory.rmdir()  # only when empty: another replica may be writing there
                except OSError:
                    pass

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def stat(self, sha256: str, *, project: Optional[str] = None) -> Optional[Artifact]:
        """The stored artifact, or None. A recorded digest whose file is missing or has the
        wrong size counts as absent, so the next upload repairs it. With ``project``: only an
        artifact that project uploaded (another project's is absent to it, and must be sent)."""
        digest = check_digest(sha256)
        artifact = self._records.get(digest)
        if artifact is None:
            artifact = self.records.get_artifact(digest)
            if artifact is None:
                return None
            _keep(self._records, digest, artifact)
        if project is not None and (digest, project) not in self._owned:
            if not self.records.artifact_owned(digest, project):
                return None
            # Ownership is only ever added, so a "yes" stays true: every submission of a
            # model its project already uploaded would otherwise read it again.
            _keep(self._owned, (digest, project), None)
        try:
            size = self.path_for(digest).stat().st_size
        except FileNotFoundError:
            log.warning("artifact %s is recorded but its file %s is missing", digest, self.path_for(digest))
            return None
        if size != artifact.size_bytes:
            log.warning("artifact %s file holds %d bytes, %d recorded", digest, size, artifact.size_bytes)
            return None
        return artifact

    def check_header(self, artifact: Artifact) -> Artifact:
        """Refuse a header before a single data byte is read."""
        artifact.sha256 = check_digest(artifact.sha256)
        name = artifact.filename or artifact.sha256[:12]
        if artifact.format not in ARTIFACT_FORMATS:
            raise InvalidArgument(
                f"artifact {name}: format {artifact.format!r} is not one of {', '.join(ARTIFACT_FORMATS)}"
            )
        if artifact.size_bytes <= 0:
            raise InvalidArgument(f"artifact {name}: declared size {artifact.size_bytes} bytes; it must be positive")
        if artifact.size_bytes > self.max_bytes:
            raise ResourceExhausted(
                f"artifact {name} is {artifact.size_bytes} bytes ({format_bytes(artifact.size_bytes)}), larger than "
                f"this controller's limit of {self.max_bytes} bytes ({format_bytes(self.max_bytes)}); the operator "
                "can raise the limit with --max-artifact-bytes"
            )
        return artifact

    def receive(self, artifact: Artifact, data: Iterable[bytes], *,
                project: str = DEFAULT_PROJECT) -> Tuple[Artifact, bool, int]:
        """Store the bytes ``data`` yields as ``artifact`` (its header already checked), owned
        by ``project``.

        Returns (artifact as recorded, already_stored, bytes received). Raises InvalidArgument
        when the bytes do not match the declared size or digest, or are not a file of the
        declared format (artifact_formats.py); nothing is stored then.
        """
        upload = self.begin(artifact, project=project)
        try:
            for block in data:
                upload.write(block)
            return upload.finish()
        finally:
            upload.close()

    def begin(self, artifact: Artifact, *, project: str = DEFAULT_PROJECT) -> "Upload":
        """An upload of ``artifact`` (its header already checked) for ``project``, written block
        by block."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        return Upload(self, artifact, self._tmp / f"{artifact.sha256}.{uuid.uuid4().hex}.part", project)

    def open_chunks(self, sha256: str, chunk_bytes: int = CHUNK_BYTES) -> Tuple[Artifact, Iterator[bytes]]:
        """The artifact and an iterator over its bytes in chunks (the file opens lazily)."""
        artifact = self.stat(sha256)
        if artifact is None:
            if self.records.get_artifact(check_digest(sha256)) is not None:
                raise NotFound(
                    f"artifact {sha256} is recorded in the database but its file is missing from {self.root}: "
                    "every controller replica must use the same artifact store (--artifacts-dir on a shared "
                    "volume); upload the model again to repair it")
            raise NotFound(f"artifact {sha256} is not stored on this controller")
        path = self.path_for(artifact.sha256)

        def blocks() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while True:
                    block = f.read(chunk_bytes)
                    if not block:
                        return
                    yield block

        return artifact, blocks()


class Upload:
    """One artifact arriving: ``write`` each block (hashing and writing run on a thread of the
    upload's own, so they overlap with receiving the next blocks), then ``finish`` to verify and
    publish it, and ``close`` in any case (removes what was not published)."""

    def __init__(self, owner: ArtifactStore, artifact: Artifact, tmp: Path, project: str = DEFAULT_PROJECT) -> None:
        self.owner = owner
        self.artifact = artifact
        self.project = project
        self.name = artifact.filename or artifact.sha256[:12]
        self.tmp = tmp
        self.received = 0
        self._hasher = hashlib.sha256()
        self._file = open(tmp, "wb")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="artifact-write")
        self._pending: Deque[Future] = deque()

    def _consume(self, block: bytes) -> None:
        self._hasher.update(block)
        self._file.write(block)

    def write(self, block: bytes) -> None:
        """Queue one block; returns at once unless _WRITE_AHEAD_CHUNKS blocks are still queued."""
        if not block:
            return
        self.received += len(block)
        if self.received > self.artifact.size_bytes:
            raise InvalidArgument(f"upload of {self.name} sent more than the declared {self.artifact.size_bytes} bytes")
        self._pending.append(self._writer.submit(self._consume, block))
        if len(self._pending) > _WRITE_AHEAD_CHUNKS:
            self._pending.popleft().result()

    def finish(self) -> Tuple[Artifact, bool, int]:
        """Check size, digest and format (artifact_formats.py), publish the file under its
        digest, record it as the project's. Returns (artifact as recorded, already_stored,
        bytes received)."""
        artifact, name = self.artifact, self.name
        while self._pending:
            self._pending.popleft().result()
        self._file.flush()
        # The rename below publishes the file under its digest: its bytes must be on disk
        # first, or a crash could leave a short file under a valid name.
        os.fsync(self._file.fileno())
        self._file.close()
        if self.received != artifact.size_bytes:
            raise InvalidArgument(
                f"upload of {name} ended after {self.received} of the declared {artifact.size_bytes} bytes"
            )
        actual = self._hasher.hexdigest()
        if actual != artifact.sha256:
            raise InvalidArgument(
                f"upload of {name}: the bytes received hash to sha256 {actual}, not the declared "
                f"{artifact.sha256}; the client computed the digest of different bytes"
            )
        check_format(self.tmp, artifact.format, name)
        final = self.owner.path_for(artifact.sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        # Two uploads of one digest may race: both files hold the same verified bytes.
        os.replace(self.tmp, final)
        records = self.owner.records
        inserted = records.add_artifact(artifact)
        recorded = artifact if inserted else (records.get_artifact(artifact.sha256) or artifact)
        records.add_artifact_owner(artifact.sha256, self.project, now=artifact.created_at)
        log.info("artifact %s (%s, %d bytes) stored for project %s", artifact.sha256, name, self.received,
                 self.project)
        return recorded, not inserted, self.received

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        if not self._file.closed:
            self._file.close()
        self.tmp.unlink(missing_ok=True)
