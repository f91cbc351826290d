"""``mlp``: a small torch regressor on the encoding, differentiable w.r.t. a soft encoding.

Why an MLP: it is what BRP-NAS / HELP-style latency predictors use and, unlike trees, it is
a smooth function of its input, so a search that holds a probability vector per decision
(FBNet, FP-NAS) can feed those probabilities in place of the one-hot blocks and the
per-layer costs' expectations in place of the costs, and backpropagate the predicted
latency into the architecture distribution (FBNet, Wu et al. 2019, eq. 6 uses the same
idea with a lookup table, which is linear, so there it is the exact expectation; for an
MLP, ``f(E[x])`` is the mean-field approximation of ``E[f(x)]``, exact at one-hot points
and for the linear path).

How it is trained (issue 11: the earlier MLP started at the ridge solution with its linear
path frozen and its MLP held near zero by weight decay, so it *was* ridge):

- an inner validation split (``val_fraction``, seeded) of the training archs decides, by the
  validation archs' mean ``|log(measured / predicted)|``: the target transform (``log`` or
  raw ms, ``log_target=None``) and whether a linear path ``linear(x)`` runs beside the MLP
  (``linear=None``; latency is largely additive over layers, as in FBNet's LUT, so the
  linear path often helps, but not always).  The linear path starts at the ridge solution
  and trains with the rest; the MLP path starts near zero;
- early stopping on that split's loss (``patience`` epochs) picks the number of epochs;
- the chosen configuration is refitted on all training archs for that many epochs with
  ``n_seeds`` seeds, and the prediction is the members' mean in target space (a deep
  ensemble, Lakshminarayanan et al., NeurIPS 2017, without the variance heads);
- the validation residuals of the chosen configuration are the predictor's out-of-fold
  residuals (``predict_with_std``), so uncertainty costs no extra fit.

Below ``MIN_SPLIT`` archs there is nothing to split: the defaults (log target, linear path)
train for ``epochs`` epochs.  ``selection_`` records the validation table.
"""
from __future__ import annotations

import numpy as np

from hwnas.errors import PredictorError
from hwnas.predictors._base import Predictor
from hwnas.predictors._encoding import DEFAULT_ENCODING
from hwnas.predictors._registry import register_predictor
from hwnas.predictors._uncertainty import log_ratio
from hwnas.torch_threads import torch_threads


#: ``huber`` (smooth L1 on the standardised target) is robust to the odd measurement that a
#: busy machine delays; ``mse`` is the plain least-squares fit
_LOSSES = {"mse": "mse_loss", "huber": "smooth_l1_loss"}


#: below this many training archs there is no inner validation split
MIN_SPLIT = 20


def _net(n_in: int, hidden: tuple[int, ...], linear: bool):
    import torch.nn as nn

    class ResidualMLP(nn.Module):
        """``linear(x) + mlp(x)`` (or ``mlp(x)`` alone): the linear path holds the additive
        part of latency (per-layer costs add up, as in FBNet's LUT), the MLP the rest."""

        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(n_in, 1) if linear else None
            layers, width = [], n_in
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            layers.append(nn.Linear(width, 1))
            self.mlp = nn.Sequential(*layers)

        def forward(self, x):
            out = self.mlp(x)
            return out if self.linear is None else out + self.linear(x)

    return ResidualMLP()


def _warm_start(net, xn: np.ndarray, tn: np.ndarray) -> None:
    """Linear path at the ridge solution (closed form, GCV-chosen penalty), MLP output near
    zero: training starts at the linear model's accuracy and improves on it from there."""
    import torch
    from sklearn.linear_model import RidgeCV

    with torch.no_grad():
        net.mlp[-1].weight.mul_(0.01)
        net.mlp[-1].bias.zero_()
        if net.linear is None:
            net.mlp[-1].bias.fill_(float(tn.mean()))
            return
        r = RidgeCV(alphas=(0.1, 1.0, 10.0, 100.0)).fit(xn, tn)
        net.linear.weight.copy_(torch.from_numpy(np.asarray(r.coef_, dtype=np.float32))[None, :])
        net.linear.bias.fill_(float(r.intercept_))


def _frozen(net):
    """Eval mode, no weight gradients: a search differentiates w.r.t. probs, not weights."""
    for p in net.parameters():
        p.grad = None
        p.requires_grad_(False)
    return net.eval()


def _options(value) -> tuple:
    return (True, False) if value is None else (bool(value),)


