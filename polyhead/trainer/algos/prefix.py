"""Deep prefix tuning (P-tuning v2): random prefix keys/values per layer, gates fixed at 1."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from polyhead.trainer.method import MethodOptions, TrainingMethod, kind_config, option

if TYPE_CHECKING:
    from polyhead.engine.prefix import PrefixConfig
    from polyhead.trainer.config import TrainConfig
    from polyhead.trainer.context import Context
    from polyhead.trainer.models import Trainable


@dataclasses.dataclass(frozen=True)
class PrefixOptions(MethodOptions):
    num_prefix: int = option(16, "virtual tokens per layer (default 16)", type=int)

    def __post_init__(self) -> None:
        kind_config(self.kind_config, "--num-prefix")

    def kind_config(self) -> PrefixConfig:
        from polyhead.engine.prefix import PrefixConfig  # the prefix kind's own limits

        return PrefixConfig(num_prefix=self.num_prefix)


class Prefix(TrainingMethod):
    options = PrefixOptions

    def build(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        from polyhead.trainer.models import PetModel

        # a prefix starts random (gate 1) as P-tuning v2; the gates stay fixed
        return PetModel(ctx.backbone, cfg, ctx.head, cfg.options_as(PrefixOptions).kind_config(),
                        frozen=("prefix.gate",))


HOOKS = Prefix()
