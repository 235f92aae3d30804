"""What people read in the terminal: results, progress, jobs and devices (rich).

Tables fit the terminal they are printed on (its width, 80 columns when there is none). The
default results table holds what decides whether a model fits a device — model, device, state,
p50, p99, peak memory, and power and temperature where the device measured them — and says
everything else on lines of its own under the table (failures, warnings, budgets, why a figure
is unknown); ``--wide`` shows every figure, ``jobs show`` everything about one job.

Columns are declared once (``Column``). A column marked optional that the width cannot hold
moves to a line under the table (``1a2b3c4d 6.1 W, 72 °C``) instead of squeezing the others
into ellipses, so a column added later (the spread between repeats, say) cannot break the fit.

Job ids are shown as short prefixes (``short_ids``), unique among those shown; every command
that takes a job id accepts a unique prefix, as git does with commits.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from hilfarm.documents import failure_category_name, state_name, timed_runs
from hilfarm.terminal_text import strip_terminal_escapes
from hilfarm.units import GIB, MIB, format_bytes
from hilfarm.v1 import farm_pb2

_STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "leased": "cyan",
    "queued": "magenta",
}

SHORT_ID_LENGTH = 8
# Width a console gets under --wide: wide enough for every column, however many.
WIDE_WIDTH = 1000
# A table column that may wrap (model and device names) keeps at least this many columns
# before optional columns are moved under the table.
_FLEX_MIN = 12
_GAP = 2  # spaces between two columns

Cell = Union[str, Text]


# ---------------------------------------------------------------- numbers and ids

def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if seconds < 0.1 else f"{seconds * 1e3:.1f}"


def mib(n_bytes: int) -> str:
    """A figure for a column headed MiB."""
    return f"{n_bytes / MIB:.1f}"


def _ms_short(seconds: float) -> str:
    """Milliseconds in at most five characters with three or four significant digits."""
    value = seconds * 1e3
    for limit, decimals in ((10, 3), (100, 2), (1000, 1)):
        if value < limit:
            return f"{value:.{decimals}f}"
    return f"{value:.0f}"


def _mib_short(n_bytes: int) -> str:
    value = n_bytes / MIB
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def short_ids(ids: Iterable[str], length: int = SHORT_ID_LENGTH) -> Dict[str, str]:
    """id -> its shortest prefix of at least ``length`` characters unique among ``ids``."""
    unique = [i for i in dict.fromkeys(ids) if i]
    out: Dict[str, str] = {}
    for job_id in unique:
        n = length
        while n < len(job_id) and any(o != job_id and o[:n] == job_id[:n] for o in unique):
            n += 1
        out[job_id] = job_id[:n]
    return out


def short_id(job_id: str) -> str:
    return job_id[:SHORT_ID_LENGTH]


_WHOLE_ID = re.compile(r"\b([0-9a-f]{%d})[0-9a-f]{%d}\b" % (SHORT_ID_LENGTH, 32 - SHORT_ID_LENGTH))


def shorten_ids(text: str) -> str:
    """Whole job ids in a sentence from the controller ("busy with job 84449a53b1e7…") cut to
    the short form people type."""
    return _WHOLE_ID.sub(r"\1", text)


# ---------------------------------------------------------------- consoles

def console(stderr: bool = False, *, wide: bool = False) -> Console:
    """A console for stdout (or stderr) as wide as the terminal (rich asks it; COLUMNS, else 80,
    when there is none). Colour only on a terminal and never with NO_COLOR set (rich honours both)."""
    width = None
    if wide:
        width = WIDE_WIDTH
    return Console(stderr=stderr, highlight=False, width=width, soft_wrap=False)


def print_error(message: str, console_: Optional[Console] = None) -> None:
    (console_ or console(stderr=True)).print(Text(f"error: {message}", style="bold red"))


# ---------------------------------------------------------------- tables that fit

@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "left"
    flexible: bool = False  # text that may wrap (names)
    optional: bool = False  # moves under the table when the width cannot hold it
    unit: str = ""          # written after a value moved under the table
    # When every row has the same value (one device, one model), the column goes and the value
    # joins the title: "{}" is how it reads there, e.g. "on {}".
    in_title: str = ""


@dataclass
class Row:
    key: str  # labels the values of this row that moved under the table (the short job id)
    cells: List[Cell]


def _width(cell: Cell) -> int:
    text = cell.plain if isinstance(cell, Text) else str(cell)
    return max((cell_len(line) for line in text.split("\n")), default=0)


def _need(column: Column, cells: Sequence[Cell]) -> int:
    return max([_width(column.header)] + [_width(c) for c in cells])


def fit_columns(columns: Sequence[Column], rows: Sequence[Row], width: int) -> List[int]:
    """Indexes of the columns to show: all of them, unless ``width`` cannot hold them; then the
    optional ones go, last first, until the rest fit (flexible columns counted at a minimum)."""
    def need(i: int) -> int:
        natural = _need(columns[i], [r.cells[i] for r in rows])
        return min(natural, _FLEX_MIN) if columns[i].flexible else natural

    kept = list(range(len(columns)))
    while sum(need(i) for i in kept) + _GAP * (len(kept) - 1) > width:
        optional = [i for i in kept if columns[i].optional]
        if not optional:
            break
        kept.remove(optional[-1])
    return kept


def _allot(naturals: Dict[int, int], room: int) -> Dict[int, int]:
    """Widths for the flexible columns in ``room``: a column that needs less than an even share
    gets what it needs, the rest share what is left evenly (water-filling)."""
    widths: Dict[int, int] = {}
    left = dict(naturals)
    while left:
        share = max(room // len(left), 1)
        small = {i: n for i, n in left.items() if n <= share}
        if not small:
            for i in left:
                widths[i] = max(share, 4)
            break
        for i, n in small.items():
            widths[i] = n
            room -= n
            del left[i]
    return widths


_BREAK_AFTER = re.compile(r"(?<=[-_./ ])")


def wrap_name(text: str, width: int) -> str:
    """A name over lines of at most ``width``, broken after - _ . / where it can be, mid-word
    only where it must, and as even as the same number of lines allows ("raspberry-pi-5" in 13
    columns: "raspberry-" / "pi-5", not "raspberry-pi-" / "5")."""
    greedy = _wrap_greedy(text, width)
    count = len(greedy)
    # Narrower, but never so narrow that a piece which fitted must be cut.
    pieces = [cell_len(p) for p in _BREAK_AFTER.split(text) if cell_len(p) <= width]
    for target in range(max([-(-cell_len(text) // count)] + pieces), width):
        even = _wrap_greedy(text, target)
        if len(even) <= count:
            return "\n".join(even)
    return "\n".join(greedy)


def _wrap_greedy(text: str, width: int) -> List[str]:
    lines: List[str] = []
    current = ""
    for part in _BREAK_AFTER.split(text):
        while cell_len(part) > width:  # one piece longer than the column: fold it
            room = width - cell_len(current)
            if room <= 0:
                lines.append(current)
                current, room = "", width
            current += part[:room]
            part = part[room:]
            lines.append(current)
            current = ""
        if cell_len(current) + cell_len(part) > width:
            lines.append(current)
            current = ""
        current += part
    lines.append(current)
    return [line.rstrip() for line in lines if line]


class FittedTable:
    """A table that fits the width it is printed at (see the module docstring)."""

    def __init__(self, columns: Sequence[Column], rows: Sequence[Row], *, title: str = "") -> None:
        # A column with nothing in it (no device measured power, say) is not shown at all; one
        # that says the same in every row says it once, in the title.
        said_once = []
        used = []
        for i, c in enumerate(columns):
            values = {_plain(r.cells[i]) for r in rows}
            if c.in_title and len(values) == 1 and values != {""}:
                said_once.append(c.in_title.format(values.pop()))
            elif not c.optional or any(_width(r.cells[i]) for r in rows):
                used.append(i)
        self.columns = [columns[i] for i in used]
        self.rows = [Row(r.key, [r.cells[i] for i in used]) for r in rows]
        self.title = " ".join(filter(None, [title] + said_once))

    def __rich_console__(self, console_: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        kept = fit_columns(self.columns, self.rows, width)
        naturals = {i: _need(self.columns[i], [r.cells[i] for r in self.rows]) for i in kept}
        flexible = [i for i in kept if self.columns[i].flexible]
        room = width - sum(n for i, n in naturals.items() if i not in flexible) - _GAP * (len(kept) - 1)
        widths = naturals
        if flexible and sum(naturals[i] for i in flexible) > room:
            widths = dict(naturals)
            widths.update(_allot({i: naturals[i] for i in flexible}, room))
        if self.title:  # a line of its own: a table's title would wrap at the table's width
            yield Text(self.title, style="bold")
        table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False, header_style="bold")
        for i in kept:
            c = self.columns[i]
            table.add_column(c.header, justify=c.justify,  # type: ignore[arg-type]
                             no_wrap=not c.flexible, overflow="fold" if c.flexible else "ellipsis",
                             max_width=widths[i] if c.flexible else None)
        for row in self.rows:
            cells = []
            for i in kept:
                cell = row.cells[i]
                if self.columns[i].flexible and _width(cell) > widths[i]:
                    wrapped = wrap_name(_plain(cell), widths[i])
                    cell = Text(wrapped, style=cell.style) if isinstance(cell, Text) else wrapped
                cells.append(cell)
            table.add_row(*cells)
        yield table
        moved = [i for i in range(len(self.columns)) if i not in kept]
        for row in self.rows:
            values = [f"{_plain(row.cells[i])} {self.columns[i].unit}".strip()
                      for i in moved if _width(row.cells[i])]
            if values:
                yield Text(f"{row.key}: " + ", ".join(values), style="dim")


def _plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def _state(job: farm_pb2.Job, text: Optional[str] = None) -> Text:
    name = state_name(job.state)
    return Text(text or name, style=_STATE_STYLE.get(name, ""))


def _unavailable(result: farm_pb2.BenchmarkResult) -> Dict[str, str]:
    """Every figure the result lacks, by "section.field": those it names with their reasons, and
    any measured figure (proto3 optional) it leaves unset."""
    missing = {u.field: u.reason for u in result.unavailable}
    for section in ("latency", "memory", "power", "thermal"):
        part = getattr(result, section)
        for field in part.DESCRIPTOR.fields:
            if field.message_type is not None:
                continue
            try:
                present = part.HasField(field.name)
            except ValueError:  # a plain proto3 scalar or a list: no presence to check
                continue
            if not present:
                missing.setdefault(f"{section}.{field.name}", "not measured")
    return missing


def _measured(msg: Any, name: str) -> Optional[Any]:
    """A measured figure (proto3 optional), or None when the device did not measure it."""
    return getattr(msg, name) if msg.HasField(name) else None


def _fmt(value: Optional[float], spec: str, unit: str = "", scale: float = 1.0) -> str:
    return "unknown" if value is None else f"{value * scale:{spec}}{unit}"


# ---------------------------------------------------------------- results

_UNKNOWN = Text("-", style="dim")


def _power_and_heat(result: farm_pb2.BenchmarkResult) -> Tuple[Optional[float], Optional[float]]:
    """Mean active watts and the hottest zone's maximum, None where the device has no sensor."""
    watts = _measured(result.power, "active_watts") if result.HasField("power") else None
    temps = [z.max_celsius for z in result.thermal.zones if z.HasField("max_celsius")] \
        if result.HasField("thermal") else []
    return watts, (max(temps) if temps else None)


