"""Hot-swap: which version a (task, ref) names right now, following the store's generation.

Every request checks the generation (one cheap read), so a replica never serves a version
that stopped being current before the request arrived; a background watcher polls it too,
to load new versions of the tasks it serves before requests ask for them.
"""

from __future__ import annotations

import time
from typing import Any

from store import NotFoundError, Store, VersionInfo


class Resolver:
    """(task_id, ref) -> VersionInfo, cached until the store's generation moves."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.generation = -1
        self.changed_at = time.perf_counter()  # when this replica saw the generation move
        self._cache: dict[tuple[str, str], VersionInfo] = {}
        self._missing: dict[tuple[str, str], str] = {}  # -> the NotFoundError's message

    def sync(self) -> bool:
        """Read the store's generation; True (and the cache cleared) if it moved."""
        gen = self.store.generation()
        if gen == self.generation:
            return False
        self.generation, self.changed_at = gen, time.perf_counter()
        self._cache.clear()
        self._missing.clear()
        return True

    def resolve(self, task_id: str, ref: str) -> VersionInfo:
        """The version ``ref`` names now; raises NotFoundError (also cached per generation)."""
        self.sync()
        key = (task_id, ref)
        info = self._cache.get(key)
        if info is not None:
            return info
        if key in self._missing:
            raise NotFoundError(self._missing[key])
        try:
            info = self.store.resolve(task_id, ref)
        except NotFoundError as e:
            if len(self._missing) < 10_000:  # unknown ids from a misbehaving client stay cheap
                self._missing[key] = str(e)
            raise
        self._cache[key] = info
        return info

    def latest_of(self, task_ids: set[str]) -> dict[str, Any]:
        """task id -> its latest VersionInfo, or None for deleted tasks."""
        out: dict[str, Any] = {}
        for t in task_ids:
            try:
                out[t] = self.resolve(t, "latest")
            except NotFoundError:
                out[t] = None
        return out
