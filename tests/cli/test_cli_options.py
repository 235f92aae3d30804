"""How command-line options become job settings and exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hilfarm.cli import main

from hilfarm.cli.common import EXIT_FARM_FAILED, EXIT_MODEL_FAILED, EXIT_OK, exit_code_for, writable_file
from hilfarm.cli.job_settings import (add_input_shapes, build_settings, input_shapes_by_model, parse_input_shape,
                                      parse_size)
from hilfarm.client import Upload
from hilfarm.client import ModelFormatError, model_format
from hilfarm.v1 import farm_pb2


@pytest.mark.parametrize("text,expected", [("1048576", 1 << 20), ("512MiB", 512 << 20), ("2GB", 2_000_000_000),
                                           ("1.5GiB", 3 << 29), ("64 kib", 64 << 10)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "12 parsecs", "-5MB", "MB"])
def test_parse_size_rejects_nonsense(text):
    with pytest.raises(click.BadParameter, match="not a size"):
        parse_size(text)


def test_parse_input_shape():
    shape = parse_input_shape("images=1,3,640,640")
    assert (shape.name, list(shape.dims)) == ("images", [1, 3, 640, 640])
    for bad in ("images", "images=", "=1,2", "x=1,a", "x=0,3"):
        with pytest.raises(click.BadParameter, match="NAME=D1,D2"):
            parse_input_shape(bad)


def test_build_settings_maps_every_option():
    settings, npz = build_settings({
        "min_runs": 10, "min_seconds": 0.5, "threads": 2, "runtime": "tflite",
        "tflite_disable_xnnpack": True, "delegate_options": ("device=usb",),
        "memory_limit": "256MiB", "timeout_seconds": 30.0, "dynamic_dimension_default": 4,
        "seed": 7, "execution_provider": None, "inputs_file": None,
    })
    assert settings.min_runs == 10 and settings.min_seconds == 0.5 and settings.threads == 2
    assert settings.runtime == "tflite" and settings.tflite_disable_xnnpack
    assert dict(settings.tflite_delegate_options) == {"device": "usb"}
    assert settings.memory_limit_bytes == 256 << 20 and settings.timeout_seconds == 30.0
    assert settings.seed == 7 and settings.execution_provider == ""
    assert settings.dynamic_dimension_default == 4
    assert npz is None


def _upload(name: str, digest: str) -> Upload:
    return Upload(sha256=digest, size_bytes=1, format="onnx", filename=name, bytes_sent=0)


def test_input_shapes_say_which_model_they_are_for():
    models = [Path("models/det.onnx"), Path("other/rec.onnx")]
    by_model = input_shapes_by_model(
        ["det.onnx:images=1,3,640,640", "rec:x=1,3,48,320", "other/rec.onnx:len=1", "*:scale=1"], models)
    assert {k: [(s.name, list(s.dims)) for s in v] for k, v in by_model.items()} == {
        0: [("images", [1, 3, 640, 640])], 1: [("x", [1, 3, 48, 320]), ("len", [1])], None: [("scale", [1])]}
    settings = farm_pb2.JobSettings()
    add_input_shapes(settings, by_model, [_upload("det.onnx", "d" * 64), _upload("rec.onnx", "e" * 64)])
    assert [(s.name, s.model_sha256) for s in settings.input_shapes] == [
        ("images", "d" * 64), ("x", "e" * 64), ("len", "e" * 64), ("scale", "")]


def test_an_unqualified_input_shape_is_fine_with_one_model_and_ambiguous_with_several():
    one = input_shapes_by_model(["images=1,3,640,640", "input:0=1,224"], [Path("det.onnx")])
    # An input name may hold ':' (TensorFlow-style "input:0"): "input" names no model here.
    assert [(s.name, list(s.dims)) for s in one[None]] == [("images", [1, 3, 640, 640]), ("input:0", [1, 224])]
    with pytest.raises(click.BadParameter) as err:
        input_shapes_by_model(["images=1,3,640,640"], [Path("det.onnx"), Path("rec.onnx")])
    message = str(err.value)
    assert "does not say which model" in message and "det.onnx:images=1,3,640,640" in message
    assert "*:NAME" in message
    with pytest.raises(click.BadParameter, match="'dte.onnx' is not one of the submitted models"):
        input_shapes_by_model(["dte.onnx:images=1,3"], [Path("det.onnx"), Path("rec.onnx")])
    with pytest.raises(click.BadParameter, match="names 2 of the models"):
        input_shapes_by_model(["net.onnx:x=1"], [Path("a/net.onnx"), Path("b/net.onnx")])


def test_a_file_to_write_into_a_missing_directory_is_refused_before_any_work(tmp_path):
    param = click.Option(["--plot"])
    assert writable_file(None, param, tmp_path / "plot.png") == tmp_path / "plot.png"
    assert writable_file(None, param, Path("plot.png")) == Path("plot.png")
    with pytest.raises(click.BadParameter, match=r"cannot write .*plot\.png: the directory .*nope does not exist"):
        writable_file(None, param, tmp_path / "nope" / "plot.png")


def test_build_settings_rejects_bad_delegate_option():
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        build_settings({"delegate_options": ("novalue",)})


def _job(state, category=farm_pb2.FAILURE_CATEGORY_UNSPECIFIED):
    job = farm_pb2.Job(state=state)
    if state == farm_pb2.JOB_STATE_FAILED:
        job.failure.category = category
    return job


def test_exit_codes_say_whose_fault_it_is():
    ok = _job(farm_pb2.JOB_STATE_SUCCEEDED)
    model = _job(farm_pb2.JOB_STATE_FAILED, farm_pb2.FAILURE_CATEGORY_UNSUPPORTED_OP)
    farm = _job(farm_pb2.JOB_STATE_FAILED, farm_pb2.FAILURE_CATEGORY_INFRASTRUCTURE)
    cancelled = _job(farm_pb2.JOB_STATE_CANCELLED)
    assert exit_code_for([ok, ok]) == EXIT_OK
    assert exit_code_for([ok, model]) == EXIT_MODEL_FAILED
    assert exit_code_for([model, farm]) == EXIT_FARM_FAILED
    assert exit_code_for([cancelled]) == EXIT_FARM_FAILED


def test_model_format_from_extension_or_magic(tmp_path):
    onnx = tmp_path / "m.ONNX"
    onnx.write_bytes(b"\x08\x07")
    assert model_format(onnx) == "onnx"
    tfl = tmp_path / "model.bin"
    tfl.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 16)
    assert model_format(tfl) == "tflite"
    other = tmp_path / "weights.bin"
    other.write_bytes(b"PK\x03\x04" + b"\x00" * 16)
    with pytest.raises(ModelFormatError, match="name it"):
        model_format(other)


def test_sustained_option_maps_to_sustained_seconds_and_refuses_zero():
    from hilfarm.cli.jobs import submit
    from hilfarm.cli.local import demo

    settings, _ = build_settings({"sustained_seconds": 120.0, "timeout_seconds": 60.0})
    assert settings.sustained_seconds == 120.0 and settings.timeout_seconds == 60.0
    assert build_settings({"sustained_seconds": None})[0].sustained_seconds == 0.0
    for command in (submit, demo):
        option = next(p for p in command.params if p.name == "sustained_seconds")
        assert option.opts == ["--sustained"]
        assert option.type.convert("90", option, None) == 90.0
        with pytest.raises(click.BadParameter):
            option.type.convert("0", option, None)


def _device(agent_id, profile, runtimes=(("onnxruntime", ["CPUExecutionProvider"]),), tags=("lab",)):
    return farm_pb2.Device(agent_id=agent_id, device_profile=profile, tags=list(tags), capabilities=farm_pb2.Capabilities(
        runtimes=[farm_pb2.RuntimeInfo(name=n, version="1.0", execution_providers=p) for n, p in runtimes]))


def test_preflight_names_what_no_registered_agent_offers():
    from hilfarm.preflight import placement_problems

    farm = [_device("pi-1", "raspberry-pi-5"), _device("pi-2", "raspberry-pi-5"),
            _device("gpu-1", "nvidia-gpu-host", runtimes=(("onnxruntime", ["CUDAExecutionProvider", "CPUExecutionProvider"]),))]
    ok = placement_problems(farm, profiles=["raspberry-pi-5", "nvidia-gpu-host"], runtimes={"m.onnx": "onnxruntime"})
    assert ok == []
    typo = placement_problems(farm, profiles=["raspbery-pi-5"], runtimes={"m.onnx": "onnxruntime"})
    assert typo == ["no agent has registered with device profile 'raspbery-pi-5' (did you mean 'raspberry-pi-5'?); "
                    "profiles the farm has: nvidia-gpu-host (1 agent), raspberry-pi-5 (2 agents)."]
    provider = placement_problems(farm, profiles=["raspberry-pi-5", "nvidia-gpu-host"],
                                  runtimes={"m.onnx": "onnxruntime"}, provider="CUDAExecutionProvider")
    assert provider == ["no agent of profile 'raspberry-pi-5' offers execution provider CUDAExecutionProvider "
                        "for onnxruntime (they offer: CPUExecutionProvider)."]
    runtime = placement_problems(farm, profiles=["raspberry-pi-5"], runtimes={"m.tflite": "tflite"})
    assert runtime == ["no agent of profile 'raspberry-pi-5' offers runtime tflite for m.tflite "
                       "(they offer: onnxruntime 1.0)."]
    tags = placement_problems(farm, profiles=["raspberry-pi-5"], runtimes={"m.onnx": "onnxruntime"}, tags=["gpu"])
    assert tags == ["no agent of profile 'raspberry-pi-5' has every tag asked for (gpu); their tags: lab."]
    assert placement_problems([], profiles=["local"], runtimes={"m.onnx": "onnxruntime"}) == [
        "no agent has registered with device profile 'local'; profiles the farm has: none."]


def test_hilfarm_data_dir_replaces_the_user_data_dir_wherever_data_dir_applies(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hilfarm.cli import main
    from hilfarm.paths import default_data_dir

    monkeypatch.setenv("HILFARM_DATA_DIR", str(tmp_path / "farm"))
    assert default_data_dir() == tmp_path / "farm"
    # controller migrate (like controller serve) keeps its database under controller/, as `up` does.
    done = CliRunner().invoke(main, ["controller", "migrate"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert (tmp_path / "farm" / "controller" / "hilfarm.db").is_file()
    # --data-dir still wins.
    done = CliRunner().invoke(main, ["controller", "migrate", "--data-dir", str(tmp_path / "other")])
    assert done.exit_code == 0 and (tmp_path / "other" / "hilfarm.db").is_file()
    monkeypatch.delenv("HILFARM_DATA_DIR")
    assert default_data_dir() != tmp_path / "farm"


def test_controller_serve_listens_on_loopback_unless_told():
    from hilfarm.cli.controller import controller_serve

    bind = next(p for p in controller_serve.params if p.name == "bind")
    assert bind.default == "127.0.0.1:50051"
    assert "0.0.0.0:50051" in bind.help and "token" in bind.help


@pytest.mark.parametrize("extra,said", [([], "(on the event loop)"), (["--db-threads", "1"], "(1 thread)"),
                                        (["--db-threads", "3"], "(3 threads)")])
def test_controller_serve_runs_its_database_work_on_the_threads_asked_for(tmp_path, extra, said):
    """`controller serve` on SQLite runs its database work on the event loop unless --db-threads
    says otherwise, and says which in the line that tells where it listens."""
    env = dict(os.environ)
    env.pop("HILFARM_TOKEN", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen([sys.executable, "-m", "hilfarm.cli", "-v", "controller", "serve", "--bind", "127.0.0.1:0",
                                  "--data-dir", str(tmp_path / "controller"), *extra],
                                 stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while "), database " not in log.read_text(errors="replace"):
            assert serve.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        line = next(l for l in log.read_text().splitlines() if "), database " in l)
        assert re.search(r"database sqlite:///\S+hilfarm\.db " + re.escape(said), line), line
    finally:
        serve.terminate()
        serve.wait(20)


def test_controller_serve_refuses_a_negative_count_of_database_threads(tmp_path):
    result = CliRunner().invoke(main, ["controller", "serve", "--data-dir", str(tmp_path), "--db-threads", "-1"])
    assert result.exit_code == 2 and "--db-threads" in result.output, result.output
