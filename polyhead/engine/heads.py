"""The per-task head over the final [CLS] hidden state: C labels, or 1 output (regression)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from polyhead.engine.config import HEAD_TYPES, BaseConfig, require
from polyhead.engine.errors import ArtifactError
from polyhead.engine.kinds import check_exact
from polyhead.engine.slots import Field, single_row
from polyhead.engine.spec import BackboneSpec


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


# Head tables. Every task has a row in the head table: its output layer (padded to the
# table's largest output count) and which input it reads: [CLS] (linear), the backbone's
# pooler (pooler), or its own tanh(W1 h + b1), kept in a row of the mlp table (mlp).
OUT_W, OUT_B, POOLED, MLP_SLOT = "head.weight", "head.bias", "head.pooled", "head.mlp_slot"
MLP_W, MLP_B = "head.dense.weight", "head.dense.bias"


def head_layout(spec: BackboneSpec, cfg: HeadConfig) -> dict[str, Field]:
    d, c = spec.hidden, cfg.num_outputs
    return {OUT_W: Field((c, d)), OUT_B: Field((c,)), POOLED: Field(()),
            MLP_SLOT: Field((), torch.int64, fill=-1)}


BASE_OUTPUTS = 16  # heads up to this many outputs share the base table; wider ones go by class


def head_table_key(cfg: HeadConfig) -> str:
    """Which head table a head goes to: "head" up to ``BASE_OUTPUTS`` outputs, else its size
    class (outputs rounded up to a power of 2): a table pads every row to its widest head,
    so a 10,000-label head never widens the rows of 2-label ones."""
    c = cfg.num_outputs
    return "head" if c <= BASE_OUTPUTS else f"head/{1 << (c - 1).bit_length()}"


def mlp_layout(spec: BackboneSpec) -> dict[str, Field]:
    return {MLP_W: Field((spec.hidden, spec.hidden)), MLP_B: Field((spec.hidden,))}


def head_rows(t: Mapping[str, Tensor], cfg: HeadConfig,
              mlp_slot: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(head table row, mlp table row or {}) from a head's tensors."""
    mlp = cfg.type == "mlp"
    w, b = (t["head.out.weight"], t["head.out.bias"]) if mlp else (t[OUT_W], t[OUT_B])
    row = {OUT_W: w, OUT_B: b, POOLED: torch.tensor(float(cfg.type == "pooler"), device=w.device),
           MLP_SLOT: torch.tensor(mlp_slot, device=w.device)}
    return row, ({MLP_W: t[MLP_W], MLP_B: t[MLP_B]} if mlp else {})


def apply_heads(heads: Mapping[str, Tensor], mlps: Mapping[str, Tensor], rows: Tensor,
                sel: Tensor, cls: Tensor, pooler: Any, width: int, drop: float = 0.0) -> Tensor:
    """(n, width) logits for batch rows ``rows`` (head slots ``sel``) from (B, d) [CLS]
    states; width: the largest output count among them (a row's own is a prefix of it).
    The one head forward, serving's and training's: ``drop`` > 0 (training) adds
    BertForSequenceClassification's dropout before each of the head's Linears."""
    z = cls[rows]  # (n, d)
    pooled = heads[POOLED][sel].to(z.dtype)[:, None]
    if pooler is not None and bool(pooled.any()):
        pz = torch.tanh(F.linear(z, pooler.dense.weight, pooler.dense.bias))
        z = torch.where(pooled > 0, pz, z)
    ms = heads[MLP_SLOT][sel]
    mrows = torch.nonzero(ms >= 0, as_tuple=True)[0]
    if len(mrows):
        m = ms[mrows]
        zm = _dropout(z[mrows], drop)[:, :, None]  # (n_mlp, d, 1)
        h = torch.bmm(mlps[MLP_W][m].to(z.dtype), zm)[..., 0]  # bf16 under autocast
        h = torch.tanh(h + mlps[MLP_B][m].to(h.dtype))
        z = z.index_copy(0, mrows, h.to(z.dtype))
    w, b = heads[OUT_W][:, :width][sel].to(z.dtype), heads[OUT_B][:, :width][sel]
    out = torch.bmm(w, _dropout(z, drop)[:, :, None])[..., 0]  # (n, width)
    return out + b.to(out.dtype)


def apply_head(t: Mapping[str, Tensor], cfg: HeadConfig, cls: Tensor, pooler: Any,
               drop: float = 0.0) -> Tensor:
    """One head on (n, d) [CLS] states -> (n, C) logits (the trainer's path): its tensors
    as one-slot tables through ``apply_heads``."""
    mlp = cfg.type == "mlp"
    head, mlp_row = head_rows(t, cfg, 0 if mlp else -1)
    n = cls.shape[0]
    rows = torch.arange(n, device=cls.device)
    sel = torch.zeros(n, dtype=torch.long, device=cls.device)
    if cfg.type == "pooler":
        assert pooler is not None
    return apply_heads(single_row(head), single_row(mlp_row), rows, sel, cls, pooler,
                       cfg.num_outputs, drop)


def _dropout(x: Tensor, p: float) -> Tensor:
    return F.dropout(x, p) if p > 0 else x
