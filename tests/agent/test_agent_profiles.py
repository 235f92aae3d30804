"""Device profiles: shipped ones load, layering works, bad ones name the file and field."""

from __future__ import annotations

import pytest

from hilfarm.agent.profiles import (
    PROFILE_DIR, ProfileError, available_profiles, detect_profile, load_profile,
)


def test_every_shipped_profile_loads():
    names = available_profiles()
    for required in ("generic-x86-linux", "generic-aarch64-linux", "local"):
        assert required in names
    for name in names:
        p = load_profile(name)
        assert p.name == name and p.description
        assert p.run_defaults.timeout_seconds > 0 and p.run_defaults.memory_limit_bytes > 0


@pytest.mark.parametrize("machine, base", [("x86_64", "generic-x86-linux"), ("aarch64", "generic-aarch64-linux")])
def test_local_extends_the_generic_profile_of_the_machine(machine, base):
    p = load_profile("local", machine=machine)
    assert p.name == "local"
    assert p.sources == [str(PROFILE_DIR / f"{base}.yaml"), str(PROFILE_DIR / "local.yaml")]
    assert "local" in p.tags and machine in p.tags
    assert p.run_defaults.memory_limit_bytes == load_profile(base).run_defaults.memory_limit_bytes


def test_local_on_unknown_machine_says_so():
    with pytest.raises(ProfileError, match=r"local.yaml: field extends: no generic profile for machine 'riscv64'"):
        load_profile("local", machine="riscv64")


def test_unit_overrides_its_device_type(tmp_path):
    (tmp_path / "board.yaml").write_text(
        "name: board\ndescription: a board type\ntags: [arm]\n"
        "limits: {memory_limit_bytes: 2000000000, timeout_seconds: 100}\n"
        "run: {min_runs: 10, min_seconds: 2}\nthermal: {cooldown: {below_celsius: 50, zone: cpu}}\n"
    )
    (tmp_path / "board-07.yaml").write_text(
        "name: board-07\ndescription: unit 7, the one with a fan\nextends: board\ntags: [fan]\n"
        "limits: {timeout_seconds: 30}\npin_cores: [0]\nthermal: {cooldown: {below_celsius: 45}}\n"
    )
    p = load_profile(str(tmp_path / "board-07.yaml"))
    assert p.name == "board-07"
    assert p.tags == ["arm", "fan"]
    assert p.run_defaults.timeout_seconds == 30
    assert p.run_defaults.memory_limit_bytes == 2000000000
    assert p.run_defaults.min_runs == 10 and p.run_defaults.min_seconds == 2
    assert p.pin_cores == [0]
    assert p.thermal["cooldown"] == {"below_celsius": 45, "zone": "cpu"}
    # by name from a search dir, too
    assert load_profile("board-07", search_dirs=[tmp_path]).sources[0].endswith("board.yaml")


@pytest.mark.parametrize(
    "body, field, words",
    [
        ("limits: {memory_limit_bytes: lots}", "limits.memory_limit_bytes", "'lots' is not of type 'integer'"),
        ("run: {min_runs: 0}", "run.min_runs", "less than the minimum"),
        ("colour: blue", "(top level)", "'colour' was unexpected"),
        ("pin_cores: [0, -1]", "pin_cores.1", "less than the minimum"),
        ("sensors: {board_power: {path: /sys/x}}", "sensors.board_power", "'kind' is a required property"),
        ("thermal: {cooldown: {below_celsius: hot}}", "thermal.cooldown.below_celsius", "not of type 'number'"),
    ],
)
def test_bad_profile_names_file_and_field(tmp_path, body, field, words):
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\ndescription: broken on purpose\n{body}\n")
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}: field {field}:"), msg
    assert words in msg


def test_bad_field_in_the_base_names_the_base_file(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\ndescription: d\nlimits: {timeout_seconds: -1}\n")
    (tmp_path / "unit.yaml").write_text("name: unit\ndescription: d\nextends: base\n")
    with pytest.raises(ProfileError, match=r"base.yaml: field limits.timeout_seconds"):
        load_profile(str(tmp_path / "unit.yaml"))


def test_missing_parent_and_cycles(tmp_path):
    (tmp_path / "orphan.yaml").write_text("name: orphan\ndescription: d\nextends: nowhere\n")
    with pytest.raises(ProfileError, match=r"orphan.yaml: field extends: no device profile named 'nowhere'"):
        load_profile(str(tmp_path / "orphan.yaml"))
    (tmp_path / "a.yaml").write_text("name: a\ndescription: d\nextends: b\n")
    (tmp_path / "b.yaml").write_text("name: b\ndescription: d\nextends: a\n")
    with pytest.raises(ProfileError, match="cycle"):
        load_profile(str(tmp_path / "a.yaml"))


def test_not_yaml_and_unknown_name(tmp_path):
    (tmp_path / "x.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ProfileError, match=r"x.yaml: not valid YAML"):
        load_profile(str(tmp_path / "x.yaml"))
    with pytest.raises(ProfileError, match=r"no device profile named 'rpi9'; known profiles: .*generic-x86-linux"):
        load_profile("rpi9")


@pytest.mark.parametrize(
    "model, machine, name",
    [
        ("Raspberry Pi 5 Model B Rev 1.0", "aarch64", "raspberry-pi-5"),
        ("Raspberry Pi 4 Model B Rev 1.4", "aarch64", "raspberry-pi-4"),
        ("NVIDIA Jetson Orin Nano Developer Kit", "aarch64", "jetson-orin-nano"),
        ("NVIDIA Jetson TX2 Developer Kit", "aarch64", "jetson"),  # a Jetson without its own profile
        ("Pine64 RockPro64", "aarch64", "generic-aarch64-linux"),
        (None, "x86_64", "generic-x86-linux"),
    ],
)
def test_detect_profile_from_device_tree(tmp_path, model, machine, name):
    if model is not None:
        dt = tmp_path / "proc" / "device-tree"
        dt.mkdir(parents=True)
        (dt / "model").write_bytes(model.encode() + b"\0")  # as the kernel writes it
    p, why = detect_profile(root=tmp_path, machine=machine)
    assert p.name == name
    assert (model or machine) in why
