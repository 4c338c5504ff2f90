"""Training speed by method and precision: fp32 against bf16 autocast, measured in one run.

    .venv/bin/python -m bench.train_speed --data /work/shared/data/glue --rows 160 --repeats 2

Trains every method for one epoch on a seeded subsample of --rows rows of RTE's training
set (16 rows of dev, so scoring costs little) with one torch thread, alternating the precisions,
and prints the training tokens per CPU second of this process (the trainer's own count of
non-padding tokens over ``time.process_time`` around the whole run: child-d's Fisher pass,
EH-FT's stage 1 and the dev scoring included). CPU time, so a loaded machine (the accuracy
study beside it) slows both precisions alike; the ratio is the figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROWS = (("full", "paper"), ("child-d", "paper"), ("child-f", "paper"), ("dps", "paper"),
        ("child-d", "servable"), ("pasta", "servable"), ("prefix", "servable"), ("lora", "servable"),
        ("bitfit", "servable"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/work/shared/data/glue"))
    p.add_argument("--rows", type=int, default=160, help="training rows (one epoch, batch 16)")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from polyhead.engine import load_backbone
    from polyhead.trainer.config import TrainConfig, cpu_has_bf16
    from polyhead.trainer.data import Dataset
    from polyhead.trainer.presets import load_preset
    from polyhead.trainer.run import train

    torch.set_num_threads(1)
    folder = args.data / "RTE"
    tr, dv, metric = load_preset("rte", folder / "train.tsv", folder / "dev.tsv")
    dev = Dataset(dv.examples[:16], dv.labels, dv.label_type)
    backbone = load_backbone()
    print(f"torch {torch.__version__}, 1 thread, CPU native bf16: {cpu_has_bf16()}, load average "
          f"{os.getloadavg()[0]:.1f}; {args.rows} RTE rows, 1 epoch, batch 16, {args.repeats} repeats "
          "(median)\n", file=sys.stderr)
    print("| method | recipe | fp32 tokens/CPU-s | bf16 tokens/CPU-s | bf16 / fp32 |")
    print("|---|---|---|---|---|")
    for method, recipe in ROWS:
        speed: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            for precision in ("fp32", "bf16"):
                fisher = {"fisher_examples": args.rows} if method == "child-d" else {}
                cfg = TrainConfig.flat(method=method, recipe=recipe, epochs=1, max_train=args.rows,
                                       precision=precision, device="cpu", **fisher)
                t0 = time.process_time()
                res = train(cfg, backbone, tr, dev, metric, progress=False, export=False,
                            log_fn=lambda s: None)
                speed[precision].append(res.training.train_tokens / (time.process_time() - t0))
        a, b = statistics.median(speed["fp32"]), statistics.median(speed["bf16"])
        print(f"| {method} | {recipe} | {a:.0f} | {b:.0f} | {b / a:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
