"""Reading a YAML file and checking it against its JSON schema: the one routine behind device
profiles, constraint sets and suite files. Every error names the file and the problem
("rpi5.yaml: field limits.timeout_seconds: -1 is less than the minimum of 0").

Neutral: the agent (profiles) and the CLI both use it, so it imports nothing of theirs (and
stays Python 3.9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Type, Union

import jsonschema
import yaml


def read_yaml(path: Union[str, Path], what: str, error: Type[Exception]) -> Any:
    """The document in ``path``; ``error`` names the file when it cannot be read or parsed."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None


def check_schema(doc: Any, schema: Mapping[str, Any], source: str, error: Type[Exception]) -> None:
    """Raise ``error`` naming ``source`` and the first bad field (the one nearest the top, so the
    same document always reports the same problem)."""
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    where = ".".join(str(p) for p in errors[0].absolute_path) or "(top level)"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    raise error(f"{source}: field {where}: {errors[0].message}{more}")


def load_yaml(path: Union[str, Path], schema: Mapping[str, Any], error: Type[Exception], *,
              what: str, shape: str) -> Dict[str, Any]:
    """Read ``path``, insist on a mapping (``shape`` says what one looks like) and check it
    against ``schema``."""
    doc = read_yaml(path, what, error)
    if not isinstance(doc, dict):
        raise error(f"{path}: {shape}, got {type(doc).__name__}")
    check_schema(doc, schema, str(path), error)
    return doc
