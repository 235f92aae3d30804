"""`hilfarm admin`: project tokens and agent identities.

    hilfarm admin tokens create --project vision --role submitter --name ci
    hilfarm admin tokens list | revoke ID...
    hilfarm admin agents enroll --profile raspberry-pi-5 [--tag lab-2] [--uses N] [--expires 24h]
    hilfarm admin agents list | revoke AGENT...
    hilfarm admin whoami
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Dict, List, Optional

import click

from hilfarm.cli.common import farm_client
from hilfarm.v1 import farm_pb2

ROLES = {"viewer": farm_pb2.ROLE_VIEWER, "submitter": farm_pb2.ROLE_SUBMITTER, "admin": farm_pb2.ROLE_ADMIN}
_ROLE_NAMES = {v: k for k, v in ROLES.items()}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90s', '15m', '12h', '30d' or seconds -> seconds."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", text or "")
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration (examples: 3600, 15m, 12h, 30d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _message_json(msg: Any) -> Dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _table(rows: List[List[str]], header: List[str]) -> None:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


@click.group()
def admin() -> None:
    """Project tokens and agent identities (needs an admin token)."""


@admin.command("whoami")
@click.pass_context
def admin_whoami(ctx):
    """Who the controller takes this credential for."""
    with farm_client(ctx) as client:
        who = client.admin.WhoAmI(farm_pb2.WhoAmIRequest(), metadata=client.metadata)
    if who.kind == "agent":
        click.echo(f"agent {who.agent_id}")
    else:
        role = _ROLE_NAMES.get(who.role, "?")
        click.echo(f"{role} of project {who.project} (token {who.token_id})"
                   + ("; the controller runs without tokens" if who.open else ""))


@admin.group("tokens")
def tokens() -> None:
    """Tokens of a project: each has a role (viewer, submitter, admin)."""


@tokens.command("create")
@click.option("--project", default="", help="Project of the token [the caller's].")
@click.option("--role", type=click.Choice(list(ROLES)), required=True, help="What the token may do.")
@click.option("--name", default="", help="Who or what holds it (shown in listings).")
@click.option("--expires", default=None, metavar="DURATION", help="Expire after e.g. 90d [never].")
@click.option("--json", "as_json", is_flag=True, help="Print the token as JSON (with the secret).")
@click.pass_context
def tokens_create(ctx, project, role, name, expires, as_json):
    """Make a token; its secret is printed once and stored only as a hash."""
    request = farm_pb2.CreateTokenRequest(project=project, role=ROLES[role], name=name,
                                          expires_in_seconds=parse_duration(expires) if expires else 0)
    with farm_client(ctx) as client:
        made = client.admin.CreateToken(request, metadata=client.metadata)
    if as_json:
        click.echo(json.dumps({"token": _message_json(made.token), "secret": made.secret}, indent=2))
        return
    t = made.token
    click.echo(f"token {t.id}: {_ROLE_NAMES[t.role]} of project {t.project}"
               + (f", expires {_when(t.expires_at)}" if t.expires_at else ""), err=True)
    click.echo("the secret is shown only this once; give it as HILFARM_TOKEN:", err=True)
    click.echo(made.secret)


@tokens.command("list")
@click.option("--project", default="", help="Project [the caller's].")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tokens_list(ctx, project, include_revoked, as_json):
    with farm_client(ctx) as client:
        found = client.admin.ListTokens(farm_pb2.ListTokensRequest(project=project, include_revoked=include_revoked),
                                        metadata=client.metadata).tokens
    if as_json:
        click.echo(json.dumps({"tokens": [_message_json(t) for t in found]}, indent=2))
        return
    if not found:
        click.echo("no tokens")
        return
    _table([[t.id, t.project, _ROLE_NAMES.get(t.role, "?"), t.name or "-", _when(t.created_at),
             _when(t.expires_at) if t.expires_at else "never", "revoked" if t.revoked_at else "active"]
            for t in found], ["ID", "PROJECT", "ROLE", "NAME", "CREATED", "EXPIRES", "STATE"])


@tokens.command("revoke")
@click.argument("token_ids", nargs=-1, required=True)
@click.pass_context
def tokens_revoke(ctx, token_ids):
    """Revoke tokens by id: they stop working at once."""
    with farm_client(ctx) as client:
        for token_id in token_ids:
            t = client.admin.RevokeToken(farm_pb2.RevokeTokenRequest(id=token_id), metadata=client.metadata)
            click.echo(f"token {t.id} of project {t.project} revoked")


@admin.group("agents")
def agents() -> None:
    """Agent identities: enrollment tokens, enrolled agents, revocation."""


def profile_tags(profile: str) -> Optional[List[str]]:
    """The tags a shipped (or local YAML) profile gives its agents, or None when it cannot be read here."""
    try:
        from hilfarm.agent.profiles import ProfileError, load_profile

        return list(load_profile(profile).tags)
    except (ImportError, ProfileError):
        return None


@agents.command("enroll")
@click.option("--profile", required=True, help="The device profile the agent registers as.")
@click.option("--tag", "tags", multiple=True, help="A tag the agent may claim (repeatable; the profile's own are added).")
@click.option("--agent-id", default="", help="Bind the token to this agent id (needed to re-admit a known or revoked one).")
@click.option("--uses", type=click.IntRange(min=1), default=1, show_default=True, help="Agents it may enroll.")
@click.option("--unlimited", is_flag=True, help="Any number of agents until it expires.")
@click.option("--expires", default="24h", show_default=True, metavar="DURATION", help="Lifetime of the token.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def agents_enroll(ctx, profile, tags, agent_id, uses, unlimited, expires, as_json):
    """Make an enrollment token for a new device: give it to `agent run --enroll-token`
    (or HILFARM_ENROLL_TOKEN), which exchanges it once for the agent's own credential."""
    granted = list(dict.fromkeys(list(profile_tags(profile) or []) + list(tags)))
    request = farm_pb2.CreateEnrollmentTokenRequest(device_profile=profile, tags=granted, agent_id=agent_id,
                                                    uses=-1 if unlimited else uses,
                                                    expires_in_seconds=parse_duration(expires))
    with farm_client(ctx) as client:
        made = client.admin.CreateEnrollmentToken(request, metadata=client.metadata)
    if as_json:
        click.echo(json.dumps({"enrollment_token": _message_json(made.token), "secret": made.secret}, indent=2))
        return
    t = made.token
    uses_text = "unlimited uses" if t.uses_left < 0 else f"{t.uses_left} use{'s' if t.uses_left != 1 else ''}"
    click.echo(f"enrollment token {t.id}: profile {t.device_profile}, tags {', '.join(t.tags) or 'none'}"
               + (f", agent {t.agent_id}" if t.agent_id else "") + f", {uses_text}, expires {_when(t.expires_at)}",
               err=True)
    click.echo("give it to the agent once (hilfarm agent run --enroll-token, or HILFARM_ENROLL_TOKEN):", err=True)
    click.echo(made.secret)


