"""Bearer tokens: Registry RPCs always need one; Inference RPCs only when configured."""

from __future__ import annotations

from collections.abc import Iterable

from polyhead.server._private.errors import PermissionDenied, Unauthenticated
from polyhead.server._private.tokens import bearer, refusal

__all__ = ["Auth", "bearer"]


class Auth:
    def __init__(self, registry_token: str | None, inference_token: str | None) -> None:
        self._registry = registry_token
        self._inference = inference_token

    def check(self, scope: str, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        """Raise unless ``metadata`` carries the token ``scope`` ("registry"/"inference") needs
        (see tokens.refusal)."""
        refused = refusal(scope, metadata, self._registry, self._inference)
        if refused is None:
            return
        code, message = refused
        raise (PermissionDenied if code == "PERMISSION_DENIED" else Unauthenticated)(message)

    def allows(self, scope: str, metadata: Iterable[tuple[str, str | bytes]]) -> bool:
        """Whether ``metadata`` carries what ``scope`` needs (never raises)."""
        return refusal(scope, metadata, self._registry, self._inference) is None
