"""The CLI as a person sees it: `hilfarm` driven in a real pseudo-terminal (pexpect) 80 and 120
columns wide, its output rendered by a terminal emulator (pyte) into the screen they would read,
against an embedded farm (`hilfarm up`: a real controller and agent, real child processes)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from hilfarm.client import FarmClient
from hilfarm.display import _ms_short, short_ids
from hilfarm.v1 import farm_pb2

from .pseudo_terminal import Terminal, terminal_environment

pytest.importorskip("onnxruntime")

HILFARM = str(Path(sys.executable).with_name("hilfarm"))
QUICK = ["--runs", "20", "--min-seconds", "0.1", "--warmup-seconds", "0.05"]
COLOR = re.compile(r"\x1b\[[0-9;]*(?:3[0-7]|38;[0-9;]+|9[0-7])m")


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """`hilfarm up` as a person starts it, on a port of its choosing."""
    root = tmp_path_factory.mktemp("farm")
    log = root / "up.log"
    with log.open("w") as out:
        proc = subprocess.Popen([HILFARM, "up", "--bind", "127.0.0.1:0", "--data-dir", str(root / "data"),
                                 "--metrics-bind", "127.0.0.1:0"], stdout=out, stderr=subprocess.STDOUT, cwd=root)
    address = ""
    deadline = time.monotonic() + 60
    while not address:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        found = re.search(r"hilfarm is up: controller (127\.0\.0\.1:\d+)", log.read_text())
        address = found.group(1) if found else ""
        time.sleep(0.1)
    yield address, log
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from hilfarm.sample_models import make_onnx_mlp

    root = tmp_path_factory.mktemp("models")
    return {
        "det": make_onnx_mlp(root / "ppocr_det_v4_mobile.onnx", in_features=64, hidden=128),
        "rec": make_onnx_mlp(root / "rec.onnx", in_features=32, hidden=64, dynamic_batch=True),
    }


# A job that measures for about a minute whatever the machine's speed: ten processes of up to a
# minute or a million runs each (the most the controller allows a job), at least 5 us a run.
A_MINUTE = ["--min-seconds", "60", "--max-seconds", "60", "--max-runs", "1000000", "--repeats", "10"]


def environment(address: str, **extra: str) -> Dict[str, str]:
    return terminal_environment(HILFARM_CONTROLLER=address, **extra)


def hilfarm_terminal(address: str, args: Sequence[str], cols: int, **env: str) -> Terminal:
    """`hilfarm ARGS` against the farm at ``address`` in a terminal ``cols`` wide."""
    return Terminal([HILFARM, *args], cols, environment(address, **env))


def run(address: str, args: Sequence[str], cols: int, **env: str) -> Tuple[int, List[str], str]:
    term = hilfarm_terminal(address, args, cols, **env)
    code = term.finish()
    return code, term.screen(), term.raw


def jobs_by_id(address: str, job_ids: Sequence[str]) -> List[farm_pb2.Job]:
    with FarmClient(address) as client:
        return [client.get_job(j) for j in job_ids]


def printed_job_ids(lines: Sequence[str]) -> List[str]:
    """The ids `submit` printed as it created the jobs ("job 1a2b3c4d  model on device")."""
    return [m.group(1) for line in lines for m in [re.match(r"job ([0-9a-f]{8,})\s", line)] if m]


@pytest.mark.parametrize("cols", [80, 120])
def test_submit_wait_shows_job_ids_and_figures_that_fit(farm, models, cols):
    address, _ = farm
    code, lines, raw = run(address, ["submit", str(models["det"]), str(models["rec"]), "--device", "local",
                                     "--input-shape", "rec:x=4,32", *QUICK, "--wait"], cols)
    text = "\n".join(lines)
    assert code == 0, text
    ids = printed_job_ids(lines)
    assert len(ids) == 2, text
    jobs = jobs_by_id(address, ids)  # the printed prefixes name the jobs
    assert all(j.state == farm_pb2.JOB_STATE_SUCCEEDED for j in jobs)
    keys = short_ids(j.id for j in jobs)
    table = lines[next(i for i, line in enumerate(lines) if line.strip() == "on local"):]
    assert "…" not in "\n".join(table), "nothing in the results is cut off"
    for job in jobs:
        lat = job.result.latency
        # Each job's row holds its id, its p50 and p99 and its peak memory: nothing wrapped away.
        row = next(line for line in lines if line.startswith(keys[job.id] + " "))
        cells = row.split()
        assert _ms_short(lat.p50_seconds) in cells and _ms_short(lat.p99_seconds) in cells, row
        assert job.model_name.split("_")[0] in row
    assert "local: no power or temperature readings" in text or " W " in text
    assert not COLOR.search(raw) or "succeeded" in text  # colour is allowed on a terminal


def test_ctrl_c_detaches_and_says_which_jobs_go_on(farm, models):
    address, _ = farm
    term = hilfarm_terminal(address, ["submit", str(models["det"]), "--device", "local", "--runs", "20",
                                      *A_MINUTE, "--wait"], 80)
    term.expect("measuring")
    term.child.sendintr()
    code = term.finish(timeout=30)
    lines = term.screen()
    text = "\n".join(lines)
    assert code == 130, text
    (job_id,) = printed_job_ids(lines)
    assert "interrupted: 1 job goes on running on the farm" in text
    assert f"follow:  hilfarm jobs watch {job_id}" in text and f"cancel:  hilfarm jobs cancel {job_id}" in text
    assert "Aborted!" not in text and "Traceback" not in text
    (job,) = jobs_by_id(address, [job_id])
    assert job.state in (farm_pb2.JOB_STATE_RUNNING, farm_pb2.JOB_STATE_LEASED), "Ctrl-C leaves the job running"
    code, lines, _ = run(address, ["jobs", "cancel", job_id], 80)
    assert code == 0 and f"{job_id}: cancelled" in lines
    wait_until_idle(address)


def test_cancel_on_interrupt_cancels(farm, models):
    address, _ = farm
    term = hilfarm_terminal(address, ["submit", str(models["det"]), "--device", "local", *A_MINUTE,
                                      "--wait", "--cancel-on-interrupt"], 120)
    term.expect("measuring")
    term.child.sendintr()
    code = term.finish(timeout=30)
    text = "\n".join(term.screen())
    assert code == 130, text
    (job_id,) = printed_job_ids(term.screen())
    assert "interrupted: cancelling 1 job" in text and f"{job_id}" in text and "cancelled" in text
    (job,) = jobs_by_id(address, [job_id])
    assert job.state == farm_pb2.JOB_STATE_CANCELLED
    wait_until_idle(address)


def test_wait_timeout_gives_up_with_exit_2_and_the_job_ids(farm, models):
    address, _ = farm
    started = time.monotonic()
    code, lines, _ = run(address, ["submit", str(models["det"]), "--device", "local", *A_MINUTE,
                                   "--wait", "--wait-timeout", "3"], 80)
    text = "\n".join(lines)
    assert code == 2, text
    assert time.monotonic() - started < 30
    assert len(printed_job_ids(lines)) == 1, text
    (job_id,) = printed_job_ids(lines)
    assert "gave up waiting after 3 s: 1 job goes on running on the farm" in text
    assert f"hilfarm jobs cancel {job_id}" in text
    run(address, ["jobs", "cancel", job_id], 80)
    wait_until_idle(address)


@pytest.mark.parametrize("args, says", [
    (["--device", "locl"], "no agent has registered with device profile 'locl' (did you mean 'local'?)"),
    (["--device", "local", "--provider", "CUDAExecutionProvider"],
     "no agent of profile 'local' offers execution provider CUDAExecutionProvider"),
])
def test_a_job_no_agent_can_take_ends_within_seconds_with_exit_2(farm, models, args, says):
    address, _ = farm
    started = time.monotonic()
    code, lines, _ = run(address, ["submit", str(models["det"]), *args, "--wait"], 80)
    elapsed = time.monotonic() - started
    text = " ".join(line.strip() for line in lines)
    assert code == 2, text
    assert elapsed < 15, elapsed
    assert says in text and "--queue" in text
    with FarmClient(address) as client:
        assert not [j for j in client.list_jobs(limit=50) if j.device_profile == "locl"], "nothing was submitted"


def test_jobs_watch_of_a_finished_job_prints_the_result_and_no_progress_table(farm, models):
    address, _ = farm
    code, lines, _ = run(address, ["submit", str(models["det"]), "--device", "local", *QUICK, "--wait"], 80)
    assert code == 0
    (job_id,) = printed_job_ids(lines)
    code, lines, raw = run(address, ["jobs", "watch", job_id], 80)
    assert code == 0
    # The progress table's own columns (runs done, the last inference) never show for it.
    assert not re.search(r"\bruns\b.*\blast\b", raw) and "measuring" not in raw, "no 'running' table"
    assert any(line.startswith(job_id) and "succeeded" in line for line in lines)
    # The prefix shown is accepted wherever a job id is.
    code, lines, _ = run(address, ["jobs", "show", job_id[:6]], 80)
    assert code == 0 and any(re.match(r"job\s+" + job_id, line) for line in lines)


def test_jobs_list_at_80_columns_shows_whole_short_ids_and_no_zero_p50(farm, models):
    address, _ = farm
    run(address, ["submit", str(models["det"]), "--device", "local", "--queue", "--device", "nowhere"], 80)
    code, lines, _ = run(address, ["jobs", "list", "--limit", "5"], 80)
    assert code == 0
    with FarmClient(address) as client:
        listed = client.list_jobs(limit=5)
    keys = short_ids(j.id for j in listed)
    for job in listed:
        row = next(line for line in lines if line.startswith(keys[job.id] + " "))
        if job.state != farm_pb2.JOB_STATE_SUCCEEDED:
            assert "0.000" not in row, row
    queued = [j for j in listed if j.device_profile == "nowhere"]
    run(address, ["jobs", "cancel", *(j.id for j in queued)], 80)
    wait_until_idle(address)  # the job on `local` runs on: the next test wants the agent idle


def test_no_color_and_pipes_get_plain_text(farm, models):
    address, _ = farm
    # The agent's state is coloured (idle: green) on a terminal.
    _, _, coloured = run(address, ["devices", "list"], 80)
    assert COLOR.search(coloured), "a terminal gets colour"
    _, lines, plain = run(address, ["devices", "list"], 80, NO_COLOR="1")
    assert not COLOR.search(plain), "NO_COLOR: no colour"
    assert any(re.search(r"local\s+idle", line) for line in lines), lines
    piped = subprocess.run([HILFARM, "devices", "list"], capture_output=True, text=True,
                           env=environment(address), check=True)
    assert "\x1b" not in piped.stdout and re.search(r"local\s+idle", piped.stdout)


def test_a_second_farm_on_a_busy_address_stops_with_a_clear_message(farm, tmp_path):
    address, log = farm
    code, lines, _ = run(address, ["up", "--bind", address, "--data-dir", str(tmp_path / "second"), "--no-agent"], 80)
    text = " ".join(line.strip() for line in lines)
    assert code == 2, text
    assert f"cannot listen on {address}: the address is in use" in text
    assert "Traceback" not in text
    # `up` said how to reach it, since it is not the default address, and where its metrics are.
    said = log.read_text()
    assert f"export HILFARM_CONTROLLER={address}" in said
    assert f"hilfarm --controller {address} submit" in said
    metrics = re.search(r"metrics:\s+(http://127\.0\.0\.1:(\d+)/metrics)", said)
    assert metrics, said
    import urllib.request

    assert "hilfarm_agents" in urllib.request.urlopen(metrics.group(1), timeout=10).read().decode()
    # A busy metrics port: one clear line, exit 2, and nothing left listening.
    code, lines, _ = run(address, ["up", "--bind", "127.0.0.1:0", "--data-dir", str(tmp_path / "third"),
                                   "--no-agent", "--metrics-bind", f"127.0.0.1:{metrics.group(2)}"], 80)
    text = " ".join(line.strip() for line in lines)
    assert code == 2, text
    assert f"cannot serve metrics on 127.0.0.1:{metrics.group(2)}: Address already in use" in text
    assert "Traceback" not in text


def test_a_second_farm_on_a_served_data_dir_stops_with_a_clear_message(farm, tmp_path):
    """A second `up`, or a `demo`, on the first one's data dir (its SQLite database) says who
    serves it and stops; the first serves on."""
    address, log = farm
    with FarmClient(address) as client:
        devices = sorted(d.agent_id for d in client.list_devices())
    assert devices, "the first farm's local agent"
    for command in (["up", "--bind", "127.0.0.1:0", "--no-agent"], ["demo"]):
        code, _, raw = run(address, command + ["--data-dir", str(log.parent / "data")], 120)
        text = re.sub(r"\s+", " ", raw)  # the terminal wraps the long path; the raw text does not
        assert code == 2, (command, text)
        assert re.search(r"the SQLite database \S+hilfarm\.db is served by another controller \(pid \d+\); one "
                         r"SQLite database takes one controller", text), (command, text)
        assert "Traceback" not in text
    with FarmClient(address) as client:
        assert sorted(d.agent_id for d in client.list_devices()) == devices


def wait_until_idle(address: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with FarmClient(address) as client:
        while any(d.state == "busy" for d in client.list_devices()):
            assert time.monotonic() < deadline, "the agent stayed busy"
            time.sleep(0.1)


def test_a_wait_into_a_pipe_says_each_change_of_state(farm, models):
    """No progress table in a pipe or a CI log, but never silence: a line per change of state."""
    address, _ = farm
    done = subprocess.run([HILFARM, "submit", str(models["det"]), str(models["det"]), "--device", "local",
                           *QUICK, "--wait", "--json"], capture_output=True, text=True, env=environment(address),
                          timeout=120)
    assert done.returncode == 0, done.stderr
    first, second = (j["id"] for j in json.loads(done.stdout)["jobs"])
    keys = short_ids([first, second])
    lines = done.stderr.splitlines()
    assert any(line.startswith(f"{keys[first]} running on ") for line in lines), lines
    assert f"{keys[first]} succeeded" in lines and f"{keys[second]} succeeded" in lines
    # The second waited for the one agent, and said why.
    assert any(line.startswith(f"{keys[second]} queued, waits: ") for line in lines), lines
    assert "\x1b" not in done.stderr + done.stdout
