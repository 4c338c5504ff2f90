"""BitFit: deltas on every Linear and LayerNorm bias, starting at zero."""

from __future__ import annotations

from polyhead.trainer.config import TrainConfig
from polyhead.trainer.context import Context
from polyhead.trainer.models import PetModel, Trainable


def build(cfg: TrainConfig, ctx: Context) -> Trainable:
    return PetModel(ctx.backbone, cfg, ctx.head)
