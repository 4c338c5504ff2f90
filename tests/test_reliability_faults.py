"""Issue 6, faults: a serving replica SIGKILLed under load, replicas SIGKILLed in the middle of
gRPC uploads, and the whole app restarted on the same store. Real Ray Serve (2 replicas,
tiny backbone) over real gRPC on loopback.

The store-level variant of "killed in the middle of a publish" (60 publisher processes
SIGKILLed at random points, then integrity_check, verify, hashes, numbering) is
tests/test_store_crash.py; here the process killed is the serving replica doing the Upload.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyhead.client import PolyheadClient
from polyhead.engine.lora import LoraConfig
from polyhead.store import Store
from tests.reliability_support import App, closed_loop, running_app, wait_for_replicas
from tests.test_serving import artifact

pytestmark = pytest.mark.integration
INPUTS = ["the movie was good", "i hated the plot", "rain"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def app(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    store = tmp_path_factory.mktemp("faults") / "store"
    with running_app(tiny_bert_dir, store, replicas=2) as a:
        yield a


Answer = tuple[str, list[int], list[list[float]]]


def answer(c: PolyheadClient, task: str, inputs: list[str] = INPUTS) -> tuple[Answer, str]:
    res = c.classify_raw(task, inputs)
    return (res.version, [p.label_index for p in res.predictions],
            [list(p.scores) for p in res.predictions]), res.replica


def same(a: Answer, b: Answer) -> bool:
    return a[0] == b[0] and a[1] == b[1] and all(
        abs(x - y) <= ATOL for ra, rb in zip(a[2], b[2], strict=True) for x, y in zip(ra, rb, strict=True))


def test_sigkill_replica_under_load(app: App, tiny_bert) -> None:
    """One of 2 replicas SIGKILLed while 6 clients (the provided retry policy) classify 4 tasks:
    every call answers, every answer is the right one, and Ray's replacement replica serves
    all 4 tasks, loaded from the store."""
    spec = tiny_bert.spec
    blobs = [artifact(spec, "kill-pasta", seed=1)[0], artifact(spec, "kill-pasta2", seed=2)[0],
             artifact(spec, "kill-lora", "lora", ("a", "b", "c"), seed=3, config=LoraConfig(r=4, alpha=8))[0],
             artifact(spec, "kill-prefix", "prefix", seed=4)[0]]
    tasks = ["kill-pasta", "kill-pasta2", "kill-lora", "kill-prefix"]
    with app.client() as c:
        for b in blobs:
            c.upload(b)
        want = {t: answer(c, t)[0] for t in tasks}
    before = set(wait_for_replicas(2))
    with app.client() as c:  # both original replicas by name, before any kill
        old_replicas = replicas_answering(c, tasks[0], 2)
    seen: dict[str, set[str]] = {}  # replica -> tasks it answered right
    first_seen: dict[str, float] = {}
    lock = threading.Lock()

    def work(c: PolyheadClient, i: int) -> str | None:
        t = tasks[i % len(tasks)]
        got, replica = answer(c, t)
        with lock:
            first_seen.setdefault(replica, time.perf_counter())
            if same(got, want[t]):
                seen.setdefault(replica, set()).add(t)
                return None
        return f"{t} from {replica}: {got[:2]} != {want[t][:2]}"

    def fresh() -> list[str]:
        """Replicas other than the two original ones that answered every task right."""
        with lock:
            return [r for r in seen if r not in old_replicas and seen[r] == set(tasks)]

    stop = threading.Event()
    out: dict[str, object] = {}
    loader = threading.Thread(target=lambda: out.update(r=closed_loop(app.client, work, 6, stop=stop)))
    loader.start()
    try:
        stop_at = time.monotonic() + 120  # the load reaches both replicas before the kill
        while set(seen) != old_replicas and time.monotonic() < stop_at:
            time.sleep(0.1)
        victim = sorted(before)[0]
        t_kill = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        wait_for_replicas(1, exclude=before, timeout=180)  # Ray started a replacement
        stop_at = time.monotonic() + 180  # a deadline only to stop waiting
        while not fresh() and time.monotonic() < stop_at:
            time.sleep(0.2)
        time.sleep(2)  # keep the load on the two replicas for a while (no timing is asserted)
    finally:
        stop.set()
        loader.join()
    r = out["r"]
    new = fresh()
    recovery = first_seen[new[0]] - t_kill if new else None
    print(f"\nreplica kill: {len(r.calls)} calls, {len(r.errors)} errors, {len(r.wrong)} wrong; "
          f"replacement answering {recovery} s after the kill")
    assert set(seen) >= old_replicas, f"the load never reached both replicas before the kill: {seen}"
    assert not r.errors, r.errors[:3]
    assert not r.wrong, r.wrong[:3]
    assert new, f"no replica other than {sorted(old_replicas)} answered every task: {seen}"


def replicas_answering(c: PolyheadClient, task: str, n: int, deadline_s: float = 120) -> set[str]:
    """Names of ``n`` distinct replicas that answered ``task`` (the deadline only stops the wait)."""
    names: set[str] = set()
    stop_at = time.monotonic() + deadline_s
    while len(names) < n and time.monotonic() < stop_at:
        names.add(answer(c, task)[1])
    assert len(names) == n, f"only {names} answered in {deadline_s} s"
    return names


def test_sigkill_replicas_during_uploads(app: App, tiny_bert) -> None:
    """Both replicas SIGKILLed while a client uploads versions back to back (so that one upload
    is in flight at the kill): the store holds every acknowledged version and at most the one
    in flight, whole; latest is one of them; after Ray restarts the replicas, they serve it."""
    spec = tiny_bert.spec
    rng = random.Random(7)
    in_flight_at_kill = 0
    for rnd in range(3):
        task = f"crash{rnd}"
        blobs = [artifact(spec, task, "lora", seed=100 * rnd + i, config=LoraConfig(r=8, alpha=16))[0]
                 for i in range(200)]
        sent: list[tuple[float, str]] = []  # (when sent, sha256)
        acked: list[str] = []
        acked_at: dict[str, float] = {}  # version -> when its acknowledgement arrived
        failed: list[tuple[float, str]] = []  # (when, what): an upload that raised
        stop = threading.Event()

        def upload_loop(blobs: list[bytes] = blobs, sent: list[tuple[float, str]] = sent,
                        acked: list[str] = acked, failed: list[tuple[float, str]] = failed,
                        acked_at: dict[str, float] = acked_at, stop: threading.Event = stop) -> None:
            with app.client(retries=0, timeout_s=30) as c:
                for b in blobs:
                    if stop.is_set():
                        return
                    sent.append((time.monotonic(), hashlib.sha256(b).hexdigest()))
                    try:
                        acked.append(c.upload(b)["version"])
                        acked_at[acked[-1]] = time.monotonic()
                    except Exception as e:  # recorded: a failure before the kill fails the test
                        failed.append((time.monotonic(), f"{type(e).__name__}: {e}"[:300]))
                        return

        pids = set(wait_for_replicas(2))
        uploader = threading.Thread(target=upload_loop)
        uploader.start()
        while (len(acked) < 3 + rnd or len(sent) == len(acked)) and uploader.is_alive():
            time.sleep(0.001)
        time.sleep(0 if rnd == 0 else rng.uniform(0, 0.03))  # in flight: proxy, validation or publish
        t_kill = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        stop.set()
        uploader.join()
        assert len(acked) >= 3
        assert all(t >= t_kill for t, _ in failed), f"an upload failed before the kill: {failed}"

        store = Store(app.store, spec)
        assert store.verify() == []
        history = [v.version for v in store.history(task)]
        sent_ids = [h for _, h in sent]
        assert set(acked) <= set(history) <= set(sent_ids), "a version nobody sent, or an ack lost"
        assert len(set(history) - set(acked)) <= 1  # at most the one in flight
        latest = store.resolve(task, "latest").version
        assert latest in history and latest == history[-1]
        for blob in store.catalog.blob_dir.glob("*/*"):  # an SQLite store
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
        wait_for_replicas(2, exclude=pids, timeout=180)
        with app.client(retries=30, max_backoff_s=1.0, timeout_s=180) as c:
            assert c.classify_raw(task, "rain").version == latest
        # in flight at the kill: sent before it, and acknowledged after it or never
        in_flight = [h for t, h in sent if t < t_kill and acked_at.get(h, t_kill) >= t_kill]
        in_flight_at_kill += len(in_flight)
        print(f"\nupload kill round {rnd}: {len(acked)} acknowledged, {len(in_flight)} in flight at the kill "
              f"({sum(h in acked for h in in_flight)} acknowledged after it, "
              f"{len(set(history) - set(acked))} committed unacknowledged), "
              f"{sum(1 for t, _ in sent if t >= t_kill)} sent after it")
    assert in_flight_at_kill >= 1  # some kill did land on an upload in flight


def test_app_restart_brings_back_every_task_and_alias(app: App, tiny_bert) -> None:
    """serve.shutdown and a fresh start on the same store: the same tasks, versions, aliases
    and latest pointers (rollbacks included), and the same answers."""
    spec = tiny_bert.spec
    with app.client(retries=30, max_backoff_s=1.0, timeout_s=180) as c:
        v1 = c.upload(artifact(spec, "restart-a", seed=201)[0])
        c.upload(artifact(spec, "restart-a", seed=202)[0])
        c.set_alias("restart-a", "stable", v1["version"])
        c.upload(artifact(spec, "restart-b", "lora", ("x", "y", "z"), seed=203,
                          config=LoraConfig(r=4, alpha=8))[0])
        c.set_alias("restart-b", "canary", "v1")
        r1 = c.upload(artifact(spec, "restart-c", "prefix", seed=204)[0])
        c.upload(artifact(spec, "restart-c", "prefix", seed=205)[0])
        c.rollback("restart-c", r1["version"])
        tasks_before = sorted(c.list_tasks(), key=lambda t: t["task_id"])
        details = {t["task_id"]: c.get_task(t["task_id"]) for t in tasks_before}
        answers = {t["task_id"]: answer(c, t["task_id"])[0] for t in tasks_before}
        stable = answer(c, "restart-a")[0]
    assert {"restart-a", "restart-b", "restart-c"} <= set(details)
    t0 = time.perf_counter()
    app.restart()
    with app.client(retries=30, max_backoff_s=1.0, timeout_s=180) as c:
        assert sorted(c.list_tasks(), key=lambda t: t["task_id"]) == tasks_before
        for task, detail in details.items():
            assert c.get_task(task) == detail
            assert same(answer(c, task)[0], answers[task]), task
        got = c.classify_raw("restart-a", INPUTS, version="stable")
        assert got.version == v1["version"] != stable[0]
        assert c.classify_raw("restart-c", "rain").version == r1["version"]
    print(f"\napp restart: {len(details)} tasks and their aliases back, serving "
          f"{time.perf_counter() - t0:.1f} s after serve.shutdown")
