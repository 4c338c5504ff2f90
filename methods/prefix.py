"""Deep prefix tuning (P-tuning v2): P key and P value vectors per layer, prepended to the
attention keys and values of the task's rows.

A per-layer gate g scales the prefix's share of the softmax (an additive bias log g on
the prefix logits): g = 1 is exactly P-tuning v2 and is how training starts; g = 0 is
an exact no-op, which is what a zero-initialised prefix artifact is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from methods.config import BaseConfig, require
from methods.encoder import BatchContext, Effect
from methods.errors import ArtifactError
from methods.registry import Kind, TaskPart, register_kind
from methods.spec import BackboneSpec

KV, GATE = "prefix.kv", "prefix.gate"


@dataclasses.dataclass(frozen=True)
class PrefixConfig(BaseConfig):
    num_prefix: int = 16

    def __post_init__(self) -> None:
        require(isinstance(self.num_prefix, int) and 1 <= self.num_prefix <= 256,
                "PrefixConfig", f"num_prefix must be an int in [1, 256], got {self.num_prefix!r}")


class PrefixEffect(Effect):
    has_prefix = True

    def __init__(self, parts: Sequence[TaskPart], ctx: BatchContext) -> None:
        L, _, _, d = parts[0].tensors[KV].shape
        P = max(p.tensors[KV].shape[2] for p in parts)
        kvs, biases = [], []
        for p in parts:
            t = p.tensors[KV].to(ctx.dtype)
            n, Pt = len(p.rows), t.shape[2]
            kvs.append(torch.cat([t, t.new_zeros(L, 2, P - Pt, d)], dim=2).expand(n, L, 2, P, d))
            b = torch.log(p.tensors[GATE].to(ctx.dtype))[:, None].expand(L, Pt)  # (L, Pt)
            b = torch.cat([b, b.new_full((L, P - Pt), float("-inf"))], dim=1)
            biases.append(b.expand(n, L, P))
        self.rows = torch.cat([p.rows for p in parts])
        self.kv, self.bias = torch.cat(kvs), torch.cat(biases)  # (n, L, 2, P, d), (n, L, P)

    def prefix(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.rows, self.kv[:, layer, 0], self.kv[:, layer, 1], self.bias[:, layer]


class Prefix(Kind):
    name = "prefix"
    config_cls = PrefixConfig
    prefix = "prefix."

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

    def effect(self, parts: Sequence[TaskPart], ctx: BatchContext) -> Effect:
        return PrefixEffect(parts, ctx)


register_kind(Prefix())
