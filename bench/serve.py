"""Serving benchmark: closed-loop gRPC load on loopback against `polyhead serve`.

    python -m bench.serve --data /work/shared/data/glue/SST-2/dev.tsv

Scenarios (one SST-2 dev sentence per Classify request): (a) 1 task; (b) 100 tasks of all
five kinds, uniform; (c) 1,000 PASTA tasks, uniform and Zipf(1.0) popularity. Each at
concurrency 1, 8 and 32 (closed loop: every worker sends its next request when its last
answer arrives). Baseline: the in-process engine on the same rows and task mix. Then
upload-to-servable latency with 2 replicas, and startup time (process start -> first
served Classify). Server and load generator share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import torch

from bench.engine import KINDS, read_sst2
from polyhead.engine import Engine, TaskArtifact, load_backbone
from polyhead.engine.memory import keep_freed_memory
from polyhead.store import Store, encode_artifact, new_manifest
from polyhead.v1 import polyhead_pb2 as pb
from polyhead.v1 import polyhead_pb2_grpc as pb_grpc

Pick = Callable[[random.Random], tuple[str, str]]  # -> (task id, sentence)


GROUPS = {"one": 1, "mixed": 100, "pasta": 1000}  # task group -> how many tasks
# scenario -> (its task group, its popularity: uniform, or Zipf with this exponent)
SCENARIOS: dict[str, tuple[str, float | None]] = {
    "1 task": ("one", None), "100 tasks, 5 kinds": ("mixed", None),
    "1,000 PASTA, uniform": ("pasta", None), "1,000 PASTA, Zipf 1.0": ("pasta", 1.0)}


Built = dict[str, list[tuple[str, bytes, TaskArtifact]]]  # group -> (task id, file bytes, artifact)


def build_tasks(spec: Any, groups: Sequence[str] = tuple(GROUPS)) -> Built:
    def make(task_id: str, kind: str, cfg: Any, labels: int, seed: int):
        art = TaskArtifact.random(kind, spec, labels, config=cfg, seed=seed)
        names = [f"l{j}" for j in range(labels)]
        return task_id, encode_artifact(new_manifest(task_id, art, spec, labels=names), art), art

    makers = {
        "one": lambda: [make("one", "pasta", None, 2, 0)],
        "mixed": lambda: [make(f"mix-{i:03d}", KINDS[i % 5][0], KINDS[i % 5][1], 2 + i % 3, 1000 + i)
                          for i in range(GROUPS["mixed"])],
        "pasta": lambda: [make(f"pasta-{i:04d}", "pasta", None, 2, 2000 + i) for i in range(GROUPS["pasta"])],
    }
    return {g: makers[g]() for g in groups}


def scenarios(names: Sequence[str], tasks: dict[str, list],
              texts: Sequence[str]) -> dict[str, tuple[str, Pick]]:
    """Scenario name -> (its task group, how a request picks its task and sentence), for
    ``names`` (their groups must be in ``tasks``)."""
    def uniform(ids: list[str]) -> Pick:
        return lambda rng: (rng.choice(ids), rng.choice(texts))

    def zipf(ids: list[str], s: float = 1.0) -> Pick:
        weights = [1.0 / (r + 1) ** s for r in range(len(ids))]
        return lambda rng: (rng.choices(ids, weights)[0], rng.choice(texts))

    out = {}
    for name in names:
        group, exponent = SCENARIOS[name]
        ids = [t for t, _, _ in tasks[group]]
        out[name] = (group, uniform(ids) if exponent is None else zipf(ids, exponent))
    return out


def engine_throughput(engine: Engine, loaded: dict[str, Any], pick: Pick, rows: int,
                      batch: int) -> float:
    """Rows/s of the in-process engine over ``rows`` picked rows in batches of ``batch``."""
    rng = random.Random(0)
    picked = [pick(rng) for _ in range(rows)]
    chunks = [picked[i:i + batch] for i in range(0, rows, batch)]
    engine.run([t for _, t in chunks[0][:8]], [loaded[k] for k, _ in chunks[0][:8]])  # warm-up
    t0 = time.perf_counter()
    for ch in chunks:
        engine.run([t for _, t in ch], [loaded[k] for k, _ in ch])
    return rows / (time.perf_counter() - t0)


async def closed_loop(address: str, pick: Pick, concurrency: int, duration: float,
                      warmup: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.InferenceStub(channel)
        lat: list[float] = []
        errors = 0
        t_start = time.perf_counter()
        t_measure, t_end = t_start + warmup, t_start + warmup + duration

        async def worker(w: int) -> None:
            nonlocal errors
            rng = random.Random(w)
            while (now := time.perf_counter()) < t_end:
                task, text = pick(rng)
                try:
                    await stub.Classify(pb.ClassifyRequest(task_id=task, inputs=[pb.Input(text=text)]))
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                if now >= t_measure:
                    lat.append(time.perf_counter() - now)

        await asyncio.gather(*[worker(w) for w in range(concurrency)])
    lat.sort()
    return {"rps": len(lat) / duration, "n": len(lat), "p50_ms": 1000 * lat[len(lat) // 2],
            "p99_ms": 1000 * pct(lat, 0.99), "max_ms": 1000 * lat[-1], "errors": errors}


async def warm(address: str, task_ids: Sequence[str], text: str) -> None:
    """Classify every task once (32 at a time), so the bank has loaded them all."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.InferenceStub(channel)
        sem = asyncio.Semaphore(32)

        async def one(t: str) -> None:
            async with sem:
                await stub.Classify(pb.ClassifyRequest(task_id=t, inputs=[pb.Input(text=text)]))

        await asyncio.gather(*[one(t) for t in task_ids])