def power_and_heat_cells(result: farm_pb2.BenchmarkResult) -> List[str]:
    """Active watts, millijoules per inference, hottest zone, throttled share: 'unknown' where
    the device has no sensor for it (the reason is in `jobs show`)."""
    power, thermal = result.power, result.thermal
    has_power = result.HasField("power")
    watts = _fmt(_measured(power, "active_watts") if has_power else None, ".2f")
    energy = _fmt(_measured(power, "energy_per_inference_joules") if has_power else None, ".3f", scale=1e3)
    _, hottest = _power_and_heat(result)
    throttled = "unknown"
    if result.HasField("thermal") and thermal.HasField("throttled"):
        throttled = _fmt(_measured(thermal, "throttled_fraction"), ".0%") if thermal.throttled else "no"
    return [watts, energy, _fmt(hottest, ".1f"), throttled]


_MODEL = Column("model", flexible=True, in_title="{}")
_DEVICE = Column("device", flexible=True, in_title="on {}")

_COMPACT_COLUMNS = [
    Column("job"), _MODEL, _DEVICE, Column("state"),
    Column("p50\nms", "right"), Column("p99\nms", "right"), Column("peak\nMiB", "right"),
    Column("W", "right", optional=True, unit="W"), Column("max\n°C", "right", optional=True, unit="°C"),
]

