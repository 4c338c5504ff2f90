"""Gradient-mask policies of the sparse methods, and the sparsification of a diff.

Scope of every selection: GLOBAL over the tunable weights (all encoder-layer weights and
biases, and the embedding LayerNorm), one ranking across all matrices, as Child-Tuning's
reference code takes one percentile over all parameters. A per-matrix quota would force
the same density on every matrix and LayerNorm; global lets the Fisher information
decide where the budget goes (it concentrates in a few matrices of the upper layers).

- child-d (Child-Tuning_D): one pass over the training set (``--fisher-examples`` caps it)
  accumulates squared batch gradients (empirical Fisher); the top ``density`` of the
  tunable weights form a fixed mask; gradients outside it are zeroed.
- child-f (Child-Tuning_F): each step a fresh Bernoulli(p) mask on the gradients, kept
  ones rescaled by 1/p. Adam's moments then spread updates over every weight, so the
  final diff is dense; it is sparsified by magnitude: the ``density`` largest |diff|
  (global) are kept, the rest reset to the original weights. The trainer reports the dev
  metric before and after this cut (the accuracy cost of sparsifying).
- dps (DPS, Dynamic Parameter Selection): training is split into ``stages``; each stage
  updates a subnetwork of ``budget // 2`` weights (the whole budget for one stage) chosen
  by importance = accumulated squared gradients (a Fisher pass for the first stage, the
  previous stage's full gradients after that). Weights already updated (the union U) may
  be re-selected freely; new ones are admitted in importance order only while
  |U| <= budget, so the stored diff never exceeds ``density``. At each re-selection Adam's
  first moment is zeroed outside the new subnetwork, so weights left out stay exactly
  where they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from trainer.models import MaskPolicy


def _flat(tensors: dict[str, Tensor], names: list[str]) -> Tensor:
    return torch.cat([tensors[n].reshape(-1) for n in names])


def _unflat(flat: Tensor, like: dict[str, Tensor], names: list[str]) -> dict[str, Tensor]:
    out, i = {}, 0
    for n in names:
        k = like[n].numel()
        out[n] = flat[i:i + k].reshape(like[n].shape)
        i += k
    return out


def budget_of(params: dict[str, Tensor], density: float) -> int:
    return int(density * sum(p.numel() for p in params.values()))


def select(importance: Tensor, union: Tensor, size: int, budget: int) -> Tensor:
    """Bool (N,): the ``size`` most important weights, where weights outside ``union`` are
    admitted (in importance order) only while |union| + admitted <= budget."""
    order = torch.argsort(importance, descending=True)
    in_union = union[order]
    admitted = torch.cumsum((~in_union).long(), 0) <= budget - int(union.sum())
    chosen = order[in_union | admitted][:size]
    out = torch.zeros_like(union)
    out[chosen] = True
    return out


def fisher(params: dict[str, nn.Parameter], batches: Iterable[object],
           loss_of: Callable[[object], Tensor]) -> dict[str, Tensor]:
    """Sum over batches of squared gradients of the batch loss (empirical Fisher)."""
    acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    for batch in batches:
        for p in params.values():
            p.grad = None
        loss_of(batch).backward()
        for n, p in params.items():
            if p.grad is not None:
                acc[n] += p.grad.float() ** 2
    for p in params.values():
        p.grad = None
    return acc


class FixedMask(MaskPolicy):
    """child-d: the top-``density`` Fisher weights, fixed for the whole run."""

    def __init__(self, fisher_info: dict[str, Tensor], density: float) -> None:
        names = sorted(fisher_info)
        imp = _flat(fisher_info, names)
        budget = budget_of(fisher_info, density)
        chosen = select(imp, torch.zeros_like(imp, dtype=torch.bool), budget, budget)
        self._masks = {n: m.to(fisher_info[n].dtype) for n, m in
                       _unflat(chosen, fisher_info, names).items()}

    def masks(self) -> dict[str, Tensor]:
        return self._masks

    def union(self) -> dict[str, Tensor]:
        return self._masks


class BernoulliMask(MaskPolicy):
    """child-f: a fresh Bernoulli(p) gradient mask each step, kept gradients scaled by 1/p."""

    def __init__(self, p: float, seed: int, device: torch.device) -> None:
        self.p = p
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def mask_grads(self, params: dict[str, nn.Parameter]) -> None:
        for p in params.values():
            if p.grad is not None:
                keep = torch.rand(p.grad.shape, generator=self.gen, device=p.grad.device) < self.p
                p.grad.mul_(keep.to(p.grad.dtype) / self.p)


class StagedMask(MaskPolicy):
    """dps: subnetworks re-selected each stage from accumulated gradients; union <= budget."""

    def __init__(self, fisher_info: dict[str, Tensor], density: float, stages: int,
                 total_steps: int) -> None:
        self.names = sorted(fisher_info)
        self.like = fisher_info
        self.budget = budget_of(fisher_info, density)
        self.size = self.budget if stages == 1 else self.budget // 2
        self.stage_len = max(1, total_steps // stages)
        self.stages = stages
        flat = _flat(fisher_info, self.names)
        self._union = torch.zeros_like(flat, dtype=torch.bool)
        self.history: list[dict[str, int]] = []
        self._current = self._reselect(flat)
        self.importance = {n: torch.zeros_like(t) for n, t in fisher_info.items()}

    def _reselect(self, importance: Tensor) -> dict[str, Tensor]:
        chosen = select(importance, self._union, self.size, self.budget)
        new = int((chosen & ~self._union).sum())
        self._union |= chosen
        self.history.append({"selected": int(chosen.sum()), "new": new, "union": int(self._union.sum())})
        dtype = next(iter(self.like.values())).dtype
        return {n: m.to(dtype) for n, m in _unflat(chosen, self.like, self.names).items()}

    def masks(self) -> dict[str, Tensor]:
        return self._current

    def union(self) -> dict[str, Tensor]:
        dtype = next(iter(self.like.values())).dtype
        return {n: m.to(dtype) for n, m in _unflat(self._union, self.like, self.names).items()}

    def mask_grads(self, params: dict[str, nn.Parameter]) -> None:
        for n, p in params.items():  # importance from the full gradients, before masking
            if p.grad is not None:
                self.importance[n] += p.grad.float() ** 2
        super().mask_grads(params)

    def after_step(self, params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer,
                   step: int) -> None:
        if step % self.stage_len or len(self.history) >= self.stages:
            return
        self._current = self._reselect(_flat(self.importance, self.names))
        for t in self.importance.values():
            t.zero_()
        for n, p in params.items():  # frozen weights must not keep moving on momentum
            state = optimizer.state.get(p)
            if state and "exp_avg" in state:
                state["exp_avg"].mul_(self._current[n].to(state["exp_avg"].dtype))


def sparsify(diffs: dict[str, Tensor], density: float) -> dict[str, Tensor]:
    """Keep the ``density`` largest |diff| entries (global ranking); zero the rest."""
    names = sorted(diffs)
    flat = _flat(diffs, names)
    k = budget_of(diffs, density)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        keep[torch.topk(flat.abs(), k).indices] = True
    return _unflat(flat * keep, diffs, names)
