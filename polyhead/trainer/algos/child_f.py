"""Child-Tuning_F: a Bernoulli(p_F) mask on every trained gradient each step, x 1/p_F.

Paper recipe: every parameter (embeddings, pooler and head included). Servable recipe:
the tunable weights and the head; the diff is cut to --density afterwards (polyhead.trainer.run).
"""

from __future__ import annotations

from polyhead.trainer.config import TrainConfig
from polyhead.trainer.context import Context
from polyhead.trainer.masks import BernoulliMask
from polyhead.trainer.models import DenseModel, Trainable


def build(cfg: TrainConfig, ctx: Context) -> Trainable:
    model = DenseModel(ctx.backbone, cfg, ctx.head)
    model.policy = BernoulliMask(cfg.child_f_p, sorted(model.params), cfg.seed, ctx.device)
    return model
