"""The `hilfarm` command line: the root group here, one module per command group.

    common.py        exit codes, the client, JSON output (what every group shares)
    security.py      TLS and token options of the root group, `controller serve`, `agent run`
    job_settings.py  run-setting options -> JobSettings (`submit`, `demo`)
    follow.py        upload, wait for jobs, print their results (`submit`, `jobs watch`, `demo`)
    jobs.py          submit, jobs list/show/trace/watch/cancel
    devices.py       devices list/show/drain
    controller.py    controller serve/migrate
    agent.py         agent run
    local.py         up, demo (a farm in this process)
    regress.py       regress SUITE.yaml
    results.py       results history/compare/baselines/accept
    admin.py         admin tokens/agents/whoami
    hilfarm.provision.command: device provision

Command modules import what they run (the controller, the agent, rich, numpy) inside the
command, so `hilfarm` starts fast and an agent-only install never loads the controller.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from typing import Optional

import click
import grpc

from hilfarm import __version__
from hilfarm.cli import admin, agent, controller, devices, jobs, local, regress, results
from hilfarm.cli.common import EXIT_INTERRUPTED, fail_rpc
from hilfarm.cli.security import client_tls, tls_client_options
from hilfarm.client import DEFAULT_CONTROLLER
from hilfarm.provision.command import device  # paramiko is imported only when a device is reached


class PersonFacingFormatter(logging.Formatter):
    """Log lines with their time and source, except what the client tells the person who runs a
    command (hilfarm.client: a refused submission sent again, a lost controller reconnected),
    which reads like the command's other messages: "hilfarm: ...", wrapped at words to the
    terminal's width rather than cut mid-word by it."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name != "hilfarm.client" or record.levelno != logging.WARNING:
            return super().format(record)
        line = f"hilfarm: {record.getMessage()}"
        if not sys.stderr.isatty():
            return line
        from hilfarm.display import console  # rich: loaded only when there is something to say

        # The width of the terminal stderr is on (stdout may go to a file).
        return textwrap.fill(line, width=console(stderr=True).width, subsequent_indent="  ",
                             break_long_words=False, break_on_hyphens=False)


class RpcErrorsToMessages(click.Group):
    """Turns a gRPC error anywhere in a command into one readable line and exit code 2, and
    Ctrl-C into exit 130 without a traceback (commands that wait say more: see follow.py)."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except grpc.RpcError as error:
            raise fail_rpc(error, (ctx.obj or {}).get("controller", "?")) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


def _dialable(ctx: click.Context, param: click.Parameter, address: str) -> str:
    from hilfarm.transport import dial_address_problem

    problem = dial_address_problem(address)
    if problem:
        raise click.BadParameter(problem)
    return address


@click.group(cls=RpcErrorsToMessages)
@click.option("--controller", envvar="HILFARM_CONTROLLER", default=DEFAULT_CONTROLLER, callback=_dialable,
              show_default=True, help="Controller address HOST:PORT (env HILFARM_CONTROLLER).")
@click.option("--token", envvar="HILFARM_TOKEN", default=None,
              help="Credential sent to the controller (env HILFARM_TOKEN).")
@tls_client_options
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(__version__, prog_name="hilfarm")
@click.pass_context
def main(ctx: click.Context, controller: str, token: Optional[str], verbose: int, **tls_options: Optional[str]) -> None:
    """hilfarm: measure on real devices whether a model fits them."""
    handler = logging.StreamHandler()
    handler.setFormatter(PersonFacingFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)], handlers=[handler])
    ctx.ensure_object(dict)
    ctx.obj.update(controller=controller, token=token, tls=client_tls(**tls_options))


for _command in (jobs.submit, jobs.jobs, devices.devices, controller.controller, agent.agent, local.up, local.demo,
                 regress.regress, results.results, admin.admin, device):
    main.add_command(_command)
