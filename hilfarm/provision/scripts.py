"""What provisioning writes and runs on the device: the systemd user unit (rendered from
deploy/systemd/hilfarm-agent.service, the one copy; setup.py maps it into the wheel),
agent.env, and the shell scripts that start, stop and report on the agent."""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import hilfarm
from hilfarm.provision.layout import UNIT_NAME, Layout, ProvisionError
from hilfarm.provision.ssh import RemoteHost

UNIT_FILE = "hilfarm-agent.service"


def system_unit_template() -> str:
    """The system unit of deploy/systemd. In a checkout (an editable install too) it is read
    there; a wheel carries it as the package data hilfarm.provision.systemd, mapped by setup.py
    from that same folder."""
    spec = importlib.util.find_spec("hilfarm.provision.systemd")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    folders.append(str(Path(hilfarm.__file__).resolve().parent.parent / "deploy" / "systemd"))
    for folder in folders:
        path = Path(folder) / UNIT_FILE
        if path.is_file():
            return path.read_text()
    raise ProvisionError(f"{UNIT_FILE} is missing from this hilfarm install (looked in {', '.join(folders)}); "
                         "reinstall hilfarm")


def _systemd_word(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9_./:@%+=,-]+", text) else '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_user_unit(template: str, layout: Layout, tags: Sequence[str], allow_root: bool = False) -> str:
    """The system unit of deploy/systemd made a user unit: the agent runs as the logged-in
    user from the venv, with its settings from agent.env."""
    exec_args = [layout.hilfarm, "agent", "run", "--profile", "${HILFARM_PROFILE}", "--data-dir", layout.data_dir,
                 "--agent-id", "${HILFARM_AGENT_ID}"]
    for tag in tags:
        exec_args += ["--tag", tag]
    if allow_root:
        exec_args.append("--allow-root")
    lines: List[str] = []
    for line in template.splitlines():
        key = line.split("=", 1)[0].strip()
        # User/Group/SupplementaryGroups: a user manager cannot change them (the agent runs as
        # the login); StateDirectory: the data dir is under the prefix; PrivateTmp and the
        # Protect*/Restrict* sandboxing: they need privileges or user namespaces that a user
        # manager often lacks on device kernels (the benchmark process isolates itself).
        if key in _SYSTEM_ONLY_SETTINGS:
            if lines and lines[-1].startswith("#"):
                lines.pop()  # the comment about the dropped setting goes with it
            continue
        if key == "EnvironmentFile":
            line = f"EnvironmentFile={_systemd_word(layout.env_file)}"
        elif key == "ExecStart":
            line = "ExecStart=" + " ".join(a if a.startswith("${") else _systemd_word(a) for a in exec_args)
        elif key == "WantedBy":
            line = "WantedBy=default.target"
        elif line.startswith("Description="):
            line += " [user service written by hilfarm device provision]"
        lines.append(line)
    return "\n".join(lines) + "\n"


_SAFE_VALUE = re.compile(r"[^'\n\r\0]*")
_SYSTEM_ONLY_SETTINGS = ("User", "Group", "SupplementaryGroups", "StateDirectory", "PrivateTmp", "ProtectSystem",
                         "ProtectHome", "ReadWritePaths", "ProtectKernelTunables", "ProtectKernelModules",
                         "ProtectControlGroups", "RestrictNamespaces", "RestrictSUIDSGID", "LockPersonality",
                         "CapabilityBoundingSet", "AmbientCapabilities", "RestrictAddressFamilies",
                         "SystemCallArchitectures", "StateDirectoryMode")


def env_file_text(settings: Dict[str, str]) -> str:
    """KEY='value' lines that both sh (`. file`) and systemd's EnvironmentFile read alike."""
    lines = ["# Written by `hilfarm device provision`; read by the hilfarm agent. Private: mode 0600."]
    for key, value in settings.items():
        if not _SAFE_VALUE.fullmatch(value):
            raise ProvisionError(f"{key} contains a quote or a line break, which agent.env cannot hold")
        lines.append(f"{key}='{value}'")
    return "\n".join(lines) + "\n"


def read_env_file(text: str) -> Dict[str, str]:
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            found[key.strip()] = value.strip().strip("'")
    return found


def _pid_function(layout: Layout) -> str:
    """sh function printing the pid of our running agent (nothing when none); it checks the
    process's command line, so a stale pid file never names an unrelated process."""
    return f"""hilfarm_pid() {{
  p=$(cat {shlex.quote(layout.pid)} 2>/dev/null) || return 0
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 0
  if [ -r "/proc/$p/cmdline" ]; then
    tr '\\000' ' ' < "/proc/$p/cmdline" | grep -qF -- {shlex.quote(layout.hilfarm)} || return 0
  fi
  echo "$p"
}}"""


