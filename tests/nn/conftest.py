"""Fixtures for the network tests."""
from __future__ import annotations

import dataclasses

import pytest

from hwnas.space import SKIP, SearchSpace, space_from_dict


@pytest.fixture(scope="session")
def proj_space(micro_space):
    """``micro`` with a head conv and a skippable stage-first stride-2 layer, whose skip is a
    1x1 projection: paths the space files never make (they skip only inside a stage)."""
    layers = list(micro_space.layers)
    layers[1] = dataclasses.replace(layers[1], ops=layers[1].ops + (SKIP,))
    return SearchSpace(name="micro_proj", layers=tuple(layers), stem=micro_space.stem,
                       resolutions=micro_space.resolutions, head_channels=24,
                       num_classes=micro_space.num_classes, factorized=True)


MICRO_V2_SPEC = {
    "name": "micro_v2",
    "description": "micro with FBNetV2/FP-NAS dimensions",
    "resolutions": [16, 24],
    "searchable_resolution": True,
    "num_classes": 4,
    "stem": {"channels": 8, "kernel": 3, "stride": 1},
    "stages": [{"channels": 8, "layers": 1, "stride": 1}, {"channels": 16, "layers": 2, "stride": 2}],
    "head": {"channels": 24},
    "factorized": {"kernel": [3, 5], "expansion": [1, 3], "width": [0.5, 1.0], "se": [False, True],
                   "block": ["mb", "sa"], "splits": [1, 2], "skip": True},
}


@pytest.fixture(scope="session")
def micro_v2_space():
    """A 3-layer FBNetV2-like space (searchable resolution, SE, split-attention radix 1/2,
    head conv), small enough for relaxed forwards with every choice live."""
    return space_from_dict(dict(MICRO_V2_SPEC))
