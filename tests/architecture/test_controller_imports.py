"""The import rules of the controller and the CLI package, read from the source with ``ast``
(nothing is imported, so a rule broken inside a function is found too):

- no module uses another module's private names: ``from x import _name``, ``module._name`` on
  an imported project module, or ``obj._name`` where ``_name`` is a private method or attribute
  that only another module defines (``jobs._find_job`` from suites.py, say);
- the controller imports neither the CLI's gRPC client (hilfarm.client) nor the agent
  (hilfarm.agent), directly or through the neutral hilfarm modules it imports.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

ROOT = Path(__file__).resolve().parents[2]
# Source folder -> the package it is installed as (pyproject.toml's package-dir).
PACKAGES = {"controller": "hilfarm.controller", "hilfarm": "hilfarm", "agent": "hilfarm.agent"}
CHECKED = ("controller", "hilfarm")
# Generated protobuf and gRPC stubs: their private names are protobuf's own.
GENERATED = ("hilfarm.v1",)
FORBIDDEN_FOR_CONTROLLER = ("hilfarm.client", "hilfarm.agent")


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    # Each import: (module imported, names taken from it or None for `import x`, line).
    imports: List[Tuple[str, Optional[List[str]], int]] = field(default_factory=list)
    # Local name -> project module it is bound to (`import a.b as m`, `from a import b`).
    module_aliases: Dict[str, str] = field(default_factory=dict)
    private_defined: Set[str] = field(default_factory=set)


def _module_name(folder: str, path: Path) -> Tuple[str, bool]:
    rel = path.relative_to(ROOT / folder).with_suffix("")
    parts = list(rel.parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join([PACKAGES[folder]] + parts), is_package


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _load() -> Dict[str, Module]:
    modules: Dict[str, Module] = {}
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            name, is_package = _module_name(folder, path)
            if name.startswith(GENERATED):
                continue
            modules[name] = Module(name, path, is_package, ast.parse(path.read_text(), str(path)))
    for module in modules.values():
        _scan(module, modules)
    return modules


def _scan(module: Module, modules: Dict[str, Module]) -> None:
    """Fill in what ``module`` imports and which private names it defines."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module.imports.append((alias.name, None, node.lineno))
                if alias.asname:
                    module.module_aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            module.imports.append((source, [a.name for a in node.names], node.lineno))
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:
                    module.module_aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.ClassDef):
            for item in ast.walk(node):
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_private(item.name):
                    module.private_defined.add(item.name)
            for item in node.body:  # class attributes: `_lock = ...`, `_cache: dict = {}`
                targets = item.targets if isinstance(item, ast.Assign) else (
                    [item.target] if isinstance(item, ast.AnnAssign) else [])
                module.private_defined.update(t.id for t in targets if isinstance(t, ast.Name) and _is_private(t.id))
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_private(node.attr):
            module.private_defined.add(node.attr)  # self._x = ..., obj._x = ...


def _project(name: str) -> bool:
    return name == "hilfarm" or name.startswith("hilfarm.")


def _checked(modules: Dict[str, Module]) -> Iterator[Module]:
    prefixes = tuple(PACKAGES[f] for f in CHECKED)
    agent = PACKAGES["agent"]
    for module in modules.values():
        if module.name.startswith(prefixes) and not module.name.startswith(agent):
            yield module


