"""Reports of a suite run for CI: JUnit XML (Jenkins, GitLab and GitHub read it), a Markdown
summary (a job summary or merge-request comment) and a self-contained HTML page with plots.

Plots are inline SVG drawn here: a CI artifact must open anywhere, offline, and the report must
not need matplotlib on a CI runner. Only the standard library is used.
"""
from __future__ import annotations

import html
import math
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence

from hilfarm.constraints import format_value
from hilfarm.v1 import farm_pb2

_STATUS = {farm_pb2.VERDICT_STATUS_PASS: "pass", farm_pb2.VERDICT_STATUS_FAIL: "fail",
           farm_pb2.VERDICT_STATUS_UNKNOWN: "unknown"}
_FAILING = ("regression", "budget_broken", "model_failed")


def status_name(value: int) -> str:
    return _STATUS.get(value, "unknown")


def _case_name(case: farm_pb2.SuiteCase) -> str:
    return f"{case.model_name} on {case.device_profile} [{case.runtime_config}]"


def _verdict_text(v: farm_pb2.ConstraintVerdict) -> str:
    measured = format_value(v.measured if v.HasField("measured") else None, v.unit)
    text = f"{v.constraint} {v.comparison} {format_value(v.budget, v.unit)}: measured {measured}"
    if v.HasField("margin"):
        text += f", margin {format_value(v.margin, v.unit)}"
    if v.reason:
        text += f" ({v.reason})"
    return text


# ---------------------------------------------------------------- JUnit

def junit_xml(run: farm_pb2.SuiteRun, *, allow_unknown: bool = False) -> str:
    """One <testsuite> per suite run; per case a test for the regression check and one per budget.
    A regression or broken budget is a <failure>, a farm error an <error>, a missing baseline or
    an inconclusive comparison (an unsteady run, a change below the device's noise floor) a
    <skipped> test, an unknown budget a <failure> unless ``allow_unknown`` (then <skipped>); a
    budget passed on a simulated reading is unknown, never a pass. A case judged on simulated
    figures has the property ``simulated=true`` and says so in its name."""
    suite = ET.Element("testsuite", name=run.suite or "hilfarm", id=run.id,
                       timestamp=_iso(run.started_at), hostname="hilfarm")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for case in run.cases:
        classname = f"hilfarm.{run.suite}.{case.model_name}.{case.device_profile}".replace(" ", "_")
        total_time += case.duration_seconds

        def add(name: str, kind: str = "", message: str = "", body: str = "", seconds: float = 0.0,
                simulated: bool = False) -> None:
            tc = ET.SubElement(suite, "testcase", classname=classname, name=name + (" (simulated)" if simulated else ""),
                               time=f"{seconds:.3f}")
            if simulated:
                props = ET.SubElement(tc, "properties")
                ET.SubElement(props, "property", name="simulated", value="true")
            counts["tests"] += 1
            if kind:
                el = ET.SubElement(tc, kind, message=message[:1000])
                if kind != "skipped":
                    el.set("type", kind)
                if body:
                    el.text = body
                counts[{"failure": "failures", "error": "errors", "skipped": "skipped"}[kind]] += 1
            out = ET.SubElement(tc, "system-out")
            out.text = f"job {case.job_id}\n{case.message}"

        if case.outcome in ("error", "model_failed"):
            add(f"run {_case_name(case)}", "error" if case.outcome == "error" else "failure", case.message,
                seconds=case.duration_seconds)
            continue
        regression_name = f"regression {_case_name(case)}"
        judged_on_simulation = case.simulated
        if not case.baseline_job_id:
            add(regression_name, "skipped", case.message or "no baseline", seconds=case.duration_seconds)
        elif case.outcome == "regression":
            add(regression_name, "failure", case.message, _comparison_text(case), seconds=case.duration_seconds,
                simulated=judged_on_simulation)
        elif _inconclusive(case):
            add(regression_name, "skipped", "inconclusive: " + case.message, _comparison_text(case),
                seconds=case.duration_seconds, simulated=judged_on_simulation)
        else:
            add(regression_name, seconds=case.duration_seconds, simulated=judged_on_simulation)
            suite[-1].find("system-out").text += "\n" + _comparison_text(case)  # type: ignore[union-attr]
        for v in case.verdicts:
            name = f"budget {v.constraint} {v.comparison} {format_value(v.budget, v.unit)} {_case_name(case)}"
            status = status_name(v.status)
            if status == "fail":
                add(name, "failure", _verdict_text(v), simulated=v.simulated)
            elif status == "unknown" or v.simulated:
                why = "unknown: " if status == "unknown" else "simulated, never a real pass: "
                add(name, "skipped" if allow_unknown else "failure", why + _verdict_text(v), simulated=v.simulated)
            else:
                add(name)
    if not run.cases:
        ET.SubElement(ET.SubElement(suite, "testcase", classname=f"hilfarm.{run.suite}", name="suite run"),
                      "error", message=run.message or "the suite ran no case", type="error")
        counts["tests"] += 1
        counts["errors"] += 1
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("time", f"{total_time:.3f}")
    root = ET.Element("testsuites", name="hilfarm regress", **{k: str(v) for k, v in counts.items()})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _inconclusive(case: farm_pb2.SuiteCase) -> bool:
    """The latency comparison could not decide (or the case says so after its confirmation)."""
    if case.outcome == "inconclusive":
        return True
    latest = case.confirmation if case.confirmation.metrics else case.comparison
    return any(m.inconclusive for m in latest.metrics)


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts or 0, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _comparison_text(case: farm_pb2.SuiteCase) -> str:
    lines = []
    for label, comparison in (("first attempt", case.comparison), ("confirmation", case.confirmation)):
        if not comparison.metrics:
            continue
        lines.append(f"{label} (baseline {comparison.baseline_job_id}, candidate {comparison.candidate_job_id}):")
        for m in comparison.metrics:
            lines.append(f"  [{m.verdict}] {m.summary} — {m.statistic}")
    return "\n".join(lines)


