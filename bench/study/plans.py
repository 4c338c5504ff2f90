"""The study's plans: a table of plan functions, each with the plans whose results it
needs beside it (``Plan.depends``: a pilot's choice, full's floors, a search's best).

A plan function maps the records so far (of the study's precision) to the runs it wants,
or raises PlanRefused while what it depends on is not in yet. ``args`` carries the
command line's settings (--pilot-lrs, --frozen-epochs, --precision, --results,
--accept-missed-floor).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

from bench.study.choices import (
    CHILD_F_SERVABLE_LRS,
    OWN_LRS,
    SERVABLE_LRS,
    child_f_servable_best,
    frozen_grid,
    missed_floors,
    own_lr_best,
    pilot_best,
    servable_collapses,
    servable_search_best,
)
from bench.study.records import Result, load_results
from bench.study.runs import (
    CLAIM_TASKS,
    DENSE,
    PILOT_SEED,
    PILOT_TASKS,
    SERVABLE_PILOT,
    SPARSE,
    SST2_ROWS,
    Run,
    dense_run,
    rows,
)

EHFT_LR = 1e-4  # eh-ft's stage 2 (polyhead/trainer/table.py; the whole-model methods' lr)
EHFT_ROWS = (None, "pet:lora", "pet:bitfit")  # the fair baseline, then EH-FT with each PET
PASTA_TASKS = ("cola", "rte", "mrpc", "stsb")  # cheapest first (CoLA's sentences are short)

PlanFn = Callable[[argparse.Namespace, list[Result]], list[Run]]


class PlanRefused(Exception):
    """A plan whose preconditions (a finished pilot, the floors) are not met yet."""


@dataclasses.dataclass(frozen=True)
class Plan:
    runs: PlanFn
    depends: tuple[str, ...] = ()  # plans whose runs in flight hold this one (another worker's)
    extending: bool = False  # a pilot whose search may grow (frozen_grid): planned twice
    gated: bool = False  # waits for full's floors (floor_gate)


def plan(name: str, args: argparse.Namespace, results: list[Result]) -> list[Run]:
    """Plan ``name``'s runs, given ``results`` of the study's precision."""
    precision = getattr(args, "precision", "fp32")
    entry = PLANS[name]
    if entry.gated:
        floor_gate(name, args, results, _full_lr(name, results))
    return [dataclasses.replace(r, precision=precision) for r in entry.runs(args, results)]


def _full_lr(name: str, results: list[Result]) -> float:
    lr = pilot_best(results, "full")
    if lr is None:
        raise PlanRefused(f"plan {name!r} needs the full pilot first (--plan pilot-full)")
    return lr


def _servable_lr(name: str, results: list[Result]) -> float:
    slr = pilot_best(results, SERVABLE_PILOT)
    if slr is None:
        raise PlanRefused(f"plan {name!r} needs the servable pilot first (--plan pilot-servable)")
    return slr


def diag_runs(args: argparse.Namespace) -> list[Result]:
    """The diagnostic runs in --results, of the study's precision ([] without a file)."""
    if not getattr(args, "results", None):
        return []
    return load_results(args.results, diag=True, precision=getattr(args, "precision", "fp32"))


def floor_gate(name: str, args: argparse.Namespace, results: list[Result], lr: float) -> list[str]:
    """The missed floors plan ``name`` runs with (each accepted by --accept-missed-floor,
    with plan diag's runs on it done); PlanRefused for any other missed floor."""
    missed = missed_floors(results, lr)
    accepted = set(getattr(args, "accept_missed_floor", []) or [])
    diag = diag_runs(args) if missed else []
    refused = [t for t in missed if t not in accepted]
    if refused:
        raise PlanRefused(f"full's mean of seeds at lr {lr:g} misses the floor on {', '.join(refused)}; "
                          f"find out why (--plan diag) before running plan {name!r}, or run it with "
                          f"--accept-missed-floor once the why is on record")
    undiagnosed = [t for t in missed if {r.seed for r in diag if r.task == t and r.name == "full"
                                         and r.lr == lr} != {0, 1, 2}]
    if undiagnosed:
        raise PlanRefused(f"--accept-missed-floor {' '.join(undiagnosed)}: plan diag's runs on it "
                          f"(10 epochs, seeds 0-2) are not all in the results yet; run --plan diag first")
    return missed


def _pilot_lrs(args: argparse.Namespace) -> list[float]:
    """full's search (--pilot-lrs), shared by both its recipes' pilots."""
    return [float(x) for x in args.pilot_lrs.split(",")]


# -- issue 11: the claims ------------------------------------------------------------------


