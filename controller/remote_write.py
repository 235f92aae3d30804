"""Remote-write of benchmark results to a Prometheus-compatible store (Prometheus with
--web.enable-remote-write-receiver, Mimir, Thanos receive, VictoriaMetrics ...).

A scrape stamps a figure with the time of the scrape; a result belongs to the time it was
measured. Remote-write sends every stored result's figures with the result's own timestamp, so
history survives controller restarts and a long-term store holds each result exactly once.

The protocol (remote-write 1.0): an HTTP POST whose body is a snappy-compressed (block format,
not framed) protobuf ``prometheus.WriteRequest``. The message is small and stable, so it is
encoded here by hand rather than through a second generated protobuf package; snappy comes from
cramjam (PyPI, prebuilt wheels).
"""
from __future__ import annotations

import logging
import queue
import struct
import threading
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

log = logging.getLogger("hilfarm.controller.remote_write")

Labels = Sequence[Tuple[str, str]]
# One time series: labels (with __name__) and (timestamp ms, value) samples.
Series = Tuple[Labels, Sequence[Tuple[int, float]]]


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 on the wire: two's complement in ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def encode_write_request(series: Iterable[Series]) -> bytes:
    """The protobuf bytes of a WriteRequest holding ``series`` (labels sorted by name, as the
    protocol requires)."""
    out = bytearray()
    for labels, samples in series:
        ts = bytearray()
        for name, value in sorted(labels):
            ts += _field_bytes(1, _field_bytes(1, name.encode()) + _field_bytes(2, value.encode()))
        for timestamp_ms, value in samples:
            sample = b"\x09" + struct.pack("<d", float(value)) + b"\x10" + _varint(int(timestamp_ms))
            ts += _field_bytes(2, sample)
        out += _field_bytes(1, bytes(ts))
    return bytes(out)


def snappy_compress(data: bytes) -> bytes:
    try:
        import cramjam
    except ImportError as exc:  # pragma: no cover - cramjam is in the controller extra
        raise RuntimeError(
            "remote-write needs snappy compression from the cramjam package: pip install 'hilfarm[controller]'"
        ) from exc
    return bytes(cramjam.snappy.compress_raw(data))


def snappy_decompress(data: bytes) -> bytes:
    import cramjam

    return bytes(cramjam.snappy.decompress_raw(data))


class RemoteWriteError(RuntimeError):
    """The remote store refused or could not take a write."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class RemoteWriter:
    """Sends figures to ``url`` from a background thread, so a report never waits on the store.

    Failed writes are retried with backoff when the store says it may succeed later (5xx,
    429, connection errors); a 4xx means the data is wrong for the store and is dropped with
    a log line naming the store's answer.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        headers: Optional[Mapping[str, str]] = None,
        extra_labels: Optional[Mapping[str, str]] = None,
        max_retries: int = 5,
        on_outcome: Optional[callable] = None,  # type: ignore[valid-type]
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"remote-write URL {url!r} must start with http:// or https://")
        self.url = url
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.extra_labels = dict(extra_labels or {})
        self.max_retries = max_retries
        self.on_outcome = on_outcome
        self._queue: "queue.Queue[Optional[List[Series]]]" = queue.Queue(maxsize=10_000)
        self._thread: Optional[threading.Thread] = None

    def report_outcomes_to(self, on_outcome: Callable[[str, int], None]) -> None:
        """Call ``on_outcome(outcome, sample count)`` for every write from now on (a metrics counter)."""
        self.on_outcome = on_outcome

    # ---- synchronous

    def write(self, series: Sequence[Series]) -> None:
        """POST one WriteRequest; raises RemoteWriteError when the store does not take it."""
        body = snappy_compress(encode_write_request(series))
        req = urllib.request.Request(self.url, data=body, method="POST")
        req.add_header("Content-Encoding", "snappy")
        req.add_header("Content-Type", "application/x-protobuf")
        req.add_header("User-Agent", "hilfarm-controller")
        req.add_header("X-Prometheus-Remote-Write-Version", "0.1.0")
        for key, value in self.headers.items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()[:500]
            retryable = exc.code >= 500 or exc.code == 429
            raise RemoteWriteError(f"remote-write store {self.url} answered HTTP {exc.code}: {detail}",
                                   retryable=retryable) from None
        except (urllib.error.URLError, OSError) as exc:
            raise RemoteWriteError(f"cannot reach the remote-write store {self.url}: {exc}", retryable=True) from None

    def series_for(self, figures: Iterable[object], timestamp: float) -> List[Series]:
        """Figures (metrics.Figure) as series with one sample each, stamped ``timestamp``."""
        ms = int(round(timestamp * 1000))
        out: List[Series] = []
        for fig in figures:
            labels: Dict[str, str] = dict(fig.labels)  # type: ignore[attr-defined]
            labels.update(self.extra_labels)
            labels["__name__"] = fig.name  # type: ignore[attr-defined]
            out.append((tuple(labels.items()), ((ms, float(fig.value)),)))  # type: ignore[attr-defined]
        return out

    # ---- background

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="hilfarm-remote-write", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout`` seconds), then stop."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def submit(self, figures: Iterable[object], *, timestamp: float) -> None:
        series = self.series_for(figures, timestamp)
        if not series:
            return
        try:
            self._queue.put_nowait(series)
        except queue.Full:
            log.error("remote-write queue is full (store %s unreachable for long?); dropped %d series",
                      self.url, len(series))
            self._outcome("failed", len(series))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far was sent or dropped. False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _outcome(self, outcome: str, count: int) -> None:
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome, count)
            except Exception:
                log.exception("remote-write outcome callback failed")

    def _loop(self) -> None:
        while True:
            series = self._queue.get()
            try:
                if series is None:
                    return
                self._send_with_retries(series)
            finally:
                self._queue.task_done()

    def _send_with_retries(self, series: List[Series]) -> None:
        delay = 0.5
        for attempt in range(1, self.max_retries + 2):
            try:
                self.write(series)
                self._outcome("sent", len(series))
                return
            except RemoteWriteError as exc:
                if not exc.retryable or attempt > self.max_retries:
                    log.error("remote-write dropped %d series after %d attempt(s): %s", len(series), attempt, exc)
                    self._outcome("failed", len(series))
                    return
                log.warning("remote-write attempt %d failed, retrying in %.1f s: %s", attempt, delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
