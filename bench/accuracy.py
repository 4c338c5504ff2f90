"""Accuracy table for issue 4: every training method on five GLUE tasks, one seed.

    .venv/bin/python -m bench.accuracy --data ../shared/data/glue --results /tmp/accuracy.json

Trains each method on a seeded subsample of each task's train set (CPU budget; see
--max-train), evaluates on a seeded dev subsample (--max-dev; the same rows for every
method), and prints a markdown table: headline dev metric x100 per task, the average,
trainable and stored parameter counts and artifact bytes. Results are appended to
--results as they finish, so an interrupted run resumes. The GLUE files are read where they are, never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASKS = (("sst2", "SST-2"), ("rte", "RTE"), ("mrpc", "MRPC"), ("cola", "CoLA"), ("stsb", "STS-B"))
RUNS = ("pasta", "prefix", "lora", "bitfit", "child-d", "child-f", "dps", "full",
        "child-d+pet:lora", "dps+pet:lora", "full+pet:lora")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/glue"))
    p.add_argument("--results", type=Path, default=Path("/tmp/accuracy.json"))
    p.add_argument("--tasks", default=",".join(t for t, _ in TASKS))
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--max-train", type=int, default=500)
    p.add_argument("--max-dev", type=int, default=500,
                   help="seeded dev subsample (the same rows for every method)")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--density", type=float, default=0.05)
    p.add_argument("--fisher-examples", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--order", choices=("method", "task"), default="method",
                   help="method: each method on every task before the next method")
    p.add_argument("--table-only", action="store_true", help="print the table from --results")
    p.add_argument("--also", type=Path, nargs="*", default=[],
                   help="results files of the same runs with other seeds: the table shows the "
                        "mean (and spread) over every file that has a cell")
    return p.parse_args(argv)


# Method-major order, most informative first, so a run cut short still has whole rows
# (every task) for the comparisons the issue asks about.
PRIORITY = ("full", "pasta", "child-d", "dps", "full+pet:lora", "child-d+pet:lora", "dps+pet:lora",
            "lora", "bitfit", "prefix", "child-f")


def schedule(tasks: list[str], runs: list[str], order: str) -> list[tuple[str, str]]:
    if order == "task":
        return [(t, r) for t in tasks for r in runs]
    ranked = sorted(runs, key=lambda r: PRIORITY.index(r) if r in PRIORITY else len(PRIORITY))
    return [(t, r) for r in ranked for t in tasks]


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_one(args: argparse.Namespace, task: str, folder: str, run: str, backbone: Any,
            cache: dict[Any, Any]) -> dict[str, Any]:
    from store import encode_artifact, new_manifest
    from trainer.cli import load_data
    from trainer.config import TrainConfig
    from trainer.run import train

    method, _, head_init = run.partition("+")
    ns = argparse.Namespace(preset=task, train=args.data / folder / "train.tsv",
                            dev=args.data / folder / "dev.tsv", metric=None)
    tr, dv, metric = load_data(ns)
    dv = dv.subsample(args.max_dev, seed=12345)
    cfg = TrainConfig(method=method, epochs=args.epochs, batch_size=args.batch_size,
                      max_length=args.max_length, seed=args.seed, max_train=args.max_train,
                      density=args.density, fisher_examples=args.fisher_examples,
                      head_init=head_init or None)
    t0 = time.time()
    res = train(cfg, backbone, tr, dv, metric, progress=False, head_cache=cache,
                log_fn=lambda s: print(f"  {task} {s}", flush=True), eval_each_epoch=False)
    manifest = new_manifest(task, res.artifact, backbone.spec, labels=tr.labels,
                            regression=tr.regression, training=res.training, metrics=res.metrics)
    nbytes = len(encode_artifact(manifest, res.artifact))
    out = {"metric": metric, "value": res.metrics[metric], "metrics": res.metrics,
           "trainable": res.training["trainable_params"], "stored": res.training["stored_params"],
           "bytes": nbytes, "seconds": round(time.time() - t0, 1), "parity": res.parity,
           "train_examples": res.training["train_examples"]}
    if "sparsify" in res.training:
        sp = res.training["sparsify"]
        out["dense_value"] = sp["dense_dev"][metric]
    if "head_init_stage" in res.training:
        out["head_init_value"] = res.training["head_init_stage"]["dev"][metric]
    return out


def _values(seeds: list[dict[str, Any]], key: str, field: str = "value") -> list[float]:
    return [100 * r[key][field] for r in seeds if key in r and field in r[key]]


def _cell(vals: list[float]) -> str:
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} ±{statistics.stdev(vals):.1f}"


def table(seeds: list[dict[str, Any]], tasks: list[str], runs: list[str]) -> str:
    """Dev metric x100 per task and run: the mean over seeds (± their standard deviation)."""
    names = dict(TASKS)
    merged = {k: r for res in reversed(seeds) for k, r in res.items()}
    metric_of = {t: next((r["metric"] for k, r in merged.items() if k.startswith(t + "/")), "?")
                 for t in tasks}
    head = ["method", *[f"{names[t]} ({_short(metric_of[t])})" for t in tasks], "avg",
            "trainable", "stored", "bytes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        cells, means = [], []
        for t in tasks:
            vals = _values(seeds, f"{t}/{run}")
            cells.append(_cell(vals))
            if vals:
                means.append(statistics.mean(vals))
        ref = merged.get(f"sst2/{run}") or next((merged[f"{t}/{run}"] for t in tasks
                                                 if f"{t}/{run}" in merged), None)
        avg = f"{statistics.mean(means):.1f}" if len(means) == len(tasks) else "—"
        tail = ([f"{ref['trainable']:,}", f"{ref['stored']:,}", _bytes(ref["bytes"])] if ref
                else ["—"] * 3)
        lines.append("| " + " | ".join([run, *cells, avg, *tail]) + " |")
    return "\n".join(lines)


def seeds_line(seeds: list[dict[str, Any]], tasks: list[str], runs: list[str]) -> str:
    names = dict(TASKS)
    parts = []
    for t in tasks:
        counts = sorted({len(_values(seeds, f"{t}/{r}")) for r in runs} - {0})
        if counts:
            parts.append(f"{names[t]} {'/'.join(map(str, counts))}")
    return "seeds per cell: " + ", ".join(parts)


def head_init_table(seeds: list[dict[str, Any]], tasks: list[str]) -> str:
    """EH-FT: each method from a random head vs from the head trained jointly with LoRA."""
    names = dict(TASKS)
    rows = ["| method | " + " | ".join(names[t] for t in tasks) + " | mean change |",
            "|" + "---|" * (len(tasks) + 2)]
    for m in ("child-d", "dps", "full"):
        cells, deltas = [], []
        for t in tasks:
            a, b = _values(seeds, f"{t}/{m}"), _values(seeds, f"{t}/{m}+pet:lora")
            if a and b:
                d = statistics.mean(b) - statistics.mean(a)
                deltas.append(d)
                cells.append(f"{statistics.mean(a):.1f} → {statistics.mean(b):.1f} ({d:+.1f})")
            else:
                cells.append("—")
        mean = f"{statistics.mean(deltas):+.1f}" if len(deltas) == len(tasks) else "—"
        rows.append(f"| {m} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(rows)


def child_f_table(seeds: list[dict[str, Any]], tasks: list[str]) -> str:
    names = dict(TASKS)
    rows = ["| task | child-f dense diff | after sparsifying to density | cost |", "|---|---|---|---|"]
    for t in tasks:
        dense, sparse = _values(seeds, f"{t}/child-f", "dense_value"), _values(seeds, f"{t}/child-f")
        if dense and sparse:
            d, s = statistics.mean(dense), statistics.mean(sparse)
            rows.append(f"| {names[t]} | {d:.1f} | {s:.1f} | {d - s:+.1f} |")
    return "\n".join(rows)


def _short(metric: str) -> str:
    return {"accuracy": "acc", "pearson": "Pearson", "mcc": "MCC", "f1": "F1"}.get(metric, metric)


def _bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tasks, runs = args.tasks.split(","), args.runs.split(",")
    results = load_results(args.results)
    if not args.table_only:
        from methods import load_backbone

        backbone = load_backbone()
        folders = dict(TASKS)
        caches: dict[str, dict[Any, Any]] = {t: {} for t in tasks}  # EH-FT head stage per task
        for task, run in schedule(tasks, runs, args.order):
            key = f"{task}/{run}"
            if key in results:
                continue
            print(f"== {key}", flush=True)
            results[key] = run_one(args, task, folders[task], run, backbone, caches[task])
            r = results[key]
            print(f"   {key}: {r['metric']} {100 * r['value']:.1f} in {r['seconds']}s", flush=True)
            args.results.write_text(json.dumps(results, indent=1, sort_keys=True))
    seeds = [results, *(load_results(p) for p in args.also)]
    print(f"\nDev metric x100, seeds: {args.seed} (--results) and {len(args.also)} more file(s); "
          f"train subsample {args.max_train} rows, {args.epochs:g} epochs, max length "
          f"{args.max_length}, batch {args.batch_size}, density {args.density}; dev sets "
          f"subsampled to at most {args.max_dev} rows. Cells: mean ±sd over seeds.\n")
    print(seeds_line(seeds, tasks, runs) + "\n")
    print(table(seeds, tasks, runs))
    print("\nEH-FT: random head → head trained jointly with LoRA first (--head-init pet:lora)\n")
    print(head_init_table(seeds, tasks))
    print("\nchild-f: the accuracy cost of sparsifying its dense diff\n")
    print(child_f_table(seeds, tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
