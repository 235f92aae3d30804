"""Before a submission: can any agent the controller knows ever take these jobs?

A job for a profile no agent has registered (a typo such as ``--device locl``), or for a runtime,
execution provider or tag that no agent of its profile offers, would wait forever. ``submit``
asks here first and stops within seconds, naming what the farm does have; ``--queue`` skips the
check for devices that are not enrolled yet. Offline agents count: they may come back.
"""

from __future__ import annotations

import difflib
from typing import Dict, List, Sequence

from hilfarm.v1 import farm_pb2


def _names(values: Sequence[str]) -> str:
    return ", ".join(values) if values else "none"


def placement_problems(
    devices: Sequence[farm_pb2.Device],
    *,
    profiles: Sequence[str],
    runtimes: Dict[str, str],
    provider: str = "",
    tags: Sequence[str] = (),
) -> List[str]:
    """One sentence per thing no registered agent offers. ``runtimes``: model name -> the runtime
    its job needs."""
    problems: List[str] = []
    by_profile: Dict[str, List[farm_pb2.Device]] = {}
    for device in devices:
        by_profile.setdefault(device.device_profile, []).append(device)
    known = sorted(by_profile)
    for profile in dict.fromkeys(profiles):
        agents = by_profile.get(profile, [])
        if not agents:
            close = difflib.get_close_matches(profile, known, n=1)
            listed = ", ".join(f"{p} ({len(by_profile[p])} agent{'s' if len(by_profile[p]) > 1 else ''})"
                               for p in known) or "none"
            problems.append(
                f"no agent has registered with device profile {profile!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; profiles the farm has: {listed}."
            )
            continue
        offered = {}
        for agent in agents:
            for runtime in agent.capabilities.runtimes:
                offered.setdefault(runtime.name, []).append(runtime)
        has = [f"{name} {rs[0].version}".strip() for name, rs in sorted(offered.items()) if name != "null"]
        for model, runtime in runtimes.items():
            if runtime not in offered:
                problems.append(f"no agent of profile {profile!r} offers runtime {runtime} for {model} "
                                f"(they offer: {_names(has)}).")
            elif provider and not any(provider in r.execution_providers for r in offered[runtime]):
                providers = sorted({p for r in offered[runtime] for p in r.execution_providers})
                problems.append(f"no agent of profile {profile!r} offers execution provider {provider} "
                                f"for {runtime} (they offer: {_names(providers)}).")
        if tags and not any(set(tags) <= set(a.tags) for a in agents):
            present = sorted({t for a in agents for t in a.tags})
            problems.append(f"no agent of profile {profile!r} has every tag asked for ({', '.join(tags)}); "
                            f"their tags: {_names(present)}.")
    return list(dict.fromkeys(problems))
