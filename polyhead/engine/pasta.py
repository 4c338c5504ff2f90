"""PASTA (arXiv 2210.04382): vectors added to the special tokens' hidden states before
every layer. One vector per layer and special-token slot ([CLS], 1st [SEP], 2nd [SEP]).

Table: ``pasta.vectors`` (N, L, S, d). A batch gathers, for every special position of a
row with a slot, that slot's vectors for the position's special index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import Tensor

from polyhead.engine.config import BaseConfig
from polyhead.engine.encoder import BatchContext, Effect
from polyhead.engine.kinds import Kind, register_kind
from polyhead.engine.spec import BackboneSpec

KEY = "pasta.vectors"


@dataclasses.dataclass(frozen=True)
class PastaConfig(BaseConfig):
    pass


class PastaEffect(Effect):
    acts_before_layers = True

    def __init__(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> None:
        idx = ctx.special_index  # (B, T)
        b, t = torch.nonzero((idx >= 0) & (slots >= 0)[:, None], as_tuple=True)
        self.pos = (b, t)
        vals = tables[KEY][slots[b], :, idx[b, t]]  # (Npos, L, d)
        self.vals = vals.to(ctx.dtype).transpose(0, 1)  # (L, Npos, d)

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

    def effect(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> Effect:
        return PastaEffect(tables, slots, ctx)


register_kind(Pasta())
