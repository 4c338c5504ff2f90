"""PASTA: special-token vectors per layer (N(0, 0.02), dropout on them while training)."""

from __future__ import annotations

from polyhead.trainer.config import TrainConfig
from polyhead.trainer.context import Context
from polyhead.trainer.models import PetModel, Trainable


def build(cfg: TrainConfig, ctx: Context) -> Trainable:
    return PetModel(ctx.backbone, cfg, ctx.head)
