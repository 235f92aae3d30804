"""Content-addressed artifact cache on the device: one file per sha256 under the data dir.

A download streams chunks into a temp file beside the final one while hashing them, and is
renamed into place only when the digest matches, so a file under its digest is always
complete. A digest already in the cache is not downloaded again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable, Union

from hilfarm.agent.results import FailureCategory, JobFailed

log = logging.getLogger("hilfarm.agent")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactCache:
    def __init__(self, data_dir: Union[str, Path]) -> None:
        self.root = Path(data_dir) / "artifacts"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def path_for(self, sha256: str) -> Path:
        if not _HEX64.match(sha256):
            raise JobFailed(
                FailureCategory.INFRASTRUCTURE,
                f"the controller named artifact {sha256!r}, which is not a sha256 hex digest",
            )
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def fetch(self, sha256: str, open_stream: Callable[[], Iterable[bytes]]) -> Path:
        """The local path of ``sha256``, downloading it with ``open_stream()`` if not cached.

        ``open_stream`` returns an iterable of data chunks; any error while it runs, and a digest
        mismatch, raise JobFailed(INFRASTRUCTURE).
        """
        final = self.path_for(sha256)
        with self._lock:
            if final.is_file():
                log.debug("artifact %s is cached", sha256[:12])
                return final
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{sha256[:12]}-", suffix=".part")
            digest = hashlib.sha256()
            size = 0
            try:
                with os.fdopen(fd, "wb") as f:
                    try:
                        for data in open_stream():
                            digest.update(data)
                            f.write(data)
                            size += len(data)
                    except JobFailed:
                        raise
                    except Exception as exc:
                        raise JobFailed(
                            FailureCategory.INFRASTRUCTURE,
                            f"downloading artifact {sha256[:12]} from the controller failed after "
                            f"{size} bytes: {exc}",
                        ) from exc
                    f.flush()
                    os.fsync(f.fileno())
                got = digest.hexdigest()
                if got != sha256:
                    raise JobFailed(
                        FailureCategory.INFRASTRUCTURE,
                        f"artifact {sha256[:12]} arrived corrupted: its {size} bytes hash to {got[:12]}; "
                        f"the controller's copy or the transfer is broken",
                    )
                os.replace(tmp, final)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            log.info("artifact %s downloaded (%d bytes)", sha256[:12], size)
            return final
