"""Training hyperparameters, validated on construction and recorded in the manifest.

Per-method defaults (learning rate, epochs, warm-up) live in the method table
(``polyhead.trainer.table``); a ``None`` here means "the method's default for this recipe".
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from polyhead.engine.config import HEAD_TYPES, STRUCTURES

if TYPE_CHECKING:
    from polyhead.trainer.table import Defaults

RECIPES = ("servable", "paper")
SELECTS = ("last", "best")
HEAD_INITS = ("pet:lora", "pet:bitfit")
POOLERS = ("train", "frozen")
PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), where bf16 autocast
    trains 2-3x faster than fp32; elsewhere torch emulates it, slower than fp32."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch without the probes
        return False


class TrainConfigError(ValueError):
    """A training option is out of range or inconsistent with another."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    method: str
    recipe: str = "servable"  # "paper": as the paper's official code; "servable": tiny uploads
    epochs: float | None = None  # None: the method's default
    lr: float | None = None  # None: the method's default
    warmup: float | None = None  # fraction of steps with linear warm-up, then linear decay
    batch_size: int | None = None  # None: the method's (16, or its paper's)
    max_length: int = 128
    seed: int = 0
    max_train: int | None = None
    weight_decay: float | None = None  # None: the method's (0.01, or its paper's)
    select: str = "last"  # "best": keep the best dev epoch; "last": the last one
    head_type: str = "pooler"
    pooler: str | None = None  # servable full/child-d/child-f/dps: "train" (None) or "frozen"
    dropout: bool = True  # the backbone's hidden/attention dropout while training
    density: float = 0.05  # servable child-d/child-f/dps: changed weights / tunable weights
    mask_structure: str = "entries"  # servable: "entries" or whole input "columns" of matrices
    child_f_p: float = 0.3  # child-f: keep probability p_F (the official run.sh's reserve_p)
    child_d_p: float = 0.3  # child-d (paper): the kept fraction p_D of the Fisher ranking
    fisher_examples: int | None = None  # child-d: examples for the Fisher pass (None: all)
    dps_reserve_p: float = 0.3  # dps: share of each matrix NOT updated in stage II
    dps_update_ratio: float = 0.05  # dps: stage length = int(total steps x this)
    num_prefix: int = 16
    lora_r: int = 8
    lora_alpha: float = 16.0
    head_init: str | None = None  # EH-FT: "pet:lora" | "pet:bitfit"
    head_init_frac: float = 0.1  # EH-FT: stage 1's share of the total steps
    head_init_lr: float = 5e-4  # EH-FT: stage 1's learning rate
    head_init_epochs: float | None = None  # eh-ft: stage 1's epochs (None: the paper's RTE/MRPC 6)
    pool: int = 50  # length grouping: batches per shuffled pool sorted by length (1: off)
    device: str = "auto"
    precision: str = "auto"  # training matmuls: "auto" = bf16 autocast where native (CUDA, bf16 CPUs)

    def __post_init__(self) -> None:
        from polyhead.trainer.table import METHODS

        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise TrainConfigError(msg)

        check(self.method in METHODS, f"method {self.method!r} is not one of {', '.join(METHODS)}")
        check(self.recipe in RECIPES, f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        check(self.epochs is None or self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        check(self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.warmup is None or 0 <= self.warmup < 1, f"warmup must be in [0, 1), got {self.warmup}")
        check(self.batch_size is None or self.batch_size >= 1,
              f"batch size must be >= 1, got {self.batch_size}")
        check(8 <= self.max_length <= 4096, f"max length must be in [8, 4096], got {self.max_length}")
        check(self.max_train is None or self.max_train >= 2, "max-train must be >= 2")
        check(self.weight_decay is None or self.weight_decay >= 0, "weight decay must be >= 0")
        check(self.select in SELECTS, f"select must be one of {', '.join(SELECTS)}, got {self.select!r}")
        check(self.head_type in HEAD_TYPES, f"head type must be one of {', '.join(HEAD_TYPES)}")
        check(0 < self.density <= 1, f"density must be in (0, 1], got {self.density}")
        check(self.mask_structure in STRUCTURES,
              f"mask structure must be one of {', '.join(STRUCTURES)}, got {self.mask_structure!r}")
        check(self.mask_structure == "entries" or (self.recipe == "servable" and self.method in
                                                   ("child-d", "child-f", "dps")),
              "--mask-structure columns applies to the servable recipe of child-d, child-f and dps")
        check(0 < self.child_f_p <= 1, f"child-f keep probability must be in (0, 1], got {self.child_f_p}")
        check(0 < self.child_d_p <= 1, f"child-d keep fraction must be in (0, 1], got {self.child_d_p}")
        check(self.fisher_examples is None or self.fisher_examples >= 1, "fisher examples must be >= 1")
        check(0 <= self.dps_reserve_p < 1, f"dps reserve-p must be in [0, 1), got {self.dps_reserve_p}")
        check(0 < self.dps_update_ratio <= 0.5,
              f"dps update ratio must be in (0, 0.5], got {self.dps_update_ratio}")
        check(1 <= self.num_prefix <= 256, "num-prefix must be in [1, 256]")
        check(self.lora_r >= 1 and self.lora_alpha > 0, "lora r must be >= 1 and alpha > 0")
        check(self.head_init is None or self.head_init in HEAD_INITS,
              f"head init must be one of {', '.join(HEAD_INITS)}")
        check(self.head_init is None or METHODS[self.method].dense,
              "--head-init (EH-FT) needs a method that trains the whole model (full, child-d, "
              "child-f, dps)")
        check(self.recipe in METHODS[self.method].recipes,
              f"{self.method} has only the {' and '.join(METHODS[self.method].recipes)} recipe "
              f"(give --recipe {METHODS[self.method].recipes[0]})")
        check(self.head_init_epochs is None or (
            self.head_init_epochs > 0 and METHODS[self.method].own_head_init),
              "--head-init-epochs (> 0) is eh-ft's stage 1 length (the other methods: --head-init-frac)")
        check(0 < self.head_init_frac < 1, "head-init fraction must be in (0, 1)")
        check(self.head_init_lr > 0, "head-init lr must be > 0")
        check(self.pool >= 1, f"pool must be >= 1, got {self.pool}")
        check(self.precision in PRECISIONS,
              f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        check(not (self.head_init is not None and self.head_type != "pooler"),
              "--head-init gives a 'pooler' head (as PEFT's SEQ_CLS classifier); use --head pooler")
        check(self.pooler is None or self.pooler in POOLERS,
              f"pooler must be one of {', '.join(POOLERS)}, got {self.pooler!r}")
        check(self.pooler is None or (METHODS[self.method].dense and not self.paper
                                      and self.head_type == "pooler"),
              "--pooler applies to the servable recipe of full, child-d, child-f and dps with "
              "--head pooler (the paper recipe trains every parameter; the PET methods keep "
              "the pooler frozen, as their papers do)")
        check(not (self.method == "lora" and self.head_type != "pooler"),
              "lora trains PEFT's SEQ_CLS classifier, a 'pooler' head; use --head pooler")

    @property
    def paper(self) -> bool:
        return self.recipe == "paper"

    @property
    def trains_pooler(self) -> bool:
        """A dense method with a pooler head trains the pooler (as part of its head, exported
        as an ``mlp`` head) unless --pooler frozen."""
        from polyhead.trainer.table import METHODS

        return METHODS[self.method].dense and self.head_type == "pooler" and (
            self.paper or self.pooler != "frozen")

    @property
    def learning_rate(self) -> float:
        from polyhead.trainer.table import METHODS

        return self.lr if self.lr is not None else METHODS[self.method].defaults(self.recipe).lr

    @property
    def num_epochs(self) -> float:
        from polyhead.trainer.table import METHODS

        return self.epochs if self.epochs is not None else METHODS[self.method].defaults(self.recipe).epochs

    @property
    def warmup_frac(self) -> float:
        from polyhead.trainer.table import METHODS

        return self.warmup if self.warmup is not None else METHODS[self.method].defaults(self.recipe).warmup

    @property
    def batch(self) -> int:
        return self.batch_size if self.batch_size is not None else self.defaults.batch_size

    @property
    def decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else self.defaults.weight_decay

    @property
    def defaults(self) -> Defaults:
        """The method's defaults for this recipe (polyhead.trainer.table)."""
        from polyhead.trainer.table import METHODS

        return METHODS[self.method].defaults(self.recipe)

    def autocast_dtype(self, device: Any) -> Any:
        """The dtype training runs its forward passes in under autocast (None: fp32). Weights,
        gradients and optimiser state stay fp32 either way; dev scores and exports are fp32
        on the CPU (as the engine serves there)."""
        import torch

        if self.precision == "fp32":
            return None
        if self.precision == "bf16" or device.type == "cuda" or cpu_has_bf16():
            return torch.bfloat16
        return None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        d = self.defaults
        out.update(lr=self.learning_rate, epochs=self.num_epochs, warmup=self.warmup_frac,
                   batch_size=self.batch, weight_decay=self.decay, adam_betas=list(d.betas),
                   adam_eps=d.eps, max_grad_norm=d.clip)
        out.pop("device")
        return out
