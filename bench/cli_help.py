"""CLI start-up benchmark: wall time of the commands a newcomer runs first, in a fresh process.

    python -m bench.cli_help --runs 5 [--tree /work/wt-before]

For each command (`polyhead --help`, `polyhead train --help`, and `polyhead train` with a
missing --train file, which must fail at once) it starts `TREE/.venv/bin/python -m
polyhead.cli ...` in TREE `--runs` times and prints the median and the worst wall time
(time.perf_counter around the whole process: interpreter start, imports, exit).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

COMMANDS = {
    "polyhead --help": ["--help"],
    "polyhead train --help": ["train", "--help"],
    "train, missing --train file": ["train", "--method", "lora", "--train", "/nonexistent.tsv",
                                    "--dev", "/nonexistent.tsv", "--out", "/tmp/x.polyhead"],
}


def wall(tree: Path, argv: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run([str(tree / ".venv/bin/python"), "-m", "polyhead.cli", *argv], cwd=tree, env=env,
                   capture_output=True, timeout=300)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tree", type=Path, default=Path.cwd(), help="repository checkout with its .venv")
    args = ap.parse_args(argv)
    print(f"tree {args.tree}, {args.runs} runs, load average {os.getloadavg()[0]:.1f}")
    print("| command | median s | worst s |\n|---|---:|---:|")
    for name, cmd in COMMANDS.items():
        times = [wall(args.tree, cmd) for _ in range(args.runs)]
        print(f"| {name} | {statistics.median(times):.2f} | {max(times):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
