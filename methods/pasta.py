"""PASTA (arXiv 2210.04382): vectors added to the special tokens' hidden states before
every layer. One vector per layer and special-token slot ([CLS], 1st [SEP], 2nd [SEP])."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from methods.config import BaseConfig
from methods.encoder import BatchContext, Effect
from methods.registry import Kind, TaskPart, register_kind
from methods.spec import BackboneSpec

KEY = "pasta.vectors"


@dataclasses.dataclass(frozen=True)
class PastaConfig(BaseConfig):
    pass


class PastaEffect(Effect):
    acts_before_layers = True

    def __init__(self, parts: Sequence[TaskPart], ctx: BatchContext) -> None:
        pos_b, pos_t, vals = [], [], []
        for p in parts:
            idx = ctx.special_index[p.rows]  # (n, T)
            b, t = torch.nonzero(idx >= 0, as_tuple=True)  # the part's special positions
            pos_b.append(p.rows[b])
            pos_t.append(t)
            vals.append(p.tensors[KEY].to(ctx.dtype)[:, idx[b, t]])  # (L, npos, d)
        self.pos = (torch.cat(pos_b), torch.cat(pos_t))
        self.vals = torch.cat(vals, dim=1)  # (L, Npos, d)

    def before_layer(self, layer: int, h: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return h.index_put(self.pos, self.vals[layer], accumulate=True)
        return h.index_put_(self.pos, self.vals[layer], accumulate=True)


class Pasta(Kind):
    name = "pasta"
    config_cls = PastaConfig
    prefix = "pasta."

    def shapes(self, spec: BackboneSpec, cfg: PastaConfig) -> dict[str, tuple[int, ...]]:
        return {KEY: (spec.num_layers, spec.num_special, spec.hidden)}

    def effect(self, parts: Sequence[TaskPart], ctx: BatchContext) -> Effect:
        return PastaEffect(parts, ctx)


register_kind(Pasta())
