"""User tokens, enrollment tokens and agent credentials in the database.

The rules of who may do what are in auth.py; this module stores and finds the rows, and makes
the changes that must be atomic: an enrollment token's uses are counted under a row lock, so a
single-use token enrolls one agent even when two devices present it at once, and an agent has
at most one credential that is not revoked.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlmodel import select

from . import auth
from .errors import InvalidArgument, NotFound, PermissionDenied
from .agent_repository import AgentRepository
from .database import Database
from .models import AgentCredential, EnrollmentToken, UserToken, detached_from_row

log = logging.getLogger("hilfarm.controller")

DEFAULT_ENROLLMENT_SECONDS = 24 * 3600.0

_USER_TOKENS, _AGENT_CREDENTIALS = UserToken.__table__, AgentCredential.__table__
_USER_TOKEN = sa.select(_USER_TOKENS).where(_USER_TOKENS.c.id == sa.bindparam("token_id"))
_AGENT_CREDENTIAL = sa.select(_AGENT_CREDENTIALS).where(_AGENT_CREDENTIALS.c.id == sa.bindparam("credential_id"))
_AGENT_CREDENTIALS_IN = sa.select(_AGENT_CREDENTIALS).where(
    _AGENT_CREDENTIALS.c.id.in_(sa.bindparam("credential_ids", expanding=True)))
# Ids per read of many credentials: well under every database's limit on bound parameters.
_CREDENTIALS_PER_READ = 500


class Credentials(auth.CredentialLookup):
    def __init__(self, db: Database, agents: AgentRepository, clock: Callable[[], float] = time.time) -> None:
        """``agents``: a revoked agent is removed there (its leases taken back)."""
        self.db = db
        self.agents = agents
        self.clock = clock
        self._revocations_lock = threading.Lock()  # counted by database threads and the listener
        db.feed.on_revocation(self._revoked)  # by another replica, or process of this controller

    def _revoked(self) -> None:
        """A revocation committed: the authenticator forgets every caller it remembers."""
        with self._revocations_lock:
            self.revocations += 1

    # ------------------------------------------------------------ lookups (every call)

    # One Core statement each (an ORM get costs three times as much): a thousand agents' calls
    # read a credential again every auth.REMEMBER_SECONDS.
    def user_token(self, token_id: str) -> Optional[UserToken]:
        with self.db.connect() as conn:
            row = conn.execute(_USER_TOKEN, {"token_id": token_id}).first()
        return None if row is None else detached_from_row(UserToken, row)

    def agent_credential(self, credential_id: str) -> Optional[AgentCredential]:
        with self.db.connect() as conn:
            row = conn.execute(_AGENT_CREDENTIAL, {"credential_id": credential_id}).first()
        return None if row is None else detached_from_row(AgentCredential, row)

    def agent_credentials(self, credential_ids: Sequence[str]) -> Dict[str, AgentCredential]:
        found: Dict[str, AgentCredential] = {}
        with self.db.connect() as conn:
            for start in range(0, len(credential_ids), _CREDENTIALS_PER_READ):
                chunk = list(credential_ids[start:start + _CREDENTIALS_PER_READ])
                for row in conn.execute(_AGENT_CREDENTIALS_IN, {"credential_ids": chunk}):
                    cred = detached_from_row(AgentCredential, row)
                    found[cred.id] = cred
        return found

    def enrollment_token(self, token_id: str) -> Optional[EnrollmentToken]:
        with self.db.read() as s:
            return s.get(EnrollmentToken, token_id)

    # ------------------------------------------------------------ user tokens

    def create_user_token(self, *, project: str, role: auth.Role, name: str, expires_at: Optional[float],
                          created_by: str) -> Tuple[UserToken, str]:
        try:
            auth.check_project_name(project)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        token_id, secret, digest = auth.new_token(auth.USER_PREFIX)
        row = UserToken(id=token_id, secret_hash=digest, project=project, role=role.label, name=name,
                        created_at=self.clock(), created_by=created_by, expires_at=expires_at)
        with self.db.write() as s:
            s.add(row)
        log.info("token %s created for project %s (%s) by %s", token_id, project, role.label, created_by)
        return row, secret

    def list_user_tokens(self, *, project: Optional[str], include_revoked: bool = False) -> List[UserToken]:
        q = select(UserToken)
        if project is not None:
            q = q.where(UserToken.project == project)
        if not include_revoked:
            q = q.where(UserToken.revoked_at.is_(None))  # type: ignore[union-attr]
        with self.db.read() as s:
            return list(s.exec(q.order_by(UserToken.project, UserToken.created_at, UserToken.id)).all())

    def revoke_user_token(self, token_id: str, *, project: Optional[str]) -> UserToken:
        """Revoke a token of ``project`` (None: of any project)."""
        with self.db.write() as s:
            row = s.exec(select(UserToken).where(UserToken.id == token_id).with_for_update()).first()
            if row is None or (project is not None and row.project != project):
                raise NotFound(f"token {token_id!r} does not exist in project {project}" if project
                               else f"token {token_id!r} does not exist")
            if row.revoked_at is None:
                row.revoked_at = self.clock()
                s.add(row)
                self.db.record_revocation(s)
                log.info("token %s of project %s revoked", token_id, row.project)
        self._revoked()
        return row

    # ------------------------------------------------------------ enrollment

    def create_enrollment_token(self, *, device_profile: str, tags: Sequence[str], agent_id: str,
                                uses: Optional[int], expires_at: Optional[float],
                                created_by: str) -> Tuple[EnrollmentToken, str]:
        """``uses`` None: unlimited until ``expires_at`` (which must then be set)."""
        if not device_profile.strip():
            raise InvalidArgument("an enrollment token needs the device profile its agent registers as")
        if uses is None and expires_at is None:
            raise InvalidArgument("an enrollment token must expire or be limited in uses")
        if uses is not None and uses < 1:
            raise InvalidArgument(f"an enrollment token needs at least one use, not {uses}")
        token_id, secret, digest = auth.new_token(auth.ENROLLMENT_PREFIX)
        row = EnrollmentToken(id=token_id, secret_hash=digest, device_profile=device_profile,
                              tags=list(dict.fromkeys(tags)), agent_id=agent_id or None, uses_left=uses,
                              expires_at=expires_at, created_at=self.clock(), created_by=created_by)
        with self.db.write() as s:
            s.add(row)
        log.info("enrollment token %s created for profile %s by %s", token_id, device_profile, created_by)
        return row, secret

    def enroll(self, principal: auth.Principal, *, agent_id: str, device_profile: str,
               tags: Sequence[str]) -> Tuple[AgentCredential, str]:
        """A new credential for ``agent_id``; its previous one, if any, stops working."""
        if not agent_id.strip():
            raise InvalidArgument("Enroll needs the agent id the device asks for")
        if not device_profile.strip():
            raise InvalidArgument(f"agent {agent_id} asked to enroll without a device profile")
        now = self.clock()
        cred_id, secret, digest = auth.new_token(auth.AGENT_PREFIX)
        with self.db.write() as s:
            if principal.kind == auth.Kind.ENROLLER:
                # Locked: the uses left are counted once however many devices present the token.
                token = s.exec(select(EnrollmentToken).where(EnrollmentToken.id == principal.token_id)
                               .with_for_update()).first()
                problem = "unknown" if token is None else auth.enrollment_token_problem(token, now)
                if token is None or problem:
                    raise PermissionDenied(problem or f"enrollment token {principal.token_id} is not known")
                principal = auth.Principal(principal.kind, token_id=token.id, device_profile=token.device_profile,
                                           tags=tuple(token.tags), enrollment=token)
            rows = s.exec(select(AgentCredential).where(AgentCredential.agent_id == agent_id)
                          .with_for_update()).all()
            active = [r for r in rows if r.revoked_at is None]
            auth.check_enrollment(principal, agent_id=agent_id, device_profile=device_profile, tags=tags,
                                  active=active[0] if active else None,
                                  revoked=bool(rows) and not active)
            if principal.kind == auth.Kind.ENROLLER and token.uses_left is not None:
                token.uses_left -= 1
                s.add(token)
            for old in active:
                old.revoked_at = now
                s.add(old)
            if active:
                self.db.record_revocation(s)
            cred = AgentCredential(id=cred_id, secret_hash=digest, agent_id=agent_id, device_profile=device_profile,
                                   tags=list(dict.fromkeys(tags)), enrolled_at=now, enrolled_by=principal.label)
            s.add(cred)
        if active:
            self._revoked()
        log.info("agent %s enrolled (profile %s, tags %s) by %s%s", agent_id, device_profile,
                 ", ".join(tags) or "none", principal.label, "; its previous credential is revoked" if active else "")
        return cred, secret

    # ------------------------------------------------------------ agents

    def list_agents(self, *, include_revoked: bool = False) -> List[AgentCredential]:
        """Each agent's newest credential (only agents with a working one unless ``include_revoked``)."""
        with self.db.read() as s:
            rows = s.exec(select(AgentCredential).order_by(AgentCredential.agent_id, AgentCredential.enrolled_at)).all()
        newest = {}
        for row in rows:
            newest[row.agent_id] = row
        return [r for r in newest.values() if include_revoked or r.revoked_at is None]

    def revoke_agent(self, agent_id: str) -> AgentCredential:
        """The agent's credential stops working now; its lease is taken back (the job is queued
        again) and it leaves the device list."""
        now = self.clock()
        with self.db.write() as s:
            rows = s.exec(select(AgentCredential).where(AgentCredential.agent_id == agent_id,
                                                        AgentCredential.revoked_at.is_(None))  # type: ignore[union-attr]
                          .with_for_update()).all()
            if not rows:
                raise NotFound(f"agent {agent_id!r} has no credential that is not revoked")
            for row in rows:
                row.revoked_at = now
                s.add(row)
            self.db.record_revocation(s)
            revoked = rows[-1]
        self._revoked()
        self.agents.remove_agent(agent_id, now=now, why="was revoked by an admin")
        log.warning("agent %s revoked", agent_id)
        return revoked
