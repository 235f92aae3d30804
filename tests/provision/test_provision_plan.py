"""What provisioning writes and decides, without a device: the user unit, agent.env, the
extras a profile asks for, the checks on a probed device."""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from hilfarm.provision.facts import DeviceFacts, check_facts
from hilfarm.provision.layout import UNIT_NAME, Layout, ProvisionError
from hilfarm.provision.plan import InstallRequest, PackageSource, build_wheel, parse_extras, plan_install
from hilfarm.provision.scripts import env_file_text, read_env_file, render_user_unit, system_unit_template

REPO = Path(__file__).resolve().parents[2]
DEPLOY_UNIT = REPO / "deploy" / "systemd" / "hilfarm-agent.service"
LAYOUT = Layout(prefix="/home/pi/.local/share/hilfarm", home="/home/pi")


def _facts(**changes) -> DeviceFacts:
    facts = DeviceFacts(
        label="pi@rpi5-03:22", user="pi", home="/home/pi", hostname="rpi5-03", machine="aarch64",
        kernel="6.6.51+rpt-rpi-2712", os_name="Debian GNU/Linux 12 (bookworm)", prefix=LAYOUT.prefix,
        python="python3", python_path="/usr/bin/python3", python_version=(3, 11, 2), python_said="3.11.2",
        has_venv=True, free_bytes=20 << 30, free_dir="/home/pi", systemd_user=True, has_setsid=True)
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def test_the_template_is_the_deploy_unit_here_and_in_the_wheel(tmp_path):
    # deploy/systemd holds the one copy; the wheel carries it as package data.
    assert system_unit_template() == DEPLOY_UNIT.read_text()
    with zipfile.ZipFile(build_wheel(REPO, tmp_path)) as wheel:
        assert wheel.read("hilfarm/provision/systemd/hilfarm-agent.service").decode() == DEPLOY_UNIT.read_text()


def test_user_unit_runs_the_venv_agent_as_the_login_with_settings_from_agent_env():
    unit = render_user_unit(DEPLOY_UNIT.read_text(), LAYOUT, ["lab-2", "fan on"])
    lines = unit.splitlines()
    assert "EnvironmentFile=/home/pi/.local/share/hilfarm/agent.env" in lines
    assert ("ExecStart=/home/pi/.local/share/hilfarm/agent-venv/bin/hilfarm agent run --profile ${HILFARM_PROFILE} "
            "--data-dir /home/pi/.local/share/hilfarm/agent --agent-id ${HILFARM_AGENT_ID} --tag lab-2 "
            '--tag "fan on"') in lines
    assert "WantedBy=default.target" in lines
    for gone in ("User=", "Group=", "SupplementaryGroups=", "StateDirectory=", "PrivateTmp=", "# Sensors read"):
        assert not any(line.startswith(gone) for line in lines), gone
    # What the system unit says about stopping and restarting is kept.
    for kept in ("KillSignal=SIGTERM", "Restart=always", "RestartSec=5", "TimeoutStopSec=60", "NoNewPrivileges=true"):
        assert kept in lines


def test_user_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    layout = Layout(prefix=str(tmp_path), home=str(tmp_path))
    Path(layout.hilfarm).parent.mkdir(parents=True)
    Path(layout.hilfarm).write_text("#!/bin/sh\n")
    Path(layout.hilfarm).chmod(0o755)
    Path(layout.env_file).write_text(env_file_text({"HILFARM_PROFILE": "local", "HILFARM_AGENT_ID": "a"}))
    unit = tmp_path / UNIT_NAME
    unit.write_text(render_user_unit(DEPLOY_UNIT.read_text(), layout, ["lab-2"]))
    # Offline verification (no manager needed): unknown keys and bad values are reported on stderr.
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0 and str(unit) not in result.stderr, result.stderr


def test_agent_env_round_trips_and_refuses_what_it_cannot_hold():
    settings = {"HILFARM_CONTROLLER": "farm.example:50051", "HILFARM_TOKEN": "a$b\\c d", "HILFARM_PROFILE": "x"}
    text = env_file_text(settings)
    assert read_env_file(text) == settings
    # sh reads it back unchanged (systemd's EnvironmentFile takes single quotes verbatim too).
    script = f"{text}\nprintf '%s' \"$HILFARM_TOKEN\""
    assert subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout == "a$b\\c d"
    with pytest.raises(ProvisionError, match="HILFARM_TOKEN contains a quote"):
        env_file_text({"HILFARM_TOKEN": "it's"})


