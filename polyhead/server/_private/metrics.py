"""Replica metrics through Ray's metrics API (exported to Prometheus by Ray)."""

from __future__ import annotations

from ray.util import metrics

from polyhead.server._private.tenancy import TenantLabels

_LATENCY_MS = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]
_SIZES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
_RATIO = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]
MAX_TENANT_LABELS = 1000  # tenants named in metrics; the rest share one label


# Refusals of a request (not faults): counted per tenant as rejections too.
REJECTIONS = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED"})


class ServerMetrics:
    """Every metric a replica records; tags are bounded: tenants (not task ids: ten thousand
    tasks must not make ten thousand series; past MAX_TENANT_LABELS tenants, one label),
    kinds, status codes."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "polyhead_requests", "RPCs served, by method, the caller's tenant ('unknown' when "
            "its credentials were refused) and status code", tag_keys=("method", "tenant", "code"))
        self.latency = metrics.Histogram(
            "polyhead_request_latency_ms", "RPC latency inside the replica, by method and tenant",
            boundaries=_LATENCY_MS, tag_keys=("method", "tenant"))
        self.rows = metrics.Counter(
            "polyhead_tenant_rows", "rows classified, by the caller's tenant", tag_keys=("tenant",))
        self.rejections = metrics.Counter(
            "polyhead_tenant_rejections", "requests refused (UNAUTHENTICATED, PERMISSION_DENIED, "
            "RESOURCE_EXHAUSTED: a quota or a size limit), by tenant and code",
            tag_keys=("tenant", "code"))
        self.batch_rows = metrics.Histogram(
            "polyhead_batch_rows", "rows per batch (one or more engine forwards)", boundaries=_SIZES)
        self.batch_tasks = metrics.Histogram(
            "polyhead_batch_tasks", "distinct tasks per batch (task mix)", boundaries=_SIZES)
        self.batch_kind_rows = metrics.Counter(
            "polyhead_batch_kind_rows", "rows batched, by artifact kind", tag_keys=("kind",))
        self.padding_efficiency = metrics.Histogram(
            "polyhead_padding_efficiency", "real tokens / padded tokens per batch",
            boundaries=_RATIO)
        self.bank_events = metrics.Counter(
            "polyhead_bank_events", "adapter bank hits, misses and evictions", tag_keys=("event",))
        self.bank_bytes = metrics.Gauge(
            "polyhead_bank_bytes", "bytes resident in the adapter bank", tag_keys=("tier",))
        self.uploads = metrics.Counter(
            "polyhead_uploads", "Upload/ImportPeft calls by result", tag_keys=("result",))
        self.swap_latency = metrics.Histogram(
            "polyhead_swap_latency_ms",
            "store change to servable on this replica (local: this replica published it)",
            boundaries=_LATENCY_MS, tag_keys=("origin",))
        self._tenant = TenantLabels(MAX_TENANT_LABELS)
        self.auth_failures = metrics.Counter(
            "polyhead_auth_failures", "refused credentials, by the key's tenant ('unknown' when "
            "the key is not one of the store's) and reason (missing, wrong, revoked, expired, "
            "scope); never the key itself", tag_keys=("tenant", "reason"))

    def auth_failure(self, tenant: str, reason: str) -> None:
        self.auth_failures.inc(tags={"tenant": self._tenant(tenant), "reason": reason})

    def request(self, method: str, tenant: str, code: str, ms: float) -> None:
        tenant = self._tenant(tenant)
        self.requests.inc(tags={"method": method, "tenant": tenant, "code": code})
        self.latency.observe(ms, tags={"method": method, "tenant": tenant})
        if code in REJECTIONS:
            self.rejections.inc(tags={"tenant": tenant, "code": code})

    def tenant_rows(self, tenant: str, rows: int) -> None:
        self.rows.inc(rows, tags={"tenant": self._tenant(tenant)})

    def bank_event(self, event: str) -> None:
        self.bank_events.inc(tags={"event": event})
