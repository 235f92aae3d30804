"""Input generation: seeded, typed, shaped as the model and the job say."""

from __future__ import annotations

import numpy as np
import pytest

from hilfarm.agent.inputs import random_inputs
from hilfarm.agent.results import JobFailed
from hilfarm.agent.runtimes import TensorSpec

SPECS = [
    TensorSpec("image", [None, 3, "height", "width"], np.dtype("float32")),
    TensorSpec("mask", [4], np.dtype("bool")),
    TensorSpec("ids", ["seq"], np.dtype("int64")),
]


def test_same_seed_same_inputs_and_dtypes():
    a = random_inputs(SPECS, {"image": [2, 3, 8, 8], "ids": [5]}, seed=3)
    b = random_inputs(SPECS, {"image": [2, 3, 8, 8], "ids": [5]}, seed=3)
    c = random_inputs(SPECS, {"image": [2, 3, 8, 8], "ids": [5]}, seed=4)
    for name in a.feeds:
        np.testing.assert_array_equal(a.feeds[name], b.feeds[name])
        assert a.feeds[name].dtype == dict((s.name, s.dtype) for s in SPECS)[name]
    assert not np.array_equal(a.feeds["image"], c.feeds["image"])
    assert a.shapes == {"image": [2, 3, 8, 8], "mask": [4], "ids": [5]}
    assert a.source == "random(seed=3)" and a.warnings == []
    assert a.feeds["ids"].min() >= 0  # safe as token ids or indices


def test_an_unset_dynamic_dim_is_an_error_that_names_it():
    # Benchmarking 1x3x1x1 because nobody said otherwise "succeeds" in a millisecond: refuse.
    with pytest.raises(JobFailed) as caught:
        random_inputs(SPECS, {"ids": [5]}, seed=0)
    message = caught.value.failure.message
    assert caught.value.failure.category.value == "input_mismatch"
    assert "input 'image' has shape [?, 3, height, width]" in message
    assert "dim 0, dim 2 ('height'), dim 3 ('width') are dynamic" in message
    assert "--input-shape MODEL:image=N,3,N,N" in message and "--dynamic-default N" in message
    with pytest.raises(JobFailed, match=r"input 'ids' .*dim 0 \('seq'\) is dynamic"):
        random_inputs(SPECS, {"image": [1, 3, 8, 8]}, seed=0)


def test_dynamic_default_sizes_every_unset_dynamic_dim():
    got = random_inputs(SPECS, {"image": [2, 3, 16, 16]}, seed=0, dynamic_default=7)
    # What the job set wins; the default fills the rest; fixed dims stay.
    assert got.shapes == {"image": [2, 3, 16, 16], "mask": [4], "ids": [7]}
    assert got.feeds["ids"].shape == (7,) and got.warnings == []


def test_negative_size_is_refused():
    with pytest.raises(JobFailed, match="negative"):
        random_inputs(SPECS, {"image": [1, 3, 8, 8], "ids": [-1]}, seed=0)
