"""BitFit: deltas on every Linear bias and LayerNorm bias of the encoder."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from torch import Tensor

from methods.config import BaseConfig
from methods.encoder import BatchContext, Effect, add_
from methods.registry import Kind, TaskPart, register_kind, row_table
from methods.spec import BackboneSpec


@dataclasses.dataclass(frozen=True)
class BitfitConfig(BaseConfig):
    pass


class BitfitEffect(Effect):
    def __init__(self, parts: Sequence[TaskPart], ctx: BatchContext, spec: BackboneSpec) -> None:
        B = ctx.input_ids.shape[0]
        self.tables = {  # module path -> (B, 1, dim)
            p[:-len(".bias")]: row_table(parts, "bitfit." + p, B, ctx).unsqueeze(1)
            for p in spec.bias_params()
        }
        self.linear_names = frozenset(spec.linear_names())
        self.norm_names = frozenset(spec.norm_names())

    def linear(self, name: str, x: Tensor, y: Tensor) -> Tensor:
        return add_(y, self.tables[name])

    def norm(self, name: str, normed: Tensor | None, y: Tensor) -> Tensor:
        return add_(y, self.tables[name])


class Bitfit(Kind):
    name = "bitfit"
    config_cls = BitfitConfig
    prefix = "bitfit."

    def shapes(self, spec: BackboneSpec, cfg: BitfitConfig) -> dict[str, tuple[int, ...]]:
        return {"bitfit." + p: spec.param_shapes[p] for p in spec.bias_params()}

    def effect(self, parts: Sequence[TaskPart], ctx: BatchContext) -> Effect:
        return BitfitEffect(parts, ctx, ctx.spec)


register_kind(Bitfit())
