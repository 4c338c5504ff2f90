"""BitFit: deltas on every Linear bias and LayerNorm bias of the encoder.

Table: ``bitfit.flat`` (N, D), every bias delta of a task end to end (D = all bias dims);
a batch gathers its BitFit rows once and each Linear/LayerNorm adds its slice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import Tensor

from polyhead.engine.config import BaseConfig
from polyhead.engine.encoder import BatchContext, Effect, Normed
from polyhead.engine.kinds import Kind, register_kind
from polyhead.engine.slots import Rows
from polyhead.engine.spec import BackboneSpec

FLAT = "bitfit.flat"


@dataclasses.dataclass(frozen=True)
class BitfitConfig(BaseConfig):
    pass


def offsets(spec: BackboneSpec) -> dict[str, tuple[int, int]]:
    """Module path -> (start, end) of its bias delta in the flat row."""
    out, pos = {}, 0
    for p in spec.bias_params():
        n = spec.param_shapes[p][0]
        out[p[:-len(".bias")]] = (pos, pos + n)
        pos += n
    return out


class BitfitEffect(Effect):
    def __init__(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> None:
        self.rows, sel = Rows.of(slots)
        self.flat = tables[FLAT][sel].to(ctx.dtype)  # (n, D)
        self.offsets = offsets(ctx.spec)
        self.linear_names = frozenset(ctx.spec.linear_names())
        self.norm_names = frozenset(ctx.spec.norm_names())

    def _add(self, name: str, y: Tensor) -> Tensor:
        a, b = self.offsets[name]  # the module's deltas, on its rows only
        return self.rows.add(y, self.flat[:, None, a:b])

    def linear(self, name: str, x: Tensor, y: Tensor) -> Tensor:
        return self._add(name, y)

    def norm(self, name: str, normed: Normed, y: Tensor) -> Tensor:
        return self._add(name, y)


class Bitfit(Kind):
    name = "bitfit"
    config_cls = BitfitConfig
    prefix = "bitfit."

    def shapes(self, spec: BackboneSpec, cfg: BitfitConfig) -> dict[str, tuple[int, ...]]:
        return {"bitfit." + p: spec.param_shapes[p] for p in spec.bias_params()}

    def rows(self, tensors: Mapping[str, Tensor], spec: BackboneSpec,
             cfg: BitfitConfig) -> dict[str, Tensor]:
        return {FLAT: torch.cat([tensors["bitfit." + p] for p in spec.bias_params()])}

    def effect(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> Effect:
        return BitfitEffect(tables, slots, ctx)


register_kind(Bitfit())
