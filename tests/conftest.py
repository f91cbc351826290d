"""Shared fixtures: a tiny registered test space (timm style) for fast tests."""
from __future__ import annotations

import pytest

from hwnas.space import get_space, register_space, space_from_dict, unregister_space

MICRO_SPEC = {
    "name": "micro",
    "description": "three-layer test space",
    "resolutions": [16, 24],
    "num_classes": 4,
    "stem": {"channels": 8, "kernel": 3, "stride": 1},
    "stages": [{"channels": 8, "layers": 1, "stride": 1}, {"channels": 16, "layers": 2, "stride": 2}],
    "factorized": {"kernel": [3, 5], "expansion": [1, 3], "width": [0.5, 1.0], "skip": True},
}


@pytest.fixture(scope="session")
def micro_space():
    """A factorized 3-layer space on 16x16 inputs, registered as ``micro``."""
    unregister_space("micro")
    register_space("micro", lambda: space_from_dict(dict(MICRO_SPEC)))
    yield get_space("micro")
    unregister_space("micro")


@pytest.fixture
def one_torch_thread():
    """Small nets gain nothing from threads, and spinning OpenMP threads on a busy 2-core
    machine make training several times slower: one thread, then torch's setting back."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


ALL_SPACES = ["tiny", "fbnet", "fbnetv2"]
