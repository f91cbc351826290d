"""Ship a searched architecture: train it, export ONNX, verify parity and latency.

Why this step exists: a search's answer is a *prediction* (predicted latency, supernet
accuracy).  It is only worth something once the stand-alone network runs where it is
deployed at the latency promised.  So the export does what the NAS papers do after the
search (FBNet, Wu et al. 2019, Sec. 4.1: train the sampled architecture from scratch; or
Once-for-All, Cai et al. 2020, Sec. 3.3: inherit the supernet weights and fine-tune) and
then checks, instead of assuming:

1. ``onnx.checker`` on the emitted graph (opset stated, BN folded into convs by
   ``hwnas.profiling.onnx_graph.network_to_onnx``);
2. numeric parity: ONNX Runtime logits against torch logits on real validation images,
   max abs difference and top-1 agreement; a difference beyond
   ``atol + rtol * max|logit|`` is an error, not a warning;
3. measured latency with the same runner the predictor was trained from
   (``hwnas.profiling.runner.measure``), reported beside the prediction and the budget;
   ``within_budget`` is reported, never hidden.

Everything lands in a model card (``model.json`` beside ``model.onnx``) and in the ONNX
``metadata_props`` so that ``evaluate_onnx`` can later find the resolution, dataset
split and classes without any side file.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hwnas import __version__
from hwnas.errors import ExportError, valid_list
from hwnas.evaluate import ParityReport, check_parity
from hwnas import jsonutil
from hwnas.jsonutil import to_jsonable
from hwnas.measured_pick import DEFAULT_MARGIN
from hwnas.profiling.providers import check_ep
from hwnas.torch_threads import torch_threads
from hwnas.train import EpochStats, TrainConfig, TrainProgress

log = logging.getLogger(__name__)

CARD_SCHEMA = 1
# metadata_props keys written into the ONNX model (all values are strings)
META_KEYS = ("hwnas_version", "arch", "space", "dataset", "accuracy", "resolution", "num_classes",
             "data_seed", "val_fraction", "data_limit", "opset", "input_name", "output_name", "mean", "std")


__all__ = ["ExportConfig", "ExportProgress", "ExportResult", "export_arch", "read_run"]


@dataclass(frozen=True)
class ExportConfig:
    """Everything ``export_arch`` needs; saved into the model card as given.

    Either ``run_dir`` (a ``hwnas search`` output holding ``result.json``) or ``arch``
    (with ``space``, default ``tiny``) names the architecture, never both.
    """

    out: str | Path
    run_dir: str | Path | None = None
    space: str | None = None
    arch: str | None = None
    dataset: str | None = None  # None: the run's dataset, else "digits"
    limit: int | None = None  # use only this many images of the dataset (tests, dry runs)
    val_fraction: float = 0.2
    data_seed: int | None = None  # split seed; None: the run's seed (same split as the search), else 0
    resolution: int | None = None  # None: the run's / the space's default
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float | None = None  # None: hwnas.train.DEFAULT_LR (x0.2 when fine-tuning from the supernet)
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    seed: int = 0
    train_threads: int | None = None  # torch intra-op threads while training (None: torch's default)
    from_supernet: bool = False
    bn_calibration_batches: int = 20  # supernet weights: BN statistics re-estimated on this many batches
    ep: str = "cpu"
    allow_fallback: bool = False
    threads: int = 1
    latency_warmup: int = 10
    latency_runs: int = 50
    # the profiler's protocol: paired sessions against the canary, a pause apart, median ratio
    latency_repeats: int = 3
    latency_gap_s: float = 0.5
    measure_latency: bool = True
    dynamic_batch: bool = False
    opset: int = 17
    latency_budget_ms: float | None = None  # None: the run's budget
    # ship another pick of the run: its pick for this budget (``per_budget`` of result.json,
    # else the best Pareto candidate meeting it), or the ``pareto_index``-th arch of its front
    budget: float | None = None
    pareto_index: int | None = None
    # time up to this many candidates (the run's pick first, then its Pareto archs) before
    # training, and ship the first that measures ``measured_margin`` under the budget
    # (``hwnas.measured_pick``); 0: ship the run's pick unmeasured until the final check
    measured_pick: int = 0
    measured_margin: float = DEFAULT_MARGIN
    predictor: str | Path | None = None  # predictor file, used when the run has no prediction
    parity_atol: float = 1e-4
    parity_rtol: float = 1e-3
    parity_images: int | None = None  # None: every validation image
    overwrite: bool = True


@dataclass(frozen=True)
class ExportProgress:
    """A progress event for a UI: ``stage`` is one of STAGES; ``train`` is set in 'train'."""

    stage: str
    message: str
    train: TrainProgress | None = None


STAGES = ("resolve", "data", "train", "onnx", "parity", "latency", "done")
ExportProgressFn = Callable[[ExportProgress], None]


@dataclass(frozen=True)
class ExportResult:
    onnx_path: str
    card_path: str
    space: str
    arch: str
    dataset: str
    resolution: int
    num_classes: int
    accuracy: float  # torch top-1 on the validation split, exported weights
    history: tuple[EpochStats, ...]
    parity: ParityReport  # on the CPU EP (the reference numerics)
    ep_parity: ParityReport | None  # on the requested EP when it is not the CPU
    latency: dict | None  # hwnas.profiling.runner.Measurement.to_dict()
    measured_latency_ms: float | None  # median
    predicted_latency_ms: float | None
    latency_budget_ms: float | None
    within_budget: bool | None  # measured median <= budget (None: no budget or not measured)
    flops_budget: float | None  # the run's FLOPs budget (multiply-adds), if it searched under one
    flops: int
    params: int
    opset: int
    dynamic_batch: bool
    fingerprint: dict | None
    wall_time_s: float
    card: dict = field(repr=False)

    def to_dict(self) -> dict:
        return to_jsonable(self)


# --------------------------------------------------------------------------- resolving
@dataclass(frozen=True)
class _Target:
    space: object  # SearchSpace
    arch: object  # Arch
    resolution: int
    dataset: str
    data_seed: int
    limit: int | None
    run: dict | None
    run_dir: Path | None
    test_fraction: float = 0.0  # the run's held-out test share: kept out of training here too


def read_run(run_dir: str | Path) -> dict:
    """The ``result.json`` of a search run folder, checked for the keys export needs."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"run folder {str(run_dir)!r} does not exist (expected a 'hwnas search --out' folder)")
    path = run_dir / "result.json"
    if not path.is_file():
        present = sorted(p.name for p in run_dir.iterdir())[:10]
        raise ExportError(f"run folder {str(run_dir)!r} has no result.json (a finished 'hwnas search' writes it); "
                          f"found: {valid_list(present) or 'nothing'}")
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {path}: {e}") from None
    missing = [k for k in ("space", "arch") if not isinstance(result, dict) or k not in result]
    if missing:
        raise ExportError(f"{path} lacks the key(s) {valid_list(missing)}; it is not a search result")
    return result


