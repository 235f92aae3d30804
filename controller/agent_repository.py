"""The agents the controller knows, in its database: registration, heartbeats and other
contact, draining, removal, and the lists the scheduler explains placement with.

An agent and the jobs it holds change together in some operations, and each of those is one
transaction, or a crash between two would leave a lease nobody holds or an agent marked busy
with nothing. The dependency runs one way between the two modules:

- what the agent side does to leases (a registering or removed agent loses them, a heartbeat
  renews them) goes through the job repository's session-level methods (``LeaseKeeper``), run
  inside this repository's transaction; this module is given the job repository rather than
  importing it, so the two modules import each other in one direction only;
- what the lease protocol does to an agent's row (asking for work, reporting progress or a
  result marks it seen) is done by this module's session-level functions (``agent_for_lease``,
  ``mark_asked``, ``mark_working``), which job_repository.py calls inside its transactions.

Lock order, as in job_repository.py: job rows first, then agent rows. Agent rows are read
without a lock and changed under ``no_autoflush``, so their UPDATE is only sent at commit, after
the job rows the transaction needs are locked; a batch of heartbeats renews leases before it
marks agents seen, each in id order (on PostgreSQL it is one statement whose parts skip the rows
other transactions hold, so it waits for no lock).
"""
from __future__ import annotations

from typing import Any, Iterable, List, Mapping, Optional, Protocol, Sequence, Set, Tuple

import sqlalchemy as sa
from sqlmodel import Session, select

from .database import Database
from .errors import NotFound
from .models import ACTIVE_STATES, Agent, Job, JobState, states_sql
from .notifications import Change

_ACTIVE = states_sql(ACTIVE_STATES)
_JOBS = Job.__table__
_AGENTS = Agent.__table__

# Statements of the hot paths, built once: building a SQLAlchemy statement costs several times
# more than running it on SQLite, and a thousand agents run these hundreds of times a second.
_B = sa.bindparam
_GET_AGENT = sa.select(_AGENTS).where(_AGENTS.c.id == _B("agent_id"))
_AGENT_FOR_LEASE = sa.select(_AGENTS.c.profile, _AGENTS.c.tags, _AGENTS.c.capabilities, _AGENTS.c.registered_at).where(
    _AGENTS.c.id == _B("agent_id"))


def agent_lease_state(agent: str = "agent_id") -> Tuple[sa.ScalarSelect, sa.ScalarSelect]:
    """The registered_at and draining of the agent bound as ``agent``, as columns a lease's look
    reads with the queue: which registration leasing remembers, and whether to lease at all."""
    return (sa.select(_AGENTS.c.registered_at).where(_AGENTS.c.id == _B(agent)).scalar_subquery(),
            sa.select(_AGENTS.c.draining).where(_AGENTS.c.id == _B(agent)).scalar_subquery())


AGENT_LEASE_STATE = agent_lease_state()


def agent_asked(busy: Any, *conditions: sa.ColumnElement, agent: str = "agent_id") -> sa.Update:
    """The statement that marks the agent bound as ``agent`` as having asked for work or
    reported a result: seen at ``now``, ``busy`` or not. ``conditions`` narrow it, for a statement
    of the job repository that writes it along with a job (a PostgreSQL common table expression,
    where the agent is bound under a name that is no column of the jobs table: SQLAlchemy would
    take such a parameter for a value to set)."""
    return sa.update(_AGENTS).where(_AGENTS.c.id == _B(agent), *conditions).values(last_seen=_B("now"), busy=busy)


_AGENT_ASKED = agent_asked(_B("is_busy"))
_KNOWN_AGENTS = sa.select(_AGENTS.c.id).where(_AGENTS.c.id.in_(_B("ids", expanding=True)))
# A batch of heartbeats skips rows another transaction holds (on PostgreSQL): that transaction
# (a lease, a progress report, a result) marks the agent seen and renews or ends the lease
# itself, and waiting for it would hold up every heartbeat of the batch.
_BEAT = sa.update(_AGENTS).where(_AGENTS.c.id.in_(
    sa.select(_AGENTS.c.id).where(_AGENTS.c.id.in_(_B("ids", expanding=True)))
    .with_for_update(skip_locked=True).scalar_subquery())).values(
    last_seen=_B("now"), busy=sa.case((_AGENTS.c.id.in_(_B("busy_ids", expanding=True)), True), else_=False))


def _seen(ids: str) -> sa.Update:
    """Agents that only waited in a long-poll (bound as ``ids``) marked seen, skipping rows
    another transaction holds."""
    return sa.update(_AGENTS).where(_AGENTS.c.id.in_(
        sa.select(_AGENTS.c.id).where(_AGENTS.c.id.in_(_B(ids, expanding=True)))
        .with_for_update(skip_locked=True).scalar_subquery())).values(last_seen=_B("now"))


_SEEN = _seen("ids")