def test_extras_default_to_the_profiles_preferred_runtime():
    assert parse_extras(None, "onnxruntime") == ["onnx"]
    assert parse_extras(None, "tflite") == ["litert"]
    assert parse_extras(None, "null") == []
    assert parse_extras("onnx,litert", "tflite") == ["onnx", "litert"]
    assert parse_extras("none", "onnxruntime") == []
    with pytest.raises(ProvisionError, match="unknown extra tensorrt"):
        parse_extras("onnx,tensorrt", "onnxruntime")


@pytest.mark.parametrize("changes, message", [
    ({"python_path": ""}, "there is no 'python3' on the device"),
    ({"python_version": None, "python_said": "garbage"}, "did not say its version"),
    ({"python_version": (3, 8, 10)}, "is Python 3.8.10; the agent needs Python >= 3.9"),
    ({"has_venv": False}, "`sudo apt install python3-venv` (or python3.11-venv)"),
    ({"free_bytes": 100 << 20}, "only 100 MiB free in /home/pi"),
    ({"user": "root"}, "logged in as root, and the agent runs as the login"),
])
def test_device_checks_name_what_to_fix(changes, message):
    with pytest.raises(ProvisionError, match=re.escape(message)):
        check_facts(_facts(**changes))
    check_facts(_facts())


def test_a_root_login_is_used_only_when_asked_and_the_agent_is_told():
    check_facts(_facts(user="root"), allow_root=True)
    plan = plan_install(_facts(user="root", systemd_user=False), InstallRequest(
        profile="raspberry-pi-5", source=PackageSource(pip_spec="hilfarm[agent]==0.1.0"), extras="none",
        controller="farm.example:50051", allow_root=True))
    (start,) = plan.start_steps
    assert "--allow-root" in start.script


def test_plan_prefers_systemd_and_keeps_the_token_out_of_what_it_shows(tmp_path):
    wheel = tmp_path / "hilfarm-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    plan = plan_install(_facts(), InstallRequest(
        profile="raspberry-pi-5", source=PackageSource(wheel=wheel), extras=None,
        controller="farm.example:50051", enroll_token="hfe_0123_enrol", tags=["lab-2"]))
    assert plan.service == "systemd" and plan.agent_id == "rpi5-03-raspberry-pi-5"
    assert plan.extras == ["litert"]
    shown = "\n".join(s.describe() for s in plan.steps + plan.start_steps)
    assert "hfe_0123_enrol" not in shown and "HILFARM_ENROLL_TOKEN='<enrollment token>'" in shown
    assert "HILFARM_TOKEN" not in shown  # an admin's token never goes to a device
    assert "hilfarm-0.1.0-py3-none-any.whl[agent,litert]" in shown
    assert "systemctl --user restart hilfarm-agent.service" in shown
    env_step = next(s for s in plan.steps if s.path == LAYOUT.env_file)
    assert env_step.mode == 0o600 and b"HILFARM_ENROLL_TOKEN='hfe_0123_enrol'" in env_step.data

    nohup = plan_install(_facts(systemd_user=False), InstallRequest(
        profile="raspberry-pi-5", source=PackageSource(pip_spec="hilfarm[agent]==0.1.0"), extras="none",
        controller="farm.example:50051"))
    assert nohup.service == "nohup"
    with pytest.raises(ProvisionError, match="--service systemd"):
        plan_install(_facts(systemd_user=False), InstallRequest(
            profile="raspberry-pi-5", source=PackageSource(pip_spec="x"), extras=None,
            controller="farm.example:50051", service="systemd"))


def test_a_profile_file_of_ones_own_is_sent_along(tmp_path):
    unit_profile = tmp_path / "rpi5-03.yaml"
    unit_profile.write_text("name: rpi5-03\ndescription: one Pi 5 with a fan\nextends: raspberry-pi-5\ntags: [fan]\n")
    plan = plan_install(_facts(), InstallRequest(
        profile=str(unit_profile), source=PackageSource(pip_spec="hilfarm[agent]"), extras=None,
        controller="farm.example:50051"))
    sent = [s for s in plan.steps if s.path and s.path.endswith("rpi5-03.yaml")]
    assert len(sent) == 1 and sent[0].data == unit_profile
    env = next(s for s in plan.steps if s.path == LAYOUT.env_file).data.decode()
    assert f"HILFARM_PROFILE='{LAYOUT.uploads}/rpi5-03.yaml'" in env
    assert plan.agent_id == "rpi5-03-rpi5-03"


def test_an_unknown_profile_is_the_users_mistake():
    with pytest.raises(ProvisionError, match="--profile: no device profile named 'rpi9'"):
        plan_install(_facts(), InstallRequest(profile="rpi9", source=PackageSource(pip_spec="x"), extras=None,
                                              controller="farm.example:50051"))
