"""The training record: what a run did, written into the artifact's manifest (``training``).

``TrainingRecord.to_json`` gives the manifest's section with the keys earlier versions
wrote (stored artifacts and the accuracy study's records read them by key); optional
fields that are ``None`` are left out, as they were.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class StageInfo:
    """A stage run before the method's own training (--head-init's stage 1)."""

    method: str  # the PET method it trained
    steps: int
    lr: float
    dev: dict[str, float]  # its dev metrics with its head
    seconds: float
    epochs: float | None = None  # eh-ft: the stage's epochs
    trainable_params: int | None = None  # eh-ft: the PET parameters and the head

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass
class TrainingRecord:
    method: str
    recipe: str
    method_label: str  # the table's help line
    hyperparameters: dict[str, Any]  # TrainConfig.to_dict(): the flat settings
    train_examples: int
    dev_examples: int
    total_steps: int
    regression_scale: dict[str, float] | None = None  # {"mean", "std"}
    head_init_stage: StageInfo | None = None
    dropout_in_training: bool = True
    precision: str = "fp32"  # "fp32" or "bf16 autocast"
    steps: int = 0  # optimiser steps taken (EH-FT via run.py: stage 2's)
    dev_history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0
    train_tokens: int = 0
    tokens_per_s: float = 0.0
    padding_share: float = 0.0
    trainable_params: int = 0
    sections: dict[str, Any] = dataclasses.field(default_factory=dict)  # the method's own (after_fit)
    stored_params: int | None = None  # after export
    parity_max_abs: float | None = None  # after export

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sections"}
        out["head_init_stage"] = self.head_init_stage.to_json() if self.head_init_stage else None
        out = {k: v for k, v in out.items() if v is not None}
        return {**out, **self.sections}
