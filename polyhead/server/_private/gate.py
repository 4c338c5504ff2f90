"""What every RPC passes through, written once: the auth scope, a request that did not parse,
the one mapping of errors to status codes, and the request metrics.

``@rpc("inference", pb.ClassifyResponse)`` on a replica method ``Name(self, request)``
gives Serve the ``Name(request, grpc_context)`` it calls; ``@rpc_stream`` does the same for
a bidirectional stream (``request`` is then an async iterator of messages).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Protocol

import grpc

from polyhead.server._private.auth import Auth
from polyhead.server._private.decoders import MalformedRequest, materialize
from polyhead.server._private.errors import InvalidInput, RequestError, TooLarge, status_for
from polyhead.server._private.metrics import ServerMetrics
from polyhead.server._private.streams import StreamLimits, client_of

logger = logging.getLogger("ray.serve")


class Gated(Protocol):
    auth: Auth
    metrics: ServerMetrics
    streams: StreamLimits


def metadata_of(ctx: Any) -> Iterable[tuple[str, str | bytes]]:
    return ctx.invocation_metadata() if ctx is not None else ()


def _fail(method: str, ctx: Any, e: Exception) -> str:
    """Set the status for ``e`` on the call (or re-raise without a gRPC context)."""
    status, details = status_for(e)
    if status is grpc.StatusCode.INTERNAL:
        logger.exception("%s failed", method)
    if ctx is None:
        raise e
    ctx.set_code(status)
    ctx.set_details(details)
    return status.name


def message_of(request: Any) -> Any:
    """The parsed request (call after the token check); raises for one refused unparsed."""
    request = materialize(request)
    if isinstance(request, MalformedRequest):
        raise refusal(request)
    return request


def refusal(request: MalformedRequest) -> RequestError:
    if request.code == "RESOURCE_EXHAUSTED":
        return TooLarge(request.message)
    return InvalidInput(request.message)


class StreamAborted(Exception):
    """Ends a stream whose status is already set on its context."""


def _named(method: Any, fn: Any) -> Any:
    """``method`` under ``fn``'s name, keeping its own signature: Serve passes
    ``grpc_context`` only to a method whose signature names it (so no functools.wraps)."""
    method.__name__, method.__qualname__, method.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    return method


def rpc(scope: str, empty: type, admin_view: bool = False) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    """``admin_view``: ``fn(self, request, admin)``, ``admin`` whether the caller holds the
    Registry (admin) token, for answers that show more to it."""
    def wrap(fn: Callable[..., Awaitable[Any]]) -> Any:
        name = fn.__name__

        async def method(self: Gated, request: Any, grpc_context: Any = None) -> Any:
            t0, code, task = time.perf_counter(), "OK", ""
            try:
                md = list(metadata_of(grpc_context))
                self.auth.check(scope, md)
                request = message_of(request)
                out = await (fn(self, request, self.auth.allows("registry", md)) if admin_view
                             else fn(self, request))
                task = getattr(out, "task_id", "")
                return out
            except Exception as e:
                code = _fail(name, grpc_context, e)
                return empty()
            finally:
                self.metrics.request(name, task, code, (time.perf_counter() - t0) * 1000)

        return _named(method, fn)

    return wrap


def rpc_stream(scope: str) -> Callable[[Callable[[Any, Any], AsyncIterator[Any]]], Any]:
    def wrap(fn: Callable[[Any, Any], AsyncIterator[Any]]) -> Any:
        name = fn.__name__

        async def method(self: Gated, requests: Any, grpc_context: Any = None) -> Any:
            t0, code = time.perf_counter(), "OK"
            try:
                self.auth.check(scope, metadata_of(grpc_context))
                with self.streams.holding(client_of(grpc_context)):
                    async for out in fn(self, self.streams.messages(requests)):
                        yield out
            except Exception as e:
                code = _fail(name, grpc_context, e)
                # A stream's status reaches the client only with an exception (Serve then
                # sends the code set on the context); returning would end it OK.
                raise StreamAborted(grpc_context.details()) from None
            finally:
                self.metrics.request(name, "", code, (time.perf_counter() - t0) * 1000)

        return _named(method, fn)

    return wrap


def rpc_upload(scope: str, empty: type) -> Callable[[Callable[[Any, Any], Awaitable[Any]]], Any]:
    """A client stream in, one message out (UploadDataset): ``fn(self, messages)``, the
    messages unparsed (``message_of`` each), under the stream limits."""
    def wrap(fn: Callable[[Any, Any], Awaitable[Any]]) -> Any:
        name = fn.__name__

        async def method(self: Gated, requests: Any, grpc_context: Any = None) -> Any:
            t0, code = time.perf_counter(), "OK"
            try:
                self.auth.check(scope, metadata_of(grpc_context))
                with self.streams.holding(client_of(grpc_context)):
                    return await fn(self, self.streams.messages(requests))
            except Exception as e:
                code = _fail(name, grpc_context, e)
                return empty()
            finally:
                self.metrics.request(name, "", code, (time.perf_counter() - t0) * 1000)

        return _named(method, fn)

    return wrap


def rpc_watch(scope: str) -> Callable[[Callable[[Any, Any], AsyncIterator[Any]]], Any]:
    """One message in, a stream out (WatchJob): ``fn(self, request)`` yields the messages."""
    def wrap(fn: Callable[[Any, Any], AsyncIterator[Any]]) -> Any:
        name = fn.__name__

        async def method(self: Gated, request: Any, grpc_context: Any = None) -> Any:
            t0, code = time.perf_counter(), "OK"
            try:
                self.auth.check(scope, metadata_of(grpc_context))
                async for out in fn(self, message_of(request)):
                    yield out
            except Exception as e:
                code = _fail(name, grpc_context, e)
                raise StreamAborted(grpc_context.details()) from None
            finally:
                self.metrics.request(name, "", code, (time.perf_counter() - t0) * 1000)

        return _named(method, fn)

    return wrap
