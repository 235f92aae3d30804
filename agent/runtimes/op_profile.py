"""Per-operator profiles (``submit --profile-ops``): where an inference spends its time, node by
node, and which execution provider or delegate ran each node.

The profile is taken in the measured child *after* the timed phase and after the memory
figures are read, so profiling (which slows every node down and allocates its own buffers)
changes none of the job's other figures. Each runtime knows how to profile itself
(``Runtime.profile_ops``); this module holds what they share: the entry point the child
calls, and the parsers that turn a runtime's own output into :class:`OpProfile`:

* ONNX Runtime: the session profiler's Chrome-trace JSON (``SessionOptions.enable_profiling``).
  Every ``<node>_kernel_time`` event names the node, its op type and the provider that ran it.
  The first profiled inference is dropped as warm-up (it includes one-time allocations).
* TFLite ``benchmark_model --enable_op_profiling=true`` (phones): the "Operator-wise Profiling
  Info for Regular Benchmark Runs" table.
* The TFLite Python interpreter has no per-operator timer; it still tells which operators a
  delegate took over (``_get_ops_details``: a ``DELEGATE`` node replaces the operators whose
  outputs it produces), so a silent fallback to the CPU is visible without times.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from hilfarm.agent.results import OpProfile, OpTime

DEFAULT_RUNS = 10
MAX_RUNS = 1000
# The full trace goes to the controller with the result; past this it is left out (and said).
MAX_TRACE_BYTES = 32 * 1024 * 1024
CPU_PROVIDERS = ("CPUExecutionProvider", "CPU (builtin kernels)")


def profile_after_run(runtime: Any, runs: int) -> OpProfile:
    """What the child calls after the timed phase. Never raises: a profile that cannot be taken
    says why, and the job's measured figures stand."""
    runs = DEFAULT_RUNS if runs <= 0 else min(runs, MAX_RUNS)
    try:
        profile = runtime.profile_ops(runs)
    except Exception as exc:  # the measurement is done; a failed profile must not cost it
        profile = OpProfile(source=getattr(runtime, "name", ""), timing_unavailable=(
            f"the per-operator profile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"))
    if profile.trace is not None and len(profile.trace.encode("utf-8")) > MAX_TRACE_BYTES:
        size = len(profile.trace.encode("utf-8"))
        profile.trace = None
        profile.warnings.append(f"the full trace ({size} bytes) is over {MAX_TRACE_BYTES} bytes and was not kept; "
                                f"profile fewer runs (--profile-ops-runs)")
    return profile


def finish(profile: OpProfile, requested: Sequence[str] = ()) -> OpProfile:
    """Shares, slowest-first order, node counts per provider, and a warning for every node that
    ran on the CPU while an accelerator was asked for (``requested``: the providers or
    delegates the job asked for, best first)."""
    timed = [op for op in profile.ops if op.mean_seconds is not None]
    total = sum(op.mean_seconds for op in timed)  # type: ignore[misc]
    for op in timed:
        op.share = (op.mean_seconds / total) if total > 0 else None  # type: ignore[operator]
    if timed:
        profile.ops.sort(key=lambda op: (-(op.mean_seconds or 0.0), op.order))
    else:
        profile.ops.sort(key=lambda op: op.order)
    counts: Dict[str, int] = {}
    for op in profile.ops:
        counts[op.provider] = counts.get(op.provider, 0) + 1
    profile.nodes_by_provider = counts
    accelerated = [p for p in requested if p not in CPU_PROVIDERS]
    if accelerated:
        fell_back = [op for op in profile.ops if op.provider in CPU_PROVIDERS]
        if fell_back:
            names = ", ".join(f"{op.node} ({op.op_type})" for op in sorted(fell_back, key=lambda o: o.order)[:8])
            more = f" and {len(fell_back) - 8} more" if len(fell_back) > 8 else ""
            profile.warnings.append(
                f"{len(fell_back)} of {len(profile.ops)} nodes ran on the CPU although {', '.join(accelerated)} "
                f"was asked for: {names}{more}")
    return profile


# ---------------------------------------------------------------- ONNX Runtime


def parse_ort_trace(text: str, skip_first_run: bool = True) -> Tuple[List[OpTime], int]:
    """Per-node mean time from ONNX Runtime's profiler output (a JSON list of Chrome-trace
    events, as written by ``InferenceSession.end_profiling()`` in 1.16 .. 1.2x). Returns the
    nodes in execution order and the number of inferences they were averaged over."""
    events = json.loads(text)
    if isinstance(events, dict):  # some versions wrap the list: {"traceEvents": [...]}
        events = events.get("traceEvents", [])
    runs = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    if skip_first_run and len(runs) > 1:
        first_end = runs[0][1]
        runs = runs[1:]
    else:
        first_end = None
    nodes: "OrderedDict[str, OpTime]" = OrderedDict()
    totals: Dict[str, float] = {}
    for e in sorted((e for e in events if e.get("cat") == "Node"), key=lambda e: e.get("ts", 0)):
        name = str(e.get("name", ""))
        if not name.endswith("_kernel_time"):
            continue  # fence_before / fence_after
        if first_end is not None and e.get("ts", 0) <= first_end:
            continue
        node = name[: -len("_kernel_time")]
        args = e.get("args") or {}
        op = nodes.get(node)
        if op is None:
            op = nodes[node] = OpTime(node=node, op_type=str(args.get("op_name", "")),
                                      provider=str(args.get("provider", "")), order=len(nodes))
        op.calls += 1
        totals[node] = totals.get(node, 0.0) + float(e.get("dur", 0)) / 1e6  # µs -> s
    n_runs = len(runs) if runs else max((op.calls for op in nodes.values()), default=0)
    for node, op in nodes.items():
        op.mean_seconds = totals[node] / n_runs if n_runs else None
    return list(nodes.values()), n_runs


