"""Who is calling: bearer tokens (single-owner mode) and API keys, checked from a cache.

``Auth.check(scope, metadata)`` returns the ``Caller`` (its tenant, key id and scopes) or
raises Unauthenticated (no, a wrong, a revoked or an expired key) or PermissionDenied (a
key without the scope). The configured Registry token is the default tenant's admin key,
the inference token its classify key; a scope with no token configured is open to an
anonymous caller of the default tenant (``--insecure``; Inference without an inference
token), as before tenants. API keys are looked up by their key id in a ``KeyRing`` the
replica keeps fresh from the store's change feed: no store read per request.
"""

from __future__ import annotations

import dataclasses
import datetime
import hmac
import math
import time
from collections.abc import Callable, Iterable

from polyhead.server._private.errors import PermissionDenied, Unauthenticated
from polyhead.server._private.tokens import KEY_PREFIX, bearer, refusal, same, scope_of
from polyhead.store.errors import NamespaceError
from polyhead.store.keys import ApiKey, key_hash, key_id_of
from polyhead.store.names import DEFAULT_TENANT, namespace_prefix, tenant_of

__all__ = ["Auth", "Caller", "KeyRing", "bearer"]
ALL_SCOPES = frozenset({"classify", "publish", "admin"})
OnRefused = Callable[[str, str], None]  # (tenant or "unknown", reason)
# Caller.key_id of the callers that hold no key of their own: the configured tokens, which any
# number of clients share, and anonymous callers
TOKEN, INFERENCE_TOKEN, NO_KEY = "token", "inference-token", "anonymous"


@dataclasses.dataclass(frozen=True)
class Caller:
    tenant: str
    key_id: str  # a key id; TOKEN / INFERENCE_TOKEN: a configured token; NO_KEY: anonymous
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def own_key(self) -> bool:
        """Whether the caller called with an API key (its tenant's credential), not one of
        the configured tokens or none."""
        return self.key_id not in (TOKEN, INFERENCE_TOKEN, NO_KEY)

    def sees(self, task_id: str) -> bool:
        """Whether ``task_id`` is in this caller's namespace (an admin sees every one)."""
        return self.admin or tenant_of(task_id) == self.tenant

    def may_write(self, task_id: str) -> None:
        """Raise NamespaceError unless this caller may publish ``task_id``."""
        if not self.sees(task_id):
            where = namespace_prefix(self.tenant) or "ids without a '/'"
            raise NamespaceError(f"task {task_id!r:.80}: tenant {self.tenant!r} publishes only "
                                 f"into its namespace ({where})")


OWNER = Caller(DEFAULT_TENANT, TOKEN, ALL_SCOPES)
ANONYMOUS = Caller(DEFAULT_TENANT, NO_KEY, ALL_SCOPES)


@dataclasses.dataclass(frozen=True)
class _Entry:
    key: ApiKey
    hash: str
    scopes: frozenset[str]
    expires: float  # epoch seconds; inf: never


class KeyRing:
    """The store's API keys by key id, and the tenants' terms (admission quotas, fair-share
    weights), re-read when the store's 'auth' counter moved (``load``, on the store thread;
    every tenant or key change moves it); lookups read whichever table is current."""

    def __init__(self) -> None:
        self.generation = -1  # the 'auth' counter of the table held
        self._table: dict[str, _Entry] = {}
        self.limits: dict[str, int] = {}  # tenant -> max_rows_in_flight (admission), where set
        self.weights: dict[str, float] = {}  # tenant -> fair-share weight, where not 1

    def __len__(self) -> int:
        return len(self._table)

    def load(self, catalog: object) -> bool:
        """Read the keys changed since the table held (all of them the first time), if the
        catalog's 'auth' counter moved; True if it did. Keys are never deleted from the
        store, only revoked, so reading the changed ones is enough."""
        if catalog.auth_generation() == self.generation:  # type: ignore[attr-defined]
            return False
        generation, rows = catalog.key_table(self.generation)  # type: ignore[attr-defined]
        table = dict(self._table)
        table.update((k.key_id, _Entry(k, h, frozenset(k.scopes), _epoch(k.expires_at))) for k, h in rows)
        self.limits = catalog.admission_limits()  # type: ignore[attr-defined]
        self.weights = catalog.weights()  # type: ignore[attr-defined]
        self._table, self.generation = table, generation
        return True

    def weight(self, tenant: str) -> float:
        """``tenant``'s fair-share weight (the batch queue's; 1 unless the store sets one)."""
        return self.weights.get(tenant, 1.0)

    def find(self, key: str) -> _Entry | None:
        """The entry whose hash ``key`` has, or None (unknown id or a wrong secret)."""
        key_id = key_id_of(key)
        entry = self._table.get(key_id) if key_id else None
        if entry is None or not hmac.compare_digest(entry.hash, key_hash(key)):
            return None
        return entry


