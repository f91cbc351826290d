"""``mlp``: a small torch regressor on the encoding, differentiable w.r.t. a soft encoding.

Why an MLP: it is what BRP-NAS / HELP-style latency predictors use and, unlike trees, it is
a smooth function of its input, so a search that holds a probability vector per decision
(FBNet, FP-NAS) can feed those probabilities in place of the one-hot blocks and the
per-layer costs' expectations in place of the costs, and backpropagate the predicted
latency into the architecture distribution (FBNet, Wu et al. 2019, eq. 6 uses the same
idea with a lookup table, which is linear, so there it is the exact expectation; for an
MLP, ``f(E[x])`` is the mean-field approximation of ``E[f(x)]``, exact at one-hot points
and for the linear path).

Architecture: ``linear(x) + mlp(x)``.  The linear path starts at the ridge solution
(closed form, penalty by generalised cross-validation) and by default stays there
(``linear_lr_scale=0``); the MLP path starts near zero and learns only what the additive
model misses, under weight decay.  Why: on the CPU datasets of this project (a busy 2-vCPU
machine, where re-measuring an arch agrees within +-10% only about half of the time) a
free MLP fitted the measurement noise and ranked worse than ridge; anchored this way it
cannot do much worse than ridge and still captures interactions where the data has them.

The target is ``log(latency)`` by default: latency errors are relative (within +-10%),
latencies span several x, and a log target turns multiplicative effects additive; the
benchmark (``benchmarks/results/predictors.md``) compares both.
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import PredictorError
from hwnas.predictors._base import Predictor
from hwnas.predictors._encoding import DEFAULT_ENCODING
from hwnas.predictors._registry import register_predictor
from hwnas.torch_threads import torch_threads


#: ``huber`` (smooth L1 on the standardised target) is robust to the odd measurement that a
#: busy machine delays; ``mse`` is the plain least-squares fit
_LOSSES = {"mse": "mse_loss", "huber": "smooth_l1_loss"}


def _net(n_in: int, hidden: tuple[int, ...]):
    import torch.nn as nn

    class ResidualMLP(nn.Module):
        """``linear(x) + mlp(x)``: the linear path holds the additive part of latency
        (per-layer costs add up, as in FBNet's LUT), the MLP the interactions."""

        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(n_in, 1)
            layers, width = [], n_in
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            layers.append(nn.Linear(width, 1))
            self.mlp = nn.Sequential(*layers)

        def forward(self, x):
            return self.linear(x) + self.mlp(x)

    return ResidualMLP()


def _warm_start(net, xn: np.ndarray, tn: np.ndarray) -> None:
    """Start from the ridge solution (closed form, GCV-chosen penalty) with a zero MLP output,
    so training begins at the linear model's accuracy and only learns what it misses."""
    import torch
    from sklearn.linear_model import RidgeCV

    r = RidgeCV(alphas=(0.1, 1.0, 10.0, 100.0)).fit(xn, tn)
    with torch.no_grad():
        net.linear.weight.copy_(torch.from_numpy(np.asarray(r.coef_, dtype=np.float32))[None, :])
        net.linear.bias.fill_(float(r.intercept_))
        net.mlp[-1].weight.mul_(0.01)
        net.mlp[-1].bias.zero_()


def _frozen(net):
    """Eval mode, no weight gradients: a search differentiates w.r.t. probs, not weights."""
    for p in net.parameters():
        p.grad = None
        p.requires_grad_(False)
    return net.eval()


@register_predictor("mlp")
class MLPPredictor(Predictor):
    differentiable = True

    def __init__(self, space, *, encoding: str = DEFAULT_ENCODING, resolution: int | None = None,
                 log_target: bool = True, seed: int = 0, hidden: tuple[int, ...] = (64, 64),
                 epochs: int = 100, lr: float = 1e-3, weight_decay: float = 1e-1, batch_size: int = 64,
                 loss: str = "mse", linear_lr_scale: float = 0.0):
        super().__init__(space, encoding=encoding, resolution=resolution, log_target=log_target, seed=seed)
        self.hidden = tuple(int(h) for h in hidden)
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        if loss not in _LOSSES:
            raise PredictorError(f"loss must be one of {', '.join(_LOSSES)}, got {loss!r}")
        self.loss = loss
        self.linear_lr_scale = linear_lr_scale

    def _fit(self, idx, y_ms):
        import torch

        x = self.encoding_.encode(idx)
        self.x_mean_ = x.mean(0)
        sd = x.std(0)
        self.x_std_ = np.where(sd > 1e-12, sd, 1.0)
        t = self._to_target(y_ms)
        self.y_mean_, self.y_std_ = float(t.mean()), float(t.std() or 1.0)
        xn = (x - self.x_mean_) / self.x_std_
        tn = (t - self.y_mean_) / self.y_std_
        xs = torch.from_numpy(xn.astype(np.float32))
        ts = torch.from_numpy(tn.astype(np.float32))[:, None]
        with torch.random.fork_rng(devices=[]), torch_threads(1):
            torch.manual_seed(self.seed)
            net = _net(x.shape[1], self.hidden)
            _warm_start(net, xn, tn)
            opt = torch.optim.Adam([
                {"params": net.linear.parameters(), "lr": self.lr * self.linear_lr_scale, "weight_decay": 0.0},
                {"params": net.mlp.parameters()}], lr=self.lr, weight_decay=self.weight_decay)
            n, bs = len(xs), max(1, min(self.batch_size, len(xs)))
            steps = self.epochs * -(-n // bs)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
            loss_fn = getattr(torch.nn.functional, _LOSSES[self.loss])
            for _ in range(self.epochs):
                perm = torch.randperm(n)
                for k in range(0, n, bs):
                    b = perm[k:k + bs]
                    err = loss_fn(net(xs[b]), ts[b])
                    opt.zero_grad()
                    err.backward()
                    opt.step()
                    sched.step()
        self.net_ = _frozen(net)
        self._fast = None

    def _predict(self, idx):
        """Same numbers as ``net_(standardised encode(idx))``, computed as gathers (see
        ``Encoding.binary_tables``) and float32 numpy matmuls: >= 10^5 archs/s on one core."""
        if self._fast is None:
            self._fast = self._fast_weights()
        tables, w_dense, bias, rest = self._fast
        pre = np.broadcast_to(bias, (len(idx), len(bias))).copy()
        for d, t in enumerate(tables):
            pre += t[idx[:, d]]
        dense = self.encoding_.encode_dense(idx)
        if dense.shape[1]:
            pre = pre + dense.astype(np.float32) @ w_dense
        lin, h = pre[:, 0], np.maximum(pre[:, 1:], 0.0)
        layers = list(rest)
        for k, (w, b) in enumerate(layers):
            h = h @ w + b
            if k < len(layers) - 1:
                h = np.maximum(h, 0.0)
        out = (lin + h[:, 0]).astype(np.float64)
        return self._from_target(out * self.y_std_ + self.y_mean_)

    def _fast_weights(self):
        """Fold standardisation into the first layers and split them by feature kind."""
        first = [self.net_.linear, self.net_.mlp[0]]
        w = np.concatenate([m.weight.detach().double().numpy() for m in first])  # (1 + h, F)
        b = np.concatenate([m.bias.detach().double().numpy() for m in first])
        w_s = w / self.x_std_
        bias = (b - w_s @ self.x_mean_).astype(np.float32)
        tables = [(t @ w_s.T).astype(np.float32) for t in self.encoding_.binary_tables()]
        w_dense = w_s[:, self.encoding_.dense_columns()].T.astype(np.float32)
        linears = [m for m in self.net_.mlp[1:] if hasattr(m, "weight")]
        rest = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linears]
        return tables, w_dense, bias, rest

    def expected_latency_torch(self, probs):
        """Predicted latency (ms, scalar tensor) of a soft architecture.

        ``probs[i]`` is a probability vector over ``space.decisions[i].choices``.  Features
        are the soft encoding (probabilities in place of one-hot blocks, expected per-layer
        costs); with one-hot ``probs`` the result equals ``predict([arch])[0]``.
        """
        import torch

        self._check_fitted()
        x = self.encoding_.encode_soft(probs)
        mean = torch.from_numpy(self.x_mean_)
        std = torch.from_numpy(self.x_std_)
        xs = ((x - mean) / std).to(torch.float32)
        out = self.net_(xs[None, :])[0, 0].to(torch.float64) * self.y_std_ + self.y_mean_
        return torch.exp(out) if self.log_target else out

    def _state(self):
        sd = {f"net.{k}": v.detach().numpy().copy() for k, v in self.net_.state_dict().items()}
        return {"x_mean": self.x_mean_, "x_std": self.x_std_, "y_mean": self.y_mean_, "y_std": self.y_std_, **sd}

    def _set_state(self, state):
        import torch

        self.x_mean_, self.x_std_ = state["x_mean"], state["x_std"]
        self.y_mean_, self.y_std_ = float(state["y_mean"]), float(state["y_std"])
        net = _net(len(self.x_mean_), self.hidden)
        weights = {k[4:]: torch.from_numpy(np.asarray(v)) for k, v in state.items() if k.startswith("net.")}
        try:
            net.load_state_dict(weights)
        except RuntimeError as e:
            raise PredictorError(f"saved MLP weights do not match hidden={self.hidden}: {e}") from None
        self.net_ = _frozen(net)
        self._fast = None
