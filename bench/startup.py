"""Startup benchmark: `polyhead serve` as `make serve` runs it, spawn -> first served Classify.

    python -m bench.startup --runs 3

Each run starts `polyhead serve --insecure` on a fresh temporary store (so it publishes the
example task `sentiment`, as a first `make serve` does), polls Classify on `sentiment` until
it answers, then stops the server with Ctrl-C. Prints one row per run and the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.serve import Server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=1)
    args = ap.parse_args(argv)
    times = []
    print("| run | startup s | load average (1 min) |\n|---:|---:|---:|")
    for i in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="polyhead-startup-"))
        server = Server(work / "store", args.replicas, work / "serve.log", probe_task="sentiment",
                        examples=True)
        server.stop()
        times.append(server.startup_s)
        print(f"| {i + 1} | {server.startup_s:.1f} | {os.getloadavg()[0]:.2f} |", flush=True)
    print(f"\nmedian startup: {statistics.median(times):.1f} s over {args.runs} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
