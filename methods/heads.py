"""The per-task head over the final [CLS] hidden state: C labels, or 1 output (regression)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from methods.config import BaseConfig, require
from methods.errors import ArtifactError
from methods.registry import check_exact
from methods.spec import BackboneSpec

HEAD_TYPES = ("linear", "mlp", "pooler")


@dataclasses.dataclass(frozen=True)
class HeadConfig(BaseConfig):
    """linear: W h; mlp: W2 tanh(W1 h); pooler: W tanh(P h) with P the backbone's frozen pooler
    (as BertForSequenceClassification, so PEFT adapters import as they ran)."""

    num_outputs: int
    type: str = "linear"

    def __post_init__(self) -> None:
        require(isinstance(self.num_outputs, int) and 1 <= self.num_outputs <= 10_000,
                "HeadConfig", f"num_outputs must be an int in [1, 10000], got {self.num_outputs!r}")
        require(self.type in HEAD_TYPES, "HeadConfig",
                f"type {self.type!r} is not one of {', '.join(HEAD_TYPES)}")


def head_shapes(spec: BackboneSpec, cfg: HeadConfig) -> dict[str, tuple[int, ...]]:
    d, c = spec.hidden, cfg.num_outputs
    if cfg.type == "mlp":
        return {"head.dense.weight": (d, d), "head.dense.bias": (d,),
                "head.out.weight": (c, d), "head.out.bias": (c,)}
    return {"head.weight": (c, d), "head.bias": (c,)}


def init_head(spec: BackboneSpec, cfg: HeadConfig,
              generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """As nn.Linear does: weights U(-1/sqrt(in), 1/sqrt(in)), biases zero."""
    out = {}
    for name, shape in head_shapes(spec, cfg).items():
        t = torch.zeros(shape)
        if name.endswith("weight"):
            bound = 1.0 / math.sqrt(shape[1])
            t.uniform_(-bound, bound, generator=generator)
        out[name] = t
    return out


def validate_head(tensors: Mapping[str, Tensor], spec: BackboneSpec, cfg: HeadConfig) -> None:
    if cfg.type == "pooler" and "pooler.dense.weight" not in spec.param_shapes:
        raise ArtifactError("head", "head type 'pooler' needs a backbone with a pooler layer")
    check_exact(tensors, head_shapes(spec, cfg), "head")


def apply_head(t: Mapping[str, Tensor], cfg: HeadConfig, cls: Tensor,
               pooler: Any) -> Tensor:
    """(n, d) [CLS] states -> (n, C) logits."""
    if cfg.type == "mlp":
        h = torch.tanh(F.linear(cls, t["head.dense.weight"], t["head.dense.bias"]))
        return F.linear(h, t["head.out.weight"], t["head.out.bias"])
    if cfg.type == "pooler":
        assert pooler is not None
        cls = torch.tanh(F.linear(cls, pooler.dense.weight, pooler.dense.bias))
    return F.linear(cls, t["head.weight"], t["head.bias"])
