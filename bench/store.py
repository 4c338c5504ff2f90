"""Store latency and size for artifacts of the default backbone (all-MiniLM-L6-v2).

    python -m bench.store [--rounds 200] [--root DIR]

For a PASTA, a LoRA r=8 (query, value) and a 1%-density sparse artifact: publish
(validate against the backbone, write the blob with fsync, commit the catalog) and load
(``Store.get``: resolve, read, sha256, full validation, decode) latency, median and p99;
then bytes per artifact on disk against the tensors' own bytes. The store lives in a
temp folder under --root (default: the current directory, i.e. a real disk, not tmpfs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from methods import TaskArtifact, load_backbone
from methods.lora import LoraConfig
from methods.sparse import SparseConfig
from methods.spec import BackboneSpec
from store import Store, encode_artifact, new_manifest

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


def files_for(spec: BackboneSpec, task_id: str, kind: str, config: object, rounds: int) -> list[bytes]:
    """``rounds`` distinct files of one artifact (the metrics differ, so do the versions)."""
    art = TaskArtifact.random(kind, spec, 2, config=config, seed=0)
    return [encode_artifact(new_manifest(task_id, art, spec, labels=["negative", "positive"],
                                         metrics={"accuracy": i / rounds}), art)
            for i in range(rounds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--root", type=Path, default=Path.cwd())
    args = parser.parse_args()
    spec = load_backbone().spec
    rows, sizes = [], []
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.root) as tmp:
        store = Store(tmp, spec)
        for label, kind, config in KINDS:
            task_id = kind
            files = iter(files_for(spec, task_id, kind, config, args.rounds))
            art = TaskArtifact.random(kind, spec, 2, config=config, seed=0)
            encode_ms = timed(lambda art=art: encode_artifact(
                new_manifest("x", art, spec, labels=["negative", "positive"]), art), 20)
            publish_ms = timed(lambda files=files: store.publish(next(files)), args.rounds)
            load_ms = timed(lambda task_id=task_id: store.get(task_id), args.rounds)
            resolve_ms = timed(lambda task_id=task_id: store.resolve(task_id), args.rounds)
            rows.append((label, *stats(publish_ms), *stats(load_ms), statistics.median(resolve_ms) * 1e3,
                         statistics.median(encode_ms)))
            info = store.resolve(task_id)
            blob = store.blob_path(info.version)
            sizes.append((label, art.nbytes, info.nbytes, blob.stat().st_blocks * 512))
        gen_us = statistics.median(timed(store.generation, 2000)) * 1e3
        versions = len(store.versions())
        store.close()  # the last connection checkpoints the WAL into the database
        catalog = (Path(tmp) / "catalog.sqlite").stat().st_size

    print(f"Store latency, {args.rounds} rounds each (ms)\n")
    print("| artifact | publish median | publish p99 | load median | load p99 | resolve median (µs) "
          "| encode median |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, pm, p99, lm, l99, rus, em in rows:
        print(f"| {label} | {pm:.2f} | {p99:.2f} | {lm:.2f} | {l99:.2f} | {rus:.0f} | {em:.2f} |")
    print(f"\ngeneration(): {gen_us:.1f} µs median\n")
    print("| artifact | tensor bytes | file bytes | file / tensors | on disk (blocks) |")
    print("|---|---:|---:|---:|---:|")
    for label, tensor_b, file_b, disk_b in sizes:
        print(f"| {label} | {tensor_b:,} | {file_b:,} | {file_b / tensor_b:.4f} | {disk_b:,} |")
    print(f"\ncatalog: {catalog:,} bytes for {versions} versions ({catalog / versions:,.0f} B per version)")
    print(f"cpus: {os.cpu_count()}")


if __name__ == "__main__":
    main()