_WIDE_COLUMNS = [
    Column("job"), Column("run"), _MODEL, _DEVICE,
    Column("state"), Column("p50 ms", "right"), Column("p90 ms", "right"), Column("p99 ms", "right"),
    Column("cv", "right"), Column("inf/s", "right"), Column("peak MiB", "right"),
    Column("+model MiB", "right"), Column("W", "right"), Column("mJ/inf", "right"),
    Column("max °C", "right"), Column("throttled", "right"), Column("runs", "right"),
    Column("runtime", flexible=True),
]


def _compact_row(job: farm_pb2.Job, key: str) -> Row:
    cells: List[Cell] = [key, job.model_name, job.device_profile, _state(job)]
    if not job.HasField("result"):
        return Row(key, cells + [""] * 5)
    r = job.result
    lat, mem = r.latency, r.memory
    missing = _unavailable(r)
    watts, hottest = _power_and_heat(r)
    mark = "*" if r.environment.simulated else "^" if r.environment.recorded else ""
    timing = "†" if r.environment.emulated else ""  # under emulation a time means nothing
    cells += [
        _ms_short(lat.p50_seconds) + timing, _ms_short(lat.p99_seconds) + timing,
        _UNKNOWN if "memory.peak_bytes" in missing else _mib_short(mem.peak_bytes),
        "" if watts is None else f"{watts:.1f}{mark}",
        "" if hottest is None else f"{hottest:.0f}{mark}",
    ]
    return Row(key, cells)