def _contact_statement(renew_leases: sa.Update) -> sa.Select:
    """PostgreSQL: a batch of contact (record_contact) as one statement that commits by itself
    (Database.write_alone): the beating agents' leases renewed (``renew_leases``, binding them as
    ``ids`` and the new expiry as ``expires``), the beating agents marked seen with their busy
    flag, the agents that only waited marked seen (``seen_ids``), returning which of all of them
    (``all_ids``) are registered. One round trip where a transaction took five (BEGIN, the
    read of the registered agents, the leases, the agents, COMMIT). Every part skips rows another
    transaction holds, so the statement waits for no lock, whatever order PostgreSQL runs the
    parts in; an id that is not registered matches no agent and holds no lease, so the parts
    need not wait for the read of the registered ones."""
    return (sa.select(_AGENTS.c.id).where(_AGENTS.c.id.in_(_B("all_ids", expanding=True)))
            .add_cte(renew_leases.cte("renewed"), _BEAT.cte("beat"), _seen("seen_ids").cte("seen")))


# The first few agents of one profile, or of the others, by id (the index on (profile, id) reads
# only the rows listed), each with the job it holds a lease for, read for those few only.
_CURRENT_JOB = (sa.select(_JOBS.c.id).where(_JOBS.c.agent_id == _AGENTS.c.id, _JOBS.c.state.in_(_ACTIVE))
                .limit(1).scalar_subquery().label("current"))
# Each row also carries the number of agents in all and of the profile (counted once per
# statement): one statement fewer on every submission and watch of a queued job.
_AGENT_COUNTS = (sa.select(sa.func.count()).select_from(_AGENTS).scalar_subquery().label("agents_total"),
                 sa.select(sa.func.count()).where(_AGENTS.c.profile == _B("profile")).scalar_subquery()
                 .label("agents_of_profile"))
_AGENTS_OF_PROFILE = (sa.select(_AGENTS, _CURRENT_JOB, *_AGENT_COUNTS).where(_AGENTS.c.profile == _B("profile"))
                      .order_by(_AGENTS.c.profile, _AGENTS.c.id).limit(_B("limit")))
_AGENTS_OF_OTHER_PROFILES = (sa.select(_AGENTS, _CURRENT_JOB, *_AGENT_COUNTS).where(_AGENTS.c.profile != _B("profile"))
                             .order_by(_AGENTS.c.id).limit(_B("limit")))


# ---------------------------------------------------------------- inside the job repository's transactions

def agent_for_lease(conn: sa.Connection, agent_id: str) -> Optional[sa.Row]:
    """(profile, tags, capabilities, registered_at) of a registered agent, read without a lock;
    None for an agent that never registered."""
    return conn.execute(_AGENT_FOR_LEASE, {"agent_id": agent_id}).first()


def mark_asked(conn: sa.Connection, agent_id: str, *, now: float, busy: bool) -> None:
    """The agent asked for work or reported a result: seen now, busy or not."""
    conn.execute(_AGENT_ASKED, {"agent_id": agent_id, "now": now, "is_busy": busy})


def mark_working(s: Session, agent_id: str, *, now: float) -> None:
    """The agent reported progress on a job it got back: seen now, and busy. Sent at commit
    (the caller holds ``no_autoflush``), after the job row it locked."""
    agent = s.get(Agent, agent_id)
    if agent is not None:
        agent.last_seen = now
        agent.busy = True
        s.add(agent)


def all_agents(s: Session) -> List[Agent]:
    """Every agent, read in the caller's transaction."""
    return list(s.exec(select(Agent)).all())


class LeaseKeeper(Protocol):
    """What this repository needs of the job repository, inside its own transactions."""

    def release_leases_in(self, s: Session, agent_id: str, now: float, why: str) -> List[Tuple[Job, JobState]]:
        """The agent's leases are lost (its jobs queued again or failed); returned with their new state."""
        ...

    def renew_leases_in(self, conn: sa.Connection, agent_ids: Sequence[str], *, until: float) -> None:
        """The leases of these agents last until ``until``."""
        ...

    @property
    def lease_renewal(self) -> sa.Update:
        """The statement ``renew_leases_in`` runs (the agents bound as ``ids``, the time as
        ``expires``), for a statement of this repository that does it along with its own work."""
        ...

    def forget_agent(self, agent_id: str) -> None:
        """The agent registered again or was removed: what is remembered of it is read again."""
        ...


