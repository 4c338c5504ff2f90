"""Fair sharing between tenants: a modest tenant B next to a flooding tenant A (issue 24).

    python -m bench.fair_share --data /work/shared/data/glue/SST-2/dev.tsv [--flood-s 60]

In process, no Ray: the real packaged backbone, the engine and the replica's Batcher
(its defaults: 64 rows, 8,192 tokens, 2 ms fill wait), one SST-2 dev sentence per request,
both tenants on the shipped sentiment task. Closed loops: B at c=4, A at c=128 (each
worker sends its next request when its last answer arrives). Phases, each ``--flood-s``
long: B alone; A alone (FIFO and fair: one tenant, so the same order; the single-tenant
check); then A and B together under FIFO (today's order) and under fair sharing.

Targets: B's p99 with fair sharing within 2x of B's p99 alone; A's rows/s with fair
sharing >= 0.9 x (A's rows/s alone - B's rows/s in that phase). Latencies are wall
clock per request; the CPU time of the whole process per phase is shown too, as the
machine is shared, and how many batches held more than ``fair_batch_rows`` rows (with B
active under fair sharing, each is a full batch of A's backlog that B's next requests
wait behind).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import time
from functools import partial

import torch

from bench.engine import read_sst2
from polyhead.engine import Engine, LoadedTask, load_backbone
from polyhead.server._private.batcher import Batcher, batch_queue
from polyhead.server._private.inference import BatchStats, forward
from polyhead.server.config import ServerConfig
from polyhead.store.fileformat import load_artifact

EXAMPLE = "polyhead/server/examples/sentiment.polyhead"


@dataclasses.dataclass
class Load:
    tenant: str
    clients: int
    latencies: list[float] = dataclasses.field(default_factory=list)  # seconds, one per request

    def rows_per_s(self, seconds: float) -> float:
        return len(self.latencies) / seconds

    def p(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


@dataclasses.dataclass
class Phase:
    name: str
    order: str
    loads: list[Load]
    seconds: float = 0.0
    cpu_s: float = 0.0
    batches: int = 0
    over_cap: int = 0  # batches of more than fair_batch_rows rows (formed with one tenant queued)

    def load(self, tenant: str) -> Load | None:
        return next((x for x in self.loads if x.tenant == tenant), None)


async def client(b: Batcher, task: LoadedTask, texts: list[str], load: Load, rng: random.Random,
                 stop: float) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < stop:
        t0 = time.perf_counter()
        enc = await b.encode([rng.choice(texts)])
        await b.run(enc, task, load.tenant)
        load.latencies.append(time.perf_counter() - t0)


async def run_phase(engine: Engine, task: LoadedTask, texts: list[str], phase: Phase,
                    cfg: ServerConfig, threads: int) -> Phase:
    def count(stats: BatchStats) -> None:
        phase.batches += 1
        phase.over_cap += stats.rows > cfg.fair_batch_rows

    b = Batcher(engine.tokenize, partial(forward, engine), max_rows=cfg.max_batch_rows,
                max_tokens=cfg.max_batch_tokens, fill_wait_s=cfg.batch_wait_ms / 1000,
                threads=threads, on_batch=count,
                queue=batch_queue(phase.order, lambda t: 1.0, cfg.fair_batch_rows))
    rng = random.Random(0)
    cpu0, t0 = time.process_time(), time.perf_counter()
    stop = asyncio.get_running_loop().time() + phase.seconds
    await asyncio.gather(*[client(b, task, texts, ld, random.Random(rng.random()), stop)
                           for ld in phase.loads for _ in range(ld.clients)])
    phase.seconds, phase.cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    b.close()
    return phase


def phases(seconds: float) -> list[Phase]:
    def b() -> Load:
        return Load("B", 4)

    def a() -> Load:
        return Load("A", 128)

    return [Phase("B alone", "fair", [b()], seconds),
            Phase("A alone", "fifo", [a()], seconds), Phase("A alone", "fair", [a()], seconds),
            Phase("A + B", "fifo", [a(), b()], seconds), Phase("A + B", "fair", [a(), b()], seconds)]


def table(done: list[Phase]) -> str:
    head = ("| phase | order | A rows/s | B rows/s | B p50 ms | B p99 ms | batches | over cap | "
            "CPU s | rows / CPU s |")
    lines = [head, "|" + "---|" * 10]
    for ph in done:
        a, b = ph.load("A"), ph.load("B")
        rows = sum(len(x.latencies) for x in ph.loads)
        lines.append(
            f"| {ph.name} | {ph.order} | {a.rows_per_s(ph.seconds) if a else 0:.1f} | "
            f"{b.rows_per_s(ph.seconds) if b else 0:.1f} | {b.p(0.5) if b else float('nan'):.0f} | "
            f"{b.p(0.99) if b else float('nan'):.0f} | {ph.batches} | {ph.over_cap} | {ph.cpu_s:.0f} | "
            f"{rows / max(ph.cpu_s, 1e-9):.1f} |")
    return "\n".join(lines)


def verdict(done: list[Phase]) -> str:
    b_alone = done[0].load("B")
    a_fifo, a_fair = done[1].load("A"), done[2].load("A")
    out = []
    assert b_alone and a_fifo and a_fair
    a_alone = a_fair.rows_per_s(done[2].seconds)
    fifo = a_fifo.rows_per_s(done[1].seconds)
    out.append(f"single tenant: A alone fair / FIFO rows/s = {a_alone / fifo:.2f}")
    for ph in done[3:]:
        a, b = ph.load("A"), ph.load("B")
        assert a and b
        p99 = b.p(0.99) / b_alone.p(0.99)
        share = a.rows_per_s(ph.seconds) / (a_alone - b.rows_per_s(ph.seconds))
        out.append(f"{ph.order}: B p99 / B p99 alone = {p99:.2f} (target <= 2); "
                   f"A rows/s / (A alone - B rows/s) = {share:.2f} (target >= 0.9)")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/work/shared/data/glue/SST-2/dev.tsv")
    ap.add_argument("--flood-s", type=float, default=60.0, help="seconds per phase")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the forward")
    ap.add_argument("--fair-batch-rows", type=int, default=ServerConfig.fair_batch_rows)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ServerConfig(insecure=True, fair_batch_rows=args.fair_batch_rows)
    engine = Engine(load_backbone(None), max_batch_size=cfg.max_batch_rows)
    task = engine.load(load_artifact(EXAMPLE, engine.spec)[1])
    texts = read_sst2(args.data, None)
    engine.run(["warm up"], [None])
    done = [asyncio.run(run_phase(engine, task, texts, ph, cfg, args.threads))
            for ph in phases(args.flood_s)]
    print(f"fair_batch_rows={cfg.fair_batch_rows}, max_batch_rows={cfg.max_batch_rows}, "
          f"batch_wait_ms={cfg.batch_wait_ms}, torch threads={args.threads}, {args.flood_s:.0f} s a phase")
    print(table(done))
    print(verdict(done))


if __name__ == "__main__":
    main()
