"""The serving path against the in-process engine, per ingress mode, on one machine.

    python -m bench.ingress --data /work/shared/data/glue/SST-2/dev.tsv [--precision fp32 int8]

For each precision (`polyhead serve --precision P`, and the in-process engine's backbone
loaded at the same precision, so int8 e2e is divided by int8 in-process) and each ingress
of `polyhead serve --ingress` (proxy: Serve's gRPC proxy; direct: each replica serves gRPC
itself; haproxy: direct ingress behind Serve's HAProxy), one replica
and one PASTA task: closed-loop Classify load at each concurrency with 1 and with 8 SST-2
sentences per request. Each point's rows/s is divided by the in-process engine's rows/s
at that point's mean batch size (from the replica's Health counters), measured right
after the point with the server idle: e2e / engine at the same batch size (--repeats N:
each point N times, each with its own engine run right after, and the medians). The
replica's counters split each point: the share of it the engine was busy, and its rows per
second of forward (e2e / engine = busy x replica forward speed / in-process speed). Then a
ClassifyStream of --stream-rows sentences against the engine at batch 64. Server, load
generator and the engine baseline share this machine's cores.

Two clocks. Wall: rows per second, as a client sees them (on a shared, loaded machine the
server's point and the engine's run see different neighbours). CPU: CPU seconds per row,
the server's whole process tree (Ray, Serve's proxy, the replica: every CPU second the
serving path costs) against the in-process engine's; the ratio engine / server is what
the serving path would keep of the engine's throughput on CPUs of its own, and holds on a
loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import psutil
import torch

from bench.engine import read_sst2
from bench.serve import Server, allocator_as_replicas, health
from polyhead.client import PolyheadClient
from polyhead.engine import Engine, TaskArtifact, load_backbone
from polyhead.server.app_env import INGRESS_ENV
from polyhead.store import Store, encode_artifact, new_manifest
from polyhead.v1 import polyhead_pb2 as pb
from polyhead.v1 import polyhead_pb2_grpc as pb_grpc


def engine_rows_s(engine: Engine, task: Any, texts: Sequence[str], batch: float,
                  seconds: float) -> tuple[float, float]:
    """The in-process engine (tokenize + forward, as a replica does) at ``batch`` rows:
    (rows per wall second, CPU ms per row)."""
    rng = random.Random(0)
    n = max(1, round(batch))
    engine.run(texts[:n], [task] * n)  # warm-up
    # CPU of this thread only: with one torch thread the forward runs here, and the gRPC
    # client's threads (idle or polling after the load point) are not the engine's cost
    clock = time.thread_time if torch.get_num_threads() == 1 else time.process_time
    rows, t0, c0 = 0, time.perf_counter(), clock()
    while time.perf_counter() - t0 < seconds:
        engine.run(rng.sample(texts, n), [task] * n)
        rows += n
    return rows / (time.perf_counter() - t0), 1000 * (clock() - c0) / rows


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants, alive now."""
    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


