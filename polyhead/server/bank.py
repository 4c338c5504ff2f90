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
Every load, a miss (``get``) or a version the replica just published (``put``), runs one
path: the store read (misses only) and the write into the engine's tables run on the
executor, so other tasks' requests keep being served meanwhile; evictions run on the
event loop between tries. Concurrent loads of one version load it once (a lock per
version, second check inside). The bank is used from one asyncio event loop; only the
reads and the table writes run elsewhere. It knows the store and the engine only by what
it is given: a ``Source`` (reads a version) and a ``Loader`` (the engine's tables).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Protocol, TypeVar

from polyhead.engine import LoadedTask, SlotsExhausted, ValidArtifact

_T = TypeVar("_T")


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


class BankEvent(enum.Enum):
    """What the bank tells its listener (the value is the metric's ``event`` tag)."""

    HIT = "hit"
    MISS = "miss"
    EVICT_DEVICE = "evict_device"
    EVICT_HOST = "evict_host"


class Source(Protocol):
    """Reads a version (blocking; the bank calls it on its executor)."""

    def __call__(self, key: VersionKey) -> tuple[ValidArtifact, TaskMeta]: ...


class Loader(Protocol):
    """The tables a version is loaded into (``Engine`` is one). ``load`` blocks (the bank
    calls it on its executor) and raises SlotsExhausted when the tables have no room,
    unless ``over_budget``."""

    def load(self, artifact: ValidArtifact, over_budget: bool = False) -> LoadedTask: ...

    def unload(self, task: LoadedTask) -> None: ...


Listener = Callable[[BankEvent, VersionKey], None]


class AdapterBank:
    def __init__(self, source: Source, loader: Loader, *, device_budget: int, host_budget: int,
                 executor: Executor | None = None, listener: Listener | None = None) -> None:
        self._source, self._loader = source, loader
        self.device_budget, self.host_budget = device_budget, host_budget
        self._executor = executor
        self._listener = listener
        self._device: OrderedDict[VersionKey, Resident] = OrderedDict()
        self._host: OrderedDict[VersionKey, tuple[ValidArtifact, TaskMeta]] = OrderedDict()
        self.device_bytes = 0
        self.host_bytes = 0
        self._locks: weakref.WeakValueDictionary[VersionKey, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    async def get(self, key: VersionKey) -> Resident:
        """The resident version, loading it (from the host tier or the store) on a miss."""
        return await self._resident(key)

    async def put(self, key: VersionKey, artifact: ValidArtifact, meta: TaskMeta) -> Resident:
        """Make a version resident from an artifact already read and checked (a publish):
        the same path as a miss, without the store read."""
        return await self._resident(key, (artifact, meta))

    async def _resident(self, key: VersionKey,
                        given: tuple[ValidArtifact, TaskMeta] | None = None) -> Resident:
        hit = self._touch(key)
        if hit is not None:
            return hit
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._touch(key)  # loaded by a concurrent call while we waited
            if hit is not None:
                return hit
            if given is None:
                self._emit(BankEvent.MISS, key)
                given = self._host.get(key)
            if given is None:
                given = await self._off_loop(self._source, key)
            artifact, meta = given
            return self._admit(Resident(key, await self._load(artifact), meta), artifact)

    async def _load(self, artifact: ValidArtifact) -> LoadedTask:
        """Its rows in the tables (written on the executor), evicting versions no request
        holds while the tables have no room; over the budget when every slot is held."""
        while True:
            try:
                return await self._off_loop(self._loader.load, artifact)
            except SlotsExhausted:
                if not self._evict_unheld():  # every slot held by requests in flight
                    return await self._off_loop(self._loader.load, artifact, True)

    async def _off_loop(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

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
                self._loader.unload(res.task)

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
            self._emit(BankEvent.HIT, key)
        return res

    def _admit(self, res: Resident, artifact: ValidArtifact) -> Resident:
        res.loaded_at = time.monotonic()
        res.nbytes = res.task.nbytes
        self._device[res.key] = res
        self.device_bytes += res.nbytes
        self._keep_host(res.key, artifact, res.meta)
        # The newest entry stays even when it alone exceeds the budget.
        while self.device_bytes > self.device_budget and len(self._device) > 1:
            key, old = self._device.popitem(last=False)
            self._release(old)
            self._emit(BankEvent.EVICT_DEVICE, key)
        while self.host_bytes > self.host_budget and self._host:
            key = next(iter(self._host))
            self._drop_host(key)
            self._emit(BankEvent.EVICT_HOST, key)
        return res

    def _keep_host(self, key: VersionKey, artifact: ValidArtifact, meta: TaskMeta) -> None:
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
        self._emit(BankEvent.EVICT_DEVICE, key)
        return True

    def _release(self, res: Resident) -> None:
        """Off the device tier; its slots are freed now, or when the last user lets go."""
        self.device_bytes -= res.nbytes
        res.evicted = True
        if res.pins == 0:
            self._loader.unload(res.task)

    def _emit(self, event: BankEvent, key: VersionKey) -> None:
        if self._listener is not None:
            self._listener(event, key)
