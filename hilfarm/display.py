"""What people read in the terminal: results, progress and device tables (rich)."""

from __future__ import annotations

import sys
from typing import Iterable, List, Optional

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from hilfarm.documents import failure_category_name, state_name, timed_runs
from hilfarm.v1 import farm_pb2

_STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "leased": "cyan",
    "queued": "magenta",
}


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if seconds < 0.1 else f"{seconds * 1e3:.1f}"


def mib(n_bytes: int) -> str:
    return f"{n_bytes / (1 << 20):.1f}"


def _unavailable(result: farm_pb2.BenchmarkResult) -> set:
    return {u.field for u in result.unavailable}


def _state(job: farm_pb2.Job) -> Text:
    name = state_name(job.state)
    return Text(name, style=_STATE_STYLE.get(name, ""))


_VERDICT_STYLE = {farm_pb2.VERDICT_STATUS_PASS: ("pass", "green"), farm_pb2.VERDICT_STATUS_FAIL: ("FAIL", "red")}


def verdict_line(job: farm_pb2.Job) -> Text:
    """The job's budgets in one line: pass, FAIL or unknown (with why) per budget."""
    from hilfarm.constraints import format_value

    line = Text(f"{job.model_name} on {job.device_profile} budgets" +
                (f" ({job.constraint_set})" if job.constraint_set else "") + ":")
    for v in job.verdicts:
        word, style = _VERDICT_STYLE.get(v.status, ("unknown", "yellow"))
        measured = format_value(v.measured, v.unit) if v.HasField("measured") else "unknown"
        line.append(f" {v.constraint} {v.comparison} {format_value(v.budget, v.unit)} ")
        line.append(f"{word}", style=style)
        line.append(f" [{measured}]" if v.HasField("measured") else f" [{v.reason}]")
        line.append(";")
    return line


