"""Shared battery over every registered strategy (Optuna/sklearn style), plus FP-NAS specifics.

The reward is synthetic but honest: a sum of per-decision scores plus noise, so the
optimum is known exactly and a strategy that learns must get close to it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.errors import RegistryError, SearchError
from hwnas.search import (CategoricalDistribution, Strategy, create_strategy, list_strategies, register_strategy,
                          unregister_strategy)
from hwnas.space import get_space

STRATEGIES = list_strategies()


class Scores:
    """reward(arch) = sum_i score_i[choice_i] + noise; optimum known."""

    def __init__(self, space, seed=0, noise=0.3):
        rng = np.random.default_rng(seed)
        self.space = space
        self.scores = [rng.normal(size=len(d.choices)) for d in space.decisions]
        self.noise = noise
        self.rng = np.random.default_rng(seed + 1)
        self.optimum = float(sum(s.max() for s in self.scores))
        self.worst = float(sum(s.min() for s in self.scores))

    def exact(self, arch) -> float:
        return float(sum(s[i] for s, i in zip(self.scores, self.space.indices(arch))))

    def __call__(self, archs):
        return [self.exact(a) + self.noise * self.rng.normal() for a in archs]


def _run(strategy, reward, steps):
    hs = []
    strategy.asked_ = getattr(strategy, "asked_", 0)
    for _ in range(steps):
        if strategy.relaxed:
            _relaxed_step(strategy, reward)
            strategy.asked_ += 1
        else:
            archs = strategy.ask()
            strategy.asked_ += len(archs)
            strategy.tell(archs, reward(archs))
        if strategy.is_distribution:
            hs.append(strategy.entropy())
    return hs


def _relaxed_step(strategy, reward):
    """A relaxed strategy (DMaskingNAS) learns from the gradient of a loss of its Gumbel gates,
    not from told rewards: here the negated reward of the gates' choice weights (the same
    per-choice scores), then the scored argmax is recorded as the loop's relaxed step does."""
    from hwnas.nn.relaxed import choice_weights

    weights = choice_weights(strategy.space, strategy.sample_gates(requires_grad=True))
    loss = -sum((w * torch.as_tensor(sc)).sum() for w, sc in zip(weights, reward.scores))
    strategy.relaxed_update(loss)
    top = strategy.dist.argmax()
    strategy.record(top, reward([top])[0])


def test_builtins_registered():
    assert {"random", "parsec", "fpnas", "ddpnas", "mdenas", "evolution", "greedynas", "bnnas"} <= set(STRATEGIES)


# How far below the optimum, as a share of the reward range (optimum - worst), the median
# pick of five seeded runs (120 steps of 6 samples on the noisy ``Scores(micro, seed=3)``)
# may land.  Single runs have a long tail: over strategy seeds 0-199 on this reward,
# - random (720 draws of 576 archs): median 0, above 0.12 in 1.5% of seeds, worst 0.15;
# - parsec: median 0 (the optimum; the runner-up is at 0.053, the next arch at 0.091),
#   above 0.06 in 5% of seeds, worst 0.43;
# - fpnas: median 0.09, above 0.12 in 38%, above 0.35 in 5.5%, worst 0.53.  Its
#   factorized start commits early on a reward without factor structure (independent
#   scores per choice) and once K_t is down to 2 it does not recover (factorized=False:
#   worst 0.10 over 40 rewards).
# Medians of five: over the 40 blocks of five consecutive seeds the worst medians were
# 0.053 (random), 0.053 (parsec) and 0.28 (fpnas); with those per-run rates a median fails
# its bar with probability about 0.001 (parsec), 0.0015 (fpnas), less for random.  A gap of
# 0.35 is the best 7% of this reward's archs; fpnas fed sign-flipped rewards ends at
# 0.79-1.0, fed pure noise above 0.35 in 19 of 20 seeds.
MAX_MEDIAN_GAP = {"random": 0.12, "parsec": 0.06, "fpnas": 0.35}
LEARN_SEEDS = range(5)


