"""What making an uploaded version servable costs a replica, past the store: decode the
file (every check, against the backbone) and write its rows into the engine's slot tables,
for the artifacts of bench.store (PASTA, LoRA r=8 on query/value, sparse 1 %) on the
packaged all-MiniLM-L6-v2. Each round decodes and loads one version, then unloads it.

    python -m bench.swap_load [--rounds 200] [--clock cpu|wall]

``--clock cpu`` times the thread's CPU work (1 torch thread), for a shared machine. The
API it calls (decode_artifact, Engine.load/unload) is the same before and after issue 26,
so the same file measures both (run it with the older code first on sys.path).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from polyhead.engine import Engine, TaskArtifact, load_backbone
from polyhead.engine.lora import LoraConfig
from polyhead.engine.sparse import SparseConfig
from polyhead.store import encode_artifact, new_manifest
from polyhead.store.fileformat import decode_artifact

KINDS: list[tuple[str, str, object]] = [
    ("pasta", "pasta", None),
    ("lora r=8", "lora", LoraConfig(r=8)),
    ("sparse 1%", "sparse", SparseConfig(density=0.01)),
]


def timed(fn: Callable[[], object], clock: Callable[[], float]) -> float:
    t0 = clock()
    fn()
    return (clock() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    bb = load_backbone()
    engine = Engine(bb)
    print("| artifact | bytes | decode ms (median / p99) | decode + load + unload ms (median / p99) |")
    print("|---|---:|---:|---:|")
    for label, kind, config in KINDS:
        art = TaskArtifact.random(kind, bb.spec, 2, config=config, seed=0)
        data = encode_artifact(new_manifest(kind, art, bb.spec, labels=["a", "b"]), art)
        engine.unload(engine.load(decode_artifact(data, bb.spec)[1]))  # the tables exist
        decode, swap = [], []

        def both() -> None:
            engine.unload(engine.load(decode_artifact(data, bb.spec)[1]))  # noqa: B023

        for _ in range(args.rounds):  # interleaved: drift weighs on both alike
            decode.append(timed(lambda: decode_artifact(data, bb.spec), clock))  # noqa: B023
            swap.append(timed(both, clock))
        cells = [f"{statistics.median(x):.2f} / {sorted(x)[round(0.99 * (len(x) - 1))]:.2f}"
                 for x in (decode, swap)]
        print(f"| {label} | {len(data):,} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
