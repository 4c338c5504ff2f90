"""The catalog's tables, and the queries that turn their rows into records.

Every function takes a connection inside a transaction that the caller holds. The queries
are plain SQL that SQLite and PostgreSQL both run (``?`` placeholders; the PostgreSQL
backend rewrites them), so that both backends number, resolve and check alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from polyhead.store.errors import AmbiguousRefError, NotFoundError
from polyhead.store.names import DEFAULT_TENANT, hex_prefix, is_task_id, version_number_ref

CATALOG_SCHEMA = 6  # both backends; a catalog with a larger number is refused, a smaller upgraded


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """What the queries need of a connection: sqlite3's, or the PostgreSQL backend's wrapper."""

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...  # a Cursor


PRAGMAS = (
    "PRAGMA busy_timeout = 60000",
    "PRAGMA synchronous = FULL",  # a returned publish survives power loss too
    "PRAGMA foreign_keys = ON",
)
SCHEMA: tuple[str, ...] = (  # SQLite
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, created_at TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS versions (
        version TEXT PRIMARY KEY,
        task_id TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        kind TEXT NOT NULL,
        nbytes INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (task_id, number))""",
    """CREATE TABLE IF NOT EXISTS aliases (
        task_id TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
        alias TEXT NOT NULL,
        version TEXT NOT NULL REFERENCES versions(version) ON DELETE CASCADE,
        PRIMARY KEY (task_id, alias))""",
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', 0)",
    f"INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', {CATALOG_SCHEMA})",
)
# Schema 2: deleted tasks, kept (rows and bytes) until their retention ends. The task's
# catalog rows move here on delete and back on restore; gc purges the expired ones.
DELETED = (
    """CREATE TABLE IF NOT EXISTS deleted_tasks (
        task_id TEXT NOT NULL,
        deleted_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        created_at TEXT NOT NULL,
        aliases TEXT NOT NULL,
        PRIMARY KEY (task_id, deleted_at))""",
    """CREATE TABLE IF NOT EXISTS deleted_versions (
        task_id TEXT NOT NULL,
        deleted_at TEXT NOT NULL,
        version TEXT NOT NULL,
        number INTEGER NOT NULL,
        kind TEXT NOT NULL,
        nbytes BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (task_id, deleted_at, version))""",
)


