"""Is this agent running under an instruction-set emulator?

An agent can run on a board that does not exist: an arm64 root filesystem on an x86_64 machine,
its programs run by qemu-user through binfmt_misc (the test farm's emulated Raspberry Pi). Its
latencies, memory and CPU figures are then the emulator's, not the board's, and every result
says so (``environment.emulated``), as a simulated sensor reading says it is simulated.

qemu-user passes the host kernel's view through: ``uname -m`` says aarch64 (qemu answers
that), but /proc/cpuinfo still describes the host's CPU. That mismatch is the sign looked for
here. ``HILFARM_EMULATION`` overrides the check: a description (the agent is emulated, e.g.
``box64 on an Arm host``), or ``none`` (it is not).
"""

from __future__ import annotations

import os
import platform
import re
from typing import Optional

ENV = "HILFARM_EMULATION"

_ARM = ("aarch64", "arm64", "armv7l", "armv8l", "armv6l")
_X86 = ("x86_64", "amd64", "i686", "i386")


def _cpuinfo_arch(text: str) -> Optional[str]:
    """The CPU family /proc/cpuinfo describes: 'x86' (vendor_id, flags with sse), 'arm'
    (CPU implementer / Features), else None."""
    if re.search(r"^vendor_id\s*:", text, re.M) or re.search(r"^flags\s*:.*\bsse\b", text, re.M):
        return "x86"
    if re.search(r"^CPU implementer\s*:", text, re.M) or re.search(r"^Features\s*:", text, re.M):
        return "arm"
    return None


def detect_emulation(machine: Optional[str] = None, cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """A description of the emulator this process runs under, or "" when it runs natively."""
    override = os.environ.get(ENV, "").strip()
    if override:
        return "" if override.lower() == "none" else f"{override} (set by ${ENV})"
    m = (machine or platform.machine()).lower()
    try:
        with open(cpuinfo_path, errors="replace") as f:
            cpu = _cpuinfo_arch(f.read(65536))
    except OSError:
        return ""
    if m in _ARM and cpu == "x86":
        return (f"qemu-user: this process runs as {m}, but {cpuinfo_path} describes an x86 CPU "
                f"(user-mode emulation through binfmt_misc); timings, memory and CPU figures are the emulator's")
    if m in _X86 and cpu == "arm":
        return (f"x86 emulation: this process runs as {m}, but {cpuinfo_path} describes an Arm CPU; "
                f"timings, memory and CPU figures are the emulator's")
    return ""