def pilot_full(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    return [Run(t, "full", lr=lr) for t in PILOT_TASKS for lr in _pilot_lrs(args)]


def diag(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    """Why full misses a floor: the seeds' spread, and a longer schedule."""
    lr = pilot_best(results, "full")
    if lr is None:
        raise PlanRefused("plan 'diag' needs the full pilot first (--plan pilot-full)")
    missed = missed_floors(results, lr)
    # (the seed runs are the claims' own full runs: recorded under "claims")
    return [Run(t, "full", lr=lr, seed=s, max_train=rows(t)) for t in missed for s in (1, 2)] + [
        Run(t, "full", lr=lr, epochs=10, seed=s, max_train=rows(t), diag=True)
        for t in missed for s in (0, 1, 2)]


def claims_full(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    """full's seeds first: the floors are on their mean."""
    lr = _full_lr("claims-full", results)
    return [Run(t, "full", lr=lr, seed=s, max_train=rows(t))
            for s in (0, 1, 2) for t in (*CLAIM_TASKS, "sst2")]


def claims(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    lr = _full_lr("claims", results)
    runs = []
    for seed in (0, 1, 2):
        for t in CLAIM_TASKS:
            # (Child-Tuning at the 10 % warm-up these claims ran with; its paper
            # recipe is now without: plan claims-own-lr)
            runs += [Run(t, m, lr=lr, seed=seed, warmup=0.1) for m in DENSE]
            runs.append(Run(t, "full", lr=lr, seed=seed, head_init="pet:lora"))
        runs.append(Run("sst2", "full", lr=lr, seed=seed, max_train=SST2_ROWS))
    return runs


def _frozen_pilot(methods: tuple[str, ...]) -> PlanFn:
    def runs(args: argparse.Namespace, results: list[Result]) -> list[Run]:
        return [Run(t, m, recipe="servable", lr=lr, epochs=args.frozen_epochs)
                for m in methods for t in PILOT_TASKS for lr in frozen_grid(results, m)]
    return runs


def claims_pasta(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    pasta_lr = pilot_best(results, "pasta")
    if pasta_lr is None:
        raise PlanRefused("plan 'claims-pasta' needs the pasta pilot first (--plan pilot-pasta)")
    return [Run(t, "pasta", recipe="servable", lr=pasta_lr, epochs=args.frozen_epochs, seed=seed,
                max_train=rows(t)) for seed in (0, 1, 2) for t in (*CLAIM_TASKS, "sst2")]


def guidance(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    lr = _full_lr("guidance", results)
    runs = []
    for m in ("prefix", "lora", "bitfit"):
        mlr = pilot_best(results, m)
        if mlr is not None:
            runs += [Run(t, m, recipe="servable", lr=mlr, epochs=args.frozen_epochs) for t in CLAIM_TASKS]
    return runs + [Run(t, "full", lr=lr, head_init="pet:bitfit") for t in CLAIM_TASKS]


# -- the servable recipe -------------------------------------------------------------------


def pilot_full_servable(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    """full's servable recipe, on full's own search."""
    return [Run(t, "full", recipe="servable", lr=lr) for t in PILOT_TASKS for lr in _pilot_lrs(args)]


def pilot_servable(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    return [Run(t, "child-d", recipe="servable", lr=lr, density=0.05)
            for t in PILOT_TASKS for lr in SERVABLE_LRS] + [  # and what the trained pooler does
        Run(t, "child-d", recipe="servable", lr=lr, density=0.05, pooler="frozen")
        for t in PILOT_TASKS for lr in SERVABLE_LRS[::2]]


def servable(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    slr = _servable_lr("servable", results)
    runs = [Run(t, m, recipe="servable", lr=slr, seed=s, density=0.05)
            for s in (0, 1, 2) for t in CLAIM_TASKS for m in SPARSE]
    return runs + [Run(t, m, recipe="servable", lr=slr, density=0.01) for t in CLAIM_TASKS for m in SPARSE]


def structure(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    """What column-structured masks cost against single weights."""
    slr = _servable_lr("structure", results)
    return [Run(t, m, recipe="servable", lr=slr, density=0.01, structure=st)
            for t in PILOT_TASKS for m in SPARSE for st in ("entries", "columns")]


def servable_diag(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    """Where the servable recipe collapses: is it the schedule? Is it the lr?"""
    slr = _servable_lr("servable-diag", results)
    collapsed = servable_collapses(results)
    runs = [Run(t, m, recipe="servable", lr=slr, epochs=args.frozen_epochs, density=0.05, diag=True)
            for t in collapsed for m in SPARSE]
    # and dps, which serves at child-d's pilot's lr, at that pilot's other points
    runs += [Run(t, "dps", recipe="servable", lr=lr, density=0.05, diag=True)
             for t in PILOT_TASKS for lr in SERVABLE_LRS if lr != slr and collapsed]
    # then, where that search chose another lr, dps at it on the other claim tasks (seed 0)
    best = servable_search_best(results, diag_runs(args))
    return runs + [Run(t, "dps", recipe="servable", lr=best, density=0.05, diag=True)
                   for t in CLAIM_TASKS if t not in PILOT_TASKS and best not in (None, slr)]


def servable_defaults(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    """Each servable default in 3 seeds: child-f's first seed at the servable pilot's lr
    (never run before), dps on the claim tasks, child-d on CoLA at the longer schedule (its
    3-epoch default stays at the majority answer there); then child-f's own lr search on the
    pilot seed and, once it has chosen, child-f's 3 seeds there."""
    slr = pilot_best(results, SERVABLE_PILOT)
    dlr = servable_search_best(results, diag_runs(args))
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


# -- issue 28: the papers at their own budgets ---------------------------------------------


def pilot_own_lr(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    """Each dense method's own search, full's included (re-run off the claims' seeds):
    OWN_LRS, seed PILOT_SEED, RTE and MRPC."""
    return [dense_run(t, m, lr, PILOT_SEED) for m in DENSE for lr in OWN_LRS for t in PILOT_TASKS]


def claims_own_lr(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    """Seeds 0-2 on the claim tasks, each dense method at its own search's best lr (a
    method whose search is not complete waits)."""
    best = {m: own_lr_best(results, m) for m in DENSE}
    if all(lr is None for lr in best.values()):
        raise PlanRefused("plan 'claims-own-lr' needs plan pilot-own-lr's searches first")
    return [dense_run(t, m, lr, s) for s in (0, 1, 2) for t in CLAIM_TASKS
            for m, lr in best.items() if lr is not None]


def eh_ft(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    """EH-FT as published against its fair baseline (the same MLP head, random; the same
    stage 2), 3 seeds, the claim tasks; stage 1 at the paper's epochs for the task."""
    from polyhead.trainer.algos.eh_ft import stage1_epochs

    return [Run(t, "eh-ft", recipe="paper", lr=EHFT_LR, seed=s, batch=32, head_init=h,
                head_init_epochs=None if h is None else stage1_epochs(t))
            for s in (0, 1, 2) for t in CLAIM_TASKS for h in EHFT_ROWS]


def structure_seeds(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    """(issue 29) Whole-column masks at each sparse method's servable default (density 0.05,
    its own lr), seeds 0-2 on the claim tasks, paired with the single-weight runs of the same
    key but the structure (plans servable, servable-diag, servable-defaults): does the seed-0
    check of plan structure hold, so that columns can be the default? child-d and dps first
    (their single-weight seeds are all in), then child-f once its own search has chosen."""
    slr = _servable_lr("structure-seeds", results)
    dlr = servable_search_best(results, diag_runs(args))
    if dlr is None:
        raise PlanRefused("plan 'structure-seeds' needs dps's own servable search (--plan servable-diag)")
    flr = child_f_servable_best(results)
    lrs = {"child-d": slr, "dps": dlr} | ({} if flr is None else {"child-f": flr})
    return [Run(t, m, recipe="servable", lr=lr, seed=s, density=0.05, structure="columns")
            for m, lr in lrs.items() for s in (0, 1, 2) for t in CLAIM_TASKS]


def pasta_paper(args: argparse.Namespace, results: list[Result]) -> list[Run]:
    """PASTA's paper recipe (150 epochs, batch 32, every epoch's dev metric) at its pilot's
    lr, seed 0, the claim tasks (checkpointed each epoch: a stopped run resumes)."""
    lr = pilot_best(results, "pasta")
    if lr is None:
        raise PlanRefused("plan 'pasta-paper' needs the pasta pilot first (--plan pilot-pasta)")
    return [Run(t, "pasta", recipe="paper", lr=lr, epochs=150, batch=32) for t in PASTA_TASKS]


_FLOORED = ("pilot-full", "claims-full", "diag")  # what full's floors need
# in --plan's choices order (the order the study runs them is the command line's)
PLANS: dict[str, Plan] = {
    "pilot-full": Plan(pilot_full),
    "diag": Plan(diag, ("pilot-full", "claims-full")),
    "claims-full": Plan(claims_full, ("pilot-full",)),
    "claims": Plan(claims, _FLOORED, gated=True),
    "pilot-pasta": Plan(_frozen_pilot(("pasta",)), extending=True),
    "claims-pasta": Plan(claims_pasta, (*_FLOORED, "pilot-pasta"), gated=True),
    "pilot-frozen": Plan(_frozen_pilot(("prefix", "lora", "bitfit")), extending=True),
    "pilot-servable": Plan(pilot_servable),
    "pilot-full-servable": Plan(pilot_full_servable),
    "servable": Plan(servable, ("pilot-servable",)),
    "servable-diag": Plan(servable_diag, ("pilot-servable", "servable")),
    "guidance": Plan(guidance, (*_FLOORED, "pilot-frozen"), gated=True),
    "structure": Plan(structure, ("pilot-servable",)),
    "servable-defaults": Plan(servable_defaults, ("pilot-servable", "servable-diag")),
    "pilot-own-lr": Plan(pilot_own_lr),
    "claims-own-lr": Plan(claims_own_lr, ("pilot-own-lr",)),
    "eh-ft": Plan(eh_ft),
    "pasta-paper": Plan(pasta_paper, ("pilot-pasta",)),
    "structure-seeds": Plan(structure_seeds, ("pilot-servable", "servable-diag")),  # child-f: once chosen
}
