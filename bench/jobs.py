"""Training jobs on a local `polyhead serve` (BENCHMARKS.md "Training jobs").

    flock /tmp/polyhead-ray.lock .venv/bin/python -m bench.jobs [--rows 160] [--jobs 8]

Three measurements, on the packaged MiniLM and SST-2 rows (--data, default ../shared/data/glue/SST-2):
  1. overhead of one job alone: submit -> its first training step, and its last step ->
     the first Classify answered by the new version (the store's event times and the
     client's clock, one machine);
  2. serving throughput (closed-loop Classify clients) with no job, then while jobs run,
     with `--train-cpus` reserving cores for training (the replica keeps the rest);
  3. N LoRA jobs submitted at once against the same N `polyhead train` runs one after
     another: wall time, and CPU time (jobs: the server's whole process tree, read with
     psutil before and after; train runs: their children's rusage).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from polyhead.client import PolyheadClient, PolyheadError

TOKEN = "bench-jobs-token"
OPTIONS = {"epochs": "1", "batch_size": "16", "max_length": "64"}
TEXTS = ["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés",
         "an utterly charming and hilarious film", "it's a bad sign when you're rooting for the villain"]


def polyhead() -> list[str]:
    script = Path(sys.executable).parent / "polyhead"
    return [str(script)] if script.exists() else [sys.executable, "-m", "polyhead.cli"]


def write_data(glue: Path, folder: Path, rows: int, start: int = 0) -> tuple[Path, Path]:
    """``rows`` SST-2 train rows (from ``start``) and 100 dev rows, as TSVs in ``folder``."""
    lines = (glue / "train.tsv").read_text().splitlines()
    header, body = lines[0], lines[1 + start:1 + start + rows]
    train, dev = folder / f"train{start}.tsv", folder / "dev.tsv"
    train.write_text("\n".join([header, *body]) + "\n")
    dev.write_text("\n".join((glue / "dev.tsv").read_text().splitlines()[:101]) + "\n")
    return train, dev


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(work: Path, train_cpus: int) -> Iterator[tuple[str, psutil.Process]]:
    port, http = free_port(), free_port()
    env = {**os.environ, "POLYHEAD_STORE": str(work / "store"), "POLYHEAD_TOKEN": TOKEN,
           "HF_HUB_OFFLINE": "1"}
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen([*polyhead(), "serve", "--port", str(port), "--http-port", str(http),
                             "--train-cpus", str(train_cpus)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    try:
        with PolyheadClient(address, TOKEN, retries=0, timeout_s=5) as c:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError((work / "serve.log").read_text()[-3000:])
                with contextlib.suppress(PolyheadError):
                    c.classify("sentiment", "warm up")
                    break
                time.sleep(1.0)
        yield address, psutil.Process(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(180)


def tree_cpu(root: psutil.Process) -> float:
    """User + system seconds of ``root`` and every process under it now."""
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def submit(c: PolyheadClient, train: Path, dev: Path, task: str, options: dict[str, str]) -> str:
    t = c.upload_dataset(train.read_bytes(), train.name)
    d = c.upload_dataset(dev.read_bytes(), dev.name, labels_from=t["dataset_id"])
    return str(c.create_job(task, "lora", t["dataset_id"], dev_dataset=d["dataset_id"],
                            options=options)["job_id"])


def overhead(address: str, train: Path, dev: Path) -> dict[str, float]:
    """One job alone: submit -> first step; last step -> the first answer by its version."""
    with PolyheadClient(address, TOKEN) as c:
        t_submit = time.time()
        job_id = submit(c, train, dev, "overhead", OPTIONS)
        events = list(c.watch_job(job_id, timeout_s=1800))
        if events[-1]["kind"] != "published":
            raise RuntimeError(f"job {job_id}: {events[-1]}")
        version = events[-1]["version"]
        while c.classify_raw("overhead", TEXTS[0]).version != version:
            time.sleep(0.01)
        t_served = time.time()
    steps = [e for e in events if e["kind"] == "step"]
    started = next(e for e in events if e["kind"] == "started")
    return {"submit_to_started_s": ts(started["at"]) - t_submit,
            "submit_to_first_step_s": ts(steps[0]["at"]) - t_submit,
            "last_step_to_published_s": ts(events[-1]["at"]) - ts(steps[-1]["at"]),
            "last_step_to_served_s": t_served - ts(steps[-1]["at"])}


class Load:
    """``clients`` closed-loop Classify threads; ``rate`` over a window."""

    def __init__(self, address: str, clients: int) -> None:
        self.address, self.done, self.stop = address, 0, threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, i: int) -> None:
        with PolyheadClient(self.address, timeout_s=60) as c:
            while not self.stop.is_set():
                c.classify("sentiment", [TEXTS[(i + k) % 4] for k in range(4)])
                self.done += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def rate(self, seconds: float) -> float:
        n0, t0 = self.done, time.perf_counter()
        time.sleep(seconds)
        return (self.done - n0) / (time.perf_counter() - t0)


def throughput(address: str, train: Path, dev: Path, seconds: float, clients: int) -> dict[str, float]:
    """Requests/s with no job, then while a job trains (long enough to cover the window)."""
    with Load(address, clients) as load:
        load.rate(3.0)  # warm
        alone = load.rate(seconds)
        with PolyheadClient(address, TOKEN) as c:
            job_id = submit(c, train, dev, "busy", {**OPTIONS, "epochs": "50"})
            for e in c.watch_job(job_id, timeout_s=1800):
                if e["kind"] == "step":
                    break
            during = load.rate(seconds)
            running = c.get_job(job_id)["state"]
            c.cancel_job(job_id)
    return {"alone_rps": alone, "during_jobs_rps": during, "ratio": during / alone,
            "job_still_running": float(running == "running")}


def jobs_at_once(address: str, root: psutil.Process, data: list[tuple[Path, Path]]) -> dict[str, float]:
    with PolyheadClient(address, TOKEN) as c:
        cpu0, t0 = tree_cpu(root), time.perf_counter()
        ids = [submit(c, train, dev, f"job-{i}", OPTIONS) for i, (train, dev) in enumerate(data)]
        ends = [list(c.watch_job(j, timeout_s=3600))[-1]["kind"] for j in ids]
        wall, cpu = time.perf_counter() - t0, tree_cpu(root) - cpu0
    if set(ends) != {"published"}:
        raise RuntimeError(f"jobs ended {ends}")
    return {"wall_s": wall, "cpu_s": cpu}


def trains_in_a_row(work: Path, data: list[tuple[Path, Path]]) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    for i, (train, dev) in enumerate(data):
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in OPTIONS.items()]
        subprocess.run([*polyhead(), "train", "--method", "lora", "--train", str(train), "--dev", str(dev),
                        "--out", str(work / f"run{i}.polyhead"), "--quiet", *flags],
                       check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/glue/SST-2"),
                    help="GLUE's SST-2 folder (train.tsv, dev.tsv)")
    ap.add_argument("--rows", type=int, default=160, help="train rows per job")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--train-cpus", type=int, default=1)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=15.0, help="each throughput window")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    data = [write_data(args.data, work, args.rows, start=i * args.rows) for i in range(args.jobs)]
    print(f"# {args.jobs} LoRA jobs x {args.rows} SST-2 rows, 1 epoch, batch 16, max_length 64; "
          f"--train-cpus {args.train_cpus}; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    with server(work, args.train_cpus) as (address, root):
        over = overhead(address, *data[0])
        print("| overhead | " + " | ".join(f"{k} {v:.2f}" for k, v in over.items()) + " |", flush=True)
        tp = throughput(address, *data[0], args.seconds, args.clients)
        print("| serving | " + " | ".join(f"{k} {v:.3f}" for k, v in tp.items()) + " |", flush=True)
        at_once = jobs_at_once(address, root, data)
        print(f"| {args.jobs} jobs at once | wall {at_once['wall_s']:.1f} s | cpu {at_once['cpu_s']:.1f} s |",
              flush=True)
    in_a_row = trains_in_a_row(work, data)
    print(f"| {args.jobs} polyhead train in a row | wall {in_a_row['wall_s']:.1f} s | "
          f"cpu {in_a_row['cpu_s']:.1f} s |", flush=True)
    print(f"# load average {os.getloadavg()[0]:.1f} at the end", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
