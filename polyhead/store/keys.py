"""API keys: how they are made, shown, hashed and read back. Standard library only (Serve's
gRPC proxy imports ``KEY_PREFIX`` through polyhead.server._private.tokens).

A key is ``phk_<key id>_<secret>``: the key id (12 hex digits) is its visible name, in
listings, audit records and metrics; the secret is 32 random bytes (``secrets``). The
catalog keeps the key id and the sha256 of the whole key, never the key: a key has 256
random bits, so a plain hash cannot be reversed by guessing (no salt or slow hash is
needed, unlike passwords). A key is shown once, when it is made.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re
import secrets

KEY_PREFIX = "phk_"
KEY_ID_RE = re.compile(r"[0-9a-f]{12}")
_KEY_RE = re.compile(r"phk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
# classify: Inference on the tenant's tasks; publish: the Registry within its namespace;
# admin: tenants, keys and every namespace (and so everything publish and classify do).
SCOPES = ("classify", "publish", "admin")
_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """A key's public record (what listings show; the secret is never kept)."""

    key_id: str
    tenant: str
    scopes: tuple[str, ...]
    created_at: str  # ISO-8601 UTC
    expires_at: str | None  # None: never
    revoked_at: str | None  # None: not revoked

    def state(self, now: str | None = None) -> str:
        """"active", "revoked" or "expired" (at ``now``, ISO-8601 UTC; default: now)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or now_iso()):
            return "expired"
        return "active"


def new_key() -> tuple[str, str]:
    """(key id, the whole key to hand out once)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(text: str) -> str | None:
    """The key id of something shaped like a key, else None (never raises, never echoes)."""
    m = _KEY_RE.fullmatch(text)
    return m.group(1) if m else None


def key_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parse_scopes(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"classify,publish"`` -> the scopes in SCOPES order; ValueError naming a bad one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    wanted = {s.strip() for s in items if s.strip()}
    unknown = sorted(wanted - set(SCOPES))
    if unknown or not wanted:
        raise ValueError(f"scopes {sorted(wanted) or 'none'}: each must be one of {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in wanted)


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"30d"``, ``"2w"`` -> seconds; ValueError otherwise."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"duration {text[:40]!r}: a number and a unit (s, m, h, d, w), e.g. 30d")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def now_iso(offset_s: float = 0.0) -> str:
    """Now (plus ``offset_s``) as ISO-8601 UTC with microseconds: compares as a string."""
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset_s)
    return when.isoformat(timespec="microseconds")


def parse_time(text: str) -> str:
    """A time a user gave (ISO-8601, or a duration meaning that long ago: ``1h``) as
    ISO-8601 UTC with microseconds; ValueError otherwise."""
    try:
        return now_iso(-parse_duration(text))
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise ValueError(f"time {text[:40]!r}: ISO-8601 (2026-12-01T08:00) or a duration "
                         "ago (90m, 2d)") from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.astimezone(datetime.UTC).isoformat(timespec="microseconds")