async def closed_loop(address: str, texts: Sequence[str], per_request: int, concurrency: int,
                      duration: float, warmup: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.InferenceStub(channel)
        done = errors = 0
        t_measure = time.perf_counter() + warmup
        t_end = t_measure + duration

        async def worker(w: int) -> None:
            nonlocal done, errors
            rng = random.Random(w)
            while (now := time.perf_counter()) < t_end:
                inputs = [pb.Input(text=t) for t in rng.sample(texts, per_request)]
                try:
                    await stub.Classify(pb.ClassifyRequest(task_id="one", inputs=inputs))
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                if now >= t_measure:
                    done += 1

        await asyncio.gather(*[worker(w) for w in range(concurrency)])
    return {"rps": done / duration, "rows_s": done * per_request / duration, "errors": errors}


def stream_rows_s(address: str, texts: Sequence[str], rows: int) -> float:
    data = [texts[i % len(texts)] for i in range(rows)]
    with PolyheadClient(address, timeout_s=600) as c:
        t0 = time.perf_counter()
        n = sum(1 for _ in c.classify_stream("one", iter(data), chunk=64))
        assert n == rows, f"{n} answers for {rows} inputs"
        return rows / (time.perf_counter() - t0)


def run_mode(mode: str, precision: str, store: Path, work: Path, engine: Engine, task: Any,
             texts: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    for key in ("RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_ENABLE_HA_PROXY"):
        os.environ.pop(key, None)
    os.environ.update(INGRESS_ENV[mode])
    try:
        server = Server(store, 1, work / f"serve-{mode}-{precision}.log",
                        ["--ingress", mode, "--precision", precision, "--batch-rows", "64",
                         "--threads", str(args.threads), *args.server_args.split()])
    finally:
        os.environ.clear()
        os.environ.update(env)
    out: dict[str, Any] = {"startup_s": server.startup_s, "points": []}
    try:
        for per_request, c, rep in itertools.product(args.inputs, args.concurrency, range(args.repeats)):
            # the served point, then the engine alone at its batch: --repeats times, interleaved
            h0, cpu0 = health(server.address), tree_cpu_s(server.proc.pid)
            r = asyncio.run(closed_loop(server.address, texts, per_request, c,
                                        args.duration, args.warmup))
            h1, cpu1 = health(server.address), tree_cpu_s(server.proc.pid)
            rows = h1.batched_rows - h0.batched_rows
            r["mean_batch"] = rows / max(1, h1.batches - h0.batches)
            # the replica's own split: the share of the point its engine was busy, and its
            # rows per second of forward (e2e / engine = busy x forward speed / engine's)
            fwd = h1.forward_s - h0.forward_s
            r["replica_busy"] = fwd / (args.duration + args.warmup)
            r["replica_forward_rows_s"] = rows / max(fwd, 1e-9)
            r["server_cpu_ms_row"] = 1000 * (cpu1 - cpu0) / max(1, rows)
            r["engine_rows_s"], r["engine_cpu_ms_row"] = engine_rows_s(
                engine, task, texts, r["mean_batch"], args.engine_seconds)
            r.update(concurrency=c, per_request=per_request, repeat=rep)
            out["points"].append(r)
            print(f"{mode:8s} {precision} c={c:3d} x{per_request}: {r['rows_s']:7.1f} rows/s, batch "
                  f"{r['mean_batch']:5.1f}, engine {r['engine_rows_s']:6.1f} rows/s "
                  f"(wall {r['rows_s'] / r['engine_rows_s']:.2f}); CPU ms/row server "
                  f"{r['server_cpu_ms_row']:.2f}, engine {r['engine_cpu_ms_row']:.2f} "
                  f"(cpu {r['engine_cpu_ms_row'] / r['server_cpu_ms_row']:.2f}); replica busy "
                  f"{r['replica_busy']:.0%} at {r['replica_forward_rows_s']:.1f} rows/forward-s  "
                  f"errors {r['errors']}", flush=True)
        if args.stream_rows:
            cpu0 = tree_cpu_s(server.proc.pid)
            out["stream_rows_s"] = stream_rows_s(server.address, texts, args.stream_rows)
            out["stream_server_cpu_ms_row"] = (1000 * (tree_cpu_s(server.proc.pid) - cpu0)
                                               / args.stream_rows)
            out["stream_engine_rows_s"], out["stream_engine_cpu_ms_row"] = engine_rows_s(
                engine, task, texts, 64, args.engine_seconds)
            print(f"{mode:8s} {precision} stream {args.stream_rows}: {out['stream_rows_s']:.1f} rows/s, "
                  f"engine b64 {out['stream_engine_rows_s']:.1f}; CPU ms/row server "
                  f"{out['stream_server_cpu_ms_row']:.2f}, engine "
                  f"{out['stream_engine_cpu_ms_row']:.2f}", flush=True)
    finally:
        server.stop()
    return out


def report(results: dict[str, Any]) -> None:
    print(f"\nmachine: {results['machine']}; load average (1 min) at start/end: "
          f"{results['load_start']:.1f} / {results['load_end']:.1f}")
    runs = results["runs"]
    print("\n| ingress | precision | concurrency | inputs/request | mean batch | rows/s | engine "
          "rows/s at that batch | e2e / engine, wall | server CPU ms/row | engine CPU ms/row "
          "| e2e / engine, CPU | replica busy | replica rows/forward-s | errors |"
          "\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        for p in r["points"]:
            print(f"| {r['mode']} | {r['precision']} | {p['concurrency']} | {p['per_request']} | "
                  f"{p['mean_batch']:.1f} | {p['rows_s']:.1f} | {p['engine_rows_s']:.1f} | "
                  f"{p['rows_s'] / p['engine_rows_s']:.2f} | {p['server_cpu_ms_row']:.2f} | "
                  f"{p['engine_cpu_ms_row']:.2f} | "
                  f"{p['engine_cpu_ms_row'] / p['server_cpu_ms_row']:.2f} | {p['replica_busy']:.0%} | "
                  f"{p['replica_forward_rows_s']:.1f} | {p['errors']} |")
    if any(p.get("repeat") for r in runs for p in r["points"]):  # --repeats: each point's median
        print("\n| ingress | precision | concurrency | inputs/request | repeats | e2e / engine, wall: "
              "median (range) | replica forward / engine: median |\n|---|---|---:|---:|---:|---|---:|")
        for r in runs:
            groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
            for p in r["points"]:
                groups.setdefault((p["concurrency"], p["per_request"]), []).append(p)
            for (c, k), ps in groups.items():
                wall = [p["rows_s"] / p["engine_rows_s"] for p in ps]
                fwd = [p["replica_forward_rows_s"] / p["engine_rows_s"] for p in ps]
                print(f"| {r['mode']} | {r['precision']} | {c} | {k} | {len(ps)} | "
                      f"{statistics.median(wall):.2f} ({min(wall):.2f}-{max(wall):.2f}) | "
                      f"{statistics.median(fwd):.2f} |")
    if any("stream_rows_s" in r for r in runs):
        print("\n| ingress | precision | ClassifyStream rows/s | engine rows/s (batch 64) | ratio, "
              "wall | server CPU ms/row | engine CPU ms/row | ratio, CPU |"
              "\n|---|---|---:|---:|---:|---:|---:|---:|")
        for r in runs:
            if "stream_rows_s" in r:
                print(f"| {r['mode']} | {r['precision']} | {r['stream_rows_s']:.1f} | "
                      f"{r['stream_engine_rows_s']:.1f} | "
                      f"{r['stream_rows_s'] / r['stream_engine_rows_s']:.2f} | "
                      f"{r['stream_server_cpu_ms_row']:.2f} | "
                      f"{r['stream_engine_cpu_ms_row']:.2f} | "
                      f"{r['stream_engine_cpu_ms_row'] / r['stream_server_cpu_ms_row']:.2f} |")
    print("\nstartup (spawn -> first Classify): " + ", ".join(
        f"{r['mode']} {r['precision']} {r['startup_s']:.1f} s" for r in runs))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="SST-2 dev.tsv (GLUE format)")
    ap.add_argument("--modes", nargs="+", default=sorted(INGRESS_ENV), choices=sorted(INGRESS_ENV))
    ap.add_argument("--concurrency", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--inputs", type=int, nargs="+", default=[1, 8], help="inputs per request")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--engine-seconds", type=float, default=6.0)
    ap.add_argument("--stream-rows", type=int, default=20_000, help="0: no stream point")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the replica and of the in-process engine (the same)")
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "int8", "bf16"),
                    help="`polyhead serve --precision`, one server per value; the in-process "
                         "engine loads its backbone at the same precision")
    ap.add_argument("--repeats", type=int, default=1,
                    help="each point this many times, each followed by the engine alone at its "
                         "batch (served and in-process interleaved; the medians are reported)")
    ap.add_argument("--server-args", default="", help="extra `polyhead serve` flags")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    texts = read_sst2(args.data, None)
    allocator_as_replicas(args.server_args)
    work = Path(tempfile.mkdtemp(prefix="polyhead-ingress-"))
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} engine threads", "load_start": os.getloadavg()[0],
        "runs": []}
    for precision in args.precision:
        # the in-process baseline runs the replica's kernels: load_backbone(precision=P), as
        # `polyhead serve --precision P` loads it (prepacked fp32, int8 Linears)
        bb = load_backbone(precision=precision)
        engine = Engine(bb, max_batch_size=64)
        art = TaskArtifact.random("pasta", bb.spec, 2, seed=0)
        if not (work / "store").exists():
            Store(work / "store", bb.spec).publish(
                encode_artifact(new_manifest("one", art, bb.spec, labels=["neg", "pos"]), art))
        task = engine.load(art)
        for mode in args.modes:
            res = run_mode(mode, precision, work / "store", work, engine, task, texts, args)
            results["runs"].append({"mode": mode, "precision": precision, **res})
    results["load_end"] = os.getloadavg()[0]
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
