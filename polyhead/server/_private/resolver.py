"""Hot-swap: which version a (task, ref) names right now, following the store's generation.

No store I/O runs on the event loop: every read goes to the store thread. A request
resolves against a generation read that started after it arrived, so it never serves a
version superseded before it was sent; concurrent requests share one read (at most one
in flight, one queued behind it). If the store does not answer within ``probe_timeout_s``
(another process holds the catalog's write lock: nothing new is committed yet) or cannot
be reached (the database is down: nothing can be published either), the request goes on
with the last generation read; a version that must be read from the store then fails
(UNAVAILABLE), a resident one keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

from polyhead.store import NotFoundError, Store, VersionInfo

T = TypeVar("T")
V = TypeVar("V")
Key = tuple[str, str]
CACHE_ENTRIES = 10_000  # per cache (known and unknown refs)
CACHE_BYTES = 4 << 20  # per cache, counted as the characters its keys and values hold


class BoundedCache(Generic[V]):
    """An LRU map bounded in entries and in bytes (``size(key, value)``): a client sending
    many distinct or long refs evicts its own entries, never grows the replica."""

    def __init__(self, size: Callable[[Key, V], int], max_entries: int = CACHE_ENTRIES,
                 max_bytes: int = CACHE_BYTES) -> None:
        self._size, self.max_entries, self.max_bytes = size, max_entries, max_bytes
        self._items: OrderedDict[Key, tuple[V, int]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Key) -> V | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        self._items.move_to_end(key)
        return hit[0]

    def put(self, key: Key, value: V) -> None:
        n = self._size(key, value)
        if n > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        self._items[key] = (value, n)
        self.nbytes += n
        while len(self._items) > self.max_entries or self.nbytes > self.max_bytes:
            _, (_, gone) = self._items.popitem(last=False)
            self.nbytes -= gone

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


def _key_chars(key: Key) -> int:
    return len(key[0]) + len(key[1]) + 64  # + the tuple's and entry's own overhead, roughly


def _info_size(key: Key, info: VersionInfo) -> int:
    return _key_chars(key) + 512  # a VersionInfo: ids, a hash, a few aliases


def _message_size(key: Key, message: str) -> int:
    return _key_chars(key) + len(message)


class Resolver:
    """(task_id, ref) -> VersionInfo, cached until the store's generation moves."""

    def __init__(self, store: Store, executor: Executor, probe_timeout_s: float = 0.05) -> None:
        self.store = store
        self.generation = -1
        self.changed_at = time.perf_counter()  # when this replica saw the generation move
        self._executor = executor
        self._timeout = probe_timeout_s
        self._cache: BoundedCache[VersionInfo] = BoundedCache(_info_size)
        self._missing: BoundedCache[str] = BoundedCache(_message_size)  # -> NotFoundError's text
        self._probe: asyncio.Future[int] | None = None  # the read in flight
        self._queued: asyncio.Future[None] | None = None  # the read that starts after it

    async def read(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the store thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def refresh(self, wait: bool = False) -> bool:
        """Catch up with a generation read that starts now or later; True if it moved.
        Gives up waiting after probe_timeout_s unless ``wait``."""
        before = self.generation
        fut: asyncio.Future[int] | asyncio.Future[None]
        if self._probe is None:
            fut = self._start()
        else:
            if self._queued is None:
                self._queued = asyncio.get_running_loop().create_future()
            fut = self._queued
        if wait:
            await asyncio.shield(fut)
        else:  # the store is locked or down: nothing new can be committed; go on with what we had
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(fut), self._timeout)
        return self.generation != before

    def _start(self) -> asyncio.Future[int]:
        probe = asyncio.ensure_future(self.read(self.store.generation))
        self._probe = probe
        probe.add_done_callback(self._probed)
        return probe

    def _probed(self, probe: asyncio.Future[int]) -> None:
        self._probe = None
        if not probe.cancelled() and probe.exception() is None:
            self.apply(probe.result())
        queued, self._queued = self._queued, None
        if queued is not None:
            nxt = self._start()
            nxt.add_done_callback(lambda f: _settle(queued))

    def apply(self, generation: int) -> None:
        """Adopt a generation read from the store (clears the cache if it moved)."""
        if generation == self.generation:
            return
        self.generation, self.changed_at = generation, time.perf_counter()
        self._cache.clear()
        self._missing.clear()

    async def resolve(self, task_id: str, ref: str) -> VersionInfo:
        """The version ``ref`` names now; raises NotFoundError (also cached per generation)."""
        await self.refresh()
        key = (task_id, ref)
        info = self._cache.get(key)
        if info is not None:
            return info
        missing = self._missing.get(key)
        if missing is not None:
            raise NotFoundError(missing)
        generation = self.generation
        try:
            info = await self.read(self.store.resolve, task_id, ref)
        except NotFoundError as e:
            if generation == self.generation:
                self._missing.put(key, str(e))  # unknown ids from a misbehaving client stay cheap
            raise
        if generation == self.generation:
            self._cache.put(key, info)
        return info

    async def latest_of(self, task_ids: set[str]) -> dict[str, VersionInfo | None]:
        """task id -> its latest VersionInfo, or None for deleted tasks (one store read)."""
        return await self.read(_latest_of, self.store, task_ids)


def _latest_of(store: Store, task_ids: set[str]) -> dict[str, VersionInfo | None]:
    out: dict[str, VersionInfo | None] = {}
    for t in sorted(task_ids):
        try:
            out[t] = store.resolve(t, "latest")
        except NotFoundError:
            out[t] = None
    return out


def _settle(fut: asyncio.Future[None]) -> None:
    """Resolve ``fut`` unless it already is (cancelled by its waiter, say)."""
    if not fut.done():
        fut.set_result(None)
