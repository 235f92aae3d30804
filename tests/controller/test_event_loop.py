"""The event loop a controller serves on: uvloop's where it is installed (the controller extra),
asyncio's own when asked for, and a clear refusal, before anything is opened, when uvloop is
asked for and cannot be imported (controller/server.py ``chosen_event_loop``)."""
from __future__ import annotations

import logging
import sys

import pytest

from hilfarm.controller.errors import CannotStart
from hilfarm.controller.server import Controller, chosen_event_loop
from hilfarm.v1 import farm_pb2 as pb

from .conftest import onnx_bytes, sample_result

pytest.importorskip("uvloop", reason="the controller extra installs uvloop on Linux and macOS")


@pytest.mark.parametrize("asked, module", [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_a_controller_serves_on_the_event_loop_it_was_given(make_farm, caplog, asked, module):
    caplog.set_level(logging.INFO, logger="hilfarm.controller")
    farm = make_farm(event_loop=asked)
    loop = farm.controller._loop
    assert loop is not None and type(loop).__module__.split(".")[0] == module
    # It serves: a submission, a lease, a report and the finished job, all through this loop.
    (job,) = farm.submit([farm.upload(onnx_bytes(4096))], ["rpi5"]).jobs
    agent = farm.agent("pi-1")
    agent.register()
    lease = agent.lease()
    assert lease.job.id == job.id
    agent.report(lease, result=sample_result())
    assert farm.job(job.id).state == pb.JOB_STATE_SUCCEEDED
    assert any(f"{module} event loop" in r.getMessage() for r in caplog.records if "listening on" in r.getMessage())


def test_uvloop_asked_for_and_missing_is_refused_before_anything_is_opened(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    with pytest.raises(CannotStart, match="--event-loop uvloop: uvloop cannot be imported.*--event-loop asyncio"):
        Controller(data_dir=tmp_path / "controller", event_loop="uvloop")
    assert not (tmp_path / "controller" / "hilfarm.db").exists(), "no database was opened"
    assert chosen_event_loop("auto") == "asyncio", "without uvloop, auto serves on asyncio's loop"


def test_an_unknown_event_loop_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="'trio'.*auto, uvloop, asyncio"):
        chosen_event_loop("trio")


def test_the_cli_offers_the_event_loops_the_controller_knows():
    # The CLI lists them itself (it imports the server only when it serves); they must not drift.
    from hilfarm.cli.controller import controller_serve
    from hilfarm.controller.server import EVENT_LOOPS

    (option,) = [p for p in controller_serve.params if p.name == "event_loop"]
    assert tuple(option.type.choices) == EVENT_LOOPS and option.default == "auto"