# ---------------------------------------------------------------- Markdown

_ICON = {"pass": "✅", "no_baseline": "➖", "inconclusive": "❔", "unknown_budget": "❔", "budget_broken": "❌",
         "regression": "❌", "model_failed": "❌", "error": "⚠️"}


def markdown(run: farm_pb2.SuiteRun) -> str:
    out = [f"## hilfarm suite `{run.suite}`: {run.outcome or run.state}", "",
           f"Run `{run.id}`, baseline `{run.baseline}`" + (", results accepted as the new baseline" if run.accepted else ""),
           ""]
    if run.message:
        out += [f"> {run.message}", ""]
    out += ["| | model | device | runtime | p50 | change vs baseline | budgets | note |",
            "|---|---|---|---|---|---|---|---|"]
    for case in run.cases:
        p50 = ""
        if case.job.HasField("result") and case.job.result.latency.samples_ns:
            samples = sorted(case.job.result.latency.samples_ns)
            p50 = format_value(samples[len(samples) // 2] / 1e9, "s")
        change = ""
        for m in case.comparison.metrics:
            if m.metric == "latency.median" and math.isfinite(m.ratio):
                change = f"{m.ratio - 1:+.1%} (95% CI {m.ci_low - 1:+.1%}…{m.ci_high - 1:+.1%}, p={m.p_value:.2g}"
                if m.HasField("noise_floor"):
                    change += f"; noise floor {m.noise_floor:.1%}"
                change += ")"
        budgets = ", ".join(f"{v.constraint}: {status_name(v.status)}" for v in case.verdicts) or "—"
        note = case.message.replace("|", "\\|").replace("\n", " ")
        if case.simulated:
            note = "SIMULATED figures judged. " + note
        out.append(f"| {_ICON.get(case.outcome, '')} {case.outcome} | {case.model_name} | {case.device_profile} | "
                   f"{case.runtime_config} | {p50} | {change or '—'} | {budgets} | {note} |")
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- HTML

def _box(values: Sequence[float]) -> Dict[str, float]:
    v = sorted(values)
    n = len(v)

    def q(p: float) -> float:
        i = (n - 1) * p
        lo = int(math.floor(i))
        hi = min(lo + 1, n - 1)
        return v[lo] + (v[hi] - v[lo]) * (i - lo)

    return {"min": v[0], "q1": q(0.25), "med": q(0.5), "q3": q(0.75), "max": v[-1], "p99": q(0.99)}


def latency_svg(series: Dict[str, Sequence[int]], width: int = 560) -> str:
    """Horizontal box plots (whiskers to p1/p99) of latency samples in ms, one row per series."""
    rows = [(label, [s / 1e6 for s in samples]) for label, samples in series.items() if samples]
    if not rows:
        return "<p><em>no latency samples to plot</em></p>"
    boxes = [(label, _box(vals)) for label, vals in rows]
    lo = min(b["min"] for _, b in boxes)
    hi = max(b["p99"] for _, b in boxes)
    span = (hi - lo) or 1.0
    left, right, row_h = 150, 20, 34
    height = row_h * len(boxes) + 30

    def x(v: float) -> float:
        return left + (min(v, hi) - lo) / span * (width - left - right)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">']
    colours = ["#4c78a8", "#f58518", "#54a24b", "#e45756"]
    for i, (label, b) in enumerate(boxes):
        y = 10 + i * row_h
        c = colours[i % len(colours)]
        parts.append(f'<text x="4" y="{y + 16}">{html.escape(label)}</text>')
        parts.append(f'<line x1="{x(b["min"]):.1f}" y1="{y + 12}" x2="{x(b["p99"]):.1f}" y2="{y + 12}" stroke="{c}"/>')
        parts.append(f'<rect x="{x(b["q1"]):.1f}" y="{y + 2}" width="{max(1.0, x(b["q3"]) - x(b["q1"])):.1f}" '
                     f'height="20" fill="{c}" fill-opacity="0.35" stroke="{c}"/>')
        parts.append(f'<line x1="{x(b["med"]):.1f}" y1="{y + 2}" x2="{x(b["med"]):.1f}" y2="{y + 22}" stroke="{c}" stroke-width="2"/>')
        parts.append(f'<text x="{x(b["med"]) + 3:.1f}" y="{y + 32}" fill="{c}">{b["med"]:.3f} ms</text>')
    axis_y = height - 8
    parts.append(f'<text x="{left}" y="{axis_y}">{lo:.3f} ms</text>')
    parts.append(f'<text x="{width - right - 60}" y="{axis_y}">{hi:.3f} ms</text>')
    parts.append("</svg>")
    return "".join(parts)


def history_svg(values: Sequence[float], change_indices: Sequence[int] = (), width: int = 560, height: int = 160) -> str:
    """A line of a nightly figure with the change points marked."""
    if len(values) < 2:
        return "<p><em>not enough history to plot</em></p>"
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0

    def xy(i: int, v: float) -> str:
        return f"{10 + i * (width - 20) / (len(values) - 1):.1f},{height - 10 - (v - lo) / span * (height - 20):.1f}"

    points = " ".join(xy(i, v) for i, v in enumerate(values))
    marks = "".join(
        f'<line x1="{xy(i, lo).split(",")[0]}" y1="0" x2="{xy(i, lo).split(",")[0]}" y2="{height}" stroke="#e45756" stroke-dasharray="4"/>'
        for i in change_indices)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{marks}'
            f'<polyline fill="none" stroke="#4c78a8" stroke-width="1.5" points="{points}"/></svg>')


def html_report(run: farm_pb2.SuiteRun, baselines: Optional[Dict[str, farm_pb2.Job]] = None) -> str:
    """A self-contained page: summary table, then per case its verdicts, comparisons and a plot of
    the candidate's latency against the baseline's (``baselines``: job id -> baseline job)."""
    baselines = baselines or {}
    esc = html.escape
    body: List[str] = [f"<h1>hilfarm suite {esc(run.suite)}: {esc(run.outcome or run.state)}</h1>",
                       f"<p>run {esc(run.id)} · baseline {esc(run.baseline)}"
                       + (" · accepted as the new baseline" if run.accepted else "") + "</p>"]
    if run.message:
        body.append(f"<p class=note>{esc(run.message)}</p>")
    body.append("<table><tr><th>outcome</th><th>model</th><th>device</th><th>runtime</th><th>note</th></tr>")
    for case in run.cases:
        body.append(f"<tr class={esc(case.outcome)}><td>{esc(case.outcome)}</td><td>{esc(case.model_name)}</td>"
                    f"<td>{esc(case.device_profile)}</td><td>{esc(case.runtime_config)}</td><td>{esc(case.message)}</td></tr>")
    body.append("</table>")
    for case in run.cases:
        body.append(f"<h2>{esc(_case_name(case))}: {esc(case.outcome)}</h2>")
        if case.verdicts:
            body.append("<table><tr><th>budget</th><th>status</th><th>detail</th></tr>")
            for v in case.verdicts:
                s = status_name(v.status)
                body.append(f"<tr class={s}><td>{esc(v.constraint)}</td><td>{s}</td><td>{esc(_verdict_text(v))}</td></tr>")
            body.append("</table>")
        for label, comparison in (("First attempt", case.comparison), ("Confirmation re-run", case.confirmation)):
            if comparison.metrics:
                body.append(f"<h3>{label}</h3><ul>")
                for m in comparison.metrics:
                    body.append(f"<li class={esc(m.verdict)}><b>{esc(m.verdict)}</b> {esc(m.summary)} "
                                f"<small>({esc(m.statistic)})</small></li>")
                body.append("</ul>")
        series: Dict[str, Sequence[int]] = {}
        base = baselines.get(case.baseline_job_id)
        if base is not None and base.HasField("result"):
            series["baseline"] = list(base.result.latency.samples_ns)
        if case.job.HasField("result"):
            series["this run"] = list(case.job.result.latency.samples_ns)
        if series:
            body.append(latency_svg(series))
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}.fail,.regression,.budget_broken,"
             ".model_failed,.error{background:#fde0dd}.pass{background:#e5f5e0}.unknown,.unknown_budget,.no_baseline,"
             ".changed{background:#fff7bc}")
    return (f"<!DOCTYPE html><html><head><meta charset=utf-8><title>hilfarm {esc(run.suite)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
