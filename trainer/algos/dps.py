"""DPS Dense: alternating stages (dense + gradient accumulation / per-matrix top mask).

Paper recipe (``DPSDense``, ``modeling_bert.py``): every nn.Linear weight (Q, K, V,
attention output, FFN in/out, pooler, classifier); biases, LayerNorms and embeddings are
always updated. Servable recipe: every tunable tensor with a per-tensor quota of --density.
"""

from __future__ import annotations

from trainer.config import TrainConfig
from trainer.context import Context
from trainer.masks import DpsMask
from trainer.models import DenseModel, Trainable


def linear_weights(model: DenseModel) -> list[str]:
    """The Linear weights DPS selects in: encoder Linears, the pooler and the classifier."""
    spec = model.bb.spec
    names = [n + ".weight" for n in spec.linear_names()]
    if "pooler.dense.weight" in model.params:
        names.append("pooler.dense.weight")
    names += [n for n in model.params if n.startswith("head.") and n.endswith("weight")]
    return names


def stage_length(cfg: TrainConfig, total_steps: int) -> int:
    """DPS's ``us = int(max_steps * update_ratio)`` (at least 1)."""
    return max(1, int(total_steps * cfg.dps_update_ratio))


def build(cfg: TrainConfig, ctx: Context) -> Trainable:
    model = DenseModel(ctx.backbone, cfg, ctx.head)
    us = stage_length(cfg, ctx.total_steps)
    if cfg.paper:
        model.policy = DpsMask(model.params, linear_weights(model), us, reserve_p=cfg.dps_reserve_p)
    else:
        model.policy = DpsMask(model.params, list(model.backbone_params), us, density=cfg.density)
    return model
