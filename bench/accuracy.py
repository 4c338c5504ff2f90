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
  structure-seeds  (issue 29) whole columns at each sparse method's servable default
                (density 0.05, its own lr), seeds 0-2 on the claim tasks, paired with the
                single-weight runs: child-d and dps, then child-f once its search chose
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
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.study.plans import PLANS
from bench.study.runs import FLOORS

# The package (bench/study/): runs.py (the Run record, its key, its TrainConfig and record),
# plans.py (the plan table and what each depends on), runner.py (workers, lock files,
# resume), choices.py (what the searches chose), stats.py and report.py (the tables).


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/work/shared/data/glue"))
    p.add_argument("--results", type=Path, required=True, help="JSONL results file (appended)")
    p.add_argument("--plan", action="append", default=[],
                   choices=tuple(PLANS),
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.table_only:
        if not args.plan:
            print("bench.accuracy: error: give --plan (or --table-only)", file=sys.stderr)
            return 2
        from bench.study.runner import execute

        execute(args)
    from bench.study.report import print_report

    print_report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
