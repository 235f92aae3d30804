"""A real OpenSSH server on 127.0.0.1 that makes this machine the "device".

The test starts /usr/sbin/sshd itself as a child process (no PAM, its own host key, config,
pid file and authorized_keys in a temporary directory, a random free port), logging in as the
user running the tests. `scripts/ensure-sshd.sh` installs Debian's openssh-server; without it
the tests skip with the reason, or fail under CI=true.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
HILFARM = [sys.executable, "-m", "hilfarm.cli"]


def _sshd_binary() -> Optional[str]:
    found = shutil.which("sshd") or ("/usr/sbin/sshd" if os.access("/usr/sbin/sshd", os.X_OK) else None)
    return found if found and shutil.which("ssh-keygen") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hilfarm-test", "-f", str(path)],
                   check=True)
    return path


@dataclass
class Sshd:
    port: int
    host_key: Path  # private; .pub beside it
    client_key: Path  # authorized
    root: Path
    proc: subprocess.Popen
    log: Path

    @property
    def user(self) -> str:
        import getpass

        return getpass.getuser()

    def known_hosts_line(self, pub: Optional[Path] = None) -> str:
        kind, b64 = (pub or self.host_key.with_suffix(".pub")).read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {b64}\n"


def _wait_for_banner(port: int, proc: subprocess.Popen, log: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on port {port}:\n{log.read_text()}")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[Sshd]:
    binary = _sshd_binary()
    if binary is None:
        reason = "no sshd/ssh-keygen (run scripts/ensure-sshd.sh)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("sshd")
    host_key = keygen(root / "host_key")
    client_key = keygen(root / "client_key")
    (root / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    if os.geteuid() == 0:
        # Debian's sshd refuses to start as root without its privilege separation directory.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = root / "sshd.log"
    last_error: Optional[Exception] = None
    for _ in range(3):  # the free port may be taken between choosing it and sshd binding it
        port = free_port()
        (root / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
UsePAM no
StrictModes no
# Tests run as root here: allow it, with a key only.
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
        proc = subprocess.Popen([binary, "-D", "-e", "-f", str(root / "sshd_config")],
                                stdout=log.open("ab"), stderr=subprocess.STDOUT)
        try:
            _wait_for_banner(port, proc, log)
            break
        except RuntimeError as exc:
            last_error = exc
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    else:
        raise RuntimeError(f"could not start sshd: {last_error}")
    try:
        yield Sshd(port, host_key, client_key, root, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def cli_home(tmp_path: Path) -> Path:
    """HOME for the CLI: no ~/.ssh/config, keys, known_hosts or ssh agent of the person
    running the tests takes part."""
    home = tmp_path / "home"
    home.mkdir()
    return home


def run_cli(args: List[str], home: Path, *, timeout: float = 240, env_extra: Optional[dict] = None
            ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "HILFARM_TOKEN", "HILFARM_CONTROLLER")}
    env.update(HOME=str(home), COLUMNS="200", **(env_extra or {}))
    return subprocess.run(HILFARM + args, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def base_python() -> str:
    """The interpreter this test environment's venv was made from: the device's Python, so
    wheels of this environment fit it."""
    return getattr(sys, "_base_executable", sys.executable)
