"""Training hyperparameters, validated on construction and recorded in the manifest."""

from __future__ import annotations

import dataclasses
from typing import Any

METHODS = ("pasta", "prefix", "lora", "bitfit", "child-d", "child-f", "dps", "full")
SPARSE_METHODS = ("child-d", "child-f", "dps", "full")  # train backbone weights, store a diff
HEAD_INITS = ("pet:lora", "pet:bitfit", "pet:pasta")
HEAD_TYPES = ("pooler", "linear", "mlp")

# Learning rates that worked for MiniLM-sized encoders with short schedules.
DEFAULT_LR = {"pasta": 3e-2, "prefix": 2e-2, "lora": 5e-3, "bitfit": 5e-3,
              "child-d": 2e-4, "child-f": 1e-4, "dps": 2e-4, "full": 1e-4}


class TrainConfigError(ValueError):
    """A training option is out of range or inconsistent with another."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    method: str
    epochs: float = 3.0
    lr: float | None = None  # None: DEFAULT_LR[method]
    batch_size: int = 32
    max_length: int = 128
    seed: int = 0
    max_train: int | None = None
    weight_decay: float = 0.01  # never applied to backbone weights of the sparse methods
    warmup: float = 0.06  # fraction of steps with a linear warm-up, then linear decay
    head_type: str = "pooler"
    density: float = 0.05  # sparse methods: changed weights / tunable weights
    child_f_p: float = 0.3  # child-f: keep probability of the Bernoulli gradient mask
    fisher_examples: int | None = None  # child-d/dps: examples for the Fisher pass (None: all)
    dps_stages: int = 3
    num_prefix: int = 16
    lora_r: int = 8
    lora_alpha: float = 16.0
    head_init: str | None = None  # EH-FT: "pet:lora" | "pet:bitfit" | "pet:pasta"
    head_init_frac: float = 0.5  # its epochs, as a fraction of ``epochs``
    device: str = "auto"

    def __post_init__(self) -> None:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise TrainConfigError(msg)

        check(self.method in METHODS, f"method {self.method!r} is not one of {', '.join(METHODS)}")
        check(self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        check(self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")
        check(8 <= self.max_length <= 4096, f"max length must be in [8, 4096], got {self.max_length}")
        check(self.max_train is None or self.max_train >= 2, "max-train must be >= 2")
        check(self.weight_decay >= 0, "weight decay must be >= 0")
        check(0 <= self.warmup < 1, "warmup must be in [0, 1)")
        check(self.head_type in HEAD_TYPES, f"head type must be one of {', '.join(HEAD_TYPES)}")
        check(0 < self.density <= 1, f"density must be in (0, 1], got {self.density}")
        check(0 < self.child_f_p <= 1, f"child-f keep probability must be in (0, 1], got {self.child_f_p}")
        check(self.fisher_examples is None or self.fisher_examples >= 1, "fisher examples must be >= 1")
        check(self.dps_stages >= 1, "dps stages must be >= 1")
        check(self.head_init is None or self.head_init in HEAD_INITS,
              f"head init must be one of {', '.join(HEAD_INITS)}")
        check(0 < self.head_init_frac <= 1, "head-init fraction must be in (0, 1]")
        check(not (self.head_init == "pet:lora" and self.head_type != "pooler"),
              "--head-init pet:lora gives a 'pooler' head (as PEFT's SEQ_CLS classifier); "
              "use --head pooler")
        check(not (self.method == "lora" and self.head_type != "pooler"),
              "lora trains PEFT's SEQ_CLS classifier, a 'pooler' head; use --head pooler")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    @property
    def sparse(self) -> bool:
        return self.method in SPARSE_METHODS

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["lr"] = self.learning_rate
        out.pop("device")
        return out
