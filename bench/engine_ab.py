"""A/B of the engine's own rows: code trees and allocator settings, each variant in a
process of its own, alternated, on the CPU clock.

    python -m bench.engine_ab --data ../shared/data/glue/SST-2/dev.tsv --allocators system keep
    python -m bench.engine_ab --data ... --trees /tmp/before . --allocators keep --repeats 2

Some changes cannot be switched inside one process: the C allocator's settings
(polyhead.engine.memory), or the code itself (a checkout of another commit, e.g. a git
worktree, given with --trees). Each variant (tree x allocator) runs the rows of
``bench.engine`` named by --rows (b', c, cc, b8, c8 by default: the engine with no task,
64 mixed tasks with 1 % sparse as single weights or as columns, and the same two in int8)
in a fresh process, --rounds times (median); the variants take turns, --repeats times over,
so that a shift in the machine's load hits each alike. The table gives each variant's
median over its processes, and each row against the first variant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROWS = "b',c,cc,b8,c8"


def child(args: argparse.Namespace) -> None:
    """One variant's process: the tree's bench.engine rows (importing the tree on PYTHONPATH)."""
    if args.allocator == "keep":  # this file's own tree's setting: an older tree may lack it
        import importlib.util

        path = HERE.parents[1] / "polyhead/engine/memory.py"
        spec = importlib.util.spec_from_file_location("_memory", path)
        assert spec is not None and spec.loader is not None
        memory = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(memory)
        if not memory.keep_freed_memory():
            raise SystemExit("--allocators keep: this C library is not glibc")
    import torch

    from bench import engine as E  # the tree's own

    torch.set_num_threads(1)
    want = args.rows.split(",")
    ns = argparse.Namespace(backbone=None, geometry="minilm", device="auto", dtype="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        bb = E.make_backbone(ns, Path(tmp))
        enc = E.Engine(bb).tokenize(E.read_sst2(args.data, args.limit))
        buckets = E.plan_buckets([len(e.ids) for e in enc], 64)
        bb8 = E.load_backbone(None, precision="int8") if any(r.endswith("8") for r in want) else None
        runs = {k: v for k, v in E.mix_runs(bb, enc, buckets, bb8).items() if k.split(":")[0] in want}
        rates = E.measure(runs, args.rounds, time.thread_time, lambda: None, len(enc))
    print(json.dumps({k.split(":")[0]: v for k, v in rates.items()}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="SST-2 dev.tsv (GLUE format)")
    ap.add_argument("--trees", nargs="+", default=["."], help="code trees to compare (default: this one)")
    ap.add_argument("--allocators", nargs="+", choices=("system", "keep"), default=["keep"],
                    help="glibc as it is, or polyhead.engine.memory.keep_freed_memory (as the replica)")
    ap.add_argument("--rows", default=ROWS, help=f"bench.engine rows (default {ROWS})")
    ap.add_argument("--rounds", type=int, default=3, help="timed passes per process (median)")
    ap.add_argument("--repeats", type=int, default=2, help="processes per variant, alternated")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N sentences")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--allocator", default="keep", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    variants = [(str(Path(t).resolve()), a) for t in args.trees for a in args.allocators]
    got: dict[tuple[str, str], list[dict[str, float]]] = {v: [] for v in variants}
    for rep in range(args.repeats):
        for tree, alloc in variants:
            env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}
            cmd = [sys.executable, str(HERE), "--child", "--data", args.data, "--rows", args.rows,
                   "--rounds", str(args.rounds), "--allocator", alloc]
            if args.limit:
                cmd += ["--limit", str(args.limit)]
            out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=True)
            got[(tree, alloc)].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"repeat {rep + 1}: {tree} {alloc}: {got[(tree, alloc)][-1]}", file=sys.stderr, flush=True)
    rows = args.rows.split(",")
    first = variants[0]
    med = {v: {r: statistics.median(p[r] for p in got[v]) for r in rows} for v in variants}
    print(f"rows={args.rows} rounds={args.rounds} repeats={args.repeats} clock=cpu (1 thread); "
          f"seq/s, median over each variant's processes; x: against {first[0]} {first[1]}")
    print("| tree | allocator | " + " | ".join(rows) + " | " + " | ".join(f"x {r}" for r in rows) + " |")
    print("|---|---|" + "---:|" * (2 * len(rows)))
    for v in variants:
        print(f"| {v[0]} | {v[1]} | " + " | ".join(f"{med[v][r]:.1f}" for r in rows) + " | "
              + " | ".join(f"{med[v][r] / med[first][r]:.3f}" for r in rows) + " |")


if __name__ == "__main__":
    main()
