"""`hilfarm device provision USER@HOST --profile NAME`: install and start an agent over SSH.

The device is probed first (architecture, the Python that will run the agent, free disk,
whether a systemd user manager answers), then everything goes under one prefix on the device
(default ``~/.local/share/hilfarm``)::

    agent-venv/   the virtual environment with hilfarm[agent,<runtime extras>]
    agent.env     HILFARM_CONTROLLER, HILFARM_ENROLL_TOKEN, HILFARM_PROFILE, HILFARM_AGENT_ID (mode 0600)
    agent/        the agent's data dir: artifact cache, state, its credential (mode 0700)
    uploads/      the wheel and profile files sent from here
    agent.log     agent.pid   (only when started with nohup)

The agent runs as a systemd user service (``~/.config/systemd/user/hilfarm-agent.service``,
rendered from deploy/systemd/hilfarm-agent.service) when the user's systemd answers, else
detached with nohup and a pid file. Running it again upgrades in place: the venv is kept when
its Python still fits, hilfarm is reinstalled, the agent restarted.

The admin's token never reaches the device: with it, provisioning asks the controller for a
single-use enrollment token bound to the device's profile, tags and agent id, valid for an hour,
and only that goes into agent.env (never on a command line). The agent exchanges it once for a
credential of its own. The agent runs as the login, which must not be root (``--allow-root``
says otherwise). Finally the command waits (bounded) until the agent has registered with the
controller and prints the device.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import click

import hilfarm
from hilfarm.ssh import RemoteCommandError, RemoteHost, SSHError, parse_target
from hilfarm.units import MIB, format_bytes

MIN_PYTHON = (3, 9)
# How long the enrollment token written into agent.env is valid (it is used once, at first start).
ENROLLMENT_SECONDS = 3600.0
ENROLLMENT_PLACEHOLDER = "<enrollment token, made when provisioning>"
MIN_FREE_BYTES = 400 << 20  # hilfarm, numpy and grpcio take ~150 MiB; a runtime adds 50-250 MiB
DEFAULT_PREFIX = "~/.local/share/hilfarm"
UNIT_NAME = "hilfarm-agent.service"
USER_UNIT_DIR = "~/.config/systemd/user"
REGISTER_POLL_SECONDS = 0.5

# The profile's preferred runtime -> the extra that installs it. TFLite gets ai-edge-litert:
# tflite-runtime stops at 2.14, has no wheels past Python 3.11 and needs numpy < 2.
RUNTIME_EXTRAS = {"onnxruntime": "onnx", "tflite": "litert", "null": ""}
KNOWN_EXTRAS = ("onnx", "tflite", "litert", "nvidia")

_REPO_UNIT = Path(hilfarm.__file__).resolve().parent.parent / "deploy" / "systemd" / "hilfarm-agent.service"

# The system unit of deploy/systemd, used when that file is not at hand (hilfarm installed
# from a wheel). tests/provision checks that it matches the file.
SYSTEM_UNIT_TEMPLATE = """\
[Unit]
Description=hilfarm agent (runs benchmark jobs on this device)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
User=hilfarm
Group=hilfarm
# HILFARM_CONTROLLER (host:port), HILFARM_ENROLL_TOKEN (used once: the agent then keeps its own
# credential in its data dir) and HILFARM_PROFILE, the device profile; HILFARM_TLS_CA for TLS.
EnvironmentFile=/etc/hilfarm/agent.env
ExecStart=/opt/hilfarm/bin/hilfarm agent run --profile ${HILFARM_PROFILE} --data-dir /var/lib/hilfarm-agent
KillSignal=SIGTERM
TimeoutStopSec=60
Restart=always
RestartSec=5
StateDirectory=hilfarm-agent
StateDirectoryMode=0700
UMask=0077
# Sensors read sysfs and vcgencmd; the agent needs no privileges beyond the video group on a Pi.
SupplementaryGroups=video
NoNewPrivileges=true
PrivateTmp=true
ProtectSystem=strict
ProtectHome=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectControlGroups=true
CapabilityBoundingSet=
RestrictSUIDSGID=true
LockPersonality=true
# The benchmark process leaves the network in user and network namespaces of its own.
RestrictNamespaces=user net

