"""Content-addressed model and input files on the controller's disk.

A file lives at ``<root>/<sha[:2]>/<sha>``. An upload streams into a temporary file under
``<root>/tmp`` while it is hashed, is checked against the declared size and sha256, and is then
renamed into place, so a name under ``<root>`` always holds exactly the bytes its digest says.
No artifact is ever held in memory as a whole.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Deque, Iterable, Iterator, Optional, Tuple

from .artifact_formats import check_format
from .errors import InvalidArgument, NotFound, ResourceExhausted
from .models import ARTIFACT_FORMATS, DEFAULT_PROJECT, Artifact
from .store import Store

log = logging.getLogger("hilfarm.controller")

CHUNK_BYTES = 1 << 20
# Chunks received but not yet hashed and written: bounds an upload's memory to a few MiB.
_WRITE_AHEAD_CHUNKS = 8
DEFAULT_MAX_ARTIFACT_BYTES = 4 << 30
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_digest(sha256: str, what: str = "artifact") -> str:
    """The digest in canonical (lower-case) form, or InvalidArgument naming what was sent."""
    digest = (sha256 or "").strip().lower()
    if not _SHA256.match(digest):
        raise InvalidArgument(f"{what} sha256 must be 64 hex digits, got {sha256!r}")
    return digest


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


class ArtifactStore:
    def __init__(self, root: Path, store: Store, *, max_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES) -> None:
        self.root = Path(root)
        self.store = store
        self.max_bytes = max_bytes
        self._tmp = self.root / "tmp"

    def prepare(self) -> None:
        self._tmp.mkdir(parents=True, exist_ok=True)
        # Leftovers of uploads cut short by a crash: they never became artifacts.
        for stale in self._tmp.glob("*.part"):
            stale.unlink(missing_ok=True)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def stat(self, sha256: str, *, project: Optional[str] = None) -> Optional[Artifact]:
        """The stored artifact, or None. A recorded digest whose file is missing or has the
        wrong size counts as absent, so the next upload repairs it. With ``project``: only an
        artifact that project uploaded (another project's is absent to it, and must be sent)."""
        digest = check_digest(sha256)
        artifact = self.store.get_artifact(digest)
        if artifact is None:
            return None
        if project is not None and not self.store.artifact_owned(digest, project):
            return None
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
                f"artifact {name} is {artifact.size_bytes} bytes ({_human(artifact.size_bytes)}), larger than "
                f"this controller's limit of {self.max_bytes} bytes ({_human(self.max_bytes)}); the operator "
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
        name = artifact.filename or artifact.sha256[:12]
        self._tmp.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp / f"{artifact.sha256}.{uuid.uuid4().hex}.part"
        hasher = hashlib.sha256()
        received = 0
        try:
            # Hashing and writing run on a second thread (both release the GIL), so they
            # overlap with receiving the next chunks instead of adding to the transfer time.
            with open(tmp, "wb") as f, ThreadPoolExecutor(1, thread_name_prefix="artifact-write") as writer:
                def consume(block: bytes) -> None:
                    hasher.update(block)
                    f.write(block)

                pending: Deque[Future] = deque()
                for block in data:
                    if not block:
                        continue
                    received += len(block)
                    if received > artifact.size_bytes:
                        raise InvalidArgument(
                            f"upload of {name} sent more than the declared {artifact.size_bytes} bytes"
                        )
                    pending.append(writer.submit(consume, block))
                    if len(pending) > _WRITE_AHEAD_CHUNKS:
                        pending.popleft().result()
                for write in pending:
                    write.result()
                f.flush()
                # The rename below publishes the file under its digest: its bytes must be on
                # disk first, or a crash could leave a short file under a valid name.
                os.fsync(f.fileno())
            if received != artifact.size_bytes:
                raise InvalidArgument(
                    f"upload of {name} ended after {received} of the declared {artifact.size_bytes} bytes"
                )
            actual = hasher.hexdigest()
            if actual != artifact.sha256:
                raise InvalidArgument(
                    f"upload of {name}: the bytes received hash to sha256 {actual}, not the declared "
                    f"{artifact.sha256}; the client computed the digest of different bytes"
                )
            check_format(tmp, artifact.format, name)
            final = self.path_for(artifact.sha256)
            final.parent.mkdir(parents=True, exist_ok=True)
            # Two uploads of one digest may race: both files hold the same verified bytes.
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        inserted = self.store.add_artifact(artifact)
        recorded = artifact if inserted else (self.store.get_artifact(artifact.sha256) or artifact)
        self.store.add_artifact_owner(artifact.sha256, project, now=artifact.created_at)
        log.info("artifact %s (%s, %d bytes) stored", artifact.sha256, name, received)
        return recorded, not inserted, received

    def open_chunks(self, sha256: str, chunk_bytes: int = CHUNK_BYTES) -> Tuple[Artifact, Iterator[bytes]]:
        """The artifact and an iterator over its bytes in chunks (the file opens lazily)."""
        artifact = self.stat(sha256)
        if artifact is None:
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
