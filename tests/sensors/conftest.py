"""Fixture trees of real device layouts, copied so a test can rewrite readings between samples."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SYSFS = FIXTURES / "sysfs"
COMMANDS = FIXTURES / "commands"


class Device:
    """A copy of tests/fixtures/sysfs/<name> (root) and tests/fixtures/commands/<name> (cmds)."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.root = tmp / "sysfs" / name
        self.cmds = tmp / "commands" / name
        if (SYSFS / name).exists():
            shutil.copytree(SYSFS / name, self.root, symlinks=True)
        else:
            self.root.mkdir(parents=True)
        if (COMMANDS / name).exists():
            shutil.copytree(COMMANDS / name, self.cmds, symlinks=True)
        else:
            self.cmds.mkdir(parents=True)

    def write(self, rel: str, value: object) -> None:
        """Rewrite a sysfs value the way the kernel formats it (value + newline). A kernel
        attribute is read whole or not at all, so the new value replaces the file in one step:
        a sensor reading it from another thread never sees it half written (empty)."""
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p = p.resolve()  # a symlinked attribute keeps its link: the file it points to changes
        tmp = p.with_name(p.name + ".writing")
        tmp.write_text(f"{value}\n")
        os.replace(tmp, p)

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink()

    def command_output(self, name: str, text: str) -> None:
        (self.cmds / name).write_text(text)

    def use_variant(self, variant: str, as_name: str) -> None:
        shutil.copyfile(self.cmds / "variants" / variant, self.cmds / as_name)


@pytest.fixture
def device(tmp_path):
    def make(name: str) -> Device:
        return Device(name, tmp_path)
    return make
