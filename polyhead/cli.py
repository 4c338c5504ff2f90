"""polyhead: serve many text-classification tasks on one frozen encoder, train them, and
manage them (`polyhead VERB --help` for each verb)."""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import sys
from collections.abc import Sequence

# verb -> module defining `register(subparsers)`; each verb sets `func(args) -> int`.
# Only the module of the verb being run is imported, so `polyhead store list` never
# pays for torch and transformers.
VERBS = {
    "store": "polyhead.store.cli",
    "train": "polyhead.trainer.cli",
    "classify": "polyhead.client_cli",
    "upload": "polyhead.client_cli",
    "tasks": "polyhead.client_cli",
    "health": "polyhead.client_cli",
    "serve": "polyhead.server.serve_cli",
    "jobs": "polyhead.jobs_cli",
    "tenants": "polyhead.tenants_cli",
    "keys": "polyhead.tenants_cli",
    "audit": "polyhead.tenants_cli",
}
# The extra a verb needs beyond the client's grpcio and protobuf (pyproject.toml), and the
# packages without which it cannot start (checked after parsing, so --help still works).
# `store` has none up front: its catalog commands (list, show, ...) need no torch.
EXTRAS = {"store": "server", "train": "train", "serve": "server"}
NEEDS = {"serve": ("torch", "transformers", "safetensors", "ray"),
         "train": ("torch", "transformers", "safetensors", "peft", "numpy", "scipy", "sklearn")}


class MissingExtra(Exception):
    """A verb needs a package that this install lacks (a client-only one)."""

    def __init__(self, verb: str, module: str) -> None:
        extra = EXTRAS[verb]
        super().__init__(f"polyhead {verb}: needs the {extra!r} extra (no module {module!r} here): "
                         f"pip install 'polyhead[{extra}]'")


def check_extra(verb: str) -> None:
    """MissingExtra naming the first package ``verb`` needs that is not installed."""
    for module in NEEDS.get(verb, ()):
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(verb, module)


class Parser(argparse.ArgumentParser):
    """argparse, where a verb names its own unknown flags: `polyhead classify --verison v1`
    gets classify's usage and "did you mean --version?", and `--tsk` is named as unknown
    before "required: --task" (argparse reports both at the top level or not at all)."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        if self._subparsers is None and args is not None:  # a verb's own parser
            self._check_flags(list(args))
        return super().parse_known_args(args, namespace)

    def _check_flags(self, args: list[str]) -> None:
        known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        for arg in args:
            if arg == "--":
                return
            name = arg.split("=", 1)[0]
            if name.startswith("--") and not any(o.startswith(name) for o in known):
                close = difflib.get_close_matches(name, known, n=1)
                self.error(f"unrecognized argument: {name}"
                           + (f" (did you mean {close[0]}?)" if close else ""))


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser for one verb (fast), or for all of them when ``verb`` is None."""
    parser = Parser(prog="polyhead", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    modules = [VERBS[verb]] if verb in VERBS else list(dict.fromkeys(VERBS.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = argv[0] if argv else None
    args = build_parser(verb).parse_args(argv)
    try:
        check_extra(args.verb)
        return int(args.func(args) or 0)
    except MissingExtra as e:
        print(e, file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:  # one that a verb imports only when it needs it
        if args.verb not in EXTRAS or not e.name or e.name.split(".")[0] == "polyhead":
            raise
        print(MissingExtra(args.verb, e.name), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
