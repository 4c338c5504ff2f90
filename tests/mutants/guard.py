"""A pytest plugin for the mutation check: the run must import the copy's modules.

``python -m tests.mutants`` runs pytest inside a mutated copy of the tree with
``-p tests.mutants.guard`` and ``POLYHEAD_MUTANT_TREE`` set to the copy. Were a package
imported from elsewhere (the editable install's checkout, say), the mutant would be tested
against unmutated code and could never be killed; the guard stops such a run with exit
code 99, which the check reports as an error.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

PACKAGES = ("polyhead", "polyhead.engine", "polyhead.server", "polyhead.store", "polyhead.trainer",
            "bench", "tests")


def pytest_sessionstart(session: pytest.Session) -> None:
    tree = os.environ.get("POLYHEAD_MUTANT_TREE")
    if not tree:
        return
    root = Path(tree).resolve()
    outside = []
    for name in PACKAGES:
        origin = Path(importlib.import_module(name).__file__ or "").resolve()
        if not origin.is_relative_to(root):
            outside.append(f"{name} from {origin}")
    if outside:
        pytest.exit(f"mutation guard: imported outside the copy {root}: {', '.join(outside)}",
                    returncode=99)
