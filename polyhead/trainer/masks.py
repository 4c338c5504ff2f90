"""Gradient-mask policies of Child-Tuning_D/F and DPS, and the sparsification of a diff.

Each policy follows the method's official code (``../shared/PAPERS.md``) in the paper
recipe; the servable recipe keeps the same rule but confines it to the tunable weights
(encoder layers and the embedding LayerNorm) and a density budget, so the stored diff is
small and exact.

- ``ChildDMask`` (Child-Tuning_D, ``ChildTuningD.calculate_fisher``): one pass over every
  mini-batch of the training set; each tensor's gradient is clipped to the max norm on its
  own and F += g^2 / N; one GLOBAL threshold keeps the top fraction (p_D, or --density);
  the mask is fixed and multiplies the gradients after global clipping (in the
  optimiser), without rescaling.
- ``BernoulliMask`` (Child-Tuning_F): each step every gradient entry is kept with
  probability p_F and kept ones are scaled by 1/p_F (after global clipping).
- ``DpsMask`` (DPS Dense, ``DPSDense/grads_ops.py``): cycles of two stages of
  ``us = int(total_steps x update_ratio)`` steps. Stage I: full gradients, squared
  gradients accumulate per weight (reset when the stage starts). Stage II: each selected
  matrix updates only its own top ceil((1 - reserve_p) |W|) entries by that accumulation,
  chosen at the stage's first step (the mask acts on the gradient in backward, i.e.
  before clipping). Servable: every tunable tensor gets a quota of --density of its
  entries; Stage II updates the top half-quota by the accumulation, new weights admitted
  only while the tensor's union of selected weights fits the quota; Stage I updates only
  that union. The stored diff never exceeds the budget.

Structure (servable recipe, ``--mask-structure``): "entries" selects single weights as
above; "columns" selects whole input columns of each matrix instead (a column scored by
the mean of its entries' importance, and costing its height in the budget; vectors stay
entries), which the engine runs as one small dense product per Linear.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from polyhead.trainer.models import MaskPolicy, mask_grads


def _flat(tensors: dict[str, Tensor], names: list[str]) -> Tensor:
    return torch.cat([tensors[n].reshape(-1) for n in names])


def _unflat(flat: Tensor, like: dict[str, Tensor], names: list[str]) -> dict[str, Tensor]:
    out, i = {}, 0
    for n in names:
        k = like[n].numel()
        out[n] = flat[i:i + k].reshape(like[n].shape)
        i += k
    return out


def _by_columns(shape: torch.Size | tuple[int, ...], structure: str) -> bool:
    return structure == "columns" and len(shape) == 2


def unit_scores(t: Tensor, structure: str) -> Tensor:
    """Per selectable unit of a tensor: its entries, or (columns) each input column of a
    matrix scored by the mean over it."""
    return t.float().mean(0) if _by_columns(t.shape, structure) else t.reshape(-1)


def unit_cost(shape: torch.Size | tuple[int, ...], structure: str) -> int:
    """Weights one unit changes: 1, or a matrix's height for a column."""
    return int(shape[0]) if _by_columns(shape, structure) else 1


def unit_mask(chosen: Tensor, shape: torch.Size | tuple[int, ...], structure: str) -> Tensor:
    """A unit selection (bool per unit) as the tensor's bool mask."""
    if _by_columns(shape, structure):
        return chosen[None, :].expand(tuple(shape)).clone()
    return chosen.reshape(shape)


def top_within(scores: dict[str, Tensor], budget: int, structure: str) -> dict[str, Tensor]:
    """Bool masks: units in descending score, over every tensor, while their cost fits the
    budget (with single entries: exactly the top ``budget`` weights)."""
    names = sorted(scores)
    shapes = {n: scores[n].shape for n in names}
    units = [unit_scores(scores[n], structure) for n in names]
    cost = torch.cat([torch.full((len(u),), unit_cost(shapes[n], structure), dtype=torch.long)
                      for n, u in zip(names, units, strict=True)])
    order = torch.argsort(torch.cat(units), descending=True)
    keep = torch.zeros(len(cost), dtype=torch.bool)
    keep[order[torch.cumsum(cost[order], 0) <= budget]] = True
    out, i = {}, 0
    for n, u in zip(names, units, strict=True):
        out[n] = unit_mask(keep[i:i + len(u)], shapes[n], structure)
        i += len(u)
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


def top_fraction(values: Tensor, keep: float) -> Tensor:
    """Bool mask of ``values >= t``, t the ceil(keep N)-th largest (ties may add a few)."""
    k = max(1, math.ceil(keep * values.numel()))
    threshold = torch.topk(values, k, sorted=False).values.min()
    return values >= threshold


