"""BitFit: bias deltas (an exact no-op at the start) + head; also --head-init's pet:bitfit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyhead.trainer.method import TrainingMethod

if TYPE_CHECKING:
    from polyhead.trainer.config import TrainConfig
    from polyhead.trainer.context import Context
    from polyhead.trainer.models import Trainable


class Bitfit(TrainingMethod):
    head_stage_label = "bitfit"

    def build(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        from polyhead.engine.bitfit import BitfitConfig
        from polyhead.trainer.models import PetModel

        return PetModel(ctx.backbone, cfg, ctx.head, BitfitConfig(), zero=True)

    def head_stage(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        return self.build(cfg, ctx)


HOOKS = Bitfit()
