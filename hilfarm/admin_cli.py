"""`hilfarm admin`: project tokens and agent identities; and the security options of the other
commands (TLS for every client, `controller serve`'s certificate and limits, `agent run`'s
enrollment).

    hilfarm admin tokens create --project vision --role submitter --name ci
    hilfarm admin tokens list | revoke ID...
    hilfarm admin agents enroll --profile raspberry-pi-5 [--tag lab-2] [--uses N] [--expires 24h]
    hilfarm admin agents list | revoke AGENT...
    hilfarm admin whoami
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional

import click

from hilfarm.transport import ClientTls, ServerTls, TransportError
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


# ---------------------------------------------------------------- options of other commands

def tls_client_options(func: Callable) -> Callable:
    """--tls-ca, --tls-client-cert, --tls-client-key (the main group: every command's client)."""
    for option in reversed([
        click.option("--tls-ca", envvar="HILFARM_TLS_CA", default=None, metavar="FILE|system",
                      help="Speak TLS and verify the controller with this CA (PEM), or 'system' for the "
                           "system trust store (env HILFARM_TLS_CA)."),
        click.option("--tls-client-cert", envvar="HILFARM_TLS_CLIENT_CERT", default=None, metavar="FILE",
                     help="Client certificate (PEM) for a controller that asks for one (mutual TLS)."),
        click.option("--tls-client-key", envvar="HILFARM_TLS_CLIENT_KEY", default=None, metavar="FILE",
                     help="Key of --tls-client-cert (PEM)."),
    ]):
        func = option(func)
    return func


def client_tls(tls_ca: Optional[str], tls_client_cert: Optional[str], tls_client_key: Optional[str]) -> Optional[ClientTls]:
    try:
        return ClientTls.resolve(tls_ca, tls_client_cert, tls_client_key)
    except TransportError as error:
        raise click.BadParameter(str(error), param_hint="--tls-client-cert / --tls-client-key") from None


def read_secret_file(path: str, option: str) -> str:
    """The one-line secret in ``path`` (a mounted Kubernetes secret, a systemd credential)."""
    try:
        value = open(path, encoding="utf-8").read().strip()
    except OSError as exc:
        raise click.BadParameter(f"{path} cannot be read: {exc.strerror or exc}", param_hint=option) from None
    if not value or "\n" in value:
        raise click.BadParameter(f"{path} must hold the value on one line", param_hint=option)
    return value


def serve_security_options(func: Callable) -> Callable:
    """`controller serve`: TLS, --insecure, the metrics token and the submission limits, handed
    to the wrapped command as Controller keyword arguments; secrets also from files (--token-file,
    --db-file, --metrics-token-file), so a deployment need not put them in the environment."""
    from hilfarm.wire_limits import DEFAULT_MAX_JOBS_PER_SUBMIT, DEFAULT_MAX_QUEUED_JOBS

    @functools.wraps(func)
    def wrapper(*args: Any, tls_cert: Optional[str], tls_key: Optional[str], tls_client_ca: Optional[str],
                insecure: bool, metrics_token: Optional[str], max_jobs_per_submit: int, max_queued_jobs: int,
                token_file: Optional[str], db_file: Optional[str], metrics_token_file: Optional[str],
                **kwargs: Any) -> Any:
        if token_file:
            click.get_current_context().obj["token"] = read_secret_file(token_file, "--token-file")
        if db_file:
            kwargs["db_url"] = read_secret_file(db_file, "--db-file")
        if metrics_token_file:
            metrics_token = read_secret_file(metrics_token_file, "--metrics-token-file")
        if (tls_cert is None) != (tls_key is None):
            raise click.BadParameter("a certificate needs its key, and a key its certificate",
                                     param_hint="--tls-cert / --tls-key")
        if tls_client_ca and not tls_cert:
            raise click.BadParameter("mutual TLS needs the controller's own certificate too",
                                     param_hint="--tls-client-ca")
        tls = ServerTls(tls_cert, tls_key, tls_client_ca) if tls_cert and tls_key else None
        return func(*args, tls=tls, insecure=insecure, metrics_token=metrics_token,
                    max_jobs_per_submit=max_jobs_per_submit, max_queued_jobs=max_queued_jobs, **kwargs)

    for option in reversed([
        click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Serve TLS with this certificate (PEM; gRPC and metrics)."),
        click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Key of --tls-cert (PEM)."),
        click.option("--tls-client-ca", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Mutual TLS: every client presents a certificate from this CA; an agent's names it."),
        click.option("--insecure", is_flag=True,
                     help="Listen off loopback without a token or TLS (and serve metrics there without a token)."),
        click.option("--metrics-token", envvar="HILFARM_METRICS_TOKEN", default=None,
                     help="Bearer token Prometheus must send for /metrics (env HILFARM_METRICS_TOKEN); "
                          "needed to serve metrics off loopback."),
        click.option("--max-jobs-per-submit", type=click.IntRange(min=1), default=DEFAULT_MAX_JOBS_PER_SUBMIT,
                     show_default=True, help="Jobs one submission may make (models x devices)."),
        click.option("--max-queued-jobs", type=click.IntRange(min=1), default=DEFAULT_MAX_QUEUED_JOBS,
                     show_default=True, help="Queued jobs one project may have."),
        click.option("--token-file", envvar="HILFARM_TOKEN_FILE", default=None, metavar="FILE",
                     help="Read the operator token from FILE instead of --token / HILFARM_TOKEN."),
        click.option("--db-file", envvar="HILFARM_DB_FILE", default=None, metavar="FILE",
                     help="Read the database URL (it may hold a password) from FILE instead of --db."),
        click.option("--metrics-token-file", envvar="HILFARM_METRICS_TOKEN_FILE", default=None, metavar="FILE",
                     help="Read the metrics token from FILE."),
    ]):
        wrapper = option(wrapper)
    return wrapper


def agent_security_options(func: Callable) -> Callable:
    for option in reversed([
        click.option("--enroll-token", envvar="HILFARM_ENROLL_TOKEN", default=None,
                     help="Enrollment token from `hilfarm admin agents enroll`, exchanged once for the "
                          "agent's own credential (env HILFARM_ENROLL_TOKEN)."),
        click.option("--allow-root", is_flag=True,
                     help="Run even as root (the benchmark process would load other people's models as root)."),
    ]):
        func = option(func)
    return func


def refuse_root(allow_root: bool) -> None:
    if os.name == "posix" and os.geteuid() == 0 and not allow_root:
        raise click.ClickException(
            "refusing to run the agent as root: it runs models other people uploaded, and a hostile model "
            "or delegate would own the device. Run it as an unprivileged user (the systemd unit uses "
            "'hilfarm'; give that user read access to the sensors it needs), or pass --allow-root")


# ---------------------------------------------------------------- hilfarm admin

def _client(ctx: click.Context):  # type: ignore[no-untyped-def]
    from hilfarm.client import FarmClient

    return FarmClient(ctx.obj["controller"], ctx.obj["token"], tls=ctx.obj.get("tls"))


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
    with _client(ctx) as client:
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
    with _client(ctx) as client:
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
    with _client(ctx) as client:
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
    with _client(ctx) as client:
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
    with _client(ctx) as client:
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
    with _client(ctx) as client:
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
    with _client(ctx) as client:
        for agent_id in agent_ids:
            a = client.admin.RevokeAgent(farm_pb2.RevokeAgentRequest(agent_id=agent_id), metadata=client.metadata)
            click.echo(f"agent {a.agent_id} revoked")


def attach(main: click.Group) -> None:
    """Add `hilfarm admin` to the main command group."""
    main.add_command(admin)