# ---------------------------------------------------------------- TFLite interpreter


def tflite_node_delegation(ops_details: Iterable[Dict[str, Any]], delegate: str, builtin: str
                           ) -> List[OpTime]:
    """Which operators a delegate took over, from ``Interpreter._get_ops_details()``.

    A delegated partition appears as an extra node named ``DELEGATE`` whose inputs are the
    partition's inputs and whose outputs its outputs; the original operators stay listed. An
    operator belongs to the partition when it lies between them: walking back from the
    partition's outputs through the operators that produce each tensor, stopping at the
    partition's inputs."""
    details = list(ops_details)
    originals = [d for d in details if d.get("op_name") != "DELEGATE"]
    partitions = [d for d in details if d.get("op_name") == "DELEGATE"]
    producer: Dict[int, Dict[str, Any]] = {}
    for d in originals:
        for t in d.get("outputs", []):
            producer[int(t)] = d
    taken: Dict[int, str] = {}
    for part in partitions:
        stop = {int(t) for t in part.get("inputs", [])}
        todo = [int(t) for t in part.get("outputs", [])]
        seen = set()
        while todo:
            t = todo.pop()
            if t in seen or t in stop or t not in producer:
                continue
            seen.add(t)
            d = producer[t]
            if int(d["index"]) in taken:
                continue
            taken[int(d["index"])] = delegate
            todo.extend(int(x) for x in d.get("inputs", []) if int(x) >= 0)
    return [OpTime(node=f"#{int(d['index'])}", op_type=str(d.get("op_name", "")),
                   provider=taken.get(int(d["index"]), builtin), order=int(d["index"])) for d in originals]


# ---------------------------------------------------------------- TFLite benchmark_model

_BM_SECTION = "Operator-wise Profiling Info for Regular Benchmark Runs"
_BM_ROW = re.compile(r"^\s*(?P<cols>.*?)\s+(?P<name>\[.*\](?::\d+)?)\s*$")


def parse_benchmark_model_op_profile(text: str) -> List[OpTime]:
    """The "Run Order" table of ``benchmark_model --enable_op_profiling=true``. Two layouts are
    in use: TFLite 2.4-2.9 print ``[node type] [first] [avg ms] [%] [cdf%] [mem KB] [times
    called] [Name]``, later ones add ``[start]`` after the node type; the header row says
    which, so columns are found by name. Names print as ``[tensor names]:node index``.
    Delegated partitions print as one row per partition (``TfLiteXNNPackDelegate``,
    ``TfLiteGpuDelegateV2``, ``TfLiteNnapiDelegate`` ...), whose provider is that node type;
    every other row ran on the CPU's builtin kernels."""
    start = text.find(_BM_SECTION)
    if start < 0:
        return []
    lines = text[start:].splitlines()
    columns: List[str] = []
    ops: List[OpTime] = []
    in_run_order = False
    for line in lines[1:]:
        stripped = re.sub(r"^(INFO|I\d*):\s?", "", line.strip())
        if "Run Order" in stripped:
            in_run_order = True
            continue
        if not in_run_order:
            continue
        if stripped.startswith("====") or (not stripped and ops):
            break  # the next table ("Top by Computation Time") or the end of this one
        if stripped.startswith("[node type]"):
            columns = re.findall(r"\[([^\]]+)\]", stripped)
            continue
        m = _BM_ROW.match(stripped)
        if not m or not columns:
            continue
        values = m.group("cols").split()
        named = dict(zip(columns[:-1], values))
        try:
            mean = float(named["avg ms"]) / 1000.0
            calls = int(float(named.get("times called", "1")))
        except (KeyError, ValueError):
            continue
        node_type = named.get("node type", values[0])
        name = m.group("name")
        idx = re.search(r"\]:(\d+)$", name)
        provider = node_type if ("Delegate" in node_type or node_type == "DELEGATE") else "CPU (builtin kernels)"
        ops.append(OpTime(node=name if name not in ("[]",) else f"#{len(ops)}", op_type=node_type,
                          provider=provider, calls=calls, mean_seconds=mean,
                          order=int(idx.group(1)) if idx else len(ops)))
    return ops
