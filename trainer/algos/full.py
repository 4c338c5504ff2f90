"""Vanilla fine-tuning: every trainable weight, no gradient mask."""

from __future__ import annotations

from trainer.config import TrainConfig
from trainer.context import Context
from trainer.models import DenseModel, Trainable


def build(cfg: TrainConfig, ctx: Context) -> Trainable:
    return DenseModel(ctx.backbone, cfg, ctx.head)
