"""The catalog protocol: tasks, versions, aliases, the generation counter and the bytes.

Two backends, one behaviour; ``open_catalog(location)`` picks by the location:
  - a folder: ``SqliteCatalog`` (polyhead/store/sqlite.py), an SQLite index plus content-addressed
    blob files; for one host, or a shared volume with POSIX locks;
  - ``postgresql://...``: ``PgCatalog`` (polyhead/store/pg.py), rows *and* bytes in PostgreSQL,
    every change NOTIFYed to the replicas; for a cluster.
Nothing above store/ knows which. The logic (numbering, aliases, refs, deletes, checks) is
written once here, against a connection with ``execute``; a backend brings transactions,
the place the bytes live, and its change feed. Invariants, on both:
  - a version row exists only once its bytes are durable;
  - every change is one transaction (writers one at a time) and moves the generation;
  - identical bytes are one version (the sha256 of the file is its address).
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from polyhead.store import sql, tenancy
from polyhead.store.errors import KindChangeError, NotFoundError, StoreError
from polyhead.store.keys import ApiKey
from polyhead.store.names import LATEST, check_alias
from polyhead.store.sql import Conn, TaskInfo, VersionInfo
from polyhead.store.tenancy import AuditRecord, Tenant

T = TypeVar("T")
Check = Callable[[VersionInfo, bytes], list[str]]  # content checks of a blob whose hash is right
PG_SCHEMES = ("postgresql://", "postgres://")
__all__ = ["JOURNAL_MODES", "PG_SCHEMES", "Catalog", "ChangeFeed", "PollingFeed", "TaskInfo", "VersionInfo",
           "absolute", "default_location", "is_url", "journal_mode", "open_catalog", "redact"]


# SQLite journal modes the catalog may use. "wal" (default): readers never wait for a writer,
# but its shared-memory index only works when every process is on one host. "delete": the
# rollback journal, for a store on a network filesystem that several hosts mount at once;
# it relies on the filesystem's POSIX locks.
JOURNAL_MODES = ("wal", "delete")
DEFAULT_RETENTION_S = 7 * 86400.0  # how long a deleted task can be restored


@dataclasses.dataclass(frozen=True)
class DeletedTask:
    """A deleted task kept for its retention period: restorable until ``expires_at``."""

    task_id: str
    deleted_at: str  # ISO-8601 UTC
    expires_at: str  # after this, `gc` purges it (rows and bytes)
    num_versions: int


def journal_mode(mode: str | None = None) -> str:
    """``mode``, else ``$POLYHEAD_STORE_JOURNAL``, else "wal"; refused unless in JOURNAL_MODES."""
    value = (mode or os.environ.get("POLYHEAD_STORE_JOURNAL") or "wal").strip().lower()
    if value not in JOURNAL_MODES:
        raise StoreError(f"unknown store journal mode {value!r} ($POLYHEAD_STORE_JOURNAL): "
                         f"use one of {', '.join(JOURNAL_MODES)}")
    return value


def default_location() -> str:
    """``$POLYHEAD_STORE``, else ``polyhead-store`` (a folder in the working directory)."""
    return os.environ.get("POLYHEAD_STORE") or "polyhead-store"


def is_url(location: str | os.PathLike[str]) -> bool:
    """True for a location with a scheme (``xyz://``); only PostgreSQL's are served."""
    return "://" in str(location)


def absolute(location: str | os.PathLike[str]) -> str:
    """A folder made absolute (replicas may run elsewhere); a URL as it is."""
    return str(location) if is_url(location) else str(Path(location).resolve())


def redact(location: str) -> str:
    """A location for messages and logs: a URL's password replaced by ``***``."""
    location = re.sub(r"(://[^/@:]*:)[^/@]+@", r"\1***@", location)
    return re.sub(r"(password=)[^&]+", r"\1***", location)


def open_catalog(location: str | os.PathLike[str] | None = None, *, journal: str | None = None,
                 create: bool = True, cache: str | os.PathLike[str] | None = None) -> Catalog:
    """The catalog at ``location`` (default: ``default_location()``). ``create=False``
    refuses a location that holds no store yet. ``journal``: SQLite only; ``cache``:
    PostgreSQL only, the local byte cache folder (see ``polyhead.store.cache``)."""
    loc = str(location) if location is not None else default_location()
    if not loc:
        raise StoreError("empty store location: give a folder or a postgresql:// URL")
    if is_url(loc):
        if not loc.startswith(PG_SCHEMES):
            raise StoreError(f"unknown store location {loc.split('://')[0]}://...: use a folder "
                             "or a postgresql://USER:PASSWORD@HOST/DATABASE URL")
        from polyhead.store.pg import PgCatalog

        return PgCatalog(loc, create=create, cache=cache)
    from polyhead.store.sqlite import SqliteCatalog

    return SqliteCatalog(loc, journal=journal, create=create)


class ChangeFeed(Protocol):
    """Tells a replica that the catalog changed, so that it loads new versions at once."""

    def wait(self, timeout: float) -> int:
        """Block until the generation moves past the last one returned, or ``timeout``
        seconds; the generation as last seen (unchanged on timeout)."""
        ...

    def close(self) -> None: ...


class PollingFeed:
    """A change feed that reads the generation every ``poll_s`` seconds."""

    def __init__(self, catalog: Catalog, poll_s: float) -> None:
        self.catalog, self.poll_s = catalog, poll_s
        self.last = catalog.generation()

    def wait(self, timeout: float) -> int:
        import time

        deadline = time.monotonic() + timeout
        while True:
            gen = self.catalog.generation()
            if gen != self.last:
                self.last = gen
                return gen
            left = deadline - time.monotonic()
            if left <= 0:
                return self.last
            time.sleep(min(self.poll_s, left))

    def close(self) -> None:
        pass


class Catalog(abc.ABC):
    """Versions of tasks, their aliases and bytes. Thread-safe and safe across processes."""

    location: str  # for messages: the folder, or the URL without its password

    # -- what a backend provides -----------------------------------------------------------

    @abc.abstractmethod
    def _writing(self, body: Callable[[Conn], T]) -> T:
        """Run ``body`` in a write transaction, writers one at a time; rolled back if it raises."""

    @abc.abstractmethod
    def _reading(self, body: Callable[[Conn], T]) -> T:
        """Run ``body`` on one consistent snapshot."""

    def _stage_blob(self, version: str, data: bytes) -> None:  # noqa: B027  (optional hook)
        """Before the transaction: make the bytes durable where that can happen unlocked."""

    @abc.abstractmethod
    def _keep_blob(self, c: Conn, version: str, data: bytes) -> None:
        """Inside the transaction that adds the version row: the bytes are durable at commit."""

    @abc.abstractmethod
    def _load_blob(self, info: VersionInfo, *, cached: bool = True) -> bytes | None:
        """The stored bytes of a version (not yet hash-checked), None if there are none;
        ``cached=False`` reads past any local cache."""

    @abc.abstractmethod
    def _collect(self, c: Conn) -> list[str]:
        """Inside a write transaction: remove bytes no version refers to; what was removed."""

    @abc.abstractmethod
    def generation(self) -> int:
        """Moves on every catalog change; one cheap read."""

    @abc.abstractmethod
    def watch(self, poll_s: float = 0.05) -> ChangeFeed:
        """A change feed; ``poll_s``: how often to read the generation where nothing pushes."""

    def _integrity(self, c: Conn) -> list[str]:
        """Backend checks of the database itself."""
        return []

    def _changed(self, c: Conn) -> None:
        sql.bump(c)

    @abc.abstractmethod
    def close(self) -> None:
        """Close this thread's connection."""

    def gc(self) -> list[str]:
        """Purge deleted tasks whose retention ended, then remove bytes no version (live or
        deleted) refers to (and a backend's stale temp files); what went."""
        return self._writing(lambda c: self._purge(c) + self._collect(c))

    def _purge(self, c: Conn) -> list[str]:
        expired = c.execute("SELECT task_id, deleted_at FROM deleted_tasks WHERE expires_at <= ?",
                            (_now_us(),)).fetchall()
        for task_id, deleted_at in expired:
            for table in ("deleted_versions", "deleted_tasks"):
                c.execute(f"DELETE FROM {table} WHERE task_id = ? AND deleted_at = ?",
                          (task_id, deleted_at))
        return [f"deleted task {t} (deleted at {d})" for t, d in expired]

    # -- writes ----------------------------------------------------------------------------

    def add_version(self, task_id: str, data: bytes, kind: str,
                    created_at: str | None = None, *, replace_kind: bool = False) -> VersionInfo:
        """Store ``data`` (already validated) as a version of ``task_id`` and point ``latest``
        at it. Identical bytes give the existing version. ``created_at``: kept by a copy.
        A task whose latest version is of another kind changes kind only with
        ``replace_kind`` (else KindChangeError)."""
        version = _sha256(data)
        self._stage_blob(version, data)  # the slow part, outside the lock where it can be

        def body(c: Conn) -> VersionInfo:
            row = c.execute("SELECT task_id FROM versions WHERE version = ?", (version,)).fetchone()
            if row is not None and row[0] != task_id:
                raise StoreError(f"version {version[:12]} belongs to task {row[0]!r}")
            changed = row is None
            if row is None:
                _check_kind(c, task_id, kind, replace_kind)
                new_task = c.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)).fetchone() is None
                tenancy.check_publish(c, task_id, len(data), new_task)
                when = created_at or _now()
                c.execute("INSERT INTO tasks (task_id, created_at) VALUES (?, ?) "
                          "ON CONFLICT (task_id) DO NOTHING", (task_id, when))
                (number,) = c.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM versions "
                                      "WHERE task_id = ?", (task_id,)).fetchone()
                c.execute("INSERT INTO versions (version, task_id, number, kind, nbytes, created_at) "
                          "VALUES (?, ?, ?, ?, ?, ?)", (version, task_id, number, kind, len(data), when))
                self._keep_blob(c, version, data)
            changed |= sql.point(c, task_id, LATEST, version)
            if changed:
                self._changed(c)
            return sql.info(c, version)

        return self._writing(body)

    def set_alias(self, task_id: str, alias: str, version: str) -> VersionInfo:
        """Point ``alias`` at a version (``version`` is any ref: alias, hex, prefix, ``v3``)."""
        check_alias(alias)

        def body(c: Conn) -> VersionInfo:
            target = sql.resolve(c, task_id, version)
            if sql.point(c, task_id, alias, target):
                self._changed(c)
            return sql.info(c, target)

        return self._writing(body)

    def rollback(self, task_id: str, version: str) -> VersionInfo:
        """Point ``latest`` at an earlier (or any) version of the task."""
        return self.set_alias(task_id, LATEST, version)

    def remove_alias(self, task_id: str, alias: str) -> None:
        if alias == LATEST:
            raise StoreError("'latest' cannot be removed; delete the task instead")

        def body(c: Conn) -> None:
            sql.require_task(c, task_id)
            if c.execute("DELETE FROM aliases WHERE task_id = ? AND alias = ?",
                         (task_id, alias)).rowcount == 0:
                raise NotFoundError(f"task {task_id!r} has no alias {alias!r}")
            self._changed(c)

        self._writing(body)

    def delete(self, task_id: str, retention_s: float = DEFAULT_RETENTION_S) -> DeletedTask:
        """The task stops resolving at once; its versions, aliases and bytes are kept for
        ``retention_s`` seconds (``restore`` brings them back), then ``gc`` purges them."""
        if not retention_s >= 0:
            raise StoreError(f"retention must be >= 0 seconds, got {retention_s!r}")

        def body(c: Conn) -> DeletedTask:
            sql.require_task(c, task_id)
            now = datetime.datetime.now(datetime.UTC)
            when, until = _now_us(now), _now_us(now + datetime.timedelta(seconds=retention_s))
            (created,) = c.execute("SELECT created_at FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            aliases = dict(c.execute("SELECT alias, version FROM aliases WHERE task_id = ?", (task_id,)))
            c.execute("INSERT INTO deleted_tasks (task_id, deleted_at, expires_at, created_at, aliases) "
                      "VALUES (?, ?, ?, ?, ?)", (task_id, when, until, created, json.dumps(aliases)))
            n = c.execute("INSERT INTO deleted_versions (task_id, deleted_at, version, number, kind, "
                          "nbytes, created_at) SELECT task_id, ?, version, number, kind, nbytes, "
                          "created_at FROM versions WHERE task_id = ?", (when, task_id)).rowcount
            for table in ("aliases", "versions", "tasks"):
                c.execute(f"DELETE FROM {table} WHERE task_id = ?", (task_id,))
            self._changed(c)
            return DeletedTask(task_id, when, until, n)

        out = self._writing(body)
        self.gc()  # what earlier deletes kept past their retention goes now
        return out

    def restore(self, task_id: str) -> VersionInfo:
        """Bring back the task's latest delete, within its retention: every version and
        alias as they were. Refused while a task of that id exists; its latest version."""
        def body(c: Conn) -> VersionInfo:
            row = c.execute("SELECT deleted_at, expires_at, created_at, aliases FROM deleted_tasks "
                            "WHERE task_id = ? ORDER BY deleted_at DESC LIMIT 1", (task_id,)).fetchone()
            if row is None or row[1] <= _now_us():
                raise NotFoundError(f"no deleted task {task_id!r:.80} to restore (never deleted, "
                                    "or its retention ended)")
            when, _, created, aliases = row
            if c.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)).fetchone() is not None:
                raise StoreError(f"task {task_id!r} exists (published again since its delete): "
                                 "delete it first to restore the deleted one")
            versions = c.execute("SELECT version, number, kind, nbytes, created_at FROM deleted_versions "
                                 "WHERE task_id = ? AND deleted_at = ?", (task_id, when)).fetchall()
            # back in as a publish of it all would be: its tenant exists and stays in its quotas
            tenancy.check_publish(c, task_id, sum(int(v[3]) for v in versions), new_task=True)
            _restore_rows(c, task_id, created, versions, json.loads(aliases))
            for table in ("deleted_versions", "deleted_tasks"):
                c.execute(f"DELETE FROM {table} WHERE task_id = ? AND deleted_at = ?", (task_id, when))
            self._changed(c)
            return sql.info(c, sql.resolve(c, task_id, LATEST))

        return self._writing(body)

    def deleted(self) -> list[DeletedTask]:
        """Deleted tasks not yet purged, newest delete first."""
        def body(c: Conn) -> list[DeletedTask]:
            rows = c.execute("SELECT t.task_id, t.deleted_at, t.expires_at, COUNT(v.version) "
                             "FROM deleted_tasks t LEFT JOIN deleted_versions v ON v.task_id = t.task_id "
                             "AND v.deleted_at = t.deleted_at GROUP BY t.task_id, t.deleted_at, "
                             "t.expires_at ORDER BY t.deleted_at DESC").fetchall()
            return [DeletedTask(t, d, e, int(n)) for t, d, e, n in rows]

        return self._reading(body)

    # -- reads -----------------------------------------------------------------------------

    def resolve(self, task_id: str, ref: str = LATEST) -> VersionInfo:
        """``ref``: an alias, a full version, a unique prefix of >= 8 hex chars, or ``v3``."""
        return self._reading(lambda c: sql.info(c, sql.resolve(c, task_id, ref)))

    def read_bytes(self, task_id: str, ref: str = LATEST) -> tuple[VersionInfo, bytes]:
        """The artifact file of a version, its sha256 checked."""
        info = self.resolve(task_id, ref)
        data = self._load_blob(info)
        if data is None:
            gone = self._reading(lambda c: c.execute(
                "SELECT 1 FROM versions WHERE version = ?", (info.version,)).fetchone() is None)
            if gone:
                raise NotFoundError(f"{info.task_id}: version {info.short} was deleted")
            raise StoreError(f"{info.task_id}: bytes of version {info.short} are missing; "
                             "run `polyhead store verify`")
        if _sha256(data) != info.version:
            raise StoreError(f"{info.task_id}: bytes of version {info.short} are corrupt "
                             "(sha256 mismatch); run `polyhead store verify`")
        return info, data

    def history(self, task_id: str) -> list[VersionInfo]:
        """Every version of the task, oldest first."""
        def body(c: Conn) -> list[VersionInfo]:
            sql.require_task(c, task_id)
            rows = c.execute("SELECT * FROM versions WHERE task_id = ? ORDER BY number",
                             (task_id,)).fetchall()
            aliases = sql.aliases_by_version(c, task_id)
            return [sql.row_info(r, aliases.get(r[0], ())) for r in rows]

        return self._reading(body)

    def check_room(self, task_id: str) -> None:
        """What a publish to ``task_id`` would be refused for before any bytes: its tenant
        missing (NotFoundError) or, for a new task, at max_tasks (QuotaExceeded)."""
        def body(c: Conn) -> None:
            exists = c.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            tenancy.check_publish(c, task_id, 0, new_task=exists is None)

        self._reading(body)

    def list_tasks(self) -> list[TaskInfo]:
        """Every task with its latest version, sorted by id."""
        def body(c: Conn) -> list[TaskInfo]:
            latest = c.execute("SELECT v.* FROM aliases a JOIN versions v ON v.version = a.version "
                               "WHERE a.alias = ? ORDER BY a.task_id", (LATEST,)).fetchall()
            counts = {t: int(n) for t, n in c.execute(
                "SELECT task_id, COUNT(*) FROM versions GROUP BY task_id")}
            by_task: dict[str, dict[str, str]] = {}
            by_version: dict[str, list[str]] = {}
            for task_id, alias, version in c.execute(
                    "SELECT task_id, alias, version FROM aliases ORDER BY alias"):
                by_task.setdefault(task_id, {})[alias] = version
                by_version.setdefault(version, []).append(alias)
            out = []
            for r in latest:
                info = sql.row_info(r, tuple(by_version.get(r[0], ())))
                out.append(TaskInfo(info.task_id, info.kind, info, counts[info.task_id],
                                    by_task[info.task_id]))
            return out

        return self._reading(body)

    def versions(self) -> list[VersionInfo]:
        """Every version of every task."""
        def body(c: Conn) -> list[VersionInfo]:
            rows = c.execute("SELECT * FROM versions ORDER BY task_id, number").fetchall()
            aliases: dict[str, list[str]] = {}
            for alias, version in c.execute("SELECT alias, version FROM aliases ORDER BY alias"):
                aliases.setdefault(version, []).append(alias)
            return [sql.row_info(r, tuple(aliases.get(r[0], ()))) for r in rows]

        return self._reading(body)

    # -- tenants, keys, the audit trail (polyhead/store/tenancy.py) ----------------------------

    def _auth_changed(self, body: Callable[[Conn], T]) -> T:
        """A tenant or key change: one transaction that moves the generation too."""
        def run(c: Conn) -> T:
            out = body(c)
            self._changed(c)
            return out

        return self._writing(run)

    def create_tenant(self, name: str, max_tasks: int | None = None, max_bytes: int | None = None,
                      max_rows_in_flight: int | None = None, weight: float | None = None) -> None:
        self._auth_changed(lambda c: tenancy.create_tenant(c, name, max_tasks, max_bytes,
                                                           max_rows_in_flight, weight))

    def set_quota(self, name: str, max_tasks: int | None, max_bytes: int | None,
                  max_rows_in_flight: int | None = None, weight: float | None = None) -> None:
        """Set every quota of ``name`` (None: no limit) and its fair-share weight (None: 1)."""
        self._auth_changed(lambda c: tenancy.set_quota(c, name, max_tasks, max_bytes, max_rows_in_flight,
                                                       weight))

    def admission_limits(self) -> dict[str, int]:
        """Each tenant's max_rows_in_flight, where one is set."""
        return self._reading(tenancy.admission_limits)

    def weights(self) -> dict[str, float]:
        """Each tenant's fair-share weight, where it is not 1."""
        return self._reading(tenancy.weights)

    def delete_tenant(self, name: str) -> int:
        """Refused while it owns tasks; its keys are revoked (how many were live)."""
        return self._auth_changed(lambda c: tenancy.delete_tenant(c, name))

    def tenants(self) -> list[Tenant]:
        return self._reading(tenancy.tenants)

    def create_key(self, tenant: str, scopes: tuple[str, ...],
                   expires_at: str | None = None) -> tuple[ApiKey, str]:
        """A new key: its record and the key itself (shown once; only its hash is kept)."""
        return self._auth_changed(lambda c: tenancy.create_key(c, tenant, scopes, expires_at))

    def revoke_key(self, key_id: str) -> ApiKey:
        return self._auth_changed(lambda c: tenancy.revoke_key(c, key_id))

    def keys(self, tenant: str | None = None) -> list[ApiKey]:
        return self._reading(lambda c: tenancy.keys(c, tenant))

    def key_table(self, since: int = -1) -> tuple[int, list[tuple[ApiKey, str]]]:
        """The 'auth' counter, and the keys changed after its value ``since`` (default: all)."""
        return self._reading(lambda c: tenancy.key_table(c, since))

    def auth_generation(self) -> int:
        return self._reading(tenancy.auth_generation)

    def import_key(self, key: ApiKey, hashed: str) -> bool:
        """A key copied from another store (its hash kept); False if its id is here already."""
        return self._auth_changed(lambda c: tenancy.import_key(c, key, hashed))

    def import_audit(self, records: list[AuditRecord]) -> int:
        """Audit records copied from another store, those already here skipped; how many added."""
        return self._writing(lambda c: tenancy.import_audit(c, records))

    def add_audit(self, record: AuditRecord) -> None:
        self._writing(lambda c: tenancy.add_audit(c, record))

    def audit(self, tenant: str | None = None, since: str | None = None,
              limit: int = 1000) -> list[AuditRecord]:
        return self._reading(lambda c: tenancy.audit(c, tenant, since, limit))

    # -- health ----------------------------------------------------------------------------

    def verify(self, check: Check | None = None) -> list[str]:
        """Problems found (corrupt or missing bytes, dangling rows, and what ``check`` finds
        in each version's bytes); empty means healthy. Reads past any local cache."""
        problems = self._reading(lambda c: self._integrity(c) + sql.consistency_problems(c))
        for info in self.versions():
            where = f"{info.task_id} v{info.number} ({info.short})"
            try:
                data = self._load_blob(info, cached=False)
            except OSError as e:
                problems.append(f"{where}: blob unreadable: {e.strerror or e}")
                continue
            if data is None:
                problems.append(f"{where}: blob unreadable: missing")
            elif _sha256(data) != info.version:
                problems.append(f"{where}: blob sha256 mismatch (corrupt)")
            elif len(data) != info.nbytes:
                problems.append(f"{where}: catalog says {info.nbytes} bytes, blob has {len(data)}")
            elif check is not None:
                problems.extend(f"{where}: {p}" for p in check(info, data))
        return problems


