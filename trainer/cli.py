"""`polyhead train`: a dataset in, a task artifact out (file, local store or running server)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from trainer.config import DEFAULT_LR, HEAD_INITS, HEAD_TYPES, METHODS, TrainConfig, TrainConfigError
from trainer.data import Column, Columns, DataError, Dataset, load_dataset
from trainer.metrics import check_metric
from trainer.presets import PRESETS, get_preset

METHOD_HELP = """methods:
  pasta    PASTA: one vector per layer and special token ([CLS], [SEP]s) + head
  prefix   deep prefix (P-tuning v2, gates fixed at 1) + head
  lora     LoRA on query/value through the peft library (classifier over the pooler)
  bitfit   bias deltas + head
  child-d  Child-Tuning_D: one Fisher pass (squared gradients; --fisher-examples caps it),
           then a FIXED mask of the top --density of the tunable weights, chosen GLOBALLY
           (one ranking over all encoder weights and the embedding LayerNorm, as the
           paper's code; not a per-matrix quota)
  child-f  Child-Tuning_F: a fresh Bernoulli(--child-f-p) gradient mask each step, kept
           gradients scaled by 1/p; the final diff is cut to --density by global
           magnitude (largest |trained - original| kept), and the dev metric before
           and after the cut is printed and stored (the cost of sparsifying)
  dps      DPS: --dps-stages stages; each updates a subnetwork re-selected from the
           accumulated squared gradients of the previous stage (a Fisher pass for the
           first); new weights join only while the union of updated weights fits --density
  full     BASELINE: full fine-tuning of every encoder weight (embedding matrices
           frozen); stored as a dense diff (~12 bytes per weight: 128 MB for MiniLM),
           over the store's 64 MiB cap, so only --out can take it

The sparse methods (child-d, child-f, dps, full) train a copy of the backbone's weights
with no weight decay on them and frozen embeddings; the artifact stores exactly the
changed weights (trained - original) and reproduces the trained model's logits.

--head-init pet:lora|pet:bitfit|pet:pasta (EH-FT): first trains that method jointly
with the head for --head-init-frac x --epochs epochs, then starts --method from the head
it learnt (extra epochs, not taken out of --epochs).
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("train", help="train a task artifact on a dataset",
                              description=__doc__, epilog=METHOD_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, choices=METHODS)
    data = p.add_argument_group("data")
    data.add_argument("--train", required=True, type=Path, help="TSV, CSV or JSONL file")
    data.add_argument("--dev", required=True, type=Path, help="dev file, same format")
    data.add_argument("--preset", choices=sorted(PRESETS), help="GLUE column/label/metric mapping")
    data.add_argument("--text-col", help="text column: header name, or 0-based index (default: text)")
    data.add_argument("--pair-col", help="second-text column, for sentence pairs")
    data.add_argument("--label-col", help="label column (default: label)")
    data.add_argument("--no-header", action="store_true", help="TSV/CSV without a header row")
    data.add_argument("--regression", action="store_true", help="labels are scores (1 output, MSE)")
    data.add_argument("--metric", help="headline dev metric (accuracy, f1, mcc, pearson, spearman)")
    data.add_argument("--max-train", type=int, help="train on a seeded random subsample of N rows")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=float, default=3.0)
    t.add_argument("--lr", type=float, help="learning rate (default per method: " +
                   ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--max-length", type=int, default=128)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--head", dest="head_type", choices=HEAD_TYPES, default="pooler",
                   help="pooler: W tanh(P [CLS]) as BertForSequenceClassification (default)")
    t.add_argument("--density", type=float, default=0.05, help="sparse budget (default 0.05)")
    t.add_argument("--child-f-p", type=float, default=0.3, help="child-f keep probability")
    t.add_argument("--fisher-examples", type=int, help="cap on the Fisher pass (default: all)")
    t.add_argument("--dps-stages", type=int, default=3)
    t.add_argument("--num-prefix", type=int, default=16)
    t.add_argument("--lora-r", type=int, default=8)
    t.add_argument("--lora-alpha", type=float, default=16.0)
    t.add_argument("--head-init", choices=HEAD_INITS, help="EH-FT: pre-train the head with a PET method")
    t.add_argument("--head-init-frac", type=float, default=0.5)
    t.add_argument("--device", default="auto", help="auto (CUDA when present, bf16 autocast), cpu, cuda")
    t.add_argument("--backbone", type=Path, help="local HF encoder folder (default: packaged MiniLM)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    o = p.add_argument_group("output (at least one)")
    o.add_argument("--out", type=Path, help="write FILE.polyhead")
    o.add_argument("--task-id", help="task id (default: the preset name, else the --out file's stem)")
    o.add_argument("--publish", action="store_true", help="publish into the local store")
    o.add_argument("--store", help="store folder or postgresql:// URL "
                   "(default $POLYHEAD_STORE or ./polyhead-store)")
    o.add_argument("--upload", metavar="HOST:PORT", help="upload to a running server")
    o.add_argument("--token", default=os.environ.get("POLYHEAD_TOKEN"), help="bearer token for --upload")
    p.set_defaults(func=run)


def _column(value: str | None, default: str | None) -> Column | None:
    v = value if value is not None else default
    if v is None:
        return None
    return int(v) if v.isdigit() else v


def _columns(args: argparse.Namespace) -> tuple[Columns, tuple[str, ...] | None, str]:
    if args.preset:
        preset = get_preset(args.preset)
        return preset.columns, preset.labels, args.metric or preset.metric
    cols = Columns(text=_column(args.text_col, "text"),  # type: ignore[arg-type]
                   label=_column(args.label_col, "label"),  # type: ignore[arg-type]
                   pair=_column(args.pair_col, None), header=not args.no_header,
                   regression=args.regression)
    return cols, None, args.metric or ("pearson" if args.regression else "accuracy")


def _config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        method=args.method, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        max_length=args.max_length, seed=args.seed, max_train=args.max_train,
        weight_decay=args.weight_decay, head_type=args.head_type, density=args.density,
        child_f_p=args.child_f_p, fisher_examples=args.fisher_examples, dps_stages=args.dps_stages,
        num_prefix=args.num_prefix, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        head_init=args.head_init, head_init_frac=args.head_init_frac, device=args.device)