def _resolve(cfg: ExportConfig) -> _Target:
    from hwnas.errors import SpaceError
    from hwnas.space import get_space

    if cfg.run_dir is not None and cfg.arch is not None:
        raise ExportError("give either a run folder (--run) or an architecture (--arch), not both; "
                          f"got run={str(cfg.run_dir)!r} and arch={cfg.arch!r}")
    if cfg.run_dir is None and cfg.arch is None:
        raise ExportError("nothing to export: give a run folder (--run runs/NAME) or --space S --arch STRING")
    run = read_run(cfg.run_dir) if cfg.run_dir is not None else None
    if cfg.budget is not None or cfg.pareto_index is not None:
        run = _other_pick(run, cfg)
    if cfg.measured_pick:
        run = _measured_pick(run, cfg)
    space_name = run["space"] if run else (cfg.space or "tiny")
    if run and cfg.space is not None and cfg.space != run["space"]:
        raise ExportError(f"--space {cfg.space!r} contradicts the run's space {run['space']!r}; leave --space out")
    space = get_space(space_name)
    arch_str = run["arch"] if run else cfg.arch
    try:
        arch = space.parse(arch_str)
    except SpaceError as e:
        raise type(e)(f"{arch_str!r} is not an architecture of space {space.name!r}: {e}") from None
    res = cfg.resolution if cfg.resolution is not None else (run or {}).get("resolution")
    if space.searchable_resolution and cfg.resolution is None:
        res = None  # the arch's own token decides
    resolution = space.resolution(arch, res)
    dataset = cfg.dataset or (run or {}).get("dataset") or "digits"
    # the search's split (its seed and limit, from config.json) so that supernet weights are
    # never validated on images the supernet trained on
    data_seed = cfg.data_seed if cfg.data_seed is not None else int((run or {}).get("seed") or 0)
    limit, test_fraction = cfg.limit, 0.0
    if run is not None and dataset == run.get("dataset"):
        run_cfg = _run_config(Path(cfg.run_dir))
        limit = run_cfg.get("limit") if limit is None else limit
        test_fraction = float(run_cfg.get("test_fraction") or 0.0)
    return _Target(space, arch, resolution, dataset, data_seed, limit, run,
                   Path(cfg.run_dir) if cfg.run_dir is not None else None, test_fraction)


