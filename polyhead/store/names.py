"""Task ids, alias names and version references: plain regexes, no I/O."""

from __future__ import annotations

import re

# A task id is NAME, or TENANT/NAME: the tenant that owns it, then its name in that
# tenant's namespace. An id without a '/' belongs to the default tenant (so every id of a
# store made before tenants keeps its meaning); "default/x" is refused: it is written "x".
TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
TASK_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
TASK_ID_RE = re.compile(rf"(?:(?!default/){TENANT_RE.pattern}/)?{TASK_NAME_RE.pattern}")
DEFAULT_TENANT = "default"
TASK_ID_RULE = (f"must be NAME or TENANT/NAME (NAME matches {TASK_NAME_RE.pattern}, TENANT "
                f"{TENANT_RE.pattern}; the {DEFAULT_TENANT!r} tenant's ids have no TENANT/)")
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
    """True for ids such as ``sst2``, ``nli.v2`` or ``acme/sst2``; never a path (at most one
    '/', after a tenant name; no leading '.', no '..' segment)."""
    return isinstance(task_id, str) and TASK_ID_RE.fullmatch(task_id) is not None


def is_tenant(name: object) -> bool:
    return isinstance(name, str) and TENANT_RE.fullmatch(name) is not None


def tenant_of(task_id: str) -> str:
    """The tenant owning ``task_id``: its prefix before '/', else the default tenant."""
    head, sep, _ = task_id.partition("/")
    return head if sep else DEFAULT_TENANT


def namespace_prefix(tenant: str) -> str:
    """What the ids of ``tenant``'s tasks start with ("" for the default tenant, whose ids
    are told apart by having no '/')."""
    return "" if tenant == DEFAULT_TENANT else f"{tenant}/"


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
