"""LoRA through the peft library on query/value, classifier over the pooler; also
--head-init's pet:lora (on Q, K, V and the attention output)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from polyhead.trainer.method import MethodOptions, TrainConfigError, TrainingMethod, kind_config, option

if TYPE_CHECKING:
    from polyhead.trainer.config import TrainConfig
    from polyhead.trainer.context import Context
    from polyhead.trainer.models import Trainable


@dataclasses.dataclass(frozen=True)
class LoraOptions(MethodOptions):
    lora_r: int = option(8, "LoRA's rank r (default 8)", type=int)
    lora_alpha: float = option(16.0, "update scale alpha / r (default 16)", type=float)

    def __post_init__(self) -> None:
        from polyhead.engine.lora import LoraConfig  # the lora kind's own limits (rank)

        kind_config(lambda: LoraConfig(r=self.lora_r, alpha=self.lora_alpha), "--lora-r/--lora-alpha")

    def check(self, cfg: TrainConfig) -> None:
        if cfg.head_type != "pooler":
            raise TrainConfigError("lora trains PEFT's SEQ_CLS classifier, a 'pooler' head; "
                                   "use --head pooler")


class Lora(TrainingMethod):
    options = LoraOptions
    head_stage_label = "lora (Q, K, V, O)"

    def build(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        from polyhead.trainer.models import LoraModel

        return LoraModel(ctx.backbone, cfg, ctx.head)

    def head_stage(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        from polyhead.trainer.models import LORA_QKVO, LoraModel

        return LoraModel(ctx.backbone, cfg, ctx.head, targets=LORA_QKVO)


HOOKS = Lora()
