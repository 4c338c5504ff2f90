"""Tenants, API keys, quotas and the audit trail in the catalog (schema 3; tenants'
fair-share weights: schema 5): the queries,
written once for both backends, each run inside the caller's transaction (see sql.py).

A tenant owns the task ids ``tenant/...`` (the ``default`` tenant: ids without a '/').
Every change to a tenant or key moves the catalog's generation (so replicas' change
feeds wake) and the 'auth' counter (so they re-read their key cache only then).
"""

from __future__ import annotations

import dataclasses

from polyhead.store.errors import NotFoundError, QuotaExceeded, StoreError
from polyhead.store.keys import ApiKey, key_hash, new_key, now_iso
from polyhead.store.names import DEFAULT_TENANT, TENANT_RE, is_tenant, namespace_prefix, tenant_of
from polyhead.store.sql import Conn


@dataclasses.dataclass(frozen=True)
class Tenant:
    tenant: str
    created_at: str
    max_tasks: int | None  # None: no limit
    max_bytes: int | None  # stored bytes of its live versions; None: no limit
    tasks: int  # what it holds now
    nbytes: int
    max_rows_in_flight: int | None = None  # rows queued or computing per replica; None: no limit
    weight: float = 1.0  # its share of a replica's engine while others wait too, relative to theirs
    dataset_bytes: int = 0  # what the training datasets it uploaded hold (jobs.py's owner rows)


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    at: str  # ISO-8601 UTC
    key_id: str  # the caller's key id ("token": a configured token; "local": --store)
    tenant: str  # the caller's tenant
    rpc: str
    task_id: str  # "" when the call names none
    version: str  # "" when it made none
    outcome: str  # "OK" or the status code's name


KEY_COLUMNS = "key_id, tenant, scopes, created_at, expires_at, revoked_at"


def bump_auth(c: Conn) -> int:
    """Move the 'auth' counter; its new value."""
    c.execute("UPDATE meta SET value = value + 1 WHERE key = 'auth'")
    return auth_generation(c)


def auth_generation(c: Conn) -> int:
    return int(c.execute("SELECT value FROM meta WHERE key = 'auth'").fetchone()[0])


def check_tenant_name(name: str) -> None:
    if not is_tenant(name):
        raise StoreError(f"tenant name {name!r:.80} must match {TENANT_RE.pattern}")


def require_tenant(c: Conn, name: str) -> None:
    if c.execute("SELECT 1 FROM tenants WHERE tenant = ?", (name,)).fetchone() is None:
        raise NotFoundError(f"no tenant {name!r:.80}")


def _owned(tenant: str) -> tuple[str, tuple[str, ...]]:
    """A WHERE clause on ``task_id`` selecting ``tenant``'s tasks, and its parameters (not
    LIKE: '_' in a tenant name is one of its wildcards)."""
    prefix = namespace_prefix(tenant)
    if not prefix:
        return "task_id NOT LIKE '%/%'", ()
    return f"substr(task_id, 1, {len(prefix)}) = ?", (prefix,)


def usage(c: Conn, tenant: str) -> tuple[int, int]:
    """(tasks, stored bytes of live versions) of ``tenant``."""
    where, params = _owned(tenant)
    (tasks,) = c.execute(f"SELECT COUNT(*) FROM tasks WHERE {where}", params).fetchone()
    (nbytes,) = c.execute(f"SELECT COALESCE(SUM(nbytes), 0) FROM versions WHERE {where}",
                          params).fetchone()
    return int(tasks), int(nbytes)


def dataset_usage(c: Conn, tenant: str) -> int:
    """Bytes of the training datasets ``tenant`` uploaded (each counted in full, also one
    another tenant uploaded too): what the server's max_tenant_datasets_mb caps."""
    (n,) = c.execute("SELECT COALESCE(SUM(d.nbytes), 0) FROM dataset_owners o JOIN datasets d ON "
                     "d.dataset_id = o.dataset_id WHERE o.tenant = ?", (tenant,)).fetchone()
    return int(n)