def _wide_row(job: farm_pb2.Job, key: str, run_key: str) -> Row:
    cells: List[Cell] = [key, run_key, job.model_name, job.device_profile, _state(job)]
    if not job.HasField("result"):
        return Row(key, cells + [""] * 13)
    r = job.result
    lat, mem, env = r.latency, r.memory, r.environment
    missing = _unavailable(r)
    provider = env.execution_provider.replace("ExecutionProvider", "")
    cells += [
        ms(lat.p50_seconds), ms(lat.p90_seconds), ms(lat.p99_seconds),
        f"{lat.cv:.2f}", f"{lat.throughput_per_second:.0f}",
        "unknown" if "memory.peak_bytes" in missing else mib(mem.peak_bytes),
        "unknown" if "memory.model_delta_bytes" in missing else mib(mem.model_delta_bytes),
        *power_and_heat_cells(r),
        str(timed_runs(lat)),
        f"{env.runtime} {env.runtime_version}" + (f" {provider}" if provider else "")
        + (", SIMULATED sensors" if env.simulated else "")
        + (", EMULATED (timings mean nothing)" if env.emulated else "")
        + (", recorded sensors" if env.recorded else ""),
    ]
    return Row(key, cells)


def results_table(jobs: Iterable[farm_pb2.Job], *, wide: bool = False, point_to_detail: bool = True) -> Group:
    """One row per job with the headline figures; failures, warnings, budgets and what could not
    be measured on lines of their own under the table."""
    jobs = list(jobs)
    keys = short_ids(j.id for j in jobs)
    run_keys = short_ids(j.run_id for j in jobs)
    if wide:
        table = FittedTable(_WIDE_COLUMNS, [_wide_row(j, keys.get(j.id, ""), run_keys.get(j.run_id, ""))
                                            for j in jobs])
    else:
        table = FittedTable(_COMPACT_COLUMNS, [_compact_row(j, keys.get(j.id, "")) for j in jobs])
    return Group(table, *result_notes(jobs, keys, wide=wide, point_to_detail=point_to_detail))


def result_notes(jobs: Sequence[farm_pb2.Job], keys: Dict[str, str], *, wide: bool = False,
                 point_to_detail: bool = True) -> List[object]:
    """What the table cannot say, one line each: failures, warnings, budgets, placement, and once
    per device what it could not measure."""
    notes: List[object] = []
    unmeasured: Dict[str, Tuple[List[str], str]] = {}  # device -> (sections, a job to look at)
    simulated, recorded, emulated = set(), set(), set()
    for job in jobs:
        key = keys.get(job.id, short_id(job.id))
        if job.HasField("failure"):
            f = job.failure
            notes.append(Text(f"{key} {state_name(job.state)} ({failure_category_name(f.category)}): "
                              f"{strip_terminal_escapes(f.message)}", style="red"))
        if job.HasField("result"):
            r = job.result
            missing = _unavailable(r)
            watts, hottest = _power_and_heat(r)
            sections = [name for name, value in (("power", watts), ("temperature", hottest)) if value is None]
            if sections and job.device_profile not in unmeasured:
                unmeasured[job.device_profile] = (sections, key)
            if r.environment.simulated:
                simulated.add(job.device_profile)
            if r.environment.recorded:
                recorded.add(job.device_profile)
            if r.environment.emulated:
                emulated.add(job.device_profile)
            if r.latency.repeats > 1:
                notes.append(Text(f"{key} {repeats_line(r)}"))
            if r.HasField("stability") and not r.stability.steady:
                notes.append(Text(f"{key} UNSTEADY: no evidence for a regression check (the warnings say why)",
                                  style="bold yellow"))
            for warning in r.warnings:
                notes.append(Text(f"{key} warning: {warning}", style="yellow"))
            if wide:
                for section in ("power", "thermal"):
                    if section in missing:
                        notes.append(Text(f"{key} {section} unknown: {missing[section]}", style="dim"))
        if job.verdicts:
            notes.append(verdicts_table(job, key, brief=point_to_detail))
        notes.extend(placement_lines(job, key))
    for device, (sections, key) in unmeasured.items():
        why = f" (why: `hilfarm jobs show {key}`)" if point_to_detail else ""
        notes.append(Text(f"{device}: no {' or '.join(sections)} readings{why}", style="dim"))
    for device in sorted(simulated):
        notes.append(Text(f"* {device}: SIMULATED sensors — power and temperature come from a model, "
                          "not a measurement", style="yellow"))
    for device in sorted(recorded):
        notes.append(Text(f"^ {device}: recorded sensors — power and temperature were read from a recording, "
                          "not from this run", style="yellow"))
    for device in sorted(emulated):
        notes.append(Text(f"† {device}: EMULATED — the CPU is emulated, so its timings mean nothing",
                          style="yellow"))
    return notes


