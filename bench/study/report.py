"""The study's report: its tables, from the results file alone (mean ± sd over seeds, each
method's paired difference from ``full`` with a 95 % t-interval, the papers' claims)."""

from __future__ import annotations

import argparse
import dataclasses
import statistics

from bench.study.choices import (
    PILOTS,
    claim_runs,
    full_missed_floors,
    pilot_best,
    servable_costs,
    servable_search_best,
)
from bench.study.records import Result, load_results
from bench.study.runs import (
    CLAIM_TASKS,
    DENSE,
    DPS_SERVABLE,
    FLOORS,
    ISSUE28,
    METRIC,
    PILOT_TASKS,
    SERVABLE_PILOT,
    TASKS,
    best_dev,
)
from bench.study.stats import cell, diff_cell, paired, per_seed_means, t_interval


def pilot_table(results: list[Result]) -> str:
    rows = ["| method | lr | epochs | " + " | ".join(f"{TASKS[t]} ({METRIC[t]})" for t in PILOT_TASKS) +
            " | mean | s/run | tokens/s |", "|" + "---|" * (len(PILOT_TASKS) + 6)]
    keys = sorted({(r.name, r.lr, r.epochs) for r in results if r.pilot})
    for name, lr, ep in keys:
        rs = {r.task: r for r in results if r.pilot and r.name == name and r.lr == lr}
        cells = [f"{rs[t].value:.1f} (best ep {_best_epoch(rs[t])})" if t in rs else "—"
                 for t in PILOT_TASKS]
        vals = [rs[t].value for t in PILOT_TASKS if t in rs]
        mean = f"{statistics.mean(vals):.1f}" if len(vals) == len(PILOT_TASKS) else "—"
        secs = statistics.mean(r.seconds for r in rs.values())
        tps = statistics.mean(r.tokens_per_s for r in rs.values())
        rows.append(f"| {name} | {lr:g} | {ep:g} | " + " | ".join(cells) +
                    f" | {mean} | {secs:.0f} | {tps:.0f} |")
    return "\n".join(rows)


def _best_epoch(r: Result) -> str:
    best = best_dev(r.dev_history, r.metric)
    return "?" if best is None else f"{best[0]}: {best[1]:.1f}"


def main_table(results: list[Result]) -> str:
    claims = claim_runs(results)
    tasks = [t for t in TASKS if any(r.task == t for r in claims)]
    names = list(dict.fromkeys(r.name for r in claims))
    rows = ["| method | " + " | ".join(f"{TASKS[t]} ({METRIC[t]})" for t in tasks) +
            " | avg (claim tasks) | seeds | tokens/s | min/run |", "|" + "---|" * (len(tasks) + 5)]
    for name in names:
        cells, means, seeds = [], [], set()
        for t in tasks:
            vals = [r.value for r in claims if r.name == name and r.task == t]
            seeds |= {r.seed for r in claims if r.name == name and r.task == t}
            cells.append(cell(vals))
            if vals and t in CLAIM_TASKS:
                means.append(statistics.mean(vals))
        avg = f"{statistics.mean(means):.1f}" if len(means) == len(CLAIM_TASKS) else "—"
        mine = [r for r in claims if r.name == name]
        tps = statistics.mean(r.tokens_per_s for r in mine)
        mins = statistics.mean(r.seconds for r in mine) / 60
        rows.append(f"| {name} | " + " | ".join(cells) +
                    f" | {avg} | {len(seeds)} | {tps:.0f} | {mins:.1f} |")
    return "\n".join(rows)


def paired_table(results: list[Result]) -> str:
    """Each method minus full on the same task and seed: mean [95 % t-interval]."""
    claims = claim_runs(results)
    full = {(r.task, r.seed): r.value for r in claims if r.name == "full"}
    tasks = [t for t in TASKS if any(r.task == t for r in claims)]
    rows = ["| method − full | " + " | ".join(TASKS[t] for t in tasks) + " | 4-task avg |",
            "|" + "---|" * (len(tasks) + 2)]
    for name in dict.fromkeys(r.name for r in claims):
        if name == "full":
            continue
        cells = [diff_cell(paired((((t, r.seed), r.value) for r in claims
                                   if r.name == name and r.task == t), full)) for t in tasks]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {diff_cell(avg_diffs(results, name))} |")
    return "\n".join(rows)


def avg_diffs(results: list[Result], name: str,
              tasks: tuple[str, ...] = CLAIM_TASKS, ref: str = "full") -> list[float]:
    """Per seed: the mean over ``tasks`` (the 4 claim tasks) of (name - ref), for seeds
    where both methods ran every task."""
    claims = claim_runs(results)
    base = {(r.task, r.seed): r.value for r in claims if r.name == ref}
    mine = [((r.task, r.seed), r.value) for r in claims if r.name == name]
    return per_seed_means(mine, base, tasks, sorted({r.seed for r in claims}))


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


def claims_lines(results: list[Result]) -> str:
    """Each claim: yes if the 95 % interval's lower end clears the bar, no if its upper end
    is below it, else not resolved."""
    missed = full_missed_floors(results)
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