def health(address: str) -> pb.HealthResponse:
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.InferenceStub(channel).Health(pb.HealthRequest(), timeout=30)


def serve_processes(server_pid: int) -> dict[str, Any]:
    """The Serve proxy and Polyhead replica processes under `polyhead serve` (pid)."""
    import psutil

    out: dict[str, Any] = {}
    for p in psutil.Process(server_pid).children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "ProxyActor" in cmd:
            out["proxy"] = p
        elif "ServeReplica:polyhead" in cmd:
            out.setdefault("replica", p)
    return out


def cpu_s(p: Any) -> float:
    t = p.cpu_times()
    return t.user + t.system


async def health_loop(address: str, concurrency: int, seconds: float) -> tuple[int, int]:
    """Closed-loop Health calls for ``seconds``: (answered, errors)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.InferenceStub(channel)
        done = errors = 0
        t_end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < t_end:
                try:
                    await stub.Health(pb.HealthRequest())
                    done += 1
                except grpc.aio.AioRpcError:
                    errors += 1

        await asyncio.gather(*[worker() for _ in range(concurrency)])
    return done, errors


def health_cost(server: Server, concurrency: int, seconds: float) -> dict[str, float]:
    """Serve's own cost per request: closed-loop Health (no engine work) at ``concurrency``;
    CPU seconds of the proxy, the replica and this (client) process over the run, per call."""
    import psutil

    procs = {**serve_processes(server.proc.pid), "client": psutil.Process()}
    asyncio.run(health_loop(server.address, concurrency, 1.0))  # warm-up
    before = {k: cpu_s(p) for k, p in procs.items()}
    t0 = time.perf_counter()
    done, errors = asyncio.run(health_loop(server.address, concurrency, seconds))
    wall = time.perf_counter() - t0
    out = {"concurrency": concurrency, "seconds": wall, "calls": done, "errors": errors,
           "rps": done / wall, "load_average": os.getloadavg()[0]}
    for k, p in procs.items():
        out[f"{k}_cpu_ms_per_call"] = 1000 * (cpu_s(p) - before[k]) / max(1, done)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`polyhead serve` in a subprocess; ``startup_s``: spawn -> first served Classify."""

    def __init__(self, store: Path, replicas: int, log: Path, extra: Sequence[str] = (),
                 probe_task: str = "one", examples: bool = False, timeout_s: float = 300) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "polyhead.cli", "serve", "--insecure",
               "--port", str(self.port), "--http-port", str(free_port()), "--store", str(store),
               "--replicas", str(replicas), *([] if examples else ["--no-examples"]), *extra]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
        channel = grpc.insecure_channel(self.address)
        stub = pb_grpc.InferenceStub(channel)
        req = pb.ClassifyRequest(task_id=probe_task, inputs=[pb.Input(text="a fine film")])
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {log}")
            if time.perf_counter() - t0 > timeout_s:
                self.stop()
                raise RuntimeError(f"no answer for task {probe_task!r} in {timeout_s:.0f} s; see {log}")
            try:
                stub.Classify(req, timeout=2)
                break
            except grpc.RpcError:
                time.sleep(0.1)
        self.startup_s = time.perf_counter() - t0
        channel.close()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def swap_latency(address: str, spec: Any, rounds: int) -> dict[str, list[float]]:
    """Upload new versions of one task. upload_rpc: the Upload RPC (returns once the version
    is durable and servable on the replica that took it). all_replicas: from Upload's return
    until each replica has answered with the new version (bounded below by when the router
    first sends that replica a request). stale: answers naming the old version among
    requests sent after Upload returned (hot-swap correctness: should be 0)."""
    arts = []
    for i in range(rounds + 1):
        art = TaskArtifact.random("pasta", spec, 2, seed=5000 + i)
        arts.append(encode_artifact(new_manifest("swap", art, spec, labels=["a", "b"]), art))
    channel = grpc.insecure_channel(address)
    inf, reg = pb_grpc.InferenceStub(channel), pb_grpc.RegistryStub(channel)
    reg.Upload(pb.UploadRequest(artifact=arts[0]))
    req = pb.ClassifyRequest(task_id="swap", inputs=[pb.Input(text="a fine film")])
    out: dict[str, list[float]] = {"upload_rpc": [], "all_replicas": [], "stale": [],
                                   "resident_other": []}

    def resident_at(_: int) -> tuple[str, dict[str, float]]:
        """(replica, version -> when it became resident there, on this clock)."""
        h = inf.Health(pb.HealthRequest())
        now = time.perf_counter()
        return h.replica, {r.version: now - r.age_s for r in h.resident if r.task_id == "swap"}

    def probe(_: int) -> tuple[str, str, float]:
        res = inf.Classify(req)
        return res.replica, res.version, time.perf_counter()

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        for data in arts[1:]:
            t0 = time.perf_counter()
            version = reg.Upload(pb.UploadRequest(artifact=data)).version
            t1 = time.perf_counter()
            served: dict[str, float] = {}
            stale = 0
            while len(served) < 2 and time.perf_counter() - t1 < 5:
                for replica, v, t in pool.map(probe, range(8)):
                    if v == version:
                        served.setdefault(replica, t - t1)
                    else:
                        stale += 1
            out["upload_rpc"].append(t1 - t0)
            out["all_replicas"].append(max(served.values()) if len(served) == 2 else float("inf"))
            out["stale"].append(stale)
            loaded: dict[str, float] = {}
            while len(loaded) < 2 and time.perf_counter() - t1 < 5:
                for replica, versions in pool.map(resident_at, range(8)):
                    if version in versions:
                        loaded[replica] = versions[version]
            # the later of the two replicas: the one that did not take the upload
            out["resident_other"].append(max(loaded.values()) - t1 if len(loaded) == 2
                                         else float("inf"))
            time.sleep(0.05)
    channel.close()
    return out


