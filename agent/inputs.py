"""Input tensors for a job: random ones matching the model, or the user's .npz.

Dynamic dimensions come from ``JobSettings.input_shapes``. One left unset fails the job,
naming the input and the dimension, unless the job gives ``dynamic_dimension_default``: making
it 1 silently benchmarks a toy-sized input (a detector "succeeds" at 1x3x1x1 in a millisecond),
the classic way to get a meaningless number. The shapes actually used go into the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from hilfarm.agent.results import FailureCategory, JobFailed
from hilfarm.agent.runtimes import TensorSpec


@dataclass
class PreparedInputs:
    feeds: Dict[str, np.ndarray]
    shapes: Dict[str, List[int]]  # the shapes actually used, per input
    source: str  # "random(seed=N)" or "npz:<sha256>"
    warnings: List[str] = field(default_factory=list)


def _mismatch(message: str) -> JobFailed:
    return JobFailed(FailureCategory.INPUT_MISMATCH, message)


def resolve_shape(spec: TensorSpec, requested: Optional[List[int]], warnings: List[str],
                  dynamic_default: int = 0) -> List[int]:
    """Concrete dims for one input: the model's fixed dims, the job's for dynamic ones
    (``dynamic_default`` for those the job leaves unset; 0: an unset one is an error)."""
    if requested is not None:
        if len(requested) != len(spec.shape):
            raise _mismatch(
                f"input {spec.name!r} has rank {len(spec.shape)} (shape {_fmt(spec.shape)}) but the job "
                f"set shape {list(requested)} of rank {len(requested)}"
            )
        for i, (want, have) in enumerate(zip(requested, spec.shape)):
            if isinstance(have, int) and have >= 0 and int(want) != have:
                raise _mismatch(
                    f"input {spec.name!r} dim {i} is fixed at {have} in the model but the job set {want}"
                )
            if int(want) < 0:
                raise _mismatch(f"input {spec.name!r} dim {i}: size {want} is negative")
        return [int(x) for x in requested]
    dims = []
    unset = []
    for i, d in enumerate(spec.shape):
        if isinstance(d, int) and d >= 0:
            dims.append(d)
        else:
            unset.append(f"dim {i}" + (f" ({d!r})" if isinstance(d, str) and d else ""))
            dims.append(dynamic_default)
    if unset and dynamic_default <= 0:
        example = ",".join(str(d) if isinstance(d, int) and d >= 0 else "N" for d in spec.shape)
        raise _mismatch(
            f"input {spec.name!r} has shape {_fmt(spec.shape)}: {', '.join(unset)} "
            f"{'is' if len(unset) == 1 else 'are'} dynamic and the job does not size "
            f"{'it' if len(unset) == 1 else 'them'}; set {spec.name!r} with "
            f"--input-shape MODEL:{spec.name}={example} (N = the size to measure), "
            f"or give every unset dynamic dimension one size with --dynamic-default N"
        )
    return dims


def _fmt(shape: List[object]) -> str:
    return "[" + ", ".join("?" if d is None or (isinstance(d, int) and d < 0) else str(d) for d in shape) + "]"


def random_inputs(specs: List[TensorSpec], input_shapes: Dict[str, List[int]], seed: int,
                  dynamic_default: int = 0) -> PreparedInputs:
    known = {s.name for s in specs}
    unknown = [n for n in input_shapes if n not in known]
    if unknown:
        raise _mismatch(
            f"the job sets shapes for {', '.join(map(repr, unknown))}, which the model does not have; "
            f"its inputs are {', '.join(repr(s.name) for s in specs) or '(none)'}"
        )
    rng = np.random.default_rng(seed)
    warnings: List[str] = []
    feeds: Dict[str, np.ndarray] = {}
    shapes: Dict[str, List[int]] = {}
    for spec in specs:
        dims = resolve_shape(spec, input_shapes.get(spec.name), warnings, dynamic_default)
        feeds[spec.name] = _random_array(rng, dims, np.dtype(spec.dtype))
        shapes[spec.name] = dims
    return PreparedInputs(feeds=feeds, shapes=shapes, source=f"random(seed={seed})", warnings=warnings)


def _random_array(rng: np.random.Generator, dims: List[int], dtype: np.dtype) -> np.ndarray:
    if dtype == np.bool_:
        return rng.integers(0, 2, size=dims).astype(np.bool_)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(size=dims).astype(dtype)
    # Integers are often indices or token ids; small non-negative values stay in range.
    return rng.integers(0, 2, size=dims).astype(dtype)


def npz_inputs(specs: List[TensorSpec], npz_path: str, sha256: str) -> PreparedInputs:
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise _mismatch(f"the inputs file is not a readable .npz archive: {exc}") from exc
    warnings: List[str] = []
    feeds: Dict[str, np.ndarray] = {}
    shapes: Dict[str, List[int]] = {}
    for spec in specs:
        if spec.name not in arrays:
            raise _mismatch(
                f"the inputs .npz has no array for model input {spec.name!r} "
                f"(it has {', '.join(map(repr, arrays)) or 'nothing'})"
            )
        arr = arrays[spec.name]
        if arr.dtype != np.dtype(spec.dtype):
            raise _mismatch(
                f"input {spec.name!r} in the .npz has dtype {arr.dtype}, the model wants {np.dtype(spec.dtype)}"
            )
        resolve_shape(spec, list(arr.shape), warnings)  # raises on rank or fixed-dim mismatch
        feeds[spec.name] = np.ascontiguousarray(arr)
        shapes[spec.name] = [int(x) for x in arr.shape]
    extra = [k for k in arrays if k not in feeds]
    if extra:
        warnings.append(f"the inputs .npz has arrays the model does not use: {', '.join(extra)}")
    return PreparedInputs(feeds=feeds, shapes=shapes, source=f"npz:{sha256}", warnings=warnings)