def repeats_line(r: farm_pb2.BenchmarkResult) -> str:
    """'5 processes, medians 1.02-1.08 ms, 1.9 % apart': how far the repeats of a job agreed."""
    lat = r.latency
    text = f"{lat.repeats} processes, medians {ms(lat.repeat_p50_min_seconds)}-{ms(lat.repeat_p50_max_seconds)} ms"
    if lat.HasField("between_repeat_spread"):
        text += f", {lat.between_repeat_spread:.1%} apart"
    return text


_VERDICT_STYLE = {farm_pb2.VERDICT_STATUS_PASS: ("pass", "green"), farm_pb2.VERDICT_STATUS_FAIL: ("FAIL", "red")}


def verdicts_table(job: farm_pb2.Job, key: str, *, brief: bool = False) -> Group:
    """The job's budgets, one line each: pass, FAIL or unknown, the figure measured and the
    headroom, or why it could not be measured (``brief``: where to read why)."""
    from hilfarm.constraints import format_value

    title = Text(f"{key} budgets" + (f" ({job.constraint_set})" if job.constraint_set else "")
                 + f", {job.model_name} on {job.device_profile}:")
    table = Table(box=None, padding=(0, 1), pad_edge=True, show_header=False, show_edge=False)
    for justify in ("left", "left", "right", "left"):
        table.add_column(justify=justify)  # type: ignore[arg-type]
    table.columns[-1].overflow = "fold"
    for v in job.verdicts:
        word, style = _VERDICT_STYLE.get(v.status, ("unknown", "yellow"))
        budget = f"{v.constraint} {v.comparison} {format_value(v.budget, v.unit)}"
        if v.HasField("measured"):
            measured = format_value(v.measured, v.unit)
            margin = f"margin {format_value(v.margin, v.unit)}" if v.HasField("margin") else ""
        else:
            measured = "unknown"
            margin = f"not measured (why: `hilfarm jobs show {key}`)" if brief else v.reason
        table.add_row(Text(word, style=style), budget, measured, margin)
    return Group(title, table)


def verdict_line(job: farm_pb2.Job) -> Text:
    """The job's budgets in one line (for places with room for one line only)."""
    from hilfarm.constraints import format_value

    parts = []
    for v in job.verdicts:
        word = _VERDICT_STYLE.get(v.status, ("unknown", ""))[0]
        parts.append(f"{v.constraint} {v.comparison} {format_value(v.budget, v.unit)} {word}")
    return Text("; ".join(parts))


_MAX_PLACEMENT_LINES = 3


def placement_lines(job: farm_pb2.Job, key: str) -> List[Text]:
    """Why a queued job waits, one line per agent (the first few)."""
    notes = list(job.placement_notes)
    if not notes:
        return []
    shown = notes[:_MAX_PLACEMENT_LINES]
    lines = [Text(f"{key} waits for {job.device_profile}: {shorten_ids(note)}", style="magenta") for note in shown]
    if len(notes) > len(shown):
        lines.append(Text(f"{key} ... {len(notes) - len(shown)} more (`hilfarm jobs show {key}`)", style="magenta"))
    return lines


# ---------------------------------------------------------------- progress

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


_PROGRESS_COLUMNS = [
    Column("job"), _MODEL, _DEVICE, Column("state"),
    Column("runs", "right"), Column("last\nms", "right"), Column("time\ns", "right"),
    Column("device now", optional=True),
]


