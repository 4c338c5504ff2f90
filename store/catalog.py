"""The catalog: content-addressed blobs plus an SQLite index of tasks, versions and aliases.

Knows nothing of artifact contents (no torch): `polyhead store list` stays fast, and a
server can poll ``generation()`` cheaply. Invariants, kept under SQLite's write lock
(``BEGIN IMMEDIATE``):
  - a version row exists only once its blob is complete on disk (blob written to a temp
    file, fsynced, renamed; the row is committed after);
  - blobs without a row (a publisher killed before its commit) are garbage: ``gc`` takes
    them while holding the write lock, and a publisher re-checks its blob under the lock.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from store import sql
from store.errors import NotFoundError, StoreError
from store.names import LATEST, VERSION_RE, alias_problem
from store.paths import atomic_write, fsync_dir, sha256_file
from store.sql import TaskInfo, VersionInfo

STALE_TMP_S = 3600.0  # temp files older than this belong to dead publishers
# SQLite journal modes the catalog may use. "wal" (default): readers never wait for a writer,
# but its shared-memory index only works when every process is on one host. "delete": the
# rollback journal, for a store on a network filesystem that several hosts mount at once
# (a KubeRay ReadWriteMany volume); it relies on the filesystem's POSIX locks.
JOURNAL_MODES = ("wal", "delete")
__all__ = ["JOURNAL_MODES", "STALE_TMP_S", "Catalog", "TaskInfo", "VersionInfo", "default_root",
           "journal_mode"]


def default_root() -> Path:
    return Path(os.environ.get("POLYHEAD_STORE") or "polyhead-store")


def journal_mode(mode: str | None = None) -> str:
    """``mode``, else ``$POLYHEAD_STORE_JOURNAL``, else "wal"; refused unless in JOURNAL_MODES."""
    value = (mode or os.environ.get("POLYHEAD_STORE_JOURNAL") or "wal").strip().lower()
    if value not in JOURNAL_MODES:
        raise StoreError(f"unknown store journal mode {value!r} ($POLYHEAD_STORE_JOURNAL): "
                         f"use one of {', '.join(JOURNAL_MODES)}")
    return value


class Catalog:
    """Blobs under ``root/blobs/ab/<sha256>``, the index in ``root/catalog.sqlite``.

    Thread-safe (one SQLite connection per thread) and safe across processes.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, journal: str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.journal = journal_mode(journal)
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        try:
            for d in (self.root, self.blob_dir, self.tmp_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the store at {self.root}: {e}") from e
        self.db_path = self.root / "catalog.sqlite"
        self._local = threading.local()
        self._init_schema()

    # -- connections and transactions ----------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # new thread, or a forked child
            try:
                new = sqlite3.connect(self.db_path, timeout=60.0, isolation_level=None,
                                       check_same_thread=False)
                for pragma in sql.PRAGMAS:
                    new.execute(pragma)
                _set_journal(new, self.journal)
            except sqlite3.Error as e:
                raise StoreError(f"cannot open the catalog {self.db_path}: {e}") from e
            # A connection inherited over fork must not be used, nor closed, in the child.
            local.inherited = getattr(local, "conn", None)
            local.conn, local.pid = new, os.getpid()
        conn: sqlite3.Connection = local.conn
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One writer at a time across processes; rolled back on any exception."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreError(f"catalog is locked: {e}") from e
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several queries (in WAL mode it never waits for writers)."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _init_schema(self) -> None:
        conn = self._conn()
        row = None
        with contextlib.suppress(sqlite3.OperationalError):
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            with self._write() as c:
                for stmt in sql.SCHEMA:
                    c.execute(stmt)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row[0] > sql.CATALOG_SCHEMA:
            raise StoreError(f"{self.db_path}: catalog schema {row[0]} is newer than this polyhead "
                             f"({sql.CATALOG_SCHEMA})")

    def close(self) -> None:
        """Close this thread's connection (others close when their threads' objects go)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = self._local.pid = None

    # -- blobs ---------------------------------------------------------------------------

    def blob_path(self, version: str) -> Path:
        return self.blob_dir / version[:2] / version

    def _put_blob(self, version: str, data: bytes) -> None:
        path = self.blob_path(version)
        if path.is_file() and sha256_file(path) == version:
            return
        if not path.parent.is_dir():
            path.parent.mkdir(exist_ok=True)
            fsync_dir(self.blob_dir)
        atomic_write(path, data, tmp_dir=self.tmp_dir, mode=0o444)

    def _read_blob(self, info: VersionInfo) -> bytes:
        try:
            data = self.blob_path(info.version).read_bytes()
        except FileNotFoundError as e:
            with self._read() as c:
                gone = c.execute("SELECT 1 FROM versions WHERE version = ?",
                                 (info.version,)).fetchone() is None
            if gone:
                raise NotFoundError(f"{info.task_id}: version {info.short} was deleted") from e
            raise StoreError(f"{info.task_id}: blob of version {info.short} is missing; "
                             "run `polyhead store verify`") from e
        if _sha256(data) != info.version:
            raise StoreError(f"{info.task_id}: blob of version {info.short} is corrupt "
                             "(sha256 mismatch); run `polyhead store verify`")
        return data

    # -- writes --------------------------------------------------------------------------

    def add_version(self, task_id: str, data: bytes, kind: str) -> VersionInfo:
        """Store ``data`` (already validated) as a version of ``task_id`` and point
        ``latest`` at it. Identical bytes give the existing version."""
        version = _sha256(data)
        self._put_blob(version, data)  # the slow part, outside the lock
        with self._write() as c:
            if not self.blob_path(version).is_file():  # gc took it before we held the lock
                self._put_blob(version, data)
            row = c.execute("SELECT task_id FROM versions WHERE version = ?", (version,)).fetchone()
            if row is not None and row[0] != task_id:
                raise StoreError(f"version {version[:12]} belongs to task {row[0]!r}")
            changed = row is None
            if row is None:
                now = _now()
                c.execute("INSERT OR IGNORE INTO tasks (task_id, created_at) VALUES (?, ?)",
                          (task_id, now))
                (number,) = c.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM versions "
                                      "WHERE task_id = ?", (task_id,)).fetchone()
                c.execute("INSERT INTO versions (version, task_id, number, kind, nbytes, created_at) "
                          "VALUES (?, ?, ?, ?, ?, ?)", (version, task_id, number, kind, len(data), now))
            changed |= sql.point(c, task_id, LATEST, version)
            if changed:
                sql.bump(c)
            return sql.info(c, version)

    def set_alias(self, task_id: str, alias: str, version: str) -> VersionInfo:
        """Point ``alias`` at a version (``version`` is any ref: alias, hex, prefix, ``v3``)."""
        problem = alias_problem(alias)
        if problem:
            raise StoreError(problem)
        with self._write() as c:
            target = sql.resolve(c, task_id, version)
            if sql.point(c, task_id, alias, target):
                sql.bump(c)
            return sql.info(c, target)

    def rollback(self, task_id: str, version: str) -> VersionInfo:
        """Point ``latest`` at an earlier (or any) version of the task."""
        return self.set_alias(task_id, LATEST, version)

    def remove_alias(self, task_id: str, alias: str) -> None:
        if alias == LATEST:
            raise StoreError("'latest' cannot be removed; delete the task instead")
        with self._write() as c:
            sql.require_task(c, task_id)
            if c.execute("DELETE FROM aliases WHERE task_id = ? AND alias = ?",
                         (task_id, alias)).rowcount == 0:
                raise NotFoundError(f"task {task_id!r} has no alias {alias!r}")
            sql.bump(c)

    def delete(self, task_id: str) -> None:
        """The task stops resolving at once; blobs no longer referenced are collected."""
        with self._write() as c:
            sql.require_task(c, task_id)
            for table in ("aliases", "versions", "tasks"):
                c.execute(f"DELETE FROM {table} WHERE task_id = ?", (task_id,))
            sql.bump(c)
        self.gc()

    def gc(self, stale_tmp_s: float = STALE_TMP_S) -> list[str]:
        """Remove blobs no version refers to, and temp files older than ``stale_tmp_s``
        (those of live publishers are younger); return the paths removed."""
        removed = []
        with self._write() as c:  # holding the lock: no publish can commit meanwhile
            live = {v for (v,) in c.execute("SELECT version FROM versions")}
            for path in self.blob_dir.glob("*/*"):
                if VERSION_RE.fullmatch(path.name) and path.name not in live:
                    path.unlink(missing_ok=True)
                    removed.append(str(path))
        cutoff = time.time() - stale_tmp_s
        for path in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime <= cutoff:
                    path.unlink()
                    removed.append(str(path))
        return removed

    # -- reads ---------------------------------------------------------------------------

    def generation(self) -> int:
        """Changes on every catalog change; one indexed read (a few µs)."""
        row = self._conn().execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0])

    def resolve(self, task_id: str, ref: str = LATEST) -> VersionInfo:
        """``ref``: an alias, a full version, a unique prefix of >= 8 hex chars, or ``v3``."""
        with self._read() as c:
            return sql.info(c, sql.resolve(c, task_id, ref))

    def read_bytes(self, task_id: str, ref: str = LATEST) -> tuple[VersionInfo, bytes]:
        """The artifact file of a version, its sha256 checked."""
        info = self.resolve(task_id, ref)
        return info, self._read_blob(info)

    def history(self, task_id: str) -> list[VersionInfo]:
        """Every version of the task, oldest first."""
        with self._read() as c:
            sql.require_task(c, task_id)
            rows = c.execute("SELECT * FROM versions WHERE task_id = ? ORDER BY number",
                             (task_id,)).fetchall()
            aliases = sql.aliases_by_version(c, task_id)
        return [sql.row_info(r, aliases.get(r[0], ())) for r in rows]

    def list_tasks(self) -> list[TaskInfo]:
        with self._read() as c:
            latest = c.execute("SELECT v.* FROM aliases a JOIN versions v ON v.version = a.version "
                               "WHERE a.alias = ? ORDER BY a.task_id", (LATEST,)).fetchall()
            counts = dict(c.execute("SELECT task_id, COUNT(*) FROM versions GROUP BY task_id"))
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

    def versions(self) -> list[VersionInfo]:
        """Every version of every task (for verify and tools)."""
        with self._read() as c:
            rows = c.execute("SELECT * FROM versions ORDER BY task_id, number").fetchall()
            aliases: dict[str, list[str]] = {}
            for alias, version in c.execute("SELECT alias, version FROM aliases ORDER BY alias"):
                aliases.setdefault(version, []).append(alias)
        return [sql.row_info(r, tuple(aliases.get(r[0], ()))) for r in rows]

    # -- health --------------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Problems found (corrupt or missing blobs, dangling rows); empty means healthy."""
        problems = self._check_catalog()
        for info in self.versions():
            where = f"{info.task_id} v{info.number} ({info.short})"
            try:
                data = self.blob_path(info.version).read_bytes()
            except OSError as e:
                problems.append(f"{where}: blob unreadable: {e.strerror or e}")
                continue
            if _sha256(data) != info.version:
                problems.append(f"{where}: blob sha256 mismatch (corrupt)")
            elif len(data) != info.nbytes:
                problems.append(f"{where}: catalog says {info.nbytes} bytes, blob has {len(data)}")
            else:
                problems.extend(f"{where}: {p}" for p in self._check_blob(info, data))
        return problems

    def _check_blob(self, info: VersionInfo, data: bytes) -> list[str]:
        """Content checks of a blob whose hash is right (the Store decodes it)."""
        return []

    def _check_catalog(self) -> list[str]:
        with self._read() as c:
            return sql.consistency_problems(c)

def _set_journal(conn: sqlite3.Connection, mode: str, wait_s: float = 30.0) -> None:
    """Put the catalog in journal ``mode`` (persistent in the file). Processes opening the same
    store at once race for the lock a switch needs, and SQLite does not wait for it: retry.
    Leaving WAL needs every other connection closed, so a store still open elsewhere in the
    other mode is refused with a message rather than waited on for ever."""
    deadline = time.monotonic() + wait_s
    while (current := conn.execute("PRAGMA journal_mode").fetchone()[0]) != mode:
        with contextlib.suppress(sqlite3.OperationalError):
            conn.execute(f"PRAGMA journal_mode = {mode.upper()}")
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError(
                f"journal mode is {current!r}, cannot switch it to {mode!r} while other processes "
                f"have the store open in {current!r} mode: stop them, or give every process the "
                f"same $POLYHEAD_STORE_JOURNAL")
        time.sleep(0.01)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


