"""The evidence behind polyhead/trainer/table.py's defaults.

Each default that names the study as its evidence (``Defaults.evidence``) follows one of
the study's searches, in the study of its own precision: ``CHOOSERS`` says which. The
tests hold the table to the committed results through ``mismatches`` (every evidenced lr
is its search's choice) and ``cited_runs`` (the runs that trained a default's
configuration, which `polyhead train` with nothing else set must rebuild).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.study.choices import (
    FROZEN_LRS,
    child_f_servable_best,
    claim_runs,
    pilot_best,
    servable_search_best,
)
from bench.study.records import Result, load_results
from bench.study.runs import DENSE, DPS_SERVABLE, FULL_SERVABLE, SERVABLE_PILOT

DPS_SEARCH = "dps servable search"  # plan servable-diag's search (servable_search_best)
CHILD_F_SEARCH = "child-f servable search"  # plan servable-defaults' search (child_f_servable_best)
# (method, recipe) -> the search that chooses its lr: a pilot's row name, or one of the two above
CHOOSERS: dict[tuple[str, str], str] = {
    **{(m, "paper"): "full" for m in DENSE},  # the papers' shared schedule: full's pilot
    **{(m, r): m for m in FROZEN_LRS for r in ("servable", "paper")},  # each its own pilot
    ("child-d", "servable"): SERVABLE_PILOT,
    ("child-f", "servable"): CHILD_F_SEARCH,
    ("dps", "servable"): DPS_SEARCH,
    ("full", "servable"): FULL_SERVABLE,
}


def chosen_lr(method: str, recipe: str, runs: list[Result], diag: list[Result]) -> float | None:
    """The lr the study chose for ``method``'s ``recipe`` (``runs`` and ``diag`` of one
    precision); None while its search is incomplete or when no search chooses it."""
    chooser = CHOOSERS.get((method, recipe))
    if chooser == DPS_SEARCH:
        return servable_search_best(runs, diag)
    if chooser == CHILD_F_SEARCH:
        return child_f_servable_best(runs)
    return None if chooser is None else pilot_best(runs, chooser)


def mismatches(path: Path) -> list[str]:
    """Each default with evidence whose lr is not its search's choice in the results at
    ``path`` (in the default's precision), one line each; [] when the table holds."""
    from polyhead.trainer.table import METHODS

    out = []
    for m in METHODS.values():
        for recipe in m.recipes:
            d = m.defaults(recipe)
            if not d.evidence:
                continue
            runs = load_results(path, precision=d.precision)
            best = chosen_lr(m.name, recipe, runs, load_results(path, diag=True, precision=d.precision))
            if best != d.lr:
                out.append(f"{m.name} ({recipe}): default lr {d.lr:g}, the {d.precision} study chose "
                           + ("nothing yet" if best is None else f"{best:g}")
                           + ("" if (m.name, recipe) in CHOOSERS else " (no search chooses it)"))
    return out


def servable_structure(config: dict[str, Any]) -> str:
    """The mask structure `polyhead train` gives a run of this method and recipe."""
    from polyhead.trainer.algos.sparse_budget import SERVABLE_STRUCTURES

    if config["recipe"] != "servable":
        return "entries"
    return SERVABLE_STRUCTURES.get(config["method"], "entries")


def cited_runs(path: Path) -> list[Result]:
    """The runs in ``path`` that trained a default's configuration: the protocol's runs
    (and dps's servable search run at its default lr, and the column-mask check's runs)
    whose method has an evidenced default for their recipe and precision, at density 0.05,
    with the mask structure `polyhead train` gives them, without a frozen pooler and
    without issue 11's Child-Tuning runs at a warm-up its code never used."""
    from polyhead.trainer.table import METHODS

    runs = [r for p in ("fp32", "bf16") for r in claim_runs(load_results(path, precision=p))]
    dps = METHODS["dps"].defaults("servable")
    searched = [r for r in load_results(path, diag=True, precision=dps.precision)
                if r.name == DPS_SERVABLE and r.lr == dps.lr]
    # the servable column masks, child-d's and dps's default: their check's runs
    columns = [r for p in ("fp32", "bf16") for r in load_results(path, precision=p)
               if r.plan == "structure-seeds"]
    out = []
    for r in [*runs, *searched, *columns]:
        c = r.config
        d = METHODS[c["method"]].defaults(c["recipe"])
        if not d.evidence or d.precision != r.precision or c["density"] != 0.05:
            continue
        if r.name == DPS_SERVABLE and r.plan != "diag":
            continue  # dps's servable seeds ran at the shared servable lr, before its own search
        if c.get("pooler") or c.get("mask_structure", "entries") != servable_structure(c):
            continue  # ablations, set by hand (the other mask structure, a frozen pooler)
        if c["method"] in ("child-d", "child-f") and c["recipe"] == "paper" and c["warmup"] != d.warmup:
            continue  # issue 11's claims ran Child-Tuning at 10 % warm-up; its code has none (the default)
        out.append(r)
    return out
