"""What every RPC passes through, written once: who calls and with which scope, whether the
task it names is in the caller's namespace, a request that did not parse, the one mapping
of errors to status codes, the request metrics and the audit trail.

``@rpc("classify", pb.ClassifyResponse)`` on a replica method ``Name(self, request)``
gives Serve the ``Name(request, grpc_context)`` it calls; ``@rpc_stream`` does the same for
a bidirectional stream (``request`` is then an async iterator of messages, each checked
here as it arrives, the caller's key too: a key revoked or expired while its stream is open
refuses the next message). A method with a ``caller`` parameter gets the ``Caller``.

Isolation: a request naming another tenant's task (its ``task_id``) is answered NOT_FOUND
with the very message an unknown task gets, so a task's existence does not leak; Upload,
whose task id is inside the artifact, is checked by the store (``Caller.may_write``).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from functools import partial
from typing import Any, Protocol

import grpc

from polyhead.server._private.auth import Auth, Caller
from polyhead.server._private.decoders import MalformedRequest, materialize
from polyhead.server._private.errors import (
    InvalidInput,
    PermissionDenied,
    RequestError,
    TooLarge,
    Unauthenticated,
    status_for,
)
from polyhead.server._private.metrics import ServerMetrics
from polyhead.server._private.streams import Inbox, StreamLimits, settle, stream_owner
from polyhead.store.errors import NotFoundError
from polyhead.store.names import is_task_id

logger = logging.getLogger("ray.serve")


class Gated(Protocol):
    auth: Auth
    metrics: ServerMetrics
    streams: StreamLimits

    async def audit(self, caller: Caller, rpc: str, task_id: str, version: str, outcome: str) -> None:
        """Record a change (an ``audit=True`` RPC) in the store's audit trail."""


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


