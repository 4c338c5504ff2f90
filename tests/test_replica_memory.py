"""What the replica keeps per upload / classify / delete cycle, measured inside its own
process: the Serve deployment's class run in-process (no Ray: its RPC methods called
directly), tiny backbone,
bank budgets far below the 16 tasks so that eviction runs all along.

After warm-up it counts the live objects that hold an artifact (TaskArtifact, LoadedTask,
Resident, VersionKey, tensors) and samples the Python heap (tracemalloc). A replica that
kept each fetched artifact (tried by appending it to a list in the bank) ends 400 cycles
with 548 TaskArtifacts and +3.5 KB of heap per cycle; the bounds are one per task and
1 KB per cycle (this code: 14 at most, +0.2 KB per cycle or less over 600 cycles). It
prints the process's RSS slope too, not asserted (tracemalloc's own bookkeeping is in
it); RSS through real Ray Serve: test_reliability.py and BENCHMARKS (Reliability).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import os
import tracemalloc
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from polyhead.engine import LoadedTask, TaskArtifact
from polyhead.server.bank import Resident, VersionKey
from polyhead.server.config import ServerConfig
from polyhead.v1 import polyhead_pb2 as pb
from tests.test_serving import artifact

TASKS = 16
HELD = (TaskArtifact, LoadedTask, Resident, VersionKey, torch.Tensor)


def live() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(t.__name__ for o in gc.get_objects() for t in HELD if isinstance(o, t))


async def in_process_replica(config: ServerConfig):
    """The replica class run in this process, without Ray: so without the job scheduler
    (a Ray actor; the Training RPCs still answer from the store)."""
    from polyhead.server._private.replica import Polyhead

    config = dataclasses.replace(config, jobs=False)
    cls = Polyhead.func_or_class
    replica = cls.__new__(cls)
    await replica.__init__(config)
    return replica


async def cycles(replica, spec, n: int, warm: int, every: int) -> dict[str, object]:
    heap: list[tuple[int, int]] = []
    rss: list[tuple[int, int]] = []
    me = psutil.Process()
    counts = {}
    for i in range(n):
        task = f"leak{i % TASKS}"
        v = (await replica.Upload(pb.UploadRequest(artifact=artifact(spec, task, seed=1000 + i)[0]))).version
        got = await replica.Classify(pb.ClassifyRequest(task_id=task, inputs=[pb.Input(text="rain")]))
        assert got.version == v
        if (i // TASKS) % 4 == 3:
            await replica.DeleteTask(pb.DeleteTaskRequest(task_id=task))
        if i + 1 == warm:
            counts["warm"] = live()
        if i + 1 >= warm and (i + 1 - warm) % every == 0:
            gc.collect()
            heap.append((i + 1, tracemalloc.get_traced_memory()[0]))
            rss.append((i + 1, me.memory_info().rss))
    counts["end"] = live()
    health = await replica.Health(pb.HealthRequest())
    return {"counts": counts, "heap_bytes_per_cycle": slope(heap), "heap": heap,
            "rss_bytes_per_cycle": slope(rss), "health": health}


def slope(samples: list[tuple[int, int]]) -> float:
    x = np.array(samples, dtype=float)
    return float(np.polyfit(x[:, 0], x[:, 1], 1)[0])


def test_cycles_retain_nothing_per_artifact(tiny_bert_dir: Path, tiny_bert, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ENABLE_AUTO_CONNECT", "0")  # Ray's metrics API must not start Ray
    n = int(os.environ.get("POLYHEAD_MEMORY_CYCLES", "600"))
    config = ServerConfig(store=str(tmp_path / "store"), backbone=str(tiny_bert_dir), insecure=True,
                          seed_examples=False, torch_threads=1, max_inputs=16, max_batch_rows=32,
                          device_budget_mb=0.01, host_budget_mb=0.004)

    async def main():
        replica = await in_process_replica(config)
        tracemalloc.start(1)
        try:
            out = await cycles(replica, tiny_bert.spec, n, warm=n // 4, every=max(1, n // 16))
        finally:
            tracemalloc.stop()
        return {**out, "held": retained(replica)}

    r = asyncio.run(main())
    warm, end = r["counts"]["warm"], r["counts"]["end"]
    print(f"\nreplica memory over {n} cycles: live objects after warm-up {dict(warm)}, at the end "
          f"{dict(end)}; Python heap {r['heap_bytes_per_cycle']:+.1f} B/cycle, RSS "
          f"{r['rss_bytes_per_cycle'] / 1024:+.2f} KB/cycle (fits over {len(r['heap'])} samples)")
    for name in ("TaskArtifact", "LoadedTask", "Resident", "VersionKey"):  # at most one per task
        assert end[name] <= TASKS + 2, (name, dict(warm), dict(end))
    assert end["Tensor"] <= warm["Tensor"] + 8 * TASKS, (dict(warm), dict(end))
    assert r["heap_bytes_per_cycle"] < 1024, r["heap"]
    h = r["health"]
    assert len(h.resident) < TASKS and h.device_bytes <= h.device_budget_bytes + 4096
    held = r["held"]  # every container the replica keeps across requests: bounded by tasks
    print(f"replica containers after {n} cycles: {held}")
    assert held["resolver_refs"] <= 2 * TASKS and held["bank_locks"] <= TASKS, held
    assert held["bank_device"] + held["bank_host"] <= 2 * TASKS, held
    assert held["queued_rows"] == 0 and held["kind_tables"] <= 2, held
    assert held["table_slots"] <= 4 * TASKS, held  # slot tables trimmed, not grown per cycle


def retained(replica) -> dict[str, int]:
    p = replica.parts
    tables = p.engine.tables
    return {"resolver_refs": len(p.resolver._cache) + len(p.resolver._missing),
            "bank_device": len(p.bank._device), "bank_host": len(p.bank._host),
            "bank_locks": len(p.bank._locks), "queued_rows": p.batcher.queued_rows,
            "kind_tables": len(tables.kinds),
            "table_slots": sum(t.capacity for t in (*tables.kinds.values(), tables.heads, tables.mlps))}
