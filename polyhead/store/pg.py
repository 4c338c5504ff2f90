"""The catalog in PostgreSQL (psycopg 3): rows and artifact bytes in one database, for a cluster.

Location: ``postgresql://USER:PASSWORD@HOST:PORT/DATABASE`` (libpq URL; ``?host=/socket/dir``
and ``sslmode=...`` work). The tables live in the schema ``polyhead``, created on first use
and versioned (a newer schema is refused). Guarantees, as the SQLite backend's:
  - a publish is one transaction: the version row and its bytes commit together, so a
    version is visible only with its bytes durable (PostgreSQL's WAL, synchronous commit);
  - writers are serializable and one at a time: each write transaction is SERIALIZABLE and
    first takes a self-exclusive lock on ``meta`` (readers never wait); serialization
    failures and deadlocks (e.g. against other tools) are retried with backoff, so
    concurrent publishers on any number of hosts never lose or duplicate a version;
  - every change NOTIFYs channel ``polyhead`` with the new generation; a replica LISTENs on
    one connection (``PgFeed``), reconnects with backoff, and reads the generation after a
    reconnect, so changes made while it was cut off are not missed;
  - read bytes go through the local ``BlobCache`` (hash checked on every read).
A connection lost under a call is replaced and the call retried (a write is idempotent by
content); a database that stays unreachable is ``StoreUnavailable``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerr

from polyhead.store import sql
from polyhead.store.cache import BlobCache
from polyhead.store.catalog import Catalog, ChangeFeed, redact
from polyhead.store.errors import StoreError, StoreUnavailable
from polyhead.store.sql import Conn, VersionInfo

T = TypeVar("T")
CHANNEL = sql.PG_SCHEMA_NAME  # NOTIFY channel; payload: the new generation
CONNECT_TIMEOUT_S = 5
WRITE_ATTEMPTS = 12  # serialization failures / deadlocks before giving up
RECONNECTS = 3  # a lost connection under one call: replaced this many times
SCHEMA_LOCK = 0x706F6C79  # advisory lock id held while creating the schema
FEED_BACKOFF_S = (0.05, 2.0)  # the listener's reconnect delay, doubling from min to max
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def connect(url: str, location: str, **options: Any) -> psycopg.Connection[Any]:
    """An autocommit connection with ``search_path`` on the polyhead schema. A server that
    refuses us (bad password, no such database) is a StoreError; one that cannot be reached
    is StoreUnavailable."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="polyhead", **options)
    except psycopg.ProgrammingError as e:  # libpq could not parse the URL
        raise StoreError(f"bad store URL {location}: {_line(e)}") from e
    except psycopg.OperationalError as e:
        error = StoreError if _refused(str(e)) else StoreUnavailable
        raise error(f"cannot connect to the store at {location}: {_line(e)}") from e
    conn.execute(f"SET search_path TO {sql.PG_SCHEMA_NAME}")
    return conn