class Refused:
    """A stream message refused by the gate; the service raises ``error`` for it (naming
    the message's index), as it does for one that did not parse."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def message_of(request: Any) -> Any:
    """The parsed request (call after the token check); raises for one refused unparsed."""
    if isinstance(request, Refused):
        raise request.error
    request = materialize(request)
    if isinstance(request, MalformedRequest):
        raise refusal(request)
    return request


def check_namespace(caller: Caller, request: Any) -> None:
    """NOT_FOUND, as for an unknown task (sql.require_task's words), when the request names
    a task outside the caller's namespace."""
    task_id = getattr(request, "task_id", None)
    if isinstance(task_id, str) and is_task_id(task_id) and not caller.sees(task_id):
        raise NotFoundError(f"no task {task_id!r:.80}")


async def checked(requests: AsyncIterator[Any], caller: Caller,
                  recheck: Callable[[], object]) -> AsyncIterator[Any]:
    """A stream's messages, each parsed and checked as it arrives: ``recheck`` (the stream's
    credentials against the key cache, which the replica keeps fresh: a key revoked or
    expired since the stream opened refuses the message, and no further one is read), then
    the caller's namespace."""
    async for raw in requests:
        try:
            recheck()
        except (Unauthenticated, PermissionDenied) as e:
            yield Refused(e)
            return
        request = materialize(raw)
        if not isinstance(request, MalformedRequest):
            try:
                check_namespace(caller, request)
            except NotFoundError as e:
                request = Refused(e)
        yield request


def target_of(message: Any) -> str:
    """What a request or answer is about, for metrics and the audit trail: its task id, or
    "key:ID" / "tenant:NAME" for the Admin service's messages."""
    task = getattr(message, "task_id", "")
    if task:
        return str(task)
    info = getattr(message, "info", None)
    key_id = getattr(message, "key_id", "") or getattr(info, "key_id", "")
    if key_id:
        return f"key:{key_id}"
    tenant = getattr(message, "tenant", "")
    return f"tenant:{tenant}" if tenant else ""


def _takes_caller(fn: Any) -> bool:
    return "caller" in inspect.signature(fn).parameters


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


def rpc(scope: str, empty: type, admin_view: bool = False,
        audit: bool = False) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    """``admin_view``: ``fn(self, request, admin)``, ``admin`` whether the caller holds the
    admin scope, for answers that show more to it. ``audit``: a change, recorded (caller,
    task, version, outcome) in the store's audit trail once authenticated."""
    def wrap(fn: Callable[..., Awaitable[Any]]) -> Any:
        name, with_caller = fn.__name__, _takes_caller(fn)

        async def method(self: Gated, request: Any, grpc_context: Any = None) -> Any:
            t0, code, target, version = time.perf_counter(), "OK", "", ""
            caller: Caller | None = None
            try:
                caller = self.auth.check(scope, metadata_of(grpc_context))
                request = message_of(request)
                target = target_of(request)[:200]
                check_namespace(caller, request)
                if admin_view:
                    out = await fn(self, request, caller.admin)
                else:
                    out = await (fn(self, request, caller=caller) if with_caller else fn(self, request))
                version = getattr(out, "version", "")
                target = target_of(out)[:200] or target
                return out
            except Exception as e:
                code = _fail(name, grpc_context, e)
                return empty()
            finally:
                tenant = caller.tenant if caller is not None else "unknown"
                self.metrics.request(name, tenant, code, (time.perf_counter() - t0) * 1000)
                if audit and caller is not None:
                    await self.audit(caller, name, target, version, code)

        return _named(method, fn)

    return wrap


def rpc_stream(scope: str) -> Callable[[Callable[..., AsyncIterator[Any]]], Any]:
    def wrap(fn: Callable[..., AsyncIterator[Any]]) -> Any:
        name, with_caller = fn.__name__, _takes_caller(fn)

        async def method(self: Gated, requests: Any, grpc_context: Any = None) -> Any:
            t0, code = time.perf_counter(), "OK"
            caller: Caller | None = None
            inbox = Inbox(requests)  # read by the service, then by settle
            try:
                md = list(metadata_of(grpc_context))
                caller = self.auth.check(scope, md)
                with self.streams.holding(stream_owner(caller, grpc_context)):
                    messages = checked(self.streams.messages(inbox), caller,
                                       partial(self.auth.check, scope, md))
                    outs = fn(self, messages, caller=caller) if with_caller else fn(self, messages)
                    async for out in outs:
                        yield out
            except Exception as e:
                code = _fail(name, grpc_context, e)
                await settle(inbox, e)
                # A stream's status reaches the client only with an exception (Serve then
                # sends the code set on the context); returning would end it OK.
                raise StreamAborted(grpc_context.details()) from None
            finally:
                inbox.close()
                tenant = caller.tenant if caller is not None else "unknown"
                self.metrics.request(name, tenant, code, (time.perf_counter() - t0) * 1000)

        return _named(method, fn)

    return wrap


def rpc_upload(scope: str, empty: type) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    """A client stream in, one message out (UploadDataset): ``fn(self, messages)``, the
    messages unparsed (``message_of`` each), under the stream limits."""
    def wrap(fn: Callable[..., Awaitable[Any]]) -> Any:
        name, with_caller = fn.__name__, _takes_caller(fn)

        async def method(self: Gated, requests: Any, grpc_context: Any = None) -> Any:
            t0, code, tenant = time.perf_counter(), "OK", "unknown"
            try:
                caller = self.auth.check(scope, metadata_of(grpc_context))
                tenant = caller.tenant
                with self.streams.holding(stream_owner(caller, grpc_context)):
                    messages = self.streams.messages(requests)
                    if with_caller:
                        return await fn(self, messages, caller=caller)
                    return await fn(self, messages)
            except Exception as e:
                code = _fail(name, grpc_context, e)
                await settle(requests, e)
                return empty()
            finally:
                self.metrics.request(name, tenant, code, (time.perf_counter() - t0) * 1000)

        return _named(method, fn)

    return wrap


def rpc_watch(scope: str) -> Callable[[Callable[..., AsyncIterator[Any]]], Any]:
    """One message in, a stream out (WatchJob): ``fn(self, request)`` yields the messages."""
    def wrap(fn: Callable[..., AsyncIterator[Any]]) -> Any:
        name, with_caller = fn.__name__, _takes_caller(fn)

        async def method(self: Gated, request: Any, grpc_context: Any = None) -> Any:
            t0, code, tenant = time.perf_counter(), "OK", "unknown"
            try:
                caller = self.auth.check(scope, metadata_of(grpc_context))
                tenant = caller.tenant
                request = message_of(request)
                check_namespace(caller, request)
                outs = fn(self, request, caller=caller) if with_caller else fn(self, request)
                async for out in outs:
                    yield out
            except Exception as e:
                code = _fail(name, grpc_context, e)
                raise StreamAborted(grpc_context.details()) from None
            finally:
                self.metrics.request(name, tenant, code, (time.perf_counter() - t0) * 1000)

        return _named(method, fn)

    return wrap
