"""Request errors, and the one place where every error becomes a gRPC status code."""

from __future__ import annotations

import grpc

from polyhead.engine.errors import ArtifactError, ConfigError

# Artifact checks that reject a well-formed artifact because it does not fit this server
# (another backbone, a newer format): FAILED_PRECONDITION. Every other check: INVALID_ARGUMENT.
PRECONDITION_CHECKS = frozenset({"fingerprint", "peft_base_model", "schema_version"})


class RequestError(Exception):
    """A request the server refuses; ``code`` is its gRPC status."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidInput(RequestError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class TooLarge(RequestError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(RequestError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(RequestError):
    code = grpc.StatusCode.PERMISSION_DENIED


class InStream(Exception):
    """An error in message ``index`` of a stream: the error's own status, the index named."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index, error)
        self.index, self.error = index, error


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """(code, details) for an exception raised while serving a request.

    INTERNAL is left for faults of the server itself, never for anything a client sent.
    """
    from polyhead.store import AmbiguousRefError, NotFoundError, StoreError, StoreUnavailable
    from polyhead.store.errors import InvalidAliasError, NamespaceError, QuotaExceeded

    if isinstance(exc, InStream):
        code, details = status_for(exc.error)
        return code, f"message {exc.index}: {details}"
    if isinstance(exc, RequestError):
        return exc.code, str(exc)
    if isinstance(exc, NotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, ArtifactError):
        code = (grpc.StatusCode.FAILED_PRECONDITION if exc.check in PRECONDITION_CHECKS
                else grpc.StatusCode.INVALID_ARGUMENT)
        return code, f"artifact check {exc.check!r} failed: {exc.message}"
    if isinstance(exc, ConfigError):  # a kind or head config a client sent
        return grpc.StatusCode.INVALID_ARGUMENT, f"artifact check 'config' failed: {exc}"
    if isinstance(exc, AmbiguousRefError | InvalidAliasError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, QuotaExceeded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, NamespaceError):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, StoreUnavailable):  # the store's database is down: clients retry
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, StoreError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log"
