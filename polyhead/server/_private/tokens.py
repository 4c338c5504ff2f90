"""Bearer-token checks written once, for the replica's gate (polyhead.server._private.auth) and for
Serve's gRPC proxy, which refuses a call by its metadata before it reads the message
(polyhead.server._private.decoders). No imports beyond the standard library: the proxy loads it."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

Metadata = Iterable[tuple[str, str | bytes]]


def refusal(scope: str, metadata: Metadata, registry: str | None,
            inference: str | None) -> tuple[str, str] | None:
    """(status code name, message) when ``metadata`` may not call a ``scope`` ("registry" or
    "inference") RPC, else None. The Registry token also opens Inference. Tokens are
    compared in constant time and never echoed back."""
    want = registry if scope == "registry" else inference
    if want is None:
        return None
    given = bearer(metadata)
    if given is None:
        return "UNAUTHENTICATED", f"{scope} RPCs need `authorization: Bearer <token>` metadata"
    if scope == "inference" and registry and same(given, registry):
        return None
    if same(given, want):
        return None
    if scope == "registry" and inference and same(given, inference):
        return "PERMISSION_DENIED", "the inference token cannot call Registry RPCs"
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