def fisher(params: dict[str, nn.Parameter], batches: Iterable[object],
           loss_of: Callable[[object], Tensor], max_grad_norm: float) -> dict[str, Tensor]:
    """Child-Tuning_D's Fisher: mean over mini-batches of each tensor's squared gradient,
    every tensor's gradient clipped to ``max_grad_norm`` on its own first."""
    acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    n = 0
    for batch in batches:
        for p in params.values():
            p.grad = None
        loss_of(batch).backward()
        for name, p in params.items():
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_(p, max_grad_norm)
                acc[name] += p.grad.float() ** 2
        n += 1
    for p in params.values():
        p.grad = None
    return {k: v / max(1, n) for k, v in acc.items()}


class ChildDMask(MaskPolicy):
    """child-d: the global top ``keep`` of the Fisher, fixed for the whole run."""

    def __init__(self, fisher_info: dict[str, Tensor], keep: float, limit_union: bool,
                 structure: str = "entries") -> None:
        names = sorted(fisher_info)
        if limit_union:  # servable: exactly the budget (ties broken by order)
            masks = top_within(fisher_info, budget_of(fisher_info, keep), structure)
        else:
            masks = _unflat(top_fraction(_flat(fisher_info, names), keep), fisher_info, names)
        self.limit_union = limit_union
        self._masks = {n: m.to(fisher_info[n].dtype) for n, m in masks.items()}

    @property
    def masks(self) -> dict[str, Tensor]:
        return self._masks

    def union(self) -> dict[str, Tensor] | None:
        return self._masks if self.limit_union else None

    def after_clip(self, params: dict[str, nn.Parameter]) -> None:
        mask_grads(params, self._masks)


class BernoulliMask(MaskPolicy):
    """child-f: a fresh Bernoulli(p) gradient mask each step on ``names``, kept ones x 1/p."""

    def __init__(self, p: float, names: list[str], seed: int, device: torch.device) -> None:
        self.p = p
        self.names = names
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def after_clip(self, params: dict[str, nn.Parameter]) -> None:
        for n in self.names:
            g = params[n].grad
            if g is not None:
                keep = torch.rand(g.shape, generator=self.gen, device=g.device) < self.p
                g.mul_(keep.to(g.dtype) / self.p)


class DpsMask(MaskPolicy):
    """dps: alternating stages of ``stage_len`` steps (see the module docstring)."""

    def __init__(self, params: dict[str, nn.Parameter], names: list[str], stage_len: int, *,
                 reserve_p: float = 0.3, density: float | None = None,
                 structure: str = "entries") -> None:
        self.names = names
        self.structure = structure
        self.stage_len = max(1, stage_len)
        self.reserve_p = reserve_p
        self.density = density  # None: paper (no union limit); else a per-tensor quota
        self.acc = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in names}
        self._current: dict[str, Tensor] = {}
        self._union: dict[str, Tensor] | None = (
            None if density is None else {n: torch.zeros_like(params[n], dtype=torch.bool) for n in names})
        self.t = 0
        self.history: list[dict[str, int]] = []

    def phase(self, t: int) -> int:
        return math.ceil(t / self.stage_len)

    def union(self) -> dict[str, Tensor] | None:
        if self._union is None:
            return None
        return {n: m.float() for n, m in self._union.items()}

    def before_clip(self, params: dict[str, nn.Parameter]) -> None:
        self.t += 1
        t, stage_start = self.t, (self.t - 1) % self.stage_len == 0
        if self.phase(t) % 2 == 1:  # Stage I: accumulate squared gradients
            for n in self.names:
                g = params[n].grad
                if g is None:
                    continue
                if stage_start:
                    self.acc[n].zero_()
                self.acc[n] += g.float() ** 2
            if self._union is not None:
                mask_grads(params, {n: m.to(params[n].dtype) for n, m in self._union.items()})
            return
        if stage_start:
            self._current = {n: self._select(n).to(params[n].dtype) for n in self.names}
            self.history.append({"step": t, "selected": int(sum(m.sum() for m in self._current.values())),
                                 "union": -1 if self._union is None
                                 else int(sum(m.sum() for m in self._union.values()))})
        mask_grads(params, self._current)

    def _select(self, n: str) -> Tensor:
        imp = self.acc[n].reshape(-1)
        if self._union is None:  # paper: this matrix's top (1 - reserve_p) of its entries
            return top_fraction(imp, 1 - self.reserve_p).reshape(self.acc[n].shape)
        assert self.density is not None
        shape, st = self.acc[n].shape, self.structure
        cost = unit_cost(shape, st)  # a column costs its height: the quota counts weights
        quota = int(self.density * imp.numel()) // cost
        union = self._union[n]
        union_units = union.any(0) if _by_columns(shape, st) else union.reshape(-1)
        chosen = unit_mask(select(unit_scores(self.acc[n], st), union_units, max(1, quota // 2),
                                  quota), shape, st)
        union |= chosen
        return chosen


def sparsify(diffs: dict[str, Tensor], density: float,
             structure: str = "entries") -> dict[str, Tensor]:
    """Keep the ``density`` largest |diff| entries (global ranking), or under "columns"
    the columns of largest mean |diff| within that budget; zero the rest."""
    keep = top_within({n: d.abs() for n, d in diffs.items()}, budget_of(diffs, density), structure)
    return {n: d * keep[n] for n, d in diffs.items()}
