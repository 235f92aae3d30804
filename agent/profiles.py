"""Device profiles: YAML files validated against profiles/device-profile.schema.json.

A profile may ``extends:`` another (a device type, then one physical unit that overrides it);
mappings merge key by key, tags accumulate, other lists and scalars replace. ``extends: auto`` means the generic
profile of the machine the agent runs on (what the ``local`` profile of ``hilfarm up`` uses).
Every file in the chain is validated on its own, so a bad field is reported with the file it
is in; the merged profile is validated again.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import hilfarm.profiles
from hilfarm.agent.harness import RunDefaults
from hilfarm.agent.native_code import check_library_entry
from hilfarm.yaml_files import check_schema, load_yaml

PROFILE_DIR = Path(hilfarm.profiles.__file__).resolve().parent
SCHEMA_PATH = PROFILE_DIR / "device-profile.schema.json"

_GENERIC_BY_MACHINE = {
    "x86_64": "generic-x86-linux",
    "amd64": "generic-x86-linux",
    "aarch64": "generic-aarch64-linux",
    "arm64": "generic-aarch64-linux",
}


class ProfileError(Exception):
    """A profile that cannot be used; the message names the file and the field."""


@dataclass
class Profile:
    name: str
    description: str
    tags: List[str] = field(default_factory=list)
    runtimes_allowed: List[str] = field(default_factory=list)  # empty = any
    runtime_preferred: str = ""
    # Native code jobs may load: TFLite delegates by name -> library, and ONNX Runtime execution
    # providers (empty: any the runtime has). See native_code.py.
    delegates: Dict[str, str] = field(default_factory=dict)
    execution_providers: List[str] = field(default_factory=list)
    run_defaults: RunDefaults = field(default_factory=RunDefaults)
    pin_cores: List[int] = field(default_factory=list)
    accelerators: List[str] = field(default_factory=list)
    sensors: Dict[str, Any] = field(default_factory=dict)
    thermal: Dict[str, Any] = field(default_factory=dict)
    acceleration: Dict[str, Any] = field(default_factory=dict)  # expected providers / delegate
    sources: List[str] = field(default_factory=list)  # the files layered, base first
    data: Dict[str, Any] = field(default_factory=dict)  # the merged document


_schema_cache: Optional[Dict[str, Any]] = None


def _schema() -> Dict[str, Any]:
    global _schema_cache
    if _schema_cache is None:
        with open(SCHEMA_PATH) as f:
            _schema_cache = json.load(f)
    return _schema_cache


def validate_document(doc: Any, source: str) -> None:
    """Raise ProfileError naming ``source`` and the first bad field."""
    check_schema(doc, _schema(), source, ProfileError)


def generic_profile_name(machine: Optional[str] = None) -> str:
    m = (machine or platform.machine()).lower()
    try:
        return _GENERIC_BY_MACHINE[m]
    except KeyError:
        raise ProfileError(
            f"no generic profile for machine {m!r}; write a profile for this device and pass it with --profile"
        ) from None


def available_profiles(search_dirs: Sequence[Union[str, Path]] = ()) -> List[str]:
    names = set()
    for d in list(search_dirs) + [PROFILE_DIR]:
        for p in Path(d).glob("*.yaml"):
            names.add(p.stem)
    return sorted(names)


def _find(name_or_path: str, search_dirs: Sequence[Path], relative_to: Optional[Path]) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not candidate.is_absolute() and relative_to is not None:
            candidate = relative_to / candidate
        if candidate.is_file():
            return candidate
        raise ProfileError(f"profile file {candidate} does not exist")
    dirs = ([relative_to] if relative_to is not None else []) + list(search_dirs) + [PROFILE_DIR]
    for d in dirs:
        for ext in (".yaml", ".yml"):
            p = Path(d) / f"{name_or_path}{ext}"
            if p.is_file():
                return p
    raise ProfileError(
        f"no device profile named {name_or_path!r}; known profiles: "
        f"{', '.join(available_profiles(search_dirs))}"
    )


def _read(path: Path) -> Dict[str, Any]:
    return load_yaml(path, _schema(), ProfileError, what="profile", shape="a profile must be a mapping of fields")


def _merge(base: Dict[str, Any], over: Dict[str, Any], top: bool = False) -> Dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if top and k == "tags" and isinstance(v, list) and isinstance(out.get(k), list):
            # A unit is still what its type is: tags accumulate down the chain.
            out[k] = list(out[k]) + [t for t in v if t not in out[k]]
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_profile(
    name_or_path: str,
    search_dirs: Sequence[Union[str, Path]] = (),
    machine: Optional[str] = None,
) -> Profile:
    """Load a profile by name (from ``search_dirs`` then the shipped ones) or by YAML path."""
    dirs = [Path(d) for d in search_dirs]
    chain: List[Tuple[Path, Dict[str, Any]]] = []
    path = _find(name_or_path, dirs, None)
    seen = set()
    while True:
        real = path.resolve()
        if real in seen:
            names = " -> ".join(str(p) for p, _ in chain)
            raise ProfileError(f"{path}: field extends: profiles extend each other in a cycle ({names})")
        seen.add(real)
        doc = _read(path)
        chain.append((path, doc))
        parent = doc.get("extends")
        if not parent:
            break
        if parent == "auto":
            try:
                parent = generic_profile_name(machine)
            except ProfileError as exc:
                raise ProfileError(f"{path}: field extends: {exc}") from None
        try:
            path = _find(parent, dirs, path.parent)
        except ProfileError as exc:
            raise ProfileError(f"{path}: field extends: {exc}") from None
    merged: Dict[str, Any] = {}
    for _, doc in reversed(chain):
        merged = _merge(merged, doc, top=True)
    merged.pop("extends", None)
    validate_document(merged, f"{chain[0][0]} (merged with what it extends)")
    for name, library in merged.get("runtimes", {}).get("delegates", {}).items():
        problem = check_library_entry(name, library)
        if problem:
            raise ProfileError(f"{chain[0][0]}: field runtimes.delegates.{name}: {problem}")
    return _to_profile(merged, [str(p) for p, _ in reversed(chain)])


def _to_profile(d: Dict[str, Any], sources: List[str]) -> Profile:
    defaults = RunDefaults()
    for k, v in d.get("run", {}).items():
        if hasattr(defaults, k):
            setattr(defaults, k, v)
    for k, v in d.get("limits", {}).items():
        setattr(defaults, k, v)
    runtimes = d.get("runtimes", {})
    return Profile(
        name=d["name"],
        description=d["description"],
        tags=list(d.get("tags", [])),
        runtimes_allowed=list(runtimes.get("allowed", [])),
        runtime_preferred=runtimes.get("preferred", ""),
        delegates=dict(runtimes.get("delegates", {})),
        execution_providers=list(runtimes.get("execution_providers", [])),
        run_defaults=defaults,
        pin_cores=list(d.get("pin_cores", [])),
        accelerators=list(d.get("accelerators", [])),
        sensors=dict(d.get("sensors", {})),
        thermal=dict(d.get("thermal", {})),
        acceleration=dict(d.get("acceleration", {})),
        sources=sources,
        data=d,
    )


def _device_tree_model(root: Path) -> str:
    try:
        return (root / "proc/device-tree/model").read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip()
    except OSError:
        return ""


# (substring of /proc/device-tree/model, profile), most specific first.
_BOARD_MODELS = (
    ("Raspberry Pi 5", "raspberry-pi-5"),
    ("Raspberry Pi 4", "raspberry-pi-4"),
    ("Jetson AGX Orin", "jetson-agx-orin"),
    ("Jetson Orin Nano", "jetson-orin-nano"),
    ("Jetson Orin NX", "jetson-orin-nano"),  # same rails and zones as the Orin Nano
    ("Jetson Xavier NX", "jetson-xavier-nx"),
    ("Jetson Nano", "jetson-nano"),
    ("Jetson", "jetson"),
    ("Phanbell", "coral-dev-board"),  # the Coral Dev Board's i.MX8MQ device tree
)
# USB ids of a Coral USB Accelerator: before its firmware is loaded, and after.
_CORAL_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}


def _coral_usb_present(root: Path) -> bool:
    for dev in sorted((root / "sys/bus/usb/devices").glob("*")):
        try:
            ids = ((dev / "idVendor").read_text().strip(), (dev / "idProduct").read_text().strip())
        except OSError:
            continue
        if ids in _CORAL_USB_IDS:
            return True
    return False


def detect_family(root: Union[str, Path] = "/", machine: Optional[str] = None) -> Tuple[str, str]:
    """The shipped profile name for the machine below ``root``, and why (files read from ``root``
    so fixtures of each device family test it)."""
    root = Path(root)
    m = machine or platform.machine()
    model = _device_tree_model(root)
    if model:
        for needle, name in _BOARD_MODELS:
            if needle in model:
                why = f"/proc/device-tree/model says {model!r}"
                if name.startswith("raspberry-pi") and _coral_usb_present(root):
                    return "coral-usb-rpi", why + " and a Coral USB Accelerator is on the USB bus"
                return name, why
    if (root / "system/build.prop").is_file():
        return "android-phone", "/system/build.prop exists (Android)"
    if (root / "proc/driver/nvidia/version").is_file() and generic_profile_name(m) == "generic-x86-linux":
        return "nvidia-gpu-host", "/proc/driver/nvidia/version exists (NVIDIA driver loaded)"
    name = generic_profile_name(m)
    why = f"machine is {m}"
    why += f" and /proc/device-tree/model ({model!r}) names no known board" if model else \
        " and there is no /proc/device-tree/model naming a known board"
    return name, why


def detect_profile(root: Union[str, Path] = "/", machine: Optional[str] = None) -> Tuple[Profile, str]:
    """Pick a shipped profile for this machine; returns (profile, why it was chosen)."""
    m = machine or platform.machine()
    name, why = detect_family(root, m)
    return load_profile(name, machine=m), why
