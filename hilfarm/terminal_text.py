"""Text that came from a device or a runtime, made fit to store and to print.

Runtimes colour their logs and draw progress bars; the tail of a child's output that a failure
carries would otherwise keep those escape sequences, repaint the reader's terminal and turn up
as garbage in JSON and JUnit. The controller strips them before it stores a failure, and the
CLI again before it shows one (for results stored before it did).
"""

from __future__ import annotations

import re

_ESCAPES = re.compile(
    r"""
      \x1b\[[0-?]*[ -/]*[@-~]            # CSI: colours, cursor movement, erase line
    | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)  # OSC: window titles, hyperlinks
    | \x1b[PX^_][^\x1b]*\x1b\\           # DCS, SOS, PM, APC strings
    | \x1b[@-Z\\-_]                      # the other two-byte escapes
    | \x9b[0-?]*[ -/]*[@-~]              # CSI as one 8-bit byte
    """,
    re.VERBOSE,
)
# Control characters a terminal acts on; tab and newline stay.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def strip_terminal_escapes(text: str) -> str:
    """``text`` without escape sequences or control characters. A line rewritten with carriage
    returns (a progress bar) keeps what a terminal would have shown last."""
    if not text:
        return text
    text = _ESCAPES.sub("", text).replace("\r\n", "\n")
    if "\r" in text:
        text = "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))
    return _CONTROL.sub("", text)
