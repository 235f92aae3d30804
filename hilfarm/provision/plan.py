"""What to install on a probed device and in which order: the package (a wheel of this checkout
or a pip requirement), its extras, the profile files, agent.env, the unit or nohup start; and
what uninstalling removes."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

from hilfarm.provision.facts import DeviceFacts
from hilfarm.provision.layout import UNIT_NAME, Layout, ProvisionError
from hilfarm.provision.scripts import (env_file_text, nohup_start_script, render_user_unit, stop_script,
                                       system_unit_template, systemd_start_script)
from hilfarm.provision.ssh import RemoteHost

# The profile's preferred runtime -> the extra that installs it. TFLite gets ai-edge-litert:
# tflite-runtime stops at 2.14, has no wheels past Python 3.11 and needs numpy < 2.
RUNTIME_EXTRAS = {"onnxruntime": "onnx", "tflite": "litert", "null": ""}
KNOWN_EXTRAS = ("onnx", "tflite", "litert", "nvidia")


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


def agent_id_for(hostname: str, profile_name: str) -> str:
    """The id the agent would derive itself (hilfarm.agent.service), fixed here so both ends know it."""
    host = re.sub(r"[^A-Za-z0-9._-]+", "-", hostname).strip("-") or "device"
    return f"{host}-{profile_name}"


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


def load_local_profile(name_or_path: str, machine: str):
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
    profile, own_files = load_local_profile(request.profile, facts.machine)
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
