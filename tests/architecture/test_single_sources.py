"""The values the farm's parts agree on live in hilfarm/contract.py and nowhere else: these tests
fail when the proto, the agent's runtimes or the controller's checks drift from it, or when a
module defines a copy of its own."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hilfarm import contract
from hilfarm.agent import runtimes
from hilfarm.agent.results import JobSettings
from hilfarm.controller import artifact_formats
from hilfarm.controller.errors import InvalidArgument
from hilfarm.v1 import farm_pb2

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for part in ("agent", "controller", "hilfarm") for p in (ROOT / part).rglob("*.py")
           if "v1" not in p.parts and "migrations" not in p.parts]  # a migration freezes what was
CONTRACT_NAMES = {"MODEL_FORMATS", "INPUT_FORMATS", "ARTIFACT_FORMATS", "RUNTIME_FORMATS", "RUNTIMES",
                  "RUNTIME_FOR_FORMAT", "FailureCategory", "FARM_FAULTS"}


def test_failure_categories_are_the_protos():
    proto = {name[len(contract.PROTO_PREFIX):] for name in farm_pb2.FailureCategory.keys()}
    assert {c.name for c in contract.FailureCategory} == proto
    assert all(c.value == c.name.lower() for c in contract.FailureCategory)


def test_whose_fault_each_category_is():
    farm = {c for c in contract.FailureCategory if contract.is_farm_fault(c)}
    assert farm == {contract.FailureCategory.INFRASTRUCTURE, contract.FailureCategory.DEVICE_FAULT,
                    contract.FailureCategory.UNSPECIFIED}
    assert contract.is_farm_fault("FAILURE_CATEGORY_DEVICE_FAULT") and contract.is_farm_fault("infrastructure")
    assert not contract.is_farm_fault("FAILURE_CATEGORY_OUT_OF_MEMORY")
    assert not contract.is_farm_fault("FAILURE_CATEGORY_FROM_A_NEWER_VERSION")


def test_the_agents_runtimes_are_the_contracts():
    registered = {name: cls for name, cls in runtimes.registered_runtimes().items() if not name.startswith("test-")}
    assert set(registered) == set(contract.RUNTIMES)
    for name, cls in registered.items():
        # The null runtime lists no format of its own: it takes any model.
        assert set(cls.formats or contract.MODEL_FORMATS) == set(contract.RUNTIME_FORMATS[name]), name
    for fmt, name in contract.RUNTIME_FOR_FORMAT.items():
        assert runtimes.runtime_for(JobSettings(), fmt) is registered[name]


def test_the_controller_checks_every_artifact_format(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for fmt in contract.ARTIFACT_FORMATS:
        with pytest.raises(InvalidArgument) as refused:  # an empty file is no artifact of any format
            artifact_formats.check_format(empty, fmt, f"empty.{fmt}")
        assert "has no check" not in str(refused.value), fmt


def test_no_module_defines_a_copy_of_a_contract_value():
    copies = []
    for path in SOURCES:
        if path.name == "contract.py" and path.parent.name == "hilfarm":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name in CONTRACT_NAMES:
                copies.append(f"{path.relative_to(ROOT)}:{node.lineno} class {node.name}")
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    name = target.id if isinstance(target, ast.Name) else None
                    # Re-exporting the contract's own value under its name is no copy.
                    if name in CONTRACT_NAMES and not (isinstance(node.value, ast.Attribute) or
                                                       isinstance(node.value, ast.Name)):
                        copies.append(f"{path.relative_to(ROOT)}:{node.lineno} {name} = ...")
    assert copies == []
