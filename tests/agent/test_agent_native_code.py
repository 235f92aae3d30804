"""Native code a job may make the benchmark process load: the profile's allow-list only."""

from __future__ import annotations

import os

import pytest

from hilfarm.agent.native_code import check_execution_provider, resolve_delegate
from hilfarm.agent.profiles import ProfileError, load_profile
from hilfarm.agent.results import FailureCategory, JobFailed

ALLOWED = {"edgetpu": "libedgetpu.so.1", "vendor": "/opt/vendor/libdelegate.so"}


def refused(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(JobFailed) as err:
        call()
    assert err.value.failure.category is FailureCategory.CONFIGURATION
    return err.value.failure.message


def test_a_delegate_is_named_by_the_profile(tmp_path):
    assert resolve_delegate("edgetpu", ALLOWED, tmp_path, "coral-usb-rpi") == "libedgetpu.so.1"
    assert resolve_delegate("libedgetpu.so.1", ALLOWED, tmp_path, "coral-usb-rpi") == "libedgetpu.so.1"
    assert resolve_delegate("vendor", ALLOWED, tmp_path, "x") == "/opt/vendor/libdelegate.so"
    message = refused(lambda: resolve_delegate("/tmp/libmine.so", ALLOWED, tmp_path, "coral-usb-rpi"))
    assert "not allow-listed in device profile coral-usb-rpi" in message and "edgetpu (libedgetpu.so.1)" in message
    assert "none" in refused(lambda: resolve_delegate("edgetpu", {}, tmp_path, "local"))


def test_never_a_file_under_the_agents_data_dir_even_through_a_link(tmp_path):
    data_dir = tmp_path / "agent"
    cached = data_dir / "artifacts" / "ab" / "abcd"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x7fELF")
    link = tmp_path / "looks-installed.so"
    os.symlink(cached, link)
    for library in (str(cached), str(link)):
        message = refused(lambda: resolve_delegate("x", {"x": library}, data_dir, "local"))
        assert "inside the agent's data directory" in message


def test_a_profile_names_libraries_the_loader_finds_or_absolute_paths(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndescription: d\nextends: local\nruntimes:\n  delegates: {x: lib/relative.so}\n")
    with pytest.raises(ProfileError, match="runtimes.delegates.x: delegate 'x': 'lib/relative.so' must be a library name"):
        load_profile(str(bad))
    assert load_profile("coral-usb-rpi").delegates == {"edgetpu": "libedgetpu.so.1"}


def test_execution_providers_may_be_restricted():
    check_execution_provider("CUDAExecutionProvider", [], "nvidia-gpu-host")
    check_execution_provider("", ["CPUExecutionProvider"], "p")
    message = refused(lambda: check_execution_provider("TensorrtExecutionProvider", ["CPUExecutionProvider"], "p"))
    assert "not allowed by device profile p" in message
