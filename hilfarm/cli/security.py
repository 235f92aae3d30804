"""The security options of the other commands: TLS for every client (the root group),
`controller serve`'s certificate, secrets and limits, `agent run`'s enrollment and its refusal
to run as root."""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Optional

import click

from hilfarm.transport import ClientTls, ServerTls, TransportError


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
