"""Which agent may run which job, leases with expiry, and the reaper that takes lost leases back.

``accepts(agent, job)`` answers yes or no *with the reason* (as LAVA's device matching does), so
when no agent can take a job the user reads one line per agent saying why.

Agents ask for work (LeaseJob long-poll). Each try is ``lease_once``: one transaction that
matches profile, tags and runtimes in SQL and locks only the row it leases (JobRepository.lease_next).
Between tries a waiting call sleeps until a job of its profile is queued: the server's
waiters.Waiters hears it from the database's change notifications (LISTEN/NOTIFY across replicas),
not from polling.

The reaper takes back leases whose agents went silent. After the controller starts, every
lease first gets ``restart_grace`` seconds (at least the agents' longest backoff): agents that
could not reach a stopped controller report the work they finished meanwhile instead of losing it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .models import Agent, DeviceStatus, Job, JobState, pin_tag
from .agent_repository import AgentRepository
from .job_repository import JobRepository, LeaseAttempt

log = logging.getLogger("hilfarm.controller")

# An agent silent for this many heartbeat intervals is offline.
HEALTHY_HEARTBEATS = 3
# The longest a LeaseJob call is held, whatever the agent asks for: proxies and load
# balancers cut idle calls.
MAX_LEASE_WAIT_SECONDS = 30.0
MAX_PLACEMENT_NOTES = 20
# Placement notes read the first agents of a job's profile. Notes given only because time passed
# (a queued job shown again to whoever watches it, every few seconds) share that read for this
# long: two hundred people watching queued jobs would otherwise read the same agents twenty times
# a second.
REFRESH_CANDIDATES_MAX_AGE_SECONDS = 2.0
# The notes of a job just submitted share it for this long: at a hundred submissions a second,
# reading twenty agents for each was a third of a submission's work. A registration, drain or
# removal on this controller is seen at once; a job that changed, or is asked for, is explained
# from the agents as they are.
SUBMITTED_CANDIDATES_MAX_AGE_SECONDS = 1.0
# The agents' longest backoff between tries to reach the controller (agent.service.AgentConfig
# backoff_max_seconds) plus two heartbeat intervals: how long leases are kept after a start.
DEFAULT_RESTART_GRACE_SECONDS = 40.0


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
    missing = [tag for tag in job.required_tags if tag not in agent.tags and tag != pin_tag(agent.id)]
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
        jobs: JobRepository,
        agents: AgentRepository,
        *,
        lease_seconds: float = 30.0,
        heartbeat_interval: float = 5.0,
        restart_grace: float = DEFAULT_RESTART_GRACE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jobs = jobs
        self.agents = agents
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval
        self.restart_grace = restart_grace
        self.clock = clock
        self._stopping = threading.Event()
        self._reaper: Optional[threading.Thread] = None
        # profile -> (when read, agents.roster_changes then, its placement candidates), shared by
        # notes that may be a moment old (placement_notes' ``max_age``).
        self._recent_candidates: Dict[str, Tuple[float, int, Tuple[List[Tuple[Agent, str]], int, int]]] = {}

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Give every active lease the restart grace, take back the leases that expired anyway
        (none, unless there is no grace), then reap expired leases in the background."""
        self._stopping.clear()
        if self.restart_grace > 0:
            extended = self.jobs.extend_leases(until=self.clock() + self.restart_grace)
            if extended:
                log.info("%d lease(s) kept for %.0f s after the start, so their agents can report back",
                         extended, self.restart_grace)
        # Before the server answers a call: a lease that ran out while the controller was away is
        # lost before its agent's report is read, not whenever the reaper's first pass comes.
        self.reap_once()
        self._reaper = threading.Thread(target=self._reap_loop, name="hilfarm-lease-reaper", daemon=True)
        self._reaper.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
            self._reaper = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

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
        agent, lost = self.agents.register_agent(
            agent_id, profile=profile, tags=tags, capabilities=capabilities,
            hostname=hostname, version=version, now=self.clock(),
        )
        log.info("agent %s registered (profile %s, tags %s)", agent_id, profile, ", ".join(tags) or "none")
        return agent

    def heartbeat(self, agent_id: str, *, busy: bool) -> bool:
        return self.agents.heartbeat(agent_id, busy=busy, now=self.clock(), lease_seconds=self.lease_seconds)

    def record_contact(self, beats: Dict[str, bool], touched: Iterable[str]) -> Set[str]:
        """Many heartbeats (agent -> busy) and long-poll contacts in one transaction."""
        return self.agents.record_contact(beats, touched, now=self.clock(), lease_seconds=self.lease_seconds)

    def devices(self) -> List[DeviceStatus]:
        now = self.clock()
        current = self.jobs.active_jobs_by_agent()
        return [
            DeviceStatus(
                agent=a,
                state=device_state(a, now=now, heartbeat_interval=self.heartbeat_interval,
                                   current_job_id=current.get(a.id, "")),
                current_job_id=current.get(a.id, ""),
            )
            for a in self.agents.list_agents()
        ]

    # ------------------------------------------------------------ placement

    def placement_notes(self, jobs: Iterable[Job], *, max_age: float = 0.0) -> Dict[str, List[str]]:
        """job id -> one line per agent saying why it cannot take the job (queued jobs only).

        Bounded: at most MAX_PLACEMENT_NOTES agents are read per device profile, those of the
        job's profile first, however many agents and jobs there are. ``max_age``: the notes may
        use agents read for the job's profile up to this many seconds ago, when no agent
        registered, was drained or was removed on this controller since
        (REFRESH_CANDIDATES_MAX_AGE_SECONDS, SUBMITTED_CANDIDATES_MAX_AGE_SECONDS)."""
        queued = [j for j in jobs if j.job_state == JobState.QUEUED]
        if not queued:
            return {}
        now = self.clock()
        roster = self.agents.roster_changes
        candidates: Dict[str, Tuple[List[Tuple[Agent, str]], int, int]] = {}
        out: Dict[str, List[str]] = {}
        for job in queued:
            profile = job.device_profile
            if profile not in candidates:
                recent = self._recent_candidates.get(profile) if max_age > 0 else None
                if recent is not None and recent[1] == roster and 0 <= now - recent[0] <= max_age:
                    candidates[profile] = recent[2]
                else:
                    candidates[profile] = self.agents.placement_candidates(profile, MAX_PLACEMENT_NOTES)
                    if len(self._recent_candidates) > 1024:
                        self._recent_candidates.clear()
                    self._recent_candidates[profile] = (now, roster, candidates[profile])
            out[job.id] = self._notes_for(job, *candidates[profile], now=now)
        return out

    def _notes_for(self, job: Job, agents: List[Tuple[Agent, str]], total: int, same: int, *,
                   now: float) -> List[str]:
        notes: List[str] = []
        if same == 0:
            notes.append(f"no agent with profile {job.device_profile} has registered")
        # Agents of the job's profile come first: their reasons are the ones a person can act on.
        for agent, current_job_id in agents:
            ok, why = accepts(agent, job, now=now, heartbeat_interval=self.heartbeat_interval,
                              current_job_id=current_job_id)
            notes.append(f"{agent.id}: {why}" + ("; waiting for it to ask for work" if ok else ""))
        count = (1 if same == 0 else 0) + total
        if count > MAX_PLACEMENT_NOTES:
            rest = count - MAX_PLACEMENT_NOTES + 1
            notes = notes[: MAX_PLACEMENT_NOTES - 1] + [f"... and {rest} more agents"]
        return notes

    # ------------------------------------------------------------ leases

    def lease_once(self, agent_id: str) -> LeaseAttempt:
        """One try to lease the oldest queued job that fits the agent (no waiting: the server's
        LeaseJob waits between tries for a job of the agent's profile to be queued)."""
        return self.jobs.lease_next(agent_id, now=self.clock(), lease_seconds=self.lease_seconds)

    def reap_once(self) -> List[Tuple[Job, JobState]]:
        return self.jobs.expire_leases(now=self.clock())

    def _reap_loop(self) -> None:
        period = min(1.0, max(0.05, self.lease_seconds / 5))
        while not self._stopping.wait(period):
            try:
                self.reap_once()
            except Exception:  # the reaper must outlive a database hiccup
                log.exception("lease reaper failed; retrying in %.2f s", period)
