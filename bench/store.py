"""Store latency and size for artifacts of the default backbone (all-MiniLM-L6-v2), on both
catalog backends side by side; optionally upload-to-loaded on the other of two replicas,
SQLite polling against PostgreSQL push.

    python -m bench.store [--rounds 200] [--root DIR] [--pg-url URL] [--feed-rounds 50]

For a PASTA, a LoRA r=8 (query, value) and a 1%-density sparse artifact: publish (validate
against the backbone, store the bytes durably, commit the catalog) and load (``Store.get``:
resolve, read, sha256, full validation, decode), median and p99, on
  sqlite         a folder under --root (default: the current directory, a real disk);
  postgresql     a database on --pg-url, else a private PostgreSQL 16 started from the
                 ``pgserver`` wheel (test extras) with its data under --root, default
                 durability (fsync, synchronous commit), over a Unix socket;
                 load twice: "db" reads the bytes from the database (cache off), "cache"
                 from the replica's local byte cache (hash checked).
Then bytes per artifact. ``--feed-rounds N`` (starts Ray: take the shared lock) runs
`polyhead serve` with 2 replicas on each backend and uploads N versions of a task both
replicas hold; for each, the time from Upload's return until the *other* replica has the
version loaded (from its Health: it loads it because the store told it, as no request asks
for it): SQLite's watcher polls every 50 ms, PostgreSQL's is sent a NOTIFY.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from polyhead.engine import TaskArtifact, load_backbone
from polyhead.engine.lora import LoraConfig
from polyhead.engine.sparse import SparseConfig
from polyhead.engine.spec import BackboneSpec
from polyhead.store import Store, encode_artifact, new_manifest

KINDS: list[tuple[str, str, object]] = [
    ("pasta", "pasta", None),
    ("lora r=8", "lora", LoraConfig(r=8)),
    ("sparse 1%", "sparse", SparseConfig(density=0.01)),
]


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def stats(ms: list[float]) -> tuple[float, float]:
    ordered = sorted(ms)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def files_for(spec: BackboneSpec, task_id: str, kind: str, config: object, rounds: int,
              first: int = 0) -> list[bytes]:
    """``rounds`` distinct files of one artifact (the metrics differ, so do the versions)."""
    art = TaskArtifact.random(kind, spec, 2, config=config, seed=0)
    return [encode_artifact(new_manifest(task_id, art, spec, labels=["negative", "positive"],
                                         metrics={"accuracy": (first + i) / 1e6}), art)
            for i in range(rounds)]


@contextmanager
def postgres(url: str | None, root: Path) -> Iterator[str]:
    """A fresh database: on ``url``'s server, else on a private pgserver under ``root``."""
    import psycopg

    server = None
    if url is None:
        import pgserver

        server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="bench-pg-", dir=root)) / "data",
                                     cleanup_mode="delete")
        url = str(server.get_uri())
    name = f"polyhead_bench_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, query = url.partition("?")
    try:
        yield f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if server is not None:
            server.cleanup()


def latency(stores: dict[str, Store], spec: BackboneSpec, rounds: int) -> dict[str, list[tuple]]:
    """Per backend and kind: publish and load (median, p99). The backends take turns within
    every round, so that a machine whose load drifts weighs on them alike. A store named
    "... cache" only loads (the same database as the one before it, through the byte cache)."""
    out: dict[str, list[tuple]] = {name: [] for name in stores}
    for label, kind, config in KINDS:
        files = {name: iter(files_for(spec, kind, kind, config, rounds, first=i * rounds))
                 for i, name in enumerate(stores)}
        publish: dict[str, list[float]] = {name: [] for name in stores}
        load: dict[str, list[float]] = {name: [] for name in stores}
        for _ in range(rounds):
            for name, store in stores.items():
                if not name.endswith("cache"):
                    publish[name] += timed(lambda s=store, f=files[name]: s.publish(next(f)), 1)
        for store in stores.values():
            store.get(kind)  # a cache fills on the first read
        for _ in range(rounds):
            for name, store in stores.items():
                load[name] += timed(lambda s=store: s.get(kind), 1)  # noqa: B023
        for name in stores:
            pub = stats(publish[name]) if publish[name] else (float("nan"), float("nan"))
            out[name].append((label, *pub, *stats(load[name])))
    return out


def sizes(spec: BackboneSpec, store: Store) -> list[tuple[str, int, int, int]]:
    out = []
    for label, kind, config in KINDS:
        art = TaskArtifact.random(kind, spec, 2, config=config, seed=0)
        info = store.resolve(kind)
        blob = store.catalog.blob_path(info.version)  # type: ignore[attr-defined]
        out.append((label, art.nbytes, info.nbytes, blob.stat().st_blocks * 512))
    return out


def pg_bytes_per_version(store: Store) -> float:
    total = store.catalog._reading(lambda c: c.execute(  # type: ignore[attr-defined]
        "SELECT pg_total_relation_size('blobs') + pg_total_relation_size('versions')").fetchone()[0])
    return int(total) / max(1, len(store.versions()))


# -- upload-to-loaded on the other replica --------------------------------------------------

