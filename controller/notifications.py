"""Change notifications: whoever waits for a job (a watching user, an agent asking for work, a
suite run) hears that it changed instead of polling the database.

A write transaction of the database (database.Database.write) records each job it changes as a
``Change``. After the commit the database hands them to its ``ChangeFeed``, which calls every
subscriber in this process. On PostgreSQL the same changes also go out with ``pg_notify``
inside the transaction, so they are delivered when, and only if, it commits; a
``PostgresListener`` thread in every controller replica LISTENs and passes on the changes the
*other* replicas made (each payload names the process it came from). When the listening
connection breaks, the listener reconnects with backoff and then publishes a *resync*: every
waiter looks at the database once, since notifications sent while it was away are lost.

A transaction that revokes a credential says so in its notification too (``revoked``): every other
replica, or process of the controller, forgets the callers it remembers (auth.Authenticator), so
the revoked token is refused there at its next call as it is where it was revoked; after a
reconnection they forget them too, since a revocation may have been missed.

On SQLite one process owns the database, so the in-process feed is all there is.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

log = logging.getLogger("hilfarm.controller")

CHANNEL = "hilfarm_changes"
# PostgreSQL refuses a payload of 8000 bytes or more.
_MAX_PAYLOAD = 7000


@dataclass(frozen=True)
class Change:
    """One job changed. ``queued``: it waits for an agent now (submitted or requeued), so an
    agent of its profile may want to ask again. ``finished``: it reached a final state."""

    job_id: str
    run_id: str
    device_profile: str
    queued: bool = False
    finished: bool = False


Subscriber = Callable[[Sequence[Change], bool], None]


class ChangeFeed:
    """Calls each subscriber with every batch of changes committed (``resync`` True: changes may
    have been missed; look at the database). Subscribers run in the publishing thread and must
    return quickly: the asynchronous server hands the batch to its event loop."""

    def __init__(self) -> None:
        # Names this process in the payloads it sends, so it skips its own when they come back.
        self.origin = uuid.uuid4().hex[:16]
        self._lock = threading.Lock()
        self._subscribers: List[Subscriber] = []
        self._revocation_listeners: List[Callable[[], None]] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)
        return unsubscribe

    def on_revocation(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (in the listening thread) whenever another process may have revoked
        a credential: it revoked one, or this process's listener reconnected."""
        with self._lock:
            self._revocation_listeners.append(listener)

    def publish_revocation(self) -> None:
        with self._lock:
            listeners = list(self._revocation_listeners)
        for listener in listeners:
            try:
                listener()
            except Exception:
                log.exception("a revocation listener failed")

    def publish(self, changes: Sequence[Change], *, resync: bool = False) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(changes, resync)
            except Exception:  # one broken subscriber must not silence the others
                log.exception("a change subscriber failed")


def _flags(queued: bool, finished: bool) -> int:
    """How a payload item says whether the change queued or finished its job (``decode`` reads
    bit 1 and bit 2)."""
    return int(queued) | int(finished) << 1


def encode(changes: Sequence[Change], origin: str, *, revoked: bool = False) -> List[str]:
    """NOTIFY payloads (each under PostgreSQL's limit) carrying ``changes``; ``revoked``: the
    transaction revoked a credential (a payload of its own says so; a version that does not
    know its key reads no change in it)."""
    payloads: List[str] = [json.dumps({"o": origin, "c": [], "r": 1})] if revoked else []
    batch: List[list] = []
    size = 0
    for c in changes:
        item = [c.job_id, c.run_id, c.device_profile, _flags(c.queued, c.finished)]
        item_size = len(json.dumps(item)) + 1
        if batch and size + item_size > _MAX_PAYLOAD:
            payloads.append(json.dumps({"o": origin, "c": batch}))
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        payloads.append(json.dumps({"o": origin, "c": batch}))
    return payloads


def notify_in_statement(job_id: Any, run_id: Any, device_profile: Any, *, finished: bool = False) -> Any:
    """PostgreSQL: a column that sends, from inside the statement that writes a job, the payload
    ``encode`` would send for that job's change (``finished``: a result stored; otherwise a lease
    taken, a progress report), naming the process bound as ``origin``.
    For a write of one statement that commits by itself (database.Database.write_alone): its
    notification then costs no round trip of its own, and is delivered when, and only if, the
    statement commits. ``decode`` reads it."""
    import sqlalchemy as sa  # here: the listener side of this module needs no SQLAlchemy

    item = sa.func.json_build_array(job_id, run_id, device_profile, sa.literal_column(str(_flags(False, finished))))
    payload = sa.func.json_build_object("o", sa.bindparam("origin", type_=sa.String()), "c",
                                        sa.func.json_build_array(item))
    return sa.func.pg_notify(CHANNEL, sa.cast(payload, sa.Text())).label("notified")


def decode(payload: str) -> Tuple[str, List[Change], bool]:
    """The origin, the changes and whether a credential was revoked, of an ``encode`` payload."""
    doc = json.loads(payload)
    return doc.get("o", ""), [Change(job_id, run_id, profile, bool(flags & 1), bool(flags & 2))
                              for job_id, run_id, profile, flags in doc.get("c", [])], bool(doc.get("r"))


class PostgresListener:
    """LISTENs on the controller's database and publishes the other replicas' changes."""

    def __init__(self, conninfo: str, feed: ChangeFeed, *, max_backoff: float = 10.0) -> None:
        self.conninfo = conninfo
        self.feed = feed
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._conn = None
        self.connected = threading.Event()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hilfarm-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        import psycopg

        delay = 0.2
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    if not first:
                        log.info("listening for changes again; every waiter looks at the database once")
                        self.feed.publish([], resync=True)
                        self.feed.publish_revocation()
                    first = False
                    delay = 0.2
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            self._deliver(notify.payload)
            except Exception as exc:
                self.connected.clear()
                if self._stop.is_set():
                    return
                log.warning("listening for changes on the database failed (%s: %s); retrying in %.1f s",
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "", delay)
                first = False
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_backoff)

    def _deliver(self, payload: str) -> None:
        try:
            origin, changes, revoked = decode(payload)
        except (ValueError, TypeError):
            log.warning("ignored a change notification this version cannot read: %.200s", payload)
            return
        if origin == self.feed.origin:
            return
        if revoked:
            self.feed.publish_revocation()
        if changes:
            self.feed.publish(changes)
