"""Device cost per task with a wide task resident (issue 30, B4).

    python -m bench.wide_tasks
    PYTHONPATH=/work/wt-before /work/wt-before/.venv/bin/python bench/wide_tasks.py  # before

A replica's engine and adapter bank as `polyhead serve` builds them (the packaged
all-MiniLM-L6-v2, fp32 on the CPU, the default 512 MB device budget for both the slot
tables and the bank), no Ray and no forwards: only what the tables allocate. Ordinary
tasks (64 pasta and 32 LoRA r=8, 2 labels each) are loaded, then one wide task (a
10,000-label pasta head, or a rank-512 LoRA), then every ordinary task is requested
again in turn (a miss loads it, evicting the least recently used), then the wide task is
deleted (the bank discards it, as DeleteTask does). Per row: each kind's device cost per
task (what Health reports per resident version), the tables' allocation, and how many
ordinary tasks are resident at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from typing import Any

MB = 1 << 20
PASTA, LORA = 64, 32


def run(budget_mb: float) -> list[tuple[str, ...]]:
    from polyhead.engine import Engine, TaskArtifact, load_backbone
    from polyhead.engine.lora import LoraConfig
    from polyhead.server.bank import AdapterBank, TaskMeta, VersionKey

    bb = load_backbone()
    spec = bb.spec
    meta = TaskMeta(number=1, labels=("a", "b"), regression=False, inputs="any")
    arts = {f"pasta{i}": TaskArtifact.random("pasta", spec, 2, seed=i) for i in range(PASTA)}
    arts |= {f"lora{i}": TaskArtifact.random("lora", spec, 2, config=LoraConfig(r=8), seed=100 + i)
             for i in range(LORA)}
    wide = {"10,000-label head": TaskArtifact.random("pasta", spec, 10_000, seed=7),
            "rank-512 LoRA": TaskArtifact.random("lora", spec, 2, config=LoraConfig(r=512), seed=8)}
    rows: list[tuple[str, ...]] = []
    for name, art in wide.items():
        engine = Engine(bb, device_budget=int(budget_mb * MB))
        bank = AdapterBank(lambda key: (arts[key.task_id], meta), engine,
                           device_budget=int(budget_mb * MB), host_budget=1 << 40)

        touch_all(bank, arts, meta)
        rows.append(row("ordinary tasks only", bank, engine, arts, None))
        wide_bytes = asyncio.run(bank.put(VersionKey("wide", "v"), art, meta)).task.nbytes
        touch_all(bank, arts, meta)
        rows.append(row(f"+ a {name}", bank, engine, arts, wide_bytes))
        bank.discard("wide")
        touch_all(bank, arts, meta)
        rows.append(row(f"{name} deleted", bank, engine, arts, None))
    return rows


def touch_all(bank: Any, arts: dict[str, Any], meta: Any) -> None:
    """Request every ordinary task in turn (a miss loads it, evicting the LRU one)."""
    from polyhead.server.bank import VersionKey

    async def each() -> None:
        for t in arts:
            await bank.put(VersionKey(t, "v"), arts[t], meta)

    asyncio.run(each())


def row(what: str, bank: Any, engine: Any, arts: dict[str, Any],
        wide_bytes: int | None) -> tuple[str, ...]:
    cost: dict[str, int] = {}
    resident = 0
    for key, tier, nbytes, _ in bank.resident():
        if tier == "device" and key.task_id in arts:
            cost.setdefault(key.task_id.rstrip("0123456789"), nbytes)
            resident += 1
    return (what, _kb(cost.get("pasta")), _kb(cost.get("lora")),
            "-" if wide_bytes is None else _kb(wide_bytes),
            f"{engine.tables.nbytes / MB:.1f} MiB", f"{resident} of {len(arts)}")


def _kb(nbytes: int | None) -> str:
    if nbytes is None:
        return "-"
    return f"{nbytes / 1024:,.0f} KiB" if nbytes < MB else f"{nbytes / MB:,.1f} MiB"


def probe_times(repeats: int = 5) -> list[tuple[str, str]]:
    """Median wall time of the publish probe (polyhead.engine.probe) per artifact, on the same backbone."""
    import statistics
    import time

    from polyhead.engine import TaskArtifact, load_backbone
    from polyhead.engine.lora import LoraConfig
    from polyhead.engine.probe import probe_forward

    bb = load_backbone()
    out = []
    for name, art in (("pasta, 2 labels", TaskArtifact.random("pasta", bb.spec, 2)),
                      ("LoRA r=8", TaskArtifact.random("lora", bb.spec, 2, config=LoraConfig(r=8))),
                      ("pasta, 10,000 labels", TaskArtifact.random("pasta", bb.spec, 10_000)),
                      ("LoRA r=512", TaskArtifact.random("lora", bb.spec, 2, config=LoraConfig(r=512)))):
        probe_forward(bb, art)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            probe_forward(bb, art)
            times.append(time.perf_counter() - t0)
        out.append((name, f"{statistics.median(times) * 1000:.0f} ms"))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-mb", type=float, default=512.0, help="device budget (serve's default)")
    ap.add_argument("--probe", action="store_true",
                    help="also time the publish probe per artifact (needs this code's polyhead.engine.probe)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    head = ("", "pasta task (2 labels)", "LoRA r=8 task", "the wide task", "tables allocated",
            "ordinary tasks resident")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in run(args.budget_mb):
        print("| " + " | ".join(r) + " |")
    if args.probe:
        print("\n| artifact | publish probe (median of 5, wall clock) |\n|---|---|")
        for name, t in probe_times():
            print(f"| {name} | {t} |")


if __name__ == "__main__":
    main()
