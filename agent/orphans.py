"""No benchmark child outlives its agent.

A child measures only while nothing else of the farm runs on the device. If the agent dies
(kill -9, a crash, the OOM killer), the kernel kills the child too (child.die_with_parent sets
PR_SET_PDEATHSIG). Where that is not available, or when the agent is gone before the child
asked, the record kept here lets the next agent end the leftover: every running child is a
small JSON file ``<data dir>/children/<pid>.json`` with its pid, the kernel's start time of
that pid (so a reused pid is never killed) and its work directory. A starting agent calls
:meth:`ChildRegistry.sweep`, which kills each recorded child still alive (its whole process
group: the child leads its own session), removes its work directory, and empties the work
root of anything left from before.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import List, Optional, Union

log = logging.getLogger("hilfarm.agent")

CHILD_MODULE = "hilfarm.agent.child"


def process_start_ticks(pid: int, proc: Union[str, Path] = "/proc") -> Optional[int]:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), None if gone."""
    try:
        text = (Path(proc) / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = text.rsplit(")", 1)[1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _cmdline(pid: int, proc: Union[str, Path] = "/proc") -> str:
    try:
        return (Path(proc) / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


class ChildRegistry:
    """The benchmark children an agent is running, kept on disk under ``data_dir``."""

    def __init__(self, data_dir: Union[str, Path], proc: Union[str, Path] = "/proc") -> None:
        self.dir = Path(data_dir) / "children"
        self.work_root = Path(data_dir) / "work"
        self.proc = Path(proc)
        self.dir.mkdir(parents=True, exist_ok=True)

    def add(self, pid: int, workdir: str) -> None:
        record = {"pid": pid, "start_ticks": process_start_ticks(pid, self.proc), "workdir": workdir}
        tmp = self.dir / f"{pid}.json.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.dir / f"{pid}.json")

    def remove(self, pid: int) -> None:
        try:
            (self.dir / f"{pid}.json").unlink()
        except FileNotFoundError:
            pass

    def sweep(self, timeout: float = 5.0) -> List[str]:
        """End the children a previous agent left running and remove their work. Returns one
        line per thing done, for the log."""
        done: List[str] = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                pid = int(record["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
                continue
            ticks = process_start_ticks(pid, self.proc)
            same = ticks is not None and ticks == record.get("start_ticks") and CHILD_MODULE in _cmdline(pid, self.proc)
            if same:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                deadline = time.monotonic() + timeout
                while process_start_ticks(pid, self.proc) == ticks and time.monotonic() < deadline:
                    time.sleep(0.02)
                done.append(f"ended benchmark process {pid} left running by a previous agent")
            workdir = record.get("workdir")
            if workdir and os.path.isdir(workdir):
                shutil.rmtree(workdir, ignore_errors=True)
                done.append(f"removed {workdir}")
            path.unlink(missing_ok=True)
        if self.work_root.is_dir():
            for entry in sorted(self.work_root.iterdir()):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                done.append(f"removed {entry}")
        return done