def _other_pick(run: dict | None, cfg: ExportConfig) -> dict:
    """The run's result with its arch (and budget, predicted cost) replaced by another pick."""
    from hwnas.search.pareto import read_pareto

    if run is None:
        raise ExportError("--budget / --pareto-index choose among a search run's picks: give --run")
    if cfg.budget is not None and cfg.pareto_index is not None:
        raise ExportError("give --budget or --pareto-index, not both")
    par = read_pareto(cfg.run_dir)
    front, kind = par["front"], par["cost_kind"]
    if cfg.pareto_index is not None:
        if not 0 <= cfg.pareto_index < len(front):
            raise ExportError(f"--pareto-index {cfg.pareto_index} is out of range: the front has {len(front)} archs "
                              f"(0 = cheapest .. {len(front) - 1} = most accurate)")
        p = front[cfg.pareto_index]
        chosen = {"arch": p["arch"], "cost": p["cost"], "budget": None}
    else:
        b = float(cfg.budget)
        listed = [x for x in par.get("budgets") or [] if x.get("arch") and abs(x["budget"] - b) <= 1e-9 * max(1.0, b)]
        ok = [p for p in front if p["cost"] <= b]
        if listed:
            chosen = {"arch": listed[0]["arch"], "cost": listed[0]["cost"], "budget": b}
        elif ok:
            best = max(ok, key=lambda p: p["acc"])
            chosen = {"arch": best["arch"], "cost": best["cost"], "budget": b}
        else:
            cheapest = front[0]["cost"] if front else float("nan")
            raise ExportError(f"no arch of the run's Pareto front meets {b:g} ({kind}); its cheapest costs {cheapest:g}")
    run = dict(run, arch=chosen["arch"])
    if kind == "latency":
        run["predicted_latency_ms"] = chosen["cost"]
        if chosen["budget"] is not None:
            run["latency_budget_ms"] = chosen["budget"]
    elif chosen["budget"] is not None:
        run["flops_budget"] = chosen["budget"]
    return run


def _measured_pick(run: dict | None, cfg: ExportConfig) -> dict:
    """The run's result with the arch that ``hwnas.measured_pick`` chose, and its report."""
    from hwnas.measured_pick import measured_pick

    if run is None:
        raise ExportError("--measured-pick times a search run's candidates: give --run")
    if cfg.budget is not None or cfg.pareto_index is not None:
        raise ExportError("--measured-pick chooses the arch itself; drop --budget / --pareto-index")
    if not cfg.measure_latency:
        raise ExportError("--measured-pick times candidates, so the export must measure latency too "
                          "(measure_latency=True)")
    mp = measured_pick(run, cfg.run_dir, cfg.measured_pick, margin=cfg.measured_margin, ep=cfg.ep,
                       threads=cfg.threads, warmup=cfg.latency_warmup, runs=cfg.latency_runs,
                       sessions=cfg.latency_repeats, gap_s=cfg.latency_gap_s, allow_fallback=cfg.allow_fallback,
                       budget_ms=cfg.latency_budget_ms)
    if mp.pareto_index is not None:
        run = _other_pick(run, dataclasses.replace(cfg, pareto_index=mp.pareto_index))
    return dict(run, measured_pick=mp.to_dict())


