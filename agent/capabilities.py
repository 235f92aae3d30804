"""What this device can do: runtimes and their versions, cores, memory, OS.

Probing a runtime imports it; a runtime that fails to import (a missing package, or
tflite-runtime built for numpy 1 under numpy 2: "_ARRAY_API not found") is reported absent
with the reason, and the agent goes on.
"""

from __future__ import annotations

import logging
import os
import platform
from typing import Dict, Optional, Sequence

from hilfarm.agent import runtimes
from hilfarm.agent.results import Capabilities

log = logging.getLogger("hilfarm.agent")


def os_name(root: str = "/") -> str:
    """PRETTY_NAME from os-release, else the platform's system name."""
    for rel in ("etc/os-release", "usr/lib/os-release"):
        try:
            with open(os.path.join(root, rel)) as f:
                for line in f:
                    if line.startswith("PRETTY_NAME="):
                        return line.split("=", 1)[1].strip().strip('"')
        except OSError:
            continue
    return platform.system()


def system_info() -> Dict[str, str]:
    return {
        "os": os_name(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python_version": platform.python_version(),
    }


def memory_bytes() -> Optional[int]:
    try:
        import psutil  # type: ignore

        return int(psutil.virtual_memory().total)
    except Exception:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 0


def probe_capabilities(allowed: Optional[Sequence[str]] = None) -> Capabilities:
    """Probe every registered runtime (or only ``allowed``) and the machine."""
    info = system_info()
    caps = Capabilities(
        cpu_cores=usable_cores(),
        memory_bytes=memory_bytes() or 0,
        machine=info["machine"],
        os=info["os"],
        kernel=info["kernel"],
        python_version=info["python_version"],
    )
    for name, cls in sorted(runtimes.registered_runtimes().items()):
        if allowed is not None and name not in allowed:
            continue
        try:
            caps.runtimes.append(cls.probe())
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            caps.absent[name] = reason
            log.info("runtime %s is not available: %s", name, reason)
    return caps
