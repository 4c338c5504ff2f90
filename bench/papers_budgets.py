"""Issue 28's tables: the papers at their own budgets, from the accuracy study's records.

Each table reads the runs its plan names by key, so a run made earlier under the same key
(full's claims at 1e-4, dps's servable seed 0 from servable-diag) counts where it belongs.
Intervals are 95 % t-intervals over seeds, with their degrees of freedom.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from typing import Any

from bench.study import stats
from bench.study.choices import child_f_servable_best, claim_runs, own_lr_best
from bench.study.plans import PlanRefused, plan
from bench.study.records import Result
from bench.study.runs import CLAIM_TASKS, DENSE, PILOT_SEED, PILOT_TASKS, TASKS, Run, best_dev


def _found(name: str, args: argparse.Namespace, results: list[Result],
           everything: list[Result]) -> list[tuple[Run, Result]]:
    """(run, its record) for each run of plan ``name`` that is done."""
    try:
        runs = plan(name, args, results)
    except PlanRefused:
        return []
    done = {r.key: r for r in everything}
    return [(run, done[run.key]) for run in runs if run.key in done]


def interval(d: list[float]) -> str:
    """mean [95 % t-interval] (df), or the single value."""
    if not d:
        return "—"
    ci = stats.t_interval(d)
    if ci is None:
        return f"{d[0]:+.2f} (1 seed)"
    return f"{ci[0]:+.2f} [{ci[1]:+.2f}, {ci[2]:+.2f}] (df {len(d) - 1})"


def _cell(vals: list[float]) -> str:
    """The study's cell (mean ± sd, or the one value) with the number of seeds."""
    return f"{stats.cell(vals)} ({len(vals)})" if vals else stats.cell(vals)