def battery_params(name, space) -> dict:
    """Six samples per step for every strategy.  FP-NAS's default ``lambda = 1/4`` gives
    ``K_0 = round(6.36 / 4) = 2`` on ``micro`` and ``K = 1`` soon after, where the
    importance weights are 1 and a step only reinforces its sample: the battery tests that
    the machinery learns, so FP-NAS starts at ``K_0 = 6`` here (``lam = 6 / H_0``) and keeps
    two samples to compare."""
    if name == "ddpnas":
        # DDPNAS's temperature 0.01 assumes accuracies in [0, 1] that differ by ~0.01; this
        # reward's differences are ~1 (at 0.01 the median gap over 20 seeds was 0.21, at 0.3 0.05)
        return {"samples_per_step": 6, "temperature": 0.3}
    if name in ("greedynas", "bnnas", "attentivenas", "pinas"):
        # evolution with the papers' settings (GreedyNAS, BN-NAS, AttentiveNAS) proposes 50 archs
        # a generation: 120 of them exhaust micro's 576 archs and take 35 s; six a generation
        # test the same machinery
        return {"samples_per_step": 6, "population": 6, "mutations": 3, "crossovers": 3}
    if name != "fpnas":
        return {"samples_per_step": 6}
    h0 = CategoricalDistribution(space, factorized=True).entropy()
    return {"samples_per_step": 6, "lam": 6 / h0, "k_min": 2}


#: strategies whose published rule is not expected to reach this reward's optimum, with the measurement
NOT_EXPECTED_TO_LEARN = {
    "mdenas": "MdeNAS's rule moves probability to choices trained less that scored higher; with "
              "whole-arch rewards (random partners, noise) it does not approach the optimum: median "
              "gap 0.70 (paper's latest H^a) and 0.64 (running mean) over 20 seeds, entropy 0.87x its start",
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=NOT_EXPECTED_TO_LEARN[n], strict=True))
                                  if n in NOT_EXPECTED_TO_LEARN else n for n in STRATEGIES])
def test_battery_learns(name, micro_space):
    gaps = []
    for seed in LEARN_SEEDS:
        reward = Scores(micro_space, seed=3)
        st = create_strategy(name, micro_space, seed=seed, **battery_params(name, micro_space))
        assert isinstance(st, Strategy)
        hs = _run(st, reward, 120)
        span = reward.optimum - reward.worst
        gaps.append((reward.optimum - reward.exact(st.best())) / span)
        assert st.archs_sampled == st.asked_ >= 120
        if st.is_distribution:
            assert hs[-1] < 0.5 * hs[0], f"{name}: entropy did not fall: {hs[0]:.3f} -> {hs[-1]:.3f}"
            probs = st.probs()
            assert len(probs) == len(micro_space.decisions)
            for p, d in zip(probs, micro_space.decisions):
                assert p.shape == (len(d.choices),)
                assert float(p.detach().sum()) == pytest.approx(1.0, abs=1e-9)
    # every strategy must land near the optimum (micro is small enough for random search to
    # do so too): how near is measured, see MAX_MEDIAN_GAP; a strategy registered later gets 0.12
    assert np.median(gaps) <= MAX_MEDIAN_GAP.get(name, 0.12), (name, [round(g, 3) for g in gaps])


@pytest.mark.parametrize("name", STRATEGIES)
def test_battery_state_dict_round_trip(name, micro_space):
    reward = Scores(micro_space, seed=5)
    a = create_strategy(name, micro_space, seed=1, samples_per_step=4)
    _run(a, reward, 30)
    b = create_strategy(name, micro_space, seed=99, samples_per_step=4)
    b.load_state_dict(a.state_dict())
    assert b.archs_sampled == a.archs_sampled and b.steps == a.steps
    assert b.best() == a.best()
    # same future: identical proposals and identical learning
    for _ in range(5):
        xa, xb = a.ask(), b.ask()
        assert xa == xb
        r = reward.__class__(micro_space, seed=5, noise=0.0)(xa)
        a.tell(xa, r)
        b.tell(xb, r)
        if a.relaxed:  # it learns by gradient: the same gates and updates too
            exact = reward.__class__(micro_space, seed=5, noise=0.0)
            _relaxed_step(a, exact)
            _relaxed_step(b, exact)
    if a.is_distribution:
        for pa, pb in zip(a.probs(), b.probs()):
            assert torch.allclose(pa, pb, atol=1e-12)


