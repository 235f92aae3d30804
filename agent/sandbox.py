"""Keep what a benchmark process loads away from the network and from the agent's own files.

A model file (or a runtime's custom op, or an allow-listed delegate) is code from whoever
uploaded it. Before anything is loaded, the benchmark process moves into namespaces of its own:

- a user namespace: it holds no capability outside it, so even a root agent's child is not root
  to the rest of the device;
- a network namespace with only a loopback that is down: it cannot reach the lab, the
  controller or the internet;
- a mount namespace in which the agent's data directory (its credential, other projects' cached
  models) is covered by an empty read-only tmpfs; the job's own model and inputs stay reachable
  through bind mounts at paths in the job's work directory.

Linux allows this to unprivileged processes unless an administrator turned user namespaces
off; where it is refused, the job still runs and its result says what the process could reach
and why. ``plan`` runs in the agent (it prepares the bind targets); ``enter`` runs first thing
in the benchmark process, while it has one thread (``unshare(CLONE_NEWUSER)`` refuses a
threaded process, and importing numpy starts threads).

``protect_agent`` makes the agent itself non-dumpable, so that no process without privileges
(a benchmark process included) can read its memory or environment through /proc.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_DUMPABLE = 4


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> int:
    """0, or the errno of unshare(2)."""
    if _libc().unshare(ctypes.c_int(flags)) == 0:
        return 0
    return ctypes.get_errno() or errno.EPERM


def _mount(source: Optional[str], target: str, fstype: Optional[str], flags: int, data: Optional[str] = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    if _libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno() or errno.EPERM
        raise OSError(err, f"mount {source or fstype} on {target}: {os.strerror(err)}")


def protect_agent() -> None:
    """Make this process non-dumpable (Linux): /proc/<pid>/environ, mem and friends become
    root's, so a benchmark process cannot read the tokens the agent was started with."""
    if sys.platform.startswith("linux"):
        try:
            _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def plan(work_dir: str, private_dir: Optional[str], files: Dict[str, Optional[str]]) -> Dict[str, Any]:
    """What the benchmark process should hide and keep: ``files`` maps a spec key (model_path,
    inputs_path) to a file it must still read; each gets an empty placeholder in ``work_dir``
    to be bound over."""
    binds: List[Tuple[str, str, str]] = []
    for key, path in files.items():
        if path:
            target = os.path.join(work_dir, f"sandboxed-{key}")
            open(target, "wb").close()
            binds.append((key, os.path.abspath(path), target))
    hide: List[str] = []
    if private_dir:
        private = os.path.realpath(private_dir)
        work = os.path.realpath(work_dir)
        if not (work == private or work.startswith(private + os.sep)):
            hide.append(private)
    return {"hide": hide, "binds": binds}


def enter(sandbox: Optional[Dict[str, Any]]) -> Tuple[List[str], Dict[str, str]]:
    """Enter the namespaces. Returns (notes for the result's warnings, spec keys whose files are
    now read at other paths). Never raises: an isolation the OS refuses becomes a note."""
    sandbox = sandbox or {"hide": [], "binds": []}
    if not sys.platform.startswith("linux"):
        return [f"the benchmark process has network access and can read the agent's files: namespaces exist "
                f"only on Linux, not {sys.platform}"], {}
    try:
        err = _unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS)
        if err and os.geteuid() == 0:
            # User namespaces may be turned off; root can still take the network and the files away.
            err = _unshare(CLONE_NEWNET | CLONE_NEWNS)
    except (OSError, AttributeError) as exc:
        return [f"the benchmark process has network access and can read the agent's files: unshare(2) is not "
                f"available ({exc})"], {}
    if err:
        return [f"the benchmark process has network access and can read the agent's files: "
                f"unshare(CLONE_NEWUSER|CLONE_NEWNET|CLONE_NEWNS) was refused ({os.strerror(err)}); allow "
                "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                "user.max_user_namespaces > 0) to isolate it"], {}
    moved: Dict[str, str] = {}
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the device
        for key, source, target in sandbox.get("binds", []):
            _mount(source, target, None, MS_BIND)
            moved[key] = target
        for directory in sandbox.get("hide", []):
            _mount("tmpfs", directory, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0500")
    except OSError as exc:
        return [f"the benchmark process can read the agent's files (it has no network): {exc}"], moved
    return [], moved
