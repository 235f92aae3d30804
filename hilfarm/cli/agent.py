"""`hilfarm agent run`: the agent of one device (or of one phone over adb)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import click

from hilfarm.cli.common import DATA_DIR_HELP, checked_profile, prepared_data_dir, stop_on_signals
from hilfarm.cli.security import agent_security_options, refuse_root
from hilfarm.paths import default_data_dir


@click.group()
def agent() -> None:
    """Run an agent on a device."""


@agent.command("run")
@click.option("--profile", default=None, callback=checked_profile,
              help="Device profile name or YAML path (default: detected).")
@click.option("--tag", "tags", multiple=True, help="Tag this device (repeatable).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Artifact cache and agent state [{DATA_DIR_HELP}, /agent].")
@click.option("--agent-id", default=None, help="Stable id of this device (default: derived and stored).")
@click.option("--adb-serial", default=None, metavar="SERIAL",
              help="Phone mode: drive the Android device with this serial over adb from this host "
                   "(one agent per phone; use --profile android-phone or a unit profile extending it).")
@agent_security_options
@click.pass_context
def agent_run(ctx, profile, tags, data_dir, agent_id, adb_serial, enroll_token, allow_root):
    """Dial out to the controller and run the jobs it leases to this device."""
    from hilfarm.agent.service import AgentConfig, run_agent

    refuse_root(allow_root)
    if adb_serial and not agent_id:
        agent_id = f"android-{re.sub(r'[^A-Za-z0-9._-]+', '-', adb_serial)}"
    data_dir = prepared_data_dir(data_dir or default_data_dir() / ("agent" if not adb_serial else f"agent-{agent_id}"))
    config = AgentConfig(
        controller=ctx.obj["controller"],
        token=ctx.obj["token"],
        profile=profile or ("android-phone" if adb_serial else None),
        tags=list(tags),
        data_dir=data_dir,
        agent_id=agent_id,
        adb_serial=adb_serial,
        enroll_token=enroll_token,
        tls=ctx.obj.get("tls"),
    )
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        run_agent(config, stop)
    except Exception as exc:
        from hilfarm.agent.android import AdbError

        if isinstance(exc, AdbError):
            raise click.ClickException(str(exc)) from None
        raise
