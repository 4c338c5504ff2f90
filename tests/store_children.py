"""Targets for test processes that must not be forks of the pytest process.

Late in a run the pytest process has threads (gRPC, Ray's client, thread pools); a child
forked from it can die in the allocator (``double free or corruption``). The tests start
these children from a forkserver instead (a fresh, single-threaded process that imports
only this module and ``store``), so they still start within milliseconds of each other.
"""

from __future__ import annotations

from typing import Any

from polyhead.store import open_catalog


def open_catalog_child(place: str, results: Any) -> None:
    try:
        open_catalog(place).generation()
        results.put("ok")
    except Exception as e:
        results.put(repr(e))
