"""How command-line options become job settings and exit codes."""

from __future__ import annotations

import click
import pytest

from hilfarm.cli import (EXIT_FARM_FAILED, EXIT_MODEL_FAILED, EXIT_OK, build_settings,
                         exit_code_for, parse_input_shape, parse_size)
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
        "input_shapes": ("x=1,8",), "memory_limit": "256MiB", "timeout_seconds": 30.0,
        "seed": 7, "execution_provider": None, "inputs_file": None,
    })
    assert settings.min_runs == 10 and settings.min_seconds == 0.5 and settings.threads == 2
    assert settings.runtime == "tflite" and settings.tflite_disable_xnnpack
    assert dict(settings.tflite_delegate_options) == {"device": "usb"}
    assert settings.input_shapes[0].name == "x" and list(settings.input_shapes[0].dims) == [1, 8]
    assert settings.memory_limit_bytes == 256 << 20 and settings.timeout_seconds == 30.0
    assert settings.seed == 7 and settings.execution_provider == ""
    assert npz is None


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
    from hilfarm.cli import demo, submit

    settings, _ = build_settings({"sustained_seconds": 120.0, "timeout_seconds": 60.0})
    assert settings.sustained_seconds == 120.0 and settings.timeout_seconds == 60.0
    assert build_settings({"sustained_seconds": None})[0].sustained_seconds == 0.0
    for command in (submit, demo):
        option = next(p for p in command.params if p.name == "sustained_seconds")
        assert option.opts == ["--sustained"]
        assert option.type.convert("90", option, None) == 90.0
        with pytest.raises(click.BadParameter):
            option.type.convert("0", option, None)
