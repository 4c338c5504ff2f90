"""What only the PostgreSQL backend has: the replica's byte cache, schema versioning, clear
errors for a bad URL, the change feed (push, and reconnection after a server restart), and
`polyhead store copy` between the two backends. A real PostgreSQL server (pgserver)."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest

from polyhead.cli import main
from polyhead.store import NotFoundError, Store, StoreError, StoreUnavailable, open_catalog
from tests import test_store_support as support
from tests.test_store_support import make_file, new_database

location, pg_url = support.location, support.pg_url  # fixtures (pg_server: conftest)
SECRET = "s3cret-pw"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["store", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


# -- the replica's byte cache ---------------------------------------------------------------

def test_cache_serves_known_versions_without_the_database(pg_url, tiny_bert, tmp_path,
                                                          monkeypatch) -> None:
    info = Store(pg_url, tiny_bert.spec).publish(make_file(tiny_bert.spec, seed=1))
    first = Store(pg_url, tiny_bert.spec)
    assert first.get("sst2").info == info and first.catalog.db_reads == 1
    restarted = Store(pg_url, tiny_bert.spec)  # a restarted replica: same host, same cache
    assert restarted.get("sst2").info == info and restarted.catalog.db_reads == 0
    cached = restarted.catalog.cache.path(info.version)
    cached.chmod(0o644)
    cached.write_bytes(b"\0" + cached.read_bytes()[1:])  # damaged on the replica's disk
    assert restarted.get("sst2").info == info and restarted.catalog.db_reads == 1
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == info.version  # fetched again
    support.damage(restarted.catalog, info.version)  # the database's copy goes bad
    assert restarted.get("sst2").info == info  # the cache still holds good bytes...
    assert any("sha256 mismatch" in p for p in restarted.verify())  # ...verify reads past it
    monkeypatch.setenv("POLYHEAD_STORE_CACHE", "off")
    uncached = Store(pg_url, tiny_bert.spec)
    assert uncached.catalog.cache is None
    with pytest.raises(StoreError, match="corrupt"):
        uncached.get("sst2")


# -- schema and location errors -------------------------------------------------------------

def test_schema_is_created_once_and_a_newer_one_refused(pg_url, capsys) -> None:
    with pytest.raises(StoreError, match="no polyhead store"):
        open_catalog(pg_url, create=False)
    catalog = open_catalog(pg_url)
    assert catalog.generation() == 0 and open_catalog(pg_url, create=False).versions() == []
    catalog._writing(lambda c: c.execute("UPDATE meta SET value = 99 WHERE key = 'schema'"))
    with pytest.raises(StoreError, match="schema 99 is newer than this polyhead"):
        open_catalog(pg_url)
    code, _, err = cli(capsys, "list", "--store", pg_url)
    assert code == 2 and "schema 99" in err and len(err.strip().splitlines()) == 1


def test_unreachable_and_wrong_urls_are_clear_errors(pg_server, capsys) -> None:
    down = f"postgresql://polyhead:{SECRET}@127.0.0.1:1/polyhead"  # nothing listens on port 1
    with pytest.raises(StoreUnavailable, match="cannot connect to the store at") as e:
        open_catalog(down)
    assert SECRET not in str(e.value) and "***" in str(e.value)
    no_db = pg_server.get_uri("no_such_database")
    with pytest.raises(StoreError, match="no_such_database") as e2:
        open_catalog(no_db)
    assert not isinstance(e2.value, StoreUnavailable)  # a wrong URL, not an outage
    with pytest.raises(StoreError, match="unknown store location mysql://"):
        open_catalog("mysql://u@h/db")
    for bad in (down, no_db, "postgresql://h:notaport/db"):
        code, _, err = cli(capsys, "list", "--store", bad)
        assert code == 2 and len(err.strip().splitlines()) == 1 and SECRET not in err, err


# -- the change feed ------------------------------------------------------------------------

def test_feed_is_pushed_every_change(pg_url, tiny_bert) -> None:
    store = Store(pg_url, tiny_bert.spec)
    feed = store.watch()
    publisher = Store(pg_url, tiny_bert.spec)  # another process or host in a cluster
    seen: list[int] = []
    for change in (lambda: publisher.publish(make_file(tiny_bert.spec, seed=1)),
                   lambda: publisher.publish(make_file(tiny_bert.spec, seed=2)),
                   lambda: publisher.set_alias("sst2", "stable", "v1"),
                   lambda: publisher.rollback("sst2", "v1"),
                   lambda: publisher.delete("sst2")):
        thread = threading.Thread(target=change)
        thread.start()
        seen.append(feed.wait(30.0))  # returns when the NOTIFY arrives (30 s: only a stop)
        thread.join()
        assert seen[-1] == publisher.generation()
    assert seen == [1, 2, 3, 4, 5]
    assert feed.wait(0.05) == 5  # nothing changed: times out with the last generation
    feed.close()


def _pg_ctl(server: Any, action: str) -> None:
    """Stop or start the shared server (fast shutdown ends every client session)."""
    from pgserver._commands import pg_ctl
    from pgserver.utils import PostmasterInfo

    if action == "stop":
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
        return
    socket_dir = server.get_postmaster_info().socket_dir
    pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log), "start"],
           pgdata=server.pgdata, user=server.system_user, timeout=60)
    server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)  # for cleanup


def test_replica_reconnects_after_a_server_restart(pg_server, pg_url, tiny_bert) -> None:
    replica = Store(pg_url, tiny_bert.spec)
    feed = replica.watch()
    v1 = replica.publish(make_file(tiny_bert.spec, seed=1))
    assert feed.wait(30.0) == 1 and replica.get("sst2").info == v1
    _pg_ctl(pg_server, "stop")
    try:
        with pytest.raises(StoreUnavailable, match="store"):
            replica.resolve("sst2")
        assert feed.wait(0.3) == 1  # its connection is gone; it keeps trying, does not raise
    finally:
        _pg_ctl(pg_server, "start")
    # Published while the replica's listener is still cut off: its NOTIFY reaches no one.
    v2 = Store(pg_url, tiny_bert.spec).publish(make_file(tiny_bert.spec, seed=2))
    assert feed.wait(30.0) == 2  # reconnected, and read the generation it had missed
    assert replica.get("sst2").info == v2 and replica.resolve("sst2", "v1").version == v1.version
    feed.close()


# -- copy between backends ------------------------------------------------------------------

def test_copy_sqlite_to_postgresql_and_back(pg_server, pg_url, tiny_bert, tmp_path, capsys) -> None:
    src = Store(tmp_path / "src", tiny_bert.spec)
    for seed in (1, 2, 3):
        src.publish(make_file(tiny_bert.spec, "sst2", seed=seed))
    src.publish(make_file(tiny_bert.spec, "mnli", "lora", outputs=3, seed=4))
    src.set_alias("sst2", "stable", "v2")
    src.rollback("sst2", "v1")
    code, out, err = cli(capsys, "copy", str(tmp_path / "src"), pg_url)
    assert code == 0 and "copied 4 versions (0 already there) of 2 tasks" in out, err
    dst = Store(pg_url, tiny_bert.spec)
    assert _contents(dst) == _contents(src) and dst.verify() == []
    g = dst.generation()
    code, out, _ = cli(capsys, "copy", str(tmp_path / "src"), pg_url)  # again: nothing to do
    assert code == 0 and "copied 0 versions (4 already there)" in out and dst.generation() == g
    code, out, _ = cli(capsys, "copy", pg_url, str(tmp_path / "back"))
    assert code == 0 and _contents(Store(tmp_path / "back")) == _contents(src)
    support.damage(src.catalog, src.resolve("mnli").version)
    other = new_database(pg_server)
    code, _, err = cli(capsys, "copy", str(tmp_path / "src"), other)
    assert code == 2 and "corrupt" in err
    with pytest.raises(NotFoundError):
        open_catalog(other).resolve("mnli")  # a corrupt version is never copied
    code, _, err = cli(capsys, "copy", str(tmp_path / "nowhere"), pg_url)
    assert code == 2 and "no store at" in err


def _contents(store: Store) -> list[tuple[Any, ...]]:
    """Every version with its number, publish time, aliases and bytes."""
    return [(v.task_id, v.number, v.version, v.created_at, v.aliases,
             store.read_bytes(v.task_id, v.version)[1]) for v in store.versions()]
