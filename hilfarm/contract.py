"""The values the farm's parts agree on besides the messages themselves: model formats, the
runtimes and the formats each runs, the failure categories with whose fault each is, and the
digest an artifact file is addressed by.

One place for them, read by the agent, the controller and the CLI alike. It imports nothing but
the standard library (the agent's measured child and device Pythons >= 3.9 import it too).
hilfarm.v1 spells the failure categories as an enum; tests/architecture/test_single_sources.py
fails when this module and the proto, or the agent's runtime registry, drift apart.
"""
from __future__ import annotations

import enum
import hashlib
from pathlib import Path
from typing import Dict, Tuple, Union

MODEL_FORMATS: Tuple[str, ...] = ("onnx", "tflite")
# Inputs for a model travel as artifacts too (named arrays in a NumPy .npz archive).
INPUT_FORMATS: Tuple[str, ...] = ("npz",)
ARTIFACT_FORMATS: Tuple[str, ...] = MODEL_FORMATS + INPUT_FORMATS

# A call the controller refused as overloaded (UNAVAILABLE, nothing done) carries this trailing
# metadata: milliseconds to wait before sending the same call again.
OVERLOAD_RETRY_AFTER_KEY = "hilfarm-retry-after-ms"

# An artifact is addressed by the SHA-256 of its bytes (farm.proto: ArtifactRef.sha256).
def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """The hex digest an artifact file is stored and asked for under, read a chunk at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


# The runtimes the farm knows and the model formats each runs. "null" measures the harness itself
# (load and call nothing): any model file will do.
RUNTIME_FORMATS: Dict[str, Tuple[str, ...]] = {"onnxruntime": ("onnx",), "tflite": ("tflite",), "null": MODEL_FORMATS}
RUNTIMES: Tuple[str, ...] = tuple(RUNTIME_FORMATS)
# The runtime a job needs when its settings name none.
RUNTIME_FOR_FORMAT: Dict[str, str] = {"onnx": "onnxruntime", "tflite": "tflite"}


class FailureCategory(str, enum.Enum):
    """Why a job failed, and so whose fault it is. Names match ``hilfarm.v1.FailureCategory``
    without its ``FAILURE_CATEGORY_`` prefix; values are what documents and metrics show."""

    UNSPECIFIED = "unspecified"
    ARTIFACT_INVALID = "artifact_invalid"  # the model file: not a model, truncated, unreadable
    UNSUPPORTED_OP = "unsupported_op"  # the model needs an op this runtime lacks
    INPUT_MISMATCH = "input_mismatch"  # the user's inputs or shapes do not fit the model
    RUNTIME_CRASH = "runtime_crash"  # the runtime killed the child
    OUT_OF_MEMORY = "out_of_memory"  # the model needs more than the job's memory limit
    TIMEOUT = "timeout"  # the job ran past its time limit
    DEVICE_FAULT = "device_fault"  # the device or its runtime setup is broken
    INFRASTRUCTURE = "infrastructure"  # the farm failed (transfer, digest, lease)
    CONFIGURATION = "configuration"  # the request asks for something impossible here


# The farm's fault, not the model's: a suite does not count such a case against the model, and
# a waiting command exits 2 (the farm could not run it) rather than 1 (fix the model).
FARM_FAULTS = frozenset({FailureCategory.INFRASTRUCTURE, FailureCategory.DEVICE_FAULT, FailureCategory.UNSPECIFIED})

PROTO_PREFIX = "FAILURE_CATEGORY_"


def is_farm_fault(category: Union[FailureCategory, str]) -> bool:
    """True for a category the farm is to blame for. Takes the category, its value, or the
    proto's enum name (``FAILURE_CATEGORY_DEVICE_FAULT``)."""
    if isinstance(category, FailureCategory):
        return category in FARM_FAULTS
    text = str(category)
    if text.startswith(PROTO_PREFIX):
        text = text[len(PROTO_PREFIX):].lower()
    try:
        return FailureCategory(text) in FARM_FAULTS
    except ValueError:  # a category a newer version added: not known to be the farm's
        return False
