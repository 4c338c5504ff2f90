"""The accuracy study (issue 11): the papers' methods on GLUE dev sets, resumable.

    nice -n 10 .venv/bin/python -m bench.accuracy --data /work/shared/data/glue \\
        --results bench/results/accuracy.jsonl --plan pilot-full --threads 1
    .venv/bin/python -m bench.accuracy --results bench/results/accuracy.jsonl --table-only

Each finished run is appended to --results (one JSON object a line: commit, config, seed,
metrics, seconds, training tokens/s, machine); a run whose key is already in the file is
skipped, so an interrupted study resumes where it stopped. The tables are generated
from the file alone: mean ± sd over seeds, and each method's paired difference from
``full`` (same task, same seed) with a 95 % t-interval over seeds.

Plans, in the order the study runs them (the whole-model claims first):
  pilot-full    full (paper recipe) at --pilot-lrs, seed 0, RTE and MRPC, 3 epochs
  diag          only where full's mean over its seeds so far at the shared lr misses a
                floor: seeds 1 and 2 (recorded as claims runs) and 10-epoch runs of the
                3 seeds (kept out of the tables). Run it again after claims-full
  claims-full   full at the shared lr, seeds 0-2, on the claims' tasks and SST-2 (recorded as
                claims runs): the floors are on full's mean of seeds, so it comes first
  claims        seeds 0-2 on RTE, MRPC, STS-B, CoLA: full, child-d, child-f, dps, EH-FT
                (full+pet:lora); SST-2 (8,000 training rows): full. One shared lr, the
                full pilot's best. claims, claims-pasta and guidance are refused while
                full's mean misses a floor on a task it has run (find out why: plan diag).
                --accept-missed-floor TASK lets them run with that floor missed, once plan
                diag's runs on TASK are in the file (the why is then on record); each run
                made so says so in its record, and the claims are also reported over the
                tasks whose floor full meets
  pilot-pasta   pasta at its own 3 lrs, seed 0, RTE and MRPC, --frozen-epochs epochs
                (when the best of the 3 is an end, one more lr past it, then the best of 4)
  claims-pasta  the claims' seeds and tasks (SST-2 included) for pasta at its pilot's lr
  pilot-frozen  prefix, lora, bitfit as pilot-pasta
  pilot-servable  child-d, servable recipe at density 0.05, at its own 4 lrs (as many as
                full's search), seed 0, RTE and MRPC: the servable recipe updates a few
                weights and learns little at the whole-model lr. Its best serves child-d,
                child-f and dps in the servable recipe (plans servable and structure).
                Beside it, the same with the backbone's (untrained) pooler frozen at 2 of
                those lrs: what training the pooler into the head is worth
  pilot-full-servable  full's servable recipe (encoder layers trained, embeddings frozen,
                a dense diff) at --pilot-lrs, seed 0, RTE and MRPC: the evidence for
                `polyhead train --method full`'s default lr; its runs are paired with
                the paper recipe's in the servable-cost table
  servable      child-d and dps, servable recipe, density 0.05 (seeds 0-2) and 0.01 (seed 0)
  servable-diag only on a task where child-d or dps at density 0.05 loses more than 10
                points (mean of its 3 seeds) to its paper recipe: both at --frozen-epochs
                epochs, seed 0 (kept out of the tables): is the 3-epoch schedule the cause?
                And dps (which runs at child-d's servable lr) at the servable pilot's other
                lrs, seed 0, RTE and MRPC (kept out of the tables): is the lr the cause?
                Where that search chooses another lr, dps at it on STS-B and CoLA, seed 0
  servable-defaults  (issue 28) the servable defaults no run had shown: child-f at the servable
                pilot's lr, seeds 0-2 on the claim tasks (never run before); dps at its own
                search's lr, seeds 0-2 (seed 0 is servable-diag's run); child-d on CoLA at
                --frozen-epochs epochs in every seed (at 3 it sits at the majority answer);
                then child-f's own servable lr search (seed 3, RTE and MRPC: full's servable
                points and the servable pilot's), then child-f's 3 seeds at its choice
  pilot-own-lr  (issue 28) full, child-d, child-f, dps each at OWN_LRS (full's 4 points), seed 3
                (no claim uses it), RTE and MRPC; Child-Tuning without warm-up, as its code
  claims-own-lr seeds 0-2 on the claim tasks, each dense method at its own search's best
  eh-ft         EH-FT as published (polyhead/trainer/algos/eh_ft.py) with LoRA and with BitFit, and its
                fair baseline (the same MLP head, random; the same stage 2): 3 seeds x 4 tasks
  pasta-paper   PASTA's paper recipe (batch 32, 150 epochs, every epoch's dev metric, the best
                epoch recorded beside the last), seed 0, the claim tasks; each epoch is
                checkpointed beside the results, and a stopped run resumes there
  guidance      seed 0: prefix, lora, bitfit at their pilots' lr; EH-FT with BitFit
  structure     seed 0, RTE and MRPC: child-d and dps, servable at density 0.01, single
                weights against whole input columns (--mask-structure columns)
--precision bf16 (the default) trains under bf16 autocast, as `polyhead train` does on CPUs
with native bf16; --precision fp32 is the study as first run. Each precision is a study of
its own (its pilots choose its lrs; its floors gate its claims); --table-only prints the
tables of --precision and a table of every run made in both (bf16 - fp32, and speed).
With --workers N, N processes (each --threads threads) share the results file; each run is
claimed by a lock file in <results>.running/ so no two take the same one.
Whole train and dev sets, max length 128, batch 16, --select last (the study reports the
last epoch, as Child-Tuning and DPS do; each epoch's dev metrics are kept in the record).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASKS = {"rte": "RTE", "mrpc": "MRPC", "stsb": "STS-B", "cola": "CoLA", "sst2": "SST-2"}
METRIC = {"rte": "accuracy", "mrpc": "f1", "stsb": "pearson", "cola": "mcc", "sst2": "accuracy"}
FLOORS = {"rte": 58.0, "mrpc": 84.0, "cola": 20.0, "stsb": 80.0, "sst2": 86.0}
CLAIM_TASKS = ("rte", "mrpc", "stsb", "cola")
PILOT_TASKS = ("rte", "mrpc")
DENSE = ("full", "child-d", "child-f", "dps")
FROZEN_LRS = {"pasta": (1e-3, 3e-3, 1e-2), "prefix": (3e-3, 1e-2, 3e-2),
              "lora": (3e-4, 1e-3, 3e-3), "bitfit": (1e-3, 3e-3, 1e-2)}
# A frozen method's pilot whose best lr is an end of its 3 points gets one more point past
# that end (the next half-decade step), so no default is chosen at the edge of a search
# unexamined beyond it; 4 points at most, as full's and the servable pilot's searches.
FROZEN_EDGES = {"pasta": (3e-4, 3e-2), "prefix": (1e-3, 1e-1), "lora": (1e-4, 1e-2),
                "bitfit": (3e-4, 3e-2)}
SERVABLE_LRS = (1e-4, 3e-4, 1e-3, 3e-3)
SERVABLE_PILOT = "child-d@0.05"  # the servable pilot's row name (method @ density)
FULL_SERVABLE = "full/servable"  # full's servable recipe (encoder layers, dense diff)
PILOTS = ("full", *FROZEN_LRS, SERVABLE_PILOT, FULL_SERVABLE)  # each row a pilot chooses an lr for
SPARSE = ("child-d", "dps")  # the servable recipe's sparse methods (plans servable, structure)
# A sparse servable row losing more than this (mean of 3 seeds) to its paper recipe on a task
# gets plan servable-diag there: the frozen-backbone methods' longer schedule, one seed.
SERVABLE_COLLAPSE = 10.0
SST2_ROWS = 8000
GATED = ("claims", "claims-pasta", "guidance")  # plans that wait for full's floors


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/work/shared/data/glue"))
    p.add_argument("--results", type=Path, required=True, help="JSONL results file (appended)")
    p.add_argument("--plan", action="append", default=[],
                   choices=("pilot-full", "diag", "claims-full", "claims", "pilot-pasta", "claims-pasta",
                            "pilot-frozen", "pilot-servable", "pilot-full-servable", "servable",
                            "servable-diag", "guidance", "structure", "servable-defaults",
                            "pilot-own-lr", "claims-own-lr", "eh-ft", "pasta-paper"),
                   help="runs to do, in order (repeatable)")
    p.add_argument("--pilot-lrs", default="2e-5,5e-5,1e-4", help="full's pilot learning rates")
    p.add_argument("--frozen-epochs", type=float, default=10.0,
                   help="epochs of the frozen-backbone methods (pasta, prefix, lora, bitfit)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="bf16",
                   help="the study's training precision (bf16: autocast, the trainer's default on this "
                        "CPU); each precision is a study of its own: plans, tables and floors use only "
                        "its runs, and the report compares the two on the runs both made")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--limit", type=int, help="stop after this many new runs")
    p.add_argument("--workers", type=int, default=1,
                   help="runs trained at once, each in its own process with --threads threads "
                        "(processes share the results file and never take the same run)")
    p.add_argument("--table-only", action="store_true", help="print the tables from --results")
    p.add_argument("--curves", type=Path, help="with --table-only: write plan pasta-paper's dev "
                   "curves (dev metric against epoch, one panel a task) to this SVG file")
    p.add_argument("--accept-missed-floor", action="append", default=[], choices=tuple(FLOORS),
                   metavar="TASK", help="run claims, claims-pasta and guidance although full misses "
                   "TASK's floor (repeatable; needs plan diag's runs on TASK; recorded in each run)")
    return p.parse_args(argv)


# -- the plans ------------------------------------------------------------------------------


class PlanRefused(Exception):
    """A plan whose preconditions (a finished pilot, the floors) are not met yet."""


def precision_of(r: dict[str, Any]) -> str:
    """A record's training precision (records before the field trained in fp32)."""
    return str(r.get("config", {}).get("precision", "fp32"))


