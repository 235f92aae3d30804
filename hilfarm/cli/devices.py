"""`hilfarm devices ...`: the agents the controller knows; drain them."""

from __future__ import annotations

from typing import Sequence

import click

from hilfarm.cli.common import farm_client, print_json, wide_option
from hilfarm.v1 import farm_pb2


@click.group()
def devices() -> None:
    """The agents the controller knows."""


@devices.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema hilfarm.devices/v1).")
@wide_option
@click.pass_context
def devices_list(ctx, as_json, wide):
    """Every registered agent with its profile, state and runtimes."""
    with farm_client(ctx) as client:
        found = client.list_devices()
    if as_json:
        from hilfarm.documents import devices_document

        print_json(devices_document(found))
    else:
        from hilfarm.display import console, devices_table

        console(wide=wide).print(devices_table(found, wide=wide))


def _find_device(every: Sequence[farm_pb2.Device], agent_id: str) -> farm_pb2.Device:
    """The agent with this id, or the one whose id starts with it."""
    exact = [d for d in every if d.agent_id == agent_id]
    found = exact or [d for d in every if d.agent_id.startswith(agent_id)]
    if len(found) == 1:
        return found[0]
    if found:
        raise click.ClickException(f"{agent_id!r} starts {len(found)} agent ids: "
                                   f"{', '.join(d.agent_id for d in found)}; give more characters")
    known = ", ".join(d.agent_id for d in every) or "none"
    raise click.ClickException(f"no agent {agent_id!r} has registered (known: {known})")


@devices.command("show")
@click.argument("agent_id", metavar="AGENT")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one device of hilfarm.devices/v1).")
@click.pass_context
def devices_show(ctx, agent_id, as_json):
    """One agent: profile, state, tags, runtimes with their providers, machine."""
    with farm_client(ctx) as client:
        device = _find_device(client.list_devices(), agent_id)
    if as_json:
        from hilfarm.documents import device_document

        print_json(device_document(device))
    else:
        from hilfarm.display import console, device_detail

        console().print(device_detail(device))


@devices.command("drain")
@click.argument("agent_ids", nargs=-1, required=True)
@click.option("--undo", is_flag=True, help="Put the devices back in service.")
@click.pass_context
def devices_drain(ctx, agent_ids, undo):
    """Take devices out of service: no new jobs; a running job finishes."""
    with farm_client(ctx) as client:
        for agent_id in agent_ids:
            device = client.drain_device(agent_id, drain=not undo)
            click.echo(f"{device.agent_id}: {device.state}")
