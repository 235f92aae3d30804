"""SSH to a device (paramiko): host-key checking against known_hosts, login with the user's
keys or agent, remote commands and file uploads.

Every failure to reach or log in to a device is an :class:`SSHError` whose message names the
host and port and says what to check, so `hilfarm device provision` can print it as is.
Host keys are checked by default; an unknown key is refused unless the caller trusts it on
first use (it is then added to the known_hosts file), and a key that differs from the known
one is always refused, before any credential or data is sent.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:
    import paramiko

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
DEFAULT_CONNECT_TIMEOUT = 10.0


class SSHError(Exception):
    """The device could not be reached, refused the login, or showed an unexpected host key."""


class RemoteCommandError(Exception):
    """A command on the device exited with a non-zero status."""

    def __init__(self, host: str, what: str, result: "CommandResult") -> None:
        self.host, self.what, self.result = host, what, result
        tail = result.output_tail()
        super().__init__(f"{what} failed on {host} (exit status {result.status})" + (f":\n{tail}" if tail else ""))


@dataclass
class CommandResult:
    status: int
    stdout: str
    stderr: str

    def output_tail(self, lines: int = 25) -> str:
        text = "\n".join(part for part in (self.stdout.rstrip(), self.stderr.rstrip()) if part)
        return "\n".join(text.splitlines()[-lines:])


def require_paramiko() -> Any:
    """The paramiko module, imported on first use (it takes a while: every `hilfarm` command
    would pay for it otherwise)."""
    try:
        import paramiko
    except ImportError:
        raise SSHError("provisioning over SSH needs paramiko on this machine: pip install 'hilfarm[provision]'") from None
    return paramiko


def parse_target(text: str) -> Tuple[Optional[str], str]:
    """'USER@HOST' or 'HOST' -> (user or None, host); '[::1]' loses its brackets."""
    user, sep, host = text.rpartition("@")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or (sep and not user):
        raise ValueError(f"{text!r} is not USER@HOST")
    return (user or None), host


def fingerprint(key: "paramiko.PKey") -> str:
    """OpenSSH's form: 'ssh-ed25519 SHA256:base64' (what `ssh-keygen -lf` prints)."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


def known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH files a host key under: 'host', or '[host]:port' off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def _append_known_host(path: Path, name: str, key: "paramiko.PKey") -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(f"{name} {key.get_name()} {key.get_base64()}\n")