class AgentRepository:
    """The agents table, in the transactions of the controller's ``Database``; ``leases`` (the
    job repository) releases and renews an agent's leases in the same transaction."""

    def __init__(self, db: Database, leases: LeaseKeeper) -> None:
        self.db = db
        self.leases = leases
        self._contact = _contact_statement(leases.lease_renewal) if db.is_postgresql else None
        # Counts the registrations, drains and removals this process made (a failed registration
        # too: one read more): placement notes that share a read of a profile's agents for a
        # moment read again when it moves.
        self.roster_changes = 0

    def __repr__(self) -> str:
        return f"AgentRepository({self.db!r})"

    def register_agent(
        self,
        agent_id: str,
        *,
        profile: str,
        tags: Sequence[str],
        capabilities: dict,
        hostname: str,
        version: str,
        now: float,
    ) -> Tuple[Agent, List[Tuple[Job, JobState]]]:
        """Create or refresh an agent. A registering agent has (re)started, so the leases it
        held are lost: their jobs are requeued or failed, returned with their new state.
        An operator's drain outlives the restart."""
        try:
            with self.db.write() as s, s.no_autoflush:
                lost = self.leases.release_leases_in(s, agent_id, now, "restarted")
                agent = s.get(Agent, agent_id)
                if agent is None:
                    agent = Agent(id=agent_id, profile=profile, registered_at=now, last_seen=now)
                agent.profile = profile
                agent.tags = list(tags)
                agent.capabilities = dict(capabilities)
                agent.hostname = hostname
                agent.version = version
                agent.registered_at = now
                agent.last_seen = now
                agent.busy = False
                s.add(agent)
                return agent, lost
        finally:  # after the commit: a lease try in between could remember the old row
            self.leases.forget_agent(agent_id)
            self.roster_changes += 1

    def get_agent(self, agent_id: str) -> Optional[Agent]:
        with self.db.connect() as conn:
            row = conn.execute(_GET_AGENT, {"agent_id": agent_id}).first()
        return Agent(**row._mapping) if row is not None else None

    def list_agents(self) -> List[Agent]:
        with self.db.read() as s:
            return list(s.exec(select(Agent).order_by(Agent.id)).all())

    def heartbeat(self, agent_id: str, *, busy: bool, now: float, lease_seconds: float) -> bool:
        """Mark the agent seen and renew its leases. False when the agent is unknown."""
        return agent_id in self.record_contact({agent_id: busy}, (), now=now, lease_seconds=lease_seconds)

    def record_contact(self, beats: Mapping[str, bool], touched: Iterable[str], *, now: float,
                       lease_seconds: float) -> Set[str]:
        """Heartbeats of many agents in one transaction (agent id -> busy): each known agent is
        marked seen with its busy flag and its leases are renewed. ``touched`` agents (waiting in
        a long-poll) are only marked seen. Returns the known agents among ``beats``."""
        ids = sorted(set(beats) | set(touched))
        if not ids:
            return set()
        if self._contact is not None:
            beating = sorted(beats)
            with self.db.write_alone() as conn:
                known = {row.id for row in conn.execute(self._contact, {
                    "all_ids": ids, "ids": beating, "busy_ids": [a for a in beating if beats[a]],
                    "seen_ids": sorted(set(touched) - set(beats)), "now": now, "expires": now + lease_seconds})}
            return {a for a in beats if a in known}
        with self.db.write_connection() as conn:  # Core statements only: no session to set up
            known = {row.id for row in conn.execute(_KNOWN_AGENTS, {"ids": ids})}
            beating = sorted(a for a in beats if a in known)
            if beating:
                self.leases.renew_leases_in(conn, beating, until=now + lease_seconds)
                conn.execute(_BEAT, {"ids": beating, "now": now, "busy_ids": [a for a in beating if beats[a]]})
            only_seen = sorted(a for a in set(touched) - set(beats) if a in known)
            if only_seen:
                conn.execute(_SEEN, {"ids": only_seen, "now": now})
        return {a for a in beats if a in known}

    def set_draining(self, agent_id: str, draining: bool) -> Agent:
        with self.db.write() as s:
            agent = s.get(Agent, agent_id)
            if agent is None:
                raise NotFound(f"agent {agent_id!r} has never registered with this controller")
            agent.draining = draining
            s.add(agent)
            if not draining:  # back in service: it may take queued work now
                self.db.record_change(s, Change("", "", agent.profile, queued=True))
        self.roster_changes += 1
        return agent

    def remove_agent(self, agent_id: str, *, now: float, why: str) -> List[Tuple[Job, JobState]]:
        """Forget an agent (revoked): its leases are lost (the jobs queued again or failed) and it
        leaves the device list. Its finished jobs keep its id."""
        with self.db.write() as s, s.no_autoflush:
            lost = self.leases.release_leases_in(s, agent_id, now, why)
            agent = s.get(Agent, agent_id)
            if agent is not None:
                s.delete(agent)
        self.leases.forget_agent(agent_id)
        self.roster_changes += 1
        return lost

    def placement_candidates(self, profile: str, limit: int) -> Tuple[List[Tuple[Agent, str]], int, int]:
        """Up to ``limit`` agents to explain a queued job of ``profile`` with, those of the
        profile first, each with the id of the job it holds a lease for (or ""); the number of
        agents in all and of that profile. Reads only the rows listed, however many agents there
        are (the index on profile and id; other profiles' agents only when this one has too
        few). The agents are read-only rows with the Agent attributes (building model objects
        would cost more than the query)."""
        with self.db.connect() as conn:
            rows = conn.execute(_AGENTS_OF_PROFILE, {"profile": profile, "limit": limit}).all()
            if len(rows) < limit:
                rows += conn.execute(_AGENTS_OF_OTHER_PROFILES, {"profile": profile, "limit": limit - len(rows)}).all()
        if not rows:  # no agent at all
            return [], 0, 0
        return [(row, row.current or "") for row in rows], int(rows[0].agents_total), int(rows[0].agents_of_profile or 0)

