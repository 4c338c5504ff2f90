"""One training run: (EH-FT stage 1) -> build -> fit -> select -> (cut) -> export -> parity."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyhead.engine import Backbone, Engine, HeadConfig, TaskArtifact
from polyhead.engine.engine import forward_tasks
from polyhead.trainer.config import TrainConfig
from polyhead.trainer.context import Context
from polyhead.trainer.data import Dataset
from polyhead.trainer.loop import (
    Encoded,
    EpochCheckpoint,
    FitSettings,
    FitStats,
    batches,
    encode,
    fit,
    predict,
    steps_for,
)
from polyhead.trainer.metrics import compute_metrics
from polyhead.trainer.models import Trainable
from polyhead.trainer.record import StageInfo, TrainingRecord
from polyhead.trainer.table import METHODS

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-4  # engine vs trainer logits, fp32; measured values are ~1e-6


class ParityError(RuntimeError):
    """The stored artifact does not reproduce the trained model's logits."""


@dataclasses.dataclass(frozen=True)
class RegressionScale:
    """Training targets were standardised: the model predicts (y - mean) / std."""

    mean: float
    std: float

    @classmethod
    def of(cls, targets: list[float]) -> RegressionScale:
        y = np.asarray(targets, dtype=np.float64)
        std = float(y.std())
        return cls(float(y.mean()), std if std > 0 else 1.0)

    def apply(self, targets: list[float]) -> list[float]:
        return [(t - self.mean) / self.std for t in targets]

    def undo(self, outputs: np.ndarray) -> np.ndarray:
        return outputs * self.std + self.mean


@dataclasses.dataclass
class TrainResult:
    model: Trainable
    metrics: dict[str, float]  # dev metrics of the selected (and, child-f servable, cut) model
    training: TrainingRecord  # the manifest's training section (``to_json``)
    losses: list[float]
    scale: RegressionScale | None  # regression: undo this on the model's outputs
    artifact: TaskArtifact | None = None  # None when trained with export=False
    parity: float | None = None  # max |engine logits - trainer logits| on dev rows
    context: Context | None = None


@dataclasses.dataclass(frozen=True)
class Listener:
    """Hooks of a run for whoever drives it (a training job's events, a cancel): a hook
    that raises stops the run."""

    on_step: Callable[[int, int], None] | None = None  # (steps done, steps of the method)
    on_epoch: Callable[[dict[str, Any]], None] | None = None  # the dev history's entry


HeadCache = dict[tuple[Any, ...], tuple[dict[str, torch.Tensor], StageInfo]]


def train(cfg: TrainConfig, backbone: Backbone, train_data: Dataset, dev_data: Dataset,
          metric: str, *, progress: bool = True, head_cache: HeadCache | None = None,
          log_fn: Callable[[str], None] = print, export: bool = True,
          checkpoint: Path | None = None, listener: Listener | None = None) -> TrainResult:
    """Train ``cfg.method`` on ``train_data``; dev metrics after each epoch via ``log_fn``.
    ``checkpoint``: a file that holds the run's state after each epoch; a run that finds
    its own there resumes from it (removed when the run ends). ``listener``: step and epoch
    hooks."""
    if checkpoint is not None and (METHODS[cfg.method].dense or cfg.head_init is not None):
        raise ValueError("epoch checkpoints cover the frozen-backbone methods (their state is the "
                         "model and the optimiser); the dense methods' mask policies are not saved")
    torch.manual_seed(cfg.seed)
    data = train_data.subsample(cfg.max_train, cfg.seed)
    tok = backbone.tokenizer
    enc = encode(tok, data, cfg.max_length)
    scale = RegressionScale.of(enc.targets) if data.regression else None  # type: ignore[arg-type]
    if scale is not None:
        enc = dataclasses.replace(enc, targets=scale.apply(enc.targets))  # type: ignore[arg-type]
    total = steps_for(len(enc), cfg.num_epochs, cfg.batch)
    ctx = Context(backbone, enc, encode(tok, dev_data, cfg.max_length),
                  HeadConfig(num_outputs=data.num_outputs, type=cfg.head_type), metric, progress, total)
    training = TrainingRecord(
        method=cfg.method, recipe=cfg.recipe, method_label=METHODS[cfg.method].help,
        hyperparameters=cfg.to_dict(), train_examples=len(data.examples),
        dev_examples=len(dev_data.examples), total_steps=total,
        regression_scale=dataclasses.asdict(scale) if scale is not None else None)
    head_tensors, steps = None, total
    if cfg.head_init is not None and not METHODS[cfg.method].own_head_init:
        stage1 = max(1, round(cfg.head_init_frac * total))
        steps = total - stage1
        head_tensors, training.head_init_stage = _head_stage(cfg, ctx, stage1, scale, head_cache, log_fn)
        ctx = dataclasses.replace(ctx, total_steps=steps)
    model = _build(cfg, ctx, head_tensors)
    if model.stage_info is not None:  # a method that ran its own stage 1 (eh-ft)
        training.head_init_stage = info = model.stage_info
        log_fn(f"[EH-FT stage 1] {info.steps} steps of {info.method} with the head at lr "
               f"{info.lr:g}: dev " + _fmt(info.dev, ctx.metric))
    training.dropout_in_training = bool(getattr(model, "dropout", cfg.dropout))
    training.precision = "bf16 autocast" if cfg.autocast_dtype(ctx.device) is not None else "fp32"
    stats, history = _fit_and_select(cfg, model, ctx, steps, scale, log_fn, checkpoint,
                                     listener or Listener())
    training.steps, training.dev_history = len(stats.losses), history
    training.train_seconds, training.train_tokens = round(stats.seconds, 2), stats.tokens
    training.tokens_per_s = round(stats.tokens_per_s, 1)
    training.padding_share = round(1 - stats.tokens / max(1, stats.padded), 4)
    metrics, training.sections = METHODS[cfg.method].hooks.after_fit(
        model, cfg, ctx, evaluate(model, ctx, scale), scale, log_fn)
    training.trainable_params = model.trainable_count()
    result = TrainResult(model, metrics, training, stats.losses, scale, context=ctx)
    if export:
        finish(result, ctx)
    return result