class _HostKeyPolicy:
    """Unknown host key: refuse (saying how to trust it), or with ``accept_new`` add it to
    ``known_hosts`` (trust on first use, as `ssh -o StrictHostKeyChecking=accept-new`)."""

    def __init__(self, known_hosts: Path, accept_new: bool, port: int) -> None:
        self.known_hosts, self.accept_new, self.port = known_hosts, accept_new, port
        self.added: Optional[str] = None

    def missing_host_key(self, client: "paramiko.SSHClient", hostname: str, key: "paramiko.PKey") -> None:
        if not self.accept_new:
            raise SSHError(
                f"{hostname} is not in {self.known_hosts} (it offered {fingerprint(key)}); compare that with "
                f"`ssh-keygen -lf /etc/ssh/ssh_host_{key.get_name().replace('ssh-', '')}_key.pub` on the device, "
                "then pass --accept-new-host-key to trust it (or log in once with ssh)")
        _append_known_host(self.known_hosts, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.added = fingerprint(key)


def _identity_files(explicit: Optional[Path], from_config: Sequence[str]) -> List[str]:
    files = [str(explicit.expanduser())] if explicit is not None else []
    for item in from_config:
        path = os.path.expanduser(item)
        if os.path.isfile(path) and path not in files:
            files.append(path)
    return files


class RemoteHost:
    """One logged-in SSH session to a device; ``label`` ('user@host:port') names it in messages."""

    def __init__(self, client: "paramiko.SSHClient", label: str, added_host_key: Optional[str] = None) -> None:
        self.client = client
        self.label = label
        self.added_host_key = added_host_key  # fingerprint trusted on first use, if one was
        self._sftp: Optional["paramiko.SFTPClient"] = None
        self._sftp_refused = False

    @classmethod
    def connect(
        cls,
        host: str,
        *,
        user: Optional[str] = None,
        port: Optional[int] = None,
        identity: Optional[Path] = None,
        known_hosts: Optional[Path] = None,
        accept_new_host_key: bool = False,
        timeout: float = DEFAULT_CONNECT_TIMEOUT,
        ssh_config: Optional[Path] = Path("~/.ssh/config"),
    ) -> "RemoteHost":
        """Log in as `ssh` would: ~/.ssh/config's HostName, Port, User and IdentityFile apply
        unless given here; keys from ``identity``, the ssh agent and ~/.ssh/id_* are tried."""
        paramiko = require_paramiko()
        config_path = ssh_config.expanduser() if ssh_config is not None else None
        settings: dict = {}
        if config_path is not None and config_path.is_file():
            settings = paramiko.SSHConfig.from_path(str(config_path)).lookup(host)
        address = settings.get("hostname", host)
        port = port or int(settings.get("port", 22))
        user = user or settings.get("user") or _local_user()
        known = (known_hosts or Path(settings.get("userknownhostsfile", str(DEFAULT_KNOWN_HOSTS)).split()[0])).expanduser()
        label = f"{user}@{host}:{port}"

        sock = _proxy(paramiko, settings, address, port, config_path)
        client = paramiko.SSHClient()
        if known.is_file():
            try:
                client.load_host_keys(str(known))
            except (OSError, paramiko.SSHException) as exc:
                raise SSHError(f"cannot read the known hosts file {known}: {exc}") from None
        policy = _HostKeyPolicy(known, accept_new_host_key, port)
        client.set_missing_host_key_policy(policy)  # type: ignore[arg-type]
        try:
            client.connect(
                address, port=port, username=user,
                key_filename=_identity_files(identity, settings.get("identityfile", [])) or None,
                allow_agent=True, look_for_keys=True,
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, sock=sock,
            )
        except SSHError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            name = known_hosts_name(address, port)
            raise SSHError(
                f"the host key of {label} has CHANGED: {known} has {fingerprint(exc.expected_key)}, the device "
                f"offered {fingerprint(exc.key)}. Nothing was sent. If the device was reinstalled, remove the "
                f"old key with `ssh-keygen -f {known} -R '{name}'`; otherwise someone may be intercepting "
                "the connection") from None
        except paramiko.PasswordRequiredException as exc:
            client.close()
            raise SSHError(f"{label}: the key is encrypted ({exc}); load it into your ssh agent with "
                           "`ssh-add KEY` and try again") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            tried = (f"--identity {identity}" if identity is not None else "the ssh agent and ~/.ssh/id_*")
            raise SSHError(
                f"{label} refused the login ({exc}; tried {tried}): put your public key in ~{user}/.ssh/"
                f"authorized_keys on the device (`ssh-copy-id -p {port} {user}@{address}`) or pass "
                "--identity FILE") from None
        except (socket.timeout, TimeoutError) as exc:
            client.close()
            raise SSHError(f"cannot reach {label}: timed out after {timeout:g} s ({exc or 'no answer'}); is the "
                           "device on and the address right?") from None
        except socket.gaierror as exc:
            client.close()
            raise SSHError(f"cannot reach {label}: unknown host {address!r} ({exc.strerror})") from None
        except (paramiko.ssh_exception.NoValidConnectionsError, OSError) as exc:
            client.close()
            why = getattr(exc, "strerror", None) or str(exc)
            raise SSHError(f"cannot reach {label}: {why}; is sshd running on the device and is the port "
                           "(--port) right?") from None
        except paramiko.SSHException as exc:
            client.close()
            raise SSHError(f"{label}: SSH failed: {exc} (is this an SSH server?)") from None
        return cls(client, label, added_host_key=policy.added)

    # ------------------------------------------------------------ commands

    def run(self, script: str, *, timeout: float = 600.0, stdin: Optional[bytes] = None) -> CommandResult:
        """Run a POSIX sh script on the device (whatever the user's login shell is)."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SSHError(f"the SSH connection to {self.label} was lost")
        chan = transport.open_session(timeout=DEFAULT_CONNECT_TIMEOUT)
        try:
            chan.exec_command("sh -c " + shlex.quote(script))
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out: List[bytes] = []
            err: List[bytes] = []
            deadline = time.monotonic() + timeout
            # Both streams are drained as they come: a command that fills one while we wait on
            # the other would otherwise stall on the channel window.
            while True:
                busy = False
                while chan.recv_ready():
                    out.append(chan.recv(65536))
                    busy = True
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(65536))
                    busy = True
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    raise SSHError(f"a command on {self.label} did not finish within {timeout:g} s:\n{script}")
                if not busy:
                    chan.status_event.wait(0.02)
            status = chan.recv_exit_status()
        finally:
            chan.close()
        return CommandResult(status, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace"))

    def check(self, script: str, what: str, *, timeout: float = 600.0) -> CommandResult:
        result = self.run(script, timeout=timeout)
        if result.status != 0:
            raise RemoteCommandError(self.label, what, result)
        return result

    # ------------------------------------------------------------ files

    def _sftp_client(self) -> Optional["paramiko.SFTPClient"]:
        if self._sftp is None and not self._sftp_refused:
            try:
                self._sftp = self.client.open_sftp()
            except require_paramiko().SSHException:
                self._sftp_refused = True  # e.g. dropbear without sftp-server: fall back to cat
        return self._sftp

    def write_file(self, path: str, data: Union[bytes, Path], mode: int = 0o644) -> None:
        """Write ``data`` (bytes, or a local file) to the absolute ``path`` on the device,
        atomically, with ``mode`` set before any byte is written."""
        tmp = f"{path}.part"
        sftp = self._sftp_client()
        if sftp is not None:
            try:
                with sftp.open(tmp, "wb") as f:
                    f.chmod(mode)
                    f.set_pipelined(True)
                    if isinstance(data, Path):
                        with open(data, "rb") as src:
                            for block in iter(lambda: src.read(1 << 20), b""):
                                f.write(block)
                    else:
                        f.write(data)
                sftp.posix_rename(tmp, path)
                return
            except IOError as exc:
                raise SSHError(f"cannot write {path} on {self.label}: {exc}") from None
        payload = data.read_bytes() if isinstance(data, Path) else data
        q, qt = shlex.quote(path), shlex.quote(tmp)
        result = self.run(f"umask 077 && cat > {qt} && chmod {mode:o} {qt} && mv -f {qt} {q}", stdin=payload)
        if result.status != 0:
            raise SSHError(f"cannot write {path} on {self.label}: {result.output_tail()}")

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()

    def __enter__(self) -> "RemoteHost":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _proxy(paramiko: Any, settings: dict, address: str, port: int, config_path: Optional[Path]) -> Any:
    """ProxyCommand, or ProxyJump through the system's ssh (with the same config file), from
    ~/.ssh/config: devices in a lab are often reached through a bastion."""
    command = settings.get("proxycommand", "")
    if command and command.lower() != "none":
        return paramiko.ProxyCommand(command)
    jump = settings.get("proxyjump", "")
    if not jump or jump.lower() == "none":
        return None
    hops = [h.strip() for h in jump.split(",") if h.strip()]
    args = ["ssh"] + (["-F", str(config_path)] if config_path is not None and config_path.is_file() else [])
    if len(hops) > 1:
        args += ["-J", ",".join(hops[:-1])]
    args += ["-W", f"{address}:{port}", hops[-1]]
    return paramiko.ProxyCommand(" ".join(shlex.quote(a) for a in args))


def _local_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no login name (a container without passwd entry)
        return "root"
