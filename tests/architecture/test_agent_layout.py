"""The agent's layout is its architecture, and imports keep it so.

* ``agent/sensors`` and ``agent/runtimes`` read hardware and run models: they know nothing of
  the wire. Neither they nor anything they import (inside the repository) imports gRPC, the
  protobuf contract ``hilfarm.v1``, or the agent's wire modules (``agent/wire.py``,
  ``agent/telemetry/wire.py``), so they can be reused, tested and reasoned about alone.
* The agent and the controller share only the contract and neutral ``hilfarm`` modules:
  nothing under ``agent/`` imports ``hilfarm.controller``, nothing under ``controller/``
  imports ``hilfarm.agent``.

Imports are read from the source with ``ast`` (imports inside functions included; those under
``if TYPE_CHECKING:`` are left out: they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Folder of the checkout -> the package it is installed as (setup.py's package_dir).
PARTS = {"hilfarm": "hilfarm", "agent": "hilfarm.agent", "controller": "hilfarm.controller",
         "profiles": "hilfarm.profiles"}

WIRE = ("grpc", "hilfarm.v1", "hilfarm.agent.wire", "hilfarm.agent.telemetry.wire")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PARTS[parts[0]], *parts[1:]])


def modules_under(folder: str) -> Dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / folder).rglob("*.py"))}


ALL = {name: path for folder in PARTS for name, path in modules_under(folder).items()}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            yield from (n for orelse in child.orelse for n in _walk_one(orelse))
            continue
        yield child
        yield from _walk(child)


def _walk_one(node: ast.AST) -> Iterator[ast.AST]:
    yield node
    yield from _walk(node)


def imports_of(path: Path) -> List[Tuple[str, int]]:
    """Every module the file imports, absolute, with its line: ``from a import b`` yields both
    ``a`` and ``a.b`` (b may be a submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: List[Tuple[str, int]] = []
    for node in _walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((base, node.lineno))
            found.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*")
    return found


def matches(module: str, prefixes: Tuple[str, ...]) -> Optional[str]:
    for prefix in prefixes:
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return None


def _loaded_with(module: str) -> List[str]:
    """The repository modules that importing ``module`` runs: it and its parent packages."""
    parts = module.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in ALL]


def reached_from(start: str) -> Dict[str, str]:
    """Repository modules that importing ``start`` can run, each with how it was reached."""
    seen: Dict[str, str] = {start: start}
    todo = [start]
    while todo:
        current = todo.pop()
        for imported, _line in imports_of(ALL[current]):
            for m in _loaded_with(imported):
                if m not in seen:
                    seen[m] = f"{seen[current]} -> {m}"
                    todo.append(m)
    return seen


def wire_imports(start: str) -> List[str]:
    bad = []
    for module, chain in reached_from(start).items():
        for imported, line in imports_of(ALL[module]):
            if matches(imported, WIRE):
                bad.append(f"{chain} imports {imported} ({ALL[module].relative_to(ROOT)}:{line})")
    return bad


HARDWARE_AND_RUNTIMES = sorted({**modules_under("agent/sensors"), **modules_under("agent/runtimes")})


def test_the_layout_is_found():
    # The checks below pass vacuously if the folders move: make sure they read something.
    assert "hilfarm.agent.sensors" in HARDWARE_AND_RUNTIMES
    assert "hilfarm.agent.runtimes.onnx" in HARDWARE_AND_RUNTIMES
    assert any(m == "hilfarm.agent.wire" for m, _ in imports_of(ALL["hilfarm.agent.service"]))


@pytest.mark.parametrize("module", HARDWARE_AND_RUNTIMES)
def test_sensors_and_runtimes_know_nothing_of_the_wire(module):
    assert wire_imports(module) == []


def _crossings(folder: str, forbidden: str) -> List[str]:
    bad = []
    for name, path in modules_under(folder).items():
        for imported, line in imports_of(path):
            if matches(imported, (forbidden,)):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return bad


def test_the_agent_does_not_import_the_controller():
    assert _crossings("agent", "hilfarm.controller") == []


def test_the_controller_does_not_import_the_agent():
    assert _crossings("controller", "hilfarm.agent") == []
