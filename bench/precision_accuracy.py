"""What --precision costs in accuracy: trained artifacts served on their GLUE dev sets
under fp32 and under int8 (and bf16 where the CPU multiplies it natively), same engine.

    python -m bench.precision_accuracy --glue ../shared/data/glue ART.polyhead [ART ...]

Each artifact's task is its manifest's task id read as a GLUE preset (sst2, mrpc, rte,
stsb, cola, qnli): its dev file, columns, labels and headline metric. The table shows each
metric in points per precision and the difference from fp32, against the target of at
most 0.3 points (issue 29), a 95 % paired bootstrap interval of that difference (dev rows
resampled, both precisions scored on the same resample), and the share of dev rows whose
argmax changes. "int8 unsmoothed" is int8 without its calibrated smoothing (what
--precision int8 served before it), on the same artifacts, for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from polyhead.engine import Engine, load_backbone
from polyhead.engine.precision import Int8Linears, PrecisionError, dtype_for
from polyhead.store.fileformat import load_artifact
from polyhead.trainer.data import load_dataset
from polyhead.trainer.metrics import compute_metrics
from polyhead.trainer.presets import GLUE_FOLDERS, get_preset

TARGET_POINTS = 0.3
BOOTSTRAP = 1000


def dev_logits(engine: Engine, artifact, texts: list, batch: int = 64) -> np.ndarray:
    task = engine.load(artifact)
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            chunk = texts[i:i + batch]
            out += [t.float().numpy() for t in engine.run(chunk, [task] * len(chunk))]
    engine.unload(task)
    return np.stack(out)


def evaluate(path: Path, glue: Path, engines: dict[str, Engine]) -> list[str]:
    manifest, artifact = load_artifact(path, next(iter(engines.values())).spec)
    preset = get_preset(manifest.task_id)
    data = load_dataset(glue / GLUE_FOLDERS[manifest.task_id] / "dev.tsv", preset.columns,
                        labels=preset.labels)
    texts = [e.text if e.pair is None else (e.text, e.pair) for e in data.examples]
    logits = {p: dev_logits(eng, artifact, texts) for p, eng in engines.items()}
    metric = preset.metric
    scores = {p: 100 * compute_metrics(lg, data.targets(), data.regression)[metric]
              for p, lg in logits.items()}
    rows = []
    y = np.asarray(data.targets())
    rng = np.random.default_rng(0)
    resamples = [rng.integers(0, len(y), len(y)) for _ in range(BOOTSTRAP)]

    def resampled(p: str) -> np.ndarray:
        return np.array([100 * compute_metrics(logits[p][i], y[i], data.regression)[metric]
                         for i in resamples])

    base = resampled("fp32")
    for p in engines:
        if p == "fp32":
            continue
        diff = scores[p] - scores["fp32"]
        boot = resampled(p) - base
        lo, hi = np.percentile(boot, [2.5, 97.5])
        flips = (float(np.mean(logits[p].argmax(-1) != logits["fp32"].argmax(-1)))
                 if not data.regression else float("nan"))
        ok = "yes" if abs(diff) <= TARGET_POINTS else "NO"
        method = manifest.training.get("method", "-")
        rows.append(f"| {manifest.task_id} | {manifest.kind} ({method}) | {metric} | "
                    f"{scores['fp32']:.2f} | {p} | {scores[p]:.2f} | {diff:+.2f} | "
                    f"[{lo:+.2f}, {hi:+.2f}] | "
                    f"{'-' if data.regression else f'{100 * flips:.2f} %'} | {ok} |")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", nargs="+", type=Path, help="*.polyhead files (task id = GLUE preset)")
    ap.add_argument("--glue", type=Path, required=True, help="folder with SST-2/, MRPC/, ... dev.tsv")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    precisions = ["fp32", "int8"]
    try:
        dtype_for("bf16", torch.device("cpu"))
        precisions.append("bf16")
    except PrecisionError as e:
        print(f"bf16 not measured: {e}")
    engines = {p: Engine(load_backbone(precision=p)) for p in precisions}
    int8 = engines["int8"].backbone
    engines["int8 unsmoothed"] = Engine(dataclasses.replace(int8, linears=Int8Linears(int8.model)))
    t0 = time.perf_counter()
    print("| task | kind (method) | metric | fp32 | precision | value | diff (points) | 95 % interval | "
          f"argmax changed | within {TARGET_POINTS} |\n|---|---|---|---:|---|---:|---:|---|---:|---|")
    for path in args.artifacts:
        for row in evaluate(path, args.glue, engines):
            print(row, flush=True)
    print(f"({len(args.artifacts)} artifacts, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