def iter_copy(src: Catalog, dst: Catalog) -> Iterator[tuple[VersionInfo, bool]]:
    """Copy every task, version (oldest first, publish times kept) and alias of ``src``
    into ``dst``; yields (version, whether it was new in dst). Idempotent: what dst holds
    already is skipped. Each version's bytes are hash-checked as read from src and again as
    read back from dst. Tenants missing from dst are made first (a namespaced task needs
    its tenant), their quotas set once their tasks are in (a quota lowered below what
    the tenant holds must not stop the copy). Then the rest of what the store holds: its
    API keys (hashes, scopes, expiry and revocation as they are: a key that worked on src
    works on dst), its audit trail and its uploaded datasets (``copy_rest``). Jobs and
    their events are not copied: they belong to the cluster that ran them."""
    have = {t.tenant for t in dst.tenants()}
    made = [t for t in src.tenants() if t.tenant not in have]
    for t in made:
        dst.create_tenant(t.tenant)
    yield from _copy_tasks(src, dst)
    for t in made:
        dst.set_quota(t.tenant, t.max_tasks, t.max_bytes, t.max_rows_in_flight, t.weight)


@dataclasses.dataclass(frozen=True)
class Copied:
    """What ``copy_rest`` added to the destination (what it held already is not counted)."""
    keys: int
    audit: int
    datasets: int


