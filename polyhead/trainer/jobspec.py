"""A training job's method options, read by `polyhead train`'s own parser: the same names
(``--lora-r`` is option ``lora_r``), values and defaults. Torch-free (the server checks a
job's options when it is created)."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from polyhead.trainer.config import TrainConfig, TrainConfigError
from polyhead.trainer.table import METHODS

# `polyhead train` flags a job does not take: where it runs is the server's choice
NOT_JOB_OPTIONS = frozenset({"threads", "device", "backbone", "quiet", "defaults"})
JOB_GROUPS = ("training",)  # and each method's own group, "<methods> options"
EXTRA_OPTIONS = ("recipe", "max_train")  # outside the training group, still the method's


class _Refuse(argparse.ArgumentParser):
    """A parser that raises ValueError instead of printing and exiting."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise ValueError(message)

    def exit(self, status: int = 0, message: str | None = None) -> Any:  # type: ignore[override]
        raise ValueError(message or f"exit {status}")


@functools.cache
def _parser() -> argparse.ArgumentParser:
    from polyhead.trainer.cli import register

    root = _Refuse(prog="polyhead")
    register(root.add_subparsers(dest="verb"))
    return root


@functools.cache
def option_flags() -> dict[str, argparse.Action]:
    """Option name ("lora_r") -> its `polyhead train` flag's action."""
    train = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    sub = train.choices["train"]
    out: dict[str, argparse.Action] = {}
    for group in sub._action_groups:
        for action in group._group_actions:
            name = max(action.option_strings, key=len).lstrip("-").replace("-", "_")
            mine = group.title in JOB_GROUPS or (group.title or "").endswith(" options")
            if (mine or name in EXTRA_OPTIONS) and name not in NOT_JOB_OPTIONS:
                out[name] = action
    return out


def train_argv(options: dict[str, str]) -> list[str]:
    """`polyhead train` flags for ``options`` (ValueError naming an unknown option)."""
    flags, argv = option_flags(), []
    for name, value in sorted(options.items()):
        action = flags.get(name)
        if action is None:
            raise ValueError(f"options: unknown option {name!r}; a job takes {', '.join(sorted(flags))}")
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:  # a switch (--no-dropout)
            if value.strip().lower() not in ("true", "false", "1", "0", ""):
                raise ValueError(f"options: {name} is a switch: give true or false, not {value!r}")
            if value.strip().lower() in ("true", "1"):
                argv.append(flag)
        else:
            argv += [flag, value]
    return argv


def parse_job(method: str, options: dict[str, str], train: Path | None = None,
              dev: Path | None = None) -> tuple[argparse.Namespace, TrainConfig]:
    """The parsed flags and the run's settings, as `polyhead train --method METHOD` with
    ``options`` would have them (ValueError with the parser's message otherwise)."""
    from polyhead.trainer.cli import train_config

    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}; choose one of {', '.join(METHODS)}")
    argv = ["train", "--method", method, "--train", str(train or "train.tsv"),
            "--dev", str(dev or "dev.tsv"), *train_argv(options)]  # ValueError: as it is
    try:
        args = _parser().parse_args(argv)
        return args, train_config(args)
    except (TrainConfigError, ValueError) as e:
        raise ValueError(f"options: {e}") from e
