"""`polyhead train`: a dataset in, a task artifact out (file, local store or running server)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from polyhead.trainer.algos.sparse_budget import SERVABLE_STRUCTURES, STRUCTURE_EVIDENCE
from polyhead.trainer.config import (
    HEAD_TYPES,
    POOLERS,
    PRECISIONS,
    RECIPES,
    SELECTS,
    TrainConfig,
    TrainConfigError,
    head_inits,
)
from polyhead.trainer.data import Column, Columns, DataError, Dataset, default_text_column, load_train_dev
from polyhead.trainer.method import add_flags, given
from polyhead.trainer.presets import PRESETS, Preset, get_preset
from polyhead.trainer.table import METHODS, Defaults


def method_help() -> str:
    """The help's epilog: each method, its kind and defaults; the record is in --defaults."""
    lines = ["methods (kind; defaults lr/epochs/warm-up, servable recipe | paper recipe):"]
    for m in METHODS.values():
        s, p = m.servable, m.paper
        lines.append(f"  {m.name:8s} {m.help}")
        servable = f"{s.lr:g}/{s.epochs:g}/{s.warmup:g}{_mark(s)}" if "servable" in m.recipes else "-"
        lines.append(f"  {'':8s} -> {m.kind}; {servable} | {p.lr:g}/{p.epochs:g}/{p.warmup:g}{_mark(p)}")
    lines += ["", "Defaults marked * were chosen by the accuracy study on this backbone; "
              "`polyhead train --defaults`", "prints the runs that chose each one and what "
              "the two recipes, --head-init, dropout and", "regression do."]
    return "\n".join(lines)


def defaults_record() -> str:
    """`polyhead train --defaults`: the study's runs behind every default, and the recipes."""
    lines = ["Every default and the runs that chose it (bench/accuracy.py; BENCHMARKS.md 'Accuracy'):"]
    for m in METHODS.values():
        for recipe in m.recipes:
            d = m.defaults(recipe)
            why = f"{d.evidence} ({d.precision} study)" if d.evidence else "PROVISIONAL (not yet measured)"
            lines.append(f"  {m.name:8s} {recipe:8s} lr {d.lr:g}, {d.epochs:g} epochs, warm-up "
                         f"{d.warmup:g}: {why}")
    lines.append("Servable mask structure (--mask-structure) of the sparse methods:")
    lines += [f"  {m:8s} {SERVABLE_STRUCTURES[m]}: {STRUCTURE_EVIDENCE[m]}" for m in SERVABLE_STRUCTURES]
    return "\n".join([*lines, "", RECIPES_TEXT])


RECIPES_TEXT = """\
--recipe servable (default): what users upload stays tiny and exact. child-d, child-f
and dps change at most --density of the tunable weights (encoder layers and the
embedding LayerNorm); the embeddings stay frozen; no weight decay on backbone
weights. The pooler trains with the head and is stored in it (an mlp head,
hidden^2 + hidden floats, as the paper recipe trains it; --pooler frozen keeps
the backbone's, a smaller upload). The packaged MiniLM's pooler was never trained
(zero bias, a small random matrix), yet the servable pilot scored the same with it
frozen (BENCHMARKS.md 'Accuracy'). full stores a dense diff of the encoder layers
(~128 MB for MiniLM: over the store's cap, --out only).
--recipe paper: as the papers' official code (vanilla fine-tuning of EVERY parameter,
embeddings and pooler included, weight decay on all but biases/LayerNorms; Child-
Tuning_D p_D=0.3, Child-Tuning_F on every gradient, DPS Dense). The model is dense:
--out gets a sparse artifact with every changed weight (encoder layers, embedding
tables; a trained pooler goes into an mlp head), exact in the engine. At ~271 MB
for MiniLM it is far over the store's default cap (64 MiB): --publish/--upload need
a raised --max-upload-bytes (and server cap); over the cap, --out is still written
and the CLI says why nothing was published (exit 1).

--head-init pet:lora|pet:bitfit (EH-FT): the first --head-init-frac of the total steps
train LoRA (r 8, alpha 16, Q/K/V/O) or BitFit with a fresh head at --head-init-lr;
the PET parameters are dropped and the method trains from the original weights and
that head for the remaining steps (equal total steps to the method alone).

Dropout (the backbone's hidden/attention dropout, BERT's classifier dropout, PASTA's
dropout on its vectors) is on while training and off in the stored artifact.
Regression targets are standardised on the training set; the scale is recorded in
the manifest and folded into the head, so served values are on the task's scale."""


