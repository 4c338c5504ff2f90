"""DPS Dense: alternating stages (dense + gradient accumulation / per-matrix top mask).

Paper recipe (``DPSDense``, ``modeling_bert.py``): every nn.Linear weight (Q, K, V,
attention output, FFN in/out, pooler, classifier); biases, LayerNorms and embeddings are
always updated. Servable recipe: every tunable tensor with a per-tensor quota of --density.

Dropout: the official ``script/run_trainer.py`` sets the hidden and attention dropout to 0
for DPS Dense unless max_steps >= 2,000, so the paper recipe does the same (every GLUE run
of the study is below 2,000 steps); the servable recipe keeps --dropout.
"""

from __future__ import annotations

from polyhead.trainer.config import TrainConfig
from polyhead.trainer.context import Context
from polyhead.trainer.masks import DpsMask
from polyhead.trainer.models import DenseModel, Trainable


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


DROPOUT_MIN_STEPS = 2000  # run_trainer.py: dropout back to 0.1 only from here


def build(cfg: TrainConfig, ctx: Context) -> Trainable:
    model = DenseModel(ctx.backbone, cfg, ctx.head)
    if cfg.paper and ctx.total_steps < DROPOUT_MIN_STEPS:
        model.dropout = False
    us = stage_length(cfg, ctx.total_steps)
    if cfg.paper:
        model.policy = DpsMask(model.params, linear_weights(model), us, reserve_p=cfg.dps_reserve_p)
    else:
        model.policy = DpsMask(model.params, list(model.sparse_names), us, density=cfg.density,
                               structure=cfg.mask_structure)
    return model
