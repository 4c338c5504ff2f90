"""The bounded metric labels of tenants. (A tenant's terms live in the store and reach a
replica through its key cache, ``auth.KeyRing``: admission against its rows-in-flight quota
is ``admission.py``'s, its fair-share weight the batch queue's, ``fairqueue.py``.)"""

from __future__ import annotations

OTHER_TENANTS = "(other)"  # the metrics label of tenants past the label cap


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