def _run_config(run_dir: Path) -> dict:
    """The run's config.json (``hwnas search`` writes it), or {} if absent or unreadable."""
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _check_out(cfg: ExportConfig) -> tuple[Path, Path]:
    out = Path(cfg.out)
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"the output must be a .onnx file (the model card goes beside it as .json); got {str(out)!r}")
    if out.is_dir():
        raise ExportError(f"the output {str(out)!r} is a folder; give a file name such as {str(out / 'model.onnx')!r}")
    if not out.parent.is_dir():
        raise ExportError(f"the output folder {str(out.parent)!r} does not exist; create it first")
    if out.exists() and not cfg.overwrite:
        raise ExportError(f"{str(out)!r} exists; pass overwrite=True to replace it")
    return out, out.with_suffix(".json")


def _check_config(cfg: ExportConfig) -> None:
    check_ep(cfg.ep)
    if not 13 <= cfg.opset <= 21:
        raise ExportError(f"opset must be between 13 and 21, got {cfg.opset}")
    if cfg.from_supernet and cfg.run_dir is None:
        raise ExportError("from_supernet (--from-supernet) needs a run folder (--run) that holds supernet.pt")
    if cfg.latency_budget_ms is not None and not cfg.latency_budget_ms > 0:
        raise ExportError(f"latency_budget_ms must be > 0, got {cfg.latency_budget_ms}")
    if cfg.latency_runs < 1:
        raise ExportError(f"latency_runs must be >= 1, got {cfg.latency_runs}")
    if cfg.parity_images is not None and cfg.parity_images < 1:
        raise ExportError(f"parity_images must be >= 1, got {cfg.parity_images}")
    if cfg.train_threads is not None and cfg.train_threads < 1:
        raise ExportError(f"train_threads must be >= 1, got {cfg.train_threads}")


