"""Pictures of one job: its latency distribution and latency over time and, when the agent
recorded them, the power, temperature, clock and throttling traces of the run
(`hilfarm jobs show JOB --plot FILE`).

PNG through matplotlib's Agg backend (no display needed; the `plots` extra), or a
self-contained HTML page with the same figure inlined, so a report can be mailed or attached
to a CI run as one file. Readings from a simulated sensor are titled "simulated".
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

# Quantity (TelemetrySample.quantity) -> (axis title, unit shown, scale from the base unit).
TRACES: Sequence[Tuple[str, str, str, float]] = (
    ("power_watts", "Power", "W", 1.0),
    ("temperature_celsius", "Temperature", "°C", 1.0),
    ("clock_hz", "Clock", "GHz", 1e-9),
    ("throttled", "Throttled", "0/1", 1.0),
)


@dataclass
class Reading:
    t: float
    quantity: str
    channel: str
    value: float
    simulated: bool


@dataclass
class Window:
    """One window of a sustained run (None: not measured in that window)."""

    start: float
    end: float
    p50_seconds: Optional[float]
    max_celsius: Optional[float]


@dataclass
class JobPlotData:
    """What a job plot shows, independent of the wire format."""

    job_id: str
    model: str
    device_profile: str
    runtime: str
    samples_ns: List[int]
    timeline: List[Reading] = field(default_factory=list)
    simulated: bool = False
    sustained: List[Window] = field(default_factory=list)  # empty unless run in sustained mode
    op_profile: Any = None  # hilfarm.v1.OpProfile of a job run with --profile-ops
    emulated: bool = False  # measured under an instruction-set emulator: timings mean nothing
    recorded: bool = False  # some readings came from a recording

    @property
    def title(self) -> str:
        runtime = f" ({self.runtime})" if self.runtime else ""
        return f"{self.model} on {self.device_profile}{runtime} — job {self.job_id}"


def plot_data_from_pb(job: Any) -> JobPlotData:
    """A hilfarm.v1.Job as JobPlotData (the CLI's boundary with the wire format)."""
    result = job.result
    return JobPlotData(
        job_id=job.id,
        model=job.model_name or job.model_sha256[:12],
        device_profile=job.device_profile,
        runtime=result.environment.runtime,
        samples_ns=list(result.latency.samples_ns),
        timeline=[Reading(s.t, s.quantity, s.channel, s.value, s.simulated) for s in result.timeline],
        simulated=result.environment.simulated,
        sustained=[Window(w.start_seconds, w.end_seconds,
                          w.p50_seconds if w.HasField("p50_seconds") else None,
                          w.max_celsius if w.HasField("max_celsius") else None)
                   for w in result.sustained.windows],
        op_profile=result.op_profile if result.HasField("op_profile") else None,
        emulated=result.environment.emulated,
        recorded=result.environment.recorded,
    )


class NothingToPlot(ValueError):
    """The job has no timed samples (it failed, or has not finished)."""


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    # Linear interpolation between closest ranks, as numpy's default.
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def figure(data: JobPlotData):  # type: ignore[no-untyped-def]
    """The matplotlib Figure (Agg canvas) of a job."""
    if not data.samples_ns:
        raise NothingToPlot(f"job {data.job_id} has no latency samples to plot (it has not succeeded)")
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    ms = [v / 1e6 for v in data.samples_ns]
    # Each sample is placed at the end of its own inference on a clock of timed runs only.
    elapsed, clock = [], 0.0
    for v in data.samples_ns:
        clock += v / 1e9
        elapsed.append(clock)
    ordered = sorted(ms)
    p50, p99 = _percentile(ordered, 0.5), _percentile(ordered, 0.99)

    by_quantity: Dict[str, Dict[str, List[Reading]]] = {}
    for r in data.timeline:
        by_quantity.setdefault(r.quantity, {}).setdefault(r.channel or "total", []).append(r)
    traces = [t for t in TRACES if t[0] in by_quantity]
    rows = 1 + (len(traces) + 1) // 2 + (1 if data.sustained else 0) + (1 if data.op_profile is not None else 0)
    fig = Figure(figsize=(11, 3.4 * rows), layout="constrained")
    fig.suptitle(data.title + ("  [simulated readings]" if data.simulated else "")
                 + ("  [EMULATED: timings mean nothing]" if data.emulated else "")
                 + ("  [recorded readings]" if data.recorded else ""), fontsize=11)
    grid = fig.add_gridspec(rows, 2)

    ax = fig.add_subplot(grid[0, 0])
    ax.hist(ms, bins=min(60, max(10, len(ms) // 5)), color="#3274d9", alpha=0.85)
    ax.axvline(p50, color="#222", linestyle="--", linewidth=1, label=f"p50 {p50:.3f} ms")
    ax.axvline(p99, color="#d44a3a", linestyle="--", linewidth=1, label=f"p99 {p99:.3f} ms")
    ax.set_title(f"Latency distribution ({len(ms)} timed runs)", fontsize=10)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("runs")
    ax.legend(fontsize=8)

    ax = fig.add_subplot(grid[0, 1])
    ax.plot(elapsed, ms, linewidth=0.8, color="#3274d9")
    ax.axhline(p50, color="#222", linestyle="--", linewidth=1)
    ax.set_title("Latency over the timed runs", fontsize=10)
    ax.set_xlabel("time spent in timed runs (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)

    for i, (quantity, label, unit, scale) in enumerate(traces):
        ax = fig.add_subplot(grid[1 + i // 2, i % 2])
        simulated = False
        for channel, readings in sorted(by_quantity[quantity].items()):
            readings.sort(key=lambda r: r.t)
            simulated = simulated or any(r.simulated for r in readings)
            xs = [r.t for r in readings]
            ys = [r.value * scale for r in readings]
            if quantity == "throttled":
                ax.step(xs, ys, where="post", label=channel)
                ax.set_ylim(-0.1, 1.1)
            else:
                ax.plot(xs, ys, linewidth=1, label=channel)
        ax.set_title(label + (" (simulated)" if simulated else ""), fontsize=10)
        ax.set_xlabel("time since the sampler started (s)")
        ax.set_ylabel(unit)
        ax.legend(fontsize=7, loc="best")
    if data.sustained:
        _sustained_panel(fig.add_subplot(grid[rows - 1 - (data.op_profile is not None), :]), data.sustained,
                         data.simulated)
    if data.op_profile is not None:
        from hilfarm.op_profiles import draw_op_profile

        draw_op_profile(fig.add_subplot(grid[rows - 1, :]), data.op_profile)
    return fig


def _sustained_panel(ax, windows: Sequence[Window], simulated: bool) -> None:  # type: ignore[no-untyped-def]
    """p50 latency and the hottest zone per window on one time axis: throttling shows as the
    latency rising while the temperature levels off at the trip point."""
    mids = [(w.start + w.end) / 2 for w in windows]
    lat = [(m, w.p50_seconds * 1e3) for m, w in zip(mids, windows) if w.p50_seconds is not None]
    ax.plot([m for m, _ in lat], [v for _, v in lat], marker="o", markersize=3, color="#3274d9", label="p50")
    ax.set_xlabel("time since the timed phase began (s)")
    ax.set_ylabel("p50 latency (ms)", color="#3274d9")
    ax.set_ylim(bottom=0)
    temps = [(m, w.max_celsius) for m, w in zip(mids, windows) if w.max_celsius is not None]
    if temps:
        twin = ax.twinx()
        twin.plot([m for m, _ in temps], [v for _, v in temps], marker="s", markersize=3, color="#d44a3a")
        twin.set_ylabel("max temperature (°C)" + (" simulated" if simulated else ""), color="#d44a3a")
    ax.set_title("Sustained run: latency and temperature per window" + (" (simulated)" if simulated else ""),
                 fontsize=10)


def png_bytes(data: JobPlotData, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    figure(data).savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def html_page(data: JobPlotData) -> str:
    png = base64.b64encode(png_bytes(data)).decode()
    ordered = sorted(v / 1e6 for v in data.samples_ns)
    rows = [
        ("timed runs", f"{len(ordered)}"),
        ("min", f"{ordered[0]:.3f} ms"),
        ("p50", f"{_percentile(ordered, 0.5):.3f} ms"),
        ("p90", f"{_percentile(ordered, 0.9):.3f} ms"),
        ("p99", f"{_percentile(ordered, 0.99):.3f} ms"),
        ("max", f"{ordered[-1]:.3f} ms"),
        ("readings", "simulated" if data.simulated else "measured"),
    ]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    title = html.escape(data.title)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "th,td{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}img{max-width:100%}</style>"
        f"</head><body><h1>{title}</h1><table>{table}</table>"
        f"<p><img alt=\"latency and telemetry of job {html.escape(data.job_id)}\" src=\"data:image/png;base64,{png}\"></p>"
        "</body></html>\n"
    )


def write_plot(data: JobPlotData, path: Path) -> Path:
    """Write a PNG (.png) or a self-contained HTML page (.html / .htm)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        path.write_bytes(png_bytes(data))
    elif suffix in (".html", ".htm"):
        path.write_text(html_page(data), encoding="utf-8")
    else:
        raise ValueError(f"cannot tell the picture format from {path.name!r}: name it .png or .html")
    return path


def plot_job(job: Any, path: Path) -> Path:
    """Render a hilfarm.v1.Job to ``path`` (.png or .html)."""
    return write_plot(plot_data_from_pb(job), path)


def load_optional() -> Optional[str]:
    """None when matplotlib is importable, else the install hint to show the user."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "plots need matplotlib: pip install 'hilfarm[plots]'"
    return None
