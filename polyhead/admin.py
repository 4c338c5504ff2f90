"""The Admin operations (tenants, quotas, API keys, the audit trail) written once, request
message in, answer message out: ``StoreAdmin`` runs them on a store's catalog (the
`--store` commands, and the replica's Admin service on its admin thread); ``GrpcAdmin``
calls a server's Admin service with an admin key. Both have the Admin RPCs' names."""

from __future__ import annotations

from typing import Any

import grpc

from polyhead.store.catalog import Catalog
from polyhead.store.errors import StoreError
from polyhead.store.keys import ApiKey, now_iso, parse_scopes, parse_time
from polyhead.store.tenancy import WEIGHT_RULE, AuditRecord, Tenant, valid_weight
from polyhead.v1 import polyhead_pb2 as pb
from polyhead.v1 import polyhead_pb2_grpc as pb_grpc

CHANGES = frozenset({"CreateTenant", "DeleteTenant", "SetQuota", "CreateKey", "RevokeKey"})


class AdminInputError(ValueError):
    """A request field the Admin operations refuse (INVALID_ARGUMENT)."""


def tenant_pb(t: Tenant) -> pb.TenantInfo:
    return pb.TenantInfo(tenant=t.tenant, created_at=t.created_at, max_tasks=t.max_tasks,
                         max_bytes=t.max_bytes, tasks=t.tasks, nbytes=t.nbytes,
                         max_rows_in_flight=t.max_rows_in_flight, weight=t.weight,
                         dataset_bytes=t.dataset_bytes)


def key_pb(k: ApiKey) -> pb.KeyInfo:
    return pb.KeyInfo(key_id=k.key_id, tenant=k.tenant, scopes=list(k.scopes), created_at=k.created_at,
                      expires_at=k.expires_at or "", revoked_at=k.revoked_at or "", state=k.state())


def audit_pb(r: AuditRecord) -> pb.AuditRecord:
    return pb.AuditRecord(at=r.at, key_id=r.key_id, tenant=r.tenant, rpc=r.rpc, task_id=r.task_id,
                          version=r.version, outcome=r.outcome)


def _terms(request: Any) -> tuple[int | None, int | None, int | None, float | None]:
    """max_tasks, max_bytes, max_rows_in_flight (None: unset, no limit) and weight (None:
    unset, 1) of a request; AdminInputError for a weight outside WEIGHT_RULE."""
    quotas = [int(getattr(request, n)) if request.HasField(n) else None
              for n in ("max_tasks", "max_bytes", "max_rows_in_flight")]
    weight = request.weight if request.HasField("weight") else None
    if weight is not None and not valid_weight(weight):
        raise AdminInputError(f"weight: {weight!r} must be {WEIGHT_RULE} (unset: 1)")
    return quotas[0], quotas[1], quotas[2], weight


MAX_KEY_LIFE_S = 100 * 365 * 86400  # past it, no timestamp (a probe's 1e12 s: INTERNAL)


class StoreAdmin:
    """The Admin operations on ``catalog`` (blocking). ``audit_as``: record each change in
    the audit trail under this key id (the replica's gate records its own)."""

    def __init__(self, catalog: Catalog, audit_as: str | None = None) -> None:
        self.catalog, self.audit_as = catalog, audit_as

    def _tenant(self, name: str) -> pb.TenantInfo:
        return tenant_pb(next(t for t in self.catalog.tenants() if t.tenant == name))

    def CreateTenant(self, request: pb.CreateTenantRequest) -> pb.TenantInfo:
        self.catalog.create_tenant(request.tenant, *_terms(request))
        return self._record("CreateTenant", self._tenant(request.tenant), f"tenant:{request.tenant}")

    def SetQuota(self, request: pb.SetQuotaRequest) -> pb.TenantInfo:
        self.catalog.set_quota(request.tenant, *_terms(request))
        return self._record("SetQuota", self._tenant(request.tenant), f"tenant:{request.tenant}")

    def ListTenants(self, request: pb.ListTenantsRequest) -> pb.ListTenantsResponse:
        return pb.ListTenantsResponse(tenants=[tenant_pb(t) for t in self.catalog.tenants()])

    def DeleteTenant(self, request: pb.DeleteTenantRequest) -> pb.DeleteTenantResponse:
        n = self.catalog.delete_tenant(request.tenant)
        out = pb.DeleteTenantResponse(tenant=request.tenant, keys_revoked=n)
        return self._record("DeleteTenant", out, f"tenant:{request.tenant}")

    def CreateKey(self, request: pb.CreateKeyRequest) -> pb.CreateKeyResponse:
        try:
            scopes = parse_scopes(list(request.scopes))
        except ValueError as e:
            raise AdminInputError(f"scopes: {e}") from None
        if not 0 <= request.expires_in_s <= MAX_KEY_LIFE_S:
            raise AdminInputError(f"expires_in_s: {request.expires_in_s:g} must be from 0 (never) "
                                  f"to {MAX_KEY_LIFE_S:,} (100 years)")
        expires = now_iso(request.expires_in_s) if request.expires_in_s else None
        info, key = self.catalog.create_key(request.tenant, scopes, expires)
        out = pb.CreateKeyResponse(info=key_pb(info), key=key)
        return self._record("CreateKey", out, f"key:{info.key_id}")

    def ListKeys(self, request: pb.ListKeysRequest) -> pb.ListKeysResponse:
        return pb.ListKeysResponse(keys=[key_pb(k) for k in self.catalog.keys(request.tenant or None)])

    def RevokeKey(self, request: pb.RevokeKeyRequest) -> pb.KeyInfo:
        out = key_pb(self.catalog.revoke_key(request.key_id))
        return self._record("RevokeKey", out, f"key:{request.key_id}")

    def ListAudit(self, request: pb.ListAuditRequest) -> pb.ListAuditResponse:
        try:
            since = parse_time(request.since) if request.since else None
        except ValueError as e:
            raise AdminInputError(f"since: {e}") from None
        if not 0 <= request.limit <= 10_000:
            raise AdminInputError(f"limit: {request.limit} is not in 0..10000 (0: 1000)")
        records = self.catalog.audit(request.tenant or None, since, request.limit or 1000)
        return pb.ListAuditResponse(records=[audit_pb(r) for r in records])

    def _record(self, rpc: str, out: Any, target: str) -> Any:
        if self.audit_as is not None:
            self.catalog.add_audit(AuditRecord(now_iso(), self.audit_as, "default", rpc, target, "", "OK"))
        return out


class GrpcAdmin:
    """The Admin operations on a server (``channel``), with ``token`` (an admin key)."""

    def __init__(self, channel: grpc.Channel, token: str | None, timeout_s: float = 60.0) -> None:
        self._stub = pb_grpc.AdminStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout_s

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        return lambda request: method(request, metadata=self._metadata, timeout=self._timeout)


__all__ = ["CHANGES", "AdminInputError", "GrpcAdmin", "StoreAdmin", "StoreError", "audit_pb", "key_pb",
           "tenant_pb"]