# --------------------------------------------------------------------------- main entry
def export_arch(config: ExportConfig, *, progress: ExportProgressFn | None = None) -> ExportResult:
    """Train (or fine-tune) the chosen architecture, export it to ONNX and verify it.

    Returns an ``ExportResult`` and writes ``config.out`` (ONNX) and the model card beside
    it.  Raises ``ExportError`` for bad input and for a parity failure, and
    ``ProfilingError`` when the requested EP cannot load without ``allow_fallback``.
    """
    t_start = time.perf_counter()
    emit = progress or (lambda ev: None)
    _check_config(config)
    out, card_path = _check_out(config)
    target = _resolve(config)
    if config.from_supernet and not (target.run_dir / "supernet.pt").is_file():
        raise ExportError(f"--from-supernet: {str(target.run_dir / 'supernet.pt')!r} does not exist; "
                          "the run folder holds no supernet weights")
    if config.ep != "cpu" and not config.allow_fallback:
        from hwnas.profiling.providers import choose_provider

        choose_provider(config.ep)  # an unusable GPU provider fails now, not after training

    import torch

    from hwnas.cost import arch_cost
    from hwnas.data import load_dataset
    from hwnas.train import predict_logits, train_network

    emit(ExportProgress("resolve", f"{target.space.name}: {target.arch} at {target.resolution}px"))

    splits = load_dataset(target.dataset, target.resolution, seed=target.data_seed,
                          val_fraction=config.val_fraction, limit=target.limit, test_fraction=target.test_fraction)
    emit(ExportProgress("data", f"{splits.name}: {len(splits.train)} train / {len(splits.val)} val images, "
                                f"{splits.num_classes} classes"))
    if len(splits.val) == 0:
        raise ExportError(f"dataset {target.dataset!r} has no validation images (limit={target.limit}, "
                          f"val_fraction={config.val_fraction}); parity needs some")

    tcfg = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, optimizer=config.optimizer,
                       lr=_lr(config), weight_decay=config.weight_decay,
                       label_smoothing=config.label_smoothing, seed=config.seed)
    with torch.random.fork_rng(devices=[]), torch_threads(config.train_threads):
        torch.manual_seed(config.seed)
        model = _initial_model(config, target, splits)
        history = train_network(model, splits.train, splits.val, tcfg,
                                progress=lambda p: emit(ExportProgress("train", f"epoch {p.epoch}/{p.epochs}", p)))
        # one pass over the validation images serves both the accuracy and the parity reference
        val_logits = predict_logits(model, splits.val.tensors[0])
    accuracy = float((val_logits.argmax(1) == splits.val.tensors[1]).float().mean())
    cost = arch_cost(target.space, target.arch, target.resolution, splits.num_classes)

    import onnx

    from hwnas.profiling.onnx_graph import INPUT_NAME, OUTPUT_NAME, network_to_onnx

    emit(ExportProgress("onnx", f"ONNX opset {config.opset}{', dynamic batch' if config.dynamic_batch else ''}"))
    proto = network_to_onnx(model, batch_size=1, opset=config.opset, dynamic_batch=config.dynamic_batch)
    meta = {
        "hwnas_version": __version__, "arch": str(target.arch), "space": target.space.name,
        "dataset": target.dataset, "accuracy": f"{accuracy:.6f}", "resolution": str(target.resolution),
        "num_classes": str(splits.num_classes), "data_seed": str(target.data_seed),
        "val_fraction": str(config.val_fraction), "data_limit": "" if target.limit is None else str(target.limit),
        "opset": str(config.opset), "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
        "mean": json.dumps(list(splits.mean)), "std": json.dumps(list(splits.std)),
    }
    _set_metadata(proto, meta)
    proto.producer_version = __version__
    proto.doc_string = (f"hwnas {target.space.name} arch {target.arch}; input NCHW float32 "
                        f"{target.resolution}x{target.resolution}, normalised as hwnas.data.load_dataset does")
    onnx.checker.check_model(proto)
    model_bytes = proto.SerializeToString()

    n_parity = config.parity_images  # None: every validation image
    images = splits.val.tensors[0][:n_parity].numpy()
    labels = splits.val.tensors[1][:n_parity].numpy()
    ref = val_logits[:n_parity].numpy()
    emit(ExportProgress("parity", f"ONNX Runtime vs torch on {len(images)} validation images"))
    parity = check_parity(model_bytes, images, ref, labels, ep="cpu", atol=config.parity_atol,
                          rtol=config.parity_rtol, threads=config.threads)
    ep_parity = None
    if config.ep != "cpu":
        # GPU kernels (TF32 convs, fused TensorRT layers) legitimately differ more than CPU ones
        ep_parity = check_parity(model_bytes, images, ref, labels, ep=config.ep,
                                 atol=config.parity_atol * 10, rtol=config.parity_rtol * 10,
                                 threads=config.threads, allow_fallback=config.allow_fallback)
    for rep in (parity, ep_parity):
        if rep is not None and not rep.passed:
            raise ExportError(
                f"ONNX Runtime ({rep.ep_used}) disagrees with torch: max abs logit difference "
                f"{rep.max_abs_diff:.3g} > tolerance {rep.tolerance:.3g} on {rep.images} validation images "
                f"(top-1 agreement {rep.top1_agreement:.4f}); the exported graph is wrong, nothing was written")

    run = target.run or {}
    budget = config.latency_budget_ms if config.latency_budget_ms is not None else run.get("latency_budget_ms")
    predicted, predictor_path, predictor_fp = _predicted_latency(config, target)
    measurement = fingerprint = None
    if config.measure_latency:
        emit(ExportProgress("latency", f"measuring latency on {config.ep} against the canary "
                                       f"({config.latency_repeats} x {config.latency_runs} paired runs)"))
        m, fingerprint = _measure_latency(config, target, model_bytes, predictor_fp)
        measurement = m.to_dict()
    measured = measurement["latency_ms"] if measurement else None
    predictor_device = (predictor_fp or {}).get("device_id")
    within = None if budget is None or measured is None else bool(measured <= budget)

    out.write_bytes(model_bytes)
    result_fields = dict(
        onnx_path=str(out), card_path=str(card_path), space=target.space.name, arch=str(target.arch),
        dataset=target.dataset, resolution=target.resolution, num_classes=splits.num_classes,
        accuracy=accuracy, history=tuple(history), parity=parity, ep_parity=ep_parity, latency=measurement,
        measured_latency_ms=measured, predicted_latency_ms=predicted, latency_budget_ms=budget,
        within_budget=within, flops_budget=run.get("flops_budget"), flops=cost.flops, params=cost.params,
        opset=config.opset, dynamic_batch=config.dynamic_batch, fingerprint=fingerprint,
    )
    wall = time.perf_counter() - t_start
    card = _model_card(config, target, result_fields, (predictor_path, predictor_device), wall, splits)
    card_path.write_text(jsonutil.dumps(card, indent=2) + "\n")
    emit(ExportProgress("done", f"wrote {out} and {card_path}"))
    if within is False:
        log.warning("measured latency %.3f ms exceeds the budget %.3f ms", measured, budget)
    return ExportResult(**result_fields, wall_time_s=wall, card=card)