def pct(xs: Sequence[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def allocator_as_replicas(server_args: str) -> None:
    """This process's allocator set as the servers' replicas set theirs (`polyhead serve`
    keeps freed memory unless --release-freed-memory is among ``server_args``), so that the
    in-process baseline runs as the replica does."""
    if "--release-freed-memory" not in server_args.split():
        keep_freed_memory()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="SST-2 dev.tsv (GLUE format)")
    ap.add_argument("--duration", type=float, default=8.0, help="measured seconds per point")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--engine-rows", type=int, default=256, help="rows per engine baseline")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--swap-rounds", type=int, default=30)
    ap.add_argument("--only", nargs="*", help="scenario name prefixes to run")
    ap.add_argument("--server-args", default="", help="extra `polyhead serve` flags")
    ap.add_argument("--backbone", default=None,
                    help="local HF encoder folder for the server and the in-process baseline "
                         "(default: the packaged MiniLM)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda, for both (default cpu)")
    ap.add_argument("--precision", choices=("fp32", "int8", "bf16"), default="fp32",
                    help="the backbone's arithmetic, for both (default fp32)")
    ap.add_argument("--parts", nargs="+", choices=("load", "swap", "health"),
                    default=["load", "swap", "health"], help="what to measure (default: all)")
    ap.add_argument("--health-seconds", type=float, default=5.0,
                    help="closed-loop Health seconds for Serve's own cost per request")
    ap.add_argument("--health-concurrency", type=int, default=32)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = read_sst2(args.data, None)
    allocator_as_replicas(args.server_args)
    bb = load_backbone(args.backbone, device=args.device, precision=args.precision)
    engine = Engine(bb, max_batch_size=64)
    serve_args = [*args.server_args.split(), "--device", args.device, "--precision", args.precision,
                  *(["--backbone", str(args.backbone)] if args.backbone else [])]
    names = [k for k in SCENARIOS if not args.only or any(k.startswith(p) for p in args.only)]
    groups = {SCENARIOS[k][0] for k in names} if "load" in args.parts else set()
    tasks = build_tasks(bb.spec, sorted(groups | {"one"}))  # "one": the servers' probe task
    picks = scenarios(names, tasks, texts) if "load" in args.parts else {}
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} CPU cores, torch "
                               f"{torch.__version__}, {torch.get_num_threads()} threads; "
                               f"{bb.device} {bb.precision}, backbone {bb.spec.num_layers} x "
                               f"{bb.spec.hidden}",
                               "load_average_at_start": os.getloadavg()}
    if "load" in args.parts:  # -- in-process engine baselines (no server running)
        loaded = {t: engine.load(a) for group in tasks.values() for t, _, a in group}
        results["engine"] = {name: {str(b): engine_throughput(engine, loaded, pick, args.engine_rows, b)
                                    for b in (32, 64)} for name, (_, pick) in picks.items()}
        print(f"engine rows/s: {json.dumps(results['engine'])}", flush=True)
        del loaded
    work = Path(tempfile.mkdtemp(prefix="polyhead-bench-"))
    store = Store(work / "store", bb.spec)
    published = [g for k, g in tasks.items() if "load" in args.parts or k == "one"]
    t0 = time.perf_counter()
    for group in published:
        for _, data, _ in group:
            store.publish(data)
    results["publish_s_per_task"] = (time.perf_counter() - t0) / sum(map(len, published))
    if {"load", "health"} & set(args.parts):  # -- one replica: startup, load points, Serve's cost
        server = Server(work / "store", 1, work / "serve1.log", serve_args)
        results["startup_s"] = server.startup_s
        try:
            if "load" in args.parts:
                results["load"] = load_points(server, args, tasks, picks, texts[0])
            if "health" in args.parts:
                results["health"] = health_cost(server, args.health_concurrency, args.health_seconds)
        finally:
            server.stop()
    if "load" in args.parts:  # -- the engine again (machine load drifts): batch 32 after
        loaded = {t: engine.load(a) for group in tasks.values() for t, _, a in group}
        for name, (_, pick) in picks.items():
            results["engine"][name]["32_after"] = engine_throughput(engine, loaded, pick,
                                                                    args.engine_rows, 32)
        del loaded
    if "swap" in args.parts:  # -- two replicas: upload-to-servable
        server = Server(work / "store", 2, work / "serve2.log", serve_args)
        try:
            results["swap"] = swap_latency(server.address, bb.spec, args.swap_rounds)
        finally:
            server.stop()
    results["load_average_at_end"] = os.getloadavg()
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def load_points(server: Server, args: argparse.Namespace, tasks: dict[str, list],
                picks: dict[str, tuple[str, Pick]], text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (group, pick) in picks.items():
        asyncio.run(warm(server.address, [t for t, _, _ in tasks[group]], text))
        for c in args.concurrency:
            h0 = health(server.address)
            r = asyncio.run(closed_loop(server.address, pick, c, args.duration, args.warmup))
            h1 = health(server.address)
            fwd = h1.forward_s - h0.forward_s
            r["replica_engine_rows_s"] = (h1.batched_rows - h0.batched_rows) / max(fwd, 1e-9)
            r["engine_busy"] = fwd / (args.duration + args.warmup)
            r["mean_batch_rows"] = ((h1.batched_rows - h0.batched_rows)
                                    / max(1, h1.batches - h0.batches))
            out.setdefault(name, {})[str(c)] = r
            print(f"{name:24s} c={c:2d}  {r['rps']:7.1f} req/s  p50 {r['p50_ms']:6.1f} ms  "
                  f"{tail(r)} ms  errors {r['errors']}  batch {r['mean_batch_rows']:.1f}  engine "
                  f"busy {r['engine_busy']:.0%} at {r['replica_engine_rows_s']:.0f} rows/s", flush=True)
    return out


def tail(p: dict[str, Any]) -> str:
    """p99 where there are at least 100 samples, else what it would be: the maximum."""
    return f"p99 {p['p99_ms']:.1f}" if p["n"] >= 100 else f"max of {p['n']} {p['max_ms']:.1f}"


def report(r: dict[str, Any]) -> None:
    print(f"\nmachine: {r['machine']}; load average (1 min) at start/end: "
          f"{r['load_average_at_start'][0]:.1f} / {r['load_average_at_end'][0]:.1f}")
    print(f"published {r['publish_s_per_task'] * 1000:.1f} ms per task into the store")
    if "startup_s" in r:
        print(f"startup (spawn -> first served Classify): {r['startup_s']:.1f} s")
    if "load" in r:
        report_load(r)
    if "swap" in r:
        report_swap(r["swap"])
    if "health" in r:
        h = r["health"]
        print(f"\nServe's own cost per request: closed-loop Health (no engine), concurrency "
              f"{h['concurrency']}, {h['seconds']:.1f} s, load average {h['load_average']:.1f}\n"
              "| Health req/s | proxy CPU ms/req | replica CPU ms/req | client CPU ms/req | errors |\n"
              "|---:|---:|---:|---:|---:|\n"
              f"| {h['rps']:.0f} | {h.get('proxy_cpu_ms_per_call', float('nan')):.2f} | "
              f"{h.get('replica_cpu_ms_per_call', float('nan')):.2f} | "
              f"{h['client_cpu_ms_per_call']:.2f} | {h['errors']} |")


def report_load(r: dict[str, Any]) -> None:
    print("\n| scenario | conc. | req/s | answers | p50 ms | p99 ms (max of n if n < 100) | mean batch "
          "| replica engine busy, rows/s | in-process engine rows/s: b32 before, after; b64 "
          "| e2e / in-process b32 before | e2e / in-process b32 after |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, points in r["load"].items():
        eng = r["engine"][name]
        after = eng.get("32_after", float("nan"))
        for c, p in points.items():
            print(f"| {name} | {c} | {p['rps']:.1f} | {p['n']} | {p['p50_ms']:.1f} | {tail(p)} | "
                  f"{p['mean_batch_rows']:.1f} | {p['engine_busy']:.0%}, "
                  f"{p['replica_engine_rows_s']:.0f} | {eng['32']:.0f}, {after:.0f}; {eng['64']:.0f} | "
                  f"{p['rps'] / eng['32']:.2f} | {p['rps'] / after:.2f} |")
    load = r["load"]
    one, mixed = load.get("1 task", {}).get("32"), load.get("100 tasks, 5 kinds", {}).get("32")
    if one and mixed:
        print(f"\n100-task mixed / 1-task throughput at c=32: {mixed['rps'] / one['rps']:.2f}")


def report_swap(s: dict[str, list[float]]) -> None:
    n = len(s["upload_rpc"])
    print(f"\nupload-to-servable, {n} uploads, 2 replicas (ms):\n"
          f"| measure | median | max of {n} |\n|---|---:|---:|")
    for key, what in (("upload_rpc", "Upload RPC (durable + servable on the receiving replica)"),
                      ("resident_other", "Upload return -> resident on the other replica "
                       "(its own clock, via Health ages)"),
                      ("all_replicas", "Upload return -> both replicas have answered with it")):
        print(f"| {what} | {1000 * statistics.median(s[key]):.0f} | {1000 * max(s[key]):.0f} |")
    later = [x for key in ("resident_other", "all_replicas") for x in s[key][1:]]
    print(f"uploads 2-{n}: resident on the other replica and answered by both within "
          f"{1000 * max(later):.0f} ms")
    print(f"stale answers (old version, request sent after Upload returned): {int(sum(s['stale']))} "
          f"in {n} uploads")


if __name__ == "__main__":
    main()
