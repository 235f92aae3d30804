"""`hilfarm device provision` against a real sshd on loopback, with this machine as the device.

The agent is installed for real: a wheel of this checkout is built and sent over SFTP, a venv
is made on the "device" with the interpreter this environment came from, and pip installs the
dependencies offline from a wheelhouse repacked from this environment (`--no-index
--find-links`), so no package index is reached. It is started with nohup (no systemd user
manager here), must register with a real controller and run a job, and is then upgraded in
place, inspected with --status and removed with --uninstall.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from hilfarm.embedded import EmbeddedFarm
from hilfarm.provision.plan import build_wheel

from .conftest import REPO, base_python, keygen, free_port, run_cli
from .wheelhouse import build_wheelhouse

pytestmark = pytest.mark.timeout(240)

TOKEN = "s3cret-token-for-provisioning"
# The tests log in as the user running them, which may be root (containers, CI).
ROOT_OK = ["--allow-root"] if os.geteuid() == 0 else []


def _ssh_args(sshd, known_hosts: Path, key: Path = None) -> list:
    return [f"{sshd.user}@127.0.0.1", "--port", str(sshd.port), "--identity", str(key or sshd.client_key),
            "--known-hosts", str(known_hosts)]


@pytest.fixture
def known_hosts(tmp_path: Path, sshd) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(sshd.known_hosts_line())
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not collected it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_provision_registers_runs_a_job_upgrades_reports_status_and_uninstalls(tmp_path, sshd, known_hosts, cli_home):
    wheelhouse = tmp_path / "wheelhouse"
    build_wheelhouse("hilfarm[agent]", wheelhouse, exclude=["hilfarm"])
    prefix = tmp_path / "device" / "hilfarm"
    farm = EmbeddedFarm(data_dir=tmp_path / "farm", with_agent=False, token=TOKEN).start()
    try:
        common = ["--controller", farm.address, "--token", TOKEN, "device", "provision"]
        install = common + _ssh_args(sshd, known_hosts) + [
            "--profile", "local", "--tag", "provisioned", "--from-wheel", str(REPO), "--python", base_python(),
            "--prefix", str(prefix), "--extras", "none", "--no-index", "--find-links", str(wheelhouse),
            "--wait-seconds", "60", "--json"] + ROOT_OK
        started = time.monotonic()
        first = run_cli(install, cli_home)
        assert first.returncode == 0, first.stderr
        print(f"first provisioning took {time.monotonic() - started:.1f} s")
        device = json.loads(first.stdout)
        agent_id = device["agent_id"]
        assert device["device_profile"] == "local"
        assert "provisioned" in device["tags"] and device["state"] == "idle"
        assert "started on" in first.stderr and "with nohup" in first.stderr

        env_file = prefix / "agent.env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        # The admin token stayed here: the device got a single-use enrollment token, which its
        # agent exchanged for a credential of its own, private to it.
        assert TOKEN not in env_file.read_text() and "HILFARM_ENROLL_TOKEN='hfe_" in env_file.read_text()
        assert "enrollment token" in first.stderr and "the admin token stays here" in first.stderr
        credential = prefix / "agent" / "credential.json"
        assert stat.S_IMODE(credential.stat().st_mode) == 0o600
        assert json.loads(credential.read_text())["agent_id"] == agent_id
        pid = int((prefix / "agent.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert str(prefix / "agent-venv" / "bin" / "hilfarm") in cmdline and "agent run" in cmdline
        assert TOKEN not in cmdline  # the credential travels in agent.env only

        # The provisioned agent takes and runs a job submitted through the farm.
        from hilfarm import sample_models

        model = sample_models.make_onnx_identity(tmp_path / "tiny.onnx")
        submitted = run_cli(["--controller", farm.address, "--token", TOKEN, "submit", str(model), "--device", "local",
                             "--runtime", "null", "--runs", "5", "--min-seconds", "0", "--warmup", "0",
                             "--warmup-seconds", "0", "--wait", "--json"], cli_home, timeout=120)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        job = json.loads(submitted.stdout)["jobs"][0]
        assert job["state"] == "succeeded"
        assert job["result"]["environment"]["agent_id"] == agent_id

        # Again: an upgrade in place (venv kept, hilfarm reinstalled, the agent restarted), this
        # time from a ready wheel (the first run built one from the source tree).
        wheel = build_wheel(REPO, tmp_path / "built")
        install[install.index("--from-wheel") + 1] = str(wheel)
        second = run_cli(install, cli_home)
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout)["agent_id"] == agent_id
        new_pid = int((prefix / "agent.pid").read_text())
        assert new_pid != pid and _pid_alive(new_pid)
        assert f"send {wheel.name}" in second.stderr and "kept " in second.stderr
        assert not _pid_alive(pid), "the old agent is still running beside the new one"

        status = run_cli(["--controller", farm.address, "--token", TOKEN, "device", "provision", "--status"]
                         + _ssh_args(sshd, known_hosts) + ["--prefix", str(prefix)], cli_home)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "nohup, running" in status.stdout and f"pid {new_pid}" in status.stdout
        assert f"HILFARM_AGENT_ID={agent_id}" in status.stdout and TOKEN not in status.stdout
        assert "idle" in status.stdout  # the controller's view

        # An agent that cannot reach the controller it was given: the wait ends with its log.
        lost = run_cli([a for a in install if a not in ("--json", "--wait-seconds", "60")]
                       + ["--agent-controller", f"127.0.0.1:{free_port()}", "--wait-seconds", "3"], cli_home)
        assert lost.returncode == 1
        assert "is running but did not register with the controller within 3 s" in lost.stderr
        assert "The end of its log" in lost.stderr and "unreachable" in lost.stderr

        removed = run_cli(["device", "provision", "--uninstall"] + _ssh_args(sshd, known_hosts)
                          + ["--prefix", str(prefix)], cli_home)
        assert removed.returncode == 0, removed.stderr
        deadline = time.monotonic() + 10
        while _pid_alive(new_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _pid_alive(new_pid)
        assert not prefix.exists()
        after = run_cli(["device", "provision", "--status"] + _ssh_args(sshd, known_hosts)
                        + ["--prefix", str(prefix)], cli_home)
        assert after.returncode == 1 and "no agent provisioned" in after.stdout
    finally:
        pid_file = prefix / "agent.pid"
        if pid_file.exists():  # a failed assertion must not leave an agent behind
            try:
                os.kill(int(pid_file.read_text()), 15)
            except (ValueError, ProcessLookupError):
                pass
        farm.stop()


def test_dry_run_trusts_a_new_host_key_on_request_and_prints_the_plan(tmp_path, sshd, cli_home):
    known_hosts = tmp_path / "known_hosts"
    prefix = tmp_path / "device"
    args = ["--controller", "127.0.0.1:1", "--token", TOKEN, "device", "provision"] + _ssh_args(sshd, known_hosts) + [
        "--profile", "local", "--python", base_python(), "--prefix", str(prefix), "--dry-run"] + ROOT_OK

    refused = run_cli(args, cli_home)
    assert refused.returncode == 1
    assert f"[127.0.0.1]:{sshd.port} is not in {known_hosts}" in refused.stderr
    assert "--accept-new-host-key" in refused.stderr and "SHA256:" in refused.stderr

    trusted = run_cli(args + ["--accept-new-host-key"], cli_home)
    assert trusted.returncode == 0, trusted.stderr
    assert known_hosts.read_text() == sshd.known_hosts_line()
    assert "trusted the new host key" in trusted.stderr
    # The plan: the local profile prefers ONNX Runtime, so the onnx extra by default; the
    # token is not printed; nothing was done.
    assert "hilfarm[agent,onnx]==" in trusted.stdout
    assert "HILFARM_ENROLL_TOKEN='<enrollment token>'" in trusted.stdout and TOKEN not in trusted.stdout
    assert "HILFARM_TOKEN" not in trusted.stdout
    assert "nohup" in trusted.stdout and "-m venv" in trusted.stdout
    assert not prefix.exists()

    again = run_cli(args, cli_home)  # known now: no flag needed
    assert again.returncode == 0, again.stderr


def test_unreachable_port_names_the_host(sshd, known_hosts, cli_home):
    port = free_port()
    result = run_cli(["device", "provision", f"{sshd.user}@127.0.0.1", "--port", str(port), "--identity",
                      str(sshd.client_key), "--known-hosts", str(known_hosts), "--profile", "local", "--dry-run"],
                     cli_home)
    assert result.returncode == 1
    assert f"cannot reach {sshd.user}@127.0.0.1:{port}" in result.stderr and "--port" in result.stderr


def test_a_key_not_authorized_is_an_authentication_failure(tmp_path, sshd, known_hosts, cli_home):
    stranger = keygen(tmp_path / "stranger")
    result = run_cli(["device", "provision"] + _ssh_args(sshd, known_hosts, stranger)
                     + ["--profile", "local", "--dry-run"], cli_home)
    assert result.returncode == 1
    assert f"{sshd.user}@127.0.0.1:{sshd.port} refused the login" in result.stderr
    assert "authorized_keys" in result.stderr


def test_a_changed_host_key_is_refused(tmp_path, sshd, cli_home):
    other = keygen(tmp_path / "other_host_key")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line(other.with_suffix(".pub")))
    result = run_cli(["device", "provision"] + _ssh_args(sshd, known_hosts)
                     + ["--profile", "local", "--dry-run", "--accept-new-host-key"], cli_home)
    assert result.returncode == 1
    assert f"the host key of {sshd.user}@127.0.0.1:{sshd.port} has CHANGED" in result.stderr
    assert "ssh-keygen" in result.stderr and "-R" in result.stderr
    assert known_hosts.read_text() == sshd.known_hosts_line(other.with_suffix(".pub"))  # left alone


def test_a_python_too_old_is_named_with_what_to_install(tmp_path, sshd, known_hosts, cli_home):
    fake = tmp_path / "python3.7"
    fake.write_text("#!/bin/sh\n# Answers like Python 3.7 does to the version question.\necho 3.7.3\n")
    fake.chmod(0o755)
    result = run_cli(["device", "provision"] + _ssh_args(sshd, known_hosts)
                     + ["--profile", "local", "--python", str(fake), "--prefix", str(tmp_path / "p"), "--dry-run"],
                     cli_home)
    assert result.returncode == 1
    assert f"{fake} is Python 3.7.3; the agent needs Python >= 3.9" in result.stderr
    assert "--python" in result.stderr
    assert not (tmp_path / "p").exists()


def test_ssh_config_names_the_device_and_a_jump_host(tmp_path, sshd, known_hosts, cli_home):
    """HostName, Port, User, IdentityFile and UserKnownHostsFile from ~/.ssh/config, and a
    ProxyJump through a bastion (here the same sshd, reached by the system's ssh)."""
    ssh_dir = cli_home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    entry = (f"  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n  IdentityFile {sshd.client_key}\n"
             f"  UserKnownHostsFile {known_hosts}\n")
    (ssh_dir / "config").write_text(f"Host lab-device\n{entry}  ProxyJump bastion\n\n"
                                    f"Host bastion\n{entry}  BatchMode yes\n  StrictHostKeyChecking yes\n")
    logins_before = sshd.log.read_text().count("Accepted publickey")
    result = run_cli(["--controller", "farm.example:50051", "device", "provision", "lab-device", "--profile", "local",
                      "--python", base_python(),
                      "--prefix", str(tmp_path / "p"), "--dry-run"] + ROOT_OK, cli_home)
    assert result.returncode == 0, result.stderr
    assert f"{sshd.user}@lab-device:{sshd.port}: " in result.stderr
    assert sshd.log.read_text().count("Accepted publickey") == logins_before + 2  # the bastion, then the device
