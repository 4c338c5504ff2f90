"""Vanilla fine-tuning: every trainable weight, no gradient mask."""

from __future__ import annotations

from polyhead.trainer.config import TrainConfig
from polyhead.trainer.context import Context
from polyhead.trainer.models import DenseModel, Trainable


def build(cfg: TrainConfig, ctx: Context) -> Trainable:
    return DenseModel(ctx.backbone, cfg, ctx.head)