class _PrintDefaults(argparse.Action):
    """--defaults: print the record and exit, as --help does (no other option needed)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print every default with the runs that chose it, and the recipes")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(defaults_record())
        parser.exit()


def _mark(d: Defaults) -> str:
    return "*" if d.evidence else ""


PAPER_HINT = ("a --recipe paper artifact holds every changed weight of the model, embeddings "
              "included; --recipe servable keeps the upload within --density")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("train", help="train a task artifact on a dataset",
                              usage="polyhead train --method METHOD --train FILE --dev FILE "
                                    "(--out FILE | --publish | --upload HOST:PORT) [options]",
                              description=__doc__, epilog=method_help(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--defaults", action=_PrintDefaults)
    p.add_argument("--method", required=True, choices=list(METHODS), help="one of the methods below")
    p.add_argument("--recipe", choices=RECIPES, default="servable",
                   help="servable (default): tiny exact uploads; paper: the papers' official code")
    data = p.add_argument_group("data")
    data.add_argument("--train", required=True, type=Path, help="TSV, CSV or JSONL file")
    data.add_argument("--dev", required=True, type=Path, help="dev file, same format")
    data.add_argument("--preset", choices=sorted(PRESETS), help="GLUE column/label/metric mapping")
    data.add_argument("--text-col", help="text column: header name, or 0-based index (default: "
                      "'text', else 'sentence' when the header has it)")
    data.add_argument("--pair-col", help="second-text column, for sentence pairs")
    data.add_argument("--label-col", help="label column (default: label)")
    data.add_argument("--no-header", action="store_true", help="TSV/CSV without a header row")
    data.add_argument("--regression", action="store_true", help="labels are scores (1 output, MSE)")
    data.add_argument("--metric", help="headline dev metric (accuracy, f1, mcc, pearson, spearman)")
    data.add_argument("--max-train", type=int, help="train on a seeded random subsample of N rows")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=float, help="default: the method's (see below)")
    t.add_argument("--lr", type=float, help="learning rate (default: the method's, see below)")
    t.add_argument("--warmup", type=float, help="warm-up share of the steps (default: the method's)")
    t.add_argument("--batch-size", type=int, help="default: the method's (16; pasta/eh-ft paper: 32)")
    t.add_argument("--max-length", type=int, default=128,
                   help="tokens kept per input (default 128)")
    t.add_argument("--seed", type=int, default=0,
                   help="init, shuffle, dropout, --max-train (default 0)")
    t.add_argument("--weight-decay", type=float, help="default: the method's (0.01; pasta paper: 0)")
    t.add_argument("--select", choices=SELECTS, default="last",
                   help="keep the last epoch (default, as Child-Tuning and DPS) or the best on dev")
    t.add_argument("--no-dropout", action="store_true", help="train without dropout")
    t.add_argument("--head", dest="head_type", choices=HEAD_TYPES, default="pooler",
                   help="pooler: W tanh(P [CLS]) as BertForSequenceClassification (default)")
    t.add_argument("--pooler", choices=POOLERS,
                   help="servable full/child-d/child-f/dps with --head pooler: train the pooler "
                        "as part of the head (default) or keep the backbone's frozen")
    t.add_argument("--head-init", choices=head_inits(), help="EH-FT: train the head with a PET method first")
    t.add_argument("--head-init-frac", type=float, default=0.1, help="EH-FT stage 1's share of the steps")
    t.add_argument("--head-init-lr", type=float, default=5e-4, help="EH-FT stage 1's learning rate")
    t.add_argument("--pool", type=int, default=50,
                   help="length grouping: batches per shuffled pool sorted by length (1: off)")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    t.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    t.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="training's forward passes: auto (default) = bf16 autocast on CUDA and on CPUs "
                        "with native bf16 (AVX512-BF16/AMX: 2-3x faster than fp32), else fp32; "
                        "weights, optimiser and the exported artifact stay fp32")
    t.add_argument("--backbone", type=Path, help="local HF encoder folder (default: packaged MiniLM)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    add_flags(p, {name: m.options for name, m in METHODS.items()})  # each method's own
    o = p.add_argument_group("output (at least one)")
    o.add_argument("--out", type=Path, help="write FILE.polyhead")
    o.add_argument("--task-id", help="task id (default: the preset name, else the --out file's stem)")
    o.add_argument("--publish", action="store_true", help="publish into the local store")
    o.add_argument("--store", help="store folder or postgresql:// URL "
                   "(default $POLYHEAD_STORE or ./polyhead-store)")
    o.add_argument("--max-upload-bytes", type=int,
                   help="the store's size cap for --publish/--upload (default: the store's)")
    o.add_argument("--upload", metavar="HOST:PORT", help="upload to a running server")
    o.add_argument("--replace-kind", action="store_true",
                   help="publish/upload even when the task's latest version is another kind")
    o.add_argument("--token", default=os.environ.get("POLYHEAD_TOKEN"), help="bearer token for --upload")
    p.set_defaults(func=run)


def _column(value: str | None, default: str | None) -> Column | None:
    v = value if value is not None else default
    if v is None:
        return None
    return int(v) if v.isdigit() else v


def _columns(args: argparse.Namespace) -> tuple[Columns, Preset | None, str]:
    if args.preset:
        preset = get_preset(args.preset)
        return preset.columns, preset, args.metric or preset.metric
    text = args.text_col if args.text_col is not None else default_text_column(args.train)
    cols = Columns(text=_column(text, None),  # type: ignore[arg-type]
                   label=_column(args.label_col, "label"),  # type: ignore[arg-type]
                   pair=_column(args.pair_col, None), header=not args.no_header,
                   regression=args.regression)
    return cols, None, args.metric or ("pearson" if args.regression else "accuracy")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The shared settings, and the method flags given (checked against the method); training
    jobs parse their options here too."""
    return TrainConfig.flat(
        method=args.method, recipe=args.recipe, epochs=args.epochs, lr=args.lr, warmup=args.warmup,
        batch_size=args.batch_size, max_length=args.max_length, seed=args.seed,
        max_train=args.max_train, weight_decay=args.weight_decay, select=args.select,
        head_type=args.head_type, pooler=args.pooler, dropout=not args.no_dropout,
        head_init=args.head_init, head_init_frac=args.head_init_frac,
        head_init_lr=args.head_init_lr, pool=args.pool, device=args.device, precision=args.precision,
        **given(args, {name: m.options for name, m in METHODS.items()}))