def servable_table(results: list[Result]) -> str:
    """The servable recipe's cost: each servable run minus the paper recipe's run of the same
    method, task and seed, mean [95 % t-interval]."""
    costs = servable_costs(results)
    claims = claim_runs(results)
    names = list(dict.fromkeys(r.name for r in claims
                               if r.recipe == "servable" and r.method in DENSE))
    tasks = [t for t in TASKS if any(r.task == t for r in claims)]
    rows = ["| servable − paper | " + " | ".join(TASKS[t] for t in tasks) + " |",
            "|" + "---|" * (len(tasks) + 1)]
    for name in names:
        rows.append(f"| {name} | " + " | ".join(diff_cell(costs.get((name, t), [])) for t in tasks) + " |")
    return "\n".join(rows)


def structure_table(results: list[Result]) -> str:
    """Whole-column masks against single weights at the same density, method, task, seed."""
    runs = {(r.method, r.task, r.lr, r.seed, r.density,
             r.mask_structure): r.value
            for r in results if r.recipe == "servable" and not r.pilot}
    rows = ["| method @ density | task | lr | seed | single weights | whole columns | columns − single |",
            "|---|---|---|---|---|---|---|"]
    for (m, t, lr, s, d, st), v in sorted(runs.items()):
        if st != "columns" or (m, t, lr, s, d, "entries") not in runs:
            continue
        e = runs[(m, t, lr, s, d, "entries")]
        rows.append(f"| {m} @ {d:g} | {TASKS[t]} | {lr:g} | {s} | {e:.1f} | {v:.1f} | {v - e:+.1f} |")
    return "\n".join(rows)


def child_f_table(results: list[Result]) -> str:
    """child-f: the paper (dense) score and the servable cut of the same run. Runs before the
    cut kept the trained pooler (no ``cut_rule``) reverted it to the backbone's."""
    rows = ["| task | pooler in the cut | runs | child-f (dense) | servable cut (density 0.05) | cost |",
            "|---|---|---|---|---|---|"]
    for t in TASKS:
        for kept in (False, True):
            rs = [(r.value, r.cut_value) for r in results if r.name == "child-f" and r.task == t
                  and r.cut_value is not None and ("pooler as trained" in r.cut_rule) == kept]
            if rs:
                d = statistics.mean(v for v, _ in rs)
                c = statistics.mean(cut for _, cut in rs)
                rows.append(f"| {TASKS[t]} | {'trained' if kept else 'reverted'} | {len(rs)} | "
                            f"{d:.1f} | {c:.1f} | {d - c:+.1f} |")
    return "\n".join(rows)


def seeds_table(results: list[Result], task: str) -> str:
    """Each claims run on ``task``, seed by seed: the dev metric and the last epoch's train
    loss (near ln 2 = 0.69 on these 2-class tasks: the run never left the starting plateau)."""
    claims = claim_runs(results)
    seeds = sorted({r.seed for r in claims if r.task == task})
    rows = ["| method | " + " | ".join(f"seed {s}: dev (last train loss)" for s in seeds) + " |",
            "|" + "---|" * (len(seeds) + 1)]
    for name in dict.fromkeys(r.name for r in claims if r.task == task):
        by = {r.seed: r for r in claims if r.task == task and r.name == name}
        cells = []
        for s in seeds:
            if s not in by:
                cells.append("—")
                continue
            loss = [h["train_loss"] for h in by[s].dev_history if "train_loss" in h]
            cells.append(f"{by[s].value:.1f}" + (f" ({loss[-1]:.2f})" if loss else ""))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def diag_table(diag: list[Result]) -> str:
    rows = ["| row | task | lr | epochs | seed | last | dev, every epoch | train loss, every epoch |",
            "|---|---|---|---|---|---|---|---|"]
    for r in diag:
        hist = ", ".join(f"{100 * h[r.metric]:.1f}" for h in r.dev_history if "epoch" in h)
        loss = ", ".join(f"{h['train_loss']:.2f}" for h in r.dev_history if "train_loss" in h)
        rows.append(f"| {r.name} | {TASKS[r.task]} | {r.lr:g} | {r.epochs:g} | "
                    f"{r.seed} | {r.value:.1f} | {hist} | {loss} |")
    return "\n".join(rows)


def floors(results: list[Result]) -> str:
    lines = []
    for t, floor in FLOORS.items():
        vals = [r.value for r in claim_runs(results) if r.name == "full" and r.task == t]
        pilot = [r.value for r in results if r.name == "full" and r.task == t and r.pilot]
        if vals:
            m = statistics.mean(vals)
            accepted = m < floor and any(t in r.accepted_missed_floors for r in results)
            lines.append(f"{TASKS[t]}: full {m:.1f} (mean of {len(vals)}) vs floor {floor:g}: "
                         f"{'met' if m >= floor else 'MISSED'}" + (
                             " (the claims ran with it missed: --accept-missed-floor, after plan diag)"
                             if accepted else ""))
        elif pilot:
            lines.append(f"{TASKS[t]}: full pilot best {max(pilot):.1f} vs floor {floor:g}: "
                         f"{'met' if max(pilot) >= floor else 'MISSED'}")
    return "\n".join(lines)


