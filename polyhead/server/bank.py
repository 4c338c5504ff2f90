"""The adapter bank: every task version a replica serves, resident under byte budgets.

Two tiers, each an LRU under its own budget:
  device  LoadedTasks: the version's rows in the engine's slot tables, counted as the
          bytes those rows take on the device;
  host    decoded artifacts on the host: the copy a device entry keeps (so that eviction
          costs nothing) and the versions evicted from the device, all counted here;
beyond the host budget a host copy is dropped (a device entry without one is dropped when
it is evicted) and the next miss reads the version from the store.
Eviction frees the version's slots, at once or, while a request still holds the version
(``using``), when the last one lets go. The engine allocates its slot tables within the
same device budget; when a load finds no room there (``SlotsExhausted``: the tables'
slack, or a table that widened), the least recently used versions that no request holds
are evicted until it fits. When every slot is held by requests in flight, the version
loads over the budget rather than failing the request; later loads reuse that slot, and
it goes back to the device once it is a trailing free one.
A miss loads in a worker thread: other tasks' requests keep being served meanwhile.
Concurrent misses on one version load it once (a lock per version, second check inside).
The bank is used from one asyncio event loop; only the load itself runs elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from functools import partial

from polyhead.engine import LoadedTask, SlotsExhausted, TaskArtifact


@dataclasses.dataclass(frozen=True)
class VersionKey:
    task_id: str
    version: str  # sha256 hex of the artifact


@dataclasses.dataclass(frozen=True)
class TaskMeta:
    """What a response needs besides logits, from the version's manifest."""

    number: int
    labels: tuple[str, ...]  # empty for regression
    regression: bool
    inputs: str  # "single", "pair" or "any": the input shape the task accepts


@dataclasses.dataclass(eq=False)
class Resident:
    key: VersionKey
    task: LoadedTask
    meta: TaskMeta
    loaded_at: float = 0.0  # time.monotonic() when it became resident on the device
    pins: int = 0  # requests using it now
    evicted: bool = False  # left the device tier; slots freed when pins reach 0
    nbytes: int = 0  # device bytes counted for it when admitted (subtracted when it leaves)

    @property
    def slot(self) -> int:
        return self.task.slot


Fetch = Callable[[VersionKey], tuple[TaskArtifact, TaskMeta]]
Prepare = Callable[..., LoadedTask]  # (artifact, over_budget=False)
Release = Callable[[LoadedTask], None]
Listener = Callable[[str, VersionKey], None]  # event: hit, miss, evict_device, evict_host