def result_context(result: TrainResult) -> Context:
    assert result.context is not None
    return result.context


def finish(result: TrainResult, ctx: Context) -> None:
    """Export the artifact and check that the engine reproduces the trained logits."""
    artifact = result.model.export()
    if result.scale is not None:
        artifact = fold_scale(artifact, result.scale)
    artifact.validate(ctx.backbone.spec)
    result.parity = check_parity(result.model, artifact, ctx, result.scale)
    result.artifact = artifact
    result.training.stored_params, result.training.parity_max_abs = stored_params(artifact), result.parity


def _fit_and_select(cfg: TrainConfig, model: Trainable, ctx: Context, steps: int,
                    scale: RegressionScale | None, log_fn: Callable[[str], None],
                    checkpoint: Path | None = None,
                    listener: Listener = Listener()) -> tuple[FitStats, list[dict[str, float]]]:
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {}

    def resumed(extra: dict[str, Any]) -> None:
        history[:], best_ = extra["history"], extra["best"]
        best.clear()
        best.update(best_)
        log_fn(f"[{cfg.method}] resumed after epoch {len(history)} from {checkpoint}")

    ckpt = None if checkpoint is None else EpochCheckpoint(
        checkpoint, _run_tag(cfg, ctx), lambda: {"history": list(history), "best": dict(best)}, resumed)

    def on_epoch(epoch: int, loss: float) -> None:
        m = evaluate(model, ctx, scale)
        history.append({"epoch": epoch, "train_loss": round(loss, 5), **m})
        log_fn(f"[{cfg.method}] epoch {epoch}: train loss {loss:.4f}, dev " + _fmt(m, ctx.metric))
        if listener.on_epoch is not None:
            listener.on_epoch(history[-1])
        if cfg.select == "best" and (not best or m[ctx.metric] > best["value"]):
            best.update(value=m[ctx.metric], epoch=epoch, state=model.state())

    settings = dataclasses.replace(_settings(cfg, ctx, steps, cfg.learning_rate, cfg.method),
                                   on_step=listener.on_step)
    stats = fit(model, ctx.train, settings, ctx.pad_id, ctx.device, on_epoch, ckpt)
    if ckpt is not None:
        ckpt.remove()
    if cfg.select == "best" and best and best["epoch"] != history[-1]["epoch"]:
        model.restore(best["state"])
        log_fn(f"[{cfg.method}] --select best: epoch {best['epoch']} ({ctx.metric} {best['value']:.4f})")
    if best:
        history.append({"selected_epoch": best["epoch"]})
    return stats, history


