"""How the command line counts things: "1 version", "2 versions" (never "1 versions")."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1 (``plural``, else ``noun`` + "s")."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