def _tenant_tables(serial: str, ids: str) -> tuple[str, ...]:
    """Schema 3: tenants (with their quotas: tasks and bytes at publish, rows in flight
    per replica at admission; NULL: no limit), API keys (only the sha256 of a
    key is kept; a key is never deleted, only revoked, so that a replica's cache can read
    just the keys changed since it last looked), the audit trail, and the 'auth' counter,
    which moves on every key or tenant change. ``serial``: the backend's auto-numbered
    key; ``ids``: how ids collate."""
    return (
        f"""CREATE TABLE IF NOT EXISTS tenants (
            tenant TEXT {ids} PRIMARY KEY,
            created_at TEXT NOT NULL,
            max_tasks BIGINT,
            max_bytes BIGINT,
            max_rows_in_flight BIGINT)""",
        f"""CREATE TABLE IF NOT EXISTS api_keys (
            key_id TEXT {ids} PRIMARY KEY,
            tenant TEXT {ids} NOT NULL,
            hash TEXT NOT NULL,
            scopes TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT,
            revoked_at TEXT,
            changed BIGINT NOT NULL)""",  # the 'auth' counter of its last change
        "CREATE INDEX IF NOT EXISTS api_keys_changed ON api_keys (changed)",
        f"""CREATE TABLE IF NOT EXISTS audit (
            id {serial},
            at TEXT NOT NULL,
            key_id TEXT NOT NULL,
            tenant TEXT NOT NULL,
            rpc TEXT NOT NULL,
            task_id TEXT NOT NULL,
            version TEXT NOT NULL,
            outcome TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",
        "INSERT INTO tenants (tenant, created_at) VALUES ('default', '') ON CONFLICT DO NOTHING",
        "INSERT INTO meta (key, value) VALUES ('auth', 0) ON CONFLICT DO NOTHING",
    )




# Schema 4: training jobs (polyhead/store/jobs.py): uploaded datasets (their bytes in the
# row, on both backends), jobs with their claim lease, and each job's numbered events.
# Job changes do not move the generation (replicas reload nothing for them).
def _jobs_tables(blob: str, real: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE IF NOT EXISTS datasets (
            dataset_id TEXT PRIMARY KEY,
            format TEXT NOT NULL,
            columns TEXT NOT NULL,
            labels TEXT,
            nrows INTEGER NOT NULL,
            inputs TEXT NOT NULL,
            nbytes BIGINT NOT NULL,
            created_at TEXT NOT NULL,
            data {blob} NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS jobs (
            job_id TEXT PRIMARY KEY,
            task_id TEXT NOT NULL,
            method TEXT NOT NULL,
            state TEXT NOT NULL,
            spec TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            reason TEXT NOT NULL,
            version TEXT NOT NULL,
            version_number INTEGER NOT NULL,
            node TEXT NOT NULL,
            lease_owner TEXT NOT NULL,
            lease_until {real} NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at)",
        """CREATE TABLE IF NOT EXISTS job_events (
            job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (job_id, seq))""",
    )


# Schema 5: each tenant's fair-share weight (its share of a replica's engine while other
# tenants wait too; 1 unless set), read by the replicas with the quotas.
WEIGHTS = ("ALTER TABLE tenants ADD COLUMN weight DOUBLE PRECISION NOT NULL DEFAULT 1",)
JOBS = _jobs_tables("BLOB", "REAL")
PG_JOBS = _jobs_tables("BYTEA", "DOUBLE PRECISION")
TENANTS = _tenant_tables("INTEGER PRIMARY KEY AUTOINCREMENT", "")

# Schema 6: who uploaded each dataset. The bytes stay one row per content; each tenant that
# uploaded it holds an owner row with its upload time: the datasets a tenant may name (an
# admin: any), what counts against its dataset quota, and what retention drops
# (polyhead/store/jobs.py). A catalog from before gets its owners from the jobs that named
# each dataset (the job's tenant), and the default tenant for a dataset no job named.
OWNERS = (
    """CREATE TABLE IF NOT EXISTS dataset_owners (
        tenant TEXT NOT NULL,
        dataset_id TEXT NOT NULL REFERENCES datasets(dataset_id) ON DELETE CASCADE,
        uploaded_at TEXT NOT NULL,
        PRIMARY KEY (tenant, dataset_id))""",
    "CREATE INDEX IF NOT EXISTS dataset_owners_id ON dataset_owners (dataset_id)",
)
_UNOWNED_TO_DEFAULT = (
    "INSERT INTO dataset_owners (tenant, dataset_id, uploaded_at) "
    f"SELECT '{DEFAULT_TENANT}', dataset_id, created_at FROM datasets "
    "WHERE dataset_id NOT IN (SELECT dataset_id FROM dataset_owners)")


def _owners_from_jobs(tenant_sql: str, field_sql: str, conflict: str) -> str:
    """The owner rows an older catalog's jobs imply (the SQL differs by backend)."""
    return (f"INSERT INTO dataset_owners (tenant, dataset_id, uploaded_at) SELECT DISTINCT "
            f"{tenant_sql}, d.dataset_id, d.created_at FROM jobs j JOIN datasets d ON d.dataset_id "
            f"IN ({field_sql.format('train')}, {field_sql.format('dev')}) {conflict}")


OWNERS_UPGRADE = (*OWNERS, _owners_from_jobs(
    f"CASE WHEN instr(j.task_id, '/') > 0 THEN substr(j.task_id, 1, instr(j.task_id, '/') - 1) "
    f"ELSE '{DEFAULT_TENANT}' END", "json_extract(j.spec, '$.{}')", "WHERE true ON CONFLICT DO NOTHING"),
    _UNOWNED_TO_DEFAULT)
PG_OWNERS_UPGRADE = (*OWNERS, _owners_from_jobs(
    f"CASE WHEN strpos(j.task_id, '/') > 0 THEN split_part(j.task_id, '/', 1) "
    f"ELSE '{DEFAULT_TENANT}' END", "(j.spec::json ->> '{}')", "ON CONFLICT DO NOTHING"),
    _UNOWNED_TO_DEFAULT)
SCHEMA = SCHEMA + DELETED + TENANTS + JOBS + WEIGHTS + OWNERS
UPGRADE = {1: DELETED, 2: TENANTS, 3: JOBS, 4: WEIGHTS, 5: OWNERS_UPGRADE}  # SQLite: from schema N to N + 1

PG_SCHEMA_NAME = "polyhead"  # every table lives in this PostgreSQL schema (namespace)
PG_SCHEMA: tuple[str, ...] = (  # PostgreSQL: the same tables, byte order ("C") for ids, plus the bytes
    f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA_NAME}",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    'CREATE TABLE IF NOT EXISTS tasks (task_id TEXT COLLATE "C" PRIMARY KEY, created_at TEXT NOT NULL)',
    """CREATE TABLE IF NOT EXISTS versions (
        version TEXT COLLATE "C" PRIMARY KEY,
        task_id TEXT COLLATE "C" NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        kind TEXT NOT NULL,
        nbytes BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (task_id, number))""",
    """CREATE TABLE IF NOT EXISTS aliases (
        task_id TEXT COLLATE "C" NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
        alias TEXT COLLATE "C" NOT NULL,
        version TEXT COLLATE "C" NOT NULL REFERENCES versions(version) ON DELETE CASCADE,
        PRIMARY KEY (task_id, alias))""",
    """CREATE TABLE IF NOT EXISTS blobs (
        version TEXT COLLATE "C" PRIMARY KEY,
        data BYTEA NOT NULL)""",  # gc removes bytes no version, live or deleted, refers to
    "ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL",  # float tensors do not compress
    "INSERT INTO meta (key, value) VALUES ('generation', 0) ON CONFLICT DO NOTHING",
    f"INSERT INTO meta (key, value) VALUES ('schema', {CATALOG_SCHEMA}) ON CONFLICT DO NOTHING",
    *DELETED,
    *PG_JOBS,
)
PG_TENANTS = _tenant_tables("BIGSERIAL PRIMARY KEY", 'COLLATE "C"')
PG_SCHEMA = PG_SCHEMA + PG_TENANTS + WEIGHTS + OWNERS
PG_UPGRADE = {  # PostgreSQL: from schema N to N + 1
    1: ("ALTER TABLE blobs DROP CONSTRAINT IF EXISTS blobs_version_fkey", *DELETED),
    2: PG_TENANTS,
    3: PG_JOBS,
    4: WEIGHTS,
    5: PG_OWNERS_UPGRADE,
}


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    task_id: str
    version: str  # sha256 hex of the artifact file's bytes: the content address
    number: int  # 1-based, per task, in publish order
    created_at: str  # when this version was published (ISO-8601 UTC)
    kind: str
    nbytes: int  # size of the artifact file
    aliases: tuple[str, ...]  # aliases pointing at this version, sorted

    @property
    def short(self) -> str:
        return self.version[:12]


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    task_id: str
    kind: str  # the latest version's kind
    latest: VersionInfo
    num_versions: int
    aliases: dict[str, str]  # alias -> version


