"""Bearer tokens: Registry RPCs always need one; Inference RPCs only when configured."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from server._private.errors import PermissionDenied, Unauthenticated


class Auth:
    def __init__(self, registry_token: str | None, inference_token: str | None) -> None:
        self._registry = registry_token
        self._inference = inference_token

    def check(self, scope: str, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        """Raise unless ``metadata`` carries the token ``scope`` ("registry"/"inference") needs.

        The Registry token also opens Inference. Tokens are compared in constant time and
        never echoed back.
        """
        want = self._registry if scope == "registry" else self._inference
        if want is None:
            return
        given = bearer(metadata)
        if given is None:
            raise Unauthenticated(f"{scope} RPCs need `authorization: Bearer <token>` metadata")
        if scope == "inference" and self._registry and _same(given, self._registry):
            return
        if not _same(given, want):
            if scope == "registry" and self._inference and _same(given, self._inference):
                raise PermissionDenied("the inference token cannot call Registry RPCs")
            raise Unauthenticated(f"wrong token for {scope} RPCs")


    def allows(self, scope: str, metadata: Iterable[tuple[str, str | bytes]]) -> bool:
        """Whether ``metadata`` carries what ``scope`` needs (never raises)."""
        try:
            self.check(scope, metadata)
        except (Unauthenticated, PermissionDenied):
            return False
        return True


def bearer(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key.lower() == "authorization":
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
