"""What does an idle agent cost its device? Resident memory and CPU of the agent process while
it is registered and waiting for jobs (long-polling the controller, heartbeating). On a 1 GB
Raspberry Pi the agent's own memory is taken from the model under test.

    targets: idle VmRSS <= 60 MB; CPU time / wall time <= 0.5 % of one core

    .venv/bin/python benchmarks/agent_footprint.py [--seconds 30] [--profile local] [--json]
    .venv/bin/python benchmarks/agent_footprint.py --pid PID [--seconds 30]   # an agent already running

Without --pid it starts a controller (`hilfarm controller serve`) and an agent
(`hilfarm agent run`) as child processes, the way a device runs one, waits until the agent has
registered and its start-up is over, then samples /proc/PID/status (VmRSS, VmHWM) and
/proc/PID/stat (user + system time) of the agent over the window. With --pid it measures that
process (e.g. the agent inside the emulated board, where the figures are qemu's: labelled).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _farm import HILFARM, FarmProcess, scratch_dir  # noqa: E402

RSS_TARGET_BYTES = 60 * 1000 * 1000
CPU_TARGET = 0.005


def status(pid: int) -> Dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0]) * 1024
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the line (1-based), 11 and 12 after the comm.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(pid: int, seconds: float) -> Dict[str, float]:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    rss_max = 0
    while time.monotonic() - t0 < seconds:
        rss_max = max(rss_max, status(pid).get("VmRSS", 0))
        time.sleep(0.5)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    s = status(pid)
    return {"rss_bytes": s.get("VmRSS", 0), "rss_max_bytes": max(rss_max, s.get("VmRSS", 0)),
            "hwm_bytes": s.get("VmHWM", 0), "cpu_fraction": (c1 - c0) / (t1 - t0), "seconds": t1 - t0}


def _wait_registered(address: str, agent_id: str, timeout: float = 120) -> None:
    from hilfarm.client import FarmClient

    deadline = time.monotonic() + timeout
    with FarmClient(address) as client:
        while time.monotonic() < deadline:
            if any(d.agent_id == agent_id and d.state == "idle" for d in client.list_devices()):
                return
            time.sleep(0.2)
    raise TimeoutError(f"agent {agent_id} did not register within {timeout:g} s")


def run_local(profile: str, seconds: float, settle: float) -> Dict[str, float]:
    work = scratch_dir("footprint")
    farm = FarmProcess(["controller", "serve", "--bind", "127.0.0.1:0"], work / "controller")
    log = (work / "agent.log").open("wb")
    agent: Optional[subprocess.Popen] = None
    try:
        agent = subprocess.Popen(HILFARM + ["--controller", farm.address, "agent", "run", "--profile", profile,
                                            "--data-dir", str(work / "agent"), "--agent-id", "footprint",
                                            *(["--allow-root"] if os.geteuid() == 0 else [])],
                                 stdout=log, stderr=subprocess.STDOUT)
        _wait_registered(farm.address, "footprint")
        time.sleep(settle)  # start-up (the runtime probe's child, first long-poll) is over
        return measure(agent.pid, seconds)
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=30)
        log.close()
        farm.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=3.0, help="Seconds after registration before measuring.")
    ap.add_argument("--profile", default="local")
    ap.add_argument("--pid", type=int, default=None, help="Measure this running agent instead of starting one.")
    ap.add_argument("--label", default="", help="Printed with the figures (e.g. 'emulated rpi5: qemu-user').")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    figures = measure(args.pid, args.seconds) if args.pid else run_local(args.profile, args.seconds, args.settle)
    figures["rss_target_bytes"] = RSS_TARGET_BYTES
    figures["cpu_target_fraction"] = CPU_TARGET
    figures["label"] = args.label
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        label = f" [{args.label}]" if args.label else ""
        print(f"idle agent{label} over {figures['seconds']:.0f} s: VmRSS {figures['rss_bytes'] / 1e6:.1f} MB "
              f"(max {figures['rss_max_bytes'] / 1e6:.1f}, VmHWM {figures['hwm_bytes'] / 1e6:.1f}; target <= "
              f"{RSS_TARGET_BYTES / 1e6:.0f} MB), CPU {figures['cpu_fraction'] * 100:.2f} % of a core "
              f"(target <= {CPU_TARGET * 100:.1f} %)")
    ok = figures["rss_bytes"] <= RSS_TARGET_BYTES and figures["cpu_fraction"] <= CPU_TARGET
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