def bump(c: Conn) -> None:
    c.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")


def generation(c: Conn) -> int:
    return int(c.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


def schema_version(c: Conn) -> int:
    return int(c.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0])


def referenced_versions(c: Conn) -> set[str]:
    """Versions whose bytes must stay: live ones and those of deleted tasks not yet purged."""
    return {v for (v,) in c.execute("SELECT version FROM versions UNION "
                                    "SELECT version FROM deleted_versions")}


def upgrade(c: Conn, steps: Mapping[int, tuple[str, ...]]) -> int:
    """Bring an older catalog up to CATALOG_SCHEMA in place (inside the caller's write
    transaction); the schema it had."""
    found = schema_version(c)
    for n in range(found, CATALOG_SCHEMA):
        for stmt in steps[n]:
            c.execute(stmt)
        c.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (n + 1,))
    return found


def point(c: Conn, task_id: str, alias: str, version: str) -> bool:
    """Set an alias; True if that changed anything."""
    row = c.execute("SELECT version FROM aliases WHERE task_id = ? AND alias = ?",
                    (task_id, alias)).fetchone()
    if row is not None and row[0] == version:
        return False
    c.execute("INSERT INTO aliases (task_id, alias, version) VALUES (?, ?, ?) "
              "ON CONFLICT (task_id, alias) DO UPDATE SET version = excluded.version",
              (task_id, alias, version))
    return True


