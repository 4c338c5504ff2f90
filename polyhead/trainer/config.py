"""Training hyperparameters, validated on construction and recorded in the manifest.

``TrainConfig`` holds the settings every method shares; a method's own options are its
``MethodOptions`` (``polyhead/trainer/algos/<method>.py``). Per-method defaults (learning
rate, epochs, warm-up) live in the method table (``polyhead.trainer.table``); a ``None``
here means "the method's default for this recipe".
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

from polyhead.engine.config import HEAD_TYPES, STRUCTURES
from polyhead.trainer.method import MethodOptions, TrainConfigError

if TYPE_CHECKING:
    from polyhead.trainer.table import Defaults

__all__ = ["HEAD_TYPES", "POOLERS", "PRECISIONS", "RECIPES", "SELECTS", "STRUCTURES", "TrainConfig",
           "TrainConfigError", "cpu_has_bf16", "head_inits"]
OptionsT = TypeVar("OptionsT", bound=MethodOptions)
RECIPES = ("servable", "paper")
SELECTS = ("last", "best")
MAX_EPOCHS = 1000  # past it a run is a mistake (a probe's epochs=1e9 queued a job)
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


def head_inits() -> tuple[str, ...]:
    """--head-init's choices: ``pet:NAME`` for each method that offers itself as stage 1."""
    from polyhead.trainer.table import METHODS

    return tuple(f"pet:{m.name}" for m in METHODS.values() if m.hooks.head_stage_label)


