"""Planted bugs the suite must catch (the mutation check, `python -m tests.mutants`).

Each module ``tests/mutants/m_<area>.py`` defines ``MUTANTS: list[Mutant]``. A mutant is a
textual edit of one file: ``old`` must occur exactly once in ``file`` (the check fails,
naming the mutant, when it does not, so a refactor cannot silently retire a mutant), and
``tests`` are the pytest node ids that must fail once the edit is applied to a copy of the
tree. Every bug fixed adds its mutant here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    id: str  # short slug, unique across all modules
    file: str  # path relative to the repository root
    old: str  # exact text, found exactly once in file
    new: str  # what replaces it
    tests: tuple[str, ...]  # pytest node ids (or files) that must fail with the edit applied
    why: str = ""  # the real bug this stands for