def progress_table(jobs: Iterable[farm_pb2.Job]) -> Group:
    """Jobs being followed: what each does now; why a queued one waits on lines under it."""
    jobs = list(jobs)
    keys = short_ids(j.id for j in jobs)
    rows = []
    notes: List[object] = []
    for job in jobs:
        key = keys[job.id] if job.id in keys else ""
        p = job.progress
        state = state_name(job.state)
        doing = p.phase if state == "running" and p.phase else state
        if job.attempt > 1:
            doing += f" {job.attempt}/{job.max_attempts}"
        # The target is a minimum: past it (a minimum duration still running) the count alone.
        runs = (f"{p.runs_done}/{p.runs_target}" if p.runs_done < p.runs_target
                else (str(p.runs_done) if p.runs_done else ""))
        if p.repeats > 1:
            doing += f" {p.repeat}/{p.repeats}"  # which of the job's processes
        rows.append(Row(key, [
            key, job.model_name, job.device_profile, _state(job, doing), runs,
            _ms_short(p.latest_latency_seconds) if p.latest_latency_seconds else "",
            f"{p.elapsed_seconds:.1f}" if p.elapsed_seconds else "", live_readings(p),
        ]))
        notes.extend(placement_lines(job, key))
    return Group(FittedTable(_PROGRESS_COLUMNS, rows), *notes)


# ---------------------------------------------------------------- jobs and devices

def _when(ts: float, now: Optional[float] = None) -> str:
    if not ts:
        return ""
    now = time.time() if now is None else now
    return time.strftime("%H:%M:%S" if now - ts < 20 * 3600 else "%Y-%m-%d", time.localtime(ts))


def jobs_table(jobs: Iterable[farm_pb2.Job], *, wide: bool = False) -> FittedTable:
    jobs = list(jobs)
    keys = short_ids(j.id for j in jobs)
    run_keys = short_ids(j.run_id for j in jobs)
    columns = [Column("job"), Column("model", flexible=True), Column("device", flexible=True),
               Column("state", flexible=True), Column("p50 ms", "right"), Column("created")]
    if wide:
        columns += [Column("run"), Column("attempt", "right"), Column("agent", flexible=True),
                    Column("finished")]
    rows = []
    for job in jobs:
        state = state_name(job.state)
        if job.HasField("failure"):
            state += f" ({failure_category_name(job.failure.category)})"
        # Only a result has a p50: a failed, cancelled or waiting job shows none, not 0.
        p50 = ms(job.result.latency.p50_seconds) if job.HasField("result") else ""
        cells: List[Cell] = [keys[job.id], job.model_name, job.device_profile, _state(job, state), p50,
                             _when(job.created_at)]
        if wide:
            cells += [run_keys.get(job.run_id, ""), f"{job.attempt}/{job.max_attempts}", job.agent_id,
                      _when(job.finished_at)]
        rows.append(Row(keys[job.id], cells))
    return FittedTable(columns, rows)


def _runtimes_text(caps: farm_pb2.Capabilities) -> str:
    return ", ".join(f"{r.name} {r.version}".strip() for r in caps.runtimes if r.name != "null")


def devices_table(devices: Iterable[farm_pb2.Device], *, wide: bool = False) -> FittedTable:
    columns = [Column("agent", flexible=True), Column("profile", flexible=True), Column("state"),
               Column("runtimes", flexible=True), Column("job")]
    if wide:
        columns += [Column("tags", flexible=True), Column("cores", "right"), Column("memory GiB", "right"),
                    Column("version"), Column("last seen")]
    rows = []
    for d in devices:
        caps = d.capabilities
        profile = d.device_profile + (" (EMULATED)" if caps.emulation else "")
        cells: List[Cell] = [d.agent_id, profile, Text(d.state, style=_DEVICE_STATE_STYLE.get(d.state, "")),
                             _runtimes_text(caps), short_id(d.current_job_id)]
        if wide:
            cells += [",".join(d.tags), str(caps.cpu_cores), f"{caps.memory_bytes / GIB:.1f}",
                      d.agent_version, _when(d.last_seen)]
        rows.append(Row(d.agent_id, cells))
    return FittedTable(columns, rows)


_DEVICE_STATE_STYLE = {"idle": "green", "busy": "cyan", "offline": "red", "draining": "yellow"}


