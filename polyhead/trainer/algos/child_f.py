"""Child-Tuning_F: a Bernoulli(p_F) mask on every trained gradient each step, x 1/p_F.

Paper recipe: every parameter (embeddings, pooler and head included); the score of the
servable cut of the same run is reported beside it. Servable recipe: the tunable weights
and the head; the diff is then cut to --density by magnitude, the cost reported.
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
class ChildFOptions(SparseOptions):
    servable_structure = SERVABLE_STRUCTURES["child-f"]
    child_f_p: float = option(0.3, "child-f keep probability p_F (0.3: the official run.sh)", type=float)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.child_f_p <= 1:
            raise TrainConfigError(f"child-f keep probability must be in (0, 1], got {self.child_f_p}")


class ChildF(TrainingMethod):
    options = ChildFOptions

    def build(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        from polyhead.trainer.masks import BernoulliMask
        from polyhead.trainer.models import DenseModel

        opts = cfg.options_as(ChildFOptions)
        model = DenseModel(ctx.backbone, cfg, ctx.head, density=opts.export_density(cfg),
                           structure=opts.structure(cfg))
        model.policy = BernoulliMask(opts.child_f_p, sorted(model.params), cfg.seed, ctx.device)
        return model

    def after_fit(self, model: Trainable, cfg: TrainConfig, ctx: Context, metrics: dict[str, float],
                  scale: RegressionScale | None,
                  log_fn: Callable[[str], None]) -> tuple[dict[str, float], dict[str, Any]]:
        """Servable: the run's metrics are the cut model's; paper: the cut's beside them."""
        from polyhead.trainer.models import DenseModel

        assert isinstance(model, DenseModel)
        opts = cfg.options_as(ChildFOptions)
        if cfg.paper:
            return metrics, {"servable_cut": servable_cut(model, opts, ctx, metrics, scale, log_fn)}
        sparse, report = sparsify(model, opts, ctx, metrics, scale, log_fn)
        return sparse, {"sparsify": report}


def sparsify(model: DenseModel, opts: ChildFOptions, ctx: Context, dense: dict[str, float],
             scale: RegressionScale | None,
             log_fn: Callable[[str], None]) -> tuple[dict[str, float], dict[str, Any]]:
    """Servable: cut the dense diff to the density budget by magnitude; report the cost."""
    from polyhead.trainer import masks
    from polyhead.trainer.run import evaluate

    diffs = model.diffs()
    nonzero = sum(int((d != 0).sum()) for d in diffs.values())
    cut = masks.sparsify({n: diffs[n] for n in model.sparse_names}, opts.density, opts.servable())
    model.set_diffs({**diffs, **cut})  # the pooler (the head's) stays as trained
    sparse = evaluate(model, ctx, scale)
    cost = dense[ctx.metric] - sparse[ctx.metric]
    log_fn(f"[child-f] sparsified {nonzero} changed weights to density {opts.density}: "
           f"{ctx.metric} {dense[ctx.metric]:.4f} -> {sparse[ctx.metric]:.4f} (cost {cost:+.4f})")
    return sparse, {"rule": f"global top-|diff| to density ({opts.servable()})",
                    "dense_nonzero": nonzero, "dense_dev": dense, "sparse_dev": sparse,
                    "metric_cost": cost}


def servable_cut(model: DenseModel, opts: ChildFOptions, ctx: Context, dense: dict[str, float],
                 scale: RegressionScale | None, log_fn: Callable[[str], None]) -> dict[str, Any]:
    """Paper: the score of the servable cut of the same run, reported beside the dense
    score: the top --density |diff| of the tunable weights kept, the pooler as trained (the
    servable recipe's head holds it), every other weight (the embedding tables) back to
    the original; the dense model is restored afterwards."""
    import torch

    from polyhead.trainer import masks
    from polyhead.trainer.run import evaluate

    saved = model.state()
    tunable = set(ctx.backbone.spec.tunable_params())
    diffs = model.diffs()
    cut = masks.sparsify({n: d for n, d in diffs.items() if n in tunable}, opts.density,
                         opts.servable())
    kept = {**{n: diffs[n] for n in model.pooler_names if n in diffs}, **cut}
    model.set_diffs({n: kept.get(n, torch.zeros_like(d)) for n, d in diffs.items()})
    sparse = evaluate(model, ctx, scale)
    model.restore(saved)
    cost = dense[ctx.metric] - sparse[ctx.metric]
    log_fn(f"[child-f] servable cut to density {opts.density}: {ctx.metric} "
           f"{dense[ctx.metric]:.4f} -> {sparse[ctx.metric]:.4f} (cost {cost:+.4f})")
    return {"rule": "global top-|diff| of the tunable weights to density, the pooler as trained, "
                    "the rest original", "density": opts.density, "dev": sparse, "metric_cost": cost}


HOOKS = ChildF()
