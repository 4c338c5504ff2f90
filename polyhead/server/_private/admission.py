"""Admission: each tenant's rows in flight on this replica (queued for the batcher or in a
forward), held against the tenant's ``max_rows_in_flight`` quota before the rows queue.

The quotas come from the replica's key cache (``KeyRing.limits``), re-read with the keys
when the store's 'auth' counter moves, so admission reads no store. A request that would
pass its tenant's quota is refused whole, RESOURCE_EXHAUSTED naming the quota and its
value; a tenant without the quota is only counted. Everything runs on the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

from polyhead.store.errors import QuotaExceeded


class Admission:
    def __init__(self, limits: Callable[[], Mapping[str, int]]) -> None:
        self._limits = limits
        self._in_flight: dict[str, int] = {}

    def in_flight(self, tenant: str) -> int:
        return self._in_flight.get(tenant, 0)

    @contextlib.contextmanager
    def holding(self, tenant: str, rows: int) -> Iterator[None]:
        """Count ``rows`` of ``tenant`` in flight while the block runs; QuotaExceeded if
        they would take it past its max_rows_in_flight."""
        limit = self._limits().get(tenant)
        now = self.in_flight(tenant)
        if limit is not None and now + rows > limit:
            raise QuotaExceeded(f"tenant {tenant!r} quota max_rows_in_flight = {limit} reached "
                                f"({now} rows in flight on this replica + {rows} new)")
        self._in_flight[tenant] = now + rows
        try:
            yield
        finally:
            left = self._in_flight[tenant] - rows
            if left:
                self._in_flight[tenant] = left
            else:
                del self._in_flight[tenant]
