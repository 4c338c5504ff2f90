"""The catalog on one host: content-addressed blob files plus an SQLite index.

Invariants, kept under SQLite's write lock (``BEGIN IMMEDIATE``):
  - a version row exists only once its blob is complete on disk (blob written to a temp
    file, fsynced, renamed; the row is committed after);
  - blobs without a row (a publisher killed before its commit) are garbage: ``gc`` takes
    them while holding the write lock, and a publisher re-checks its blob under the lock.
Replicas learn of changes by polling the generation (``PollingFeed``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from polyhead.store import sql
from polyhead.store.catalog import Catalog, ChangeFeed, PollingFeed, journal_mode
from polyhead.store.errors import StoreError
from polyhead.store.names import VERSION_RE
from polyhead.store.paths import BLOB_MODE, atomic_write, fsync_dir, private_dir, private_file, sha256_file
from polyhead.store.sql import Conn, VersionInfo

T = TypeVar("T")
STALE_TMP_S = 3600.0  # temp files older than this belong to dead publishers


class SqliteCatalog(Catalog):
    """Blobs under ``root/blobs/ab/<sha256>``, the index in ``root/catalog.sqlite``.

    Thread-safe (one SQLite connection per thread) and safe across processes.
    """

    def __init__(self, root: str | os.PathLike[str], journal: str | None = None, *,
                 create: bool = True) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self.journal = journal_mode(journal)
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        self.db_path = self.root / "catalog.sqlite"
        if not create and not self.db_path.is_file():
            raise StoreError(f"no store at {self.root} (pass --store PATH or set $POLYHEAD_STORE)")
        try:
            private_dir(self.root, parents=True)
            for d in (self.blob_dir, self.tmp_dir):
                private_dir(d)
            private_file(self.db_path)
        except OSError as e:
            raise StoreError(f"cannot create the store at {self.root}: {e}") from e
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

    def _writing(self, body: Callable[[Conn], T]) -> T:
        """One writer at a time across processes; rolled back on any exception."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreError(f"catalog is locked: {e}") from e
        try:
            out = body(conn)
            conn.execute("COMMIT")
            return out
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _reading(self, body: Callable[[Conn], T]) -> T:
        """A consistent snapshot for several queries (in WAL mode it never waits for writers)."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            return body(conn)
        finally:
            conn.execute("COMMIT")

    @staticmethod
    def _create_schema(c: Conn) -> None:
        """The catalog's tables, in a write transaction; nothing if another process made them
        while this one waited for the write lock (schema 5's ALTER TABLE is not idempotent)."""
        made = c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        if made is not None:
            return
        for stmt in sql.SCHEMA:
            c.execute(stmt)

    def _init_schema(self) -> None:
        conn = self._conn()
        row = None
        with contextlib.suppress(sqlite3.OperationalError):
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            self._writing(self._create_schema)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row[0] > sql.CATALOG_SCHEMA:
            raise StoreError(f"{self.db_path}: catalog schema {row[0]} is newer than this polyhead "
                             f"({sql.CATALOG_SCHEMA}); upgrade polyhead to use this store")
        if row[0] < sql.CATALOG_SCHEMA:  # an older store: upgraded in place, once
            self._writing(lambda c: sql.upgrade(c, sql.UPGRADE))

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
            private_dir(path.parent)
            fsync_dir(self.blob_dir)
        atomic_write(path, data, tmp_dir=self.tmp_dir, mode=BLOB_MODE)

    def _stage_blob(self, version: str, data: bytes) -> None:
        self._put_blob(version, data)

    def _keep_blob(self, c: Conn, version: str, data: bytes) -> None:
        if not self.blob_path(version).is_file():  # gc took it before we held the lock
            self._put_blob(version, data)

    def _load_blob(self, info: VersionInfo, *, cached: bool = True) -> bytes | None:
        try:
            return self.blob_path(info.version).read_bytes()
        except FileNotFoundError:
            return None

    def _collect(self, c: Conn, stale_tmp_s: float = STALE_TMP_S) -> list[str]:
        removed = []
        live = sql.referenced_versions(c)
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

    def gc(self, stale_tmp_s: float = STALE_TMP_S) -> list[str]:
        """Purge deleted tasks whose retention ended; remove blobs no version (live or
        deleted) refers to, and temp files older than ``stale_tmp_s`` (those of live
        publishers are younger); what was purged and the paths removed."""
        return self._writing(lambda c: self._purge(c) + self._collect(c, stale_tmp_s))

    # -- reads ---------------------------------------------------------------------------

    def generation(self) -> int:
        """Changes on every catalog change; one indexed read (a few µs)."""
        return sql.generation(self._conn())

    def watch(self, poll_s: float = 0.05) -> ChangeFeed:
        return PollingFeed(self, poll_s)

    def _integrity(self, c: Conn) -> list[str]:
        (ok,) = c.execute("PRAGMA quick_check").fetchone()
        return [] if ok == "ok" else [f"catalog: sqlite quick_check: {ok}"]


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
