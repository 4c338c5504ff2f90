"""`polyhead` command line: one entry point; each part registers its own verbs."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

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
}
# The extra a verb's module needs beyond the client's grpcio and protobuf (pyproject.toml).
EXTRAS = {"store": "server", "train": "train", "serve": "server"}


class MissingExtra(Exception):
    """A verb's module imports a package that this install lacks (a client-only one)."""

    def __init__(self, verb: str, module: str) -> None:
        extra = EXTRAS.get(verb, "server")
        super().__init__(f"polyhead {verb}: needs the {extra!r} extra (no module {module!r} here): "
                         f"pip install 'polyhead[{extra}]'")
        self.verb, self.extra = verb, extra


def load(verb: str) -> Any:
    """The module registering ``verb``; MissingExtra when a package it imports is not
    installed (never for a module of polyhead itself: that is a bug, raised as is)."""
    try:
        return importlib.import_module(VERBS[verb])
    except ModuleNotFoundError as e:
        if not e.name or e.name.split(".")[0] == "polyhead":
            raise
        raise MissingExtra(verb, e.name) from e


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser for one verb (fast), or for all of them when ``verb`` is None."""
    parser = argparse.ArgumentParser(prog="polyhead", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    if verb in VERBS:
        load(verb).register(sub)
        return parser
    for verbs in _by_module().values():
        try:
            load(verbs[0]).register(sub)
        except MissingExtra as e:  # listed in --help, with what it needs
            for v in verbs:
                sub.add_parser(v, help=f"(not installed: pip install 'polyhead[{e.extra}]')")
    return parser


def _by_module() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for verb, module in VERBS.items():
        out.setdefault(module, []).append(verb)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = argv[0] if argv else None
    try:
        parser = build_parser(verb)
    except MissingExtra as e:
        print(e, file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
