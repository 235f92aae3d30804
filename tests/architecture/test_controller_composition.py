"""How the controller's parts are composed, read from the source with ``ast`` (nothing is imported):

- a gRPC servicer (server.py) is given only the parts it uses: every argument of its
  ``__init__`` is kept and used by its methods, and no method reaches through one part to
  another (``self.services.jobs.get_job``: the servicer was handed a bag of parts);
- only the repositories (and the few modules that are their own repository) open database
  sessions or connections; everything else asks a repository.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set

ROOT = Path(__file__).resolve().parents[2]
CONTROLLER = ROOT / "controller"

# Modules that may open a session, a connection or a transaction on the database, and why.
OPENS_SESSIONS = {
    "database.py": "the engine and its transactions",
    "job_repository.py": "runs, jobs, leases",
    "agent_repository.py": "agents",
    "artifact_repository.py": "artifact records and owners",
    "regression_store.py": "budgets, baselines, suite runs",
    "credentials.py": "tokens and agent credentials (its own repository)",
    "suites.py": "a suite run's claim and stage commit with the jobs it starts",
    "schema.py": "migrations",
}
# Receivers whose read()/write()/connect()/begin() opens a session or connection.
DATABASE_NAMES = {"db", "database", "engine"}
SESSION_METHODS = {"read", "write", "connect", "begin"}


def _servicers(tree: ast.Module) -> Iterator[ast.ClassDef]:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Attribute) and b.attr.endswith("Servicer") for b in node.bases):
            yield node


def _self_attribute(node: ast.AST) -> str:
    """``x`` for ``self.x``, else ""."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return ""


def unused_parts(tree: ast.Module) -> List[str]:
    """Arguments of a servicer's ``__init__`` that no other method of it uses."""
    problems = []
    for cls in _servicers(tree):
        init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
        if init is None:
            continue
        args = [a.arg for a in init.args.args[1:] + init.args.kwonlyargs]
        kept: Dict[str, str] = {}  # argument -> the attribute it is kept in
        for node in ast.walk(init):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id in args:
                for target in node.targets:
                    if _self_attribute(target):
                        kept[node.value.id] = _self_attribute(target)
        read: Set[str] = set()
        for method in cls.body:
            if isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)) and method.name != "__init__":
                read.update(_self_attribute(n) for n in ast.walk(method)
                            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load))
        for arg in args:
            if arg not in kept:
                problems.append(f"{cls.name}: argument {arg!r} is not kept")
            elif kept[arg] not in read:
                problems.append(f"{cls.name}: {arg!r} is given but never used (self.{kept[arg]})")
    return problems


def reaching_through(tree: ast.Module) -> List[str]:
    """``self.a.b.c`` in a servicer: it reads part ``b`` out of ``a`` instead of being given it."""
    problems = []
    for cls in _servicers(tree):
        for node in ast.walk(cls):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                    and _self_attribute(node.value.value):
                problems.append(f"{cls.name} line {node.lineno}: self.{node.value.value.attr}.{node.value.attr}"
                                f".{node.attr}")
    return problems


def session_openers(trees: Dict[str, ast.Module]) -> List[str]:
    """Modules outside OPENS_SESSIONS that open a session or a connection themselves."""
    problems = []
    for name, tree in sorted(trees.items()):
        if name in OPENS_SESSIONS:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id == "Session":
                problems.append(f"controller/{name}:{node.lineno}: Session(...)")
            elif isinstance(func, ast.Attribute) and func.attr in SESSION_METHODS:
                receiver = func.value
                receiver_name = receiver.attr if isinstance(receiver, ast.Attribute) else (
                    receiver.id if isinstance(receiver, ast.Name) else "")
                if receiver_name in DATABASE_NAMES:
                    problems.append(f"controller/{name}:{node.lineno}: {receiver_name}.{func.attr}()")
    return problems


def _controller_trees() -> Dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text(), str(p)) for p in sorted(CONTROLLER.glob("*.py"))}


def test_each_servicer_uses_every_part_it_is_given():
    problems = unused_parts(_controller_trees()["server.py"])
    assert not problems, "give a servicer only the parts it uses:\n" + "\n".join(problems)


def test_no_servicer_reaches_through_one_part_to_another():
    problems = reaching_through(_controller_trees()["server.py"])
    assert not problems, "give the servicer the part itself, not an object that holds it:\n" + "\n".join(problems)


def test_only_the_repositories_open_database_sessions():
    problems = session_openers(_controller_trees())
    assert not problems, ("ask a repository (job_repository.py, agent_repository.py, ...) instead of "
                          "opening sessions:\n" + "\n".join(problems))


def test_the_allowed_session_openers_exist():
    """A renamed repository must not leave a stale name here (which would allow nothing)."""
    assert set(OPENS_SESSIONS) <= set(_controller_trees())


def test_the_checks_see_what_they_look_for():
    """The rules above find the bag of parts the servicers once shared, an unused part, and a
    module that opens a session of its own."""
    bag = ast.parse(
        "class FarmServicer(pb_grpc.FarmServiceServicer):\n"
        "    def __init__(self, services, scheduler):\n"
        "        self.s = services\n"
        "        self.scheduler = scheduler\n"
        "    def _get_job(self, job_id):\n"
        "        return self.s.store.get_job(job_id)\n"
        "class AdminServicer(pb_grpc.AdminServiceServicer):\n"
        "    def __init__(self, calls, *, credentials):\n"
        "        self.calls = calls\n"
        "    async def WhoAmI(self, request, context):\n"
        "        return await self.calls.db(len, ())\n")
    unused = unused_parts(bag)
    assert any("FarmServicer: 'scheduler' is given but never used" in p for p in unused), unused
    assert any("AdminServicer: argument 'credentials' is not kept" in p for p in unused), unused
    assert [p.split(": ", 1)[1] for p in reaching_through(bag)] == ["self.s.store.get_job"]
    raw = ast.parse("def scrape(jobs):\n"
                    "    with jobs.db.read() as s:\n"
                    "        return s.exec(q)\n"
                    "def other(engine):\n"
                    "    with Session(engine) as s, engine.connect() as conn:\n"
                    "        pass\n")
    found = session_openers({"metrics.py": raw, "job_repository.py": raw})
    assert found == ["controller/metrics.py:2: db.read()", "controller/metrics.py:5: Session(...)",
                     "controller/metrics.py:5: engine.connect()"], found