@pytest.mark.parametrize("name", STRATEGIES)
def test_battery_rejects_bad_tell(name, micro_space):
    st = create_strategy(name, micro_space, seed=0, samples_per_step=3)
    archs = st.ask()
    with pytest.raises(SearchError):
        st.tell(archs, [1.0])
    with pytest.raises(SearchError):
        st.tell(archs, [1.0, float("nan"), 0.0])


def test_registry_errors(micro_space):
    with pytest.raises(RegistryError, match="valid: " + ", ".join(list_strategies()) + "$"):
        create_strategy("nope", micro_space)
    with pytest.raises(RegistryError, match="already registered"):
        register_strategy("parsec")(type("X", (Strategy,), {"_propose": lambda self, n: []}))
    with pytest.raises(SearchError, match="bad parameters"):
        create_strategy("parsec", micro_space, not_a_param=1)
    register_strategy("test_const")(type("Const", (Strategy,), {
        "_propose": lambda self, n: [self.space.from_indices([0] * len(self.space.decisions))] * n}))
    try:
        st = create_strategy("test_const", micro_space, samples_per_step=2)
        assert len(st.ask()) == 2 and st.archs_sampled == 2
    finally:
        unregister_strategy("test_const")


@pytest.mark.parametrize("space_name", ["tiny", "fbnetv2"])
def test_factorized_distribution_is_normalised(space_name):
    space = get_space(space_name)
    dist = CategoricalDistribution(space, factorized=True)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for p in dist.params:
            p.copy_(torch.as_tensor(rng.normal(size=p.numel())))
    for p in dist.probs():
        assert float(p.detach().sum()) == pytest.approx(1.0, abs=1e-12)
    joint = dist.to_joint()
    assert joint.num_params() == sum(len(d.choices) for d in space.decisions)
    assert dist.num_params() < joint.num_params()
    for pf, pj in zip(dist.probs(), joint.probs()):
        assert torch.allclose(pf, pj, atol=1e-12)
    assert joint.entropy() == pytest.approx(dist.entropy(), rel=1e-12)


def test_top_k_is_exact(micro_space):
    dist = CategoricalDistribution(micro_space)
    rng = np.random.default_rng(2)
    with torch.no_grad():
        for p in dist.params:
            p.copy_(torch.as_tensor(rng.normal(size=p.numel()) * 2))
    top = dist.top_k(20)
    # brute force over the whole micro space
    import itertools

    allidx = itertools.product(*(range(len(d.choices)) for d in micro_space.decisions))
    lps = [np.log(dist.probs_numpy()[0][i]) + np.log(dist.probs_numpy()[1][j]) + np.log(dist.probs_numpy()[2][k])
           for i, j, k in allidx]
    best20 = sorted(lps, reverse=True)[:20]
    assert [lp for _, lp in top] == pytest.approx(best20, abs=1e-9)
    assert top[0][0] == dist.argmax()


