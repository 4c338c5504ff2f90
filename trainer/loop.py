"""Tokenised batches, the optimisation loop (AdamW, linear warm-up/decay) and prediction."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from trainer.data import Dataset
from trainer.models import Batch, Trainable


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
    T = max(len(enc.ids[i]) for i in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    types = torch.zeros((len(rows), T), dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for j, i in enumerate(rows):
        n = len(enc.ids[i])
        ids[j, :n] = torch.tensor(enc.ids[i])
        types[j, :n] = torch.tensor(enc.types[i])
        mask[j, :n] = 1
    dtype = torch.float32 if enc.regression else torch.long
    targets = torch.tensor([enc.targets[i] for i in rows], dtype=dtype)
    return Batch(ids.to(device), mask.to(device), types.to(device), targets.to(device))


def batches(enc: Encoded, batch_size: int, pad_id: int, device: torch.device, *,
            shuffle_seed: int | None = None) -> Iterator[Batch]:
    """Shuffled batches (seeded) for training; length-sorted ones for evaluation."""
    order = list(range(len(enc)))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    else:
        order.sort(key=lambda i: len(enc.ids[i]))
    for s in range(0, len(order), batch_size):
        yield collate(enc, order[s:s + batch_size], pad_id, device)


def loss_fn(logits: Tensor, targets: Tensor, regression: bool) -> Tensor:
    if regression:
        return F.mse_loss(logits.float().squeeze(-1), targets)
    return F.cross_entropy(logits.float(), targets)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on CUDA; fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclasses.dataclass
class FitSettings:
    epochs: float
    lr: float
    batch_size: int
    weight_decay: float
    warmup: float
    seed: int
    progress: bool = True
    desc: str = "train"
    max_grad_norm: float = 1.0


EpochCallback = Callable[[int, float], dict[str, float]]  # (epoch, mean loss) -> dev metrics


def total_steps(n: int, s: FitSettings) -> int:
    return max(1, math.ceil(s.epochs * math.ceil(n / s.batch_size)))


def fit(model: Trainable, train: Encoded, s: FitSettings, pad_id: int, device: torch.device,
        on_epoch: EpochCallback | None = None) -> list[float]:
    """Train ``model``; returns the loss of every step."""
    steps = total_steps(len(train), s)
    # fused: one kernel over all tensors (the per-tensor CPU path costs seconds a step
    # for the ~11M weights of the sparse methods)
    opt = torch.optim.AdamW(model.param_groups(s.weight_decay), lr=s.lr, fused=True)
    warm = int(s.warmup * steps)

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return max(0.0, (steps - step) / max(1, steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    losses: list[float] = []
    epoch = 0
    while len(losses) < steps:
        model.module.train()
        bar = tqdm(batches(train, s.batch_size, pad_id, device, shuffle_seed=s.seed * 1000 + epoch),
                   total=min(math.ceil(len(train) / s.batch_size), steps - len(losses)),
                   desc=f"{s.desc} epoch {epoch + 1}", disable=not s.progress, leave=False)
        epoch_losses = []
        for batch in bar:
            with autocast(device):
                logits = model.forward(batch)
            loss = loss_fn(logits, batch.targets, train.regression)
            loss.backward()
            model.after_backward()
            params = [p for g in opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            epoch_losses.append(loss.item())
            model.after_step(opt, len(losses))
            bar.set_postfix(loss=f"{np.mean(epoch_losses[-20:]):.4f}")
            if len(losses) >= steps:
                break
        bar.close()
        epoch += 1
        if on_epoch is not None:
            on_epoch(epoch, float(np.mean(epoch_losses)))
    return losses


@torch.no_grad()
def predict(model: Trainable, data: Encoded, batch_size: int, pad_id: int, device: torch.device,
            fp32: bool = False) -> np.ndarray:
    """(N, C) logits in the data's order."""
    model.module.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.ids[i]))
    out: list[Tensor] = []
    for s in range(0, len(order), batch_size):
        batch = collate(data, order[s:s + batch_size], pad_id, device)
        with contextlib.nullcontext() if fp32 else autocast(device):
            out.append(model.forward(batch).float().cpu())
    logits = torch.cat(out)
    result = torch.empty_like(logits)
    result[torch.tensor(order)] = logits
    return result.numpy()
