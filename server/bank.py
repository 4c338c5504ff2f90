"""The adapter bank: every task version a replica serves, resident under byte budgets.

Two tiers, each an LRU under its own budget:
  device  LoadedTasks ready for the engine, each in an integer slot;
  host    evicted artifacts kept decoded on the host (re-prepared on the next hit);
beyond the host budget an artifact is dropped and the next miss reads it from the store.
A miss loads in a worker thread: other tasks' requests keep being served meanwhile.
Concurrent misses on one version load it once (a lock per version, second check inside).
The bank is used from one asyncio event loop; only the load itself runs elsewhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor

from methods import LoadedTask, TaskArtifact


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
    artifact: TaskArtifact  # host copy, kept so eviction to the host tier costs nothing
    slot: int = -1
    loaded_at: float = 0.0  # time.monotonic() when it became resident on the device


Fetch = Callable[[VersionKey], tuple[TaskArtifact, TaskMeta]]
Prepare = Callable[[TaskArtifact], LoadedTask]
Listener = Callable[[str, VersionKey], None]  # event: hit, miss, evict_device, evict_host


class AdapterBank:
    def __init__(self, fetch: Fetch, prepare: Prepare, *, device_budget: int, host_budget: int,
                 executor: Executor | None = None, listener: Listener | None = None) -> None:
        self._fetch, self._prepare = fetch, prepare
        self.device_budget, self.host_budget = device_budget, host_budget
        self._executor = executor
        self._listener = listener
        self._device: OrderedDict[VersionKey, Resident] = OrderedDict()
        self._host: OrderedDict[VersionKey, tuple[TaskArtifact, TaskMeta]] = OrderedDict()
        self.device_bytes = 0
        self.host_bytes = 0
        self._locks: weakref.WeakValueDictionary[VersionKey, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._free_slots: list[int] = []
        self._next_slot = 0

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
            res = await loop.run_in_executor(self._executor, self._materialise, key, host)
            self._admit(res)
            return res

    def put(self, key: VersionKey, artifact: TaskArtifact, meta: TaskMeta) -> Resident:
        """Make a version resident from an artifact already in memory (blocking; small)."""
        res = self._touch(key)
        if res is None:
            res = self._materialise(key, (artifact, meta))
            self._admit(res)
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
            host = self._host.pop(k, None)
            if host is not None:
                self.host_bytes -= host[0].nbytes
        return len(drop)

    def resident(self) -> list[tuple[VersionKey, str, int, float]]:
        """(key, tier, nbytes, seconds on the device) per version held, device tier first."""
        now = time.monotonic()
        dev = [(k, "device", r.task.nbytes, now - r.loaded_at) for k, r in self._device.items()]
        return dev + [(k, "host", a.nbytes, 0.0) for k, (a, _) in self._host.items()]

    def task_ids(self) -> set[str]:
        return {k.task_id for k in (*self._device, *self._host)}

    # -- internals -------------------------------------------------------------------------

    def _touch(self, key: VersionKey) -> Resident | None:
        res = self._device.get(key)
        if res is not None:
            self._device.move_to_end(key)
            self._emit("hit", key)
        return res

    def _materialise(self, key: VersionKey,
                     host: tuple[TaskArtifact, TaskMeta] | None) -> Resident:
        artifact, meta = host if host is not None else self._fetch(key)
        return Resident(key, self._prepare(artifact), meta, artifact)

    def _admit(self, res: Resident) -> None:
        host = self._host.pop(res.key, None)
        if host is not None:
            self.host_bytes -= host[0].nbytes
        res.loaded_at = time.monotonic()
        res.slot = self._free_slots.pop() if self._free_slots else self._next_slot
        self._next_slot = max(self._next_slot, res.slot + 1)
        self._device[res.key] = res
        self.device_bytes += res.task.nbytes
        # The newest entry stays even when it alone exceeds the budget.
        while self.device_bytes > self.device_budget and len(self._device) > 1:
            key, old = self._device.popitem(last=False)
            self._release(old)
            self._emit("evict_device", key)
            self._host[key] = (old.artifact, old.meta)
            self.host_bytes += old.artifact.nbytes
        while self.host_bytes > self.host_budget and self._host:
            key, (artifact, _) = self._host.popitem(last=False)
            self.host_bytes -= artifact.nbytes
            self._emit("evict_host", key)

    def _release(self, res: Resident) -> None:
        self.device_bytes -= res.task.nbytes
        self._free_slots.append(res.slot)

    def _emit(self, event: str, key: VersionKey) -> None:
        if self._listener is not None:
            self._listener(event, key)