@agents.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked agents.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def agents_list(ctx, include_revoked, as_json):
    """Enrolled agents and how they were enrolled."""
    with farm_client(ctx) as client:
        found = client.admin.ListAgentIdentities(farm_pb2.ListAgentIdentitiesRequest(include_revoked=include_revoked),
                                                 metadata=client.metadata).agents
    if as_json:
        click.echo(json.dumps({"agents": [_message_json(a) for a in found]}, indent=2))
        return
    if not found:
        click.echo("no enrolled agents")
        return
    _table([[a.agent_id, a.device_profile, ",".join(a.tags) or "-", _when(a.enrolled_at), a.enrolled_by,
             "revoked" if a.revoked_at else "active"] for a in found],
           ["AGENT", "PROFILE", "TAGS", "ENROLLED", "BY", "STATE"])


@agents.command("revoke")
@click.argument("agent_ids", nargs=-1, required=True)
@click.pass_context
def agents_revoke(ctx, agent_ids):
    """Revoke agents: their credential stops working at once, a job they hold is queued again."""
    with farm_client(ctx) as client:
        for agent_id in agent_ids:
            a = client.admin.RevokeAgent(farm_pb2.RevokeAgentRequest(agent_id=agent_id), metadata=client.metadata)
            click.echo(f"agent {a.agent_id} revoked")