def _lr(cfg: ExportConfig) -> float | None:
    if cfg.lr is not None or not cfg.from_supernet:
        return cfg.lr
    from hwnas.train import DEFAULT_LR

    # fine-tuning inherited weights: a fifth of the from-scratch peak (OFA fine-tunes at
    # a lower rate than it trains; Cai et al. 2020, Sec. 4)
    return DEFAULT_LR.get(cfg.optimizer, 0.05) * 0.2


def _initial_model(cfg: ExportConfig, target: _Target, splits):
    """A fresh network, or the supernet's shared weights for the arch (then BN recalibrated)."""
    from hwnas.nn import build_model

    if not cfg.from_supernet:
        return build_model(target.space, target.arch, target.resolution, splits.num_classes)
    import torch

    from hwnas.nn.supernet import Supernet, private_bn_from_state
    from hwnas.train import recalibrate_bn

    path = target.run_dir / "supernet.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user problem here
        raise ExportError(f"cannot load {path}: {e}") from None
    # a supernet with per-choice BN (BN-NAS) saves one BN per choice: build the same layout
    net = Supernet(target.space, splits.num_classes, target.resolution, private_bn=private_bn_from_state(state))
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise ExportError(
            f"{path} does not fit Supernet(space={target.space.name!r}, num_classes={splits.num_classes}, "
            f"resolution={target.resolution}): {first} (was the search run on another dataset or space?)"
        ) from None
    net.set_active_subnet(target.arch)
    model = net.get_active_subnet()
    if cfg.bn_calibration_batches > 0:
        recalibrate_bn(model, splits.train, batches=cfg.bn_calibration_batches,
                       batch_size=cfg.batch_size, seed=cfg.seed)
    return model


def _measure_latency(config: ExportConfig, target: _Target, model_bytes: bytes, predictor_fp: dict | None):
    """The exported model timed as the profiler times archs (``hwnas.profiling.protocol``):
    against the predictor's canary, on the predictor's reference when this machine measured
    its data; (``ModelLatency``, this machine's fingerprint)."""
    from hwnas.profiling.fingerprint import device_fingerprint
    from hwnas.profiling.protocol import measure_like_data

    m = measure_like_data(model_bytes, target.space.name, target.resolution, predictor_fp, ep=config.ep,
                          threads=config.threads, warmup=config.latency_warmup, runs=config.latency_runs,
                          sessions=config.latency_repeats, gap_s=config.latency_gap_s,
                          allow_fallback=config.allow_fallback)
    return m, device_fingerprint(m.ep_used, threads=config.threads, batch_size=1)


def _predicted_latency(cfg: ExportConfig, target: _Target) -> tuple[float | None, str | None, dict | None]:
    """(predicted ms, predictor path, the fingerprint of the device the predictor was trained on).

    The run's own prediction is used as is; an explicit ``cfg.predictor`` predicts anew.
    The predictor's device id goes into the card so that a reader sees at once whether the
    prediction and the measurement refer to the same device.
    """
    from hwnas.errors import PredictorError

    run = target.run or {}
    pred_path = cfg.predictor or run.get("predictor")
    predictor = None
    if cfg.predictor is not None:
        from hwnas.predictors import load_predictor

        if not Path(cfg.predictor).is_file():
            raise ExportError(f"predictor file {str(cfg.predictor)!r} does not exist")
        predictor = load_predictor(cfg.predictor, space=target.space)
        predicted = float(np.asarray(predictor.predict([target.arch]))[0])
    else:
        predicted = run.get("predicted_latency_ms")
        predicted = None if predicted is None else float(predicted)
        if pred_path and Path(pred_path).is_file():
            from hwnas.predictors import load_predictor

            try:
                predictor = load_predictor(pred_path, space=target.space, force=True)
            except PredictorError as e:  # the run's prediction stands; only the device id is lost
                log.warning("cannot read the run's predictor %s: %s", pred_path, e)
    fp = getattr(predictor, "fingerprint", None)
    if predictor is not None and not fp and predictor.device_id:
        fp = {"device_id": predictor.device_id}
    return predicted, (str(pred_path) if pred_path else None), fp


