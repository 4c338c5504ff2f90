"""`polyhead` command line: one entry point; each part registers its own verbs."""

from __future__ import annotations

import argparse
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


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser for one verb (fast), or for all of them when ``verb`` is None."""
    parser = argparse.ArgumentParser(prog="polyhead", description=__doc__)
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
