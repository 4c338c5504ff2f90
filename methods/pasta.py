"""PASTA (arXiv 2210.04382): vectors added to the special tokens' hidden states before
every layer. One vector per layer and special-token slot ([CLS], 1st [SEP], 2nd [SEP])."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from methods.config import BaseConfig
from methods.encoder import BatchContext, Effect
from methods.registry import Kind, TaskPart, register_kind, row_table
from methods.spec import BackboneSpec

KEY = "pasta.vectors"


@dataclasses.dataclass(frozen=True)
class PastaConfig(BaseConfig):
    pass


class PastaEffect(Effect):
    acts_before_layers = True

    def __init__(self, parts: Sequence[TaskPart], ctx: BatchContext) -> None:
        B = ctx.input_ids.shape[0]
        self.table = row_table(parts, KEY, B, ctx)  # (B, L, S, d)
        S = self.table.shape[2]
        idx = ctx.special_index
        onehot = F.one_hot(idx.clamp(min=0), S) * idx.ge(0).unsqueeze(-1)
        self.onehot = onehot.to(ctx.dtype)  # (B, T, S)

    def before_layer(self, layer: int, h: Tensor) -> Tensor:
        return h + torch.einsum("bts,bsd->btd", self.onehot, self.table[:, layer])


class Pasta(Kind):
    name = "pasta"
    config_cls = PastaConfig
    prefix = "pasta."

    def shapes(self, spec: BackboneSpec, cfg: PastaConfig) -> dict[str, tuple[int, ...]]:
        return {KEY: (spec.num_layers, spec.num_special, spec.hidden)}

    def effect(self, parts: Sequence[TaskPart], ctx: BatchContext) -> Effect:
        return PastaEffect(parts, ctx)


register_kind(Pasta())
