"""Who is calling, and what they may do.

Every call is authenticated from its ``authorization: Bearer <token>`` metadata and authorised
against ``POLICY`` (one entry per RPC; a method missing there is refused) before a servicer runs;
the servicer then reads the caller with :func:`caller` to scope what it does. Nothing here
depends on how the gRPC server runs (threads or asyncio): server.py's interceptor calls
:meth:`Authenticator.authenticate` and runs the servicer inside :func:`acting_as`.

Callers:

- **users** hold a token of a *project* with a *role* (viewer < submitter < admin). What they
  submit belongs to their project, and they see only their project's runs, jobs, artifacts,
  baselines and suites. The controller's own ``--token`` (the *operator* token) is an admin of
  project ``default`` and may also manage the tokens of every project: a one-person lab needs
  nothing else. A controller started without ``--token`` is *open*: every call without a token
  is the operator (it then listens on loopback only, see transport.py).
- **agents** hold their own credential, got once from :rpc:`Enroll`; they act only as
  themselves, on their own leases. An agent credential never works on user RPCs, nor a user
  token on agent RPCs (the one exception: an admin token may enroll an agent).
- **enrollment tokens** do one thing: :rpc:`Enroll`, for their profile and tags.

Tokens look like ``hfu_<id>_<secret>`` (user), ``hfa_<id>_<secret>`` (agent) and
``hfe_<id>_<secret>`` (enrollment). The id is public (listed, revoked by); the controller stores
only the sha256 of the whole token. The secret is 256 random bits, so a fast hash loses nothing.
"""
from __future__ import annotations

import contextlib
import contextvars
import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from hilfarm.v1 import farm_pb2 as pb

from .errors import PermissionDenied, Unauthenticated
from .models import DEFAULT_PROJECT, AgentCredential, EnrollmentToken, UserToken

USER_PREFIX = "hfu"
AGENT_PREFIX = "hfa"
ENROLLMENT_PREFIX = "hfe"
_TOKEN = re.compile(r"^(hfu|hfa|hfe)_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


class Role(enum.IntEnum):
    """What a user token may do in its project; each includes the ones below it."""

    VIEWER = 1
    SUBMITTER = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> "Role":
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"role {text!r} is not one of viewer, submitter, admin") from None


class Kind(str, enum.Enum):
    USER = "user"
    AGENT = "agent"
    ENROLLER = "enroller"  # holds an enrollment token
    ANONYMOUS = "anonymous"  # health checks only


@dataclass(frozen=True)
class Principal:
    """The caller of one RPC."""

    kind: Kind
    project: str = DEFAULT_PROJECT
    role: Optional[Role] = None
    token_id: str = ""
    agent_id: str = ""
    device_profile: str = ""  # an agent's, or an enrollment token's
    tags: Tuple[str, ...] = ()
    operator: bool = False  # the controller's own --token, or an open controller's caller
    open: bool = False  # the controller runs without tokens
    enrollment: Optional[EnrollmentToken] = None

    @property
    def label(self) -> str:
        """Who, for logs and ``created_by`` / ``enrolled_by`` columns."""
        if self.kind == Kind.AGENT:
            return f"agent {self.agent_id}"
        if self.kind == Kind.ENROLLER:
            return f"enrollment token {self.token_id}"
        if self.open:
            return "caller of an open controller"
        if self.operator:
            return "operator token"
        return f"token {self.token_id}"

    def is_admin(self) -> bool:
        return self.kind == Kind.USER and self.role is not None and self.role >= Role.ADMIN


# ---------------------------------------------------------------- tokens

def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> Tuple[str, str, str]:
    """(id, token, hash of the token) for a new credential."""
    token_id = secrets.token_hex(8)
    token = f"{prefix}_{token_id}_{secrets.token_urlsafe(32)}"
    return token_id, token, token_hash(token)


def parse_token(token: str) -> Optional[Tuple[str, str]]:
    """(prefix, id) of a token in this controller's format, else None."""
    match = _TOKEN.match(token)
    return (match.group(1), match.group(2)) if match else None


def hash_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(token).encode(), stored_hash.encode())