class AdapterBank:
    def __init__(self, fetch: Fetch, prepare: Prepare, release: Release | None = None, *,
                 device_budget: int, host_budget: int, executor: Executor | None = None,
                 listener: Listener | None = None) -> None:
        self._fetch, self._prepare = fetch, prepare
        self._release_task = release or (lambda task: None)
        self.device_budget, self.host_budget = device_budget, host_budget
        self._executor = executor
        self._listener = listener
        self._device: OrderedDict[VersionKey, Resident] = OrderedDict()
        self._host: OrderedDict[VersionKey, tuple[TaskArtifact, TaskMeta]] = OrderedDict()
        self.device_bytes = 0
        self.host_bytes = 0
        self._locks: weakref.WeakValueDictionary[VersionKey, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    async def get(self, key: VersionKey) -> Resident:
        """The resident version, loading it (from the host tier or the store) on a miss."""
        hit = self._touch(key)
        if hit is not None:
            return hit
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._touch(key)  # loaded by a concurrent miss while we waited
            if hit is not None:
                return hit
            self._emit("miss", key)
            host = self._host.get(key)
            loop = asyncio.get_running_loop()
            artifact, meta = host if host is not None else await loop.run_in_executor(
                self._executor, self._fetch, key)
            task = None
            while task is None:
                try:
                    task = await loop.run_in_executor(self._executor, self._prepare, artifact)
                except SlotsExhausted:
                    if not self._evict_unheld():  # every slot held by requests in flight
                        task = await loop.run_in_executor(
                            self._executor, partial(self._prepare, artifact, over_budget=True))
            return self._admit(Resident(key, task, meta), artifact)

    @contextlib.asynccontextmanager
    async def using(self, key: VersionKey) -> AsyncIterator[Resident]:
        """The resident version, held (its slots not freed) until the block ends."""
        res = await self.get(key)
        res.pins += 1
        try:
            yield res
        finally:
            res.pins -= 1
            if res.evicted and res.pins == 0:
                self._release_task(res.task)

    def put(self, key: VersionKey, artifact: TaskArtifact, meta: TaskMeta) -> Resident:
        """Make a version resident from an artifact already decoded (blocking; small)."""
        res = self._touch(key)
        if res is None:
            task = None
            while task is None:
                try:
                    task = self._prepare(artifact)
                except SlotsExhausted:
                    if not self._evict_unheld():  # every slot held by requests in flight
                        task = self._prepare(artifact, over_budget=True)
            res = self._admit(Resident(key, task, meta), artifact)
        return res

    def peek(self, key: VersionKey) -> Resident | None:
        return self._device.get(key)

    def discard(self, task_id: str, keep: frozenset[str] = frozenset()) -> int:
        """Drop every version of ``task_id`` except ``keep`` from both tiers; how many."""
        drop = [k for k in (*self._device, *self._host) if k.task_id == task_id
                and k.version not in keep]
        for k in drop:
            res = self._device.pop(k, None)
            if res is not None:
                self._release(res)
            self._drop_host(k)
        return len(drop)

    def resident(self) -> list[tuple[VersionKey, str, int, float]]:
        """(key, tier, nbytes, seconds on the device) per version held, device tier first."""
        now = time.monotonic()
        dev = [(k, "device", r.task.nbytes, now - r.loaded_at) for k, r in self._device.items()]
        return dev + [(k, "host", a.nbytes, 0.0) for k, (a, _) in self._host.items()
                      if k not in self._device]

    def task_ids(self) -> set[str]:
        return {k.task_id for k in (*self._device, *self._host)}

    # -- internals -------------------------------------------------------------------------

    def _touch(self, key: VersionKey) -> Resident | None:
        res = self._device.get(key)
        if res is not None:
            self._device.move_to_end(key)
            if key in self._host:
                self._host.move_to_end(key)
            self._emit("hit", key)
        return res

    def _admit(self, res: Resident, artifact: TaskArtifact) -> Resident:
        res.loaded_at = time.monotonic()
        res.nbytes = res.task.nbytes
        self._device[res.key] = res
        self.device_bytes += res.nbytes
        self._keep_host(res.key, artifact, res.meta)
        # The newest entry stays even when it alone exceeds the budget.
        while self.device_bytes > self.device_budget and len(self._device) > 1:
            key, old = self._device.popitem(last=False)
            self._release(old)
            self._emit("evict_device", key)
        while self.host_bytes > self.host_budget and self._host:
            key = next(iter(self._host))
            self._drop_host(key)
            self._emit("evict_host", key)
        return res

    def _keep_host(self, key: VersionKey, artifact: TaskArtifact, meta: TaskMeta) -> None:
        if key not in self._host:
            self.host_bytes += artifact.nbytes
        self._host[key] = (artifact, meta)
        self._host.move_to_end(key)

    def _drop_host(self, key: VersionKey) -> None:
        host = self._host.pop(key, None)
        if host is not None:
            self.host_bytes -= host[0].nbytes

    def _evict_unheld(self) -> bool:
        """Evict the least recently used device version no request holds (False: none)."""
        key = next((k for k, r in self._device.items() if r.pins == 0), None)
        if key is None:
            return False
        self._release(self._device.pop(key))
        self._emit("evict_device", key)
        return True

    def _release(self, res: Resident) -> None:
        """Off the device tier; its slots are freed now, or when the last user lets go."""
        self.device_bytes -= res.nbytes
        res.evicted = True
        if res.pins == 0:
            self._release_task(res.task)

    def _emit(self, event: str, key: VersionKey) -> None:
        if self._listener is not None:
            self._listener(event, key)