def other_replica_ms(address: str, spec: BackboneSpec, rounds: int) -> list[float]:
    """Upload ``rounds`` versions of a task both replicas hold; for each, ms from Upload's
    return until the later of the two replicas had it loaded (resident since, by its Health)."""
    import grpc

    from polyhead.v1 import polyhead_pb2 as pb
    from polyhead.v1 import polyhead_pb2_grpc as pb_grpc

    files = files_for(spec, "feed", "pasta", None, rounds + 1, first=10_000)
    channel = grpc.insecure_channel(address)
    inf, reg = pb_grpc.InferenceStub(channel), pb_grpc.RegistryStub(channel)
    reg.Upload(pb.UploadRequest(artifact=files[0]))
    req = pb.ClassifyRequest(task_id="feed", inputs=[pb.Input(text="a fine film")])
    replicas: set[str] = set()
    while len(replicas) < 2:  # both replicas serve (and so hold) the task
        replicas.add(inf.Classify(req).replica)
    out = []
    for data in files[1:]:
        version = reg.Upload(pb.UploadRequest(artifact=data)).version
        returned = time.perf_counter()
        loaded = loaded_at(inf, "feed", version)
        out.append((max(loaded.values()) - returned) * 1e3 if len(loaded) == 2 else float("inf"))
        time.sleep(0.1)
    channel.close()
    return out


def loaded_at(inf: Any, task: str, version: str, timeout_s: float = 10.0) -> dict[str, float]:
    """replica -> when (this clock) it loaded ``version``, from Health polled by 2 threads;
    the resident age each replica reports dates the load, so polling does not delay it."""
    from polyhead.v1 import polyhead_pb2 as pb

    loaded: dict[str, float] = {}
    lock = threading.Lock()

    def poll() -> None:
        deadline = time.perf_counter() + timeout_s
        while len(loaded) < 2 and time.perf_counter() < deadline:
            h = inf.Health(pb.HealthRequest())
            now = time.perf_counter()
            for r in h.resident:
                if r.task_id == task and r.version == version:
                    with lock:
                        loaded.setdefault(h.replica, now - r.age_s)
            time.sleep(0.01)

    threads = [threading.Thread(target=poll) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return loaded


def feeds(spec: BackboneSpec, root: Path, pg_url: str, rounds: int) -> dict[str, list[float]]:
    from bench.serve import Server

    out = {}
    work = Path(tempfile.mkdtemp(prefix="bench-feeds-", dir=root))
    os.environ.setdefault("POLYHEAD_STORE_CACHE", str(work / "cache"))
    for name, location in (("sqlite (poll 50 ms)", str(work / "store")),
                           ("postgresql (NOTIFY)", pg_url)):
        Store(location, spec).publish(files_for(spec, "one", "pasta", None, 1)[0])
        server = Server(location, 2, work / f"serve-{name.split()[0]}.log")  # type: ignore[arg-type]
        try:
            out[name] = other_replica_ms(server.address, spec, rounds)
        finally:
            server.stop()
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument("--pg-url", default=None, help="a PostgreSQL server to use (default: "
                        "start a private one with pgserver)")
    parser.add_argument("--feed-rounds", type=int, default=0,
                        help="uploads for the replica feed comparison (0: skip; starts Ray)")
    args = parser.parse_args()
    spec = load_backbone().spec
    load0 = os.getloadavg()[0]
    cpu0 = time.process_time()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.root) as tmp, \
            postgres(args.pg_url, args.root) as url:
        os.environ["POLYHEAD_STORE_CACHE"] = str(Path(tmp) / "cache")
        sqlite = Store(Path(tmp) / "store", spec)
        pg = Store(url, spec, cache="off")
        stores = {"sqlite": sqlite, "postgresql, bytes from the db": pg,
                  "postgresql, bytes from the cache": Store(url, spec)}
        results["latency"] = latency(stores, spec, args.rounds)
        results["sizes"] = sizes(spec, sqlite)
        gen: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
        for _ in range(2000):
            gen["sqlite"] += timed(sqlite.generation, 1)
            gen["postgresql"] += timed(pg.generation, 1)
        results["generation"] = {k: statistics.median(v) * 1e3 for k, v in gen.items()}
        results["pg per version"] = pg_bytes_per_version(pg)
        if args.feed_rounds:
            results["feeds"] = feeds(spec, Path(tmp), url, args.feed_rounds)
    report(results, args.rounds, load0, time.process_time() - cpu0)


def report(r: dict[str, Any], rounds: int, load0: float, cpu_s: float) -> None:
    print(f"Store latency, {rounds} rounds each (ms, wall clock)\n")
    print("| artifact | backend | publish median | publish p99 | load median | load p99 |")
    print("|---|---|---:|---:|---:|---:|")
    for i in range(len(KINDS)):
        for name, rows in r["latency"].items():
            label, pm, p99, lm, l99 = rows[i]
            pub = "| | |" if pm != pm else f"| {pm:.2f} | {p99:.2f} |"  # nan: load only
            print(f"| {label} | {name} {pub} {lm:.2f} | {l99:.2f} |")
    g = r["generation"]
    print(f"\ngeneration(): sqlite {g['sqlite']:.1f} µs, postgresql {g['postgresql']:.1f} µs (median)\n")
    print("| artifact | tensor bytes | file bytes | file / tensors | sqlite blob on disk |")
    print("|---|---:|---:|---:|---:|")
    for label, tensor_b, file_b, disk_b in r["sizes"]:
        print(f"| {label} | {tensor_b:,} | {file_b:,} | {file_b / tensor_b:.4f} | {disk_b:,} |")
    print(f"\npostgresql: {r['pg per version']:,.0f} bytes per version (blobs + versions tables)")
    if "feeds" in r:
        print("\nUpload return -> loaded on the other replica (2 replicas, ms)\n")
        print("| store | uploads | p50 | p99 | max |")
        print("|---|---:|---:|---:|---:|")
        for name, ms in r["feeds"].items():
            print(f"| {name} | {len(ms)} | {statistics.median(ms):.0f} | {pct(ms, 0.99):.0f} | "
                  f"{max(ms):.0f} |")
    print(f"\ncpus: {os.cpu_count()}; load average (1 min) at start/end: {load0:.1f} / "
          f"{os.getloadavg()[0]:.1f}; this process's CPU time: {cpu_s:.1f} s")


if __name__ == "__main__":
    main()
