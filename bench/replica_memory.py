"""Replica RSS per call through real Ray Serve, by what the calls do.

    flock /tmp/polyhead-ray.lock python -m bench.replica_memory --calls 600

One local Ray Serve app (1 replica, a tiny in-code BERT, bank budgets 10 KB device / 4 KB
host, the tests' settings) and one client. Phases, in order, each ``--calls`` calls with
the replica's RSS sampled 20 times; the slope is a least-squares fit over the samples
after the first 20 %:

  classify         Classify one resident task
  health           Health
  upload_same      Upload the same artifact again (the store answers with the existing
                   version: nothing new is kept)
  upload_new       Upload a new version of one task
  cycles           test_reliability.py's leak cycle: upload a new version of one of 16
                   tasks, classify it, delete the task every 4th round
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

PHASES = ("classify", "health", "upload_same", "upload_new", "cycles")


def slope_kb(samples: list[tuple[int, int]]) -> float:
    x = np.array(samples[len(samples) // 5:], dtype=float)
    return float(np.polyfit(x[:, 0], x[:, 1], 1)[0]) / 1024


def phase_calls(c, spec, artifact: Callable) -> dict[str, Callable[[int], object]]:
    same = artifact(spec, "same", seed=1)[0]
    c.upload(same)

    def cycle(i: int) -> None:
        task = f"leak{i % 16}"
        c.upload(artifact(spec, task, seed=1000 + i)[0])
        c.classify_raw(task, "rain")
        if (i // 16) % 4 == 3:
            c.delete(task)

    return {"classify": lambda i: c.classify_raw("same", "rain"), "health": lambda i: c.health(),
            "upload_same": lambda i: c.upload(same),
            "upload_new": lambda i: c.upload(artifact(spec, "one", seed=9000 + i)[0]),
            "cycles": cycle}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=600, help="calls per phase")
    ap.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from polyhead.engine import load_backbone
    from tests.reliability_support import replica_processes, running_app
    from tests.test_serving import artifact
    from tests.tiny import make_bert

    work = Path(tempfile.mkdtemp(prefix="polyhead-replica-memory-"))
    folder = make_bert(work / "bert")
    spec = load_backbone(folder).spec
    every = max(1, args.calls // 20)
    rows = []
    with running_app(folder, work / "store", replicas=1, device_budget_mb=0.01, host_budget_mb=0.004,
                     max_artifact_mb=1.0) as app:
        (proc,) = replica_processes()
        with app.client() as c:
            calls = phase_calls(c, spec, artifact)
            for name in args.phases:
                samples = []
                for i in range(args.calls):
                    calls[name](i)
                    if i % every == every - 1:
                        samples.append((i + 1, proc.memory_info().rss))
                rows.append((name, slope_kb(samples), samples[0][1] / 2**20, samples[-1][1] / 2**20))
                print(f"{name}: {rows[-1][1]:+.2f} KB/call", flush=True)
    print(f"\nreplica RSS, {args.calls} calls per phase, load average {os.getloadavg()[0]:.1f}\n"
          "| phase | RSS slope KB/call (after 20 %) | RSS first sample MB | RSS last sample MB |\n"
          "|---|---:|---:|---:|")
    for name, kb, first, last in rows:
        print(f"| {name} | {kb:+.2f} | {first:.1f} | {last:.1f} |")


if __name__ == "__main__":
    main()
