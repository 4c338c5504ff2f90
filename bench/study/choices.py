"""What the study's searches chose, from the records alone: each pilot's best lr, the
frozen pilots' grids (one point past an end), the own-lr searches, full's missed floors,
and which runs are the protocol's (``claim_runs``)."""

from __future__ import annotations

import statistics

from bench.study.records import Result
from bench.study.runs import (
    CLAIM_TASKS,
    DENSE,
    DPS_SERVABLE,
    FLOORS,
    FULL_SERVABLE,
    ISSUE28,
    PILOT_SEED,
    PILOT_TASKS,
    SERVABLE_PILOT,
    SPARSE,
)

FROZEN_LRS = {"pasta": (1e-3, 3e-3, 1e-2), "prefix": (3e-3, 1e-2, 3e-2),
              "lora": (3e-4, 1e-3, 3e-3), "bitfit": (1e-3, 3e-3, 1e-2)}
# A frozen method's pilot whose best lr is an end of its 3 points gets one more point past
# that end (the next half-decade step), so no default is chosen at the edge of a search
# unexamined beyond it; 4 points at most, as full's and the servable pilot's searches.
FROZEN_EDGES = {"pasta": (3e-4, 3e-2), "prefix": (1e-3, 1e-1), "lora": (1e-4, 1e-2),
                "bitfit": (3e-4, 3e-2)}
SERVABLE_LRS = (1e-4, 3e-4, 1e-3, 3e-3)
PILOTS = ("full", *FROZEN_LRS, SERVABLE_PILOT, FULL_SERVABLE)  # each row a pilot chooses an lr for
OWN_LRS = (2e-5, 5e-5, 1e-4, 2e-4)  # full's search; around Child-Tuning's 4e-5 and DPS's 2e-5
# child-f's servable search: full's servable points (it trains every tunable weight densely
# before the cut, as full's servable recipe does; at child-d's 1e-3 its dense model stayed at
# chance on RTE, seed 0)
CHILD_F_SERVABLE_LRS = (2e-5, 5e-5, 1e-4, 2e-4)
# A sparse servable row losing more than this (mean of 3 seeds) to its paper recipe on a task
# gets plan servable-diag there: the frozen-backbone methods' longer schedule, one seed.
SERVABLE_COLLAPSE = 10.0


def pilot_best(results: list[Result], method: str) -> float | None:
    """The lr with the best mean headline metric over the pilot tasks (None: pilot unfinished;
    a frozen method's is unfinished until the point past an end, when due, is in too)."""
    if method in FROZEN_LRS:
        grid = frozen_grid(results, method)
        if len(grid) > len(FROZEN_LRS[method]) and grid != _done_lrs(results, method, grid):
            return None
    return _best_of(results, method)


def _done_lrs(results: list[Result], method: str, grid: tuple[float, ...]) -> tuple[float, ...]:
    """The lrs of ``grid`` whose pilot runs are in on every pilot task."""
    return tuple(lr for lr in grid if {r.task for r in results if r.name == method and r.pilot
                                       and r.seed == 0 and r.lr == lr} >= set(PILOT_TASKS))


def _best_of(results: list[Result], method: str) -> float | None:
    by_lr: dict[float, list[float]] = {}
    for r in results:
        if r.name == method and r.seed == 0 and r.task in PILOT_TASKS and r.pilot:
            by_lr.setdefault(r.lr, []).append(r.value)
    done = {lr: v for lr, v in by_lr.items() if len(v) == len(PILOT_TASKS)}
    return max(done, key=lambda lr: statistics.mean(done[lr])) if done else None


def frozen_grid(results: list[Result], method: str) -> tuple[float, ...]:
    """The pilot lrs of frozen method ``method``: its 3 points, and once all 3 are in and
    the best is an end, the point past that end (FROZEN_EDGES)."""
    grid = FROZEN_LRS[method]
    if _done_lrs(results, method, grid) != grid:
        return grid
    # (the best among the 3, not the 4: the extension is decided once)
    best = _best_of([r for r in results if r.lr in grid], method)
    low, high = FROZEN_EDGES[method]
    if best == grid[0]:
        return (low, *grid)
    if best == grid[-1]:
        return (*grid, high)
    return grid


def _best_complete(by_lr: dict[float, dict[str, float]], grid: tuple[float, ...]) -> float | None:
    """The lr of ``grid`` with the best mean over the pilot tasks; None until every point
    is in on every pilot task."""
    if any(len(by_lr.get(lr, {})) < len(PILOT_TASKS) for lr in grid):
        return None
    return max(grid, key=lambda lr: statistics.mean(by_lr[lr].values()))


