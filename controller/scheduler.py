"""Which agent may run which job, leases with expiry, and the reaper that takes lost leases back.

``accepts(agent, job)`` answers yes or no *with the reason* (as LAVA's device matching does), so
when no agent can take a job the user reads one line per agent saying why.

Agents ask for work (LeaseJob long-poll). A waiting call sleeps on an in-process condition that
submit, cancel, requeue and registration wake, and re-checks the database every second anyway,
so jobs submitted through another controller replica are found too.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import FailedPrecondition
from .models import Agent, DeviceStatus, Job, JobState
from .store import Store

log = logging.getLogger("hilfarm.controller")

# An agent silent for this many heartbeat intervals is offline.
HEALTHY_HEARTBEATS = 3
# The longest a LeaseJob call is held, whatever the agent asks for: proxies and load
# balancers cut idle calls, and a held call pins a server thread.
MAX_LEASE_WAIT_SECONDS = 30.0
# A waiting LeaseJob re-reads the database this often, for jobs submitted to another replica.
DB_RECHECK_SECONDS = 1.0
MAX_PLACEMENT_NOTES = 20


def _clock_text(ts: float, now: float) -> str:
    fmt = "%H:%M:%S" if now - ts < 86400 else "%Y-%m-%d %H:%M:%S"
    return time.strftime(fmt, time.localtime(ts))


def is_online(agent: Agent, *, now: float, heartbeat_interval: float) -> bool:
    return now - agent.last_seen <= HEALTHY_HEARTBEATS * heartbeat_interval


def find_runtime(agent: Agent, name: str) -> Optional[dict]:
    for runtime in agent.capabilities.get("runtimes", []):
        if runtime.get("name") == name:
            return runtime
    return None


def _runtime_text(runtime: dict) -> str:
    return f"{runtime.get('name', '?')} {runtime.get('version', '')}".strip()


def accepts(
    agent: Agent,
    job: Job,
    *,
    now: Optional[float] = None,
    heartbeat_interval: float = 5.0,
    current_job_id: str = "",
) -> Tuple[bool, str]:
    """Whether ``agent`` can run ``job`` now, and why not (or "can take the job")."""
    now = time.time() if now is None else now
    if agent.profile != job.device_profile:
        return False, f"profile is {agent.profile}, job needs {job.device_profile}"
    if not is_online(agent, now=now, heartbeat_interval=heartbeat_interval):
        return False, f"offline since {_clock_text(agent.last_seen, now)}"
    if agent.draining:
        return False, "draining (taken out of service by an operator)"
    if current_job_id:
        return False, f"busy with job {current_job_id}"
    if agent.busy:
        return False, "busy"
    # "agent:<id>" pins a job to one agent (a confirmation re-run stays on the device that
    # found the suspect; a person can pin with --tag agent:<id>).
    missing = [tag for tag in job.required_tags if tag not in agent.tags and tag != f"agent:{agent.id}"]
    if missing:
        has = ", ".join(agent.tags) or "no tags"
        return False, f"lacks tag{'s' if len(missing) > 1 else ''} {', '.join(missing)} (has {has})"
    wanted = job.runtime
    runtime = find_runtime(agent, wanted)
    if runtime is None:
        has = ", ".join(_runtime_text(r) for r in agent.capabilities.get("runtimes", [])) or "no runtime"
        return False, f"no {wanted} runtime (has {has})"
    provider = job.settings.get("execution_provider", "")
    providers = runtime.get("execution_providers", [])
    if provider and provider not in providers:
        return False, (
            f"{_runtime_text(runtime)} lacks execution provider {provider} "
            f"(has {', '.join(providers) or 'none'})"
        )
    return True, "can take the job"


def device_state(agent: Agent, *, now: float, heartbeat_interval: float, current_job_id: str = "") -> str:
    if not is_online(agent, now=now, heartbeat_interval=heartbeat_interval):
        return "offline"
    if agent.draining:
        return "draining"
    if current_job_id or agent.busy:
        return "busy"
    return "idle"


class Scheduler:
    def __init__(
        self,
        store: Store,
        *,
        lease_seconds: float = 30.0,
        heartbeat_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval
        self.clock = clock
        # Two wake-up channels, so that frequent progress reports do not wake every agent
        # waiting for work: "work" (a job became leasable) and "change" (any job changed).
        self._work = threading.Condition()
        self._work_generation = 0
        self._change = threading.Condition()
        self._change_generation = 0
        self._stopping = threading.Event()
        self._reaper: Optional[threading.Thread] = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stopping.clear()
        self._reaper = threading.Thread(target=self._reap_loop, name="hilfarm-lease-reaper", daemon=True)
        self._reaper.start()

    def stop(self) -> None:
        self._stopping.set()
        self.notify_work()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
            self._reaper = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def notify_work(self) -> None:
        """A job may have become leasable (submitted, requeued) or an agent appeared."""
        with self._work:
            self._work_generation += 1
            self._work.notify_all()
        self.notify_change()

    def notify_change(self) -> None:
        """A job changed (leased, progressed, finished, cancelled): wakes watchers."""
        with self._change:
            self._change_generation += 1
            self._change.notify_all()

    @property
    def change_generation(self) -> int:
        with self._change:
            return self._change_generation

    def wait_for_change(self, timeout: float, since: int) -> None:
        """Sleep until a change after generation ``since``, or ``timeout``."""
        with self._change:
            if since == self._change_generation and not self.stopping:
                self._change.wait(timeout)

    def _wait_for_work(self, timeout: float, since: int) -> None:
        with self._work:
            if since == self._work_generation and not self.stopping:
                self._work.wait(timeout)

    # ------------------------------------------------------------ agents

    def register(
        self,
        agent_id: str,
        *,
        profile: str,
        tags: Sequence[str],
        capabilities: dict,
        hostname: str,
        version: str,
    ) -> Agent:
        agent, lost = self.store.register_agent(
            agent_id, profile=profile, tags=tags, capabilities=capabilities,
            hostname=hostname, version=version, now=self.clock(),
        )
        log.info("agent %s registered (profile %s, tags %s)", agent_id, profile, ", ".join(tags) or "none")
        self.notify_work()
        return agent

    def heartbeat(self, agent_id: str, *, busy: bool) -> bool:
        return self.store.heartbeat(agent_id, busy=busy, now=self.clock(), lease_seconds=self.lease_seconds)

    def devices(self) -> List[DeviceStatus]:
        now = self.clock()
        current = self.store.active_jobs_by_agent()
        return [
            DeviceStatus(
                agent=a,
                state=device_state(a, now=now, heartbeat_interval=self.heartbeat_interval,
                                   current_job_id=current.get(a.id, "")),
                current_job_id=current.get(a.id, ""),
            )
            for a in self.store.list_agents()
        ]

    # ------------------------------------------------------------ placement

    def placement_notes(self, jobs: Iterable[Job]) -> Dict[str, List[str]]:
        """job id -> one line per agent saying why it cannot take the job (queued jobs only)."""
        queued = [j for j in jobs if j.job_state == JobState.QUEUED]
        if not queued:
            return {}
        agents = self.store.list_agents()
        current = self.store.active_jobs_by_agent()
        now = self.clock()
        return {job.id: self._notes_for(job, agents, current, now) for job in queued}

    def _notes_for(self, job: Job, agents: List[Agent], current: Dict[str, str], now: float) -> List[str]:
        notes: List[str] = []
        if not any(a.profile == job.device_profile for a in agents):
            notes.append(f"no agent with profile {job.device_profile} has registered")
        # Agents of the job's profile first: their reasons are the ones a person can act on.
        ordered = sorted(agents, key=lambda a: (a.profile != job.device_profile, a.id))
        for agent in ordered:
            ok, why = accepts(agent, job, now=now, heartbeat_interval=self.heartbeat_interval,
                              current_job_id=current.get(agent.id, ""))
            notes.append(f"{agent.id}: {why}" + ("; waiting for it to ask for work" if ok else ""))
        if len(notes) > MAX_PLACEMENT_NOTES:
            rest = len(notes) - MAX_PLACEMENT_NOTES + 1
            notes = notes[: MAX_PLACEMENT_NOTES - 1] + [f"... and {rest} more agents"]
        return notes

    # ------------------------------------------------------------ leases

    def lease(self, agent_id: str, wait_seconds: float, still_wanted: Callable[[], bool] = lambda: True) -> Optional[Job]:
        """Lease the oldest queued job that fits the agent, waiting up to ``wait_seconds``
        (at most MAX_LEASE_WAIT_SECONDS) for one to appear. None when none came."""
        agent = self.store.get_agent(agent_id)
        if agent is None:
            raise FailedPrecondition(
                f"agent {agent_id!r} is not registered with this controller; it must call Register first"
            )
        deadline = time.monotonic() + min(max(wait_seconds, 0.0), MAX_LEASE_WAIT_SECONDS)
        hb = self.heartbeat_interval

        def fits(agent: Agent, job: Job) -> bool:
            # The asking agent is online and idle by the fact that it asks.
            return accepts(agent, job, now=agent.last_seen, heartbeat_interval=hb)[0]

        touched = time.monotonic()
        first = True
        while True:
            with self._work:
                generation = self._work_generation
            # After the first try, only queued work for the agent's profile is worth a write
            # transaction; meanwhile a long wait still counts as contact with the agent.
            if first or self.store.has_queued(agent.profile):
                first = False
                job = self.store.lease_next(agent_id, fits, now=self.clock(), lease_seconds=self.lease_seconds)
                touched = time.monotonic()
                if job is not None:
                    self.notify_change()
                    return job
            elif time.monotonic() - touched >= hb:
                self.store.touch_agent(agent_id, now=self.clock())
                touched = time.monotonic()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.stopping or not still_wanted():
                return None
            self._wait_for_work(min(remaining, DB_RECHECK_SECONDS, hb), since=generation)

    def reap_once(self) -> List[Tuple[Job, JobState]]:
        changed = self.store.expire_leases(now=self.clock())
        if changed:
            self.notify_work()
        return changed

    def _reap_loop(self) -> None:
        period = min(1.0, max(0.05, self.lease_seconds / 5))
        while not self._stopping.wait(period):
            try:
                self.reap_once()
            except Exception:  # the reaper must outlive a database hiccup
                log.exception("lease reaper failed; retrying in %.2f s", period)
