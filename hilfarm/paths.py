"""Where hilfarm keeps its data unless told: the one resolver for the CLI, the embedded farm,
the controller and the agent.

Neutral: the agent and the controller both use it, so it imports nothing of theirs (and stays
Python 3.9)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def default_data_dir() -> Path:
    """HILFARM_DATA_DIR, else the user data dir (e.g. ~/.local/share/hilfarm, or under
    $XDG_DATA_HOME). ``up`` and ``demo`` use it whole; ``controller serve`` its ``controller/``
    and ``agent run`` its ``agent/``, the layout ``up`` makes."""
    configured = os.environ.get("HILFARM_DATA_DIR", "").strip()
    return Path(configured).expanduser() if configured else Path(platformdirs.user_data_dir("hilfarm"))
