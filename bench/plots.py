"""The docs' plots, from the accuracy study's records and BENCHMARKS.md's figures.

    python -m bench.plots                # writes docs/img/*.svg
    python -m bench.plots --out DIR      # somewhere else

- accuracy.svg: the accuracy study's runs (bench/results/accuracy.jsonl, the rows of
  bench.accuracy's main table), dev metric per method and task: the mean over seeds with
  its 95 % t-interval (a dot alone: one seed).
- servable_cost.svg: the servable recipe's cost, each servable run minus the paper
  recipe's run of the same method, task and seed (bench.accuracy.servable_costs).
- pasta_curves.svg: PASTA's dev metric against epoch: the runs at its paper budget (plan
  pasta-paper, up to 150 epochs; bench.papers_budgets finds them) once they are in, and
  the study's runs at the default recipe (10 epochs).
- engine_ratios.svg, serving_ratios.svg: the figures in bench/results/figures.json, copied
  from BENCHMARKS.md's Engine and Serving path sections.

The study is still running: rerun this script to redraw with the runs added since.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt

from bench import accuracy as acc
from bench import papers_budgets
from bench.study.choices import claim_runs, servable_costs
from bench.study.records import Result, load_results
from bench.study.runs import CLAIM_TASKS, ISSUE28, METRIC, TASKS
from bench.study.stats import t_interval

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "accuracy.jsonl"
FIGURES = ROOT / "bench" / "results" / "figures.json"
OUT = ROOT / "docs" / "img"
plt.rcParams.update({"svg.hashsalt": "polyhead", "svg.fonttype": "none", "font.size": 9})


def mean_ci(vals: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95 % t-interval, or the one value three times."""
    ci = t_interval(vals)
    return ci if ci is not None else (vals[0], vals[0], vals[0])


def interval_panels(groups: dict[str, dict[str, list[float]]], tasks: list[str], title: str,
                    xlabel: str, zero_line: bool = False) -> plt.Figure:
    """One panel per task; a row per name: a dot at the mean, a bar over the interval."""
    names = list(groups)
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.3 * len(tasks) + 1.6, 0.28 * len(names) + 1.2),
                             sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for y, name in enumerate(names):
            vals = groups[name].get(task, [])
            if not vals:
                continue
            m, lo, hi = mean_ci(vals)
            ax.errorbar(m, y, xerr=[[m - lo], [hi - m]], fmt="o", ms=3.5, capsize=2,
                        color="#1f77b4" if len(vals) > 1 else "#888888")
        if zero_line:
            ax.axvline(0, color="#cc3333", lw=0.8)
        ax.set_title(f"{TASKS[task]} ({METRIC[task]})")
        ax.grid(axis="x", lw=0.3)
    axes[0][0].set_yticks(range(len(names)), names)
    axes[0][0].invert_yaxis()
    fig.supxlabel(xlabel)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def accuracy_figure(results: list[Result]) -> plt.Figure:
    claims = claim_runs(results)
    groups: dict[str, dict[str, list[float]]] = {}
    for r in claims:
        groups.setdefault(r.name, {}).setdefault(r.task, []).append(r.value)
    tasks = [t for t in CLAIM_TASKS if any(r.task == t for r in claims)]
    return interval_panels(groups, tasks, "Accuracy study: dev metric x100, mean and 95 % t-interval "
                           "over seeds (grey: one seed)", "dev metric x100")


def servable_cost_figure(results: list[Result]) -> plt.Figure:
    groups: dict[str, dict[str, list[float]]] = {}
    for (name, task), diffs in servable_costs(results).items():
        groups.setdefault(name, {})[task] = diffs
    tasks = [t for t in CLAIM_TASKS if any(t in g for g in groups.values())]
    return interval_panels(groups, tasks, "The servable recipe's cost: servable - paper recipe, same "
                           "method, task and seed", "difference in dev metric x100", zero_line=True)


def pasta_runs(results: list[Result]) -> list[tuple[str, Result]]:
    """(line label, record) for PASTA's dev curves: plan pasta-paper's runs (its paper
    budget, up to 150 epochs; bench.papers_budgets finds them), and the study's PASTA runs
    at the default recipe (10 epochs, one per seed)."""
    args = acc.parse_args(["--table-only", "--results", str(RESULTS)])
    paper = [("paper recipe", r) for _, r in papers_budgets._found("pasta-paper", args, results, results)]
    study = [r for r in claim_runs([r for r in results if r.plan not in ISSUE28])
             if r.name == "pasta"]
    return paper + [(f"default, seed {r.seed}", r) for r in study]


