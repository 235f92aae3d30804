"""Probing a device (architecture, the Python that will run the agent, free disk, whether a
systemd user manager answers) and refusing one the agent cannot run on."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from hilfarm.provision.layout import ProvisionError, sh_path
from hilfarm.provision.ssh import RemoteHost
from hilfarm.units import MIB, format_bytes

MIN_PYTHON = (3, 9)
MIN_FREE_BYTES = 400 << 20  # hilfarm, numpy and grpcio take ~150 MiB; a runtime adds 50-250 MiB


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
prefix={sh_path(prefix)}
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