def _task_id(args: argparse.Namespace) -> str:
    if args.task_id:
        return str(args.task_id)
    if args.preset:
        return str(args.preset)
    if args.out is not None:
        return str(args.out.stem).lower()
    raise ValueError("give --task-id")


def load_data(args: argparse.Namespace) -> tuple[Dataset, Dataset, str]:
    columns, labels, metric = _columns(args)
    train = load_dataset(args.train, columns, labels)
    dev = load_dataset(args.dev, columns, train.labels)
    return train, dev, check_metric(metric, train.regression)


def run(args: argparse.Namespace) -> int:
    """The verb: exit 0 on success, 2 on bad input (no traceback), 1 on other failures."""
    from methods import ArtifactError, BackboneError
    from methods.config import ConfigError

    logging.basicConfig(level=logging.WARNING)
    try:
        from trainer.output import Targets

        targets = Targets(out=args.out, publish=args.publish, store=args.store,
                          upload=args.upload, token=args.token)
        cfg = _config(args)
        task_id = _task_id(args)
        from store.manifest import validate_task_id

        validate_task_id(task_id)
        train, dev, metric = load_data(args)
    except (DataError, TrainConfigError, ConfigError, ArtifactError, ValueError) as e:
        print(f"polyhead train: error: {e}", file=sys.stderr)
        return 2
    try:
        return _train_and_deliver(args, cfg, task_id, train, dev, metric, targets)
    except (BackboneError, ArtifactError, ValueError) as e:
        print(f"polyhead train: error: {e}", file=sys.stderr)
        return 2


def _train_and_deliver(args: argparse.Namespace, cfg: TrainConfig, task_id: str, train: Dataset,
                       dev: Dataset, metric: str, targets: object) -> int:
    import torch

    from methods import load_backbone
    from trainer.output import OutputError, Targets, deliver, encode
    from trainer.run import train as train_run

    assert isinstance(targets, Targets)
    backbone = load_backbone(args.backbone, device=cfg.device)
    print(f"polyhead train: {cfg.method} on {len(train.examples)} examples "
          f"({'regression' if train.regression else f'{train.num_outputs} labels'}), "
          f"device {backbone.device}{' (bf16 autocast)' if backbone.device.type == 'cuda' else ''}, "
          f"torch threads {torch.get_num_threads()}", file=sys.stderr)
    result = train_run(cfg, backbone, train, dev, metric, progress=not args.quiet,
                       log_fn=lambda s: print(s, file=sys.stderr))
    data = encode(task_id, result, train, backbone.spec)
    try:
        lines = deliver(data, targets, backbone.spec)
    except OutputError as e:
        print(f"polyhead train: error: {e}", file=sys.stderr)
        return 1
    m = result.metrics
    print(f"{task_id}: {cfg.method}, dev {metric} {m[metric]:.4f}; trainable params "
          f"{result.training['trainable_params']:,}, stored params {result.training['stored_params']:,}, "
          f"{len(data):,} bytes; engine parity {result.parity:.1e}")
    for line in lines:
        print(line)
    return 0
