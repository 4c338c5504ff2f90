"""One training run: (EH-FT head stage) -> masks -> fit -> sparsify -> export -> parity check."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from methods import Backbone, Engine, HeadConfig, TaskArtifact
from methods.engine import forward_tasks
from trainer import masks
from trainer.config import TrainConfig
from trainer.data import Dataset
from trainer.loop import Encoded, FitSettings, batches, encode, fit, loss_fn, predict, total_steps
from trainer.metrics import compute_metrics
from trainer.models import DenseModel, LoraModel, MaskPolicy, PetModel, Trainable

log = logging.getLogger(__name__)

METHOD_LABELS = {
    "pasta": "PASTA (special-token vectors per layer)",
    "prefix": "deep prefix (P-tuning v2)",
    "lora": "LoRA via PEFT (query, value)",
    "bitfit": "BitFit (bias deltas)",
    "child-d": "Child-Tuning_D (Fisher mask, global top-density)",
    "child-f": "Child-Tuning_F (Bernoulli gradient mask, diff sparsified by magnitude)",
    "dps": "DPS (staged subnetworks from accumulated gradients)",
    "full": "FULL FINE-TUNING BASELINE (dense diff of every tunable weight)",
}
PARITY_ATOL = 1e-4  # engine vs trainer logits, fp32; measured values are ~1e-6


class ParityError(RuntimeError):
    """The stored artifact does not reproduce the trained model's logits."""


@dataclasses.dataclass
class TrainResult:
    artifact: TaskArtifact
    metrics: dict[str, float]  # dev metrics of the exported artifact
    training: dict[str, Any]  # the manifest's training section
    losses: list[float]
    parity: float  # max |engine logits - trainer logits| on dev rows
    model: Trainable


@dataclasses.dataclass
class Context:
    backbone: Backbone
    train: Encoded
    dev: Encoded
    head: HeadConfig
    metric: str
    progress: bool

    @property
    def pad_id(self) -> int:
        return self.backbone.tokenizer.pad_token_id or 0

    @property
    def device(self) -> torch.device:
        return self.backbone.device


HeadCache = dict[tuple[Any, ...], tuple[dict[str, torch.Tensor], dict[str, Any]]]


def train(cfg: TrainConfig, backbone: Backbone, train_data: Dataset, dev_data: Dataset,
          metric: str, *, progress: bool = True, head_cache: HeadCache | None = None,
          log_fn: Callable[[str], None] = print, eval_each_epoch: bool = True) -> TrainResult:
    """Train ``cfg.method`` on ``train_data``; dev metrics per epoch via ``log_fn``."""
    torch.manual_seed(cfg.seed)
    data = train_data.subsample(cfg.max_train, cfg.seed)
    tok = backbone.tokenizer
    head = HeadConfig(num_outputs=data.num_outputs, type=cfg.head_type)
    ctx = Context(backbone, encode(tok, data, cfg.max_length), encode(tok, dev_data, cfg.max_length),
                  head, metric, progress)
    training: dict[str, Any] = {"method": cfg.method, "method_label": METHOD_LABELS[cfg.method],
                                "hyperparameters": cfg.to_dict(), "train_examples": len(data.examples),
                                "dev_examples": len(dev_data.examples)}
    head_tensors = None
    if cfg.head_init is not None:
        head_tensors, training["head_init_stage"] = _head_stage(cfg, ctx, head_cache, log_fn)
    model = _build(cfg, ctx, head_tensors)
    history: list[dict[str, Any]] = []
    settings = _settings(cfg, cfg.epochs, cfg.method, ctx.progress)

    last_epoch = math.ceil(total_steps(len(ctx.train), settings) / math.ceil(len(ctx.train) / cfg.batch_size))

    def on_epoch(epoch: int, loss: float) -> dict[str, float]:
        if not eval_each_epoch and epoch < last_epoch:
            log_fn(f"[{cfg.method}] epoch {epoch}: train loss {loss:.4f}")
            return {}
        m = evaluate(model, ctx)
        history.append({"epoch": epoch, "train_loss": round(loss, 5), **m})
        log_fn(f"[{cfg.method}] epoch {epoch}: train loss {loss:.4f}, dev " + _fmt(m, metric))
        return m

    losses = fit(model, ctx.train, settings, ctx.pad_id, ctx.device, on_epoch)
    training.update(steps=len(losses), dev_history=history)
    metrics = history[-1].copy() if history else evaluate(model, ctx)
    if cfg.method == "child-f":
        metrics = _sparsify(model, cfg, ctx, metrics, training, log_fn)
    if isinstance(model, DenseModel) and isinstance(model.policy, masks.StagedMask):
        training["dps_stages_history"] = model.policy.history
    artifact = model.export()
    artifact.validate(backbone.spec)
    parity = check_parity(model, artifact, ctx)
    training.update(trainable_params=model.trainable_count(), stored_params=stored_params(artifact),
                    parity_max_abs=parity)
    final = {k: float(v) for k, v in metrics.items() if k not in ("epoch", "train_loss")}
    return TrainResult(artifact, final, training, losses, parity, model)


def _fmt(m: dict[str, float], metric: str) -> str:
    return ", ".join(f"{k} {v:.4f}" + ("*" if k == metric else "") for k, v in m.items())


def _settings(cfg: TrainConfig, epochs: float, desc: str, progress: bool = True) -> FitSettings:
    return FitSettings(epochs=epochs, lr=cfg.learning_rate, batch_size=cfg.batch_size,
                       weight_decay=cfg.weight_decay, warmup=cfg.warmup, seed=cfg.seed,
                       progress=progress, desc=desc)


