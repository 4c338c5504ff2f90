"""PASTA: special-token vectors per layer (N(0, 0.02), dropout on them while training)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyhead.trainer.method import TrainingMethod

if TYPE_CHECKING:
    from polyhead.trainer.config import TrainConfig
    from polyhead.trainer.context import Context
    from polyhead.trainer.models import Trainable


class Pasta(TrainingMethod):
    def build(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        from polyhead.engine.pasta import PastaConfig
        from polyhead.trainer.models import PetModel

        # N(0, 0.02) as the paper's code (HF's init of a new embedding); the paper recipe's
        # head as its code's: BertForSequenceClassification's classifier
        return PetModel(ctx.backbone, cfg, ctx.head, PastaConfig(), hf_head=cfg.paper)


HOOKS = Pasta()
