"""`hilfarm jobs show --plot`: PNG and self-contained HTML pictures of a job."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from hilfarm import plots
from hilfarm.v1 import farm_pb2


def make_job(with_timeline: bool = True) -> farm_pb2.Job:
    job = farm_pb2.Job(id="job-1", model_name="mlp.onnx", device_profile="rpi5", state=farm_pb2.JOB_STATE_SUCCEEDED)
    job.result.environment.runtime = "onnxruntime"
    job.result.environment.simulated = with_timeline
    job.result.latency.samples_ns.extend(1_000_000 + (i % 7) * 50_000 + (i // 50) * 20_000 for i in range(300))
    if with_timeline:
        for i in range(40):
            t = i * 0.1
            job.result.timeline.add(t=t, sensor="sim", quantity="power_watts", channel="VDD_IN", value=3 + i * 0.02, simulated=True)
            job.result.timeline.add(t=t, sensor="sim", quantity="temperature_celsius", channel="cpu-thermal", value=45 + i * 0.3, simulated=True)
            job.result.timeline.add(t=t, sensor="sim", quantity="clock_hz", channel="cpu0", value=2.4e9 if i < 30 else 1.8e9, simulated=True)
            job.result.timeline.add(t=t, sensor="sim", quantity="throttled", channel="soc", value=1.0 if i >= 30 else 0.0, simulated=True)
    return job


def _png_size(data: bytes) -> tuple:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_png_with_traces_is_taller_than_latency_only(tmp_path: Path) -> None:
    full = plots.plot_job(make_job(True), tmp_path / "full.png").read_bytes()
    bare = plots.plot_job(make_job(False), tmp_path / "bare.png").read_bytes()
    wf, hf = _png_size(full)
    wb, hb = _png_size(bare)
    assert wf == wb and wf > 800
    assert hf > 2 * hb  # two rows of traces under the latency row


def test_figure_has_the_panels_and_says_simulated() -> None:
    fig = plots.figure(plots.plot_data_from_pb(make_job(True)))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["Latency distribution (300 timed runs)", "Latency over the timed runs"]
    assert {"Power (simulated)", "Temperature (simulated)", "Clock (simulated)", "Throttled (simulated)"} <= set(titles)
    assert "simulated" in fig._suptitle.get_text()
    clock_axis = fig.axes[titles.index("Clock (simulated)")]
    assert max(clock_axis.lines[0].get_ydata()) == pytest.approx(2.4)  # GHz


def test_html_is_self_contained(tmp_path: Path) -> None:
    page = plots.plot_job(make_job(True), tmp_path / "job.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    encoded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert _png_size(base64.b64decode(encoded))[0] > 800
    assert "<th>p50</th>" in page and "simulated" in page


def test_failed_job_and_unknown_format_are_refused(tmp_path: Path) -> None:
    failed = farm_pb2.Job(id="job-2", state=farm_pb2.JOB_STATE_FAILED)
    with pytest.raises(plots.NothingToPlot, match="job-2 has no latency samples"):
        plots.plot_job(failed, tmp_path / "x.png")
    with pytest.raises(ValueError, match="name it .png or .html"):
        plots.plot_job(make_job(), tmp_path / "x.jpg")


def test_sustained_windows_add_a_latency_and_temperature_panel() -> None:
    job = make_job(True)
    for k in range(4):
        w = job.result.sustained.windows.add(start_seconds=k, end_seconds=k + 1, runs=100, p50_seconds=0.001 * (1 + k / 10))
        if k != 2:
            w.max_celsius = 50.0 + 5 * k  # window 2: no temperature read
    fig = plots.figure(plots.plot_data_from_pb(job))
    ax = next(a for a in fig.axes if a.get_title().startswith("Sustained run"))
    assert ax.get_title().endswith("(simulated)")
    assert list(ax.lines[0].get_xdata()) == [0.5, 1.5, 2.5, 3.5]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([1.0, 1.1, 1.2, 1.3])
    twin = next(a for a in fig.axes if a is not ax and a.get_ylabel().startswith("max temperature"))
    assert list(twin.lines[0].get_xdata()) == [0.5, 1.5, 3.5]  # nothing drawn where nothing was measured
    assert not any(a.get_title().startswith("Sustained") for a in plots.figure(plots.plot_data_from_pb(make_job(True))).axes)


def test_op_profile_panel_colours_nodes_by_provider(tmp_path: Path) -> None:
    job = make_job(False)
    p = job.result.op_profile
    p.runs = 10
    for i, (node, provider) in enumerate([("conv1", "CUDAExecutionProvider"), ("resize", "CPUExecutionProvider"),
                                          ("fc", "CUDAExecutionProvider")]):
        p.ops.add(node=node, op_type="Op", provider=provider, calls=10, mean_seconds=(3 - i) * 1e-3, order=i)
    fig = plots.figure(plots.plot_data_from_pb(job))
    ax = next(a for a in fig.axes if a.get_title().startswith("Per-operator profile"))
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["fc (Op)", "resize (Op)", "conv1 (Op)"]  # slowest at the top
    colours = {tuple(b.get_facecolor()) for b in ax.patches}
    assert len(colours) == 2  # one colour per provider
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"CPUExecutionProvider", "CUDAExecutionProvider"}
    png = plots.plot_job(job, tmp_path / "ops.png").read_bytes()
    assert _png_size(png)[1] > _png_size(plots.plot_job(make_job(False), tmp_path / "bare.png").read_bytes())[1]
