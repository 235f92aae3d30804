"""Byte sizes: the one parser ("512MiB", "2 GB", "1048576") and formatter ("1.5 GiB").

Neutral: the CLI, constraint sets, the agent and the controller all use it, so it imports
nothing of theirs (and stays Python 3.9)."""

from __future__ import annotations

import re
from typing import Dict, Optional

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40

# Suffix (lower case) -> bytes. Decimal units are powers of 1000, binary ones of 1024; a bare
# k/m/g is decimal, as ``df -H`` and disk vendors count.
BYTE_UNITS: Dict[str, int] = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": KIB,
    "m": 1000 ** 2, "mb": 1000 ** 2, "mib": MIB,
    "g": 1000 ** 3, "gb": 1000 ** 3, "gib": GIB,
}

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")
_FIXED = {"KiB": KIB, "MiB": MIB, "GiB": GIB, "TiB": TIB}


def parse_bytes(text: str) -> int:
    """'512MiB', '2GB', '1048576' -> bytes; ValueError for anything else (negative sizes too)."""
    match = _SIZE.fullmatch(text)
    if not match or match.group(2).lower() not in BYTE_UNITS:
        raise ValueError(f"{text!r} is not a size (examples: 512MiB, 2GB, 1048576)")
    return int(float(match.group(1)) * BYTE_UNITS[match.group(2).lower()])


def format_bytes(n: float, unit: Optional[str] = None) -> str:
    """Bytes for people: '12 bytes', '3.5 KiB' ... '1.2 TiB', the largest unit that keeps the
    figure at 1 or more; ``unit`` ('KiB', 'MiB', 'GiB', 'TiB') fixes the unit, e.g. to line up
    figures that are compared ('memory.peak <= 512.0 MiB')."""
    if unit is not None:
        return f"{n / _FIXED[unit]:.1f} {unit}"
    for name in ("TiB", "GiB", "MiB", "KiB"):
        if abs(n) >= _FIXED[name]:
            return f"{n / _FIXED[name]:.1f} {name}"
    return f"{n:.0f} bytes" if isinstance(n, float) else f"{n} bytes"