def load_results(path: Path, diag: bool = False, precision: str | None = None) -> list[dict[str, Any]]:
    """The study's records (``diag``: the diagnostic runs instead), of one ``precision``
    (None: all). Records written before the ``plan`` field came from the full pilot."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            r.setdefault("plan", "pilot-full" if r["pilot"] else "claims")
            if (r["plan"] == "diag") == diag and precision in (None, precision_of(r)):
                out.append(r)
    return out


def pilot_best(results: list[dict[str, Any]], method: str) -> float | None:
    """The lr with the best mean headline metric over the pilot tasks (None: pilot unfinished;
    a frozen method's is unfinished until the point past an end, when due, is in too)."""
    if method in FROZEN_LRS:
        grid = frozen_grid(results, method)
        if len(grid) > len(FROZEN_LRS[method]) and grid != _done_lrs(results, method, grid):
            return None
    return _best_of(results, method)


def _done_lrs(results: list[dict[str, Any]], method: str, grid: tuple[float, ...]) -> tuple[float, ...]:
    """The lrs of ``grid`` whose pilot runs are in on every pilot task."""
    return tuple(lr for lr in grid if {r["task"] for r in results if r["name"] == method and r["pilot"]
                                       and r["seed"] == 0 and r["config"]["lr"] == lr} >= set(PILOT_TASKS))


def _best_of(results: list[dict[str, Any]], method: str) -> float | None:
    by_lr: dict[float, list[float]] = {}
    for r in results:
        if r["name"] == method and r["seed"] == 0 and r["task"] in PILOT_TASKS and r["pilot"]:
            by_lr.setdefault(r["config"]["lr"], []).append(r["value"])
    done = {lr: v for lr, v in by_lr.items() if len(v) == len(PILOT_TASKS)}
    return max(done, key=lambda lr: statistics.mean(done[lr])) if done else None


DPS_SERVABLE = "dps@0.05"  # dps's servable row: its own lr search is plan servable-diag's


def servable_search_best(results: list[dict[str, Any]], diag: list[dict[str, Any]],
                         name: str = DPS_SERVABLE) -> float | None:
    """The best lr of ``name``'s own search over SERVABLE_LRS (mean of the pilot tasks, seed
    0, 3 epochs): its run at the servable pilot's lr (a claims run) and plan servable-diag's
    at the others; None until every point is in on every pilot task."""
    by_lr: dict[float, dict[str, float]] = {}
    for r in [*results, *diag]:
        if (r["name"] == name and r["seed"] == 0 and r["task"] in PILOT_TASKS
                and r["config"]["epochs"] == 3):
            by_lr.setdefault(r["config"]["lr"], {})[r["task"]] = r["value"]
    if not set(SERVABLE_LRS) <= set(by_lr) or any(len(by_lr[lr]) < len(PILOT_TASKS) for lr in SERVABLE_LRS):
        return None
    return max(SERVABLE_LRS, key=lambda lr: statistics.mean(by_lr[lr].values()))


def frozen_grid(results: list[dict[str, Any]], method: str) -> tuple[float, ...]:
    """The pilot lrs of frozen method ``method``: its 3 points, and once all 3 are in and
    the best is an end, the point past that end (FROZEN_EDGES)."""
    grid = FROZEN_LRS[method]
    if _done_lrs(results, method, grid) != grid:
        return grid
    # (the best among the 3, not the 4: the extension is decided once)
    best = _best_of([r for r in results if r["config"]["lr"] in grid], method)
    low, high = FROZEN_EDGES[method]
    if best == grid[0]:
        return (low, *grid)
    if best == grid[-1]:
        return (*grid, high)
    return grid


def missed_floors(results: list[dict[str, Any]], lr: float) -> list[str]:
    """Tasks where full's mean over the seeds run so far (at ``lr``, the protocol's 3
    epochs) is under the floor; the floors are on the mean of seeds. Tasks without a full
    run yet are not counted."""
    out = []
    for task, floor in FLOORS.items():
        vals = [r["value"] for r in results if r["name"] == "full" and r["task"] == task
                and r["config"]["lr"] == lr and r["config"]["epochs"] == 3 and r.get("plan") not in ISSUE28]
        if vals and statistics.mean(vals) < floor:
            out.append(task)
    return out


def _diag_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The diagnostic runs in --results, of the study's precision ([] without a file)."""
    if not getattr(args, "results", None):
        return []
    return load_results(args.results, diag=True, precision=getattr(args, "precision", "fp32"))


def floor_gate(name: str, args: argparse.Namespace, results: list[dict[str, Any]], lr: float) -> list[str]:
    """The missed floors plan ``name`` runs with (each accepted by --accept-missed-floor,
    with plan diag's runs on it done); PlanRefused for any other missed floor."""
    missed = missed_floors(results, lr)
    accepted = set(getattr(args, "accept_missed_floor", []) or [])
    diag = _diag_runs(args) if missed else []
    refused = [t for t in missed if t not in accepted]
    if refused:
        raise PlanRefused(f"full's mean of seeds at lr {lr:g} misses the floor on {', '.join(refused)}; "
                          f"find out why (--plan diag) before running plan {name!r}, or run it with "
                          f"--accept-missed-floor once the why is on record")
    undiagnosed = [t for t in missed if {r["seed"] for r in diag if r["task"] == t and r["name"] == "full"
                                         and r["config"]["lr"] == lr} != {0, 1, 2}]
    if undiagnosed:
        raise PlanRefused(f"--accept-missed-floor {' '.join(undiagnosed)}: plan diag's runs on it "
                          f"(10 epochs, seeds 0-2) are not all in the results yet; run --plan diag first")
    return missed


def _pilot_lrs(args: argparse.Namespace) -> list[float]:
    """full's search (--pilot-lrs), shared by both its recipes' pilots."""
    return [float(x) for x in args.pilot_lrs.split(",")]


def _rows(task: str) -> int | None:
    return SST2_ROWS if task == "sst2" else None


def plan(name: str, args: argparse.Namespace, results: list[dict[str, Any]]) -> list[Run]:
    """Plan ``name``'s runs, given ``results`` of the study's precision."""
    precision = getattr(args, "precision", "fp32")
    return [dataclasses.replace(r, precision=precision) for r in _plan(name, args, results)]


def _plan(name: str, args: argparse.Namespace, results: list[dict[str, Any]]) -> list[Run]:
    fe = args.frozen_epochs
    if name == "pilot-full":
        return [Run(t, "full", lr=lr) for t in PILOT_TASKS for lr in _pilot_lrs(args)]
    if name == "diag":  # why full misses a floor: the seeds' spread, and a longer schedule
        lr = pilot_best(results, "full")
        if lr is None:
            raise PlanRefused("plan 'diag' needs the full pilot first (--plan pilot-full)")
        missed = missed_floors(results, lr)
        # (the seed runs are the claims' own full runs: recorded under "claims")
        return [Run(t, "full", lr=lr, seed=s, max_train=_rows(t)) for t in missed for s in (1, 2)] + [
            Run(t, "full", lr=lr, epochs=10, seed=s, max_train=_rows(t), diag=True)
            for t in missed for s in (0, 1, 2)]
    if name in ("pilot-pasta", "pilot-frozen"):
        methods = ["pasta"] if name == "pilot-pasta" else ["prefix", "lora", "bitfit"]
        return [Run(t, m, recipe="servable", lr=lr, epochs=fe)
                for m in methods for t in PILOT_TASKS for lr in frozen_grid(results, m)]
    if name == "pilot-full-servable":  # full's servable recipe, on full's own search
        return [Run(t, "full", recipe="servable", lr=lr) for t in PILOT_TASKS for lr in _pilot_lrs(args)]
    if name == "pilot-servable":
        return [Run(t, "child-d", recipe="servable", lr=lr, density=0.05)
                for t in PILOT_TASKS for lr in SERVABLE_LRS] + [  # and what the trained pooler does
            Run(t, "child-d", recipe="servable", lr=lr, density=0.05, pooler="frozen")
            for t in PILOT_TASKS for lr in SERVABLE_LRS[::2]]
    if name in ("servable", "structure"):
        slr = pilot_best(results, SERVABLE_PILOT)
        if slr is None:
            raise PlanRefused(f"plan {name!r} needs the servable pilot first (--plan pilot-servable)")
        if name == "structure":  # what column-structured masks cost against single weights
            return [Run(t, m, recipe="servable", lr=slr, density=0.01, structure=st)
                    for t in PILOT_TASKS for m in SPARSE for st in ("entries", "columns")]
        runs = [Run(t, m, recipe="servable", lr=slr, seed=s, density=0.05)
                for s in (0, 1, 2) for t in CLAIM_TASKS for m in SPARSE]
        return runs + [Run(t, m, recipe="servable", lr=slr, density=0.01)
                       for t in CLAIM_TASKS for m in SPARSE]
    if name == "servable-diag":  # where the servable recipe collapses: is it the schedule?
        slr = pilot_best(results, SERVABLE_PILOT)
        if slr is None:
            raise PlanRefused("plan 'servable-diag' needs the servable pilot first (--plan pilot-servable)")
        collapsed = servable_collapses(results)
        runs = [Run(t, m, recipe="servable", lr=slr, epochs=args.frozen_epochs, density=0.05, diag=True)
                for t in collapsed for m in SPARSE]
        # and dps, which serves at child-d's pilot's lr, at that pilot's other points
        runs += [Run(t, "dps", recipe="servable", lr=lr, density=0.05, diag=True)
                 for t in PILOT_TASKS for lr in SERVABLE_LRS if lr != slr and collapsed]
        # then, where that search chose another lr, dps at it on the other claim tasks (seed 0)
        best = servable_search_best(results, _diag_runs(args))
        return runs + [Run(t, "dps", recipe="servable", lr=best, density=0.05, diag=True)
                       for t in CLAIM_TASKS if t not in PILOT_TASKS and best not in (None, slr)]
    if name == "servable-defaults":
        return servable_default_runs(args, results)
    if name in ISSUE28_PLANS:
        return ISSUE28_PLANS[name](args, results)
    lr = pilot_best(results, "full")
    if lr is None:
        raise PlanRefused(f"plan {name!r} needs the full pilot first (--plan pilot-full)")
    if name == "claims-full":  # full's seeds first: the floors are on their mean
        return [Run(t, "full", lr=lr, seed=s, max_train=_rows(t))
                for s in (0, 1, 2) for t in (*CLAIM_TASKS, "sst2")]
    floor_gate(name, args, results, lr)
    if name == "claims":
        runs = []
        for seed in (0, 1, 2):
            for t in CLAIM_TASKS:
                # (Child-Tuning at the 10 % warm-up these claims ran with; its paper
                # recipe is now without: plan claims-own-lr)
                runs += [Run(t, m, lr=lr, seed=seed, warmup=0.1) for m in DENSE]
                runs.append(Run(t, "full", lr=lr, seed=seed, head_init="pet:lora"))
            runs.append(Run("sst2", "full", lr=lr, seed=seed, max_train=SST2_ROWS))
        return runs
    if name == "claims-pasta":
        pasta_lr = pilot_best(results, "pasta")
        if pasta_lr is None:
            raise PlanRefused("plan 'claims-pasta' needs the pasta pilot first (--plan pilot-pasta)")
        return [Run(t, "pasta", recipe="servable", lr=pasta_lr, epochs=fe, seed=seed,
                    max_train=_rows(t))
                for seed in (0, 1, 2) for t in (*CLAIM_TASKS, "sst2")]
    runs = []  # guidance
    for m in ("prefix", "lora", "bitfit"):
        mlr = pilot_best(results, m)
        if mlr is not None:
            runs += [Run(t, m, recipe="servable", lr=mlr, epochs=fe) for t in CLAIM_TASKS]
    return runs + [Run(t, "full", lr=lr, head_init="pet:bitfit") for t in CLAIM_TASKS]


def servable_default_runs(args: argparse.Namespace, results: list[dict[str, Any]]) -> list[Run]:
    """Plan servable-defaults: each servable default in 3 seeds: child-f's first seed at the
    servable pilot's lr (never run before), dps on the claim tasks, child-d on CoLA at the
    longer schedule (its 3-epoch default stays at the majority answer there); then child-f's
    own lr search on the pilot seed and, once it has chosen, child-f's 3 seeds there."""
    slr = pilot_best(results, SERVABLE_PILOT)
    dlr = servable_search_best(results, _diag_runs(args))
    if slr is None or dlr is None:
        raise PlanRefused("plan 'servable-defaults' needs the servable pilot and dps's own search "
                          "(--plan pilot-servable, --plan servable-diag)")
    # (dps's seed 0 and child-d's 10-epoch seed 0: servable-diag's runs, done)
    runs = [Run(t, "child-f", recipe="servable", lr=slr) for t in CLAIM_TASKS]
    runs += [Run(t, "dps", recipe="servable", lr=dlr, seed=s) for s in (0, 1, 2) for t in CLAIM_TASKS]
    runs += [Run("cola", "child-d", recipe="servable", lr=slr, epochs=args.frozen_epochs, seed=s)
             for s in (0, 1, 2)]
    # child-f trains densely before its cut: its own search (full's servable points and the
    # servable pilot's), on the pilot seed
    runs += [Run(t, "child-f", recipe="servable", lr=lr, seed=PILOT_SEED)
             for lr in (*CHILD_F_SERVABLE_LRS, slr) for t in PILOT_TASKS]
    best = child_f_servable_best(results)  # then its 3 seeds at its own choice, once made
    return runs + ([] if best is None else [Run(t, "child-f", recipe="servable", lr=best, seed=s)
                                            for s in (0, 1, 2) for t in CLAIM_TASKS])


# child-f's servable search: full's servable points (it trains every tunable weight densely
# before the cut, as full's servable recipe does; at child-d's 1e-3 its dense model stayed at
# chance on RTE, seed 0)
CHILD_F_SERVABLE_LRS = (2e-5, 5e-5, 1e-4, 2e-4)


def child_f_servable_best(results: list[dict[str, Any]]) -> float | None:
    """The best lr of child-f's servable search (seed PILOT_SEED, mean of RTE and MRPC, the
    default's run included); None until every point is in on both."""
    by_lr: dict[float, dict[str, float]] = {}
    for r in results:
        if r.get("plan") == "servable-defaults" and r["name"] == "child-f@0.05" and r["seed"] == PILOT_SEED:
            by_lr.setdefault(r["config"]["lr"], {})[r["task"]] = r["value"]
    if len(by_lr) <= len(CHILD_F_SERVABLE_LRS) or any(len(v) < len(PILOT_TASKS) for v in by_lr.values()):
        return None
    return max(by_lr, key=lambda lr: statistics.mean(by_lr[lr].values()))


# -- issue 28: the papers at their own budgets -----------------------------------------------

PILOT_SEED = 3  # the own-lr searches' seed: no claim uses it, so no run is pilot and claim
OWN_LRS = (2e-5, 5e-5, 1e-4, 2e-4)  # full's search; around Child-Tuning's 4e-5 and DPS's 2e-5
CHILD = ("child-d", "child-f")  # Child-Tuning's code runs without warm-up
EHFT_LR = 1e-4  # eh-ft's stage 2 (polyhead/trainer/table.py; the whole-model methods' lr)
EHFT_ROWS = (None, "pet:lora", "pet:bitfit")  # the fair baseline, then EH-FT with each PET
PASTA_TASKS = ("cola", "rte", "mrpc", "stsb")  # cheapest first (CoLA's sentences are short)


def _dense(task: str, method: str, lr: float, seed: int) -> Run:
    """A dense method's paper recipe as its code runs it (Child-Tuning without warm-up)."""
    return Run(task, method, lr=lr, seed=seed, warmup=0.0 if method in CHILD else None)


def pilot_own_lr_runs(args: argparse.Namespace, results: list[dict[str, Any]]) -> list[Run]:
    """Each dense method's own search, full's included (re-run off the claims' seeds):
    OWN_LRS, seed PILOT_SEED, RTE and MRPC."""
    return [_dense(t, m, lr, PILOT_SEED) for m in DENSE for lr in OWN_LRS for t in PILOT_TASKS]


def own_lr_best(results: list[dict[str, Any]], method: str) -> float | None:
    """The best lr of ``method``'s own search (plan pilot-own-lr; mean of RTE and MRPC);
    None until every point is in on both."""
    by_lr: dict[float, dict[str, float]] = {}
    for r in results:
        if r.get("plan") == "pilot-own-lr" and r["name"] == method and r["seed"] == PILOT_SEED:
            by_lr.setdefault(r["config"]["lr"], {})[r["task"]] = r["value"]
    if any(len(by_lr.get(lr, {})) < len(PILOT_TASKS) for lr in OWN_LRS):
        return None
    return max(OWN_LRS, key=lambda lr: statistics.mean(by_lr[lr].values()))


def claims_own_lr_runs(args: argparse.Namespace, results: list[dict[str, Any]]) -> list[Run]:
    """Seeds 0-2 on the claim tasks, each dense method at its own search's best lr (a
    method whose search is not complete waits)."""
    best = {m: own_lr_best(results, m) for m in DENSE}
    if all(lr is None for lr in best.values()):
        raise PlanRefused("plan 'claims-own-lr' needs plan pilot-own-lr's searches first")
    return [_dense(t, m, lr, s) for s in (0, 1, 2) for t in CLAIM_TASKS
            for m, lr in best.items() if lr is not None]


def eh_ft_runs(args: argparse.Namespace, results: list[dict[str, Any]]) -> list[Run]:
    """EH-FT as published against its fair baseline (the same MLP head, random; the same
    stage 2), 3 seeds, the claim tasks; stage 1 at the paper's epochs for the task."""
    from polyhead.trainer.algos.eh_ft import stage1_epochs

    return [Run(t, "eh-ft", recipe="paper", lr=EHFT_LR, seed=s, batch=32, head_init=h,
                head_init_epochs=None if h is None else stage1_epochs(t))
            for s in (0, 1, 2) for t in CLAIM_TASKS for h in EHFT_ROWS]


def pasta_paper_runs(args: argparse.Namespace, results: list[dict[str, Any]]) -> list[Run]:
    """PASTA's paper recipe (150 epochs, batch 32, every epoch's dev metric) at its pilot's
    lr, seed 0, the claim tasks (checkpointed each epoch: a stopped run resumes)."""
    lr = pilot_best(results, "pasta")
    if lr is None:
        raise PlanRefused("plan 'pasta-paper' needs the pasta pilot first (--plan pilot-pasta)")
    return [Run(t, "pasta", recipe="paper", lr=lr, epochs=150, batch=32) for t in PASTA_TASKS]


ISSUE28_PLANS = {"pilot-own-lr": pilot_own_lr_runs, "claims-own-lr": claims_own_lr_runs,
                 "eh-ft": eh_ft_runs, "pasta-paper": pasta_paper_runs}
# the plans whose records stay out of issue 11's tables (bench/papers_budgets.py prints theirs)
ISSUE28 = ("servable-defaults", *ISSUE28_PLANS)


# -- running ---------------------------------------------------------------------------------


REPO = Path(__file__).resolve().parent.parent


@functools.cache
def commit_of(folder: Path) -> str:
    """The code's git commit (+ '-dirty' when polyhead/trainer/, polyhead/engine/ or bench/ differ from it),
    read once per process (``execute`` reads it when it has imported the code): a worker's
    records name the code it runs, whatever is merged into the worktree meanwhile."""
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *a], capture_output=True, text=True).stdout.strip()

    sha = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "polyhead/trainer", "polyhead/engine", "bench/accuracy.py")
    return sha + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    import torch

    return {"host": platform.node(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "load_avg": [round(x, 2) for x in os.getloadavg()],
            "nice": os.nice(0)}


def run_one(args: argparse.Namespace, run: Run, backbone: Any, cache: dict[Any, Any]) -> dict[str, Any]:
    from polyhead.trainer.cli import load_data
    from polyhead.trainer.config import TrainConfig
    from polyhead.trainer.run import train

    folder = args.data / TASKS[run.task]
    ns = argparse.Namespace(preset=run.task, train=folder / "train.tsv", dev=folder / "dev.tsv", metric=None)
    tr, dv, metric = load_data(ns)
    cfg = TrainConfig.flat(method=run.method, recipe=run.recipe, lr=run.lr, epochs=run.epochs,
                           batch_size=run.batch, max_length=128, seed=run.seed, max_train=run.max_train,
                           density=run.density, head_init=run.head_init, select="last", device="cpu",
                           mask_structure=run.structure, pooler=run.pooler, precision=run.precision,
                           warmup=run.warmup, head_init_epochs=run.head_init_epochs)
    mach = machine()
    t0 = time.time()
    res = train(cfg, backbone, tr, dv, metric, progress=False, head_cache=cache, export=False,
                log_fn=lambda s: print(f"  {run.task} {s}", flush=True), checkpoint=checkpoint_of(args, run))
    t = res.training.to_json()
    out: dict[str, Any] = {
        "key": run.key, "task": run.task, "name": run.name, "method": run.method,
        "recipe": run.recipe, "seed": run.seed, "pilot": False, "metric": metric,
        "value": 100 * res.metrics[metric], "metrics": res.metrics, "config": cfg.to_dict(),
        "dev_history": t["dev_history"], "seconds": round(time.time() - t0, 1),
        "train_seconds": t["train_seconds"], "tokens_per_s": t["tokens_per_s"],
        "padding_share": t["padding_share"], "steps": t["steps"],
        "train_examples": t["train_examples"], "trainable_params": t["trainable_params"],
        "commit": commit_of(REPO), "machine": mach,
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if "sparsify" in t:
        out["dense_value"] = 100 * t["sparsify"]["dense_dev"][metric]
    if "servable_cut" in t:
        out["cut_value"] = 100 * t["servable_cut"]["dev"][metric]
        out["cut_rule"] = t["servable_cut"]["rule"]
    if "head_init_stage" in t:
        out["head_init"] = t["head_init_stage"]
    best = _best_dev(out)
    if best is not None:  # the best dev epoch, as PASTA's code keeps (the value is the last's)
        out["best_epoch"], out["best_value"] = best
    return out


def _best_dev(rec: dict[str, Any]) -> tuple[int, float] | None:
    hist = [h for h in rec["dev_history"] if "epoch" in h and rec["metric"] in h]
    if not hist:
        return None
    top = max(hist, key=lambda h: h[rec["metric"]])  # (the first of equals)
    return int(top["epoch"]), 100 * float(top[rec["metric"]])


LONG_EPOCHS = 20  # a frozen-backbone run this long keeps an epoch checkpoint


def checkpoint_of(args: argparse.Namespace, run: Run) -> Path | None:
    """Where a long frozen-backbone run (PASTA's 150 epochs) keeps its epoch checkpoint,
    beside the results (None for the others: their runs take minutes)."""
    if run.epochs <= LONG_EPOCHS or run.method not in FROZEN_LRS:
        return None
    name = hashlib.sha1(run.key.encode()).hexdigest()[:16] + ".pt"
    return args.results.with_name(args.results.name + ".checkpoints") / name


# Plans whose runs depend on the results of others (a pilot's choice, full's floors): a
# worker reaching one waits while another worker still trains a run of those.
EXTENDING = ("pilot-pasta", "pilot-frozen")  # pilots whose search may grow (frozen_grid)
DEPENDS = {"claims-full": ("pilot-full",), "diag": ("pilot-full", "claims-full"),
           "claims": ("pilot-full", "claims-full", "diag"),
           "claims-pasta": ("pilot-full", "claims-full", "diag", "pilot-pasta"),
           "guidance": ("pilot-full", "claims-full", "diag", "pilot-frozen"),
           "servable": ("pilot-servable",), "structure": ("pilot-servable",),
           "servable-diag": ("pilot-servable", "servable"),
           "servable-defaults": ("pilot-servable", "servable-diag"),
           "claims-own-lr": ("pilot-own-lr",), "pasta-paper": ("pilot-pasta",)}


def _running(results: Path) -> Path:
    return results.with_name(results.name + ".running")


def _holder(lock: Path) -> tuple[int, str] | None:
    """(pid, plan) of a claim whose holder is alive; None for a dead or vanished one."""
    try:
        pid, _, plan = lock.read_text().partition(" ")
        os.kill(int(pid or 0), 0)
        return int(pid), plan
    except (ProcessLookupError, ValueError, FileNotFoundError):
        return None


def _claim(results: Path, key: str, plan: str = "") -> Path | None:
    """Take ``key`` for this process (a lock file beside the results, holding our pid and
    the plan); None when a live process holds it. A dead holder's claim is taken over."""
    folder = _running(results)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / (hashlib.sha1(key.encode()).hexdigest()[:16] + ".pid")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _holder(lock) is not None:
                return None  # a live process trains it
            lock.unlink(missing_ok=True)  # its holder died: take it over
            continue
        os.write(fd, f"{os.getpid()} {plan}".encode())
        os.close(fd)
        return lock
    return None


def busy_plans(results: Path) -> set[str]:
    """The plans of the runs other live processes are training now."""
    folder = _running(results)
    held = (_holder(lock) for lock in folder.glob("*.pid")) if folder.is_dir() else ()
    return {h[1] for h in held if h is not None and h[0] != os.getpid()}


def _wait_for(name: str, results: Path, poll: float = 20.0, on_itself: bool = False) -> None:
    """Block while another worker trains a run plan ``name`` depends on (``on_itself``:
    or a run of ``name`` itself)."""
    said = False
    while busy := busy_plans(results) & {*DEPENDS.get(name, ()), *((name,) if on_itself else ())}:
        if not said:
            print(f"== plan {name!r} waits for the runs of {', '.join(sorted(busy))} in flight", flush=True)
            said = True
        time.sleep(poll)


def _append(results: Path, rec: dict[str, Any]) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # one whole line at a time, whichever worker writes
        f.write(json.dumps(rec, sort_keys=True) + "\n")


def execute(args: argparse.Namespace) -> None:
    if args.workers > 1:  # each worker is this command with --workers 1; they share the file
        cmd = [sys.executable, "-m", "bench.accuracy", *_worker_argv(sys.argv[1:])]
        procs = [subprocess.Popen(cmd) for _ in range(args.workers)]
        try:
            sys.exit(max(p.wait() for p in procs))
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            raise
    import torch

    import polyhead.trainer.run  # noqa: F401  (the code this process runs, before its commit is read)
    from polyhead.engine import load_backbone

    torch.set_num_threads(args.threads)
    commit_of(REPO)
    backbone = load_backbone()
    caches: dict[str, dict[Any, Any]] = {}
    done_new = 0
    for name, again in [(p, again) for p in args.plan
                        for again in ((False, True) if p in EXTENDING else (False,))]:
        # (a pilot that can extend its search runs twice: the second time, once every
        # worker's runs of it are in, it plans the point past an end its best landed on)
        _wait_for(name, args.results, on_itself=again)
        try:
            results = load_results(args.results, precision=args.precision)
            runs = plan(name, args, results)  # a gated plan refuses any floor missed and not accepted
        except PlanRefused as e:
            print(f"== plan {name!r} skipped: {e}", flush=True)
            continue
        lr = pilot_best(results, "full")
        accepted = missed_floors(results, lr) if name in GATED and lr is not None else []
        if accepted:
            print(f"== plan {name!r} runs with full under its floor on {', '.join(accepted)} "
                  f"(--accept-missed-floor)", flush=True)
        for run in runs:
            done = load_results(args.results) + load_results(args.results, diag=True)
            if any(r["key"] == run.key for r in done):
                continue
            lock = _claim(args.results, run.key, name)
            if lock is None:
                continue  # another worker trains it
            try:
                if any(r["key"] == run.key for r in load_results(args.results) +
                       load_results(args.results, diag=True)):
                    continue  # finished by another worker since the check above
                print(f"== {run.key}", flush=True)
                rec = run_one(args, run, backbone, caches.setdefault(run.task, {}))
                rec["pilot"] = name.startswith("pilot")
                rec["plan"] = "diag" if run.diag else ("claims" if name in ("diag", "claims-full") else name)
                if accepted:
                    rec["accepted_missed_floors"] = accepted
                _append(args.results, rec)
            finally:
                lock.unlink(missing_ok=True)
            print(f"   {run.key}: {rec['metric']} {rec['value']:.2f} in {rec['seconds']}s "
                  f"({rec['tokens_per_s']:.0f} tokens/s)", flush=True)
            done_new += 1
            if args.limit is not None and done_new >= args.limit:
                return


def _worker_argv(argv: list[str]) -> list[str]:
    """``argv`` without its --workers option (a worker is one process)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers="):
            out.append(a)
    return out


# -- tables ----------------------------------------------------------------------------------


def claim_runs(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of the protocol: every non-pilot run, and each pilot's run at the lr it
    chose (seed 0), which is the later plans' own seed-0 run of that row (the same key, so
    it was never run again): full's for the claims, pasta's for claims-pasta, the servable
    pilot's for plan servable, the frozen methods' for guidance (the servable pilot's
    frozen-pooler rows are an ablation, pilot only). Once the servable pilot
    has chosen, servable sparse runs at another lr (run before it) are left out."""
    best = {name: pilot_best(results, name) for name in PILOTS}
    slr = best.get(SERVABLE_PILOT)
    return [r for r in results if r.get("plan") not in ISSUE28 and (not r["pilot"] or (
        r["seed"] == 0 and r["config"]["lr"] == best.get(r["name"]))) and not (
        slr is not None and "@" in r["name"] and r["config"]["lr"] != slr)]


def t_interval(diffs: list[float]) -> tuple[float, float, float] | None:
    """(mean, low, high) of a 95 % t-interval, None for fewer than 2 values."""
    if len(diffs) < 2:
        return None
    from scipy.stats import t

    m, sd = statistics.mean(diffs), statistics.stdev(diffs)
    h = float(t.ppf(0.975, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    return m, m - h, m + h


def _cell(vals: list[float]) -> str:
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}"


def pilot_table(results: list[dict[str, Any]]) -> str:
    rows = ["| method | lr | epochs | " + " | ".join(f"{TASKS[t]} ({METRIC[t]})" for t in PILOT_TASKS) +
            " | mean | s/run | tokens/s |", "|" + "---|" * (len(PILOT_TASKS) + 6)]
    keys = sorted({(r["name"], r["config"]["lr"], r["config"]["epochs"]) for r in results if r["pilot"]})
    for name, lr, ep in keys:
        rs = {r["task"]: r for r in results if r["pilot"] and r["name"] == name and r["config"]["lr"] == lr}
        cells = [f"{rs[t]['value']:.1f} (best ep {_best_epoch(rs[t])})" if t in rs else "—"
                 for t in PILOT_TASKS]
        vals = [rs[t]["value"] for t in PILOT_TASKS if t in rs]
        mean = f"{statistics.mean(vals):.1f}" if len(vals) == len(PILOT_TASKS) else "—"
        secs = statistics.mean(r["seconds"] for r in rs.values())
        tps = statistics.mean(r["tokens_per_s"] for r in rs.values())
        rows.append(f"| {name} | {lr:g} | {ep:g} | " + " | ".join(cells) +
                    f" | {mean} | {secs:.0f} | {tps:.0f} |")
    return "\n".join(rows)


def _best_epoch(r: dict[str, Any]) -> str:
    hist = [h for h in r["dev_history"] if "epoch" in h and r["metric"] in h]
    if not hist:
        return "?"
    best = max(hist, key=lambda h: h[r["metric"]])
    return f"{best['epoch']}: {100 * best[r['metric']]:.1f}"


def main_table(results: list[dict[str, Any]]) -> str:
    claims = claim_runs(results)
    tasks = [t for t in TASKS if any(r["task"] == t for r in claims)]
    names = list(dict.fromkeys(r["name"] for r in claims))
    rows = ["| method | " + " | ".join(f"{TASKS[t]} ({METRIC[t]})" for t in tasks) +
            " | avg (claim tasks) | seeds | tokens/s | min/run |", "|" + "---|" * (len(tasks) + 5)]
    for name in names:
        cells, means, seeds = [], [], set()
        for t in tasks:
            vals = [r["value"] for r in claims if r["name"] == name and r["task"] == t]
            seeds |= {r["seed"] for r in claims if r["name"] == name and r["task"] == t}
            cells.append(_cell(vals))
            if vals and t in CLAIM_TASKS:
                means.append(statistics.mean(vals))
        avg = f"{statistics.mean(means):.1f}" if len(means) == len(CLAIM_TASKS) else "—"
        mine = [r for r in claims if r["name"] == name]
        tps = statistics.mean(r["tokens_per_s"] for r in mine)
        mins = statistics.mean(r["seconds"] for r in mine) / 60
        rows.append(f"| {name} | " + " | ".join(cells) +
                    f" | {avg} | {len(seeds)} | {tps:.0f} | {mins:.1f} |")
    return "\n".join(rows)


def paired_table(results: list[dict[str, Any]]) -> str:
    """Each method minus full on the same task and seed: mean [95 % t-interval]."""
    claims = claim_runs(results)
    full = {(r["task"], r["seed"]): r["value"] for r in claims if r["name"] == "full"}
    tasks = [t for t in TASKS if any(r["task"] == t for r in claims)]
    rows = ["| method − full | " + " | ".join(TASKS[t] for t in tasks) + " | 4-task avg |",
            "|" + "---|" * (len(tasks) + 2)]
    for name in dict.fromkeys(r["name"] for r in claims):
        if name == "full":
            continue
        cells = []
        for t in tasks:
            d = [r["value"] - full[(t, r["seed"])] for r in claims
                 if r["name"] == name and r["task"] == t and (t, r["seed"]) in full]
            cells.append(_diff_cell(d))
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {_diff_cell(avg_diffs(results, name))} |")
    return "\n".join(rows)


def avg_diffs(results: list[dict[str, Any]], name: str,
              tasks: tuple[str, ...] = CLAIM_TASKS, ref: str = "full") -> list[float]:
    """Per seed: the mean over ``tasks`` (the 4 claim tasks) of (name - ref), for seeds
    where both methods ran every task."""
    claims = claim_runs(results)
    base = {(r["task"], r["seed"]): r["value"] for r in claims if r["name"] == ref}
    out = []
    for s in sorted({r["seed"] for r in claims}):
        d = [r["value"] - base[(r["task"], s)] for r in claims if r["name"] == name and
             r["seed"] == s and r["task"] in tasks and (r["task"], s) in base]
        if len(d) == len(tasks):
            out.append(statistics.mean(d))
    return out


@dataclasses.dataclass(frozen=True)
class Claim:
    """A paper's claim: ``name`` - ``ref`` >= ``bar`` on the claim tasks' average; where the
    paper reports a size of gain (``paper_gain``, from ``source``), the interval says too
    whether this backbone's gain can be that large."""

    name: str
    text: str
    bar: float = 0.0
    ref: str = "full"
    paper_gain: float | None = None
    source: str = ""


CLAIMS = (
    Claim("child-d", "child-d >= full (4-task average)", paper_gain=1.5,
          source="Child-Tuning's smallest gain over vanilla, BERT-large, these 4 tasks"),
    Claim("dps", "dps >= full (4-task average)"),
    Claim("dps", "dps >= child-d (4-task average; DPS reports beating Child-Tuning)", ref="child-d"),
    Claim("full+pet:lora", "EH-FT (pet:lora) >= full (4-task average)", paper_gain=0.4,
          source="EH-FT (LoRA) - finetuning on RTE, MRPC, CoLA, STS-B in its exp1 table "
                 "(+0.89 over its 9 tasks)"),
    Claim("pasta", "PASTA within 2 points of full (4-task average)", bar=-2.0))


def claims_lines(results: list[dict[str, Any]]) -> str:
    """Each claim: yes if the 95 % interval's lower end clears the bar, no if its upper end
    is below it, else not resolved."""
    lr = pilot_best(results, "full")
    missed = missed_floors(results, lr) if lr is not None else []
    met = tuple(t for t in CLAIM_TASKS if t not in missed)
    lines = []
    for c in CLAIMS:
        lines.append(f"{c.text}: {_verdict(avg_diffs(results, c.name, ref=c.ref), c)}")
        if missed and met:  # the same claim where full's protocol is known to work
            lines.append(f"  over the tasks where full meets its floor ({', '.join(TASKS[t] for t in met)}): "
                         f"{_verdict(avg_diffs(results, c.name, met, c.ref), c, gain=False)}")
    return "\n".join(lines)


def _verdict(diffs: list[float], c: Claim, gain: bool = True) -> str:
    ci = t_interval(diffs)
    if ci is None:
        return "not enough seeds yet"
    verdict = ("yes" if ci[1] >= c.bar else
               "no" if ci[2] < c.bar else "not resolved (the interval spans the bar)")
    out = f"{verdict}; {c.name} - {c.ref} = {ci[0]:+.2f} [{ci[1]:+.2f}, {ci[2]:+.2f}] ({len(diffs)} seeds)"
    if gain and c.paper_gain is not None:
        where = ("above the interval: a gain that large is ruled out here" if c.paper_gain > ci[2] else
                 "below the interval: the gain here is larger" if c.paper_gain < ci[1] else
                 "inside the interval: not ruled out")
        out += f"; the paper's +{c.paper_gain:g} ({c.source}) lies {where}"
    return out


def _diff_cell(d: list[float], unit: str = "seed") -> str:
    if not d:
        return "—"
    ci = t_interval(d)
    if ci is None:
        return f"{d[0]:+.1f} (1 {unit})"
    return f"{ci[0]:+.1f} [{ci[1]:+.1f}, {ci[2]:+.1f}]"


def servable_costs(results: list[dict[str, Any]]) -> dict[tuple[str, str], list[float]]:
    """Each servable row's cost on each task: its runs minus the paper recipe's run of the
    same method, task and seed (a list over the seeds both have), by (row name, task)."""
    claims = claim_runs(results)
    paper = {(r["method"], r["task"], r["seed"]): r["value"] for r in claims
             if r["recipe"] == "paper" and r["name"] == r["method"]}
    out: dict[tuple[str, str], list[float]] = {}
    for r in claims:
        base = paper.get((r["method"], r["task"], r["seed"]))
        if r["recipe"] == "servable" and r["method"] in DENSE and base is not None:
            out.setdefault((r["name"], r["task"]), []).append(r["value"] - base)
    return out


def servable_table(results: list[dict[str, Any]]) -> str:
    """The servable recipe's cost: each servable run minus the paper recipe's run of the same
    method, task and seed, mean [95 % t-interval]."""
    costs = servable_costs(results)
    claims = claim_runs(results)
    names = list(dict.fromkeys(r["name"] for r in claims
                               if r["recipe"] == "servable" and r["method"] in DENSE))
    tasks = [t for t in TASKS if any(r["task"] == t for r in claims)]
    rows = ["| servable − paper | " + " | ".join(TASKS[t] for t in tasks) + " |",
            "|" + "---|" * (len(tasks) + 1)]
    for name in names:
        rows.append(f"| {name} | " + " | ".join(_diff_cell(costs.get((name, t), [])) for t in tasks) + " |")
    return "\n".join(rows)


def servable_collapses(results: list[dict[str, Any]]) -> list[str]:
    """Tasks where a sparse servable row at density 0.05, over its 3 seeds, loses more than
    SERVABLE_COLLAPSE points to its paper recipe (plan servable-diag looks at why)."""
    costs = servable_costs(results)
    return [t for t in CLAIM_TASKS if any(
        len(d) == 3 and statistics.mean(d) < -SERVABLE_COLLAPSE
        for d in (costs.get((f"{m}@0.05", t), []) for m in SPARSE))]


def structure_table(results: list[dict[str, Any]]) -> str:
    """Whole-column masks against single weights at the same density, method, task, seed."""
    runs = {(r["method"], r["task"], r["config"]["lr"], r["seed"], r["config"]["density"],
             r["config"].get("mask_structure", "entries")): r["value"]
            for r in results if r["recipe"] == "servable" and not r["pilot"]}
    rows = ["| method @ density | task | lr | seed | single weights | whole columns | columns − single |",
            "|---|---|---|---|---|---|---|"]
    for (m, t, lr, s, d, st), v in sorted(runs.items()):
        if st != "columns" or (m, t, lr, s, d, "entries") not in runs:
            continue
        e = runs[(m, t, lr, s, d, "entries")]
        rows.append(f"| {m} @ {d:g} | {TASKS[t]} | {lr:g} | {s} | {e:.1f} | {v:.1f} | {v - e:+.1f} |")
    return "\n".join(rows)


def child_f_table(results: list[dict[str, Any]]) -> str:
    """child-f: the paper (dense) score and the servable cut of the same run. Runs before the
    cut kept the trained pooler (no ``cut_rule``) reverted it to the backbone's."""
    rows = ["| task | pooler in the cut | runs | child-f (dense) | servable cut (density 0.05) | cost |",
            "|---|---|---|---|---|---|"]
    for t in TASKS:
        for kept in (False, True):
            rs = [r for r in results if r["name"] == "child-f" and r["task"] == t and "cut_value" in r
                  and ("pooler as trained" in r.get("cut_rule", "")) == kept]
            if rs:
                d = statistics.mean(r["value"] for r in rs)
                c = statistics.mean(r["cut_value"] for r in rs)
                rows.append(f"| {TASKS[t]} | {'trained' if kept else 'reverted'} | {len(rs)} | "
                            f"{d:.1f} | {c:.1f} | {d - c:+.1f} |")
    return "\n".join(rows)


def seeds_table(results: list[dict[str, Any]], task: str) -> str:
    """Each claims run on ``task``, seed by seed: the dev metric and the last epoch's train
    loss (near ln 2 = 0.69 on these 2-class tasks: the run never left the starting plateau)."""
    claims = claim_runs(results)
    seeds = sorted({r["seed"] for r in claims if r["task"] == task})
    rows = ["| method | " + " | ".join(f"seed {s}: dev (last train loss)" for s in seeds) + " |",
            "|" + "---|" * (len(seeds) + 1)]
    for name in dict.fromkeys(r["name"] for r in claims if r["task"] == task):
        by = {r["seed"]: r for r in claims if r["task"] == task and r["name"] == name}
        cells = []
        for s in seeds:
            if s not in by:
                cells.append("—")
                continue
            loss = [h["train_loss"] for h in by[s]["dev_history"] if "train_loss" in h]
            cells.append(f"{by[s]['value']:.1f}" + (f" ({loss[-1]:.2f})" if loss else ""))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def diag_table(diag: list[dict[str, Any]]) -> str:
    rows = ["| row | task | lr | epochs | seed | last | dev, every epoch | train loss, every epoch |",
            "|---|---|---|---|---|---|---|---|"]
    for r in diag:
        hist = ", ".join(f"{100 * h[r['metric']]:.1f}" for h in r["dev_history"] if "epoch" in h)
        loss = ", ".join(f"{h['train_loss']:.2f}" for h in r["dev_history"] if "train_loss" in h)
        c = r["config"]
        rows.append(f"| {r['name']} | {TASKS[r['task']]} | {c['lr']:g} | {c['epochs']:g} | "
                    f"{r['seed']} | {r['value']:.1f} | {hist} | {loss} |")
    return "\n".join(rows)


def floors(results: list[dict[str, Any]]) -> str:
    lines = []
    for t, floor in FLOORS.items():
        vals = [r["value"] for r in claim_runs(results) if r["name"] == "full" and r["task"] == t]
        pilot = [r["value"] for r in results if r["name"] == "full" and r["task"] == t and r["pilot"]]
        if vals:
            m = statistics.mean(vals)
            accepted = m < floor and any(t in r.get("accepted_missed_floors", ()) for r in results)
            lines.append(f"{TASKS[t]}: full {m:.1f} (mean of {len(vals)}) vs floor {floor:g}: "
                         f"{'met' if m >= floor else 'MISSED'}" + (
                             " (the claims ran with it missed: --accept-missed-floor, after plan diag)"
                             if accepted else ""))
        elif pilot:
            lines.append(f"{TASKS[t]}: full pilot best {max(pilot):.1f} vs floor {floor:g}: "
                         f"{'met' if max(pilot) >= floor else 'MISSED'}")
    return "\n".join(lines)


def report(results: list[dict[str, Any]], diag: list[dict[str, Any]] | None = None) -> str:
    commits = sorted({r["commit"][:12] for r in results})
    secs = [r["seconds"] for r in results]
    parts = [f"{len(results)} runs; commits {', '.join(commits)}; "
             f"{statistics.mean(secs) / 60:.1f} min per run on average" if results else "no runs yet"]
    if any(r["pilot"] for r in results):
        parts += ["", "Pilot (seed 0; dev metric x100 of the last epoch; best epoch in brackets)", "",
                  pilot_table(results)]
        found = {m: pilot_best(results, m) for m in PILOTS}
        parts += ["", "Best learning rate so far (mean of RTE and MRPC, among the lrs run on both; "
                  "polyhead/trainer/table.py's defaults follow it once the pilot is complete): " + ", ".join(
                      f"{m} {lr:g}" + (" (shared by child-d, child-f, dps, EH-FT)" if m == "full" else
                                       " (servable recipe: child-d, child-f, dps)" if m == SERVABLE_PILOT
                                       else "")
                      for m, lr in found.items() if lr is not None)]
    if any(not r["pilot"] for r in results):
        parts += ["", "Dev metric x100, last epoch, mean ± sd over seeds", "", main_table(results),
                  "", "Paired difference from full (same task and seed), mean [95 % t-interval]", "",
                  paired_table(results)]
    if any(not r["pilot"] for r in results):
        parts += ["", "The papers' claims on this backbone (95 % t-interval over seeds):", "",
                  claims_lines(results)]
    if any(r["recipe"] == "servable" and r["method"] in DENSE  # (not a pilot still choosing)
           for r in claim_runs(results)):
        parts += ["", "The servable recipe's cost against the paper recipe (same method, task, seed)",
                  "", servable_table(results)]
    if any(r["config"].get("mask_structure") == "columns" for r in results):
        parts += ["", "Column-structured masks against single weights (servable, same seed)", "",
                  structure_table(results)]
    if any("cut_value" in r for r in results):
        parts += ["", "child-f: the dense (paper) score and its servable cut, same runs", "",
                  child_f_table(results)]
    parts += ["", "Floors (full):", floors(results)]
    lr = pilot_best(results, "full")
    for t in missed_floors(results, lr) if lr is not None else []:
        parts += ["", f"{TASKS[t]}, where full misses its floor: every run of the claims, seed by seed", "",
                  seeds_table(results, t)]
    if diag:
        parts += ["", "Diagnostic runs (plans diag and servable-diag; not in the tables above; "
                  "dev metric x100)", "", diag_table(diag)]
        best = servable_search_best(results, diag)
        if best is not None:
            parts += ["", f"{DPS_SERVABLE}'s own lr search over the servable pilot's points (seed 0, "
                      f"RTE and MRPC; its run at the shared lr and servable-diag's): best {best:g}, "
                      "polyhead/trainer/table.py's default for dps's servable recipe"]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.table_only:
        if not args.plan:
            print("bench.accuracy: error: give --plan (or --table-only)", file=sys.stderr)
            return 2
        execute(args)
    p = args.precision
    runs, diag = load_results(args.results), load_results(args.results, diag=True)
    print(f"Precision: {p}" + (" (bf16 autocast in training)" if p == "bf16" else "") + "\n")
    mine = [r for r in runs if precision_of(r) == p]
    mine_diag = [r for r in diag if precision_of(r) == p]
    print(report([r for r in mine if r.get("plan") not in ISSUE28], mine_diag))
    from bench import papers_budgets

    extra = papers_budgets.report(mine + mine_diag, args)
    if extra:
        print("\nIssue 28: the papers at their own budgets\n\n" + extra)
    if getattr(args, "curves", None) is not None:
        n = papers_budgets.write_curves(args.curves, mine, args)
        print(f"\n{args.curves}: the dev curves of {n} pasta-paper runs")
    both = runs + diag
    if len({precision_of(r) for r in both}) > 1:
        print("\nbf16 autocast against fp32: the same run (task, method, lr, epochs, seed) in both "
              "precisions; dev metric x100, mean [95 % t-interval] of bf16 - fp32 over the runs (a "
              "pilot's lrs are runs too). tokens/s as each run measured it, under its day's load: "
              "bench.train_speed measures the ratio in one run\n")
        print(precision_table(both))
    return 0


def precision_table(results: list[dict[str, Any]]) -> str:
    """Each run made in both precisions: bf16 - fp32 per (task, row), and the training speed."""
    fp32 = {r["key"]: r for r in results if precision_of(r) == "fp32"}
    pairs: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for r in results:
        base = r["key"].removesuffix("|bf16")
        if precision_of(r) == "bf16" and base in fp32:
            name = r["name"] + (" (10 epochs, diag)" if r.get("plan") == "diag" else "")
            pairs.setdefault((r["task"], name), []).append((fp32[base], r))
    rows = ["| task | method | runs | fp32 | bf16 | bf16 − fp32 | tokens/s fp32 → bf16 |",
            "|---|---|---|---|---|---|---|"]
    for (t, name), ps in sorted(pairs.items()):
        a, b = [x["value"] for x, _ in ps], [y["value"] for _, y in ps]
        ta = statistics.mean(x["tokens_per_s"] for x, _ in ps)
        tb = statistics.mean(y["tokens_per_s"] for _, y in ps)
        diff = _diff_cell([y - x for x, y in zip(a, b, strict=True)], unit="run")
        rows.append(f"| {TASKS[t]} | {name} | {len(ps)} | {statistics.mean(a):.1f} | "
                    f"{statistics.mean(b):.1f} | {diff} | {ta:.0f} → {tb:.0f} ({tb / ta:.2f}x) |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
