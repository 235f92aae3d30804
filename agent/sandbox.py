"""Cut the benchmark process off the network before it loads a model.

A model file (or a runtime's custom op) is code from whoever uploaded it. Before it is loaded,
the benchmark process moves into a user namespace of its own and a network namespace with no
interface but a loopback that is down: it cannot reach the lab, the controller or the
internet, and it holds no capability outside its namespaces (so a root agent's child is not
root to the rest of the device). Linux allows this to unprivileged processes unless the
administrator turned user namespaces off; where it is not permitted the job still runs, and its
result says the process had network access and why.

It must run while the process has one thread: ``unshare(CLONE_NEWUSER)`` refuses a threaded
process, and importing numpy starts threads.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from typing import Optional

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def _unshare(flags: int) -> int:
    """0, or the errno of unshare(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) == 0:
        return 0
    return ctypes.get_errno() or errno.EPERM


def isolate_network() -> Optional[str]:
    """Move this process into new user and network namespaces. None when done, else why not
    (a sentence for the result's warnings)."""
    if not sys.platform.startswith("linux"):
        return f"the benchmark process has network access: network namespaces exist only on Linux, not {sys.platform}"
    try:
        err = _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        if err and os.geteuid() == 0:
            # User namespaces may be turned off; root can still take the network away.
            err = _unshare(CLONE_NEWNET)
    except (OSError, AttributeError) as exc:
        return f"the benchmark process has network access: unshare(2) is not available ({exc})"
    if err:
        return (f"the benchmark process has network access: unshare(CLONE_NEWUSER|CLONE_NEWNET) was refused "
                f"({os.strerror(err)}); allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                "user.max_user_namespaces > 0) to isolate it")
    return None