def private_name_uses(modules: Dict[str, Module]) -> List[str]:
    # A private name defined in exactly the modules listed: a use elsewhere reaches into them.
    owners: Dict[str, Set[str]] = {}
    for module in modules.values():
        for name in module.private_defined:
            owners.setdefault(name, set()).add(module.name)
    problems = []
    for module in _checked(modules):
        where = module.path.relative_to(ROOT)
        for source, names, line in module.imports:
            if not _project(source) or source == module.name:
                continue
            for name in names or []:
                if _is_private(name):
                    problems.append(f"{where}:{line}: from {source} import {name}")
            if names is None and any(_is_private(part) for part in source.split(".")):
                problems.append(f"{where}:{line}: import {source}")
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
                continue
            target = node.value
            if isinstance(target, ast.Name) and target.id in ("self", "cls"):
                continue
            if isinstance(target, ast.Call) and isinstance(target.func, ast.Name) and target.func.id == "super":
                continue
            if isinstance(target, ast.Name) and target.id in module.module_aliases:
                problems.append(f"{where}:{node.lineno}: {target.id}.{node.attr} "
                                f"(a private name of {module.module_aliases[target.id]})")
                continue
            others = owners.get(node.attr, set()) - {module.name}
            if others and module.name not in owners.get(node.attr, set()):
                problems.append(f"{where}:{node.lineno}: .{node.attr} "
                                f"(private to {', '.join(sorted(others))})")
    return problems


def forbidden_controller_imports(modules: Dict[str, Module]) -> List[str]:
    """Paths from a controller module to hilfarm.client or hilfarm.agent through the static
    import graph (a package's __init__ counts: importing a submodule runs it)."""

    def targets(module: Module) -> Iterator[Tuple[str, int]]:
        for source, names, line in module.imports:
            if not _project(source):
                continue
            candidates = [source] + [f"{source}.{n}" for n in names or [] if f"{source}.{n}" in modules]
            for candidate in candidates:
                parts = candidate.split(".")
                for i in range(1, len(parts) + 1):  # the packages on the way run too
                    yield ".".join(parts[:i]), line

    def forbidden(name: str) -> bool:
        return any(name == f or name.startswith(f + ".") for f in FORBIDDEN_FOR_CONTROLLER)

    problems = []
    controller = PACKAGES["controller"]
    for start in modules.values():
        if not start.name.startswith(controller):
            continue
        seen = {start.name}
        queue: List[Tuple[str, List[str]]] = [(start.name, [])]
        while queue:
            name, trail = queue.pop(0)
            module = modules.get(name)
            if module is None:
                continue
            for target, line in targets(module):
                if target in seen:
                    continue
                step = trail + [f"{module.path.relative_to(ROOT)}:{line} imports {target}"]
                if forbidden(target):
                    problems.append(" -> ".join(step))
                    seen.add(target)
                    continue
                seen.add(target)
                # Through the neutral hilfarm modules, not back through the controller's own
                # (each controller module is a start of its own).
                if not target.startswith(controller):
                    queue.append((target, step))
    return problems


def test_no_module_uses_another_modules_private_names():
    problems = private_name_uses(_load())
    assert not problems, "private names used across modules (make them public, or move the code):\n" + "\n".join(problems)


def test_the_controller_imports_neither_the_cli_client_nor_the_agent():
    problems = forbidden_controller_imports(_load())
    assert not problems, ("the controller shares only the protobuf contract and neutral hilfarm modules "
                          "with the agent and the CLI:\n" + "\n".join(problems))


def test_the_checks_see_what_they_look_for():
    """The rules above find a violation written the ways they look for."""
    modules = _load()
    jobs = modules["hilfarm.controller.job_repository"]
    assert "_fits_cache" in jobs.private_defined
    source = ("from hilfarm.controller.job_repository import _B\n"
              "from hilfarm import client\n"
              "from . import job_repository as st\n"
              "def f(s):\n"
              "    import hilfarm.agent.service\n"
              "    return st._LeaseStatements, s._fits_cache\n")
    path = ROOT / "controller" / "_probe_module.py"
    probe = Module("hilfarm.controller._probe_module", path, False, ast.parse(source))
    modules[probe.name] = probe
    _scan(probe, modules)
    private = [p for p in private_name_uses(modules) if "_probe_module" in p]
    assert any("import _B" in p for p in private), private
    assert any("st._LeaseStatements" in p for p in private), private
    assert any("._fits_cache" in p for p in private), private
    forbidden = [p for p in forbidden_controller_imports(modules) if "_probe_module" in p.split(" -> ")[0]]
    assert any(p.endswith("imports hilfarm.client") for p in forbidden), forbidden
    assert any("hilfarm.agent" in p for p in forbidden), forbidden