def device_detail(d: farm_pb2.Device) -> Group:
    """`hilfarm devices show`: one agent as people read it."""
    caps = d.capabilities
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    for key, value in (
        ("agent", d.agent_id),
        ("profile", d.device_profile),
        ("state", Text(d.state, style=_DEVICE_STATE_STYLE.get(d.state, ""))),
        ("job", d.current_job_id or "-"),
        ("tags", ", ".join(d.tags) or "-"),
        ("host", f"{d.hostname or '-'} ({caps.machine}, {caps.cpu_cores} cores, "
                 f"{format_bytes(caps.memory_bytes, 'GiB')})"),
        ("system", f"{caps.os} / kernel {caps.kernel} / Python {caps.python_version}"),
        ("agent version", d.agent_version or "-"),
        ("last seen", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.last_seen)) if d.last_seen else "never"),
        ("accelerators", ", ".join(caps.accelerators) or "none found"),
        ("emulated", f"EMULATED: {caps.emulation}" if caps.emulation else "no"),
    ):
        head.add_row(key, value)
    runtimes = FittedTable(
        [Column("runtime"), Column("version"), Column("package"), Column("providers / delegates", flexible=True)],
        [Row(r.name, [r.name, r.version, r.package, ", ".join(r.execution_providers) or "-"]) for r in caps.runtimes],
    )
    return Group(head, Text(""), runtimes)


# ---------------------------------------------------------------- one job in full