def test_fpnas_switches_and_joint_starts_from_product(micro_space):
    reward = Scores(micro_space, seed=7)
    st = create_strategy("fpnas", micro_space, seed=0, samples_per_step=8, switch_step=10, switch_entropy=0.0)
    assert st.phase == "factorized"
    n_fact = st.dist.num_params()
    _run(st, reward, 9)
    assert st.phase == "factorized"
    before = [p.detach().clone() for p in st.probs()]
    # the 10th tell switches; check the joint distribution equals the product of the factors
    archs = st.ask()
    factorized = st.dist
    st.tell(archs, reward(archs))
    assert st.phase == "joint" and st.switched_at == 10
    assert st.dist.num_params() > n_fact
    expected = [p.detach() for p in factorized.probs()]  # factor product after the 10th update
    for pe, pj in zip(expected, st.probs()):
        assert torch.allclose(pe, pj, atol=1e-12)
    assert any(not torch.allclose(b, e) for b, e in zip(before, expected))  # it did learn in between
    # state round trip keeps the joint phase
    clone = create_strategy("fpnas", micro_space, seed=0, samples_per_step=8, switch_step=10)
    clone.load_state_dict(st.state_dict())
    assert clone.phase == "joint" and clone.switched_at == 10
    for a, b in zip(clone.probs(), st.probs()):
        assert torch.allclose(a, b)


def test_fpnas_switches_on_entropy_threshold(micro_space):
    reward = Scores(micro_space, seed=8, noise=0.1)
    st = create_strategy("fpnas", micro_space, seed=0, samples_per_step=8, switch_entropy=0.6)
    _run(st, reward, 100)
    assert st.phase == "joint" and st.switched_at is not None
    assert st.switched_at < 100


def test_fpnas_adaptive_sample_count_follows_lambda_times_entropy(micro_space):
    """``K_t = max(k_min, round(lambda * H_t))`` at every step, with one constant lambda."""
    tiny = get_space("tiny")
    assert create_strategy("fpnas", tiny).num_samples() == 5  # the paper's 1/4 times H_0 = 19.19 nats
    assert create_strategy("fpnas", get_space("fbnetv2")).num_samples() == 24  # H_0 = 94.6: adapts to the space
    reward = Scores(micro_space, seed=4, noise=0.1)
    h0 = CategoricalDistribution(micro_space, factorized=True).entropy()
    fp = create_strategy("fpnas", micro_space, seed=0, lam=8 / h0, k_min=1)
    pa = create_strategy("parsec", micro_space, seed=0, samples_per_step=8)
    assert fp.num_samples() == 8
    ks = []
    for _ in range(80):
        want = max(1, int(round(fp.lam * fp.entropy())))
        ks.append(fp.num_samples())
        assert ks[-1] == want
        archs = fp.ask()
        assert len(archs) == want
        fp.tell(archs, reward(archs))
    _run(pa, reward, 80)
    assert ks[-1] < ks[0]
    assert fp.archs_sampled < 0.75 * pa.archs_sampled == 0.75 * 8 * 80
    capped = create_strategy("fpnas", tiny, k_max=3)
    assert capped.num_samples() == 3
    with pytest.raises(SearchError, match="lam must be a positive number"):
        create_strategy("fpnas", tiny, lam=0)


@pytest.mark.parametrize("space_name", ["tiny", "fbnetv2"])
def test_fpnas_and_parsec_start_from_the_same_distribution(space_name):
    space = get_space(space_name)
    fp, pa = create_strategy("fpnas", space), create_strategy("parsec", space)
    assert fp.phase == "factorized" and pa.phase == "joint"
    for pf, pj, d in zip(fp.probs(), pa.probs(), space.decisions):
        assert torch.allclose(pf, pj, atol=1e-12)
        assert torch.allclose(pj, torch.full_like(pj, 1.0 / len(d.choices)))
    assert fp.entropy() == pytest.approx(pa.entropy(), rel=1e-12)


def _grads_after_tell(st, archs, rewards, monkeypatch, penalty=None):
    """The logits' gradients of one ``tell`` (the optimiser step is skipped)."""
    monkeypatch.setattr(st.optimizer, "step", lambda: None)
    st.tell(archs, rewards, penalty=penalty)
    return [p.grad.detach().clone() for p in st.dist.params]