def check_publish(c: Conn, task_id: str, nbytes: int, new_task: bool) -> None:
    """Before a new version of ``nbytes`` goes in: its tenant exists and stays within its
    quotas (QuotaExceeded names the quota and its value)."""
    tenant = tenant_of(task_id)
    row = c.execute("SELECT max_tasks, max_bytes FROM tenants WHERE tenant = ?", (tenant,)).fetchone()
    if row is None:
        raise NotFoundError(f"task {task_id!r}: no tenant {tenant!r} (create it first: "
                             f"`polyhead tenants create {tenant}`)")
    max_tasks, max_bytes = row
    if max_tasks is None and max_bytes is None:
        return
    tasks, stored = usage(c, tenant)
    if new_task and max_tasks is not None and tasks + 1 > max_tasks:
        raise QuotaExceeded(f"tenant {tenant!r} quota max_tasks = {max_tasks} reached "
                            f"({tasks} tasks): delete a task or raise the quota")
    if max_bytes is not None and stored + nbytes > max_bytes:
        raise QuotaExceeded(f"tenant {tenant!r} quota max_bytes = {max_bytes} would be exceeded "
                            f"({stored} bytes stored + {nbytes} new)")


def create_tenant(c: Conn, name: str, max_tasks: int | None, max_bytes: int | None,
                  max_rows_in_flight: int | None = None, weight: float | None = None) -> None:
    check_tenant_name(name)
    _check_quota_values(max_tasks, max_bytes, max_rows_in_flight)
    w = check_weight(weight)
    if c.execute("SELECT 1 FROM tenants WHERE tenant = ?", (name,)).fetchone() is not None:
        raise StoreError(f"tenant {name!r} exists")
    c.execute("INSERT INTO tenants (tenant, created_at, max_tasks, max_bytes, max_rows_in_flight, weight) "
              "VALUES (?, ?, ?, ?, ?, ?)", (name, now_iso(), max_tasks, max_bytes, max_rows_in_flight, w))
    bump_auth(c)


def set_quota(c: Conn, name: str, max_tasks: int | None, max_bytes: int | None,
              max_rows_in_flight: int | None = None, weight: float | None = None) -> None:
    """Set every term of ``name``: its quotas (None: no limit) and its weight (None: 1)."""
    _check_quota_values(max_tasks, max_bytes, max_rows_in_flight)
    w = check_weight(weight)
    require_tenant(c, name)
    c.execute("UPDATE tenants SET max_tasks = ?, max_bytes = ?, max_rows_in_flight = ?, weight = ? "
              "WHERE tenant = ?", (max_tasks, max_bytes, max_rows_in_flight, w, name))
    bump_auth(c)


def admission_limits(c: Conn) -> dict[str, int]:
    """Every tenant's max_rows_in_flight that is set: what a replica's admission checks."""
    rows = c.execute("SELECT tenant, max_rows_in_flight FROM tenants "
                     "WHERE max_rows_in_flight IS NOT NULL").fetchall()
    return {t: int(n) for t, n in rows}


def weights(c: Conn) -> dict[str, float]:
    """Every tenant's fair-share weight other than 1: what a replica's batch queue reads."""
    rows = c.execute("SELECT tenant, weight FROM tenants WHERE weight <> 1").fetchall()
    return {t: float(w) for t, w in rows}


# a tenant's fair-share weight: bounded, for the batch queue divides tokens by it (a probe's
# 5e-324 made every tenant's virtual time infinite, and sharing fell back to 50/50)
MIN_WEIGHT, MAX_WEIGHT = 1e-3, 1e3
WEIGHT_RULE = f"a number from {MIN_WEIGHT:g} to {MAX_WEIGHT:g}"


def valid_weight(weight: float) -> bool:
    """Whether ``weight`` can be a tenant's fair-share weight (WEIGHT_RULE)."""
    return MIN_WEIGHT <= weight <= MAX_WEIGHT  # (NaN compares False)


