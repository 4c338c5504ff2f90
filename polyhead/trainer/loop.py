"""Tokenised batches, the optimisation loop (AdamW, linear warm-up/decay) and prediction."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from polyhead.engine.engine import pad_rows
from polyhead.trainer.data import Dataset
from polyhead.trainer.models import Batch, Trainable


@dataclasses.dataclass
class Encoded:
    """A dataset tokenised once: per-example ids and type ids, and the targets."""

    ids: list[list[int]]
    types: list[list[int]]
    targets: list[int] | list[float]
    regression: bool

    def __len__(self) -> int:
        return len(self.ids)


def encode(tokenizer: object, data: Dataset, max_length: int) -> Encoded:
    texts = [e.text for e in data.examples]
    pairs = [e.pair for e in data.examples]
    args: tuple[list[str], ...] = (texts,) if all(p is None for p in pairs) else (
        texts, [p or "" for p in pairs])
    out = tokenizer(*args, truncation=True, max_length=max_length,  # type: ignore[operator]
                    return_token_type_ids=True)
    return Encoded(out["input_ids"], out["token_type_ids"], data.targets(), data.regression)


def collate(enc: Encoded, rows: Sequence[int], pad_id: int, device: torch.device) -> Batch:
    ids, mask, types = pad_rows([enc.ids[i] for i in rows], [enc.types[i] for i in rows], pad_id,
                                torch.long)
    dtype = torch.float32 if enc.regression else torch.long
    targets = torch.tensor([enc.targets[i] for i in rows], dtype=dtype)
    return Batch(ids.to(device), mask.to(device), types.to(device), targets.to(device))


def batches(enc: Encoded, batch_size: int, pad_id: int, device: torch.device, *,
            shuffle_seed: int | None = None, pool: int = 1) -> Iterator[Batch]:
    """Training (``shuffle_seed`` set): seeded shuffle, then length grouping: the order is cut
    into pools of ``pool`` batches, each pool sorted by length and cut into batches, and the
    batches shuffled (less padding, still random). Evaluation: sorted by length."""
    for rows in batch_rows(enc, batch_size, shuffle_seed=shuffle_seed, pool=pool):
        yield collate(enc, rows, pad_id, device)


def batch_rows(enc: Encoded, batch_size: int, *, shuffle_seed: int | None = None,
               pool: int = 1) -> list[list[int]]:
    order = list(range(len(enc)))
    if shuffle_seed is None:
        order.sort(key=lambda i: len(enc.ids[i]))
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    rng = random.Random(shuffle_seed)
    rng.shuffle(order)
    if pool <= 1:
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    size = pool * batch_size
    out: list[list[int]] = []
    for s in range(0, len(order), size):
        chunk = sorted(order[s:s + size], key=lambda i: len(enc.ids[i]))
        out += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def loss_fn(logits: Tensor, targets: Tensor, regression: bool) -> Tensor:
    if regression:
        return F.mse_loss(logits.float().squeeze(-1), targets)
    return F.cross_entropy(logits.float(), targets)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[object]:
    """Autocast to ``dtype`` on ``device`` (None: fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@dataclasses.dataclass
class FitSettings:
    steps: int  # optimiser steps
    lr: float
    batch_size: int
    weight_decay: float
    warmup: float  # fraction of ``steps``
    seed: int
    pool: int = 1
    progress: bool = True
    desc: str = "train"
    max_grad_norm: float | None = 1.0  # None: no clipping (PASTA's code)
    amp: torch.dtype | None = None  # autocast dtype of the training forward passes (None: fp32)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's
    eps: float = 1e-8
    on_step: Callable[[int, int], None] | None = None  # (steps done, steps) after each step


@dataclasses.dataclass
class FitStats:
    losses: list[float]  # the loss of every step
    tokens: int  # non-padding training tokens seen
    padded: int  # tokens including padding
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


EpochCallback = Callable[[int, float], None]  # (epoch, mean loss)


def steps_for(n: int, epochs: float, batch_size: int) -> int:
    return max(1, math.ceil(epochs * math.ceil(n / batch_size)))


def linear_schedule(steps: int, warmup: float) -> Callable[[int], float]:
    """Linear warm-up over ``int(warmup x steps)`` steps, then linear decay to 0 (HF's
    get_linear_schedule_with_warmup)."""
    warm = int(warmup * steps)

    def factor(step: int) -> float:
        if step < warm:
            return step / max(1, warm)
        return max(0.0, (steps - step) / max(1, steps - warm))

    return factor


def fit(model: Trainable, train: Encoded, s: FitSettings, pad_id: int, device: torch.device,
        on_epoch: EpochCallback | None = None, checkpoint: EpochCheckpoint | None = None) -> FitStats:
    """Train ``model`` for ``s.steps`` steps (epochs of shuffled, length-grouped batches).
    With ``checkpoint``, each epoch's end is saved there, and a run that finds one resumes
    after that epoch (the same batches, schedule and dropout draws as an unbroken run)."""
    # fused: one kernel over all tensors (the per-tensor CPU path costs seconds a step)
    opt = torch.optim.AdamW(model.param_groups(s.weight_decay), lr=s.lr, betas=s.betas, eps=s.eps,
                            fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(s.steps, s.warmup))
    params = [p for g in opt.param_groups for p in g["params"]]
    stats = FitStats([], 0, 0, 0.0)
    epoch = 0
    if checkpoint is not None and (saved := checkpoint.load()) is not None:
        epoch, stats = checkpoint.resume(saved, model, opt, sched)
    while len(stats.losses) < s.steps:
        model.set_training(True)
        rows = batch_rows(train, s.batch_size, shuffle_seed=s.seed * 1000 + epoch, pool=s.pool)
        rows = rows[:s.steps - len(stats.losses)]
        bar = tqdm(rows, desc=f"{s.desc} epoch {epoch + 1}", disable=not s.progress, leave=False)
        epoch_losses: list[float] = []
        t0 = time.perf_counter()
        for r in bar:
            batch = collate(train, r, pad_id, device)
            loss = _step(model, batch, train.regression, opt, params, s.max_grad_norm, device, s.amp)
            sched.step()
            stats.losses.append(loss)
            epoch_losses.append(loss)
            stats.tokens += int(batch.mask.sum())
            stats.padded += batch.mask.numel()
            model.after_step(opt, len(stats.losses))
            if s.on_step is not None:
                s.on_step(len(stats.losses), s.steps)
            bar.set_postfix(loss=f"{np.mean(epoch_losses[-20:]):.4f}")
        bar.close()
        stats.seconds += time.perf_counter() - t0
        epoch += 1
        model.set_training(False)
        if on_epoch is not None:
            on_epoch(epoch, float(np.mean(epoch_losses)))
        if checkpoint is not None:
            checkpoint.save(epoch, stats, model, opt, sched)
    return stats


@dataclasses.dataclass
class EpochCheckpoint:
    """One file holding a run's state at its last finished epoch: the model, AdamW's moments,
    the schedule, the step statistics, torch's RNG (dropout) and the caller's own state
    (``extra``: e.g. the dev history), tagged with ``tag`` (a run's identity: a file of
    another run is not resumed from)."""

    path: Path
    tag: str
    extra: Callable[[], dict[str, Any]] = dict  # the caller's state to save each epoch
    on_resume: Callable[[dict[str, Any]], None] = lambda _: None  # gets that state back

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        saved = torch.load(self.path, weights_only=False)
        return saved if saved.get("tag") == self.tag else None

    def save(self, epoch: int, stats: FitStats, model: Trainable, opt: torch.optim.Optimizer,
             sched: torch.optim.lr_scheduler.LRScheduler) -> None:
        state = {"tag": self.tag, "epoch": epoch, "stats": dataclasses.asdict(stats),
                 "model": model.state(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                 "rng": torch.get_rng_state(), "extra": self.extra()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # whole or not at all, whenever the run is stopped

    def resume(self, saved: dict[str, Any], model: Trainable, opt: torch.optim.Optimizer,
               sched: torch.optim.lr_scheduler.LRScheduler) -> tuple[int, FitStats]:
        model.restore(saved["model"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        torch.set_rng_state(saved["rng"])
        self.on_resume(saved["extra"])
        return int(saved["epoch"]), FitStats(**saved["stats"])

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _step(model: Trainable, batch: Batch, regression: bool, opt: torch.optim.Optimizer,
          params: list[torch.nn.Parameter], max_grad_norm: float | None, device: torch.device,
          amp: torch.dtype | None) -> float:
    with autocast(device, amp):
        logits = model.forward(batch)
    loss = loss_fn(logits, batch.targets, regression)
    loss.backward()
    model.before_clip()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    model.after_clip()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.item())


@torch.no_grad()
def predict(model: Trainable, data: Encoded, batch_size: int, pad_id: int, device: torch.device,
            fp32: bool = False) -> np.ndarray:
    """(N, C) logits in the data's order: bf16 autocast on CUDA unless ``fp32``; fp32 on the
    CPU, as the engine serves there."""
    model.set_training(False)
    order = sorted(range(len(data)), key=lambda i: len(data.ids[i]))
    out: list[Tensor] = []
    for s in range(0, len(order), batch_size):
        batch = collate(data, order[s:s + batch_size], pad_id, device)
        with autocast(device, None if fp32 or device.type != "cuda" else torch.bfloat16):
            out.append(model.forward(batch).float().cpu())
    logits = torch.cat(out)
    result = torch.empty_like(logits)
    result[torch.tensor(order)] = logits
    return result.numpy()
