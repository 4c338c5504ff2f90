"""Task ids, alias names and version references: plain regexes, no I/O."""

from __future__ import annotations

import re

TASK_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
ALIAS_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
LATEST = "latest"
VERSION_RE = re.compile(r"[0-9a-f]{64}")
MIN_PREFIX = 8
_HEXLIKE = re.compile(r"[0-9a-f]{8,}")
# v3, or a bare 3 (up to 7 digits: 8 or more read as a hash prefix; aliases start with a letter)
_NUMBER_REF = re.compile(r"v([1-9][0-9]{0,8})|([1-9][0-9]{0,6})")
# Anything a version reference can be (an alias, "latest", "v3", a hex version or prefix):
# a string outside this is refused before any lookup, and never cached.
REF_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ECHO_CHARS = 80  # the most of a client's string an error message repeats


def clip(text: object, n: int = ECHO_CHARS) -> str:
    """``repr(text)`` cut to about ``n`` characters, saying how long it was: error messages
    echo what a client sent without echoing a megabyte of it."""
    r = repr(text)
    if len(r) <= n:
        return r
    size = f"{len(text)} characters" if isinstance(text, str) else f"{len(r)} characters as text"
    return f"{r[:n]}... ({size})"


def is_task_id(task_id: object) -> bool:
    """True for ids such as ``sst2`` or ``nli.v2``; never a path (no '/', no leading '.')."""
    return isinstance(task_id, str) and TASK_ID_RE.fullmatch(task_id) is not None


def is_ref(ref: object) -> bool:
    """True for a string that could name a version (see REF_RE); says nothing of existence."""
    return isinstance(ref, str) and REF_RE.fullmatch(ref) is not None


def alias_problem(alias: object) -> str | None:
    """Why ``alias`` cannot name an alias, or None when it can."""
    if not isinstance(alias, str) or ALIAS_RE.fullmatch(alias) is None:
        return f"alias {clip(alias)} must match {ALIAS_RE.pattern}"
    if _HEXLIKE.fullmatch(alias) or _NUMBER_REF.fullmatch(alias):
        return f"alias {clip(alias)} would read as a version reference"
    return None


def check_alias(alias: str) -> str:
    """``alias`` when it can name an alias; else InvalidAliasError, its message short
    whatever the alias (``alias_problem`` clips it)."""
    problem = alias_problem(alias)
    if problem:
        from polyhead.store.errors import InvalidAliasError

        raise InvalidAliasError(f"alias: {problem}")
    return alias


def version_number_ref(ref: str) -> int | None:
    """``v3`` or ``3`` -> 3 (a version by its 1-based number), else None."""
    m = _NUMBER_REF.fullmatch(ref)
    return int(m.group(1) or m.group(2)) if m else None


def hex_prefix(ref: str) -> str | None:
    """A lower-case hex prefix of at least MIN_PREFIX characters, else None."""
    low = ref.lower()
    if len(low) >= MIN_PREFIX and len(low) <= 64 and all(c in "0123456789abcdef" for c in low):
        return low
    return None