class _Tx:
    """A psycopg connection that takes the shared queries' ``?`` placeholders."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, query: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(query.replace("?", "%s"), tuple(params) or None)


class PgCatalog(Catalog):
    """Thread-safe (one connection per thread) and safe across processes and hosts."""

    def __init__(self, url: str, *, create: bool = True,
                 cache: str | os.PathLike[str] | None = None) -> None:
        self.url = url
        self.location = redact(url)
        self.cache = BlobCache.from_env(cache)
        self.db_reads = 0  # artifact bytes read from the database (not the cache)
        self._local = threading.local()
        self._inherited: list[Any] = []  # connections of a parent process: never used nor closed
        self._init_schema(create)

    # -- connections and transactions --------------------------------------------------------

    def _conn(self) -> psycopg.Connection[Any]:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid != os.getpid():
            self._inherited.append(conn)  # closing it would end the parent's session
            conn = None
        if conn is None or conn.closed or conn.broken:
            local.conn, local.pid = connect(self.url, self.location), os.getpid()
        result: psycopg.Connection[Any] = local.conn
        return result

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and self._local.pid == os.getpid():
            conn.close()

    def close(self) -> None:
        self._drop()

    def _writing(self, body: Callable[[Conn], T]) -> T:
        failures = lost = 0
        while True:
            conn = self._conn()
            try:
                conn.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
                conn.execute("LOCK TABLE meta IN SHARE ROW EXCLUSIVE MODE")  # before any read
                out = body(_Tx(conn))
                conn.execute("COMMIT")
                return out
            except (pgerr.SerializationFailure, pgerr.DeadlockDetected) as e:
                _rollback(conn)
                failures += 1
                if failures > WRITE_ATTEMPTS:
                    raise StoreError(f"store {self.location}: write gave up after {failures} "
                                     f"conflicts: {_line(e)}") from e
                _sleep_backoff(failures)
            except psycopg.Error as e:
                lost = self._lost(conn, e, lost)
            except BaseException:
                _rollback(conn)
                raise

    def _reading(self, body: Callable[[Conn], T], snapshot: bool = True) -> T:
        lost = 0
        while True:
            conn = self._conn()
            try:
                if snapshot:
                    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                out = body(_Tx(conn))
                if snapshot:
                    conn.execute("COMMIT")
                return out
            except psycopg.Error as e:
                lost = self._lost(conn, e, lost)
            except BaseException:
                _rollback(conn)
                raise

    def _lost(self, conn: psycopg.Connection[Any], e: psycopg.Error, lost: int) -> int:
        """After a database error: a lost connection is replaced (the caller retries), up to
        RECONNECTS times; any other error is a StoreError."""
        if not (conn.closed or conn.broken):
            _rollback(conn)
            raise StoreError(f"store {self.location}: {_line(e)}") from e
        self._drop()
        if lost >= RECONNECTS:
            raise StoreUnavailable(f"lost the connection to the store at {self.location}: "
                                   f"{_line(e)}") from e
        _sleep_backoff(lost + 1)
        return lost + 1

    def _create_schema(self, conn: psycopg.Connection) -> None:
        """The catalog's tables, under the schema lock; nothing if another process made them
        since this one looked (schema 5's ALTER TABLE is not idempotent)."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            # a query of pg_tables, not to_regclass: an advisory lock does not refresh the
            # catalog caches of this transaction
            made = conn.execute("SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s "
                                "AND tablename = 'meta'", (sql.PG_SCHEMA_NAME,)).fetchone()
            if made is None:
                for stmt in sql.PG_SCHEMA:
                    conn.execute(stmt)

    def _init_schema(self, create: bool) -> None:
        conn = self._conn()
        try:
            exists = conn.execute("SELECT to_regclass(%s)", (f"{sql.PG_SCHEMA_NAME}.meta",)
                                  ).fetchone()
            if exists is None or exists[0] is None:
                if not create:
                    raise StoreError(f"no polyhead store in {self.location} (one is created on "
                                     "first publish or serve)")
                self._create_schema(conn)
            found = sql.schema_version(_Tx(conn))
            if found < sql.CATALOG_SCHEMA:  # an older store: upgraded in place, once
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                    sql.upgrade(_Tx(conn), sql.PG_UPGRADE)
        except psycopg.Error as e:
            raise StoreError(f"cannot set up the store in {self.location}: {_line(e)}") from e
        if found > sql.CATALOG_SCHEMA:
            raise StoreError(f"{self.location}: catalog schema {found} is newer than this polyhead "
                             f"({sql.CATALOG_SCHEMA}); upgrade polyhead to use this store")

    # -- bytes -------------------------------------------------------------------------------

    def _keep_blob(self, c: Conn, version: str, data: bytes) -> None:
        # the bytes may be there already: kept for a deleted task's version
        c.execute("INSERT INTO blobs (version, data) VALUES (?, ?) ON CONFLICT (version) DO NOTHING",
                  (version, data))

    def _load_blob(self, info: VersionInfo, *, cached: bool = True) -> bytes | None:
        cache = self.cache if cached else None
        if cache is not None:
            hit = cache.get(info.version)
            if hit is not None:
                return hit

        def body(c: Conn) -> bytes | None:
            assert isinstance(c, _Tx)
            row = c.conn.cursor(binary=True).execute(
                "SELECT data FROM blobs WHERE version = %s", (info.version,)).fetchone()
            return None if row is None else bytes(row[0])

        data = self._reading(body, snapshot=False)
        self.db_reads += 1
        if cache is not None and data is not None and _sha256(data) == info.version:
            cache.put(info.version, data)
        return data

    def _collect(self, c: Conn) -> list[str]:
        live = sql.referenced_versions(c)
        stored = [v for (v,) in c.execute("SELECT version FROM blobs")]
        gone = [v for v in stored if v not in live]
        for v in gone:
            c.execute("DELETE FROM blobs WHERE version = ?", (v,))
        return [f"blob {v}" for v in gone]

    # -- changes -----------------------------------------------------------------------------

    def _changed(self, c: Conn) -> None:
        sql.bump(c)
        c.execute("SELECT pg_notify(?, (SELECT value FROM meta WHERE key = 'generation')::text)",
                  (CHANNEL,))  # delivered at commit, to every listener of this database

    def generation(self) -> int:
        return self._reading(sql.generation, snapshot=False)

    def watch(self, poll_s: float = 0.05) -> ChangeFeed:
        return PgFeed(self)


class PgFeed:
    """LISTEN on one dedicated connection; reconnect with backoff when it is lost, and read the
    generation after every (re)connect (a change made meanwhile sent its NOTIFY to no one)."""

    def __init__(self, catalog: PgCatalog) -> None:
        self.catalog = catalog
        self.last = catalog.generation()
        self._conn: psycopg.Connection[Any] | None = None
        self._backoff = FEED_BACKOFF_S[0]
        self._retry_at = 0.0
        self._seen: int | None = None  # generation read at the last (re)connect
        self.reconnects = 0

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self._listening():
                time.sleep(max(0.0, min(left, self._retry_at - time.monotonic())))
                continue
            gen, self._seen = self._seen, None
            if gen is None:
                gen = self._next(left)
            if gen is not None and gen != self.last:
                self.last = gen
                return gen
        return self.last

    def _next(self, timeout: float) -> int | None:
        assert self._conn is not None
        try:
            for note in self._conn.notifies(timeout=timeout, stop_after=1):
                return int(note.payload)
        except psycopg.Error:
            self._close()
        return None

    def _listening(self) -> bool:
        conn = self._conn
        if conn is not None and not (conn.closed or conn.broken):
            return True
        self._close()
        now = time.monotonic()
        if now < self._retry_at:
            return False
        try:
            conn = connect(self.catalog.url, self.catalog.location, **KEEPALIVES)
            conn.execute(f"LISTEN {CHANNEL}")
            self._seen = sql.generation(_Tx(conn))
        except (StoreError, psycopg.Error):
            self._retry_at = now + self._backoff
            self._backoff = min(2 * self._backoff, FEED_BACKOFF_S[1])
            return False
        self._conn, self._backoff = conn, FEED_BACKOFF_S[0]
        self.reconnects += 1
        return True

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._close()


def _rollback(conn: psycopg.Connection[Any]) -> None:
    if not (conn.closed or conn.broken):
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            conn.close()


def _sleep_backoff(attempt: int) -> None:
    time.sleep(min(1.0, 0.005 * 2 ** attempt) * random.uniform(0.5, 1.5))


def _refused(message: str) -> bool:
    """The server answered and refused (no such database or user, bad password): a wrong
    URL, not an outage; a server starting, stopping or full is an outage."""
    transient = ("starting up", "shutting down", "in recovery", "too many", "remaining connection")
    return "FATAL" in message and not any(t in message for t in transient)


def _line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