def _run_tag(cfg: TrainConfig, ctx: Context) -> str:
    """A run's identity for its checkpoint: its settings and its data."""
    data = json.dumps([cfg.to_dict(), ctx.train.ids[:20], ctx.train.targets[:20], len(ctx.train)],
                      sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()


def _fmt(m: dict[str, float], metric: str) -> str:
    return ", ".join(f"{k} {v:.4f}" + ("*" if k == metric else "") for k, v in m.items())


def _settings(cfg: TrainConfig, ctx: Context, steps: int, lr: float, desc: str) -> FitSettings:
    d = cfg.defaults
    return FitSettings(steps=steps, lr=lr, batch_size=cfg.batch, weight_decay=cfg.decay,
                       warmup=cfg.warmup_frac, seed=cfg.seed, pool=cfg.pool, progress=ctx.progress,
                       desc=desc, amp=cfg.autocast_dtype(ctx.device), max_grad_norm=d.clip,
                       betas=d.betas, eps=d.eps)


def evaluate(model: Trainable, ctx: Context, scale: RegressionScale | None = None) -> dict[str, float]:
    logits = predict(model, ctx.dev, 64, ctx.pad_id, ctx.device)
    if scale is not None:
        logits = scale.undo(logits)
    return compute_metrics(logits, ctx.dev.targets, ctx.dev.regression)


def _build(cfg: TrainConfig, ctx: Context, head_tensors: dict[str, torch.Tensor] | None) -> Trainable:
    ctx = dataclasses.replace(ctx, head_tensors=head_tensors)
    model = METHODS[cfg.method].build(cfg, ctx)
    if head_tensors is not None:
        model.load_head(head_tensors)
    return model


def _head_stage(cfg: TrainConfig, ctx: Context, steps: int, scale: RegressionScale | None,
                cache: HeadCache | None,
                log_fn: Callable[[str], None]) -> tuple[dict[str, torch.Tensor], StageInfo]:
    """EH-FT stage 1: the PET method with a fresh head for ``steps`` steps at
    --head-init-lr; returns the head it learnt (the PET parameters are dropped)."""
    assert cfg.head_init is not None
    pet = cfg.head_init.split(":", 1)[1]
    # EH-FT's stage 1: its own linear schedule with the run's warm-up share (10 % in the
    # paper's scripts), the run's weight decay and dropout
    pet_cfg = dataclasses.replace(cfg, method=pet, lr=cfg.head_init_lr, head_init=None,
                                  warmup=cfg.warmup_frac, options=cfg.head_init_options,
                                  head_init_options=None)
    key = (pet_cfg.method, pet_cfg.lr, pet_cfg.seed, steps, pet_cfg.warmup_frac, pet_cfg.dropout,
           pet_cfg.precision, pet_cfg.options,
           len(ctx.train), ctx.head, id(ctx.backbone), tuple(ctx.train.targets[:50]))
    if cache is not None and key in cache:
        return cache[key]
    hooks = METHODS[pet].hooks
    log_fn(f"[EH-FT stage 1] {steps} steps of {hooks.head_stage_label} with the head at lr {pet_cfg.lr:g}")
    model = hooks.head_stage(pet_cfg, ctx)
    t0 = time.perf_counter()
    fit(model, ctx.train, _settings(pet_cfg, ctx, steps, pet_cfg.learning_rate, f"EH-FT {pet}"),
        ctx.pad_id, ctx.device)
    m = evaluate(model, ctx, scale)
    log_fn("[EH-FT stage 1] dev " + _fmt(m, ctx.metric))
    result = (model.head_tensors(), StageInfo(method=pet, steps=steps, lr=cfg.head_init_lr, dev=m,
                                              seconds=round(time.perf_counter() - t0, 1)))
    if cache is not None:
        cache[key] = result
    return result


def fold_scale(artifact: TaskArtifact, scale: RegressionScale) -> TaskArtifact:
    """Undo the target standardisation inside the head's last layer: y = std z + mean, so
    the served value is on the task's own scale (W' = std W, b' = std b + mean)."""
    last = "head.out." if "head.out.weight" in artifact.tensors else "head."
    tensors = dict(artifact.tensors)
    tensors[last + "weight"] = tensors[last + "weight"] * scale.std
    tensors[last + "bias"] = tensors[last + "bias"] * scale.std + scale.mean
    return dataclasses.replace(artifact, tensors=tensors)


@torch.no_grad()
def check_parity(model: Trainable, artifact: TaskArtifact, ctx: Context,
                 scale: RegressionScale | None = None, rows: int = 16) -> float:
    """Max |engine outputs from the artifact - the trainer's own (scale undone)| (fp32, eval)."""
    engine = Engine(ctx.backbone)
    loaded = engine.load(artifact)
    model.set_training(False)
    sample = Encoded(ctx.dev.ids[:rows], ctx.dev.types[:rows], ctx.dev.targets[:rows], ctx.dev.regression)
    batch = next(batches(sample, rows, ctx.pad_id, ctx.device))
    mine = model.forward(batch).float()
    if scale is not None:
        mine = mine * scale.std + scale.mean
    theirs = torch.stack(forward_tasks(engine.encoder, batch.ids, batch.mask.bool(), batch.types,
                                       [loaded] * batch.ids.shape[0])).float()
    diff = float((mine - theirs).abs().max())
    if not np.isfinite(diff) or diff > PARITY_ATOL:
        raise ParityError(f"engine logits differ from the trainer's by {diff:.2e} (> {PARITY_ATOL})")
    return diff


def stored_params(artifact: TaskArtifact) -> int:
    """Numbers stored: float values of the kind and head (sparse indices not counted)."""
    return sum(t.numel() for t in artifact.tensors.values() if t.is_floating_point())
