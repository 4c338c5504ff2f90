"""What a method's builder may read: the backbone, the encoded data, the head, the settings."""

from __future__ import annotations

import dataclasses

import torch

from polyhead.engine import Backbone, HeadConfig
from polyhead.trainer.loop import Encoded


@dataclasses.dataclass
class Context:
    backbone: Backbone
    train: Encoded
    dev: Encoded
    head: HeadConfig
    metric: str
    progress: bool
    total_steps: int  # optimiser steps of this model's run (EH-FT: stage 2's)
    head_tensors: dict[str, torch.Tensor] | None = None  # EH-FT: the stage-1 head to start from

    @property
    def pad_id(self) -> int:
        return self.backbone.tokenizer.pad_token_id or 0

    @property
    def device(self) -> torch.device:
        return self.backbone.device
