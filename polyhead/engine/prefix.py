"""Deep prefix tuning (P-tuning v2): P key and P value vectors per layer, prepended to the
attention keys and values of the task's rows.

A per-layer gate g scales the prefix's share of the softmax (an additive bias log g on
the prefix logits): g = 1 is exactly P-tuning v2 and is how training starts; g = 0 is
an exact no-op, which is what a zero-initialised prefix artifact is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from polyhead.engine.config import BaseConfig, require
from polyhead.engine.encoder import BatchContext, Effect
from polyhead.engine.errors import ArtifactError
from polyhead.engine.kinds import Kind, register_kind
from polyhead.engine.slots import Rows
from polyhead.engine.spec import BackboneSpec

KV, GATE = "prefix.kv", "prefix.gate"
BIAS, LEN = "prefix.bias", "prefix.len"  # table fields: log-gate per key, prefix length


@dataclasses.dataclass(frozen=True)
class PrefixConfig(BaseConfig):
    num_prefix: int = 16

    def __post_init__(self) -> None:
        require(isinstance(self.num_prefix, int) and 1 <= self.num_prefix <= 256,
                "PrefixConfig", f"num_prefix must be an int in [1, 256], got {self.num_prefix!r}")


class PrefixEffect(Effect):
    """Rows with a slot attend to their slot's prefix keys/values, padded to the batch's
    longest prefix with keys whose bias is -inf (exactly no weight)."""

    has_prefix = True

    def __init__(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> None:
        self.rows, sel = Rows.of(slots)
        P = int(tables[LEN][sel].max()) if len(sel) else 0
        self.kv = tables[KV][:, :, :, :P][sel].to(ctx.dtype)  # (n, L, 2, P, d)
        self.bias = tables[BIAS][:, :, :P][sel].to(ctx.dtype)  # (n, L, P)

    def prefix(self, layer: int) -> tuple[Rows, Tensor, Tensor, Tensor]:
        return self.rows, self.kv[:, layer, 0], self.kv[:, layer, 1], self.bias[:, layer]


class Prefix(Kind):
    name = "prefix"
    config_cls = PrefixConfig
    prefix = "prefix."
    rows_last = True  # the rows without a prefix then attend as one slice
    fills: ClassVar[dict[str, float]] = {BIAS: float("-inf")}  # a padded prefix key gets no attention

    def shapes(self, spec: BackboneSpec, cfg: PrefixConfig) -> dict[str, tuple[int, ...]]:
        return {KV: (spec.num_layers, 2, cfg.num_prefix, spec.hidden), GATE: (spec.num_layers,)}

    def init(self, spec: BackboneSpec, cfg: PrefixConfig, *, zero: bool,
             generator: torch.Generator | None = None) -> dict[str, Tensor]:
        out = super().init(spec, cfg, zero=zero, generator=generator)
        out[GATE] = torch.zeros(spec.num_layers) if zero else torch.ones(spec.num_layers)
        return out

    def validate(self, tensors: Mapping[str, Tensor], spec: BackboneSpec, cfg: PrefixConfig) -> None:
        super().validate(tensors, spec, cfg)
        if bool((tensors[GATE] < 0).any()):
            raise ArtifactError("tensor_values", f"{GATE}: gates must be >= 0")

    def rows(self, tensors: Mapping[str, Tensor], spec: BackboneSpec,
             cfg: PrefixConfig) -> dict[str, Tensor]:
        """The gate as an additive attention bias log g, one per prefix key."""
        gate = tensors[GATE]
        return {KV: tensors[KV], BIAS: torch.log(gate)[:, None].expand(len(gate), cfg.num_prefix),
                LEN: torch.tensor(float(cfg.num_prefix), device=gate.device)}

    def effect(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> Effect:
        return PrefixEffect(tables, slots, ctx)


register_kind(Prefix())
