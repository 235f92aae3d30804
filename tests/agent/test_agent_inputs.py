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


def test_every_unset_dynamic_dim_is_warned_about():
    got = random_inputs(SPECS, {}, seed=0)
    assert got.shapes["image"] == [1, 3, 1, 1] and got.shapes["ids"] == [1]
    assert len(got.warnings) == 4
    assert "input 'image' dim 2 'height' is dynamic; used 1 — set it with --input-shape" in got.warnings


def test_negative_size_is_refused():
    with pytest.raises(JobFailed, match="negative"):
        random_inputs(SPECS, {"ids": [-1]}, seed=0)
