"""Bounds on ClassifyStream calls: an idle timeout between a client's messages, and a cap on
the streams one client holds open at once (a client: its address, and its API key when it
calls with one; see ``stream_owner``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from polyhead.server._private.errors import RequestError

if TYPE_CHECKING:
    from polyhead.server._private.auth import Caller

UNKNOWN_CLIENT = "unknown"
# A stream refused before its end (a bad key, too many streams, a bad message) reads what
# the client already sent, up to these bounds, before its status goes out: see settle().
SETTLE_MESSAGES = 16
SETTLE_S = 3.0  # 1 s let the race through once on a loaded 2-core host (a CI's mutation baseline)


class StreamIdle(RequestError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class TooManyStreams(RequestError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class StreamLimits:
    """``what``: what the cap counts, in its message (the replica's HTTP route counts the
    request bodies a client is sending at once with another instance: thousands of slow
    bodies held every request slot of the replica)."""

    def __init__(self, idle_s: float, per_client: int, what: str = "streams of this client are open",
                 fix: str = "close one, or send on it") -> None:
        self.idle_s, self.per_client = idle_s, per_client
        self.what, self.fix = what, fix
        self.open: Counter[str] = Counter()

    @contextlib.contextmanager
    def holding(self, client: str) -> Iterator[None]:
        """One open stream of ``client`` for the block; TooManyStreams over the cap."""
        if self.open[client] >= self.per_client:
            raise TooManyStreams(f"{self.open[client]} {self.what} (from its address, with its "
                                 f"API key if it gave one); the limit is {self.per_client} "
                                 f"({self.fix})")
        self.open[client] += 1
        try:
            yield
        finally:
            self.open[client] -= 1
            if not self.open[client]:
                del self.open[client]

    async def messages(self, requests: Any) -> AsyncIterator[Any]:
        """``requests``, ended with StreamIdle when no message comes within ``idle_s``."""
        it = aiter(requests)
        while True:
            try:
                message = await asyncio.wait_for(anext(it), self.idle_s)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StreamIdle(f"no message for {self.idle_s:g} s; the stream is closed "
                                 "(open a new one when there is work)") from None
            yield message


class Inbox:
    """A stream's request iterator, read one message at a time, where a read whose reader
    is cancelled is kept for the next reader instead of cancelled: cancelling it would close
    grpc's request iterator (an async generator), and the service waits on the client's next
    message while it answers earlier ones, so a stream ended by an error mid-way must still
    be read to its end by settle(). ``close`` cancels a read still pending."""

    def __init__(self, requests: Any) -> None:
        self._it = aiter(requests)
        self._read: asyncio.Future[Any] | None = None

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> Any:
        if self._read is None:
            self._read = asyncio.ensure_future(anext(self._it))
        read = self._read
        try:
            return await asyncio.shield(read)
        finally:
            if read.done():
                self._read = None

    def close(self) -> None:
        if self._read is not None:
            self._read.cancel()


async def settle(requests: Any, error: Exception, messages: int = SETTLE_MESSAGES,
                 seconds: float = SETTLE_S) -> None:
    """Read and drop the rest of a stream refused with ``error``, up to its end or the
    bounds, before the refusal is sent (not for StreamIdle: an idle client sends nothing to
    wait for). grpc.aio replaces the status a server ends a call with by INTERNAL
    ("Internal error from Core") when one of the client's writes or its half-close is still
    under way as the status arrives (grpc/grpc#36066): a client that sent its few messages
    with a bad key would read a server fault instead of UNAUTHENTICATED. Once its half-close
    has been read, no write of its can race the status. The bounds keep a client that
    streams on (or holds the stream open) from costing more than that."""
    if isinstance(error, StreamIdle):
        return

    async def drain() -> None:
        n = 0
        async for _ in requests:
            n += 1
            if n >= messages:
                return

    with contextlib.suppress(Exception):
        await asyncio.wait_for(drain(), seconds)


def stream_owner(caller: Caller, ctx: Any) -> str:
    """Whose cap a stream counts against: the client's address, and with an API key the key
    too. Behind HAProxy (``--ingress haproxy``) or any L4 balancer every client has the
    balancer's address, so an address alone would make all of them share one cap; a key is
    one tenant's credential, so each key has its own cap per address. The configured tokens
    and anonymous callers, which any number of clients share, count by address alone."""
    return owner_of(caller, client_of(ctx))


def owner_of(caller: Caller, host: str) -> str:
    """``stream_owner`` from a host already known (an HTTP request's client address)."""
    return f"{host} key {caller.key_id}" if caller.own_key else host


def client_of(ctx: Any) -> str:
    """The client's host as gRPC saw it ("ipv4:127.0.0.1:5123" -> "ipv4:127.0.0.1")."""
    try:
        peer = str(ctx.peer()) if ctx is not None else ""
    except Exception:
        peer = ""
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else (peer or UNKNOWN_CLIENT)


class OneLineAborts(logging.Filter):
    """Serve logs every exception that ends a stream with its traceback ("Request
    failed."); a stream the gate refused (a bad token, a bad message) is the client's
    doing and gets one line, without the traceback."""

    def __init__(self, aborted: type[BaseException]) -> None:
        super().__init__()
        self.aborted = aborted

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        for _ in range(4):  # Serve logs its own error, raised from ours
            if exc is None or isinstance(exc, self.aborted):
                break
            exc = exc.__cause__ or exc.__context__
        if isinstance(exc, self.aborted):
            record.msg, record.args = "stream refused: %s", (str(exc)[:200],)
            record.exc_info, record.exc_text = None, None
        return True