def _score_grad(space, archs, weights, probs):
    """Hand computation of ``-sum_k w_k grad_theta log p(alpha_k)`` for joint logits:
    ``d log p(alpha) / d theta_i[c] = [alpha_i = c] - P_i(c)``."""
    out = [np.zeros(len(d.choices)) for d in space.decisions]
    for a, w in zip(archs, weights):
        for i, c in enumerate(space.indices(a)):
            onehot = np.zeros(len(space.decisions[i].choices))
            onehot[c] = 1.0
            out[i] -= w * (onehot - probs[i])
    return out


def test_importance_estimator_gradient_by_hand(micro_space, monkeypatch):
    st = create_strategy("parsec", micro_space, seed=0, samples_per_step=3)
    with torch.no_grad():
        for p, v in zip(st.dist.params, ([0.3, -0.2, 0.1, 0, 0, 0.5, -1, 0.2], [0.1] * 8, list(np.linspace(-1, 1, 9)))):
            p.copy_(torch.tensor(v, dtype=torch.float64))
    st.likelihood_scale = 32.0  # a validation batch of 32 images
    probs = st.dist.probs_numpy()
    archs = [micro_space.from_indices(i) for i in ([0, 1, 2], [5, 1, 8], [0, 7, 2])]
    r = np.array([-0.9, -0.85, -1.0])  # mean validation log-likelihoods
    omega = np.exp(32 * r - (32 * r).max())
    omega /= omega.sum()
    got = _grads_after_tell(st, archs, r, monkeypatch)
    for g, want in zip(got, _score_grad(micro_space, archs, omega, probs)):
        np.testing.assert_allclose(g.numpy(), want, atol=1e-12)
    # K = 1: the weight is 1 and the step only reinforces its sample
    one = create_strategy("parsec", micro_space, seed=0, samples_per_step=1)
    got = _grads_after_tell(one, archs[:1], r[:1], monkeypatch)
    for g, want in zip(got, _score_grad(micro_space, archs[:1], [1.0], one.dist.probs_numpy())):
        np.testing.assert_allclose(g.numpy(), want, atol=1e-12)


def test_reinforce_estimator_gradient_by_hand(micro_space, monkeypatch):
    st = create_strategy("parsec", micro_space, seed=0, samples_per_step=3, estimator="reinforce")
    probs = st.dist.probs_numpy()
    archs = [micro_space.from_indices(i) for i in ([0, 1, 2], [5, 1, 8], [0, 7, 2])]
    r = np.array([1.0, 2.0, 4.0])
    adv = (r - r.mean()) / r.std()  # first step: baseline and scale from the batch itself
    got = _grads_after_tell(st, archs, r, monkeypatch)
    for g, want in zip(got, _score_grad(micro_space, archs, adv / 3, probs)):
        np.testing.assert_allclose(g.numpy(), want, atol=1e-12)
    assert create_strategy("parsec", micro_space, estimator="normalised").estimator == "reinforce"  # old name


def test_log_cost_penalty_gradient_by_hand(micro_space, monkeypatch):
    from hwnas.search.penalty import log_cost_penalty

    st = create_strategy("parsec", micro_space, seed=0, samples_per_step=3)
    archs = [micro_space.from_indices(i) for i in ([0, 1, 2], [5, 1, 8], [0, 7, 2])]
    costs = np.array([0.5, 1.5, 3.0])  # budget 1: C = 0, 0.5, 2
    assert log_cost_penalty(st.dist, archs, [0.5, 0.9, 1.0], 1.0) is None  # all under budget: C = 0
    pen = log_cost_penalty(st.dist, archs, costs, 1.0, weight=2.0)
    rewards = np.zeros(3)  # equal rewards: the estimator's weights are uniform
    probs = st.dist.probs_numpy()
    got = _grads_after_tell(st, archs, rewards, monkeypatch, penalty=pen)
    est = _score_grad(micro_space, archs, [1 / 3] * 3, probs)
    cost = _score_grad(micro_space, archs, -2.0 * np.array([0, 0.5, 2]) / 2.5, probs)  # +beta sum w log p
    for g, a, b in zip(got, est, cost):
        np.testing.assert_allclose(g.numpy(), a + b, atol=1e-12)
