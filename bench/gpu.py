"""The GPU benchmarks in one command: the engine (bench.engine) and the serving path
(bench.serve) on one device, for each BERT geometry, printing their tables.

    python -m bench.gpu --data ../shared/data/glue/SST-2/dev.tsv            # a CUDA machine
    python -m bench.gpu --data ... --device cpu --precision fp32 --quick    # a smoke run here

For each geometry (randomly initialised bert-base 12 x 768 and bert-large 24 x 1024, the
packaged MiniLM's vocabulary; weights do not change speed):
1. bench.engine, sections mix and kinds, in ``--precision`` (bf16 by default on a GPU),
   against the bare Hugging Face backbone and PEFT on the same batches (ONNX Runtime's
   CPU peers are skipped);
2. the same backbone written to a folder and served by `polyhead serve --backbone FOLDER
   --device D --precision P`; bench.serve's closed loop at ``--concurrency`` for one task and
   for 100 tasks of the five kinds, against the in-process engine on the same device.
Each step runs in a process of its own (one CUDA context at a time; a step that fails is
reported and the next one runs). ``--quick`` shrinks every step (a check that the command
runs, not a measurement).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.engine import GEOMETRIES, write_random_backbone


def steps(args: argparse.Namespace, work: Path) -> list[tuple[str, list[str]]]:
    """(title, argv) of each benchmark process, in order."""
    dtype = "fp32" if args.precision == "int8" else args.precision
    quick_engine = ["--limit", "128", "--rounds", "1", "--sections", "mix"] if args.quick else \
        ["--rounds", str(args.rounds), "--sections", "mix,kinds"]
    quick_serve = ["--duration", "2", "--warmup", "1", "--engine-rows", "64", "--only", "1 task"] \
        if args.quick else ["--duration", str(args.duration), "--only", "1 task", "100 tasks"]
    out = []
    for geometry in args.geometries:
        folder = work / geometry
        out.append((f"engine, {geometry}, {args.device} {dtype}",
                    [sys.executable, "-m", "bench.engine", "--data", args.data, "--geometry", geometry,
                     "--device", args.device, "--dtype", dtype, "--ort", "off", *quick_engine]))
        out.append((f"serving, {geometry}, {args.device} {args.precision}",
                    [sys.executable, "-m", "bench.serve", "--data", args.data, "--backbone", str(folder),
                     "--device", args.device, "--precision", args.precision, "--parts", "load",
                     "--concurrency", *map(str, args.concurrency), *quick_serve]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="SST-2 dev.tsv (GLUE format)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--precision", choices=("bf16", "fp32", "int8"), default="bf16",
                    help="the backbone's arithmetic (default bf16; int8 is CPU-only)")
    ap.add_argument("--geometries", nargs="+", choices=sorted(GEOMETRIES),
                    default=["bert-base", "bert-large"])
    ap.add_argument("--rounds", type=int, default=3, help="bench.engine's rounds")
    ap.add_argument("--duration", type=float, default=10.0, help="bench.serve's seconds per point")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--quick", action="store_true", help="tiny steps: does the command run?")
    args = ap.parse_args(argv)
    failed = []
    with tempfile.TemporaryDirectory(prefix="polyhead-gpu-bench-") as tmp:
        work = Path(tmp)
        for geometry in args.geometries:
            write_random_backbone(geometry, work / geometry)
        for title, cmd in steps(args, work):
            print(f"\n## {title}\n$ {' '.join(cmd[1:])}", flush=True)
            code = subprocess.run(cmd).returncode
            if code != 0:
                print(f"## {title}: exit {code}", flush=True)
                failed.append(title)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