def copy_rest(src: Catalog, dst: Catalog) -> Copied:
    """After ``iter_copy``: the keys, the audit trail and the datasets (idempotent)."""
    from polyhead.store.jobs import JobBook

    _, table = src.key_table()
    keys = sum(dst.import_key(key, hashed) for key, hashed in table)
    audit = dst.import_audit(src.audit(limit=2**62))
    source, dest = JobBook(src), JobBook(dst)
    had = set(dest.dataset_ids())
    owned = {(t, d) for t, d, _ in dest.dataset_owners()}
    for tenant, d, when in source.dataset_owners():  # each owner's row, its upload time kept
        if (tenant, d) not in owned:
            dest.put_dataset(source.dataset(d), source.dataset_bytes(d), tenant, uploaded_at=when)
    return Copied(keys, audit, len(set(dest.dataset_ids()) - had))


def _copy_tasks(src: Catalog, dst: Catalog) -> Iterator[tuple[VersionInfo, bool]]:
    for task in src.list_tasks():
        for info in src.history(task.task_id):
            _, data = src.read_bytes(task.task_id, info.version)
            try:
                dst.resolve(task.task_id, info.version)
                new = False
            except NotFoundError:
                dst.add_version(task.task_id, data, info.kind, created_at=info.created_at,
                                replace_kind=True)
                new = True
            back, _ = dst.read_bytes(task.task_id, info.version)
            if back.nbytes != info.nbytes:
                raise StoreError(f"{task.task_id} v{info.number}: {back.nbytes} bytes in the "
                                 f"destination, {info.nbytes} in the source")
            yield info, new
        for alias, version in sorted(task.aliases.items()):
            dst.set_alias(task.task_id, alias, version)