def _task_id(args: argparse.Namespace) -> str:
    if args.task_id:
        return str(args.task_id)
    if args.preset:
        return str(args.preset)
    if args.out is not None:
        return str(args.out.stem).lower()
    raise ValueError("give --task-id")


def load_data(args: argparse.Namespace) -> tuple[Dataset, Dataset, str]:
    """Train and dev sets (a preset's label names applied) and the checked metric."""
    from polyhead.trainer.metrics import check_metric

    columns, preset, metric = _columns(args)
    train, dev = load_train_dev(args.train, args.dev, columns, preset.labels if preset else None,
                                preset.names if preset else None)
    return train, dev, check_metric(metric, train.regression)


def _check_files(args: argparse.Namespace) -> None:
    """A missing data file is named at once, before the trainer (torch) is imported."""
    for flag, path in (("--train", args.train), ("--dev", args.dev)):
        if not path.is_file():
            raise DataError(path, None, f"no such file (given as {flag})")


def run(args: argparse.Namespace) -> int:
    """The verb: exit 0 on success, 2 on bad input (no traceback), 1 on other failures."""
    try:
        _check_files(args)
    except DataError as e:
        print(f"polyhead train: error: {e}", file=sys.stderr)
        return 2
    from polyhead.engine import ArtifactError, BackboneError
    from polyhead.engine.config import ConfigError

    logging.basicConfig(level=logging.WARNING)
    if args.quiet:  # transformers' own "Loading weights" bars too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        from polyhead.trainer.output import Targets

        targets = Targets(out=args.out, publish=args.publish, store=args.store,
                          upload=args.upload, token=args.token, max_bytes=args.max_upload_bytes,
                          replace_kind=args.replace_kind)
        cfg = train_config(args)
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        task_id = _task_id(args)
        from polyhead.store.manifest import validate_task_id

        validate_task_id(task_id)
        train, dev, metric = load_data(args)
    except (DataError, TrainConfigError, ConfigError, ArtifactError, ValueError) as e:
        hint = " (--text-col, --pair-col and --label-col name them)" if "no column" in str(e) else ""
        print(f"polyhead train: error: {e}{hint}", file=sys.stderr)
        return 2
    from polyhead.trainer.output import OutputError, check_upload

    try:
        check_upload(targets)
    except OutputError as e:
        print(f"polyhead train: error: {e}", file=sys.stderr)
        return 1
    try:
        return _train_and_deliver(args, cfg, task_id, train, dev, metric, targets)
    except (BackboneError, ArtifactError, ValueError) as e:
        print(f"polyhead train: error: {e}", file=sys.stderr)
        return 2


