"""Child-Tuning_D: Fisher over the whole training set, then a fixed global top mask.

Paper recipe (``ChildTuningD.calculate_fisher``): the encoder layers' tensors (names with
'layer'), the global top ``--child-d-p``; embeddings, pooler and head update unmasked.
Servable recipe: the tunable weights, exactly the top ``--density`` of them (or the top
whole input columns within that budget, ``--mask-structure columns``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from polyhead.trainer.algos.sparse_budget import SERVABLE_STRUCTURES, SparseOptions
from polyhead.trainer.method import TrainConfigError, TrainingMethod, option

if TYPE_CHECKING:
    from polyhead.trainer.config import TrainConfig
    from polyhead.trainer.context import Context
    from polyhead.trainer.models import Trainable

MAX_GRAD_NORM = 1.0


@dataclasses.dataclass(frozen=True)
class ChildDOptions(SparseOptions):
    servable_structure = SERVABLE_STRUCTURES["child-d"]
    child_d_p: float = option(0.3, "child-d (paper) kept share p_D", type=float)
    fisher_examples: int | None = option(None, "cap on child-d's Fisher pass (default: all)", type=int)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.child_d_p <= 1:
            raise TrainConfigError(f"child-d keep fraction must be in (0, 1], got {self.child_d_p}")
        if self.fisher_examples is not None and self.fisher_examples < 1:
            raise TrainConfigError("fisher examples must be >= 1")


class ChildD(TrainingMethod):
    options = ChildDOptions

    def build(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        from polyhead.trainer import loop, masks
        from polyhead.trainer.models import Batch, DenseModel

        opts = cfg.options_as(ChildDOptions)
        model = DenseModel(ctx.backbone, cfg, ctx.head, density=opts.export_density(cfg),
                           structure=opts.structure(cfg))
        if ctx.head_tensors is not None:  # EH-FT: the Fisher under the stage-1 head
            model.load_head(ctx.head_tensors)
        names = ([n for n in model.backbone_params if n.startswith("encoder.layer.")] if cfg.paper
                 else list(model.sparse_names))
        n = len(ctx.train) if opts.fisher_examples is None else min(opts.fisher_examples, len(ctx.train))
        rows = math.ceil(n / cfg.batch)
        data = loop.batches(ctx.train, cfg.batch, ctx.pad_id, ctx.device, shuffle_seed=cfg.seed + 7)
        model.set_training(True)  # the official pass runs in train mode (dropout on)

        amp = cfg.autocast_dtype(ctx.device)  # the Fisher pass runs as training does

        def loss_of(batch: object) -> object:
            assert isinstance(batch, Batch)
            with loop.autocast(ctx.device, amp):
                logits = model.forward(batch)
            return loop.loss_fn(logits, batch.targets, ctx.train.regression)

        limited = (b for i, b in enumerate(data) if i < rows)
        info = masks.fisher({k: model.params[k] for k in names}, limited, loss_of,  # type: ignore[arg-type]
                            MAX_GRAD_NORM)
        for p in model.params.values():
            p.grad = None
        keep = opts.child_d_p if cfg.paper else opts.density
        model.policy = masks.ChildDMask(info, keep, limit_union=not cfg.paper, structure=opts.structure(cfg))
        return model


HOOKS = ChildD()
