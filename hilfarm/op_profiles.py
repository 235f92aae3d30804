"""Per-operator profiles as people see them: the slowest nodes of a job in a table, two jobs
compared node by node (``results compare``), and a bar chart of node times coloured by the
provider or delegate that ran each node (``jobs show --plot``), so a node that silently fell
back to the CPU stands out. The profile itself is measured by the agent (agent/runtimes/op_profile.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from rich.table import Table
from rich.text import Text

from hilfarm.v1 import farm_pb2

TABLE_TOP = 15


def _mean(op: farm_pb2.OpTime) -> Optional[float]:
    return op.mean_seconds if op.HasField("mean_seconds") else None


def op_profile_table(p: farm_pb2.OpProfile, top: int = TABLE_TOP) -> list:
    """The ``top`` slowest nodes (execution order when the runtime gives no times), the node
    count per provider, and the profile's warnings."""
    parts: list = []
    timed = any(op.HasField("mean_seconds") for op in p.ops)
    shown = list(p.ops)[:top]
    title = (f"per-operator profile: {len(shown)} of {len(p.ops)} nodes"
             + (f", slowest first, mean of {p.runs} profiled runs" if timed else ", in execution order"))
    table = Table(title=title)
    for column in ("node", "op", "provider / delegate", "ms", "share"):
        table.add_column(column, justify="right" if column in ("ms", "share") else "left", overflow="fold")
    for op in shown:
        mean = _mean(op)
        table.add_row(op.node, op.op_type, op.provider,
                      f"{mean * 1e3:.3f}" if mean is not None else "-",
                      f"{op.share:.1%}" if op.HasField("share") else "-")
    parts.append(table)
    counts = ", ".join(f"{name}: {n}" for name, n in sorted(p.nodes_by_provider.items()))
    parts.append(Text(f"nodes by provider: {counts}; source: {p.source}"))
    if p.timing_unavailable:
        parts.append(Text(f"no per-operator times: {p.timing_unavailable}", style="yellow"))
    for warning in p.warnings:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    if p.trace_sha256:
        parts.append(Text(f"full trace ({p.trace_format}, {p.trace_bytes} bytes): hilfarm jobs trace JOB"))
    return parts


@dataclass
class NodeComparison:
    node: str
    op_type: str
    baseline_seconds: Optional[float]
    candidate_seconds: Optional[float]
    baseline_provider: str
    candidate_provider: str

    @property
    def ratio(self) -> Optional[float]:
        if self.baseline_seconds and self.candidate_seconds is not None:
            return self.candidate_seconds / self.baseline_seconds
        return None

    @property
    def delta_seconds(self) -> Optional[float]:
        if self.baseline_seconds is None or self.candidate_seconds is None:
            return None
        return self.candidate_seconds - self.baseline_seconds


def compare_op_profiles(baseline: farm_pb2.OpProfile, candidate: farm_pb2.OpProfile) -> List[NodeComparison]:
    """Node by node (matched by node name), largest change in time first; nodes only one side
    has come last, and a changed provider is kept so a new CPU fallback shows."""
    a = {op.node: op for op in baseline.ops}
    b = {op.node: op for op in candidate.ops}
    rows = []
    for name in list(a) + [n for n in b if n not in a]:
        x, y = a.get(name), b.get(name)
        rows.append(NodeComparison(
            node=name, op_type=(x or y).op_type,  # type: ignore[union-attr]
            baseline_seconds=_mean(x) if x is not None else None,
            candidate_seconds=_mean(y) if y is not None else None,
            baseline_provider=x.provider if x is not None else "",
            candidate_provider=y.provider if y is not None else ""))
    rows.sort(key=lambda r: (r.delta_seconds is None, -abs(r.delta_seconds or 0.0)))
    return rows


def comparison_table(rows: Sequence[NodeComparison], top: int = TABLE_TOP) -> Table:
    table = Table(title=f"per-operator comparison ({min(top, len(rows))} of {len(rows)} nodes, largest change first)")
    for column in ("node", "op", "baseline ms", "candidate ms", "ratio", "provider"):
        table.add_column(column, justify="right" if "ms" in column or column == "ratio" else "left", overflow="fold")

    def ms(v: Optional[float]) -> str:
        return f"{v * 1e3:.3f}" if v is not None else "-"

    for r in list(rows)[:top]:
        if not r.baseline_provider or not r.candidate_provider:
            provider = f"only in {'candidate' if not r.baseline_provider else 'baseline'}: " + (
                r.candidate_provider or r.baseline_provider)
        elif r.baseline_provider != r.candidate_provider:
            provider = f"{r.baseline_provider} -> {r.candidate_provider}"
        else:
            provider = r.candidate_provider
        table.add_row(r.node, r.op_type, ms(r.baseline_seconds), ms(r.candidate_seconds),
                      f"{r.ratio:.2f}" if r.ratio is not None else "-", provider)
    return table


def comparison_document(rows: Sequence[NodeComparison]) -> List[Dict[str, object]]:
    return [{"node": r.node, "op_type": r.op_type, "baseline_seconds": r.baseline_seconds,
             "candidate_seconds": r.candidate_seconds, "ratio": r.ratio,
             "baseline_provider": r.baseline_provider or None, "candidate_provider": r.candidate_provider or None}
            for r in rows]


def draw_op_profile(ax, p: farm_pb2.OpProfile, top: int = TABLE_TOP) -> None:  # type: ignore[no-untyped-def]
    """Horizontal bars of the slowest nodes, one colour per provider (matplotlib axes)."""
    ops = [op for op in p.ops if op.HasField("mean_seconds")][:top]
    if not ops:
        ax.text(0.5, 0.5, "no per-operator times: " + (p.timing_unavailable or "none recorded"),
                ha="center", va="center", wrap=True, fontsize=8, transform=ax.transAxes)
        ax.set_axis_off()
        return
    providers = sorted({op.provider for op in ops})
    palette = ["#3274d9", "#d44a3a", "#37872d", "#fa6400", "#8f3bb8", "#6e7079"]
    colour = {name: palette[i % len(palette)] for i, name in enumerate(providers)}
    ops = list(reversed(ops))  # slowest at the top
    ax.barh(range(len(ops)), [op.mean_seconds * 1e3 for op in ops], color=[colour[op.provider] for op in ops])
    ax.set_yticks(range(len(ops)))
    ax.set_yticklabels([f"{op.node[:40]} ({op.op_type})" for op in ops], fontsize=7)
    ax.set_xlabel("mean time per inference (ms)")
    ax.set_title(f"Per-operator profile ({p.runs} profiled runs), by provider / delegate", fontsize=10)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=colour[n], label=n) for n in providers], fontsize=7, loc="lower right")
