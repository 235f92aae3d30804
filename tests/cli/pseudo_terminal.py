"""A command as a person sees it: run in a real pseudo-terminal (pexpect) of a given width, its
output rendered by a terminal emulator (pyte) into the screen they would read."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import pexpect
import pyte

ROWS = 100  # tall enough that nothing scrolls off the emulated screen


def terminal_environment(**extra: str) -> Dict[str, str]:
    """This process's environment as a person's terminal has it: no colour or size overrides,
    a colour-capable TERM, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES", "FORCE_COLOR")}
    env.update(TERM="xterm-256color", **extra)
    return env


class Terminal:
    """``command`` in a pseudo-terminal ``cols`` wide; ``screen()`` is what it shows."""

    def __init__(self, command: Sequence[str], cols: int, env: Optional[Dict[str, str]] = None,
                 rows: int = ROWS) -> None:
        self.cols, self.rows = cols, rows
        self.child = pexpect.spawn(command[0], list(command[1:]), dimensions=(rows, cols), encoding="utf-8",
                                   env=env if env is not None else terminal_environment(), timeout=120)
        self.raw = ""

    def expect(self, pattern: str, timeout: float = 60) -> None:
        self.child.expect(pattern, timeout=timeout)
        self.raw += self.child.before + self.child.after

    def finish(self, timeout: float = 120) -> int:
        """Wait for the command to exit; its exit status."""
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.raw += self.child.before
        self.child.close()
        return self.child.exitstatus

    def screen(self) -> List[str]:
        screen = pyte.Screen(self.cols, self.rows)
        # A pty turns "\n" into "\r\n" (onlcr), which pyte expects.
        pyte.Stream(screen).feed(self.raw)
        return [line.rstrip() for line in screen.display if line.strip()]