def pasta_curves_figure(results: list[Result]) -> plt.Figure:
    runs = pasta_runs(results)
    tasks = [t for t in CLAIM_TASKS if any(r.task == t for _, r in runs)]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(2.4 * max(1, len(tasks)) + 0.6, 2.6),
                             squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        for label, r in (x for x in runs if x[1].task == task):
            pts = [(h["epoch"], 100 * h[r.metric]) for h in r.dev_history if "epoch" in h]
            ax.plot([e for e, _ in pts], [v for _, v in pts], lw=1.6 if label == "paper recipe" else 0.9,
                    color="#222222" if label == "paper recipe" else None, label=label)
        ax.set_title(f"{TASKS[task]} ({METRIC[task]})")
        ax.set_xlabel("epoch")
        ax.grid(lw=0.3)
    axes[0][0].set_ylabel("dev metric x100")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    n_paper = sum(label == "paper recipe" for label, _ in runs)
    fig.suptitle("PASTA's dev curves: " + (f"{n_paper} run(s) at its paper budget (black), and "
                 if n_paper else "no paper-budget run finished yet; ") + "the default recipe's runs")
    fig.tight_layout()
    return fig


def engine_figure(fig_data: dict[str, Any]) -> plt.Figure:
    e = fig_data["engine"]
    names = [r["name"] for r in e["ratios"]]
    commits = [k for k in e["ratios"][0] if k != "name"]
    fig, ax = plt.subplots(figsize=(8.4, 0.45 * len(names) + 1.6))
    h = 0.8 / len(commits)
    for i, c in enumerate(commits):
        ax.barh([y + i * h for y in range(len(names))], [r.get(c, math.nan) for r in e["ratios"]],
                height=h, label=f"code {c}")
    ax.axvline(e["target"], color="#cc3333", lw=0.8, label=f"target {e['target']}")
    ax.set_yticks([y + h * (len(commits) - 1) / 2 for y in range(len(names))], names)
    ax.invert_yaxis()
    ax.set_xlim(0.8, 1.0)
    ax.set_xlabel("engine seq/s with the tasks / bare backbone (CPU time, 1 thread); from 4f1ddbe:\n"
                  "/ the engine with no task, which runs the last layer for [CLS] alone")
    ax.set_title("The engine: 64 tasks of every kind per batch / bare backbone")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    return fig


def serving_figure(fig_data: dict[str, Any]) -> plt.Figure:
    s = fig_data["serving_path"]
    labels = [f"{p['ingress']} c{p['concurrency']} x{p['inputs']}" for p in s["points"]]
    fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(labels) + 1.2))
    ys = range(len(labels))
    ax.barh([y - 0.2 for y in ys], [p["wall"] for p in s["points"]], height=0.4, label="wall clock")
    ax.barh([y + 0.2 for y in ys], [p["cpu"] for p in s["points"]], height=0.4, label="CPU clock")
    ax.axvline(s["target"], color="#cc3333", lw=0.8, label=f"target {s['target']}")
    ax.set_yticks(list(ys), labels)
    ax.invert_yaxis()
    ax.set_xlim(0.6, 1.05)
    ax.set_xlabel("end-to-end rows/s / in-process engine at the same batch")
    ax.set_title("The serving path per ingress (c: concurrency, x: inputs per request)")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def write_all(out: Path, results_path: Path = RESULTS) -> list[Path]:
    results = load_results(results_path, precision="bf16")
    study = [r for r in results if r.plan not in ISSUE28]
    fig_data = json.loads(FIGURES.read_text())
    figures = {"accuracy.svg": accuracy_figure(study), "servable_cost.svg": servable_cost_figure(study),
               "pasta_curves.svg": pasta_curves_figure(results), "engine_ratios.svg": engine_figure(fig_data),
               "serving_ratios.svg": serving_figure(fig_data)}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures.items():
        fig.savefig(out / name, metadata={"Date": None})
        plt.close(fig)
        written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT, help="folder for the SVG files (default docs/img)")
    p.add_argument("--results", type=Path, default=RESULTS, help="the accuracy study's JSONL records")
    args = p.parse_args(argv)
    for path in write_all(args.out, args.results):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