def option_fields() -> dict[str, list[str]]:
    """Every method option's field name -> the methods that have it (table order)."""
    from polyhead.trainer.table import METHODS

    out: dict[str, list[str]] = {}
    for m in METHODS.values():
        for f in dataclasses.fields(m.options):
            out.setdefault(f.name, []).append(m.name)
    return out


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings every method shares; the method's own are ``options`` (its
    ``MethodOptions``, defaults when None), and --head-init's stage-1 method's are
    ``head_init_options`` (None: that method's defaults)."""

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
    head_init: str | None = None  # EH-FT: "pet:lora" | "pet:bitfit"
    head_init_frac: float = 0.1  # EH-FT: stage 1's share of the total steps
    head_init_lr: float = 5e-4  # EH-FT: stage 1's learning rate
    pool: int = 50  # length grouping: batches per shuffled pool sorted by length (1: off)
    device: str = "auto"
    precision: str = "auto"  # training matmuls: "auto" = bf16 autocast where native (CUDA, bf16 CPUs)
    options: MethodOptions | None = None  # the method's own (None: its defaults)
    head_init_options: MethodOptions | None = None  # --head-init's PET method's (None: its defaults)

    def __post_init__(self) -> None:
        from polyhead.trainer.table import METHODS

        _check(self.method in METHODS, f"method {self.method!r} is not one of {', '.join(METHODS)}")
        m = METHODS[self.method]
        self._check_shared(m.dense, m.recipes)
        if self.options is None:
            object.__setattr__(self, "options", m.options())
        _check(type(self.options) is m.options,
               f"{self.method}'s options are {m.options.__name__}, got {type(self.options).__name__}")
        if self.head_init is not None:
            pet = METHODS[self.head_init.split(":", 1)[1]].options
            if self.head_init_options is None:
                object.__setattr__(self, "head_init_options", pet())
            _check(type(self.head_init_options) is pet, f"--head-init {self.head_init}'s options are "
                   f"{pet.__name__}, got {type(self.head_init_options).__name__}")
        _check(self.head_init is not None or self.head_init_options is None,
               "head-init options without --head-init")
        self.method_options.check(self)

    def _check_shared(self, dense: bool, recipes: tuple[str, ...]) -> None:
        check = _check
        check(self.recipe in RECIPES, f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        check(self.epochs is None or 0 < self.epochs <= MAX_EPOCHS,
              f"epochs must be in (0, {MAX_EPOCHS}], got {self.epochs}")
        check(self.lr is None or 0 < self.lr <= 1, f"lr must be in (0, 1], got {self.lr}")
        check(self.warmup is None or 0 <= self.warmup < 1, f"warmup must be in [0, 1), got {self.warmup}")
        check(self.batch_size is None or self.batch_size >= 1,
              f"batch size must be >= 1, got {self.batch_size}")
        check(8 <= self.max_length <= 4096, f"max length must be in [8, 4096], got {self.max_length}")
        check(self.max_train is None or self.max_train >= 2, "max-train must be >= 2")
        check(self.weight_decay is None or 0 <= self.weight_decay <= 10,
              f"weight decay must be in [0, 10], got {self.weight_decay}")
        check(self.select in SELECTS, f"select must be one of {', '.join(SELECTS)}, got {self.select!r}")
        check(self.head_type in HEAD_TYPES, f"head type must be one of {', '.join(HEAD_TYPES)}")
        check(self.head_init is None or self.head_init in head_inits(),
              f"head init must be one of {', '.join(head_inits())}")
        check(self.head_init is None or dense,
              "--head-init (EH-FT) needs a method that trains the whole model (full, child-d, "
              "child-f, dps)")
        check(self.recipe in recipes,
              f"{self.method} has only the {' and '.join(recipes)} recipe (give --recipe {recipes[0]})")
        check(0 < self.head_init_frac < 1, "head-init fraction must be in (0, 1)")
        check(0 < self.head_init_lr <= 1, f"head-init lr must be in (0, 1], got {self.head_init_lr}")
        check(self.pool >= 1, f"pool must be >= 1, got {self.pool}")
        check(self.precision in PRECISIONS,
              f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        check(not (self.head_init is not None and self.head_type != "pooler"),
              "--head-init gives a 'pooler' head (as PEFT's SEQ_CLS classifier); use --head pooler")
        check(self.pooler is None or self.pooler in POOLERS,
              f"pooler must be one of {', '.join(POOLERS)}, got {self.pooler!r}")
        check(self.pooler is None or (dense and not self.paper and self.head_type == "pooler"),
              "--pooler applies to the servable recipe of full, child-d, child-f and dps with "
              "--head pooler (the paper recipe trains every parameter; the PET methods keep "
              "the pooler frozen, as their papers do)")

    @classmethod
    def flat(cls, **values: Any) -> TrainConfig:
        """A config from flat keys, as ``to_dict`` and the command line name them: the shared
        settings, and the options of the method (and of --head-init's method). Another
        method's option at its default is ignored (a record holds every method's); set to
        anything else, it raises, naming the methods it applies to."""
        from polyhead.trainer.method import flag_name
        from polyhead.trainer.table import METHODS

        shared = {f.name for f in dataclasses.fields(cls)} - {"options", "head_init_options"}
        users = option_fields()
        unknown = sorted(set(values) - shared - set(users))
        if unknown:
            raise TypeError(f"TrainConfig.flat: unknown settings {unknown}")
        _check(values.get("method") in METHODS, f"method {values.get('method')!r} is not one of "
               f"{', '.join(METHODS)}")
        own = METHODS[values["method"]].options
        head_init = values.get("head_init")
        pet_name = head_init.split(":", 1)[1] if isinstance(head_init, str) else None
        pet = METHODS[pet_name].options if pet_name in METHODS else None
        mine = {f.name for f in dataclasses.fields(own)} | (
            {f.name for f in dataclasses.fields(pet)} if pet else set())
        defaults = _option_defaults()
        for k in sorted(set(values) & set(users) - mine):
            _check(values[k] == defaults[k], f"{flag_name(k)} applies to --method "
                   f"{' | '.join(users[k])}, not {values['method']}")
        return cls(**{k: v for k, v in values.items() if k in shared}, options=own.of(values),
                   head_init_options=pet.of(values) if pet else None)

    @property
    def method_options(self) -> MethodOptions:
        assert self.options is not None  # set in __post_init__
        return self.options

    def options_as(self, cls: type[OptionsT]) -> OptionsT:
        """The method's options as its own class (a method's hooks read them this way)."""
        if not isinstance(self.options, cls):
            raise TypeError(f"{self.method}'s options are {type(self.options).__name__}, not {cls.__name__}")
        return self.options

    def head_init_options_as(self, cls: type[OptionsT]) -> OptionsT:
        """--head-init's method's options as its own class."""
        if not isinstance(self.head_init_options, cls):
            raise TypeError(f"--head-init {self.head_init}: options {type(self.head_init_options).__name__}, "
                            f"not {cls.__name__}")
        return self.head_init_options

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
        """The flat record (manifests, the accuracy study): the shared settings with the
        defaults resolved, and every method's option keys (this run's values for its own
        method and --head-init's, the defaults for the others)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("options", "head_init_options")}
        out.update(_option_defaults())
        for opts in (self.head_init_options, self.options):
            if opts is not None:
                out.update(opts.record(self))
        d = self.defaults
        out.update(lr=self.learning_rate, epochs=self.num_epochs, warmup=self.warmup_frac,
                   batch_size=self.batch, weight_decay=self.decay, adam_betas=list(d.betas),
                   adam_eps=d.eps, max_grad_norm=d.clip)
        out.pop("device")
        return out


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise TrainConfigError(msg)


def _option_defaults() -> dict[str, Any]:
    """Every method option's default (the first method's, in table order)."""
    from polyhead.trainer.table import METHODS

    out: dict[str, Any] = {}
    for m in METHODS.values():
        for k, v in m.options.record_defaults().items():
            out.setdefault(k, v)
    return out
