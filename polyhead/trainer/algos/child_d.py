"""Child-Tuning_D: Fisher over the whole training set, then a fixed global top mask.

Paper recipe (``ChildTuningD.calculate_fisher``): the encoder layers' tensors (names with
'layer'), the global top ``--child-d-p``; embeddings, pooler and head update unmasked.
Servable recipe: the tunable weights, exactly the top ``--density`` of them (or the top
whole input columns within that budget, ``--mask-structure columns``).
"""

from __future__ import annotations

import math

from polyhead.trainer.config import TrainConfig
from polyhead.trainer.context import Context
from polyhead.trainer.loop import autocast, batches, loss_fn
from polyhead.trainer.masks import ChildDMask, fisher
from polyhead.trainer.models import Batch, DenseModel, Trainable

MAX_GRAD_NORM = 1.0


def build(cfg: TrainConfig, ctx: Context) -> Trainable:
    model = DenseModel(ctx.backbone, cfg, ctx.head)
    if ctx.head_tensors is not None:  # EH-FT: the Fisher under the stage-1 head
        model.load_head(ctx.head_tensors)
    names = ([n for n in model.backbone_params if n.startswith("encoder.layer.")] if cfg.paper
             else list(model.sparse_names))
    n = len(ctx.train) if cfg.fisher_examples is None else min(cfg.fisher_examples, len(ctx.train))
    rows = math.ceil(n / cfg.batch)
    data = batches(ctx.train, cfg.batch, ctx.pad_id, ctx.device, shuffle_seed=cfg.seed + 7)
    model.set_training(True)  # the official pass runs in train mode (dropout on)

    amp = cfg.autocast_dtype(ctx.device)  # the Fisher pass runs as training does

    def loss_of(batch: object) -> object:
        assert isinstance(batch, Batch)
        with autocast(ctx.device, amp):
            logits = model.forward(batch)
        return loss_fn(logits, batch.targets, ctx.train.regression)

    limited = (b for i, b in enumerate(data) if i < rows)
    info = fisher({k: model.params[k] for k in names}, limited, loss_of, MAX_GRAD_NORM)  # type: ignore[arg-type]
    for p in model.params.values():
        p.grad = None
    keep = cfg.child_d_p if cfg.paper else cfg.density
    model.policy = ChildDMask(info, keep, limit_union=not cfg.paper, structure=cfg.mask_structure)
    return model