def servable_defaults_table(found: list[tuple[Run, Result]],
                            paper: dict[tuple[str, str, int], float]) -> str:
    """Each servable default's runs: mean ± sd (seeds) per task, each seed's value, and the
    paired difference from the same method's paper recipe (``paper``: by method, task, seed)."""
    rows = ["| row | lr | epochs | task | mean ± sd (seeds) | seed by seed | − paper recipe, same seeds |",
            "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, float, float, str], dict[int, float]] = {}
    for run, r in found:  # (a search's runs, on the pilot seed, are a row of their own)
        name = run.name + (" (search)" if run.seed == PILOT_SEED else "")
        groups.setdefault((name, run.method, run.lr, run.epochs, run.task), {})[run.seed] = r.value
    for (name, method, lr, ep, task), by_seed in groups.items():
        seeds = ", ".join(f"{s}: {v:.1f}" for s, v in sorted(by_seed.items()))
        d = [v - paper[(method, task, s)] for s, v in sorted(by_seed.items()) if (method, task, s) in paper]
        rows.append(f"| {name} | {lr:g} | {ep:g} | {TASKS[task]} | {_cell(list(by_seed.values()))} | "
                    f"{seeds} | {interval(d)} |")
    return "\n".join(rows)


def paper_values(results: list[Result]) -> dict[tuple[str, str, int], float]:
    """Issue 11's paper-recipe claims runs, by (method, task, seed)."""
    return {(r.method, r.task, r.seed): r.value for r in claim_runs(results)
            if r.recipe == "paper" and r.name == r.method}


def own_lr_pilot_table(found: list[tuple[Run, Result]]) -> str:
    rows = ["| method | lr | RTE | MRPC | mean |", "|---|---|---|---|---|"]
    cells: dict[tuple[str, float], dict[str, float]] = {}
    for run, r in found:
        cells.setdefault((run.method, run.lr), {})[run.task] = r.value
    for (m, lr), v in cells.items():
        mean = f"{statistics.mean(v.values()):.1f}" if len(v) == len(PILOT_TASKS) else "—"
        rows.append(f"| {m} | {lr:g} | " + " | ".join(
            f"{v[t]:.1f}" if t in v else "—" for t in PILOT_TASKS) + f" | {mean} |")
    return "\n".join(rows)


def paired_table(found: list[tuple[Run, Result]], label: Any, ref: str) -> str:
    """Rows by ``label(run)``: mean ± sd per claim task, and the paired difference from row
    ``ref`` (same task and seed) per task and on the 4-task average (per seed)."""
    vals: dict[str, dict[tuple[str, int], float]] = {}
    for run, r in found:
        vals.setdefault(label(run), {})[(run.task, run.seed)] = r.value
    tasks = CLAIM_TASKS
    rows = ["| row | " + " | ".join(TASKS[t] for t in tasks) + f" | − {ref}, 4-task avg |",
            "|" + "---|" * (len(tasks) + 2)]
    base = vals.get(ref, {})
    for name, v in vals.items():
        cells = [_cell([x for (t, _), x in v.items() if t == task]) for task in tasks]
        seeds = sorted({s for (_, s) in v})
        d = [statistics.mean(v[(t, s)] - base[(t, s)] for t in tasks) for s in seeds
             if all((t, s) in v and (t, s) in base for t in tasks)]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {'—' if name == ref else interval(d)} |")
    return "\n".join(rows)


def pasta_table(found: list[tuple[Run, Result]], every: int = 10) -> str:
    """PASTA at 150 epochs: the last epoch and the best dev epoch (as its code keeps), and
    the dev curve every ``every`` epochs."""
    rows = [f"| task | epochs | last | best (epoch) | dev every {every} epochs |", "|---|---|---|---|---|"]
    for run, r in found:
        hist = [h for h in r.dev_history if "epoch" in h]
        curve = ", ".join(f"{h['epoch']}: {100 * h[r.metric]:.1f}" for h in hist
                          if h["epoch"] % every == 0 or h["epoch"] == 1)
        best = best_dev(r.dev_history, r.metric)
        rows.append(f"| {TASKS[run.task]} | {len(hist)} | {r.value:.1f} | "
                    + (f"{best[1]:.1f} ({best[0]})" if best else "—") + f" | {curve} |")
    return "\n".join(rows)


def structure_seeds_table(found: list[tuple[Run, Result]], everything: list[Result]) -> str:
    """Whole columns against single weights (the run of the same key but the structure, from
    ``everything``, diagnostic runs included), per method and task over seeds, and on the
    4-task average per seed."""
    done = {r.key: r.value for r in everything}
    pairs: dict[str, dict[tuple[str, int], tuple[float, float]]] = {}
    for run, r in found:
        single = done.get(dataclasses.replace(run, structure="entries").key)
        if single is not None:
            pairs.setdefault(f"{run.method} @ {run.lr:g}", {})[(run.task, run.seed)] = (single, r.value)
    rows = ["| method @ lr | task | single weights | whole columns | columns − single |",
            "|---|---|---|---|---|"]
    for name, by in pairs.items():
        for t in [t for t in CLAIM_TASKS if any(k[0] == t for k in by)]:
            v = [by[k] for k in sorted(by) if k[0] == t]
            rows.append(f"| {name} | {TASKS[t]} | {_cell([e for e, _ in v])} | {_cell([c for _, c in v])} | "
                        f"{interval([c - e for e, c in v])} |")
        seeds = sorted({s for _, s in by})
        d = [statistics.mean(by[(t, s)][1] - by[(t, s)][0] for t in CLAIM_TASKS) for s in seeds
             if all((t, s) in by for t in CLAIM_TASKS)]
        rows.append(f"| {name} | 4-task average, per seed | | | {interval(d)} |")
    return "\n".join(rows)


def report(results: list[Result], args: argparse.Namespace) -> str:
    """Issue 28's section of the study's report ('' when none of its runs is in)."""
    def got(name: str) -> list[tuple[Run, Result]]:
        return _found(name, args, results, results)

    parts: list[str] = []
    if sd := got("servable-defaults"):
        parts += ["Servable defaults (plan servable-defaults): dev metric x100", "",
                  servable_defaults_table(sd, paper_values(results))]
        best = child_f_servable_best(results)
        if best is not None:
            parts += ["", f"child-f's servable search (seed {PILOT_SEED}, mean of RTE and MRPC): "
                      f"best {best:g}"]
    if pilot := got("pilot-own-lr"):
        own = {m: own_lr_best(results, m) for m in DENSE}
        parts += ["", f"Each dense method's own lr search (seed {PILOT_SEED}, no claim uses it; "
                  "Child-Tuning without warm-up): best " + ", ".join(
                      f"{m} {lr:g}" for m, lr in own.items() if lr is not None), "",
                  own_lr_pilot_table(pilot)]
    if claims := got("claims-own-lr"):
        parts += ["", "The claims at each method's own lr (seeds 0-2)", "",
                  paired_table(claims, lambda r: f"{r.method} @ {r.lr:g}", _full_label(claims))]
    if eh := got("eh-ft"):
        parts += ["", "EH-FT as published against its fair baseline (the same MLP head, random; the "
                  "same stage 2)", "", paired_table(eh, lambda r: r.name, "eh-ft")]
    if cols := got("structure-seeds"):
        parts += ["", "Whole-column masks at the servable defaults (density 0.05, each method's own lr), "
                  "against single weights, same seeds (issue 29)", "", structure_seeds_table(cols, results)]
    if pasta := got("pasta-paper"):
        parts += ["", "PASTA at its recipe (batch 32, up to 150 epochs, seed 0)", "", pasta_table(pasta)]
    return "\n".join(parts).strip()


def _full_label(found: list[tuple[Run, Result]]) -> str:
    return next((f"full @ {run.lr:g}" for run, _ in found if run.method == "full"), "full")


def curves_svg(found: list[tuple[Run, Result]], width: int = 640, height: int = 220) -> str:
    """Dev metric x100 against epoch, one panel per run (PASTA's curves), as a standalone
    SVG (no plotting library on this machine): each panel's y axis spans its own range."""
    panels = []
    for i, (run, r) in enumerate(found):
        pts = [(h["epoch"], 100 * h[r.metric]) for h in r.dev_history if "epoch" in h]
        if not pts:
            continue
        top = i * (height + 30)
        lo, hi = min(v for _, v in pts), max(v for _, v in pts)
        span, last = (hi - lo) or 1.0, max(e for e, _ in pts)
        xy = " ".join(f"{40 + (width - 60) * (e - 1) / max(1, last - 1):.1f},"
                      f"{top + 20 + (height - 40) * (hi - v) / span:.1f}" for e, v in pts)
        best = best_dev(r.dev_history, r.metric)
        title = (f"{TASKS[run.task]} ({r.metric}), {len(pts)} epochs: last {pts[-1][1]:.1f}"
                 + (f", best {best[1]:.1f} at epoch {best[0]}" if best else ""))
        panels.append(
            f'<text x="40" y="{top + 14}" font-size="12">{title}</text>'
            f'<text x="2" y="{top + 24}" font-size="10">{hi:.1f}</text>'
            f'<text x="2" y="{top + height - 16}" font-size="10">{lo:.1f}</text>'
            f'<rect x="40" y="{top + 20}" width="{width - 60}" height="{height - 40}" '
            'fill="none" stroke="#ccc"/>'
            f'<polyline points="{xy}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    total = max(1, len(panels)) * (height + 30)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}">'
            + "".join(panels) + "</svg>\n")


def write_curves(path: Any, results: list[Result], args: argparse.Namespace) -> int:
    """Write plan pasta-paper's curves to ``path``; the number of runs drawn."""
    found = _found("pasta-paper", args, results, results)
    path.write_text(curves_svg(found))
    return len(found)
