"""`polyhead` command line: one entry point; each part registers its own verbs."""

from __future__ import annotations

import argparse
import importlib
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
    "tenants": "polyhead.tenants_cli",
    "keys": "polyhead.tenants_cli",
    "audit": "polyhead.tenants_cli",
}


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
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
