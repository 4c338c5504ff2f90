"""What a replica knows of tenants when it serves: each tenant's terms (its fair-share
weight, its admission quota) and the rows each has in flight.

The terms come as one mapping tenant -> ``TenantTerms``; a tenant not in it gets the
default terms (weight 1, no quota beyond the server's global limits). The tenants store
hands a new mapping to ``Tenants.replace`` when it changes; nothing else here reads a store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from polyhead.engine.errors import ConfigError
from polyhead.server._private.errors import QuotaExceeded

ROWS_IN_FLIGHT = "rows_in_flight"  # the quota's name, as errors and metrics give it
OTHER_TENANTS = "(other)"  # the metrics label of tenants past the label cap


@dataclasses.dataclass(frozen=True)
class TenantTerms:
    weight: float = 1.0  # its share of the engine, relative to the other waiting tenants'
    max_rows_in_flight: int | None = None  # rows admitted and not yet answered; None: no quota

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ConfigError(f"tenant weight must be > 0, got {self.weight!r}")
        if self.max_rows_in_flight is not None and self.max_rows_in_flight < 1:
            raise ConfigError(f"max_rows_in_flight must be >= 1, got {self.max_rows_in_flight!r}")


class Tenants:
    """Terms by tenant, and admission against their quotas (on the event loop only)."""

    def __init__(self, terms: Mapping[str, TenantTerms] | None = None,
                 default: TenantTerms = TenantTerms()) -> None:
        self._terms, self.default = dict(terms or {}), default
        self._in_flight: dict[str, int] = {}

    def replace(self, terms: Mapping[str, TenantTerms]) -> None:
        """New terms (the tenants store changed); requests in flight stay counted."""
        self._terms = dict(terms)

    def terms(self, tenant: str) -> TenantTerms:
        return self._terms.get(tenant, self.default)

    def weight(self, tenant: str) -> float:
        return self.terms(tenant).weight

    def in_flight(self, tenant: str) -> int:
        return self._in_flight.get(tenant, 0)

    @contextmanager
    def admit(self, tenant: str, rows: int) -> Iterator[None]:
        """Count ``rows`` in flight for ``tenant`` while the block runs; QuotaExceeded
        (RESOURCE_EXHAUSTED) when they would pass its quota."""
        limit, now = self.terms(tenant).max_rows_in_flight, self.in_flight(tenant)
        if limit is not None and now + rows > limit:
            raise QuotaExceeded(tenant, ROWS_IN_FLIGHT, limit,
                                f"{now} rows in flight, this request adds {rows}")
        self._in_flight[tenant] = now + rows
        try:
            yield
        finally:
            left = self._in_flight[tenant] - rows
            if left:
                self._in_flight[tenant] = left
            else:
                del self._in_flight[tenant]


class TenantLabels:
    """Metric label values for tenants: the first ``cap`` tenants seen by name, the rest as
    one ``(other)``, so a metric's series stay bounded whatever callers send."""

    def __init__(self, cap: int) -> None:
        self.cap, self._named = cap, set[str]()

    def __call__(self, tenant: str) -> str:
        if tenant in self._named:
            return tenant
        if len(self._named) < self.cap:
            self._named.add(tenant)
            return tenant
        return OTHER_TENANTS
