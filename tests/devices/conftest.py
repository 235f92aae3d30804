"""Fixtures of the device tests: the emulated Raspberry Pi OS board (scripts/emulated-rpi.sh
builds it; scripts/test-devices.sh runs these tests with HILFARM_EMULATED_ROOTFS and
HILFARM_EMULATED_WHEELHOUSE set). Without them the board tests skip, saying how to run them;
under HILFARM_DEVICE_TESTS=required (what test-devices.sh sets) they fail instead."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from .emulated_board import EmulatedBoard


def _missing(reason: str) -> None:
    if os.environ.get("HILFARM_DEVICE_TESTS") == "required":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def board() -> Iterator[EmulatedBoard]:
    rootfs = os.environ.get("HILFARM_EMULATED_ROOTFS")
    wheelhouse = os.environ.get("HILFARM_EMULATED_WHEELHOUSE")
    if not rootfs or not wheelhouse:
        _missing("the emulated Raspberry Pi board is not built: run bash scripts/test-devices.sh")
    if os.geteuid() != 0:
        _missing("the emulated board needs root (mounts, namespaces, chroot)")
    work = Path(tempfile.mkdtemp(prefix="hilfarm-board-"))
    b = EmulatedBoard(Path(rootfs), Path(wheelhouse), work).start()
    try:
        yield b
    finally:
        b.stop()