def check_weight(weight: float | None) -> float:
    """``weight``, or 1 for None; StoreError unless it is WEIGHT_RULE."""
    if weight is None:
        return 1.0
    if not valid_weight(weight):
        raise StoreError(f"weight must be {WEIGHT_RULE}, got {weight!r}")
    return float(weight)


def _check_quota_values(*values: int | None) -> None:
    if any(v is not None and v < 0 for v in values):
        raise StoreError(f"quotas must be >= 0 (or none), got {list(values)}")


def delete_tenant(c: Conn, name: str) -> int:
    """Remove a tenant that owns no task and runs no job; its keys are revoked with it (how
    many were live), and its datasets, deleted tasks and finished jobs go."""
    if name == DEFAULT_TENANT:
        raise StoreError("the default tenant cannot be deleted")
    require_tenant(c, name)
    tasks, _ = usage(c, name)
    if tasks:
        raise StoreError(f"tenant {name!r} owns {tasks} task(s): delete them first")
    from polyhead.store.jobs import TERMINAL, prune  # (jobs.py imports the catalog, which imports this)

    where, params = _owned(name)
    ended = ", ".join("?" * len(TERMINAL))
    (unfinished,) = c.execute(f"SELECT COUNT(*) FROM jobs WHERE {where} AND state NOT IN ({ended})",
                              (*params, *sorted(TERMINAL))).fetchone()
    if unfinished:
        raise StoreError(f"tenant {name!r} has {unfinished} unfinished training job(s): cancel them "
                         "first (`polyhead jobs cancel`)")
    # what its name still holds goes with it, so a tenant made again with the name starts
    # empty: its deleted tasks (restorable until now; gc frees their bytes) and its jobs
    for table in ("deleted_versions", "deleted_tasks"):
        c.execute(f"DELETE FROM {table} WHERE {where}", params)
    c.execute(f"DELETE FROM job_events WHERE job_id IN (SELECT job_id FROM jobs WHERE {where})", params)
    c.execute(f"DELETE FROM jobs WHERE {where}", params)
    gen = bump_auth(c)
    n = int(c.execute("UPDATE api_keys SET revoked_at = ?, changed = ? WHERE tenant = ? "
                      "AND revoked_at IS NULL", (now_iso(), gen, name)).rowcount)
    # its datasets: its owner rows, then the bytes no one else holds and no unfinished job names
    c.execute("DELETE FROM dataset_owners WHERE tenant = ?", (name,))
    prune(c, "", name)
    c.execute("DELETE FROM tenants WHERE tenant = ?", (name,))
    return n


def tenants(c: Conn) -> list[Tenant]:
    rows = c.execute("SELECT tenant, created_at, max_tasks, max_bytes, max_rows_in_flight, weight "
                     "FROM tenants ORDER BY tenant").fetchall()
    return [Tenant(t, when, mt, mb, *usage(c, t), mr, float(w), dataset_usage(c, t))
            for t, when, mt, mb, mr, w in rows]


def create_key(c: Conn, tenant: str, scopes: tuple[str, ...], expires_at: str | None) -> tuple[ApiKey, str]:
    """A new key (its record, and the key itself: shown once, kept nowhere)."""
    require_tenant(c, tenant)
    key_id, key = new_key()
    record = ApiKey(key_id, tenant, scopes, now_iso(), expires_at, None)
    c.execute(f"INSERT INTO api_keys ({KEY_COLUMNS}, hash, changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
              (key_id, tenant, ",".join(scopes), record.created_at, expires_at, None, key_hash(key),
               bump_auth(c)))
    return record, key


def revoke_key(c: Conn, key_id: str) -> ApiKey:
    row = c.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no key {key_id!r:.40}")
    key = _key(row)
    if key.revoked_at is None:
        c.execute("UPDATE api_keys SET revoked_at = ?, changed = ? WHERE key_id = ?",
                  (now_iso(), bump_auth(c), key_id))
    return _key(c.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)).fetchone())


def keys(c: Conn, tenant: str | None = None) -> list[ApiKey]:
    where, params = ("WHERE tenant = ?", (tenant,)) if tenant else ("", ())
    rows = c.execute(f"SELECT {KEY_COLUMNS} FROM api_keys {where} ORDER BY tenant, created_at",
                     params).fetchall()
    return [_key(r) for r in rows]