def report(results: list[Result], diag: list[Result] | None = None) -> str:
    commits = sorted({r.commit[:12] for r in results})
    secs = [r.seconds for r in results]
    parts = [f"{len(results)} runs; commits {', '.join(commits)}; "
             f"{statistics.mean(secs) / 60:.1f} min per run on average" if results else "no runs yet"]
    if any(r.pilot for r in results):
        parts += ["", "Pilot (seed 0; dev metric x100 of the last epoch; best epoch in brackets)", "",
                  pilot_table(results)]
        found = {m: pilot_best(results, m) for m in PILOTS}
        parts += ["", "Best learning rate so far (mean of RTE and MRPC, among the lrs run on both; "
                  "polyhead/trainer/table.py's defaults follow it once the pilot is complete): " + ", ".join(
                      f"{m} {lr:g}" + (" (shared by child-d, child-f, dps, EH-FT)" if m == "full" else
                                       " (servable recipe: child-d, child-f, dps)" if m == SERVABLE_PILOT
                                       else "")
                      for m, lr in found.items() if lr is not None)]
    if any(not r.pilot for r in results):
        parts += ["", "Dev metric x100, last epoch, mean ± sd over seeds", "", main_table(results),
                  "", "Paired difference from full (same task and seed), mean [95 % t-interval]", "",
                  paired_table(results)]
    if any(not r.pilot for r in results):
        parts += ["", "The papers' claims on this backbone (95 % t-interval over seeds):", "",
                  claims_lines(results)]
    if any(r.recipe == "servable" and r.method in DENSE  # (not a pilot still choosing)
           for r in claim_runs(results)):
        parts += ["", "The servable recipe's cost against the paper recipe (same method, task, seed)",
                  "", servable_table(results)]
    if any(r.mask_structure == "columns" for r in results):
        parts += ["", "Column-structured masks against single weights (servable, same seed)", "",
                  structure_table(results)]
    if any(r.cut_value is not None for r in results):
        parts += ["", "child-f: the dense (paper) score and its servable cut, same runs", "",
                  child_f_table(results)]
    parts += ["", "Floors (full):", floors(results)]
    for t in full_missed_floors(results):
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


def print_report(args: argparse.Namespace) -> None:
    """The whole report of --results at --precision: issue 11's tables, issue 28's (and
    --curves' SVG), then bf16 against fp32 when both precisions have runs."""
    from bench import papers_budgets

    p = args.precision
    runs, diag = load_results(args.results), load_results(args.results, diag=True)
    print(f"Precision: {p}" + (" (bf16 autocast in training)" if p == "bf16" else "") + "\n")
    mine = [r for r in runs if r.precision == p]
    mine_diag = [r for r in diag if r.precision == p]
    print(report([r for r in mine if r.plan not in ISSUE28], mine_diag))
    extra = papers_budgets.report(mine + mine_diag, args)
    if extra:
        print("\nIssue 28: the papers at their own budgets\n\n" + extra)
    if getattr(args, "curves", None) is not None:
        n = papers_budgets.write_curves(args.curves, mine, args)
        print(f"\n{args.curves}: the dev curves of {n} pasta-paper runs")
    both = runs + diag
    if len({r.precision for r in both}) > 1:
        print("\nbf16 autocast against fp32: the same run (task, method, lr, epochs, seed) in both "
              "precisions; dev metric x100, mean [95 % t-interval] of bf16 - fp32 over the runs (a "
              "pilot's lrs are runs too). tokens/s as each run measured it, under its day's load: "
              "bench.train_speed measures the ratio in one run\n")
        print(precision_table(both))


def precision_table(results: list[Result]) -> str:
    """Each run made in both precisions: bf16 - fp32 per (task, row), and the training speed."""
    fp32 = {r.key: r for r in results if r.precision == "fp32"}
    pairs: dict[tuple[str, str], list[tuple[Result, Result]]] = {}
    for r in results:
        base = r.key.removesuffix("|bf16")
        if r.precision == "bf16" and base in fp32:
            name = r.name + (" (10 epochs, diag)" if r.plan == "diag" else "")
            pairs.setdefault((r.task, name), []).append((fp32[base], r))
    rows = ["| task | method | runs | fp32 | bf16 | bf16 − fp32 | tokens/s fp32 → bf16 |",
            "|---|---|---|---|---|---|---|"]
    for (t, name), ps in sorted(pairs.items()):
        a, b = [x.value for x, _ in ps], [y.value for _, y in ps]
        ta = statistics.mean(x.tokens_per_s for x, _ in ps)
        tb = statistics.mean(y.tokens_per_s for _, y in ps)
        diff = diff_cell([y - x for x, y in zip(a, b, strict=True)], unit="run")
        rows.append(f"| {TASKS[t]} | {name} | {len(ps)} | {statistics.mean(a):.1f} | "
                    f"{statistics.mean(b):.1f} | {diff} | {ta:.0f} → {tb:.0f} ({tb / ta:.2f}x) |")
    return "\n".join(rows)