def evaluate(model: Trainable, ctx: Context) -> dict[str, float]:
    logits = predict(model, ctx.dev, 64, ctx.pad_id, ctx.device)
    return compute_metrics(logits, ctx.dev.targets, ctx.dev.regression)


def _build(cfg: TrainConfig, ctx: Context, head_tensors: dict[str, torch.Tensor] | None) -> Trainable:
    bb = ctx.backbone
    model: Trainable
    if cfg.method in ("pasta", "prefix", "bitfit"):
        model = PetModel(bb, cfg, ctx.head)
    elif cfg.method == "lora":
        model = LoraModel(bb, cfg, ctx.head)
    else:
        model = DenseModel(bb, cfg, ctx.head)
    if head_tensors is not None:
        model.load_head(head_tensors)
    if isinstance(model, DenseModel):
        model.policy = _policy(cfg, model, ctx)
    return model


def _policy(cfg: TrainConfig, model: DenseModel, ctx: Context) -> MaskPolicy:
    if cfg.method == "full":
        return MaskPolicy()
    if cfg.method == "child-f":
        return masks.BernoulliMask(cfg.child_f_p, cfg.seed, ctx.device)
    n = len(ctx.train) if cfg.fisher_examples is None else min(cfg.fisher_examples, len(ctx.train))
    fisher_batches = itertools.islice(
        batches(ctx.train, cfg.batch_size, ctx.pad_id, ctx.device, shuffle_seed=cfg.seed + 7),
        math.ceil(n / cfg.batch_size))
    model.module.train()

    def loss_of(batch: Any) -> torch.Tensor:
        return loss_fn(model.forward(batch), batch.targets, ctx.train.regression)

    info = masks.fisher(model.params, fisher_batches, loss_of)
    if cfg.method == "child-d":
        return masks.FixedMask(info, cfg.density)
    steps = total_steps(len(ctx.train), _settings(cfg, cfg.epochs, cfg.method))
    return masks.StagedMask(info, cfg.density, cfg.dps_stages, steps)


def _head_stage(cfg: TrainConfig, ctx: Context, cache: HeadCache | None,
                log_fn: Callable[[str], None]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """EH-FT: train the PET method jointly with the head; return the head it learnt."""
    assert cfg.head_init is not None
    pet = cfg.head_init.split(":", 1)[1]
    pet_cfg = dataclasses.replace(cfg, method=pet, lr=None, head_init=None,
                                  epochs=cfg.epochs * cfg.head_init_frac)
    key = (pet_cfg, len(ctx.train), ctx.head, id(ctx.backbone), tuple(ctx.train.targets[:50]))
    if cache is not None and key in cache:
        return cache[key]
    log_fn(f"[head-init {cfg.head_init}] {pet_cfg.epochs:g} epochs of {pet} with the head")
    model = _build(pet_cfg, ctx, None)
    fit(model, ctx.train, _settings(pet_cfg, pet_cfg.epochs, f"head-init {pet}", ctx.progress),
        ctx.pad_id, ctx.device)
    m = evaluate(model, ctx)
    log_fn(f"[head-init {cfg.head_init}] dev " + _fmt(m, ctx.metric))
    result = (model.head_tensors(), {"method": pet, "epochs": pet_cfg.epochs,
                                     "lr": pet_cfg.learning_rate, "dev": m})
    if cache is not None:
        cache[key] = result
    return result


def _sparsify(model: Trainable, cfg: TrainConfig, ctx: Context, dense: dict[str, float],
              training: dict[str, Any], log_fn: Callable[[str], None]) -> dict[str, float]:
    """child-f: cut the dense diff to the density budget by magnitude; report the cost."""
    assert isinstance(model, DenseModel)
    diffs = model.diffs()
    nonzero = sum(int((d != 0).sum()) for d in diffs.values())
    model.set_diffs(masks.sparsify(diffs, cfg.density))
    sparse = evaluate(model, ctx)
    cost = dense[ctx.metric] - sparse[ctx.metric]
    training["sparsify"] = {"rule": "global top-|diff| to density", "dense_nonzero": nonzero,
                            "dense_dev": {k: v for k, v in dense.items() if k not in ("epoch", "train_loss")},
                            "sparse_dev": sparse, "metric_cost": cost}
    log_fn(f"[child-f] sparsified {nonzero} changed weights to density {cfg.density}: "
           f"{ctx.metric} {dense[ctx.metric]:.4f} -> {sparse[ctx.metric]:.4f} (cost {cost:+.4f})")
    return sparse


@torch.no_grad()
def check_parity(model: Trainable, artifact: TaskArtifact, ctx: Context, rows: int = 16) -> float:
    """Max |engine logits from the artifact - the trainer's own logits| (fp32, eval mode)."""
    engine = Engine(ctx.backbone)
    loaded = engine.load(artifact)
    model.module.eval()
    sample = Encoded(ctx.dev.ids[:rows], ctx.dev.types[:rows], ctx.dev.targets[:rows], ctx.dev.regression)
    batch = next(batches(sample, rows, ctx.pad_id, ctx.device))
    mine = model.forward(batch).float()
    theirs = torch.stack(forward_tasks(engine.encoder, batch.ids, batch.mask.bool(), batch.types,
                                       [loaded] * batch.ids.shape[0])).float()
    diff = float((mine - theirs).abs().max())
    if not np.isfinite(diff) or diff > PARITY_ATOL:
        raise ParityError(f"engine logits differ from the trainer's by {diff:.2e} (> {PARITY_ATOL})")
    return diff


def stored_params(artifact: TaskArtifact) -> int:
    """Numbers stored: float values of the kind and head (sparse indices not counted)."""
    return sum(t.numel() for t in artifact.tensors.values() if t.is_floating_point())
