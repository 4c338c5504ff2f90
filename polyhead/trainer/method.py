"""What a training method implements: its options and its hooks into one training run.

A method is one module under ``polyhead/trainer/algos/`` (or any importable module) that
defines ``HOOKS``, an instance of a ``TrainingMethod`` subclass, and one entry in the table
(``polyhead.trainer.table``). Its ``options`` dataclass holds everything only it reads; each
field is a ``polyhead train`` flag (``option``) and is validated in ``__post_init__``, so a
bad value fails when the command line is parsed. The module stays free of torch at import
(``polyhead train --help`` reads every method's flags): import the model code inside the hooks.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from polyhead.engine.errors import ConfigError

if TYPE_CHECKING:
    from polyhead.trainer.config import TrainConfig
    from polyhead.trainer.context import Context
    from polyhead.trainer.models import Trainable
    from polyhead.trainer.run import RegressionScale

OptionsT = TypeVar("OptionsT", bound="MethodOptions")


class TrainConfigError(ValueError):
    """A training option is out of range or inconsistent with another."""


def option(default: Any, help: str | None = None, **flag: Any) -> Any:
    """A field of a method's options and its ``--name-with-dashes`` flag (``flag``: more
    ``add_argument`` keywords, such as ``type`` or ``choices``)."""
    return dataclasses.field(default=default, metadata={"flag": {"help": help, **flag}})


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """A method's own options (none here). Subclasses add ``option`` fields and check their
    ranges in ``__post_init__`` (raising ``TrainConfigError``); field names are the keys of
    the run's flat record (``TrainConfig.to_dict``), so two methods that share an option
    (``--density``) share the field through a common base class."""

    def check(self, cfg: TrainConfig) -> None:
        """Checks against the shared settings (recipe, head), also at parse time."""

    def record(self, cfg: TrainConfig) -> dict[str, Any]:
        """This run's option values for its flat record, defaults resolved for ``cfg``."""
        return dataclasses.asdict(self)

    @classmethod
    def record_defaults(cls) -> dict[str, Any]:
        """The record's values of these options in a run of another method."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def flags(cls) -> dict[str, dict[str, Any]]:
        """field name -> its flag's ``add_argument`` keywords."""
        return {f.name: dict(f.metadata["flag"]) for f in dataclasses.fields(cls) if "flag" in f.metadata}

    @classmethod
    def of(cls: type[OptionsT], values: Mapping[str, Any]) -> OptionsT:
        """The options from a flat mapping (parsed flags, a record); absent keys: defaults."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def kind_config(make: Callable[[], object], flags: str) -> None:
    """Build the artifact kind's config, whose own limits apply (LoRA's rank, a prefix's
    length, a density): at parse time, not when the trained model is exported."""
    try:
        make()
    except ConfigError as e:
        raise TrainConfigError(f"{flags}: {e}") from e


class TrainingMethod:
    """The hooks one training run calls; only ``build`` is required."""

    options: ClassVar[type[MethodOptions]] = MethodOptions
    # this method as --head-init's stage 1 (pet:NAME): its label in the log (None: not offered)
    head_stage_label: ClassVar[str | None] = None

    def build(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        raise NotImplementedError

    def head_stage(self, cfg: TrainConfig, ctx: Context) -> Trainable:
        """The model --head-init trains before a whole-model method (``cfg``: this method's)."""
        raise NotImplementedError(f"{cfg.method} is not a --head-init stage")

    def after_fit(self, model: Trainable, cfg: TrainConfig, ctx: Context, metrics: dict[str, float],
                  scale: RegressionScale | None,
                  log_fn: Callable[[str], None]) -> tuple[dict[str, float], dict[str, Any]]:
        """After training and selection: the dev metrics the run reports (a cut model's) and
        the method's own sections of the training record (JSON values by key)."""
        return metrics, {}


def add_flags(parser: argparse.ArgumentParser, methods: Mapping[str, type[MethodOptions]]) -> None:
    """One argument group per set of methods sharing flags (``--density``: child-d, child-f,
    dps), in table order; flags default to SUPPRESS, so only given ones reach the namespace."""
    users: dict[str, list[str]] = {}
    spec: dict[str, dict[str, Any]] = {}
    for name, cls in methods.items():
        for field, kw in cls.flags().items():
            users.setdefault(field, []).append(name)
            spec.setdefault(field, kw)
    groups: dict[tuple[str, ...], argparse._ArgumentGroup] = {}
    for field, names in users.items():
        key = tuple(names)
        if key not in groups:
            groups[key] = parser.add_argument_group(f"{', '.join(key)} options")
        groups[key].add_argument(flag_name(field), dest=field, default=argparse.SUPPRESS, **spec[field])


def given(args: argparse.Namespace, methods: Mapping[str, type[MethodOptions]]) -> dict[str, Any]:
    """The method flags given on the command line (field -> value)."""
    fields = {f for cls in methods.values() for f in cls.flags()}
    return {f: getattr(args, f) for f in fields if hasattr(args, f)}
