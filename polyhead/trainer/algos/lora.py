"""LoRA through the peft library on query/value, classifier over the pooler."""

from __future__ import annotations

from polyhead.trainer.config import TrainConfig
from polyhead.trainer.context import Context
from polyhead.trainer.models import LoraModel, Trainable


def build(cfg: TrainConfig, ctx: Context) -> Trainable:
    return LoraModel(ctx.backbone, cfg, ctx.head)