def stop_script(layout: Layout, systemd: bool) -> str:
    q = shlex.quote
    parts = [_pid_function(layout), f"""p=$(hilfarm_pid)
if [ -n "$p" ]; then
  kill -TERM "$p"
  i=0
  while kill -0 "$p" 2>/dev/null && [ $i -lt 120 ]; do sleep 0.5 2>/dev/null || sleep 1; i=$((i+1)); done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p"
  echo "stopped agent pid $p"
fi
rm -f {q(layout.pid)}"""]
    if systemd:
        parts.append(f"if [ -f {q(layout.unit)} ]; then systemctl --user stop {UNIT_NAME} || true; fi")
    return "\n".join(parts)


def nohup_start_script(layout: Layout, tags: Sequence[str], has_setsid: bool, allow_root: bool = False) -> str:
    q = shlex.quote
    command = [layout.hilfarm, "agent", "run", "--data-dir", layout.data_dir]
    for tag in tags:
        command += ["--tag", tag]
    if allow_root:
        command.append("--allow-root")
    # setsid: the agent must outlive this SSH session and any SIGHUP sent to its process group.
    detach = "setsid " if has_setsid else ""
    return f"""set -e
{_pid_function(layout)}
cd {q(layout.prefix)}
set -a
. {q(layout.env_file)}
set +a
{detach}nohup sh -c 'echo $$ > "$0"; exec "$@" --profile "$HILFARM_PROFILE" --agent-id "$HILFARM_AGENT_ID"' \\
  {q(layout.pid)} {' '.join(q(a) for a in command)} < /dev/null >> {q(layout.log)} 2>&1 &
sleep 2
p=$(hilfarm_pid)
if [ -z "$p" ]; then
  echo "the agent exited at once; the end of {layout.log}:" >&2
  tail -n 30 {q(layout.log)} >&2
  exit 1
fi
echo "agent running with pid $p (log {layout.log})"
"""


def systemd_start_script() -> str:
    return f"""set -e
systemctl --user daemon-reload
systemctl --user enable {UNIT_NAME}
systemctl --user restart {UNIT_NAME}
# Without lingering the user's services stop at logout.
loginctl enable-linger "$(id -un)" 2>/dev/null || echo "warning: could not enable lingering; the agent stops when $(id -un) logs out unless an administrator runs: loginctl enable-linger $(id -un)" >&2
sleep 2
systemctl --user is-active --quiet {UNIT_NAME} || {{
  echo "the agent service did not stay up:" >&2
  journalctl --user -u {UNIT_NAME} -n 30 --no-pager >&2 || systemctl --user status {UNIT_NAME} --no-pager >&2
  exit 1
}}
echo "agent running as the systemd user service {UNIT_NAME}"
"""


def status_script(layout: Layout) -> str:
    q = shlex.quote
    return f"""{_pid_function(layout)}
if [ -x {q(layout.hilfarm)} ]; then echo "version=$({q(layout.hilfarm)} --version 2>/dev/null | tail -n 1)"; else echo version=; fi
if [ -f {q(layout.env_file)} ]; then grep -v '^HILFARM_TOKEN=' {q(layout.env_file)} | grep '^HILFARM_' | sed 's/^/env./'; fi
if [ -f {q(layout.unit)} ]; then
  echo service=systemd
  echo "active=$(systemctl --user is-active {UNIT_NAME} 2>/dev/null || true)"
  echo "pid=$(systemctl --user show -p MainPID --value {UNIT_NAME} 2>/dev/null || true)"
  journalctl --user -u {UNIT_NAME} -n 10 --no-pager 2>/dev/null | sed 's/^/log:/'
else
  p=$(hilfarm_pid)
  if [ -n "$p" ]; then echo service=nohup; echo active=active; echo "pid=$p"
  elif [ -f {q(layout.pid)} ] || [ -f {q(layout.log)} ]; then echo service=nohup; echo active=inactive
  else echo service=; fi
  [ -f {q(layout.log)} ] && tail -n 10 {q(layout.log)} | sed 's/^/log:/'
fi
true
"""


@dataclass
class AgentStatus:
    installed_version: str
    service: str  # systemd, nohup or '' (never started)
    active: bool
    pid: str
    settings: Dict[str, str]
    log_tail: List[str]


def read_status(remote: RemoteHost, layout: Layout) -> AgentStatus:
    result = remote.check(status_script(layout), "reading the agent's status", timeout=60)
    values: Dict[str, str] = {}
    env: Dict[str, str] = {}
    log: List[str] = []
    for line in result.stdout.splitlines():
        if line.startswith("log:"):
            log.append(line[4:])
        elif line.startswith("env."):
            env.update(read_env_file(line[4:]))
        else:
            key, _, value = line.partition("=")
            values[key] = value
    return AgentStatus(values.get("version", ""), values.get("service", ""), values.get("active") == "active",
                       values.get("pid", "") if values.get("pid", "") not in ("0",) else "", env, log)
