"""Vanilla fine-tuning: every trainable weight, no gradient mask."""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyhead.trainer.method import TrainingMethod

if TYPE_CHECKING:
    from polyhead.trainer.config import TrainConfig
    from polyhead.trainer.context import Context
    from polyhead.trainer.models import Trainable


class Full(TrainingMethod):
    def build(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        from polyhead.trainer.models import DenseModel

        return DenseModel(ctx.backbone, cfg, ctx.head)


HOOKS = Full()