[Install]
WantedBy=multi-user.target
"""


class ProvisionError(Exception):
    """Provisioning cannot go on; the message says what is wrong and with which machine."""


# ---------------------------------------------------------------- layout on the device

def _sh_path(path: str) -> str:
    """A device path as a shell word: '~/x' and relative paths are taken from $HOME."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        path = path[2:]
    elif path.startswith("/"):
        return shlex.quote(path)
    return '"$HOME"/' + shlex.quote(path)


@dataclass
class Layout:
    prefix: str  # absolute, on the device
    home: str

    @property
    def venv(self) -> str:
        return f"{self.prefix}/agent-venv"

    @property
    def hilfarm(self) -> str:
        return f"{self.venv}/bin/hilfarm"

    @property
    def env_file(self) -> str:
        return f"{self.prefix}/agent.env"

    @property
    def data_dir(self) -> str:
        return f"{self.prefix}/agent"

    @property
    def uploads(self) -> str:
        return f"{self.prefix}/uploads"

    @property
    def log(self) -> str:
        return f"{self.prefix}/agent.log"

    @property
    def pid(self) -> str:
        return f"{self.prefix}/agent.pid"

    @property
    def unit(self) -> str:
        return f"{self.home}/.config/systemd/user/{UNIT_NAME}"


# ---------------------------------------------------------------- probe

@dataclass
class DeviceFacts:
    label: str  # user@host:port
    user: str
    home: str
    hostname: str
    machine: str
    kernel: str
    os_name: str
    prefix: str  # the install prefix, absolute
    python: str  # as asked for
    python_path: str  # where the device found it ('' when it did not)
    python_version: Optional[Tuple[int, int, int]]
    python_said: str  # what it printed when asked for its version
    has_venv: bool
    free_bytes: Optional[int]
    free_dir: str
    systemd_user: bool
    has_setsid: bool

    def summary(self) -> str:
        version = ".".join(map(str, self.python_version)) if self.python_version else "?"
        free = f"{format_bytes(self.free_bytes, 'GiB')} free in {self.free_dir}" if self.free_bytes is not None else "free space unknown"
        return (f"{self.label}: {self.os_name or 'Linux'} {self.machine} (kernel {self.kernel}), "
                f"{self.python_path or self.python} {version}, {free}, "
                f"systemd user manager: {'yes' if self.systemd_user else 'no'}")


def _probe_script(python: str, prefix: str) -> str:
    py = shlex.quote(python)
    return f"""
echo "home=$HOME"
echo "user=$(id -un 2>/dev/null || echo "$USER")"
echo "hostname=$(hostname 2>/dev/null || uname -n)"
echo "machine=$(uname -m)"
echo "kernel=$(uname -r)"
if [ -r /etc/os-release ]; then (. /etc/os-release && echo "os=$PRETTY_NAME"); fi
prefix={_sh_path(prefix)}
echo "prefix=$prefix"
if command -v {py} >/dev/null 2>&1; then
  echo "python_path=$(command -v {py})"
  echo "python_said=$({py} -c 'import sys; print("%d.%d.%d" % tuple(sys.version_info[:3]))' 2>&1 | tail -n 1)"
  if {py} -c 'import venv, ensurepip' >/dev/null 2>&1; then echo venv=yes; else echo venv=no; fi
fi
d="$prefix"
while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "free_dir=$d"
echo "free_kib=$(df -Pk "$d" 2>/dev/null | awk 'NR==2 {{print $4}}')"
if command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; then
  echo systemd=yes
else
  echo systemd=no
fi
if command -v setsid >/dev/null 2>&1; then echo setsid=yes; fi
"""


