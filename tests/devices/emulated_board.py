"""The emulated Raspberry Pi OS board: the arm64 bullseye root filesystem built by
scripts/emulated-rpi.sh, booted as far as a device needs to be for the farm: an OpenSSH server
on a loopback port, with everything running as aarch64 code under qemu-user.

The cached root filesystem is never changed: the board runs on an overlay (the cache as the
lower layer, a temporary directory as the upper one), in its own mount, PID and UTS namespaces
(`unshare`), chrooted. /proc is the namespace's own, /sys this machine's (ONNX Runtime reads
the CPU list there; the agent's sensors read the recorded tree instead), /tmp and /run are fresh tmpfs, the
wheelhouse is bind-mounted read-only at /srv/wheelhouse, and the recorded Raspberry Pi 5 tree
(tests/fixtures) is copied to /opt/hilfarm-recorded/rpi5. The board shares this machine's
network namespace, so its sshd listens on 127.0.0.1 and its agent dials the controller there.
Stopping the board kills its PID namespace: sshd and everything started over SSH (the agent)
end with it. Needs root (mounts, namespaces, chroot).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
RECORDED = "/opt/hilfarm-recorded/rpi5"
WHEELHOUSE = "/srv/wheelhouse"
HOSTNAME = "rpi5-emulated"

_BOOT = r"""
set -eu
lower=$1 upper=$2 work=$3 merged=$4 wheelhouse=$5
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$merged"
mount -t proc proc "$merged/proc"
mount -t sysfs sysfs "$merged/sys"
mount --rbind /dev "$merged/dev"
mount -t tmpfs -o mode=1777 tmpfs "$merged/tmp"
mount -t tmpfs tmpfs "$merged/run"
mkdir -p "$merged/run/sshd" "$merged/srv/wheelhouse"
mount --bind "$wheelhouse" "$merged/srv/wheelhouse"
mount -o remount,bind,ro "$merged/srv/wheelhouse"
hostname rpi5-emulated
exec chroot "$merged" /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config.hilfarm
"""


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies, even if the test is
    killed before its teardown runs, so a board never outlives the tests (unshare --kill-child
    then takes the whole namespace down)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EmulatedBoard:
    rootfs: Path
    wheelhouse: Path
    work: Path
    port: int = 0
    client_key: Path = field(default_factory=Path)
    proc: Optional[subprocess.Popen] = None
    log: Path = field(default_factory=Path)

    user = "pi"

    @property
    def merged(self) -> Path:
        return self.work / "merged"

    def host_key_line(self) -> str:
        kind, b64 = (self.rootfs / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {b64}\n"

    def start(self) -> "EmulatedBoard":
        upper, ovl_work = self.work / "upper", self.work / "ovl-work"
        for d in (upper, ovl_work, self.merged):
            d.mkdir(parents=True, exist_ok=True)
        self.client_key = self.work / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hilfarm-test", "-f",
                        str(self.client_key)], check=True)
        ssh = upper / "etc/ssh"
        ssh.mkdir(parents=True)
        (ssh / "hilfarm_authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        recorded = upper / RECORDED.lstrip("/")
        recorded.mkdir(parents=True)
        shutil.copytree(REPO / "tests/fixtures/sysfs/rpi5", recorded / "sysfs", symlinks=True)
        shutil.copytree(REPO / "tests/fixtures/commands/rpi5", recorded / "commands")
        self.log = self.work / "sshd.log"
        for _ in range(3):  # the free port may be taken before sshd binds it
            self.port = free_port()
            (ssh / "sshd_config.hilfarm").write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey /etc/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /etc/ssh/hilfarm_authorized_keys
UsePAM no
StrictModes no
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--pid", "--uts", "--fork", "--kill-child", "--propagation", "private",
                 "sh", "-c", _BOOT, "boot", str(self.rootfs), str(upper), str(ovl_work), str(self.merged),
                 str(self.wheelhouse)],
                stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent)
            if self._wait_for_banner():
                return self
            self.stop()
        raise RuntimeError(f"the emulated board's sshd did not start:\n{self.log.read_text()}")

    def _wait_for_banner(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.2)
        return False

    def pids(self) -> list:
        """Host pids of the processes running inside the board (their root is the overlay)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "root") == str(self.merged):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # unshare --kill-child: its child is the namespace's init; when init dies the
            # kernel kills every process of the namespace (sshd, the agent, its children).
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