def servable_search_best(results: list[Result], diag: list[Result],
                         name: str = DPS_SERVABLE) -> float | None:
    """The best lr of ``name``'s own search over SERVABLE_LRS (mean of the pilot tasks, seed
    0, 3 epochs): its run at the servable pilot's lr (a claims run) and plan servable-diag's
    at the others; None until every point is in on every pilot task."""
    by_lr: dict[float, dict[str, float]] = {}
    for r in [*results, *diag]:
        if (r.name == name and r.seed == 0 and r.task in PILOT_TASKS
                and r.epochs == 3):
            by_lr.setdefault(r.lr, {})[r.task] = r.value
    return _best_complete(by_lr, SERVABLE_LRS)


def own_lr_best(results: list[Result], method: str) -> float | None:
    """The best lr of ``method``'s own search (plan pilot-own-lr; mean of RTE and MRPC);
    None until every point is in on both."""
    by_lr: dict[float, dict[str, float]] = {}
    for r in results:
        if r.plan == "pilot-own-lr" and r.name == method and r.seed == PILOT_SEED:
            by_lr.setdefault(r.lr, {})[r.task] = r.value
    return _best_complete(by_lr, OWN_LRS)


def child_f_servable_best(results: list[Result]) -> float | None:
    """The best lr of child-f's servable search (seed PILOT_SEED, mean of RTE and MRPC, the
    default's run included); None until every point is in on both."""
    by_lr: dict[float, dict[str, float]] = {}
    for r in results:
        if r.plan == "servable-defaults" and r.name == "child-f@0.05" and r.seed == PILOT_SEED:
            by_lr.setdefault(r.lr, {})[r.task] = r.value
    if len(by_lr) <= len(CHILD_F_SERVABLE_LRS) or any(len(v) < len(PILOT_TASKS) for v in by_lr.values()):
        return None
    return max(by_lr, key=lambda lr: statistics.mean(by_lr[lr].values()))


def missed_floors(results: list[Result], lr: float) -> list[str]:
    """Tasks where full's mean over the seeds run so far (at ``lr``, the protocol's 3
    epochs) is under the floor; the floors are on the mean of seeds. Tasks without a full
    run yet are not counted."""
    out = []
    for task, floor in FLOORS.items():
        vals = [r.value for r in results if r.name == "full" and r.task == task
                and r.lr == lr and r.epochs == 3 and r.plan not in ISSUE28]
        if vals and statistics.mean(vals) < floor:
            out.append(task)
    return out


def full_missed_floors(results: list[Result]) -> list[str]:
    """The floors full misses at its pilot's lr ([] before the pilot has chosen)."""
    lr = pilot_best(results, "full")
    return missed_floors(results, lr) if lr is not None else []


def claim_runs(results: list[Result]) -> list[Result]:
    """The runs of the protocol: every non-pilot run, and each pilot's run at the lr it
    chose (seed 0), which is the later plans' own seed-0 run of that row (the same key, so
    it was never run again): full's for the claims, pasta's for claims-pasta, the servable
    pilot's for plan servable, the frozen methods' for guidance (the servable pilot's
    frozen-pooler rows are an ablation, pilot only). Once the servable pilot
    has chosen, servable sparse runs at another lr (run before it) are left out."""
    best = {name: pilot_best(results, name) for name in PILOTS}
    slr = best.get(SERVABLE_PILOT)
    return [r for r in results if r.plan not in ISSUE28 and (not r.pilot or (
        r.seed == 0 and r.lr == best.get(r.name))) and not (
        slr is not None and "@" in r.name and r.lr != slr)]


def servable_costs(results: list[Result]) -> dict[tuple[str, str], list[float]]:
    """Each servable row's cost on each task: its runs minus the paper recipe's run of the
    same method, task and seed (a list over the seeds both have), by (row name, task)."""
    claims = claim_runs(results)
    paper = {(r.method, r.task, r.seed): r.value for r in claims
             if r.recipe == "paper" and r.name == r.method}
    out: dict[tuple[str, str], list[float]] = {}
    for r in claims:
        base = paper.get((r.method, r.task, r.seed))
        if r.recipe == "servable" and r.method in DENSE and base is not None:
            out.setdefault((r.name, r.task), []).append(r.value - base)
    return out


def servable_collapses(results: list[Result]) -> list[str]:
    """Tasks where a sparse servable row at density 0.05, over its 3 seeds, loses more than
    SERVABLE_COLLAPSE points to its paper recipe (plan servable-diag looks at why)."""
    costs = servable_costs(results)
    return [t for t in CLAIM_TASKS if any(
        len(d) == 3 and statistics.mean(d) < -SERVABLE_COLLAPSE
        for d in (costs.get((f"{m}@0.05", t), []) for m in SPARSE))]