def probe(remote: RemoteHost, python: str, prefix: str) -> DeviceFacts:
    result = remote.check(_probe_script(python, prefix), "probing the device", timeout=60)
    seen: Dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            seen[key.strip()] = value.strip()
    said = seen.get("python_said", "")
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", said)
    free_kib = seen.get("free_kib", "")
    return DeviceFacts(
        label=remote.label, user=seen.get("user", ""), home=seen.get("home", ""),
        hostname=seen.get("hostname", ""), machine=seen.get("machine", ""), kernel=seen.get("kernel", ""),
        os_name=seen.get("os", ""), prefix=seen.get("prefix", ""), python=python,
        python_path=seen.get("python_path", ""),
        python_version=tuple(int(g) for g in match.groups()) if match else None,  # type: ignore[arg-type]
        python_said=said, has_venv=seen.get("venv") == "yes",
        free_bytes=int(free_kib) * 1024 if free_kib.isdigit() else None, free_dir=seen.get("free_dir", ""),
        systemd_user=seen.get("systemd") == "yes", has_setsid=seen.get("setsid") == "yes",
    )


def check_facts(facts: DeviceFacts, min_free_bytes: int = MIN_FREE_BYTES, *, allow_root: bool = False) -> None:
    """Refuse a device the agent cannot run on, saying what to install or free."""
    where = facts.label
    want = ".".join(map(str, MIN_PYTHON))
    if not facts.home or not facts.prefix.startswith("/"):
        raise ProvisionError(f"{where}: the login has no home directory ($HOME is empty); pass an absolute --prefix")
    if not facts.python_path:
        raise ProvisionError(
            f"{where}: there is no {facts.python!r} on the device: install Python >= {want} "
            f"(e.g. `sudo apt install python3 python3-venv`) or name another with --python")
    if facts.python_version is None:
        raise ProvisionError(f"{where}: {facts.python_path} did not say its version (it printed "
                             f"{facts.python_said!r}); name a working Python >= {want} with --python")
    found = ".".join(map(str, facts.python_version))
    if facts.python_version[:2] < MIN_PYTHON:
        raise ProvisionError(
            f"{where}: {facts.python_path} is Python {found}; the agent needs Python >= {want}. Install a newer "
            f"one on the device (e.g. `sudo apt install python3.9 python3.9-venv`, or pyenv) and pass "
            f"--python python3.9 (or its path)")
    if not facts.has_venv:
        minor = f"{facts.python_version[0]}.{facts.python_version[1]}"
        raise ProvisionError(
            f"{where}: {facts.python_path} (Python {found}) cannot create virtual environments (no venv/ensurepip "
            f"module): install it on the device, e.g. `sudo apt install python3-venv` (or python{minor}-venv)")
    if facts.free_bytes is not None and facts.free_bytes < min_free_bytes:
        raise ProvisionError(
            f"{where}: only {facts.free_bytes / MIB:.0f} MiB free in {facts.free_dir}; the agent needs about "
            f"{min_free_bytes // MIB} MiB: free some space or choose another --prefix")
    if facts.user == "root" and not allow_root:
        raise ProvisionError(
            f"{where}: logged in as root, and the agent runs as the login: it would load other people's models "
            "as root. Log in as an unprivileged user (create one on the device: `sudo useradd --create-home "
            "hilfarm`, add it to the groups its sensors need, e.g. video on a Pi), or pass --allow-root")


# ---------------------------------------------------------------- what to install

@dataclass
class PackageSource:
    """Either a wheel sent from here or a pip requirement the device resolves itself."""

    wheel: Optional[Path] = None
    pip_spec: Optional[str] = None

    def describe(self) -> str:
        return f"wheel {self.wheel.name}" if self.wheel is not None else f"pip {self.pip_spec}"


def default_extras(runtime_preferred: str) -> List[str]:
    extra = RUNTIME_EXTRAS.get(runtime_preferred, "")
    return [extra] if extra else []