def require_task(c: Conn, task_id: str) -> None:
    if not is_task_id(task_id):
        raise NotFoundError(f"no task {task_id!r:.80}")
    if c.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)).fetchone() is None:
        # a task deleted within its retention says so (the caller sees its namespace: the
        # gate answers another tenant's task in the plain words, before the store is read)
        row = c.execute("SELECT MAX(expires_at) FROM deleted_tasks WHERE task_id = ?",
                        (task_id,)).fetchone()
        until = f" (deleted; restorable until {row[0]}: `polyhead tasks restore {task_id}`)" \
            if row is not None and row[0] is not None else ""
        raise NotFoundError(f"no task {task_id!r:.80}{until}")


def resolve(c: Conn, task_id: str, ref: str) -> str:
    require_task(c, task_id)
    row = c.execute("SELECT version FROM aliases WHERE task_id = ? AND alias = ?",
                    (task_id, ref)).fetchone()
    if row is None and (n := version_number_ref(ref)) is not None:
        row = c.execute("SELECT version FROM versions WHERE task_id = ? AND number = ?",
                        (task_id, n)).fetchone()
    if row is None and (prefix := hex_prefix(ref)) is not None:
        rows = c.execute("SELECT version FROM versions WHERE task_id = ? AND version >= ? "
                         "AND version < ? LIMIT 2", (task_id, prefix, prefix + "g")).fetchall()
        if len(rows) > 1:
            raise AmbiguousRefError(f"task {task_id!r}: {ref!r} matches several versions")
        row = rows[0] if rows else None
    if row is None:
        raise NotFoundError(f"task {task_id!r} has no version or alias {ref!r:.80} (a version is "
                            "a number such as v1, or a hash prefix of >= 8 hex digits)")
    return str(row[0])


def aliases_by_version(c: Conn, task_id: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for alias, version in c.execute("SELECT alias, version FROM aliases WHERE task_id = ? "
                                    "ORDER BY alias", (task_id,)):
        out.setdefault(version, []).append(alias)
    return {v: tuple(a) for v, a in out.items()}


def info(c: Conn, version: str) -> VersionInfo:
    row = c.execute("SELECT * FROM versions WHERE version = ?", (version,)).fetchone()
    aliases = tuple(a for (a,) in c.execute(
        "SELECT alias FROM aliases WHERE version = ? ORDER BY alias", (version,)))
    return row_info(row, aliases)


def row_info(row: tuple[str, str, int, str, int, str], aliases: tuple[str, ...]) -> VersionInfo:
    version, task_id, number, kind, nbytes, created_at = row
    return VersionInfo(task_id, version, number, created_at, kind, nbytes, aliases)


CONSISTENCY = {  # what is wrong -> a query listing the rows that are
    "task has no versions":
        "SELECT task_id FROM tasks WHERE task_id NOT IN (SELECT task_id FROM versions)",
    "task has no 'latest' alias":
        "SELECT task_id FROM tasks WHERE task_id NOT IN "
        "(SELECT task_id FROM aliases WHERE alias = 'latest')",
    "version of an unknown task":
        "SELECT task_id || ' ' || version FROM versions "
        "WHERE task_id NOT IN (SELECT task_id FROM tasks)",
    "alias to a missing version or another task's":
        "SELECT a.task_id || ' ' || a.alias FROM aliases a LEFT JOIN versions v "
        "ON v.version = a.version WHERE v.task_id IS NULL OR v.task_id != a.task_id",
}


def consistency_problems(c: Conn) -> list[str]:
    problems: list[str] = []
    for what, query in CONSISTENCY.items():
        problems.extend(f"catalog: {what}: {item}" for (item,) in c.execute(query))
    problems.extend(f"catalog: bad task id {t!r}" for (t,) in c.execute("SELECT task_id FROM tasks")
                    if not is_task_id(t))
    return problems