def _model_card(cfg, target, r, predictor, wall, splits) -> dict:
    predictor_path, predictor_device = predictor
    measured_device = (r["fingerprint"] or {}).get("device_id")
    n_train, n_val = len(splits.train), len(splits.val)
    measured, predicted, budget = r["measured_latency_ms"], r["predicted_latency_ms"], r["latency_budget_ms"]
    lat = r["latency"] or {}
    card = {
        "schema": CARD_SCHEMA,
        "hwnas_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "onnx": Path(r["onnx_path"]).name,
        "space": r["space"],
        "arch": r["arch"],
        "resolution": r["resolution"],
        "num_classes": r["num_classes"],
        "input": {"name": "input", "shape": ["batch" if r["dynamic_batch"] else 1, 3, r["resolution"],
                                            r["resolution"]], "dtype": "float32", "layout": "NCHW",
                  "normalise": {"mean": list(splits.mean), "std": list(splits.std),
                                "note": ("per channel, on the dataset's raw pixel scale (digits: [0, 1]; "
                                         "cifar10/imagefolder: 0..255), then bilinear resize, as "
                                         "hwnas.data.load_dataset does")}},
        "dataset": {"name": r["dataset"], "seed": target.data_seed, "val_fraction": cfg.val_fraction,
                    "limit": target.limit, "train_images": n_train, "val_images": n_val},
        "training": {"epochs": cfg.epochs, "from_supernet": cfg.from_supernet, "optimizer": cfg.optimizer,
                     "lr": TrainConfig(optimizer=cfg.optimizer, lr=_lr(cfg)).peak_lr,
                     "batch_size": cfg.batch_size, "weight_decay": cfg.weight_decay, "seed": cfg.seed,
                     "history": [asdict(h) for h in r["history"]]},
        "accuracy": r["accuracy"],
        "flops": r["flops"],
        "flops_budget": r["flops_budget"],
        "params": r["params"],
        "opset": r["opset"],
        "dynamic_batch": r["dynamic_batch"],
        "parity": asdict(r["parity"]),
        "ep_parity": asdict(r["ep_parity"]) if r["ep_parity"] else None,
        "latency": {
            "ep": cfg.ep, "ep_used": lat.get("ep_used"), "fallback": lat.get("fallback"),
            "measured_ms": measured, "stats": r["latency"],
            "predicted_ms": predicted, "predictor": str(predictor_path) if predictor_path else None,
            "predictor_device_id": predictor_device,
            "same_device_as_predictor": (None if predictor_device is None or measured_device is None
                                         else predictor_device == measured_device),
            "prediction_error": (None if measured is None or predicted is None or measured == 0
                                 else (predicted - measured) / measured),
            "budget_ms": budget, "within_budget": r["within_budget"],
            "budget_margin": None if budget is None or measured is None else (budget - measured) / budget,
        },
        "device": r["fingerprint"],
        "run": str(target.run_dir) if target.run_dir is not None else None,
        "search": _search_summary(target.run),
        "wall_time_s": wall,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
    }
    return to_jsonable(card)


def _search_summary(run: dict | None) -> dict | None:
    if not run:
        return None
    keys = ("strategy", "seed", "latency_budget_ms", "flops_budget", "predicted_latency_ms",
            "supernet_val_acc", "archs_sampled", "wall_time_s", "measured_pick")
    return {k: run.get(k) for k in keys if k in run}


def _set_metadata(proto, meta: dict) -> None:
    import onnx

    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in meta.items()})