@register_predictor("mlp")
class MLPPredictor(Predictor):
    differentiable = True
    has_spread = True

    def __init__(self, space, *, encoding: str = DEFAULT_ENCODING, resolution: int | None = None,
                 log_target: bool | None = None, seed: int = 0, hidden: tuple[int, ...] = (64, 64),
                 epochs: int = 300, patience: int = 30, lr: float = 3e-3, weight_decay: float = 1e-4,
                 batch_size: int = 64, loss: str = "mse", linear: bool | None = None, n_seeds: int = 3,
                 val_fraction: float = 0.2):
        super().__init__(space, encoding=encoding, resolution=resolution, log_target=log_target, seed=seed)
        self.hidden = tuple(int(h) for h in hidden)
        self.epochs = int(epochs)
        self.patience = int(patience)
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        if loss not in _LOSSES:
            raise PredictorError(f"loss must be one of {', '.join(_LOSSES)}, got {loss!r}")
        self.loss = loss
        self.linear = linear
        if int(n_seeds) < 1:
            raise PredictorError(f"n_seeds must be >= 1, got {n_seeds}")
        self.n_seeds = int(n_seeds)
        if not 0.0 < val_fraction < 1.0:
            raise PredictorError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.val_fraction = val_fraction

    # -- training ------------------------------------------------------------------
    def _fit(self, idx, y_ms):
        x = self.encoding_.encode(idx)
        self.x_mean_ = x.mean(0)
        sd = x.std(0)
        self.x_std_ = np.where(sd > 1e-12, sd, 1.0)
        xn = (x - self.x_mean_) / self.x_std_
        n = len(idx)
        self._val_residuals = np.zeros(0)
        self.selection_ = []
        if n >= MIN_SPLIT:
            log_t, linear, epochs = self._select(xn, y_ms)
        else:
            log_t = True if self.log_target is None else bool(self.log_target)
            linear = True if self.linear is None else bool(self.linear)
            epochs = self.epochs
        self.log_target_, self.linear_, self.epochs_ = log_t, linear, epochs
        t = self._to_target(y_ms)
        self.y_mean_, self.y_std_ = float(t.mean()), float(t.std() or 1.0)
        tn = (t - self.y_mean_) / self.y_std_
        self.nets_ = [_frozen(self._train(xn, tn, linear, self.seed + 1009 * k, epochs)[0])
                      for k in range(self.n_seeds)]
        self._fast = None

    def _select(self, xn, y_ms):
        """Pick (log target, linear path, epochs) on an inner validation split."""
        rng = np.random.default_rng(self.seed + 17)
        perm = rng.permutation(len(xn))
        n_val = max(2, int(round(len(xn) * self.val_fraction)))
        va, tr = perm[:n_val], perm[n_val:]
        best = None
        for log_t in _options(self.log_target):
            t = np.log(y_ms) if log_t else y_ms
            mu, sd = float(t[tr].mean()), float(t[tr].std() or 1.0)
            tn = (t - mu) / sd
            for linear in _options(self.linear):
                net, epochs = self._train(xn[tr], tn[tr], linear, self.seed, self.epochs, (xn[va], tn[va]))
                pred_t = self._forward(net, xn[va]) * sd + mu
                r = log_ratio(y_ms[va], np.exp(pred_t) if log_t else pred_t)
                score = float(np.mean(np.abs(r)))
                self.selection_.append({"log_target": log_t, "linear": linear, "epochs": epochs,
                                        "val_mean_abs_log_err": score})
                if best is None or score < best[0]:
                    best = (score, log_t, linear, epochs, r)
        _, log_t, linear, epochs, self._val_residuals = best
        return log_t, linear, epochs

    def _train(self, xn, tn, linear: bool, seed: int, epochs: int, val=None):
        """Adam with weight decay; with ``val``, stop after ``patience`` epochs without a
        better validation loss and return the best epoch's weights and that epoch."""
        import torch

        xs = torch.from_numpy(xn.astype(np.float32))
        ts = torch.from_numpy(tn.astype(np.float32))[:, None]
        if val is not None:
            xv = torch.from_numpy(val[0].astype(np.float32))
            tv = torch.from_numpy(val[1].astype(np.float32))[:, None]
        with torch.random.fork_rng(devices=[]), torch_threads(1):
            torch.manual_seed(seed)
            net = _net(xn.shape[1], self.hidden, linear)
            _warm_start(net, xn, tn)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            n, bs = len(xs), max(1, min(self.batch_size, len(xs)))
            loss_fn = getattr(torch.nn.functional, _LOSSES[self.loss])
            best, best_epoch, best_state = float("inf"), epochs, None
            for epoch in range(1, epochs + 1):
                net.train()
                perm = torch.randperm(n)
                for k in range(0, n, bs):
                    b = perm[k:k + bs]
                    err = loss_fn(net(xs[b]), ts[b])
                    opt.zero_grad()
                    err.backward()
                    opt.step()
                if val is None:
                    continue
                with torch.no_grad():
                    v = float(loss_fn(net.eval()(xv), tv))
                if v < best - 1e-6:
                    best, best_epoch = v, epoch
                    best_state = {k: t.clone() for k, t in net.state_dict().items()}
                elif epoch - best_epoch >= self.patience:
                    break
            if best_state is not None:
                net.load_state_dict(best_state)
        return net.eval(), best_epoch

    @staticmethod
    def _forward(net, xn) -> np.ndarray:
        import torch

        with torch.no_grad():
            return net(torch.from_numpy(xn.astype(np.float32)))[:, 0].double().numpy()

    def _oof_residuals(self, idx, y_ms):
        """The inner validation split's residuals when there was one (no extra fit)."""
        if len(self._val_residuals) >= 2:
            return self._val_residuals
        return super()._oof_residuals(idx, y_ms)

    # -- prediction ----------------------------------------------------------------
    def _member_outputs(self, idx) -> np.ndarray:
        """``(members, N)`` standardised-target outputs, computed as gathers (see
        ``Encoding.binary_tables``) and float32 numpy matmuls: >= 10^5 archs/s on one core."""
        if self._fast is None:
            self._fast = [self._fast_weights(net) for net in self.nets_]
        dense = self.encoding_.encode_dense(idx).astype(np.float32)
        outs = []
        for tables, w_dense, bias, rest, has_linear in self._fast:
            pre = np.broadcast_to(bias, (len(idx), len(bias))).copy()
            for d, t in enumerate(tables):
                pre += t[idx[:, d]]
            if dense.shape[1]:
                pre = pre + dense @ w_dense
            lin, h = (pre[:, 0], pre[:, 1:]) if has_linear else (0.0, pre)
            h = np.maximum(h, 0.0)
            for k, (w, b) in enumerate(rest):
                h = h @ w + b
                if k < len(rest) - 1:
                    h = np.maximum(h, 0.0)
            outs.append((lin + h[:, 0]).astype(np.float64))
        return np.stack(outs)

    def _predict(self, idx):
        return self._from_target(self._member_outputs(idx).mean(0) * self.y_std_ + self.y_mean_)

    def predict_spread(self, archs):
        """Members' mean and standard deviation (ms)."""
        self._check_fitted()
        per = self._from_target(self._member_outputs(self.encoding_.indices(archs)) * self.y_std_ + self.y_mean_)
        return per.mean(0), per.std(0)

    def _fast_weights(self, net):
        """Fold standardisation into the first layers and split them by feature kind."""
        first = ([net.linear] if net.linear is not None else []) + [net.mlp[0]]
        w = np.concatenate([m.weight.detach().double().numpy() for m in first])  # (1 + h, F) or (h, F)
        b = np.concatenate([m.bias.detach().double().numpy() for m in first])
        w_s = w / self.x_std_
        bias = (b - w_s @ self.x_mean_).astype(np.float32)
        tables = [(t @ w_s.T).astype(np.float32) for t in self.encoding_.binary_tables()]
        w_dense = w_s[:, self.encoding_.dense_columns()].T.astype(np.float32)
        linears = [m for m in net.mlp[1:] if hasattr(m, "weight")]
        rest = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linears]
        return tables, w_dense, bias, rest, net.linear is not None

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
        xs = ((x - mean) / std).to(torch.float32)[None, :]
        outs = torch.stack([net(xs)[0, 0] for net in self.nets_]).mean()
        out = outs.to(torch.float64) * self.y_std_ + self.y_mean_
        return torch.exp(out) if self._log else out

    # -- persistence -----------------------------------------------------------------
    def _state(self):
        sd = {f"net{i}.{k}": v.detach().numpy().copy() for i, net in enumerate(self.nets_)
              for k, v in net.state_dict().items()}
        return {"x_mean": self.x_mean_, "x_std": self.x_std_, "y_mean": self.y_mean_, "y_std": self.y_std_,
                "log_target_": self.log_target_, "linear_": self.linear_, "epochs_": self.epochs_,
                "n_nets": len(self.nets_), "selection": self.selection_, **sd}

    def _set_state(self, state):
        import torch

        if "n_nets" not in state:
            raise PredictorError("this MLP predictor file was written by an older hwnas (a ridge-anchored MLP "
                                 "without members); retrain it with 'hwnas predictor train'")
        self.x_mean_, self.x_std_ = state["x_mean"], state["x_std"]
        self.y_mean_, self.y_std_ = float(state["y_mean"]), float(state["y_std"])
        self.log_target_, self.linear_ = bool(state["log_target_"]), bool(state["linear_"])
        self.epochs_, self.selection_ = int(state["epochs_"]), list(state["selection"])
        self._val_residuals = np.zeros(0)
        nets = []
        for i in range(int(state["n_nets"])):
            net = _net(len(self.x_mean_), self.hidden, self.linear_)
            prefix = f"net{i}."
            weights = {k[len(prefix):]: torch.from_numpy(np.asarray(v)) for k, v in state.items()
                       if k.startswith(prefix)}
            try:
                net.load_state_dict(weights)
            except RuntimeError as e:
                raise PredictorError(f"saved MLP weights do not match hidden={self.hidden}: {e}") from None
            nets.append(_frozen(net))
        self.nets_ = nets
        self._fast = None
