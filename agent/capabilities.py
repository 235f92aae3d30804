"""What this device can do: runtimes and their versions, cores, memory, OS.

Probing a runtime imports it; a runtime that fails to import (a missing package, or
tflite-runtime built for numpy 1 under numpy 2: "_ARRAY_API not found") is reported absent
with the reason, and the agent goes on.

The agent probes in a child process (``python -m hilfarm.agent.capabilities``): importing
ONNX Runtime, a TFLite interpreter and numpy costs ~60 MB of resident memory that the agent
would otherwise keep for its whole life, taken from the models it measures.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

from hilfarm.agent import runtimes
from hilfarm.agent.results import Capabilities, RuntimeInfo

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


PROBE_TIMEOUT_SECONDS = 300.0  # importing the runtimes under emulation takes a while


def probe_capabilities_in_child(allowed: Optional[Sequence[str]] = None, plugins: Sequence[str] = (),
                                timeout: float = PROBE_TIMEOUT_SECONDS) -> Capabilities:
    """probe_capabilities in a fresh interpreter, so this process never imports the runtimes.

    A runtime whose import kills the interpreter (an abort in its native code) cannot take the
    others with it: when the probe of all of them dies, each is probed in a child of its own,
    and the one that dies is reported absent with how it died."""
    names = list(allowed) if allowed else sorted(runtimes.registered_runtimes())
    try:
        return _probe_child(names, plugins, timeout)
    except _ProbeDied:
        pass
    caps: Optional[Capabilities] = None
    found: List[RuntimeInfo] = []
    absent: Dict[str, str] = {}
    for name in names:
        try:
            one = _probe_child([name], plugins, timeout)
        except _ProbeDied as exc:
            absent[name] = str(exc)
            continue
        caps = caps or one
        found.extend(one.runtimes)
        absent.update(one.absent)
    if caps is None:
        caps = probe_capabilities([])  # the machine's figures, with no runtime imported
    caps.runtimes, caps.absent = found, absent
    return caps


class _ProbeDied(Exception):
    pass


def _probe_child(names: Sequence[str], plugins: Sequence[str], timeout: float) -> Capabilities:
    command = [sys.executable, "-m", "hilfarm.agent.capabilities"]
    for name in names:
        command += ["--allowed", name]
    for module in plugins:
        command += ["--plugin", module]
    # `python -m` puts the working directory first on sys.path: started in a checkout (or any
    # folder holding a `hilfarm/`), that folder would shadow the installed package.
    with tempfile.TemporaryDirectory(prefix="hilfarm-probe-") as empty:
        proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=empty)
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.decode("utf-8", "replace").strip().splitlines() if ln.strip()][-4:]
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        raise _ProbeDied(f"importing it killed the probe process ({how}): " + " / ".join(tail))
    doc = json.loads(proc.stdout.decode("utf-8"))
    caps = Capabilities(**{k: v for k, v in doc.items() if k not in ("runtimes",)})
    caps.runtimes = [RuntimeInfo(**r) for r in doc.get("runtimes", [])]
    return caps


def _main(argv: List[str]) -> int:
    import argparse
    import dataclasses

    ap = argparse.ArgumentParser(prog="python -m hilfarm.agent.capabilities",
                                 description="Print this device's capabilities as JSON.")
    ap.add_argument("--allowed", action="append", default=None)
    ap.add_argument("--plugin", action="append", default=[])
    args = ap.parse_args(argv)
    runtimes.load_plugins(args.plugin)
    runtimes.load_plugins()
    caps = probe_capabilities(args.allowed)
    print(json.dumps(dataclasses.asdict(caps)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