def results_table(jobs: Iterable[farm_pb2.Job]) -> Group:
    """One row per job with the headline figures; failures explained under the table."""
    table = Table(title="hilfarm results", show_lines=False)
    for column, justify in (
        ("model", "left"), ("device", "left"), ("state", "left"),
        ("p50 ms", "right"), ("p90 ms", "right"), ("p99 ms", "right"),
        ("cv", "right"), ("inf/s", "right"), ("peak MiB", "right"), ("+model MiB", "right"),
        ("W", "right"), ("mJ/inf", "right"), ("max °C", "right"), ("throttled", "right"),
        ("runs", "right"), ("runtime", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)
    notes: List[Text] = []
    unknown_sections = {}  # (device, section) -> reason, said once per device
    for job in jobs:
        if job.HasField("result"):
            r = job.result
            lat, mem, env = r.latency, r.memory, r.environment
            missing = _unavailable(r)
            provider = env.execution_provider.replace("ExecutionProvider", "")
            provider = f" {provider}" if provider else ""
            table.add_row(
                job.model_name, job.device_profile, _state(job),
                ms(lat.p50_seconds), ms(lat.p90_seconds), ms(lat.p99_seconds),
                f"{lat.cv:.2f}", f"{lat.throughput_per_second:.0f}",
                "unknown" if "memory.peak_bytes" in missing else mib(mem.peak_bytes),
                "unknown" if "memory.model_delta_bytes" in missing else mib(mem.model_delta_bytes),
                *power_and_heat_cells(r),
                str(timed_runs(lat)),
                f"{env.runtime} {env.runtime_version}{provider}"
                + (", SIMULATED sensors" if env.simulated else "")
                + (", EMULATED (timings mean nothing)" if env.emulated else "")
                + (", recorded sensors" if env.recorded else ""),
            )
            for u in r.unavailable:
                if u.field in ("power", "thermal"):
                    unknown_sections.setdefault((job.device_profile, u.field), u.reason)
            if lat.repeats > 1:
                notes.append(Text(f"{job.model_name} on {job.device_profile}: {repeats_line(r)}"))
            if r.HasField("stability") and not r.stability.steady:
                notes.append(Text(f"{job.model_name} on {job.device_profile}: UNSTEADY, no evidence for a "
                                  "regression check (see below)", style="bold yellow"))
            for warning in r.warnings:
                notes.append(Text(f"{job.model_name} on {job.device_profile}: {warning}", style="yellow"))
        else:
            table.add_row(job.model_name, job.device_profile, _state(job), *[""] * 13)
        if job.verdicts:
            notes.append(verdict_line(job))
        if job.HasField("failure"):
            f = job.failure
            notes.append(
                Text(
                    f"{job.model_name} on {job.device_profile} [{failure_category_name(f.category)}]: "
                    f"{f.message}",
                    style="red",
                )
            )
        for note in job.placement_notes:
            notes.append(Text(f"{job.model_name} waits for {job.device_profile}: {note}", style="magenta"))
    for (device, section), reason in unknown_sections.items():
        notes.append(Text(f"{device}: {section} unknown, {reason}", style="dim"))
    return Group(table, *notes)


def repeats_line(r: farm_pb2.BenchmarkResult) -> str:
    """'5 processes, medians 1.02-1.08 ms, 1.9 % apart': how far the repeats of a job agreed."""
    lat = r.latency
    text = f"{lat.repeats} processes, medians {ms(lat.repeat_p50_min_seconds)}-{ms(lat.repeat_p50_max_seconds)} ms"
    if lat.HasField("between_repeat_spread"):
        text += f", {lat.between_repeat_spread:.1%} apart (between-process spread)"
    return text


def power_and_heat_cells(result: farm_pb2.BenchmarkResult) -> List[str]:
    """Active watts, millijoules per inference, hottest zone, throttled share: 'unknown' where
    the device has no sensor for it (the reason is in `jobs show`)."""
    missing = _unavailable(result)
    power, thermal = result.power, result.thermal
    has_power = result.HasField("power")
    watts = f"{power.active_watts:.2f}" if has_power and "power.active_watts" not in missing else "unknown"
    energy = (f"{power.energy_per_inference_joules * 1e3:.3f}"
              if has_power and "power.energy_per_inference_joules" not in missing else "unknown")
    zones = list(thermal.zones) if result.HasField("thermal") else []
    hottest = f"{max(z.max_celsius for z in zones):.1f}" if zones else "unknown"
    throttled = (f"{thermal.throttled_fraction:.0%}" if thermal.throttled else "no") if result.HasField("thermal") else "unknown"
    return [watts, energy, hottest, throttled]


def live_readings(progress: farm_pb2.Progress) -> str:
    """The newest power, temperature and throttle readings of a running job, e.g. '6.1 W 72.3 °C'."""
    latest = {}
    for sample in progress.telemetry:
        latest[(sample.quantity, sample.channel)] = sample
    watts = [s for (q, _), s in latest.items() if q == "power_watts"]
    temps = [s for (q, _), s in latest.items() if q == "temperature_celsius"]
    parts = []
    if watts:
        # Several rails: the largest is the total (VDD_IN, a board's input) or the main rail.
        parts.append(f"{max(s.value for s in watts):.1f} W")
    if temps:
        parts.append(f"{max(s.value for s in temps):.1f} °C")
    if any(q == "throttled" and s.value for (q, _), s in latest.items()):
        parts.append("THROTTLED")
    if parts and any(s.simulated for s in latest.values()):
        parts.append("(simulated)")
    return " ".join(parts)


def progress_table(jobs: Iterable[farm_pb2.Job]) -> Table:
    table = Table(title="hilfarm: running")
    for column in ("model", "device", "state", "attempt", "phase", "runs", "last ms", "elapsed s",
                   "device now", "agent / why waiting"):
        table.add_column(column)
    for job in jobs:
        p = job.progress
        runs = f"{p.runs_done}/{p.runs_target}" if p.runs_target else (str(p.runs_done) if p.runs_done else "")
        if p.repeats > 1:
            runs = f"repeat {p.repeat}/{p.repeats} " + runs
        where = job.agent_id or "; ".join(job.placement_notes)
        table.add_row(
            job.model_name, job.device_profile, _state(job), f"{job.attempt}/{job.max_attempts}",
            p.phase, runs, ms(p.latest_latency_seconds) if p.latest_latency_seconds else "",
            f"{p.elapsed_seconds:.1f}" if p.elapsed_seconds else "", live_readings(p), where,
        )
    return table


def jobs_table(jobs: Iterable[farm_pb2.Job]) -> Table:
    table = Table(title="hilfarm jobs")
    for column in ("job", "run", "model", "device", "state", "attempt", "agent", "p50 ms", "failure"):
        table.add_column(column)
    for job in jobs:
        p50 = ms(job.result.latency.p50_seconds) if job.HasField("result") else ""
        failure = failure_category_name(job.failure.category) if job.HasField("failure") else ""
        table.add_row(
            job.id, job.run_id, job.model_name, job.device_profile, _state(job),
            str(job.attempt), job.agent_id, p50, failure,
        )
    return table


def devices_table(devices: Iterable[farm_pb2.Device]) -> Table:
    table = Table(title="hilfarm devices")
    for column in ("agent", "profile", "state", "tags", "runtimes", "cores", "memory GiB", "job"):
        table.add_column(column)
    for d in devices:
        caps = d.capabilities
        runtimes = ", ".join(f"{r.name} {r.version}" for r in caps.runtimes)
        table.add_row(
            d.agent_id, d.device_profile + (" (EMULATED)" if caps.emulation else ""), d.state, ",".join(d.tags), runtimes,
            str(caps.cpu_cores), f"{caps.memory_bytes / (1 << 30):.1f}", d.current_job_id,
        )
    return table


def job_detail(job: farm_pb2.Job) -> Group:
    """Everything about one job, for `hilfarm jobs show`."""
    parts: list = [results_table([job])]
    head = Table.grid(padding=(0, 2))
    head.add_row("job", job.id)
    head.add_row("run", job.run_id)
    head.add_row("model", f"{job.model_name} ({job.model_format}, sha256 {job.model_sha256[:16]}…)")
    head.add_row("device", f"{job.device_profile} on agent {job.agent_id or '-'}")
    head.add_row("state", f"{state_name(job.state)}, attempt {job.attempt} of {job.max_attempts}")
    parts.insert(0, head)
    if job.HasField("result"):
        r = job.result
        lat, mem, env = r.latency, r.memory, r.environment
        figures = Table(title="figures", show_header=False)
        figures.add_column("figure")
        figures.add_column("value", justify="right")
        figures.add_column("source")
        missing = {u.field: u.reason for u in r.unavailable}
        rows = [
            ("load", f"{ms(lat.load_seconds)} ms", env.runtime),
            ("first inference", f"{ms(lat.first_inference_seconds)} ms", env.runtime),
            ("warmup", f"{lat.warmup_runs} runs, {lat.warmup_seconds:.2f} s", "harness"),
            ("timed runs", f"{timed_runs(lat)} in {lat.total_seconds:.2f} s", "perf_counter_ns"),
            ("min / mean / max", f"{ms(lat.min_seconds)} / {ms(lat.mean_seconds)} / {ms(lat.max_seconds)} ms", ""),
            ("p50 / p90 / p95 / p99", f"{ms(lat.p50_seconds)} / {ms(lat.p90_seconds)} / {ms(lat.p95_seconds)} / {ms(lat.p99_seconds)} ms", ""),
            ("std / cv", f"{ms(lat.std_seconds)} ms / {lat.cv:.3f}", ""),
            ("throughput", f"{lat.throughput_per_second:.1f} inferences/s", ""),
            ("drift (last/first tenth p50)", _or_unknown(missing, "latency.drift_ratio", f"{lat.drift_ratio:.3f}"), ""),
            ("memory baseline peak", _or_unknown(missing, "memory.baseline_peak_bytes", f"{mib(mem.baseline_peak_bytes)} MiB"), mem.source),
            ("memory peak", _or_unknown(missing, "memory.peak_bytes", f"{mib(mem.peak_bytes)} MiB"), mem.source),
            ("memory due to model", _or_unknown(missing, "memory.model_delta_bytes", f"{mib(mem.model_delta_bytes)} MiB"), mem.source),
            ("model file", f"{mib(mem.model_file_bytes)} MiB", ""),
        ]
        for row in rows:
            figures.add_row(*row)
        parts.append(figures)
        envt = Table(title="environment", show_header=False)
        envt.add_column("key")
        envt.add_column("value")
        for key, value in (
            ("runtime", f"{env.runtime} {env.runtime_version}"),
            ("provider / delegate", env.execution_provider),
            ("runtime settings", env.runtime_settings),
            ("threads", str(env.threads) if env.threads else "runtime default"),
            ("inputs", f"{env.input_source}; " + ", ".join(f"{s.name}={list(s.dims)}" for s in env.input_shapes)),
            ("os / kernel / machine", f"{env.os} / {env.kernel} / {env.machine}"),
            ("python", env.python_version),
            ("governor", _or_unknown(missing, "environment.governor", env.governor)),
            ("agent", f"{env.agent_id} ({env.hostname}), hilfarm {env.agent_version}"),
            ("simulated readings", "yes" if env.simulated else "no"),
            ("emulated", f"EMULATED: {env.emulation}" if env.emulated else "no"),
            ("recorded readings", "; ".join(env.recorded_sources) or "yes" if env.recorded else "no"),
        ):
            envt.add_row(key, value)
        parts.append(envt)
        parts.extend(_repeat_tables(r))
        parts.extend(_power_and_thermal_tables(r))
        parts.extend(_sustained_tables(r))
        if r.HasField("op_profile"):
            from hilfarm.op_profiles import op_profile_table

            parts.extend(op_profile_table(r.op_profile))
        for field, reason in missing.items():
            parts.append(Text(f"unknown {field}: {reason}", style="yellow"))
    if job.HasField("failure") and job.failure.detail:
        parts.append(Text("detail:\n" + job.failure.detail, style="dim"))
    return Group(*parts)


def _repeat_tables(r: farm_pb2.BenchmarkResult) -> list:
    """One row per process of the job, whether the runs were steady, and how quiet the device was."""
    out: list = []
    if r.repeats:
        table = Table(title=f"repeats: {repeats_line(r)}" if len(r.repeats) > 1 else "repeat")
        for column in ("#", "runs", "p50 ms", "p99 ms", "cv", "drift", "warmup s", "peak MiB", "steady"):
            table.add_column(column, justify="right")

        def opt(rep, name: str, text) -> str:
            return text(getattr(rep, name)) if rep.HasField(name) else "-"

        for rep in r.repeats:
            table.add_row(str(rep.index + 1), str(rep.count), opt(rep, "p50_seconds", ms), opt(rep, "p99_seconds", ms),
                          opt(rep, "cv", lambda v: f"{v:.2f}"), opt(rep, "drift_ratio", lambda v: f"{v:.3f}"),
                          opt(rep, "warmup_seconds", lambda v: f"{v:.2f}"), opt(rep, "peak_bytes", mib),
                          "yes" if rep.steady else Text("NO", style="bold yellow"))
        out.append(table)
    if r.HasField("stability"):
        if r.stability.steady:
            out.append(Text("steady: warmup settled and the timed runs neither drifted nor split into modes"))
        else:
            out.append(Text("UNSTEADY (no evidence for a regression check): " + "; ".join(r.stability.reasons),
                            style="bold yellow"))
    if r.HasField("activity"):
        a = r.activity
        load = (f", load average {a.load_average_start:.2f} → {a.load_average_end:.2f}"
                if a.HasField("load_average_start") and a.HasField("load_average_end") else "")
        busy = ", ".join(f"{b.name} (pid {b.pid}) {b.cpu_cores:.2f}" for b in a.busy)
        other = f"other processes used {a.other_cpu_cores:.2f} cores" if a.HasField("other_cpu_cores") else ""
        out.append(Text(f"device {'quiet' if a.quiet else 'NOT QUIET'}: {other}{load}"
                        + (f" (busiest: {busy})" if busy else ""), style="" if a.quiet else "yellow"))
    return out


def _power_and_thermal_tables(r: farm_pb2.BenchmarkResult) -> list:
    tables = []
    if r.HasField("power"):
        p = r.power
        missing = _unavailable(r)
        sim = " (simulated)" if p.simulated else " (recorded)" if p.recorded else ""
        power = Table(title=f"power ({p.sensor}, {p.sample_rate_hz:.1f} Hz){sim}", show_header=False)
        power.add_column("figure")
        power.add_column("value", justify="right")
        for name, label, text in (
            ("idle_watts", "idle", f"{p.idle_watts:.3f} W"),
            ("active_watts", "active (timed runs)", f"{p.active_watts:.3f} W"),
            ("energy_per_inference_joules", f"energy per inference ({p.energy_method or 'unknown method'})",
             f"{p.energy_per_inference_joules * 1e3:.4f} mJ"),
        ):
            power.add_row(label, "unknown" if f"power.{name}" in missing else text)
        for rail in p.rails:
            power.add_row(f"rail {rail.rail}", f"{rail.mean_watts:.3f} W")
        tables.append(power)
    if r.HasField("thermal"):
        t = r.thermal
        sim = " (simulated)" if t.simulated else " (recorded)" if t.recorded else ""
        verdict = f"throttled {t.throttled_fraction:.0%} of the run" if t.throttled else "not throttled"
        heat = Table(title=f"thermal: {verdict}, cooled down {t.cooldown_seconds:.1f} s first{sim}")
        for column in ("zone / clock", "start", "max", "end", "source"):
            heat.add_column(column)
        for z in t.zones:
            heat.add_row(z.zone, f"{z.start_celsius:.1f} °C", f"{z.max_celsius:.1f} °C", f"{z.end_celsius:.1f} °C", z.sensor)
        for c in t.clocks:
            ceiling = f" (allowed {c.allowed_max_hz / 1e6:.0f} MHz)" if c.allowed_max_hz else ""
            heat.add_row(c.domain, f"{c.min_hz / 1e6:.0f} MHz", f"{c.max_hz / 1e6:.0f} MHz{ceiling}", "", "cpufreq / device")
        tables.append(heat)
        for reason in t.throttle_reasons:
            tables.append(Text(f"throttle reason: {reason}", style="yellow"))
    return tables


def _sustained_tables(r: farm_pb2.BenchmarkResult) -> list:
    """Sustained mode: one row per window, and the run's change from the first window to the last."""
    if not r.HasField("sustained"):
        return []
    s = r.sustained
    missing = _unavailable(r)
    sim = " (simulated)" if s.simulated else ""

    def opt(msg, name: str, fmt: str, scale: float = 1.0) -> str:
        return format(getattr(msg, name) * scale, fmt) if msg.HasField(name) else "-"

    table = Table(title=f"sustained {s.duration_seconds:.0f} s of {s.requested_seconds:g} s asked, "
                        f"windows of {s.window_seconds:g} s{sim}")
    for column in ("window", "runs", "p50 ms", "W", "max °C", "throttled %"):
        table.add_column(column, justify="left" if column == "window" else "right")
    for w in s.windows:
        table.add_row(f"{w.start_seconds:.0f}-{w.end_seconds:.0f} s", str(w.runs),
                      ms(w.p50_seconds) if w.HasField("p50_seconds") else "-",
                      opt(w, "mean_watts", ".2f"), opt(w, "max_celsius", ".1f"),
                      opt(w, "throttled_fraction", ".0f", 100.0))
    change = [
        f"p50 last/first window ×{s.latency_change_ratio:.3f}" if s.HasField("latency_change_ratio")
        else "p50 change unknown",
        f"temperature {s.temperature_rise_celsius:+.1f} °C" if s.HasField("temperature_rise_celsius")
        else "temperature change unknown",
    ]
    if s.HasField("throttled_after_seconds"):
        change.append(f"throttled after {s.throttled_after_seconds:.1f} s")
    elif "sustained.throttled_after_seconds" in missing:
        change.append("throttling unknown")
    else:
        change.append("not throttled")
    return [table, Text("sustained: " + ", ".join(change))]


def _or_unknown(missing: dict, field: str, text: str) -> str:
    return f"unknown ({missing[field]})" if field in missing else text


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Piped into a file or a CI log there is no terminal width to respect; 80 columns
    # would squeeze the results table into ellipses.
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, width=width)


def print_error(message: str, console_: Optional[Console] = None) -> None:
    (console_ or console(stderr=True)).print(Text(f"error: {message}", style="bold red"))
