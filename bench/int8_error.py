"""How far int8's encoder output is from fp32's, by how the smoothing is calibrated.

    python -m bench.int8_error --glue ../shared/data/glue [--rows 300]

For each calibration (none: int8 without smoothing; served: the built-in sentences and
random token ids that `--precision int8` calibrates on at load; each part alone; 300 SST-2
training sentences) and smoothing strength alpha, the mean relative error of the final
[CLS] state, |h_int8 - h_fp32| / |h_fp32|, over two selection sets drawn from training
files (SST-2 train rows 300-600, the first 150 RTE training pairs: where alpha is chosen)
and four dev sets (SST-2, RTE, MRPC, CoLA; the first --rows rows of each: where it is
reported). The packaged MiniLM, or --backbone.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

import polyhead.engine.precision as precision
from polyhead.engine import Engine, load_backbone
from polyhead.engine.backbone import Backbone
from polyhead.engine.calibration import calibration_ids, input_ranges
from polyhead.engine.encoder import Encoder
from polyhead.engine.engine import Encoded, plan_buckets
from polyhead.engine.precision import Int8Linears, encoder_linears
from polyhead.trainer.data import load_dataset
from polyhead.trainer.presets import GLUE_FOLDERS, get_preset

ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)


def texts(glue: Path, task: str, split: str, first: int, last: int) -> list:
    """Rows first..last of a GLUE file as engine inputs (a text, or a pair), read with the
    task's preset."""
    data = load_dataset(glue / GLUE_FOLDERS[task] / f"{split}.tsv", get_preset(task).columns)
    return [e.text if e.pair is None else (e.text, e.pair) for e in data.examples[first:last]]


def sets(glue: Path, n: int) -> tuple[dict[str, list], dict[str, list]]:
    selection = {"sst2 train": texts(glue, "sst2", "train", 300, 600),
                 "rte train": texts(glue, "rte", "train", 0, 150)}
    dev = {task: texts(glue, task, "dev", 0, n) for task in ("sst2", "rte", "mrpc", "cola")}
    return selection, dev


def cls_states(bb: Backbone, enc: list[Encoded]) -> torch.Tensor:
    engine, encoder = Engine(bb), Encoder(bb)
    out: list[torch.Tensor] = [torch.empty(0)] * len(enc)
    with torch.inference_mode():
        for group in plan_buckets([len(e.ids) for e in enc], 64):
            ids, mask, types = engine.pad([enc[i] for i in group])
            h = encoder.forward(encoder.context(ids, mask), types)[:, 0]
            for j, i in enumerate(group):
                out[i] = h[j]
    return torch.stack(out)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glue", type=Path, required=True, help="folder with SST-2/, RTE/, MRPC/, CoLA/")
    ap.add_argument("--backbone", default=None, help="a Hugging Face encoder folder (default: packaged)")
    ap.add_argument("--rows", type=int, default=300, help="rows of each dev set")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    fp32 = load_backbone(args.backbone, precision="fp32")
    selection, dev = sets(args.glue, args.rows)
    engine = Engine(fp32)
    enc = {k: engine.tokenize(v) for k, v in {**selection, **dev}.items()}
    ref = {k: cls_states(fp32, e) for k, e in enc.items()}
    model, tok = fp32.model, fp32.tokenizer
    linears = encoder_linears(model)
    limit = min(128, fp32.spec.max_length)
    sst2_train = [e.ids for e in engine.tokenize(texts(args.glue, "sst2", "train", 0, 300))]
    calibrations = {
        "served (sentences + random ids)": input_ranges(model, tok, linears),
        "built-in sentences only":
            input_ranges(model, tok, linears, calibration_ids(tok, limit, ("sentences",))),
        "random ids only": input_ranges(model, tok, linears, calibration_ids(tok, limit, ("random",))),
        "300 SST-2 training sentences": input_ranges(model, tok, linears, sst2_train),
    }
    cols = [*selection, *dev]
    print(f"[CLS] relative error of int8 against fp32, mean over rows ({args.rows} rows per dev set)\n")
    print("| calibration | alpha | " + " | ".join(cols) + " |\n|---|---:|" + "---:|" * len(cols))

    def row(name: str, alpha: str, linears8: Int8Linears) -> None:
        bb = dataclasses.replace(fp32, linears=linears8, precision="int8")
        errs = []
        for k in cols:
            h = cls_states(bb, enc[k])
            errs.append(float(((h - ref[k]).norm(dim=1) / ref[k].norm(dim=1)).mean()))
        print(f"| {name} | {alpha} | " + " | ".join(f"{e:.4f}" for e in errs) + " |", flush=True)

    row("none (unsmoothed)", "-", Int8Linears(model))
    served = precision.ALPHA
    for name, ranges in calibrations.items():
        for alpha in ALPHAS if name.startswith("served") else (served,):
            precision.ALPHA = alpha
            label = f"{alpha}{' (served)' if alpha == served else ''}"
            row(name, label, Int8Linears(model, input_ranges=ranges))
    precision.ALPHA = served


if __name__ == "__main__":
    main()