def key_table(c: Conn, since: int = -1) -> tuple[int, list[tuple[ApiKey, str]]]:
    """The 'auth' counter and the keys (with their hashes) changed after counter value
    ``since`` (every key by default): what a replica's key cache reads. Both reads are
    in one snapshot (``Catalog._reading``: SQLite's read transaction, PostgreSQL's
    REPEATABLE READ), so the counter and the rows agree."""
    generation = auth_generation(c)
    rows = c.execute(f"SELECT {KEY_COLUMNS}, hash FROM api_keys WHERE changed > ?", (since,)).fetchall()
    return generation, [(_key(r[:6]), r[6]) for r in rows]


def import_key(c: Conn, key: ApiKey, hashed: str) -> bool:
    """A key copied from another store, as it was there (its hash, state and times). A key
    of that id here already is kept, except that a revocation is carried over (a key
    revoked at the source after an earlier copy must not stay live here). Whether
    anything changed. Its tenant must exist."""
    require_tenant(c, key.tenant)
    row = c.execute("SELECT revoked_at FROM api_keys WHERE key_id = ?", (key.key_id,)).fetchone()
    if row is not None:
        if row[0] is not None or key.revoked_at is None:
            return False
        c.execute("UPDATE api_keys SET revoked_at = ?, changed = ? WHERE key_id = ?",
                  (key.revoked_at, bump_auth(c), key.key_id))
        return True
    c.execute(f"INSERT INTO api_keys ({KEY_COLUMNS}, hash, changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
              (key.key_id, key.tenant, ",".join(key.scopes), key.created_at, key.expires_at,
               key.revoked_at, hashed, bump_auth(c)))
    return True


def _key(row: tuple[str, str, str, str, str | None, str | None]) -> ApiKey:
    key_id, tenant, scopes, created, expires, revoked = row
    return ApiKey(key_id, tenant, tuple(scopes.split(",")), created, expires, revoked)


def add_audit(c: Conn, r: AuditRecord) -> None:
    """One record; its caller-given text (the target, the outcome's message) with control
    characters escaped, so no record reads as two lines, or as a terminal's escape (a
    probe forged a whole `polyhead audit` line with a task id holding a newline)."""
    c.execute("INSERT INTO audit (at, key_id, tenant, rpc, task_id, version, outcome) "
              "VALUES (?, ?, ?, ?, ?, ?, ?)",
              (r.at, r.key_id, r.tenant, r.rpc, printable(r.task_id), printable(r.version),
               printable(r.outcome)))


def printable(text: str) -> str:
    """``text`` with each character that is not printable as its Python escape (\\n, \\x1b)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def import_audit(c: Conn, records: list[AuditRecord]) -> int:
    """Records copied from another store, oldest first, skipping those already here (the
    same time, key, tenant, RPC, task, version and outcome); how many were added."""
    added = 0
    for r in records:
        fields = (r.at, r.key_id, r.tenant, r.rpc, r.task_id, r.version, r.outcome)
        if c.execute("SELECT 1 FROM audit WHERE at = ? AND key_id = ? AND tenant = ? AND rpc = ? "
                     "AND task_id = ? AND version = ? AND outcome = ?", fields).fetchone() is None:
            add_audit(c, r)
            added += 1
    return added


def audit(c: Conn, tenant: str | None = None, since: str | None = None,
          limit: int = 1000) -> list[AuditRecord]:
    """Records oldest first (the last ``limit`` of them), of ``tenant`` and from ``since``."""
    clauses, params = [], []
    if tenant:
        clauses.append("tenant = ?")
        params.append(tenant)
    if since:
        clauses.append("at >= ?")
        params.append(since)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = c.execute(f"SELECT at, key_id, tenant, rpc, task_id, version, outcome FROM audit {where} "
                     f"ORDER BY id DESC LIMIT {int(limit)}", tuple(params)).fetchall()
    return [AuditRecord(*r) for r in reversed(rows)]
