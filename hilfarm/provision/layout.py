"""Where provisioning puts things on the device, and the error every part raises."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

DEFAULT_PREFIX = "~/.local/share/hilfarm"
UNIT_NAME = "hilfarm-agent.service"


class ProvisionError(Exception):
    """Provisioning cannot go on; the message says what is wrong and with which machine."""


def sh_path(path: str) -> str:
    """A device path as a shell word: '~/x' and relative paths are taken from $HOME."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        path = path[2:]
    elif path.startswith("/"):
        return shlex.quote(path)
    return '"$HOME"/' + shlex.quote(path)


@dataclass
class Layout:
    prefix: str  # absolute, on the device
    home: str

    @property
    def venv(self) -> str:
        return f"{self.prefix}/agent-venv"

    @property
    def hilfarm(self) -> str:
        return f"{self.venv}/bin/hilfarm"

    @property
    def env_file(self) -> str:
        return f"{self.prefix}/agent.env"

    @property
    def data_dir(self) -> str:
        return f"{self.prefix}/agent"

    @property
    def uploads(self) -> str:
        return f"{self.prefix}/uploads"

    @property
    def log(self) -> str:
        return f"{self.prefix}/agent.log"

    @property
    def pid(self) -> str:
        return f"{self.prefix}/agent.pid"

    @property
    def unit(self) -> str:
        return f"{self.home}/.config/systemd/user/{UNIT_NAME}"