def _epoch(iso: str | None) -> float:
    return math.inf if iso is None else datetime.datetime.fromisoformat(iso).timestamp()


class Auth:
    def __init__(self, registry_token: str | None, inference_token: str | None,
                 keys: KeyRing | None = None, on_refused: OnRefused | None = None) -> None:
        self._registry = registry_token
        self._inference = inference_token
        self.keys = keys if keys is not None else KeyRing()
        self._on_refused = on_refused

    def check(self, scope: str, metadata: Iterable[tuple[str, str | bytes]]) -> Caller:
        """The caller ``metadata`` names, if it may call a ``scope`` RPC (see the module)."""
        scope, md = scope_of(scope), list(metadata)
        given = bearer(md)
        if given is not None and given.startswith(KEY_PREFIX):
            return self._key_caller(scope, given)
        refused = refusal(scope, md, self._registry, self._inference)
        if refused is not None:
            code, message = refused
            reason = "missing" if given is None else ("scope" if code == "PERMISSION_DENIED" else "wrong")
            self._refuse(DEFAULT_TENANT if reason == "scope" else "unknown", reason)
            raise (PermissionDenied if code == "PERMISSION_DENIED" else Unauthenticated)(message)
        caller = self._token_caller(given)
        if scope not in caller.scopes:  # never so by refusal's rules; checked all the same
            raise PermissionDenied(f"this token cannot call {scope} RPCs")
        return caller

    def allows(self, scope: str, metadata: Iterable[tuple[str, str | bytes]]) -> bool:
        """Whether ``metadata`` carries what ``scope`` needs (never raises)."""
        try:
            self.check(scope, metadata)
        except (Unauthenticated, PermissionDenied):
            return False
        return True

    def _token_caller(self, given: str | None) -> Caller:
        if given is not None and self._registry and same(given, self._registry):
            return OWNER
        if given is not None and self._inference and same(given, self._inference):
            return Caller(DEFAULT_TENANT, INFERENCE_TOKEN, frozenset({"classify"}))
        return ANONYMOUS if self._registry is None else Caller(
            DEFAULT_TENANT, NO_KEY, frozenset({"classify"}))

    def _key_caller(self, scope: str, key: str) -> Caller:
        entry = self.keys.find(key)
        if entry is None:
            self._refuse("unknown", "wrong")
            raise Unauthenticated(f"wrong API key for {scope} RPCs")
        k = entry.key
        if k.revoked_at is not None:
            self._refuse(k.tenant, "revoked")
            raise Unauthenticated(f"API key {k.key_id} was revoked")
        if entry.expires <= time.time():
            self._refuse(k.tenant, "expired")
            raise Unauthenticated(f"API key {k.key_id} expired at {k.expires_at}")
        if scope not in entry.scopes and "admin" not in entry.scopes:
            self._refuse(k.tenant, "scope")
            raise PermissionDenied(f"API key {k.key_id} lacks the {scope!r} scope "
                                   f"(it has {', '.join(k.scopes)})")
        return Caller(k.tenant, k.key_id, entry.scopes | (ALL_SCOPES if "admin" in entry.scopes else set()))

    def _refuse(self, tenant: str, reason: str) -> None:
        if self._on_refused is not None:
            self._on_refused(tenant, reason)
