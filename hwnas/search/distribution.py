"""Architecture distributions: independent categoricals per decision, joint or factorized.

Why two parameterisations (FP-NAS, Yan et al. CVPR 2021, Sec. 3.3 "coarse-to-fine"):

- **Joint**: decision ``i`` has one logit per choice, ``P_i(c) = softmax(theta_i)[c]``
  (PARSEC, Casale et al. 2019, Sec. 3: a categorical prior ``p(alpha | pi)`` per choice).
- **Factorized**: each choice of decision ``i`` is described by its named dimensions
  (``space.decisions[i].dims``: kernel, expansion, width, se, block, splits, skip ...) and
  ``P_i(c) = prod_{(d, v) in dims(c)} softmax(phi_{i,d})[v]``.  The space guarantees the
  choice set is the full conditional product of the dimensions, so this is normalised
  (``tests/search`` checks it numerically).  It has ``sum_d |V_d|`` parameters per decision
  instead of ``prod_d |V_d|``: an order of magnitude fewer on FBNetV2-like spaces.

The factorized start is uniform over the *choices*, like the joint one (``uniform_start``):
a dimension's logits start at ``log(#choices having that value)``.  Why: the dimensions are
conditional (a ``skip`` choice has no kernel), so zero logits would give ``P(skip) = 1/2`` on
a skippable layer where the joint start gives ``1/|choices|``, and FP-NAS would start from
cheaper archs than PARSEC (``../shared/research/fpnas_fidelity.md``, deviation 4).  For a
choice set that is the full conditional product of its dimensions (every built-in space)
this is exactly uniform; ``tests/search`` checks it.

Switching factorized -> joint initialises ``theta_i = log P_i(c)`` from the factors, so
the distribution is unchanged at the switch (FP-NAS Sec. 3.3 converts the learnt
factorized distribution into the joint one; the exact formula is not in the sources we
could read, and this is the reading that changes nothing at the switch).

Both share ``probs()`` (a list of differentiable tensors, one probability vector per
decision, the format ``expected_latency_torch`` takes), entropy, sampling and an exact
top-k by beam search.  Decisions are independent, so the entropy of the whole
distribution is ``H = sum_i H(P_i)``.
"""
from __future__ import annotations

import numpy as np
import torch

from hwnas.errors import SearchError
from hwnas.space import Arch, SearchSpace


