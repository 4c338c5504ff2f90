"""The study's protocol and one run of it: the tasks, their metrics and floors, the ``Run``
record and its key, and what a run becomes for the trainer (``train_config``) and in the
results file (``record_of``)."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polyhead.trainer.config import TrainConfig
    from polyhead.trainer.run import TrainResult

TASKS = {"rte": "RTE", "mrpc": "MRPC", "stsb": "STS-B", "cola": "CoLA", "sst2": "SST-2"}
METRIC = {"rte": "accuracy", "mrpc": "f1", "stsb": "pearson", "cola": "mcc", "sst2": "accuracy"}
FLOORS = {"rte": 58.0, "mrpc": 84.0, "cola": 20.0, "stsb": 80.0, "sst2": 86.0}
CLAIM_TASKS = ("rte", "mrpc", "stsb", "cola")
PILOT_TASKS = ("rte", "mrpc")
DENSE = ("full", "child-d", "child-f", "dps")
SPARSE = ("child-d", "dps")  # the servable recipe's sparse methods (plans servable, structure)
CHILD = ("child-d", "child-f")  # Child-Tuning's code runs without warm-up
FROZEN = ("pasta", "prefix", "lora", "bitfit")  # the frozen-backbone methods
SST2_ROWS = 8000
SERVABLE_PILOT = "child-d@0.05"  # the servable pilot's row name (method @ density)
FULL_SERVABLE = "full/servable"  # full's servable recipe (encoder layers, dense diff)
DPS_SERVABLE = "dps@0.05"  # dps's servable row: its own lr search is plan servable-diag's
PILOT_SEED = 3  # the own-lr searches' seed: no claim uses it, so no run is pilot and claim
# the plans whose records stay out of issue 11's tables (bench/papers_budgets.py prints theirs;
# structure-seeds is issue 29's)
ISSUE28 = ("servable-defaults", "pilot-own-lr", "claims-own-lr", "eh-ft", "pasta-paper", "structure-seeds")
LONG_EPOCHS = 20  # a frozen-backbone run this long keeps an epoch checkpoint


@dataclasses.dataclass(frozen=True)
class Run:
    task: str
    method: str
    recipe: str = "paper"
    lr: float = 5e-5
    epochs: float = 3.0
    seed: int = 0
    head_init: str | None = None
    density: float = 0.05
    max_train: int | None = None
    structure: str = "entries"  # servable sparse masks: single weights or whole columns
    pooler: str | None = None  # servable dense methods: None (trained with the head) or "frozen"
    diag: bool = False  # a diagnostic run, outside the protocol (kept out of the tables)
    precision: str = "fp32"  # training forwards: fp32, or bf16 autocast (weights stay fp32)
    batch: int = 16
    warmup: float | None = None  # None: the method's (polyhead/trainer/table.py)
    head_init_epochs: float | None = None  # eh-ft: stage 1's epochs

    @property
    def name(self) -> str:
        """The row label: method, EH-FT stage, servable density."""
        name = self.method + (f"+{self.head_init}" if self.head_init else "")
        if self.recipe == "servable" and self.method in ("child-d", "child-f", "dps"):
            name += f"@{self.density:g}" + ("/columns" if self.structure == "columns" else "")
        elif self.recipe == "servable" and self.method == "full":
            name += "/servable"
        return name + ("/frozen-pooler" if self.pooler == "frozen" else "")

    @property
    def key(self) -> str:
        """The run's identity. Settings added after the first runs appear only when they
        differ from what those runs used (batch 16, the protocol's 10 % warm-up)."""
        extra = "" if self.batch == 16 else f"|bs={self.batch}"
        extra += "" if self.warmup in (None, 0.1) else f"|wu={self.warmup:g}"
        extra += "" if self.head_init_epochs is None else f"|s1={self.head_init_epochs:g}"
        return (f"{self.task}|{self.name}|{self.recipe}|lr={self.lr:g}|ep={self.epochs:g}|"
                f"seed={self.seed}|n={self.max_train}" + extra + ("" if self.precision == "fp32" else
                                                                  f"|{self.precision}"))


def rows(task: str) -> int | None:
    """The training rows a run of ``task`` uses (SST-2 is capped; None: all)."""
    return SST2_ROWS if task == "sst2" else None


def dense_run(task: str, method: str, lr: float, seed: int) -> Run:
    """A dense method's paper recipe as its code runs it (Child-Tuning without warm-up)."""
    return Run(task, method, lr=lr, seed=seed, warmup=0.0 if method in CHILD else None)


def train_config(run: Run) -> TrainConfig:
    """The trainer's configuration of ``run``: the one place the study builds a TrainConfig
    (whole train and dev sets unless capped, max length 128, the last epoch reported)."""
    from polyhead.trainer.config import TrainConfig

    return TrainConfig.flat(method=run.method, recipe=run.recipe, lr=run.lr, epochs=run.epochs,
                            batch_size=run.batch, max_length=128, seed=run.seed, max_train=run.max_train,
                            density=run.density, head_init=run.head_init, select="last", device="cpu",
                            mask_structure=run.structure, pooler=run.pooler, precision=run.precision,
                            warmup=run.warmup, head_init_epochs=run.head_init_epochs)


def record_of(run: Run, cfg: TrainConfig, res: TrainResult, metric: str, seconds: float,
              commit: str, machine: dict[str, Any]) -> dict[str, Any]:
    """The results file's line for a finished run (before the runner adds its plan)."""
    t = res.training.to_json()
    out: dict[str, Any] = {
        "key": run.key, "task": run.task, "name": run.name, "method": run.method,
        "recipe": run.recipe, "seed": run.seed, "pilot": False, "metric": metric,
        "value": 100 * res.metrics[metric], "metrics": res.metrics, "config": cfg.to_dict(),
        "dev_history": t["dev_history"], "seconds": round(seconds, 1),
        "train_seconds": t["train_seconds"], "tokens_per_s": t["tokens_per_s"],
        "padding_share": t["padding_share"], "steps": t["steps"],
        "train_examples": t["train_examples"], "trainable_params": t["trainable_params"],
        "commit": commit, "machine": machine,
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if "sparsify" in t:
        out["dense_value"] = 100 * t["sparsify"]["dense_dev"][metric]
    if "servable_cut" in t:
        out["cut_value"] = 100 * t["servable_cut"]["dev"][metric]
        out["cut_rule"] = t["servable_cut"]["rule"]
    if "head_init_stage" in t:
        out["head_init"] = t["head_init_stage"]
    best = best_dev(out["dev_history"], metric)
    if best is not None:  # the best dev epoch, as PASTA's code keeps (the value is the last's)
        out["best_epoch"], out["best_value"] = best
    return out


def best_dev(dev_history: Sequence[Mapping[str, float]], metric: str) -> tuple[int, float] | None:
    """(epoch, ``metric`` x100) of a run's best dev epoch, the first of equals."""
    hist = [h for h in dev_history if "epoch" in h and metric in h]
    if not hist:
        return None
    top = max(hist, key=lambda h: h[metric])  # (the first of equals)
    return int(top["epoch"]), 100 * float(top[metric])


def checkpoint_of(results: Path, run: Run) -> Path | None:
    """Where a long frozen-backbone run (PASTA's 150 epochs) keeps its epoch checkpoint,
    beside the ``results`` file (None for the others: their runs take minutes)."""
    if run.epochs <= LONG_EPOCHS or run.method not in FROZEN:
        return None
    name = hashlib.sha1(run.key.encode()).hexdigest()[:16] + ".pt"
    return results.with_name(results.name + ".checkpoints") / name