def _train_and_deliver(args: argparse.Namespace, cfg: TrainConfig, task_id: str, train: Dataset,
                       dev: Dataset, metric: str, targets: object) -> int:
    import torch

    from polyhead.engine import load_backbone
    from polyhead.trainer.models import ExportError
    from polyhead.trainer.output import OutputError, Targets, deliver, encode
    from polyhead.trainer.run import finish, result_context
    from polyhead.trainer.run import train as train_run

    assert isinstance(targets, Targets)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    backbone = load_backbone(args.backbone, device=cfg.device)
    n = len(train.examples)
    sub = cfg.max_train is not None and cfg.max_train < n
    rows = f"{cfg.max_train:,} of {n:,}" if sub else f"{n:,}"
    print(f"polyhead train: {cfg.method} ({cfg.recipe} recipe) on {rows} examples "
          f"({'regression' if train.regression else f'{train.num_outputs} labels'}), "
          f"device {backbone.device}{' (bf16 autocast)' if cfg.autocast_dtype(backbone.device) else ''}, "
          f"torch threads {torch.get_num_threads()}", file=sys.stderr)
    result = train_run(cfg, backbone, train, dev, metric, progress=not args.quiet,
                       log_fn=lambda s: print(s, file=sys.stderr), export=False)
    m, tr = result.metrics, result.training
    print(f"{task_id}: {cfg.method} ({cfg.recipe}), dev {metric} {m[metric]:.4f}; "
          f"{tr.tokens_per_s:,.0f} training tokens/s; trainable params {tr.trainable_params:,}")
    try:
        finish(result, result_context(result))
    except ExportError as e:
        print(f"polyhead train: error: nothing written: {e}", file=sys.stderr)
        return 1
    data = encode(task_id, result, train, backbone.spec)
    hint = (PAPER_HINT if cfg.paper else
            "use a sparse method or a lower --density")
    try:
        from functools import partial

        from polyhead.engine.probe import probe_forward

        lines = deliver(data, targets, backbone.spec, hint, probe=partial(probe_forward, backbone),
                        keep=Path(f"{task_id}.polyhead"))
    except OutputError as e:
        print(f"polyhead train: error: {e}", file=sys.stderr)
        return 1
    print(f"stored params {tr.stored_params:,}, {len(data):,} bytes; engine parity {result.parity:.1e}")
    for line in lines:
        print(line)
    return 0
