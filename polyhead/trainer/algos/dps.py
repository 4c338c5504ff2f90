"""DPS Dense: alternating stages (dense + gradient accumulation / per-matrix top mask).

Paper recipe (``DPSDense``, ``modeling_bert.py``): every nn.Linear weight (Q, K, V,
attention output, FFN in/out, pooler, classifier); biases, LayerNorms and embeddings are
always updated. Servable recipe: every tunable tensor with a per-tensor quota of --density.

Dropout: the official ``script/run_trainer.py`` sets the hidden and attention dropout to 0
for DPS Dense unless max_steps >= 2,000, so the paper recipe does the same (every GLUE run
of the study is below 2,000 steps); the servable recipe keeps --dropout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from polyhead.trainer.algos.sparse_budget import SERVABLE_STRUCTURES, SparseOptions
from polyhead.trainer.method import TrainConfigError, TrainingMethod, option

if TYPE_CHECKING:
    from polyhead.trainer.config import TrainConfig
    from polyhead.trainer.context import Context
    from polyhead.trainer.models import DenseModel, Trainable
    from polyhead.trainer.run import RegressionScale


@dataclasses.dataclass(frozen=True)
class DpsOptions(SparseOptions):
    servable_structure = SERVABLE_STRUCTURES["dps"]
    dps_reserve_p: float = option(0.3, "dps: share of each matrix not updated", type=float)
    dps_update_ratio: float = option(0.05, "dps: stage length / total steps", type=float)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.dps_reserve_p < 1:
            raise TrainConfigError(f"dps reserve-p must be in [0, 1), got {self.dps_reserve_p}")
        if not 0 < self.dps_update_ratio <= 0.5:
            raise TrainConfigError(f"dps update ratio must be in (0, 0.5], got {self.dps_update_ratio}")


def linear_weights(model: DenseModel) -> list[str]:
    """The Linear weights DPS selects in: encoder Linears, the pooler and the classifier."""
    spec = model.bb.spec
    names = [n + ".weight" for n in spec.linear_names()]
    if "pooler.dense.weight" in model.params:
        names.append("pooler.dense.weight")
    names += [n for n in model.params if n.startswith("head.") and n.endswith("weight")]
    return names


def stage_length(cfg: TrainConfig, total_steps: int) -> int:
    """DPS's ``us = int(max_steps * update_ratio)`` (at least 1)."""
    return max(1, int(total_steps * cfg.options_as(DpsOptions).dps_update_ratio))


DROPOUT_MIN_STEPS = 2000  # run_trainer.py: dropout back to 0.1 only from here


class Dps(TrainingMethod):
    options = DpsOptions

    def build(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        from polyhead.trainer.masks import DpsMask
        from polyhead.trainer.models import DenseModel

        opts = cfg.options_as(DpsOptions)
        model = DenseModel(ctx.backbone, cfg, ctx.head, density=opts.export_density(cfg),
                           structure=opts.structure(cfg))
        if cfg.paper and ctx.total_steps < DROPOUT_MIN_STEPS:
            model.dropout = False
        us = stage_length(cfg, ctx.total_steps)
        if cfg.paper:
            model.policy = DpsMask(model.params, linear_weights(model), us, reserve_p=opts.dps_reserve_p)
        else:
            model.policy = DpsMask(model.params, list(model.sparse_names), us, density=opts.density,
                                   structure=opts.structure(cfg))
        return model

    def after_fit(self, model: Trainable, cfg: TrainConfig, ctx: Context, metrics: dict[str, float],
                  scale: RegressionScale | None,
                  log_fn: Callable[[str], None]) -> tuple[dict[str, float], dict[str, Any]]:
        from polyhead.trainer.masks import DpsMask
        from polyhead.trainer.models import DenseModel

        assert isinstance(model, DenseModel) and isinstance(model.policy, DpsMask)
        return metrics, {"dps_stages_history": model.policy.history}


HOOKS = Dps()