def parse_extras(text: Optional[str], runtime_preferred: str) -> List[str]:
    if text is None:
        return default_extras(runtime_preferred)
    extras = [e.strip() for e in text.split(",") if e.strip() and e.strip() != "none"]
    unknown = [e for e in extras if e not in KNOWN_EXTRAS]
    if unknown:
        raise ProvisionError(f"--extras: unknown extra {', '.join(unknown)} (known: {', '.join(KNOWN_EXTRAS)}, or none)")
    return extras


def _setuptools_builds_offline() -> bool:
    # The checkout's pyproject needs setuptools >= 77 (SPDX license string); with it installed
    # here the wheel builds without fetching a build environment from the index.
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return major >= 77


def build_wheel(source: Path, out_dir: Path) -> Path:
    """A wheel of the hilfarm source tree at ``source`` (built from a copy, so stale files
    in the tree's build/ never end up in it)."""
    if not (source / "pyproject.toml").is_file():
        raise ProvisionError(f"--from-wheel {source}: not a .whl file and no pyproject.toml there")
    copy = out_dir / "src"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "tests", "out"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
               "-w", str(out_dir)]
    if _setuptools_builds_offline():
        command.append("--no-build-isolation")
    proc = subprocess.run(command + [str(copy)], capture_output=True, text=True)
    wheels = sorted(out_dir.glob("hilfarm-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise ProvisionError(f"building a wheel of {source} failed (`{' '.join(command)} {copy}`):\n{tail}")
    return wheels[-1]


# ---------------------------------------------------------------- the systemd unit

def system_unit_template() -> str:
    try:
        return _REPO_UNIT.read_text()
    except OSError:
        return SYSTEM_UNIT_TEMPLATE


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


# ---------------------------------------------------------------- agent settings

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


def agent_id_for(hostname: str, profile_name: str) -> str:
    """The id the agent would derive itself (hilfarm.agent.service), fixed here so both ends know it."""
    host = re.sub(r"[^A-Za-z0-9._-]+", "-", hostname).strip("-") or "device"
    return f"{host}-{profile_name}"


# ---------------------------------------------------------------- steps

@dataclass
class Step:
    """One thing done on the device: a shell script, or a file written there."""

    title: str
    script: Optional[str] = None
    path: Optional[str] = None  # file to write
    data: Union[bytes, Path, None] = None
    mode: int = 0o644
    shown: Optional[str] = None  # what --dry-run prints for the file (secrets left out)
    timeout: float = 600.0

    def describe(self) -> str:
        if self.script is not None:
            return f"# {self.title}\n{self.script.strip()}"
        body = self.shown if self.shown is not None else (
            f"(local file {self.data}, {self.data.stat().st_size} bytes)" if isinstance(self.data, Path)
            else self.data.decode(errors="replace") if isinstance(self.data, bytes) else "")
        return f"# {self.title}\n# write {self.path} (mode {self.mode:o}):\n" + "\n".join(
            "#   " + line for line in body.rstrip().splitlines())

    def apply(self, remote: RemoteHost) -> str:
        """Do it; returns the last line the script printed (what it decided), if any."""
        if self.script is not None:
            lines = remote.check(self.script, self.title, timeout=self.timeout).stdout.strip().splitlines()
            return lines[-1] if lines else ""
        assert self.path is not None and self.data is not None
        remote.write_file(self.path, self.data, self.mode)
        return ""


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


@dataclass
class InstallRequest:
    profile: str  # name or local YAML path
    source: PackageSource
    extras: Optional[str]  # None: from the profile
    controller: str  # as the device reaches it
    # A single-use enrollment token for this device (never the admin's own token).
    enroll_token: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    agent_id: Optional[str] = None
    system_site_packages: bool = False
    pip_args: List[str] = field(default_factory=list)
    service: str = "auto"  # auto | systemd | nohup
    allow_root: bool = False
    tls_ca: Optional[str] = None  # a local CA file sent along, or "system"


@dataclass
class InstallPlan:
    layout: Layout
    steps: List[Step]  # up to and including stopping a running agent
    start_steps: List[Step]
    agent_id: str
    profile_name: str
    extras: List[str]
    service: str  # systemd | nohup


def _local_profile(name_or_path: str, machine: str):
    from hilfarm.agent.profiles import PROFILE_DIR, ProfileError, load_profile

    try:
        profile = load_profile(name_or_path, machine=machine or None)
    except ProfileError as exc:
        raise ProvisionError(f"--profile: {exc}") from None
    own = [Path(s) for s in profile.sources if Path(s).resolve().parent != PROFILE_DIR]
    return profile, own


def plan_install(facts: DeviceFacts, request: InstallRequest) -> InstallPlan:
    q = shlex.quote
    layout = Layout(prefix=facts.prefix, home=facts.home)
    profile, own_files = _local_profile(request.profile, facts.machine)
    extras = parse_extras(request.extras, profile.runtime_preferred)
    if request.service == "systemd" and not facts.systemd_user:
        raise ProvisionError(f"{facts.label}: --service systemd, but `systemctl --user` does not answer there "
                             "(no user manager for this login); use --service nohup or auto")
    service = "systemd" if request.service == "systemd" or (request.service == "auto" and facts.systemd_user) else "nohup"
    agent_id = request.agent_id or agent_id_for(facts.hostname, profile.name)
    assert facts.python_version is not None
    want = f"{facts.python_version[0]}.{facts.python_version[1]} {'true' if request.system_site_packages else 'false'}"

    steps = [Step("create the directories", f"mkdir -p {q(layout.prefix)} {q(layout.uploads)} {q(layout.data_dir)}")]
    if request.source.wheel is not None:
        steps.append(Step("remove wheels of earlier installs", f"rm -f {q(layout.uploads)}/hilfarm-*.whl"))
        remote_wheel = f"{layout.uploads}/{request.source.wheel.name}"
        steps.append(Step(f"send {request.source.wheel.name}", path=remote_wheel, data=request.source.wheel))
        requirement = remote_wheel + (f"[{','.join(['agent'] + extras)}]")
    else:
        requirement = request.source.pip_spec or ""
    profile_setting = profile.name
    for i, source in enumerate(own_files):
        target = f"{layout.uploads}/{source.name}"
        steps.append(Step(f"send the profile file {source.name}", path=target, data=source))
        if i == 0:
            profile_setting = target

    py, venv = q(facts.python_path), q(layout.venv)
    site = " --system-site-packages" if request.system_site_packages else ""
    steps.append(Step("create the virtual environment (kept when its Python still fits)", f"""set -e
have=""
if [ -x {venv}/bin/python ]; then
  have="$({venv}/bin/python -c 'import sys; print("%d.%d" % tuple(sys.version_info[:2]))' 2>/dev/null) $(sed -n 's/^include-system-site-packages *= *//p' {venv}/pyvenv.cfg 2>/dev/null)"
fi
if [ "$have" != {q(want)} ]; then
  rm -rf {venv}
  {py} -m venv{site} {venv}
  echo "created {layout.venv}"
else
  echo "kept {layout.venv}"
fi""", timeout=300))
    pip = f"{venv}/bin/python -m pip --disable-pip-version-check"
    extra_args = " ".join(q(a) for a in request.pip_args)
    install = [f"{pip} install --upgrade {extra_args} {q(requirement)}".replace("  ", " ")]
    if request.source.wheel is not None:
        # Same version number as the installed one (a rebuilt checkout): reinstall the code itself.
        install.append(f"{pip} install --no-deps --force-reinstall {q(remote_wheel)}")
    install.append(f"{venv}/bin/python -c 'import hilfarm.agent.service' && {q(layout.hilfarm)} --version")
    steps.append(Step(f"install hilfarm[{','.join(['agent'] + extras)}] ({request.source.describe()})",
                      "set -e\n" + "\n".join(install), timeout=1800))

    settings = {"HILFARM_CONTROLLER": request.controller, "HILFARM_PROFILE": profile_setting,
                "HILFARM_AGENT_ID": agent_id}
    if request.tls_ca == "system":
        settings["HILFARM_TLS_CA"] = "system"
    elif request.tls_ca:
        ca_target = f"{layout.uploads}/controller-ca.pem"
        steps.append(Step("send the CA that signed the controller's certificate", path=ca_target,
                          data=Path(request.tls_ca)))
        settings["HILFARM_TLS_CA"] = ca_target
    if request.enroll_token:
        settings["HILFARM_ENROLL_TOKEN"] = request.enroll_token
    env_text = env_file_text(settings)
    shown = (env_text.replace(f"'{request.enroll_token}'", "'<enrollment token>'")
             if request.enroll_token else env_text)
    steps.append(Step("write the agent's settings", path=layout.env_file, data=env_text.encode(), mode=0o600,
                      shown=shown))
    steps.append(Step("stop the agent if one runs", stop_script(layout, facts.systemd_user), timeout=90))

    start: List[Step] = []
    if service == "systemd":
        unit = render_user_unit(system_unit_template(), layout, request.tags, request.allow_root)
        start.append(Step("create the user unit directory", f"mkdir -p {q(layout.home + '/.config/systemd/user')}"))
        start.append(Step(f"write the user unit {UNIT_NAME}", path=layout.unit, data=unit.encode()))
        start.append(Step("start the agent (systemd user service)", systemd_start_script(), timeout=120))
    else:
        start.append(Step("start the agent (nohup)", nohup_start_script(layout, request.tags, facts.has_setsid,
                                                                        request.allow_root), timeout=60))
    return InstallPlan(layout, steps, start, agent_id, profile.name, extras, service)


# ---------------------------------------------------------------- status and uninstall

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


def uninstall_steps(layout: Layout, systemd: bool) -> List[Step]:
    q = shlex.quote
    steps = [Step("stop the agent", stop_script(layout, systemd), timeout=90)]
    steps.append(Step("remove the user unit", f"""if [ -f {q(layout.unit)} ]; then
  systemctl --user disable {UNIT_NAME} 2>/dev/null || true
  rm -f {q(layout.unit)}
  systemctl --user daemon-reload 2>/dev/null || true
fi"""))
    # Only what provisioning made: the prefix may also hold a `hilfarm up` farm's data.
    made = [layout.venv, layout.env_file, layout.data_dir, layout.uploads, layout.log, layout.pid]
    steps.append(Step("remove the agent's files",
                      f"rm -rf {' '.join(q(p) for p in made)}\nrmdir {q(layout.prefix)} 2>/dev/null || true"))
    return steps


# ---------------------------------------------------------------- registration

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


# ---------------------------------------------------------------- the command

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
    there_host = controller_there.rsplit(":", 1)[0].strip("[]")
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
            local_profile = _local_profile(profile, facts.machine)[0]
            agent_id = agent_id or agent_id_for(facts.hostname, local_profile.name)
            enroll_token = ENROLLMENT_PLACEHOLDER if client is None else _enrollment_token(
                client, local_profile.name, list(local_profile.tags) + [t for t in tags if t not in local_profile.tags],
                agent_id)
            request = InstallRequest(profile=profile, source=source, extras=extras, controller=controller_there,
                                     enroll_token=enroll_token, tags=list(tags), agent_id=agent_id,
                                     system_site_packages=system_site_packages, pip_args=pip_args, service=service,
                                     allow_root=allow_root, tls_ca=tls.ca if tls is not None else None)
            if source.pip_spec is None and source.wheel is None:
                chosen = parse_extras(extras, _local_profile(profile, facts.machine)[0].runtime_preferred)
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
        resolved = remote.check(f"echo {_sh_path(prefix)}", "resolving --prefix").stdout.strip()
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


def attach(main: click.Group) -> None:
    """Add `hilfarm device ...` to the `hilfarm` group."""
    main.add_command(device)
