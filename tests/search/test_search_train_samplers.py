"""The training-sampler extension point: registry, config checks, and a sampler registered by a
test that runs in the real loop (its paths, its loss and its state reach the right places)."""
from __future__ import annotations

import pytest
import torch

from hwnas.errors import RegistryError, SearchError
from hwnas.search import (Draw, SearchConfig, TrainSampler, create_train_sampler, list_train_samplers,
                          register_train_sampler, run_search, unregister_train_sampler)
from tests.search.test_search_loop import _micro_budget, _micro_config


def test_registry_lists_refuses_and_validates():
    assert {"strategy", "uniform", "greedy"} <= set(list_train_samplers())
    with pytest.raises(SearchError, match="train_sampler must be one of " + ", ".join(list_train_samplers()) +
                       ", got 'nope'$"):
        SearchConfig(train_sampler="nope")
    with pytest.raises(RegistryError, match="already registered"):
        register_train_sampler("uniform")(type("X", (TrainSampler,), {"draw": lambda self, e, b, s: None}))
    with pytest.raises(RegistryError, match="must be a TrainSampler subclass"):
        register_train_sampler("test_not_a_sampler")(object)
    with pytest.raises(SearchError, match="bad parameters for train_sampler 'uniform'"):
        create_train_sampler("uniform", pool_size=3)
    with pytest.raises(SearchError, match="give search_stage_steps > 0"):
        SearchConfig(strategy="evolution", train_sampler="greedy", search_stage_steps=0)


def test_cli_refuses_an_unknown_sampler_in_one_line(tmp_path, capsys):
    from hwnas.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["search", "--train-sampler", "nope", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"error: train_sampler must be one of {', '.join(list_train_samplers())}, got 'nope'"]


class FixedPath(TrainSampler):
    """Trains one fixed path with a label-smoothed loss, counting its calls in its state."""

    def __init__(self, *, choice: int = 0):
        super().__init__()
        self.choice, self.losses = int(choice), 0

    def draw(self, epoch, batch, score):
        return Draw([self.ctx.space.from_indices([self.choice] * len(self.ctx.space.decisions))])

    def loss(self, forward, yb, path, *, xb=None):
        self.losses += 1
        return torch.nn.functional.cross_entropy(forward(path), yb, label_smoothing=0.1)

    def state_dict(self):
        return {**super().state_dict(), "losses": self.losses}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.losses = int(state["losses"])


@pytest.fixture
def fixed_path():
    register_train_sampler("test_fixed")(FixedPath)
    yield
    unregister_train_sampler("test_fixed")


def test_a_registered_sampler_trains_its_paths_with_its_loss(tmp_path, micro_space, fixed_path):
    """After warm-up the sampler's path trains with the sampler's loss (once per training batch,
    counted in its state, which the checkpoint holds); the strategy searches in the stage."""
    budget = _micro_budget(micro_space, 0.6)
    cfg = _micro_config(tmp_path, "fixed", strategy="evolution", epochs=3, flops_budget=budget,
                        train_sampler="test_fixed", search_stage_steps=2, samples_per_step=4,
                        strategy_params={"parents": 2, "mutations": 2, "crossovers": 2})
    res = run_search(cfg)
    ck = torch.load(tmp_path / "fixed" / "checkpoint.pt", weights_only=False)
    assert ck["train_sampler"] == {"name": "test_fixed", "archs_scored": 0, "losses": 2 * 5}  # 2 epochs x 5 steps
    assert res.archs_sampled == 4 + 4 and res.flops <= budget
    with pytest.raises(SearchError, match="bad parameters for train_sampler 'test_fixed'"):
        SearchConfig(train_sampler="test_fixed", search_stage_steps=1, train_sampler_params={"nope": 1})
