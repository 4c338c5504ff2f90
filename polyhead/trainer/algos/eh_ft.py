"""EH-FT as published (Yang et al., EMNLP 2022; its finetune_roberta.py and finetune.sh).

Stage 1 (``--head-init pet:lora|pet:bitfit``): the backbone frozen, LoRA (r 8, alpha 16 on
Q, K, V and the attention output) or BitFit (every encoder-layer bias, LayerNorms' included)
trains with a fresh MLP head for --head-init-epochs (the paper's 6 of 60 on RTE/MRPC; 2 of
20 on the tasks without their own line) at --head-init-lr (5e-4). Stage 2: the original
weights (the PET parameters dropped) and that head (on BitFit's path its weights only, the
biases re-initialised, as its NEW_MLPHeadMixin copies them), every parameter trained for
--epochs. Both stages: AdamW (0.9, 0.98), eps 1e-6, weight decay 0.01, gradient clipping
0.1, batch 32, each stage its own 10 % warm-up and linear decay.

The head: d -> 2048 -> ReLU -> C on the first token, weights N(0, 0.005), biases zero (the
paper's code gives binary tasks 1 output; here C = 2 under cross-entropy). Without
--head-init the method is EH-FT's fair baseline: the same head randomly initialised and
stage 2 alone. The head is not one the engine serves, so the method writes no artifact: it
answers the paper's question in the accuracy study (bench/accuracy.py plan eh-ft).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from polyhead.trainer.method import MethodOptions, TrainConfigError, TrainingMethod, option

if TYPE_CHECKING:
    from polyhead.trainer.config import TrainConfig
    from polyhead.trainer.context import Context
    from polyhead.trainer.models import Trainable

STAGE1_EPOCHS = 6.0  # RTE/MRPC: 6 of 60 epochs (finetune.sh)
# finetune.sh's stage-1 epochs by task (total in the comment); the others: 2 of 20
PAPER_STAGE1 = {"rte": 6.0, "mrpc": 6.0, "boolq": 4.0, "wic": 4.0,  # 60, 60, 40, 40
                "cb": 40.0, "copa": 40.0, "wsc": 40.0, "qnli": 1.0}  # 400 x 3, 10


def stage1_epochs(task: str) -> float:
    """The paper's stage-1 epochs for a task (its script's default, 2, for the others)."""
    return PAPER_STAGE1.get(task, 2.0)


@dataclasses.dataclass(frozen=True)
class EhFtOptions(MethodOptions):
    head_init_epochs: float | None = option(
        None, "eh-ft: stage 1's epochs (default 6, the paper's RTE/MRPC schedule; 2 elsewhere)", type=float)

    def __post_init__(self) -> None:
        if self.head_init_epochs is not None and not self.head_init_epochs > 0:
            raise TrainConfigError("--head-init-epochs (> 0) is eh-ft's stage 1 length (the other "
                                   "methods: --head-init-frac)")


class EhFt(TrainingMethod):
    options = EhFtOptions

    def build(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        from polyhead.trainer.algos.eh_ft_model import EhFtModel, stage_one

        model = EhFtModel(ctx.backbone, cfg, ctx.head)
        if cfg.head_init is not None:
            epochs = cfg.options_as(EhFtOptions).head_init_epochs
            head, model.stage_info = stage_one(cfg, ctx, STAGE1_EPOCHS if epochs is None else epochs)
            model.load_head(head)
        return model


HOOKS = EhFt()