def job_detail(job: farm_pb2.Job) -> Group:
    """Everything about one job, for `hilfarm jobs show`."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    head.add_row("job", job.id)
    head.add_row("run", job.run_id)
    head.add_row("model", f"{job.model_name} ({job.model_format}, sha256 {job.model_sha256[:16]}…)")
    head.add_row("device", f"{job.device_profile} on agent {job.agent_id or '-'}")
    head.add_row("state", f"{state_name(job.state)}, attempt {job.attempt} of {job.max_attempts}")
    times = [(name, ts) for name, ts in (("created", job.created_at), ("started", job.started_at),
                                         ("finished", job.finished_at)) if ts]
    if times:
        head.add_row("times", ", ".join(f"{name} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))}"
                                        for name, ts in times))
    # The table's pointer to `jobs show` would point here: "not measured" below says why.
    parts: list = [head, Text(""), results_table([job], point_to_detail=False)]
    if job.HasField("result"):
        r = job.result
        lat, mem, env = r.latency, r.memory, r.environment
        missing = _unavailable(r)
        figures = Table(title="figures", show_header=False, title_justify="left")
        figures.add_column("figure")
        figures.add_column("value", justify="right")
        figures.add_column("source", overflow="fold")
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
            ("memory baseline peak", _or_unknown(missing, "memory.baseline_peak_bytes", format_bytes(mem.baseline_peak_bytes, "MiB")), "¹"),
            ("memory peak", _or_unknown(missing, "memory.peak_bytes", format_bytes(mem.peak_bytes, "MiB")), "¹"),
            ("memory due to model", _or_unknown(missing, "memory.model_delta_bytes", format_bytes(mem.model_delta_bytes, "MiB")), "¹"),
            ("model file", _or_unknown(missing, "memory.model_file_bytes", format_bytes(mem.model_file_bytes, "MiB")), ""),
        ]
        for row in rows:
            figures.add_row(*row)
        if mem.source:
            figures.caption = f"¹ {mem.source}"
            figures.caption_justify = "left"
        parts.append(figures)
        envt = Table(title="environment", show_header=False, title_justify="left")
        envt.add_column("key")
        envt.add_column("value", overflow="fold")
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
            ("recorded readings", ("; ".join(env.recorded_sources) or "yes") if env.recorded else "no"),
        ):
            envt.add_row(key, value)
        parts.append(envt)
        parts.extend(_repeat_tables(r))
        parts.extend(_power_and_thermal_tables(r))
        parts.extend(_sustained_tables(r))
        if r.HasField("op_profile"):
            from hilfarm.op_profiles import op_profile_table

            parts.extend(op_profile_table(r.op_profile))
        parts.extend(unknown_lines(r))
    if job.HasField("failure") and job.failure.detail:
        parts.append(Text("detail:\n" + strip_terminal_escapes(job.failure.detail), style="dim"))
    return Group(*parts)


def unknown_lines(r: farm_pb2.BenchmarkResult) -> List[object]:
    """What was not measured, grouped by reason: one reason is said once, under every figure it
    explains (a device without a power sensor leaves four power figures unknown for one reason)."""
    by_reason: Dict[str, List[str]] = {}
    for u in r.unavailable:
        by_reason.setdefault(u.reason, []).append(u.field)
    if not by_reason:
        return []
    lines: List[object] = [Text("not measured:", style="bold yellow")]
    for reason, fields in by_reason.items():
        lines.append(Padding(Text(", ".join(fields), style="yellow"), (0, 0, 0, 2)))
        lines.append(Padding(Text(reason, style="dim"), (0, 0, 0, 4)))
    return lines


def _repeat_tables(r: farm_pb2.BenchmarkResult) -> list:
    """One row per process of the job, whether the runs were steady, and how quiet the device was."""
    out: list = []
    if r.repeats:
        title = f"repeats: {repeats_line(r)}" if len(r.repeats) > 1 else "one process (repeats=1)"
        table = FittedTable(
            [Column("#", "right"), Column("runs", "right"), Column("p50 ms", "right"), Column("p99 ms", "right"),
             Column("cv", "right", optional=True), Column("drift", "right", optional=True),
             Column("warmup s", "right"), Column("peak MiB", "right", optional=True), Column("steady")],
            [Row(str(rep.index), [
                str(rep.index + 1), str(rep.count), _opt(rep, "p50_seconds", ms), _opt(rep, "p99_seconds", ms),
                _opt(rep, "cv", lambda v: f"{v:.2f}"), _opt(rep, "drift_ratio", lambda v: f"{v:.3f}"),
                _opt(rep, "warmup_seconds", lambda v: f"{v:.2f}"), _opt(rep, "peak_bytes", mib),
                "yes" if rep.steady else Text("NO", style="bold yellow"),
            ]) for rep in r.repeats])
        out += [Text(title, style="bold"), table]
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


def _opt(msg: Any, name: str, text: Callable[[Any], str]) -> str:
    return text(getattr(msg, name)) if msg.HasField(name) else "-"


def _power_and_thermal_tables(r: farm_pb2.BenchmarkResult) -> list:
    tables = []
    if r.HasField("power"):
        p = r.power
        sim = " (simulated)" if p.simulated else " (recorded)" if p.recorded else ""
        rate = _fmt(_measured(p, "sample_rate_hz"), ".1f", " Hz")
        power = Table(title=f"power ({p.sensor}, {rate}){sim}", show_header=False,
                      title_justify="left")
        power.add_column("figure")
        power.add_column("value", justify="right")
        power.add_row("idle", _fmt(_measured(p, "idle_watts"), ".3f", " W"))
        power.add_row("active (timed runs)", _fmt(_measured(p, "active_watts"), ".3f", " W"))
        power.add_row(f"energy per inference ({p.energy_method or 'unknown method'})",
                      _fmt(_measured(p, "energy_per_inference_joules"), ".4f", " mJ", 1e3))
        for rail in p.rails:
            power.add_row(f"rail {rail.rail}", _fmt(_measured(rail, "mean_watts"), ".3f", " W"))
        tables.append(power)
    if r.HasField("thermal"):
        t = r.thermal
        sim = " (simulated)" if t.simulated else " (recorded)" if t.recorded else ""
        if not t.HasField("throttled"):
            verdict = "throttling unknown"
        elif t.throttled:
            verdict = f"throttled {_fmt(_measured(t, 'throttled_fraction'), '.0%')} of the run"
        else:
            verdict = "not throttled"
        heat = Table(title=f"thermal: {verdict}, cooled down {_fmt(_measured(t, 'cooldown_seconds'), '.1f', ' s')} first{sim}",
                     title_justify="left")
        for column in ("zone / clock", "start", "max", "end", "source"):
            heat.add_column(column, overflow="fold")
        for z in t.zones:
            heat.add_row(z.zone, *(_fmt(_measured(z, name), ".1f", " °C")
                                   for name in ("start_celsius", "max_celsius", "end_celsius")), z.sensor)
        for c in t.clocks:
            ceiling = f" (allowed {c.allowed_max_hz / 1e6:.0f} MHz)" if c.HasField("allowed_max_hz") else ""
            heat.add_row(c.domain, _fmt(_measured(c, "min_hz"), ".0f", " MHz", 1e-6),
                         _fmt(_measured(c, "max_hz"), ".0f", " MHz", 1e-6) + ceiling, "", "cpufreq / device")
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
                        f"windows of {s.window_seconds:g} s{sim}", title_justify="left")
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


def _or_unknown(missing: Dict[str, str], field: str, text: str) -> str:
    # The reason is said once, under "not measured" (unknown_lines).
    return "unknown" if field in missing else text
