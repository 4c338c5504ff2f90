"""Bearer-token checks written once, for the replica's gate (polyhead.server._private.auth) and for
Serve's gRPC proxy, which refuses a call by its metadata before it reads the message
(polyhead.server._private.decoders). No imports beyond the standard library: the proxy loads it.

The configured tokens (single-owner mode) are checked here; an API key (``phk_...``) is
passed on, for the replica checks it against its key cache (the proxy holds none)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

Metadata = Iterable[tuple[str, str | bytes]]


KEY_PREFIX = "phk_"  # polyhead.store.keys.KEY_PREFIX (not imported: the proxy loads only this)
# An RPC's scope: "classify" (Inference), "publish" (Registry), "admin" (Admin). The older
# names still work. The Registry token is the default tenant's admin key; the inference
# token its classify key.
SCOPE_NAMES = {"inference": "classify", "registry": "publish"}
INFERENCE_SCOPES = frozenset({"classify"})


def scope_of(scope: str) -> str:
    return SCOPE_NAMES.get(scope, scope)


def refusal(scope: str, metadata: Metadata, registry: str | None,
            inference: str | None) -> tuple[str, str] | None:
    """(status code name, message) when ``metadata`` may not call a ``scope`` RPC by the
    configured tokens, else None (also for an API key: the replica decides). The Registry
    token also opens Inference. Tokens are compared in constant time and never echoed."""
    scope = scope_of(scope)
    want = inference if scope in INFERENCE_SCOPES else registry
    if want is None:
        return None
    given = bearer(metadata)
    if given is None:
        return "UNAUTHENTICATED", f"{scope} RPCs need `authorization: Bearer <token>` metadata"
    if given.startswith(KEY_PREFIX):
        return None
    if scope in INFERENCE_SCOPES and registry and same(given, registry):
        return None
    if same(given, want):
        return None
    if scope not in INFERENCE_SCOPES and inference and same(given, inference):
        return "PERMISSION_DENIED", f"the inference token cannot call {scope} RPCs"
    return "UNAUTHENTICATED", f"wrong token for {scope} RPCs"


def bearer(metadata: Metadata) -> str | None:
    for key, value in metadata:
        if key.lower() == "authorization":
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
