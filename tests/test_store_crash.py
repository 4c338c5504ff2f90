"""Publishers SIGKILLed at random points leave a consistent store: every committed version
whole, every blob's hash right, nothing half-published visible; on both backends."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from polyhead.store import Store
from tests import test_store_support as support
from tests.test_store_support import make_file

location, pg_url = support.location, support.pg_url  # fixtures (pg_server: conftest)

ROUNDS = {"sqlite": 60, "postgresql": 30}  # a PostgreSQL kill lands in a transaction ~3/4 of the time

# One interpreter imports the store once, then forks a publisher per round (a fresh
# interpreter per kill would cost seconds each). The publisher reports each finished
# publish; the helper lets it finish k = 0-3 of them, then SIGKILLs it 0-4 ms later,
# which on any machine load lands inside a publish most of the time.
HELPER = """
import os, random, signal, sys, time
from pathlib import Path
from polyhead.store import Store, decode_artifact
root, folder, rounds, acks = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
files = sorted(folder.iterdir())
decode_artifact(files[0].read_bytes())  # warm up once, not in every child
rng = random.Random(1234)
for r in range(rounds):
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        store = Store(root)
        os.write(done_w, b"s")
        ack = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        i = 0
        while True:
            data = files[(r * 13 + i) % len(files)].read_bytes()
            # kinds vary among the files: every publish may change the task's kind
            version = store.publish(data, replace_kind=True).version
            os.write(ack, (version + "\\n").encode())  # one small append
            os.write(done_w, b"p")
            i += 1
    os.close(done_w)  # the child's end only: a publisher that dies early shows as end of file
    for _ in range(1 + rng.randint(0, 3)):
        if not os.read(done_r, 1):
            sys.exit(f"round {r}: the publisher died before it was killed (its traceback is above)")
    time.sleep(rng.uniform(0, 0.004))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(done_r)
print("done", flush=True)
"""


def test_sigkilled_publishers_leave_a_consistent_store(tmp_path, tiny_bert, location, request) -> None:
    root, folder, acks = location, tmp_path / "files", tmp_path / "acks"
    server_log = request.getfixturevalue("pg_server").log if support.is_pg(root) else None
    aborted_before = _aborted_transactions(server_log)
    rounds = ROUNDS["postgresql" if server_log is not None else "sqlite"]
    folder.mkdir()
    hashes = set()
    for i in range(400):
        data = make_file(tiny_bert.spec, f"task{i % 2}", kind="lora" if i % 3 else "pasta", seed=i)
        (folder / f"{i:04d}.polyhead").write_bytes(data)
        hashes.add(hashlib.sha256(data).hexdigest())
    Store(root)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # with the cache folder
    out = subprocess.run([sys.executable, "-c", HELPER, str(root), str(folder), str(rounds), str(acks)],
                         env=env, capture_output=True, text=True, timeout=120, cwd=Path.cwd())
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-3000:]

    acked = {line for line in acks.read_text().splitlines() if len(line) == 64}
    store = Store(root, tiny_bert.spec)
    assert store.verify() == []  # catalog consistency, every version's bytes and hash
    versions = {v.version: v for v in store.versions()}
    assert len(acked) >= rounds // 2  # the publishers did get work done between kills
    assert acked <= versions.keys() <= hashes  # every acknowledged publish survived
    assert len(versions.keys() - acked) <= rounds  # at most the one in flight per kill
    for task in store.list_tasks():
        history = store.history(task.task_id)
        assert [v.number for v in history] == list(range(1, len(history) + 1))
        assert store.get(task.task_id).info == task.latest
    if server_log is not None:
        _check_pg_leftovers(store, versions.keys(), acked)
        aborted = _aborted_transactions(server_log) - aborted_before
        print(f"{aborted} publishes killed inside their transaction")
        assert aborted or versions.keys() - acked  # some kills did land inside a publish
    else:
        _check_sqlite_leftovers(store, versions.keys(), acked)
    fresh = store.publish(make_file(tiny_bert.spec, "after", seed=99))  # no lock left behind
    assert store.get("after").info == fresh


def _check_sqlite_leftovers(store: Store, versions: set[str], acked: set[str]) -> None:
    catalog = store.catalog
    conn = sqlite3.connect(catalog.db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    for blob in catalog.blob_dir.glob("*/*"):  # committed or orphaned, no blob is partial
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    orphans = {p.name for p in catalog.blob_dir.glob("*/*")} - versions
    parts = list(catalog.tmp_dir.iterdir())
    in_flight = versions - acked
    print(f"{len(acked)} acknowledged, {len(in_flight)} committed unacknowledged, "
          f"{len(orphans)} orphan blobs, {len(parts)} temp files")
    assert in_flight or orphans or parts  # some kills did land inside a publish
    catalog.gc(stale_tmp_s=0)  # every publisher is dead: their leftovers can go
    assert {p.name for p in catalog.blob_dir.glob("*/*")} == versions
    assert list(catalog.tmp_dir.iterdir()) == []


def _check_pg_leftovers(store: Store, versions: set[str], acked: set[str]) -> None:
    """A publish is one transaction: a killed one leaves no row and no bytes, and the server
    ends the dead client's session (its lock with it)."""
    rows = store.catalog._reading(lambda c: c.execute(
        "SELECT version, sha256(data) FROM blobs").fetchall())
    assert {v for v, _ in rows} == versions  # bytes exactly for the committed versions
    assert all(bytes(h).hex() == v for v, h in rows)
    print(f"{len(acked)} acknowledged, {len(versions - acked)} committed unacknowledged")
    deadline = time.monotonic() + 30
    while _open_transactions(store) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _open_transactions(store) == 0


def _aborted_transactions(server_log: Path | None) -> int:
    """Clients that went away inside a transaction, as PostgreSQL's log tells."""
    if server_log is None:
        return 0
    return server_log.read_text(errors="replace").count("unexpected EOF on client connection with "
                                                        "an open transaction")


def _open_transactions(store: Store) -> int:
    return int(store.catalog._reading(lambda c: c.execute(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%%' AND pid != pg_backend_pid()").fetchone()[0]))