def check_project_name(project: str) -> str:
    if not _PROJECT.match(project):
        raise ValueError(f"project name {project!r} must be 1-100 of a-z 0-9 . _ - (starting with a letter or digit)")
    return project


def bearer_token(metadata: Iterable[Tuple[str, object]]) -> Optional[str]:
    """The token of the ``authorization: Bearer <token>`` metadata; '' when the value is not of
    that form; None when there is no such metadata."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


# ---------------------------------------------------------------- policy

@dataclass(frozen=True)
class Requirement:
    kind: str  # "user", "agent", "enroll", "any" (a user or an agent), "open" (no credential)
    role: Optional[Role] = None


def _user(role: Role) -> Requirement:
    return Requirement("user", role)


_AGENT = Requirement("agent")
_FARM = pb.DESCRIPTOR.services_by_name["FarmService"].full_name
_AGENTS = pb.DESCRIPTOR.services_by_name["AgentService"].full_name
_ADMIN = pb.DESCRIPTOR.services_by_name["AdminService"].full_name

# Every RPC the controller serves and who may call it. A method that is not listed is refused.
POLICY: Dict[str, Requirement] = {
    **{f"/{_FARM}/{m}": _user(Role.VIEWER) for m in (
        "StatArtifact", "DownloadArtifact", "GetRun", "GetJob", "ListJobs", "WatchJob", "WatchRun", "ListDevices", "CompareJobs",
        "ListBaselines", "GetSuiteRun", "ListSuiteRuns", "GetHistory")},
    **{f"/{_FARM}/{m}": _user(Role.SUBMITTER) for m in (
        "UploadArtifact", "Submit", "CancelJob", "AcceptBaseline", "StartSuiteRun")},
    f"/{_FARM}/DrainDevice": _user(Role.ADMIN),
    **{f"/{_AGENTS}/{m}": _AGENT for m in (
        "Register", "Heartbeat", "LeaseJob", "DownloadArtifact", "ReportProgress", "ReportResult")},
    f"/{_AGENTS}/Enroll": Requirement("enroll"),
    **{f"/{_ADMIN}/{m}": _user(Role.ADMIN) for m in (
        "CreateToken", "ListTokens", "RevokeToken", "CreateEnrollmentToken", "ListAgentIdentities",
        "RevokeAgent")},
    f"/{_ADMIN}/WhoAmI": Requirement("any"),
}
# Load balancers and Kubernetes probe health without credentials; health reveals nothing.
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
# Reflection (grpcurl) describes the API to anyone holding a credential.
ANY_PREFIXES = ("/grpc.reflection.",)


def requirement_for(method: str) -> Optional[Requirement]:
    if method in POLICY:
        return POLICY[method]
    if method.startswith(OPEN_PREFIXES):
        return Requirement("open")
    if method.startswith(ANY_PREFIXES):
        return Requirement("any")
    return None


def _rpc_name(method: str) -> str:
    return method.rsplit("/", 1)[-1] or method


def authorize(principal: Principal, requirement: Optional[Requirement], method: str) -> None:
    """Raise PermissionDenied when ``principal`` may not call ``method``."""
    if requirement is None:
        raise PermissionDenied(f"{method} is not a call this controller allows")
    if requirement.kind == "open":
        return
    if requirement.kind == "user":
        if principal.kind != Kind.USER:
            raise PermissionDenied(f"{_rpc_name(method)} is a user call; {principal.label} is not a user token "
                                   "(agents and enrollment tokens only use the agent API)")
        assert requirement.role is not None and principal.role is not None
        if principal.role < requirement.role:
            raise PermissionDenied(
                f"{_rpc_name(method)} needs the {requirement.role.label} role; {principal.label} is a "
                f"{principal.role.label} of project {principal.project}")
        return
    if requirement.kind == "agent":
        if principal.kind != Kind.AGENT:
            raise PermissionDenied(
                f"{_rpc_name(method)} is an agent call and needs an agent credential; {principal.label} is not one "
                "(an agent gets its credential once, with Enroll)")
        return
    if requirement.kind == "enroll":
        if principal.kind == Kind.ENROLLER or principal.is_admin():
            return
        raise PermissionDenied(f"Enroll needs an enrollment token or an admin token; {principal.label} is neither")
    if requirement.kind == "any":
        if principal.kind in (Kind.USER, Kind.AGENT):
            return
        raise PermissionDenied(f"{_rpc_name(method)} needs a user token or an agent credential")
    raise PermissionDenied(f"{method}: unknown requirement {requirement.kind!r}")


# ---------------------------------------------------------------- authentication

class CredentialLookup:
    """What the authenticator reads (controller/credentials.py implements it)."""

    # Bumped after each revocation this process commits, and each one another replica (or
    # process of this controller) is heard to commit; the authenticator then forgets every
    # caller it remembers (see Authenticator.remembered).
    revocations: int = 0

    def user_token(self, token_id: str) -> Optional[UserToken]:
        raise NotImplementedError

    def agent_credential(self, credential_id: str) -> Optional[AgentCredential]:
        raise NotImplementedError

    def agent_credentials(self, credential_ids: Sequence[str]) -> Dict[str, AgentCredential]:
        """Many agent credentials by id, those that exist (one read where the lookup can)."""
        found = {cid: self.agent_credential(cid) for cid in credential_ids}
        return {cid: cred for cid, cred in found.items() if cred is not None}

    def enrollment_token(self, token_id: str) -> Optional[EnrollmentToken]:
        raise NotImplementedError


# How long a user token or agent credential read from the database is trusted without reading it
# again. Every call of a thousand agents would otherwise cost a database read and a hop to a
# database thread; longer than an agent's heartbeat (5 s) and long-poll (10 s), so most hit. A
# revocation made by this controller takes effect at once (it forgets every remembered caller),
# and so does one another replica (or process of this controller) commits on PostgreSQL, whose
# notification is heard (notifications.py); one whose notification was missed, within this time.
REMEMBER_SECONDS = 30.0
# A remembered caller that calls within this long of being forgotten is read again in the
# background (Authenticator.refreshes_wanted) while its call goes on, so a caller that calls
# every few seconds waits for a credential read only at its first call. Otherwise every thirty
# seconds one call of each agent waited for its read behind the database pool's other work:
# about one call in nine (a heartbeat every 5 s, a long-poll every 10 s), and at 1,000 agents on
# SQLite (benchmarks/scale.py) heartbeat p99 was 118-670 ms against 51-70 ms with reads ahead.
# Trust still ends at REMEMBER_SECONDS after the last read that admitted the caller.
REFRESH_AHEAD_SECONDS = REMEMBER_SECONDS / 3
_REMEMBERED_MAX = 20_000  # past this many, expired entries are dropped


class Authenticator:
    """Turns a call's metadata (and client certificate) into a Principal, or refuses it."""

    def __init__(self, lookup: CredentialLookup, *, operator_token: Optional[str], clock) -> None:  # type: ignore[no-untyped-def]
        self.lookup = lookup
        self._operator = operator_token.encode() if operator_token else None
        self.clock = clock
        # token -> (caller, trusted until, read again in the background from this time on)
        self._remembered: Dict[str, Tuple[Principal, float, float]] = {}
        self._revocations_seen = lookup.revocations
        self._refresh_wanted: List[str] = []  # tokens to read again, not yet handed out

    @property
    def open(self) -> bool:
        """No operator token: callers without a token act as the operator (loopback only)."""
        return self._operator is None

    def operator(self) -> Principal:
        return Principal(Kind.USER, DEFAULT_PROJECT, Role.ADMIN, token_id="operator", operator=True,
                         open=self.open)

    def authenticate(self, method: str, metadata: Iterable[Tuple[str, object]],
                     peer_names: Sequence[str] = ()) -> Principal:
        """The caller of ``method``, authorised by POLICY. ``peer_names``: the names in the
        client's TLS certificate when the controller asks for one (mutual TLS): an agent's must
        name it. Raises Unauthenticated or PermissionDenied with a message for a person.
        May read the database."""
        principal = self._admit(method, metadata, peer_names, self.identify)
        assert principal is not None
        return principal

    def remembered(self, method: str, metadata: Iterable[Tuple[str, object]],
                   peer_names: Sequence[str] = ()) -> Optional[Principal]:
        """:meth:`authenticate` without the database: the same answer (or the same error) when
        the caller needs no lookup or was looked up less than REMEMBER_SECONDS ago; None when
        its credential must be read (then call :meth:`authenticate`, in a database thread)."""
        return self._admit(method, metadata, peer_names, self._identify_from_memory)

    def _admit(self, method: str, metadata: Iterable[Tuple[str, object]], peer_names: Sequence[str],
               identify) -> Optional[Principal]:  # type: ignore[no-untyped-def]
        requirement = requirement_for(method)
        if requirement is not None and requirement.kind == "open":
            return Principal(Kind.ANONYMOUS)
        token = bearer_token(metadata)
        if not token and requirement is not None and requirement.kind == "agent":
            raise Unauthenticated(f"{_rpc_name(method)} needs the agent's own credential, sent as "
                                  "'authorization: Bearer <credential>' (an agent gets it once, with Enroll)")
        principal = identify(token)
        if principal is None:
            return None
        authorize(principal, requirement, method)
        if principal.kind == Kind.AGENT and peer_names and principal.agent_id not in peer_names:
            raise PermissionDenied(
                f"the client certificate names {', '.join(peer_names)}, not agent {principal.agent_id}: "
                "an agent must present its own certificate")
        return principal

    def _identify_from_memory(self, token: Optional[str]) -> Optional[Principal]:
        if not token:
            return self.identify(token)  # no token: nothing to read
        if self.lookup.revocations != self._revocations_seen:
            self._revocations_seen = self.lookup.revocations
            self._remembered.clear()
        entry = self._remembered.get(token)
        if entry is None:
            # Not a token of this format (the operator's, or none of ours): nothing to read.
            # Only tokens of the format are remembered, so a remembered one is not parsed again.
            return self.identify(token) if parse_token(token) is None else None
        now = self.clock()
        if entry[1] <= now:
            return None
        principal, until, refresh_from = entry
        if now >= refresh_from:
            # Handed out once: the read replaces this entry, or forgets it. One that fails (the
            # database unreachable) or never runs leaves the caller to be forgotten when its time
            # is up, as without reading ahead, and the calls meanwhile do not start a read each.
            self._remembered[token] = (principal, until, float("inf"))
            self._refresh_wanted.append(token)
        return principal

    def refreshes_wanted(self) -> List[str]:
        """Tokens of remembered callers to read again now, each handed out once: pass them to
        :meth:`refresh`, in a database thread, without making a call wait for it."""
        wanted, self._refresh_wanted = self._refresh_wanted, []
        return wanted

    def refresh(self, *tokens: str) -> None:
        """Read remembered callers' credentials again: each stays remembered for another
        REMEMBER_SECONDS, or is forgotten at once when it no longer admits the caller (revoked
        or expired meanwhile, on another replica say). The agents' credentials are read in one
        lookup: a thousand agents come due some fifty a second, and one read each was as many
        database round trips as the jobs themselves made. Runs in a database thread."""
        agents: Dict[str, List[str]] = {}  # credential id -> its tokens
        others: List[str] = []
        for token in tokens:
            parsed = parse_token(token)
            if parsed is not None and parsed[0] == AGENT_PREFIX:
                agents.setdefault(parsed[1], []).append(token)
            else:
                others.append(token)
        if agents:
            now, revocations_before = self.clock(), self.lookup.revocations
            found = self.lookup.agent_credentials(list(agents))
            for credential_id, agent_tokens in agents.items():
                for token in agent_tokens:
                    try:
                        self._agent_principal(token, found.get(credential_id), now, revocations_before)
                    except Unauthenticated:
                        self._remembered.pop(token, None)
        for token in others:
            try:
                self.identify(token)
            except Unauthenticated:
                self._remembered.pop(token, None)

    def _remember(self, token: str, principal: Principal, until: float, revocations_before: int, *,
                  renewable: bool = True) -> Principal:
        """``renewable``: a later read could trust the caller for longer (not so for a token that
        expires before ``until``'s REMEMBER_SECONDS pass), so it is read again ahead."""
        if len(self._remembered) >= _REMEMBERED_MAX:
            now = self.clock()
            self._remembered = {t: e for t, e in self._remembered.items() if e[1] > now}
        if self.lookup.revocations == revocations_before:  # no revocation since the row was read
            refresh_from = until - REFRESH_AHEAD_SECONDS if renewable else float("inf")
            self._remembered[token] = (principal, until, refresh_from)
        return principal

    def identify(self, token: Optional[str]) -> Principal:
        now, revocations_before = self.clock(), self.lookup.revocations
        if not token:
            if self.open:
                return self.operator()
            if token is None:
                raise Unauthenticated(
                    "this controller requires a token: send metadata 'authorization: Bearer <token>' "
                    "(the hilfarm CLI and agent read it from HILFARM_TOKEN)")
            raise Unauthenticated("the 'authorization' metadata must read 'Bearer <token>'")
        parsed = parse_token(token)
        if parsed is None:
            if self._operator is not None and hmac.compare_digest(token.encode(), self._operator):
                return self.operator()
            if self.open:
                # A token sent to a controller that checks none (an old HILFARM_TOKEN) changes nothing.
                return self.operator()
            raise Unauthenticated(
                "the token in the 'authorization' metadata is not a token of this controller "
                "(check HILFARM_TOKEN; the value must read 'Bearer <token>')")
        prefix, token_id = parsed
        if prefix == AGENT_PREFIX:
            return self._agent_principal(token, self.lookup.agent_credential(token_id), now, revocations_before)
        if prefix == ENROLLMENT_PREFIX:
            enrollment = self.lookup.enrollment_token(token_id)
            if enrollment is None or not hash_matches(token, enrollment.secret_hash):
                raise Unauthenticated("this enrollment token is not known to the controller")
            problem = enrollment_token_problem(enrollment, now)
            if problem:
                raise Unauthenticated(problem)
            return Principal(Kind.ENROLLER, token_id=enrollment.id, device_profile=enrollment.device_profile,
                             tags=tuple(enrollment.tags), enrollment=enrollment, open=self.open)
        row = self.lookup.user_token(token_id)
        if row is None or not hash_matches(token, row.secret_hash):
            if self.open:
                return self.operator()
            raise Unauthenticated(f"token {token_id} is not known to this controller")
        if row.revoked_at is not None:
            raise Unauthenticated(f"token {token_id} was revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthenticated(f"token {token_id} expired")
        renewable = row.expires_at is None or row.expires_at > now + REMEMBER_SECONDS
        until = now + REMEMBER_SECONDS if row.expires_at is None else min(now + REMEMBER_SECONDS, row.expires_at)
        return self._remember(token, Principal(Kind.USER, row.project, Role.parse(row.role), token_id=row.id,
                                               open=self.open), until, revocations_before, renewable=renewable)

    def _agent_principal(self, token: str, cred: Optional[AgentCredential], now: float,
                         revocations_before: int) -> Principal:
        """The agent that ``token`` admits, given its credential row as read (None: none)."""
        if cred is None or not hash_matches(token, cred.secret_hash):
            raise Unauthenticated(
                "this agent credential is not known to the controller; delete the agent's "
                "credential file and enroll it again")
        if cred.revoked_at is not None:
            raise Unauthenticated(f"the credential of agent {cred.agent_id} was revoked by an admin")
        return self._remember(token, Principal(Kind.AGENT, token_id=cred.id, agent_id=cred.agent_id,
                                               device_profile=cred.device_profile, tags=tuple(cred.tags),
                                               open=self.open), now + REMEMBER_SECONDS, revocations_before)


def enrollment_token_problem(token: EnrollmentToken, now: float) -> str:
    if token.revoked_at is not None:
        return f"enrollment token {token.id} was revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return f"enrollment token {token.id} expired"
    if token.uses_left is not None and token.uses_left <= 0:
        return f"enrollment token {token.id} was already used"
    return ""


# ---------------------------------------------------------------- the caller of this call

_CALLER: contextvars.ContextVar[Optional[Principal]] = contextvars.ContextVar("hilfarm_caller", default=None)


@contextlib.contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Run a servicer as ``principal`` (the interceptor's glue)."""
    token = _CALLER.set(principal)
    try:
        yield
    finally:
        try:
            _CALLER.reset(token)
        except ValueError:  # a response stream closed from another context
            _CALLER.set(None)


def caller() -> Principal:
    """The principal of the call being served. A servicer reached without the authorising
    interceptor is a bug, never an anonymous admin."""
    principal = _CALLER.get()
    if principal is None:
        raise RuntimeError("no authenticated caller: the authorization interceptor did not run")
    return principal


# ---------------------------------------------------------------- per-call rules servicers apply

def agent_id_for(requested: str) -> str:
    """The calling agent's id; a request naming another agent is refused (an empty one means
    the caller)."""
    principal = caller()
    if principal.kind != Kind.AGENT:
        raise PermissionDenied(f"{principal.label} is not an agent")
    if requested and requested != principal.agent_id:
        raise PermissionDenied(
            f"this credential belongs to agent {principal.agent_id}; it cannot act as agent {requested}")
    return principal.agent_id


def check_registration(principal: Principal, device_profile: str, tags: Sequence[str]) -> None:
    """An agent registers as the profile it was enrolled for, with tags it was granted."""
    if device_profile != principal.device_profile:
        raise PermissionDenied(
            f"agent {principal.agent_id} was enrolled as profile {principal.device_profile}, not "
            f"{device_profile}; enroll it again for another profile")
    extra = [t for t in tags if t not in principal.tags]
    if extra:
        raise PermissionDenied(
            f"agent {principal.agent_id} was not granted tag{'s' if len(extra) > 1 else ''} "
            f"{', '.join(extra)} at enrollment (granted: {', '.join(principal.tags) or 'none'})")


def check_enrollment(principal: Principal, *, agent_id: str, device_profile: str, tags: Sequence[str],
                     active: Optional[AgentCredential], revoked: bool) -> None:
    """May ``principal`` enroll ``agent_id`` as ``device_profile`` with ``tags``? ``active``: the
    agent's current credential, if any; ``revoked``: it once had one that was revoked.

    An admin (or an open controller's caller) may enroll anything. An enrollment token enrolls
    its profile with its tags, and takes a known or revoked agent id only when it names it.
    """
    if principal.kind == Kind.USER and principal.is_admin():
        return
    if principal.kind != Kind.ENROLLER or principal.enrollment is None:
        raise PermissionDenied("Enroll needs an enrollment token or an admin token")
    token = principal.enrollment
    if token.agent_id and token.agent_id != agent_id:
        raise PermissionDenied(f"enrollment token {token.id} is for agent {token.agent_id}, not {agent_id}")
    if device_profile != token.device_profile:
        raise PermissionDenied(
            f"enrollment token {token.id} enrolls profile {token.device_profile}, not {device_profile}")
    extra = [t for t in tags if t not in token.tags]
    if extra:
        raise PermissionDenied(
            f"enrollment token {token.id} does not grant tag{'s' if len(extra) > 1 else ''} {', '.join(extra)} "
            f"(it grants: {', '.join(token.tags) or 'none'})")
    if token.agent_id == agent_id:
        return
    if active is not None:
        raise PermissionDenied(
            f"agent {agent_id} is already enrolled; an admin can revoke it, or make an enrollment "
            f"token for --agent-id {agent_id} to replace its credential")
    if revoked:
        raise PermissionDenied(
            f"agent {agent_id} was revoked; only an enrollment token made for --agent-id {agent_id} readmits it")


def role_to_pb(role: Role) -> int:
    return {Role.VIEWER: pb.ROLE_VIEWER, Role.SUBMITTER: pb.ROLE_SUBMITTER, Role.ADMIN: pb.ROLE_ADMIN}[role]


def role_from_pb(value: int) -> Role:
    roles = {pb.ROLE_VIEWER: Role.VIEWER, pb.ROLE_SUBMITTER: Role.SUBMITTER, pb.ROLE_ADMIN: Role.ADMIN}
    if value not in roles:
        raise ValueError("a token needs a role: viewer, submitter or admin")
    return roles[value]


__all__ = [
    "Authenticator", "CredentialLookup", "Kind", "POLICY", "Principal", "Requirement", "Role",
    "acting_as", "agent_id_for", "authorize", "bearer_token", "caller", "check_enrollment",
    "check_project_name", "check_registration", "new_token", "parse_token", "requirement_for",
    "token_hash",
]