def _check_kind(c: Conn, task_id: str, kind: str, replace_kind: bool) -> None:
    row = c.execute("SELECT v.kind FROM aliases a JOIN versions v ON v.version = a.version "
                    "WHERE a.task_id = ? AND a.alias = ?", (task_id, LATEST)).fetchone()
    if row is not None and row[0] != kind and not replace_kind:
        raise KindChangeError(f"task {task_id!r} is a {row[0]!r} task: publishing a {kind!r} "
                              "version onto it needs replace_kind (--replace-kind)")


def _restore_rows(c: Conn, task_id: str, created: str, versions: list[tuple[str, int, str, int, str]],
                  aliases: dict[str, str]) -> None:
    """The deleted rows back (a version's bytes name its task, so no other task holds them)."""
    c.execute("INSERT INTO tasks (task_id, created_at) VALUES (?, ?)", (task_id, created))
    for version, number, kind, nbytes, when in versions:
        c.execute("INSERT INTO versions (version, task_id, number, kind, nbytes, created_at) "
                  "VALUES (?, ?, ?, ?, ?, ?)", (version, task_id, number, kind, nbytes, when))
    for alias, version in sorted(aliases.items()):
        sql.point(c, task_id, alias, version)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _now_us(when: datetime.datetime | None = None) -> str:
    """Delete and expiry times: microseconds, so that they compare as strings."""
    return (when or datetime.datetime.now(datetime.UTC)).isoformat(timespec="microseconds")
