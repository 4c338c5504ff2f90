"""Publishers SIGKILLed at random points leave a consistent store: every committed version
whole, every blob's hash right, nothing half-published visible."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from store import Store
from tests.test_store_support import make_file

ROUNDS = 60

# One interpreter imports the store once, then forks a publisher per round and SIGKILLs it
# 0-30 ms after it starts (fork: a fresh interpreter per kill would cost seconds each).
HELPER = """
import os, random, signal, sys, time
from pathlib import Path
from store import Store
root, folder, rounds, acks = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
files = sorted(folder.iterdir())
rng = random.Random(1234)
for r in range(rounds):
    start_r, start_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        store = Store(root)
        os.write(start_w, b"s")
        ack = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        i = 0
        while True:
            data = files[(r * 13 + i) % len(files)].read_bytes()
            os.write(ack, (store.publish(data).version + "\\n").encode())  # one small append
            i += 1
    os.read(start_r, 1)
    time.sleep(0.0 if r % 4 == 0 else rng.uniform(0, 0.03))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(start_r)
    os.close(start_w)
print("done", flush=True)
"""


def test_sigkilled_publishers_leave_a_consistent_store(tmp_path, tiny_bert) -> None:
    root, folder, acks = tmp_path / "store", tmp_path / "files", tmp_path / "acks"
    folder.mkdir()
    hashes = set()
    for i in range(400):
        data = make_file(tiny_bert.spec, f"task{i % 2}", kind="lora" if i % 3 else "pasta", seed=i)
        (folder / f"{i:04d}.polyhead").write_bytes(data)
        hashes.add(hashlib.sha256(data).hexdigest())
    Store(root)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", HELPER, str(root), str(folder), str(ROUNDS), str(acks)],
                         env=env, capture_output=True, text=True, timeout=120, cwd=Path.cwd())
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-3000:]

    acked = {line for line in acks.read_text().splitlines() if len(line) == 64}
    store = Store(root, tiny_bert.spec)
    conn = sqlite3.connect(store.db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    assert store.verify() == []
    versions = {v.version: v for v in store.versions()}
    assert len(acked) > ROUNDS // 4  # the publishers did get work done between kills
    assert acked <= versions.keys() <= hashes  # every acknowledged publish survived
    assert len(versions.keys() - acked) <= ROUNDS  # at most the one in flight per kill
    for blob in store.blob_dir.glob("*/*"):  # committed or orphaned, no blob is partial
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    for task in store.list_tasks():
        history = store.history(task.task_id)
        assert [v.number for v in history] == list(range(1, len(history) + 1))
        assert store.get(task.task_id).info == task.latest
    store.gc(stale_tmp_s=0)  # every publisher is dead: their leftovers can go
    assert {p.name for p in store.blob_dir.glob("*/*")} == versions.keys()
    assert list(store.tmp_dir.iterdir()) == []
    fresh = store.publish(make_file(tiny_bert.spec, "after", seed=99))  # no lock left behind
    assert store.get("after").info == fresh
