"""What a replica knows of tenants when it batches: each tenant's terms (its fair-share
weight), and the bounded metric labels of tenants. (Admission against a tenant's
rows-in-flight quota is ``admission.py``'s, fed by the store's quotas.)

The terms come as one mapping tenant -> ``TenantTerms``; a tenant not in it gets the
default terms (weight 1). The store keeps no weights yet, so a served replica gives every
tenant weight 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from polyhead.engine.errors import ConfigError

OTHER_TENANTS = "(other)"  # the metrics label of tenants past the label cap


@dataclasses.dataclass(frozen=True)
class TenantTerms:
    weight: float = 1.0  # its share of the engine, relative to the other waiting tenants'

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ConfigError(f"tenant weight must be > 0, got {self.weight!r}")


class Tenants:
    """Terms by tenant."""

    def __init__(self, terms: Mapping[str, TenantTerms] | None = None,
                 default: TenantTerms = TenantTerms()) -> None:
        self._terms, self.default = dict(terms or {}), default

    def terms(self, tenant: str) -> TenantTerms:
        return self._terms.get(tenant, self.default)

    def weight(self, tenant: str) -> float:
        return self.terms(tenant).weight


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