class CategoricalDistribution:
    """Independent categoricals, one per decision; ``factorized`` selects the parameterisation."""

    def __init__(self, space: SearchSpace, factorized: bool = False, uniform_start: bool = True):
        self.space = space
        self.factorized = bool(factorized)
        if self.factorized:
            self._dim_names: list[list[str]] = []
            self._dim_index: list[torch.Tensor] = []  # per decision: [n_choices, n_dims] value index or -1
            self.params: list[torch.nn.Parameter] = []
            self._param_slices: list[list[tuple[int, int]]] = []
            for d in space.decisions:
                values = d.dim_values()
                names = list(values)
                idx = torch.full((len(d.choices), len(names)), -1, dtype=torch.long)
                for j, pairs in enumerate(d.dims):
                    for dim, v in pairs:
                        k = names.index(dim)
                        idx[j, k] = values[dim].index(v)
                slices = []
                for k, name in enumerate(names):
                    start = torch.zeros(len(values[name]), dtype=torch.float64)
                    if uniform_start:  # log(#choices with each value): uniform over the choices
                        counts = torch.bincount(idx[:, k][idx[:, k] >= 0], minlength=len(values[name]))
                        start = torch.log(counts.to(torch.float64).clamp(min=1.0))
                    p = torch.nn.Parameter(start)
                    slices.append((len(self.params), len(values[name])))
                    self.params.append(p)
                self._dim_names.append(names)
                self._dim_index.append(idx)
                self._param_slices.append(slices)
        else:
            self.params = [torch.nn.Parameter(torch.zeros(len(d.choices), dtype=torch.float64))
                           for d in space.decisions]

    # -- probabilities -----------------------------------------------------
    def log_probs(self) -> list[torch.Tensor]:
        """Per decision, the log-probability of each choice (differentiable)."""
        if not self.factorized:
            return [torch.log_softmax(p, 0) for p in self.params]
        out = []
        for idx, slices in zip(self._dim_index, self._param_slices):
            total = torch.zeros(idx.shape[0], dtype=torch.float64)
            for k, (pi, n) in enumerate(slices):
                if n == 1:  # a dimension with one value has probability 1
                    continue
                # a choice without dimension k contributes log 1: index -1 hits the pad 0
                lp = torch.cat([torch.log_softmax(self.params[pi], 0), torch.zeros(1, dtype=torch.float64)])
                total = total + lp[idx[:, k]]
            out.append(total)
        return out

    def probs(self) -> list[torch.Tensor]:
        return [lp.exp() for lp in self.log_probs()]

    def probs_numpy(self) -> list[np.ndarray]:
        with torch.no_grad():
            out = []
            for p in self.probs():
                q = p.numpy().astype(np.float64)
                out.append(q / q.sum())
            return out

    def num_params(self) -> int:
        """Free logits (a dimension with a single value holds no information)."""
        return int(sum(p.numel() for p in self.params if p.numel() > 1))

    def entropy(self) -> float:
        """``H = sum_i -sum_c P_i(c) log P_i(c)`` in nats."""
        with torch.no_grad():
            return float(sum(-(lp.exp() * lp).sum() for lp in self.log_probs()))

    def max_entropy(self) -> float:
        return float(sum(np.log(len(d.choices)) for d in self.space.decisions))

    # -- sampling and scoring ---------------------------------------------
    def sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` index vectors drawn by inverse-CDF sampling (reproducible from ``rng``)."""
        cols = []
        for p in self.probs_numpy():
            cdf = np.cumsum(p)
            u = rng.random(n) * cdf[-1]
            cols.append(np.minimum(np.searchsorted(cdf, u, side="right"), len(p) - 1))
        return np.stack(cols, 1) if cols else np.zeros((n, 0), dtype=np.int64)

    def sample(self, n: int, rng: np.random.Generator) -> list[Arch]:
        return [self.space.from_indices(row) for row in self.sample_indices(n, rng)]

    def log_prob(self, archs: list[Arch]) -> torch.Tensor:
        """``log P(alpha) = sum_i log P_i(alpha_i)`` for each arch (differentiable)."""
        idx = torch.tensor([self.space.indices(a) for a in archs], dtype=torch.long)
        lps = self.log_probs()
        return sum(lp[idx[:, i]] for i, lp in enumerate(lps))

    def argmax(self) -> Arch:
        return self.space.from_indices([int(np.argmax(p)) for p in self.probs_numpy()])

    def top_k(self, k: int) -> list[tuple[Arch, float]]:
        """The ``k`` most likely archs with their log-probabilities, exactly.

        Beam search with width ``k`` is exact here: decisions are independent, so any
        prefix outside the top-``k`` prefixes is beaten by ``k`` prefixes that can take
        the same suffix.
        """
        beams: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
        for p in self.probs_numpy():
            lp = np.log(np.maximum(p, 1e-300))
            order = np.argsort(-lp)[:k]
            cand = [(s + lp[j], pre + (int(j),)) for s, pre in beams for j in order]
            cand.sort(key=lambda t: -t[0])
            beams = cand[:k]
        return [(self.space.from_indices(pre), float(s)) for s, pre in beams]

    # -- coarse-to-fine ----------------------------------------------------
    def to_joint(self) -> "CategoricalDistribution":
        """The joint distribution with ``theta_i = log P_i`` (same probabilities)."""
        joint = CategoricalDistribution(self.space, factorized=False)
        with torch.no_grad():
            for p, lp in zip(joint.params, self.log_probs()):
                p.copy_(lp)
        return joint

    # -- persistence -------------------------------------------------------
    def state_dict(self) -> dict:
        return {"factorized": self.factorized, "params": [p.detach().clone() for p in self.params]}

    def load_state_dict(self, state: dict) -> None:
        if bool(state["factorized"]) != self.factorized or len(state["params"]) != len(self.params):
            raise SearchError(f"distribution state (factorized={bool(state['factorized'])}, {len(state['params'])} "
                              f"parameter tensors) does not match this distribution (factorized={self.factorized}, "
                              f"{len(self.params)}); was the space changed since the checkpoint?")
        with torch.no_grad():
            for p, v in zip(self.params, state["params"]):
                p.copy_(torch.as_tensor(v, dtype=torch.float64))
