"""`hilfarm device provision USER@HOST`: probe, plan, install and start an agent over SSH, wait
until it registers; --status and --uninstall."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional

import click

import hilfarm
from hilfarm.provision.facts import check_facts, probe
from hilfarm.provision.layout import DEFAULT_PREFIX, Layout, ProvisionError, sh_path
from hilfarm.provision.plan import (InstallRequest, PackageSource, Step, agent_id_for, build_wheel, load_local_profile,
                                    parse_extras, plan_install, uninstall_steps)
from hilfarm.provision.scripts import read_status
from hilfarm.provision.ssh import RemoteCommandError, RemoteHost, SSHError, parse_target
from hilfarm.transport import host_of

# How long the enrollment token written into agent.env is valid (it is used once, at first start).
ENROLLMENT_SECONDS = 3600.0
ENROLLMENT_PLACEHOLDER = "<enrollment token, made when provisioning>"
REGISTER_POLL_SECONDS = 0.5


def wait_for_registration(list_devices: Callable[[], list], agent_id: str, seen_before: Optional[float],
                          timeout: float) -> Optional[object]:
    """The device once the agent has registered (newer than ``seen_before``), else None."""
    deadline = time.monotonic() + timeout
    while True:
        for device in list_devices():
            if device.agent_id == agent_id and device.state != "offline" and (
                    seen_before is None or device.last_seen > seen_before):
                return device
        if time.monotonic() >= deadline:
            return None
        time.sleep(REGISTER_POLL_SECONDS)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _say(text: str) -> None:
    click.echo(f"hilfarm: {text}", err=True)


def _apply(step: Step, remote: RemoteHost) -> None:
    _say(step.title)
    said = step.apply(remote)
    if said:
        click.echo(f"           {said}", err=True)


def _connect(target: str, port, identity, known_hosts, accept_new_host_key, timeout) -> RemoteHost:
    try:
        user, host = parse_target(target)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="USER@HOST") from None
    remote = RemoteHost.connect(host, user=user, port=port, identity=identity, known_hosts=known_hosts,
                                accept_new_host_key=accept_new_host_key, timeout=timeout)
    if remote.added_host_key:
        _say(f"trusted the new host key of {remote.label} ({remote.added_host_key}) and saved it")
    return remote


@click.group("device")
def device() -> None:
    """Set up devices: install and start agents over SSH."""


@device.command("provision")
@click.argument("target", metavar="USER@HOST")
@click.option("--profile", default=None, help="Device profile (name or local YAML file, which is sent along).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="SSH port [22, or ~/.ssh/config].")
@click.option("--identity", "-i", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Private key to log in with (besides the ssh agent and ~/.ssh/id_*).")
@click.option("--known-hosts", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="known_hosts file [~/.ssh/known_hosts].")
@click.option("--accept-new-host-key", is_flag=True,
              help="Trust an unknown host key on first use and save it (a changed key is always refused).")
@click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@click.option("--from-wheel", "from_wheel", type=click.Path(exists=True, path_type=Path), default=None,
              help="Install this wheel, or a wheel built here from this source tree (e.g. `.`), sent over SFTP.")
@click.option("--pip-spec", default=None, help="Requirement the device installs from its index, e.g. "
              "'hilfarm[agent,onnx]==0.1.0' [hilfarm[agent,EXTRAS]==this version].")
@click.option("--extras", default=None, metavar="LIST",
              help="Runtime extras, e.g. onnx,litert or none [from the profile's preferred runtime].")
@click.option("--python", "python", default="python3", show_default=True, help="Python on the device that makes the venv.")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True,
              help="Directory on the device for the venv, settings, data and log.")
@click.option("--system-site-packages", is_flag=True,
              help="Let the venv see the device's system packages (e.g. JetPack's onnxruntime-gpu).")
@click.option("--find-links", multiple=True, metavar="DIR|URL", help="pip --find-links on the device (repeatable).")
@click.option("--no-index", is_flag=True, help="pip --no-index on the device (with --find-links: offline).")
@click.option("--index-url", default=None, help="pip --index-url on the device (a local mirror).")
@click.option("--agent-controller", default=None, metavar="HOST:PORT",
              help="Controller address as the device reaches it [--controller].")
@click.option("--tag", "tags", multiple=True, help="Tag the device (repeatable).")
@click.option("--agent-id", default=None, help="Agent id [HOSTNAME-PROFILE].")
@click.option("--service", type=click.Choice(["auto", "systemd", "nohup"]), default="auto", show_default=True,
              help="How the agent is kept running: a systemd user service when one answers, else nohup.")
@click.option("--wait-seconds", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="How long to wait for the agent to register (0: do not wait).")
@click.option("--allow-root", is_flag=True, help="Install even when logged in as root (the agent would run as root).")
@click.option("--dry-run", is_flag=True, help="Probe the device, then print what would be done instead of doing it.")
@click.option("--status", "show_status", is_flag=True, help="Show the provisioned agent's state and log instead.")
@click.option("--uninstall", is_flag=True, help="Stop the agent and remove what provisioning installed.")
@click.option("--json", "as_json", is_flag=True, help="Print the registered device as JSON.")
@click.pass_context
def provision(ctx, target, profile, port, identity, known_hosts, accept_new_host_key, connect_timeout, from_wheel,
              pip_spec, extras, python, prefix, system_site_packages, find_links, no_index, index_url,
              agent_controller, tags, agent_id, service, wait_seconds, allow_root, dry_run, show_status, uninstall,
              as_json):
    """Install hilfarm's agent on USER@HOST over SSH and start it.

    The device is probed first (architecture, Python >= 3.9 with venv, free disk). hilfarm
    goes into a venv under --prefix, the agent's settings into an env file only the user can
    read, and the agent is started as a systemd user service (or with nohup where systemd
    does not answer). Running it again upgrades in place. It then waits until the agent has
    registered with the controller and prints the device.
    """
    if show_status and uninstall:
        raise click.UsageError("--status and --uninstall exclude each other")
    try:
        if show_status or uninstall:
            _status_or_uninstall(ctx, target, port, identity, known_hosts, accept_new_host_key, connect_timeout,
                                 prefix, uninstall, dry_run)
            return
        if not profile:
            raise click.UsageError("--profile is required to install (e.g. --profile raspberry-pi-5)")
        if from_wheel is not None and pip_spec:
            raise click.UsageError("give --from-wheel or --pip-spec, not both")
        _install(ctx, target, profile, port, identity, known_hosts, accept_new_host_key, connect_timeout, from_wheel,
                 pip_spec, extras, python, prefix, system_site_packages, find_links, no_index, index_url,
                 agent_controller, tags, agent_id, service, wait_seconds, dry_run, as_json, allow_root)
    except (SSHError, ProvisionError, RemoteCommandError) as exc:
        raise click.ClickException(str(exc)) from None


def _install(ctx, target, profile, port, identity, known_hosts, accept_new_host_key, connect_timeout, from_wheel,
             pip_spec, extras, python, prefix, system_site_packages, find_links, no_index, index_url,
             agent_controller, tags, agent_id, service, wait_seconds, dry_run, as_json, allow_root=False) -> None:
    from hilfarm.client import FarmClient

    controller_here = ctx.obj["controller"]
    token = ctx.obj["token"]
    tls = ctx.obj.get("tls")
    controller_there = agent_controller or controller_here
    _, host = parse_target(target)
    there_host = host_of(controller_there)
    # An explicit --agent-controller on loopback is believed (a reverse tunnel, `ssh -R`).
    if agent_controller is None and _is_loopback(there_host) and not _is_loopback(host):
        raise ProvisionError(
            f"the agent on {host} would dial {controller_there}, its own loopback; pass --controller HOST:PORT "
            "with an address of the controller that the device can reach (or --agent-controller, the address "
            "as the device sees it)")

    client = None
    seen_before: Optional[float] = None
    if not dry_run:
        client = FarmClient(controller_here, token, tls=tls)
        try:
            client.list_devices()  # fails now, before the device is touched, if the controller is unreachable
        except Exception:
            client.close()
            raise

    pip_args = [f"--find-links={f}" for f in find_links] + (["--no-index"] if no_index else []) + (
        [f"--index-url={index_url}"] if index_url else [])
    with tempfile.TemporaryDirectory(prefix="hilfarm-provision-") as tmp:
        remote = _connect(target, port, identity, known_hosts, accept_new_host_key, connect_timeout)
        try:
            facts = probe(remote, python, prefix)
            _say(facts.summary())
            check_facts(facts, allow_root=allow_root)
            if from_wheel is not None:
                wheel = from_wheel if from_wheel.is_file() else None
                if wheel is None:
                    _say(f"building a wheel of {from_wheel.resolve()}")
                    wheel = build_wheel(from_wheel.resolve(), Path(tmp))
                elif wheel.suffix != ".whl":
                    raise ProvisionError(f"--from-wheel {wheel}: not a .whl file")
                source = PackageSource(wheel=wheel)
            else:
                source = PackageSource(pip_spec=pip_spec)
            local_profile = load_local_profile(profile, facts.machine)[0]
            agent_id = agent_id or agent_id_for(facts.hostname, local_profile.name)
            enroll_token = ENROLLMENT_PLACEHOLDER if client is None else _enrollment_token(
                client, local_profile.name, list(local_profile.tags) + [t for t in tags if t not in local_profile.tags],
                agent_id)
            request = InstallRequest(profile=profile, source=source, extras=extras, controller=controller_there,
                                     enroll_token=enroll_token, tags=list(tags), agent_id=agent_id,
                                     system_site_packages=system_site_packages, pip_args=pip_args, service=service,
                                     allow_root=allow_root, tls_ca=tls.ca if tls is not None else None)
            if source.pip_spec is None and source.wheel is None:
                chosen = parse_extras(extras, load_local_profile(profile, facts.machine)[0].runtime_preferred)
                source.pip_spec = f"hilfarm[{','.join(['agent'] + chosen)}]=={hilfarm.__version__}"
            plan = plan_install(facts, request)
            if dry_run:
                for step in plan.steps + plan.start_steps:
                    click.echo(step.describe() + "\n")
                _say(f"dry run: nothing was changed on {facts.label}")
                return
            for step in plan.steps:
                _apply(step, remote)
            if client is not None:
                # Taken after the old agent stopped: a newer last_seen can only be the new agent's.
                known = [d for d in client.list_devices() if d.agent_id == plan.agent_id]
                seen_before = known[0].last_seen if known else None
            for step in plan.start_steps:
                _apply(step, remote)
            _say(f"agent {plan.agent_id} (profile {plan.profile_name}, extras {','.join(plan.extras) or 'none'}) "
                 f"started on {facts.label} with {plan.service}")
            if client is None or wait_seconds <= 0:
                return
            _say(f"waiting up to {wait_seconds:g} s for it to register with {controller_here}")
            found = wait_for_registration(client.list_devices, plan.agent_id, seen_before, wait_seconds)
            if found is None:
                status = read_status(remote, plan.layout)
                tail = "\n".join(status.log_tail) or "(no log)"
                raise ProvisionError(
                    f"the agent on {facts.label} is {'running' if status.active else 'NOT running'} but did not "
                    f"register with the controller within {wait_seconds:g} s (it dials {controller_there}: is that "
                    f"reachable from the device, and the token right?). The end of its log:\n{tail}")
        finally:
            remote.close()
            if client is not None:
                client.close()
    _print_device(found, as_json)


def _enrollment_token(client, profile_name: str, tags: List[str], agent_id: str) -> str:  # type: ignore[no-untyped-def]
    """A single-use enrollment token for this device, valid for an hour (needs an admin token)."""
    import grpc

    from hilfarm.v1 import farm_pb2

    try:
        made = client.admin.CreateEnrollmentToken(farm_pb2.CreateEnrollmentTokenRequest(
            device_profile=profile_name, tags=tags, agent_id=agent_id, uses=1, expires_in_seconds=ENROLLMENT_SECONDS),
            metadata=client.metadata)
    except grpc.RpcError as exc:
        raise ProvisionError(f"the controller would not make an enrollment token for {agent_id} ({exc.code().name}: "
                             f"{exc.details()}); provisioning needs an admin token (--token / HILFARM_TOKEN)") from None
    _say(f"enrollment token {made.token.id} made for agent {agent_id} (single use, valid "
         f"{ENROLLMENT_SECONDS / 3600:g} h); the admin token stays here")
    return made.secret


def _print_device(found, as_json: bool) -> None:
    if as_json:
        import json

        from hilfarm.documents import device_document

        click.echo(json.dumps(device_document(found), indent=2))
    else:
        from hilfarm.display import console, devices_table

        console().print(devices_table([found]))


def _status_or_uninstall(ctx, target, port, identity, known_hosts, accept_new_host_key, connect_timeout, prefix,
                         uninstall, dry_run) -> None:
    with _connect(target, port, identity, known_hosts, accept_new_host_key, connect_timeout) as remote:
        home = remote.check('echo "$HOME"', "reading $HOME").stdout.strip()
        resolved = remote.check(f"echo {sh_path(prefix)}", "resolving --prefix").stdout.strip()
        layout = Layout(prefix=resolved, home=home)
        status = read_status(remote, layout)
        if uninstall:
            steps = uninstall_steps(layout, status.service == "systemd")
            if dry_run:
                for step in steps:
                    click.echo(step.describe() + "\n")
                return
            for step in steps:
                _apply(step, remote)
            agent_id = status.settings.get("HILFARM_AGENT_ID", "")
            _say(f"removed the agent from {remote.label}" + (
                f"; the controller keeps {agent_id} listed as offline (`hilfarm devices drain {agent_id}` keeps "
                "jobs off it)" if agent_id else ""))
            return
    if not status.installed_version and not status.service:
        click.echo(f"{remote.label}: no agent provisioned under {layout.prefix}")
        ctx.exit(1)
    click.echo(f"{remote.label}: {status.installed_version or 'hilfarm (version unknown)'} in {layout.venv}")
    click.echo(f"  service: {status.service or 'none'}, {'running' if status.active else 'NOT running'}"
               + (f" (pid {status.pid})" if status.pid and status.active else ""))
    for key in ("HILFARM_CONTROLLER", "HILFARM_PROFILE", "HILFARM_AGENT_ID"):
        if key in status.settings:
            click.echo(f"  {key}={status.settings[key]}")
    agent_id = status.settings.get("HILFARM_AGENT_ID")
    if agent_id:
        try:
            from hilfarm.client import FarmClient

            with FarmClient(ctx.obj["controller"], ctx.obj["token"], tls=ctx.obj.get("tls")) as client:
                seen = [d for d in client.list_devices() if d.agent_id == agent_id]
            click.echo(f"  controller {ctx.obj['controller']}: " + (
                f"{seen[0].state}, last seen {time.time() - seen[0].last_seen:.0f} s ago" if seen else "not registered"))
        except Exception as exc:  # the status of the device is still worth printing
            click.echo(f"  controller {ctx.obj['controller']}: not reachable from here ({type(exc).__name__})")
    if status.log_tail:
        click.echo("  log:")
        for line in status.log_tail:
            click.echo(f"    {line}")
    ctx.exit(0 if status.active else 1)
