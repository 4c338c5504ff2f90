"""The accuracy study's bookkeeping: runs claimed by one worker at a time, whole lines."""

import dataclasses
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from bench.study import choices, evidence, plans, records, report, runner
from bench.study.runs import (
    CLAIM_TASKS,
    DENSE,
    DPS_SERVABLE,
    FULL_SERVABLE,
    PILOT_SEED,
    SERVABLE_PILOT,
    SST2_ROWS,
    Run,
    best_dev,
    checkpoint_of,
    dense_run,
)

COMMITTED = Path(__file__).parent.parent / "bench/results/accuracy.jsonl"  # the study's own results


def test_claim_is_exclusive_and_released(tmp_path):
    results = tmp_path / "acc.jsonl"
    lock = runner.claim(results, "rte|full|paper|lr=0.0001")
    assert lock is not None and lock.read_text() == f"{os.getpid()} "
    assert runner.claim(results, "rte|full|paper|lr=0.0001") is None  # we hold it, alive
    assert runner.claim(results, "mrpc|full|paper|lr=0.0001") is not None  # another run
    lock.unlink()
    assert runner.claim(results, "rte|full|paper|lr=0.0001") is not None


def test_dead_holders_claim_is_taken_over(tmp_path):
    results = tmp_path / "acc.jsonl"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    lock = runner.claim(results, "k")
    lock.write_text(dead)  # as if a worker that has exited held it
    again = runner.claim(results, "k")
    assert again is not None and again.read_text() == f"{os.getpid()} "


def test_append_writes_whole_lines(tmp_path):
    results = tmp_path / "sub" / "acc.jsonl"
    for i in range(3):
        records.append(results, _line(_rec("rte", "full", 1e-4, 50.0, False, key=f"k{i}")))
    assert [r.key for r in records.load_results(results)] == ["k0", "k1", "k2"]
    assert all(json.loads(line) for line in results.read_text().splitlines())


def test_a_line_from_before_the_plan_and_precision_fields_reads_back_as_written_then(tmp_path):
    """The study's first lines have no ``plan`` (the full pilot's runs, then the claims') and
    no ``precision`` (they trained in fp32): a resumed study reads them as those plans'."""
    path = tmp_path / "acc.jsonl"
    for pilot, seed in ((True, 0), (False, 1)):
        line = _line(_rec("rte", "full", 1e-4, 60.0, pilot, seed=seed, key=f"k{seed}"))
        del line["plan"], line["config"]["precision"]
        records.append(path, line)
    got = records.load_results(path, precision="fp32")
    assert [(r.key, r.plan, r.precision) for r in got] == [("k0", "pilot-full", "fp32"),
                                                           ("k1", "claims", "fp32")]
    assert records.load_results(path, precision="bf16") == [] and records.load_results(path, diag=True) == []
    assert got[0].config == {"lr": 1e-4, "epochs": 3}  # the whole configuration, as recorded


def test_workers_are_the_same_command_without_workers():
    argv = ["--results", "r.jsonl", "--workers", "2", "--plan", "claims", "--workers=3", "--threads", "1"]
    assert runner.worker_argv(argv) == ["--results", "r.jsonl", "--plan", "claims", "--threads", "1"]



def _runner_args(results, plan_lrs="1e-4"):
    import argparse

    return argparse.Namespace(results=results, precision="fp32", pilot_lrs=plan_lrs, frozen_epochs=10.0)


def _trained(run):
    return _line(_rec(run.task, run.name, run.lr, 1.0, False, seed=run.seed, epochs=run.epochs,
                      method=run.method, recipe=run.recipe, key=run.key))


def test_a_run_is_trained_once_recorded_with_its_plan_and_released(tmp_path):
    args = _runner_args(tmp_path / "acc.jsonl")
    run = Run("rte", "full", lr=1e-4, epochs=10, diag=True)
    rec = runner.run_claimed(args, "diag", run, [], _trained)
    assert rec is not None and (rec["plan"], rec["pilot"]) == ("diag", False)
    assert [r.key for r in records.load_results(args.results, diag=True)] == [run.key]
    assert not list(runner.running_dir(args.results).glob("*.pid"))  # the claim is released
    pilot = Run("rte", "full", lr=1e-4)
    rec = runner.run_claimed(args, "pilot-full", pilot, [], _trained)
    assert (rec["plan"], rec["pilot"]) == ("pilot-full", True)
    claims = Run("mrpc", "full", lr=1e-4, seed=1)
    assert runner.run_claimed(args, "claims-full", claims, ["rte"], _trained)["plan"] == "claims"
    assert records.load_results(args.results)[-1].accepted_missed_floors == ("rte",)


def test_a_resumed_study_never_trains_a_finished_run_again(tmp_path):
    """Every run in the results file, diagnostic ones included, is skipped on resume."""
    args = _runner_args(tmp_path / "acc.jsonl")
    done = [Run("rte", "full", lr=1e-4, epochs=10, diag=True), Run("rte", "full", lr=1e-4)]
    for run, name in zip(done, ("diag", "pilot-full"), strict=True):
        runner.run_claimed(args, name, run, [], _trained)

    def again(run):
        raise AssertionError(f"{run.key} trained twice")

    for run, name in zip(done, ("diag", "pilot-full"), strict=True):
        assert runner.run_claimed(args, name, run, [], again) is None
    assert len(records.load_results(args.results) + records.load_results(args.results, diag=True)) == 2


def test_a_run_a_live_worker_holds_is_left_to_it(tmp_path):
    args = _runner_args(tmp_path / "acc.jsonl")
    run = Run("rte", "full", lr=1e-4)
    lock = runner.claim(args.results, run.key, "pilot-full")  # this process: alive
    assert runner.run_claimed(args, "pilot-full", run, [], _trained) is None
    assert lock.exists() and records.load_results(args.results) == []


def test_paired_differences_pair_each_seed_with_the_same_seeds_reference():
    """The difference is taken within (task, seed): a seed-to-seed spread the two methods
    share cancels; an unpaired difference (against the reference's mean) would not."""
    full = {("rte", 0): 50.0, ("rte", 1): 70.0, ("rte", 2): 60.0}
    child = [(("rte", 0), 51.0), (("rte", 1), 71.0), (("rte", 2), 61.0), (("rte", 3), 99.0)]
    from bench.study import stats

    assert stats.paired(child, full) == [1.0, 1.0, 1.0]  # seed 3: no reference, left out
    assert stats.diff_cell(stats.paired(child, full)) == "+1.0 [+1.0, +1.0]"
    two = [((t, s), v + 2.0 * (t == "mrpc")) for (_, s), v in child if s < 3 for t in ("rte", "mrpc")]
    base = {(t, s): v for (_, s), v in full.items() for t in ("rte", "mrpc")}
    assert stats.per_seed_means(two, base, ("rte", "mrpc"), (0, 1, 2, 3)) == [2.0, 2.0, 2.0]
    assert stats.per_seed_means(two[:-1], base, ("rte", "mrpc"), (0, 1, 2)) == [2.0, 2.0]  # seed 2: RTE only
    assert stats.cell([50.0, 70.0, 60.0]) == "60.0 ± 10.0" and stats.cell([1.0]) == "1.0"

def _rec(task, name, lr, value, pilot, seed=0, epochs=3, **fields):
    """A result as the plans and tables read it: row ``name``'s run (method ``name``, the
    paper recipe, unless ``fields`` say otherwise)."""
    fields = {"method": name, "recipe": "paper", **fields}
    return records.Result(task=task, name=name, seed=seed, pilot=pilot, value=value, lr=lr,
                          epochs=epochs, **fields)


def _of(run, value, **fields):
    """The result of ``run`` (its dev metric ``value``)."""
    return _rec(run.task, run.name, run.lr, value, False, seed=run.seed, epochs=run.epochs,
                method=run.method, recipe=run.recipe, key=run.key, **fields)


def _line(r, **fields):
    """``r`` as a results-file line (``fields`` over it)."""
    return {"key": r.key, "task": r.task, "name": r.name, "method": r.method, "recipe": r.recipe,
            "seed": r.seed, "pilot": r.pilot, "value": r.value, "plan": r.plan, "metric": r.metric,
            "tokens_per_s": r.tokens_per_s, "dev_history": list(r.dev_history),
            "config": {"lr": r.lr, "epochs": r.epochs, "precision": r.precision}, **fields}


def test_the_full_pilot_run_at_the_shared_lr_is_the_claims_seed_0_run():
    results = [_rec(t, "full", lr, v, True) for t in ("rte", "mrpc")
               for lr, v in ((1e-4, 60.0), (2e-5, 50.0))]
    results += [_rec("rte", "child-d", 1e-4, 61.0, False), _rec("rte", "full", 1e-4, 58.0, False, seed=1)]
    got = choices.claim_runs(results)
    assert sorted((r.task, r.name, r.lr, r.seed) for r in got) == [
        ("mrpc", "full", 1e-4, 0), ("rte", "child-d", 1e-4, 0), ("rte", "full", 1e-4, 0),
        ("rte", "full", 1e-4, 1)]


def test_each_pilots_run_at_its_chosen_lr_is_its_seed_0_run():
    """pasta's and the servable pilot's runs at the lr they chose count as seed 0 of the
    plans that use that lr (the same key, never run again); their other lrs do not."""
    results = [_rec(t, "full", 1e-4, 60.0, True) for t in ("rte", "mrpc")]
    results += [_rec(t, "pasta", lr, v, True) for t in ("rte", "mrpc")
                for lr, v in ((1e-3, 55.0), (3e-3, 57.0))]
    results += [_rec(t, "child-d@0.05", lr, v, True) for t in ("rte", "mrpc")
                for lr, v in ((1e-4, 48.0), (1e-3, 58.0))]
    results += [_rec(t, "child-d@0.05/frozen-pooler", 1e-3, 50.0, True) for t in ("rte", "mrpc")]
    got = sorted((r.task, r.name, r.lr) for r in choices.claim_runs(results))
    assert got == [("mrpc", "child-d@0.05", 1e-3), ("mrpc", "full", 1e-4), ("mrpc", "pasta", 3e-3),
                   ("rte", "child-d@0.05", 1e-3), ("rte", "full", 1e-4), ("rte", "pasta", 3e-3)]


def test_servable_plans_wait_for_and_use_the_servable_pilots_lr():
    import argparse

    import pytest

    args = argparse.Namespace(frozen_epochs=10.0, pilot_lrs="1e-4")
    results = [_rec(t, "full", 1e-4, 90.0, True) for t in ("rte", "mrpc")]
    every = plans.plan("pilot-servable", args, results)
    pilot = [r for r in every if r.pooler is None]
    assert {(r.task, r.method, r.recipe, r.density) for r in every} == {
        (t, "child-d", "servable", 0.05) for t in ("rte", "mrpc")}
    assert sorted({r.lr for r in pilot}) == sorted(choices.SERVABLE_LRS)
    assert all(r.name == SERVABLE_PILOT for r in pilot)
    frozen = [r for r in every if r.pooler is not None]  # the ablation: its own row name
    assert frozen and {r.name for r in frozen} == {SERVABLE_PILOT + "/frozen-pooler"}
    for name in ("servable", "structure"):
        with pytest.raises(plans.PlanRefused, match="servable pilot"):
            plans.plan(name, args, results)
    results += [_rec(t, "child-d@0.05", lr, v, True) for t in ("rte", "mrpc")
                for lr, v in ((1e-4, 48.0), (1e-3, 58.0), (3e-3, 52.0))]
    for name in ("servable", "structure"):
        runs = plans.plan(name, args, results)
        assert runs and {r.lr for r in runs} == {1e-3} and {r.recipe for r in runs} == {"servable"}
    seed0 = [r for r in plans.plan("servable", args, results) if r.seed == 0 and r.density == 0.05]
    assert {r.key for r in seed0} >= {r.key for r in pilot if r.lr == 1e-3}  # its pilot run


def test_fulls_servable_pilot_is_a_row_of_its_own_paired_with_the_paper_recipe():
    """full's servable recipe searches full's lrs under its own row name: it never moves the
    shared lr of the paper recipe, and its chosen run is paired with full's paper run."""
    import argparse

    args = argparse.Namespace(frozen_epochs=10.0, pilot_lrs="5e-5,1e-4")
    runs = plans.plan("pilot-full-servable", args, [])
    assert sorted((r.task, r.lr) for r in runs) == [
        ("mrpc", 5e-5), ("mrpc", 1e-4), ("rte", 5e-5), ("rte", 1e-4)]
    assert {(r.method, r.recipe, r.name) for r in runs} == {("full", "servable", FULL_SERVABLE)}
    assert len({r.key for r in runs} | {Run(r.task, "full", lr=r.lr).key for r in runs}) == 8

    def rec(task, lr, value, recipe):
        name = FULL_SERVABLE if recipe == "servable" else "full"
        return _rec(task, name, lr, value, True, method="full", recipe=recipe)

    results = [rec(t, 1e-4, v, "paper") for t, v in (("rte", 60.0), ("mrpc", 85.0))]
    results += [rec(t, lr, v, "servable") for t in ("rte", "mrpc") for lr, v in ((5e-5, 90.0), (1e-4, 70.0))]
    results += [rec(t, 5e-5, 10.0, "paper") for t in ("rte", "mrpc")]
    assert choices.pilot_best(results, "full") == 1e-4  # the servable runs' 90s do not count
    assert choices.pilot_best(results, FULL_SERVABLE) == 5e-5
    table = report.servable_table(results)
    assert "| full/servable | +30.0 (1 seed) | +5.0 (1 seed) |" in table, table


def test_a_frozen_pilot_whose_best_is_an_end_searches_one_point_past_it():
    import argparse

    args = argparse.Namespace(frozen_epochs=10.0)
    lrs = {"pasta": (55.0, 60.0, 50.0), "lora": (60.0, 55.0, 50.0), "prefix": (50.0, 55.0, 60.0)}
    results = [_rec(t, m, lr, v, True, epochs=10) for m, vs in lrs.items() for t in ("rte", "mrpc")
               for lr, v in zip(choices.FROZEN_LRS[m], vs, strict=True)]
    partial = [r for r in results if not (r.name == "prefix" and r.lr == 3e-2)]
    assert choices.frozen_grid(partial, "prefix") == choices.FROZEN_LRS["prefix"]  # 3 not in yet
    assert choices.frozen_grid(results, "pasta") == choices.FROZEN_LRS["pasta"]  # interior
    assert choices.pilot_best(results, "pasta") == 3e-3
    assert choices.frozen_grid(results, "lora") == (1e-4, 3e-4, 1e-3, 3e-3)
    assert choices.frozen_grid(results, "prefix") == (3e-3, 1e-2, 3e-2, 1e-1)
    planned = {(r.method, r.lr) for r in plans.plan("pilot-frozen", args, results)}
    assert {("lora", 1e-4), ("prefix", 1e-1)} <= planned and ("bitfit", 3e-2) not in planned
    assert choices.pilot_best(results, "lora") is None  # its 4th point is due
    results += [_rec(t, "lora", 1e-4, 58.0, True, epochs=10) for t in ("rte", "mrpc")]
    assert choices.pilot_best(results, "lora") == 3e-4  # the 4th point came in lower
    results += [_rec(t, "prefix", 1e-1, 70.0, True, epochs=10) for t in ("rte", "mrpc")]
    assert choices.pilot_best(results, "prefix") == 1e-1
    assert choices.frozen_grid(results, "prefix") == (3e-3, 1e-2, 3e-2, 1e-1)  # no 5th point


def test_servable_runs_before_the_servable_pilot_chose_are_left_out():
    results = [_rec(t, "child-d@0.05", lr, v, True) for t in ("rte", "mrpc")
               for lr, v in ((1e-4, 48.0), (1e-3, 58.0))]
    old = _rec("rte", "child-d@0.01", 1e-4, 47.0, False)
    assert old in choices.claim_runs([*results[:1], old])  # no choice yet: it counts
    new = _rec("rte", "child-d@0.01", 1e-3, 55.0, False)
    got = choices.claim_runs([*results, old, new])
    assert new in got and old not in got


def test_the_trainers_defaults_are_the_committed_studys_choices():
    """Every default that names the study as its evidence is the lr the committed results
    choose (a pilot that completes later makes no default by itself: see --help)."""
    assert evidence.mismatches(COMMITTED) == []
    # dps's servable lr: its own search (plan servable-diag), not the servable pilot's
    bf16 = records.load_results(COMMITTED, precision="bf16")
    diag = records.load_results(COMMITTED, diag=True, precision="bf16")
    assert evidence.chosen_lr("dps", "servable", bf16, diag) != choices.pilot_best(bf16, SERVABLE_PILOT)


def test_a_default_its_search_did_not_choose_is_named(tmp_path, monkeypatch):
    """mismatches() names each evidenced default whose lr is not its search's choice (or
    whose search is not complete, or which no search chooses)."""
    path = tmp_path / "acc.jsonl"
    for t in ("rte", "mrpc"):
        for lr, v in ((5e-5, 70.0), (1e-4, 60.0)):  # full's bf16 pilot chooses 5e-5, not 1e-4
            records.append(path, _line(_rec(t, "full", lr, v, True, plan="pilot-full", precision="bf16")))
    lines = evidence.mismatches(path)
    assert "full (paper): default lr 0.0001, the bf16 study chose 5e-05" in lines
    assert "dps (paper): default lr 0.0001, the bf16 study chose 5e-05" in lines
    assert "lora (servable): default lr 0.0003, the bf16 study chose nothing yet" in lines
    assert "child-f (servable): default lr 2e-05, the bf16 study chose nothing yet" in lines
    assert not any(line.startswith("eh-ft") for line in lines)  # provisional
    monkeypatch.delitem(evidence.CHOOSERS, ("full", "paper"))
    assert ("full (paper): default lr 0.0001, the bf16 study chose nothing yet (no search chooses it)"
            in evidence.mismatches(path))


def test_each_default_follows_its_own_search():
    """child-f's servable lr is its own search's, dps's servable lr plan servable-diag's
    search, child-d's the servable pilot's, the dense paper recipes full's pilot's."""
    results = [_rec(t, "full", lr, v, True) for t in ("rte", "mrpc")
               for lr, v in ((1e-4, 60.0), (2e-5, 50.0))]
    results += [_rec(t, SERVABLE_PILOT, lr, v, True) for t in ("rte", "mrpc")
                for lr, v in ((1e-4, 48.0), (1e-3, 58.0))]
    results += [_rec(t, "child-f@0.05", lr, 60.0 + 1e4 * lr if lr < 1e-3 else 50.0, False, seed=3,
                     plan="servable-defaults") for lr in (*choices.CHILD_F_SERVABLE_LRS, 1e-3)
                for t in ("rte", "mrpc")]
    diag = [_rec(t, DPS_SERVABLE, lr, v, False, plan="diag") for t in ("rte", "mrpc")
            for lr, v in ((1e-4, 10.0), (3e-4, 40.0), (1e-3, 12.0), (3e-3, 5.0))]
    got = {(m, r): evidence.chosen_lr(m, r, results, diag) for m, r in (
        ("full", "paper"), ("dps", "paper"), ("child-d", "servable"), ("child-f", "servable"),
        ("dps", "servable"), ("eh-ft", "paper"))}
    assert got == {("full", "paper"): 1e-4, ("dps", "paper"): 1e-4, ("child-d", "servable"): 1e-3,
                   ("child-f", "servable"): 2e-4, ("dps", "servable"): 3e-4, ("eh-ft", "paper"): None}

def test_full_runs_its_seeds_first_and_a_missed_floor_stops_the_claims():
    import argparse

    import pytest

    args = argparse.Namespace(frozen_epochs=10.0, pilot_lrs="1e-4")
    results = [_rec(t, "full", 1e-4, v, True) for t, v in (("rte", 59.6), ("mrpc", 86.1))]
    first = plans.plan("claims-full", args, results)
    assert {r.method for r in first} == {"full"} and len(first) == 15
    assert [r.seed for r in first] == sorted(r.seed for r in first)
    assert {r.max_train for r in first if r.task == "sst2"} == {SST2_ROWS}
    assert plans.plan("diag", args, results) == []  # seed 0 meets RTE's floor
    results.append(_rec("rte", "full", 1e-4, 54.5, False, seed=1))  # mean 57.05 < 58
    assert choices.missed_floors(results, 1e-4) == ["rte"]
    for name in ("claims", "claims-pasta", "guidance"):
        with pytest.raises(plans.PlanRefused, match="misses the floor on rte"):
            plans.plan(name, args, results)
    diag = plans.plan("diag", args, results)
    assert {(r.task, r.seed, r.epochs, r.diag) for r in diag} == {
        ("rte", 1, 3.0, False), ("rte", 2, 3.0, False), ("rte", 0, 10, True), ("rte", 1, 10, True),
        ("rte", 2, 10, True)}
    results.append(_rec("rte", "full", 1e-4, 61.0, False, seed=2))  # mean 58.4
    assert choices.missed_floors(results, 1e-4) == [] and plans.plan("claims", args, results)


def test_a_missed_floor_is_accepted_only_explicitly_and_after_diag(tmp_path):
    """--accept-missed-floor lets the gated plans run with a floor missed, but only once
    plan diag's runs on that task are in the results; other missed floors still refuse."""
    import argparse

    import pytest

    path = tmp_path / "acc.jsonl"
    args = argparse.Namespace(frozen_epochs=10.0, pilot_lrs="1e-4", results=path, accept_missed_floor=["rte"])
    results = [_rec(t, "full", 1e-4, v, True) for t, v in (("rte", 59.6), ("mrpc", 86.1))]
    results += [_rec("rte", "full", 1e-4, v, False, seed=s) for s, v in ((1, 54.5), (2, 52.7))]
    for r in results:
        records.append(path, _line(r, plan="pilot-full" if r.pilot else "claims"))
    with pytest.raises(plans.PlanRefused, match="diag's runs on it"):
        plans.plan("claims", args, results)
    for s in (0, 1):
        records.append(path, _line(_rec("rte", "full", 1e-4, 55.0, False, seed=s, epochs=10, plan="diag")))
    with pytest.raises(plans.PlanRefused, match="diag's runs on it"):  # seed 2's is missing
        plans.plan("claims", args, results)
    records.append(path, _line(_rec("rte", "full", 1e-4, 55.0, False, seed=2, epochs=10, plan="diag")))
    assert plans.plan("claims", args, results)
    assert plans.floor_gate("claims", args, results, 1e-4) == ["rte"]
    without = argparse.Namespace(**{**vars(args), "accept_missed_floor": []})
    with pytest.raises(plans.PlanRefused, match="misses the floor on rte"):
        plans.plan("claims", without, results)
    results.append(_rec("mrpc", "full", 1e-4, 70.0, False, seed=1))  # a second floor, not accepted
    with pytest.raises(plans.PlanRefused, match="misses the floor on mrpc"):
        plans.plan("guidance", args, results)


def test_claims_are_also_answered_over_the_tasks_whose_floor_full_meets():
    full = {"rte": (59.6, 54.5, 52.7), "mrpc": (86, 86, 86), "stsb": (86, 86, 86), "cola": (25, 24, 26)}
    results = [_rec(t, "full", 1e-4, v, s == 0 and t in ("rte", "mrpc"), seed=s)
               for t, vs in full.items() for s, v in enumerate(vs)]
    results += [_rec(t, "full", 2e-5, 10.0, True) for t in ("rte", "mrpc")]
    gain = {"rte": -9.0, "mrpc": 1.0, "stsb": 1.0, "cola": 1.0}  # child-d: worse only on RTE
    results += [_rec(t, "child-d", 1e-4, v + gain[t] + 0.1 * s, False, seed=s)
                for t, vs in full.items() for s, v in enumerate(vs)]
    lines = report.claims_lines(results).splitlines()
    assert lines[0].startswith("child-d >= full (4-task average): no;")
    assert lines[1].startswith("  over the tasks where full meets its floor (MRPC, STS-B, CoLA): yes;")
    # every floor met: one line a claim
    results = [dataclasses.replace(r, value=r.value + (10.0 if r.task == "rte" else 0.0)) for r in results]
    assert choices.missed_floors(results, 1e-4) == []
    assert not any("over the tasks" in line for line in report.claims_lines(results).splitlines())


def test_a_claim_says_whether_the_papers_size_of_gain_is_ruled_out():
    """Against its reference over seeds; the paper's reported gain is placed against the
    interval, and DPS is compared with child-d too."""
    full = {"rte": (58, 59, 60), "mrpc": (86, 85, 87), "stsb": (86, 86, 87), "cola": (25, 24, 26)}
    results = [_rec(t, "full", 1e-4, v, s == 0 and t in ("rte", "mrpc"), seed=s)
               for t, vs in full.items() for s, v in enumerate(vs)]
    results += [_rec(t, "full", 2e-5, 10.0, True) for t in ("rte", "mrpc")]
    for name, gain in (("child-d", 0.5), ("dps", 3.0)):  # child-d: +0.5, well under the paper's +1.5
        results += [_rec(t, name, 1e-4, v + gain + 0.1 * (s - 1), False, seed=s)
                    for t, vs in full.items() for s, v in enumerate(vs)]
    lines = report.claims_lines(results).splitlines()
    child_d = next(line for line in lines if line.startswith("child-d >= full"))
    assert child_d.startswith("child-d >= full (4-task average): yes; child-d - full = +0.50")
    assert "the paper's +1.5" in child_d and "above the interval: a gain that large is ruled out" in child_d
    dps = next(line for line in lines if line.startswith("dps >= child-d"))
    assert "yes; dps - child-d = +2.50" in dps
    assert "not enough seeds yet" in next(line for line in lines if line.startswith("EH-FT"))


KNOBS = {"child_f_": "child-f", "child_d_": "child-d", "fisher_": "child-d", "dps_": "dps",
         "num_prefix": "prefix", "lora_": "lora", "head_init_": "eh-ft"}


def test_polyhead_train_with_its_defaults_trains_the_studys_runs():
    """`polyhead train --method M [--recipe paper] [--head-init ...]` with nothing else set
    builds exactly the configuration of the committed study runs its defaults cite (all but
    the seed, the SST-2 row cap and the device), so a user training a GLUE task with the
    defaults trains what the study measured."""
    import argparse

    from polyhead.trainer.cli import register
    from polyhead.trainer.cli import train_config as _config

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    checked = 0
    cited = evidence.cited_runs(COMMITTED)
    # child-d's and dps's servable defaults mask whole columns: their check's runs, at the
    # servable pilot's lr and at dps's own search's choice
    for name in ("child-d@0.05/columns", DPS_SERVABLE + "/columns"):
        assert any(r.name == name and r.plan == "structure-seeds" for r in cited), name
    for r in cited:
        c = r.config
        argv = ["train", "--method", c["method"], "--recipe", c["recipe"], "--preset", r.task,
                "--train", "t.tsv", "--dev", "d.tsv", "--out", "x.polyhead"]
        if c["head_init"]:
            argv += ["--head-init", c["head_init"]]
        got = _config(parser.parse_args(argv)).to_dict()
        # (precision: the CLI's "auto" resolves by machine; the study names its own)
        keep = {k for k in c if k in got and k not in ("seed", "max_train", "device", "precision") and all(
            not k.startswith(p) or c["method"] == m or (m == "eh-ft" and c["head_init"])
            for p, m in KNOBS.items())}  # another method's knobs do nothing here
        assert {k: got[k] for k in keep} == {k: c[k] for k in keep}, r.key
        checked += 1
    assert checked >= 10  # the claims' paper runs and the servable pilot's chosen run


def test_the_seed_table_shows_each_runs_dev_and_last_train_loss():
    results = [_rec(t, "full", 1e-4, v, True) for t, v in (("rte", 59.6), ("mrpc", 86.1))]
    results += [_rec("rte", "full", 1e-4, 52.7, False, seed=2), _rec("rte", "dps", 1e-4, 57.4, False)]
    results = [dataclasses.replace(r, dev_history=tuple({"epoch": i + 1, "train_loss": x}
                                                        for i, x in enumerate(losses)),
                                   commit="c0ffee", seconds=60.0, tokens_per_s=900.0, metric="accuracy")
               for r, losses in zip(results, ([0.69, 0.37], [], [0.69, 0.69], [0.69, 0.22]), strict=True)]
    lines = report.seeds_table(results, "rte").splitlines()
    assert lines[0] == "| method | seed 0: dev (last train loss) | seed 2: dev (last train loss) |"
    assert lines[2:] == ["| full | 59.6 (0.37) | 52.7 (0.69) |", "| dps | 57.4 (0.22) | — |"]
    assert "where full misses its floor" in report.report(results)


def test_the_servable_cost_table_waits_for_the_servable_pilots_choice():
    """No servable - paper table from a servable pilot still choosing its lr (an empty
    table before); once it has chosen, its seed-0 run is compared with the paper run."""
    results = [_rec(t, "full", 1e-4, 60.0, True) for t in ("rte", "mrpc")]
    results += [_rec(t, "child-d", 1e-4, 61.0, False) for t in ("rte", "mrpc")]
    results.append(_rec("rte", "child-d@0.05", 1e-3, 58.0, True, method="child-d", recipe="servable"))
    results = [dataclasses.replace(r, commit="c0ffee", seconds=60.0, tokens_per_s=900.0, metric="accuracy")
               for r in results]
    assert "servable recipe's cost" not in report.report(results)
    results.append(dataclasses.replace(results[-1], task="mrpc", value=59.0))
    text = report.report(results)
    assert "servable recipe's cost" in text and "| child-d@0.05 | -3.0 (1 seed) | -2.0 (1 seed) |" in text


def test_each_precision_is_a_study_of_its_own(tmp_path):
    """bf16 runs have keys of their own (an fp32 run never stands in for one), plans see only
    their precision's results, and the report pairs the two precisions run by run."""
    import argparse

    path = tmp_path / "acc.jsonl"
    args = argparse.Namespace(frozen_epochs=10.0, pilot_lrs="1e-4,2e-5", results=path, precision="bf16")
    fp32 = [_rec(t, "full", lr, v, True) for t in ("rte", "mrpc") for lr, v in ((1e-4, 60.0), (2e-5, 50.0))]
    for r in fp32:
        records.append(path, _line(r, key=Run(r.task, "full", lr=r.lr).key, plan="pilot-full",
                                   tokens_per_s=500.0))
    runs = plans.plan("pilot-full", args, records.load_results(path, precision="bf16"))
    assert {r.precision for r in runs} == {"bf16"} and all(r.key.endswith("|bf16") for r in runs)
    assert not {r.key for r in runs} & {r.key for r in records.load_results(path)}
    with pytest.raises(plans.PlanRefused, match="full pilot first"):  # fp32's pilot is not bf16's
        plans.plan("claims-full", args, records.load_results(path, precision="bf16"))
    for run, v in zip(runs, (59.0, 52.0, 61.0, 49.0), strict=True):
        records.append(path, _line(_rec(run.task, "full", run.lr, v, True, key=run.key, plan="pilot-full",
                                        precision="bf16", tokens_per_s=1000.0)))
    assert len(records.load_results(path, precision="bf16")) == 4
    assert len(records.load_results(path, precision="fp32")) == 4 and len(records.load_results(path)) == 8
    table = report.precision_table(records.load_results(path)).splitlines()
    assert table[2:] == ["| MRPC | full | 2 | 55.0 | 55.0 | +0.0 [-12.7, +12.7] | 500 → 1000 (2.00x) |",
                         "| RTE | full | 2 | 55.0 | 55.5 | +0.5 [-18.6, +19.6] | 500 → 1000 (2.00x) |"]


def test_a_plan_waits_for_the_runs_it_depends_on_in_another_worker(tmp_path, monkeypatch):
    """A worker that reaches claims-full while another still trains a pilot run waits for
    it (the pilot's choice is not made yet); runs of unrelated plans do not hold it."""
    import threading

    results = tmp_path / "acc.jsonl"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = runner.running_dir(results)
        folder.mkdir(parents=True)
        lock = folder / "a.pid"
        lock.write_text(f"{other.pid} pilot-full")
        (folder / "b.pid").write_text(f"{other.pid} pilot-frozen")
        assert runner.busy_plans(results) == {"pilot-full", "pilot-frozen"}
        polls: list[str] = []
        polled = threading.Event()

        def sleep(s: float) -> None:  # each poll of _wait_for: it is held
            polls.append(threading.current_thread().name)
            polled.set()
            time.sleep(s)

        fake_time = types.SimpleNamespace(**{k: getattr(time, k) for k in ("time", "monotonic",
                                                                           "perf_counter")},
                                          sleep=sleep)
        monkeypatch.setattr(runner, "time", fake_time)
        runner.wait_for("servable", results, poll=0.01)  # depends on neither
        assert polls == []  # returned without a single poll
        done = threading.Event()

        def wait() -> None:
            runner.wait_for("claims-full", results, poll=0.01)
            done.set()

        t = threading.Thread(target=wait, name="claims-full")
        t.start()
        assert polled.wait(30)  # it polls: held by the pilot run in flight
        assert not done.is_set() and lock.exists()
        lock.unlink()  # the pilot run finished
        assert done.wait(30)
        t.join()
        assert set(polls) == {"claims-full"}
    finally:
        other.kill()
        other.wait()
    assert runner.busy_plans(results) == set()  # its holder is dead now


def test_servable_diag_runs_only_where_a_sparse_row_collapses_over_three_seeds():
    """plan servable-diag: child-d and dps at density 0.05, the longer schedule, seed 0, as
    diagnostic runs, on the tasks where one of them loses more than SERVABLE_COLLAPSE points
    to its paper recipe over 3 seeds, and dps at the servable pilot's other lrs; nothing
    while that is short of 3 seeds or under it."""
    import argparse

    args = argparse.Namespace(frozen_epochs=10.0, pilot_lrs="1e-4")
    results = [_rec(t, "full", 1e-4, 90.0, True) for t in ("rte", "mrpc")]
    results += [_rec(t, "child-d@0.05", 1e-3, 58.0, True) for t in ("rte", "mrpc")]
    for s in (0, 1, 2):
        for t in ("stsb", "cola"):
            for m in ("child-d", "dps"):
                results.append(_rec(t, m, 1e-4, 30.0, False, seed=s))
                servable = _rec(t, f"{m}@0.05", 1e-3, 30.0 - (12.0 if (t, m) == ("cola", "dps") else 9.0),
                                False, seed=s, method=m, recipe="servable")
                results.append(servable)
    runs = plans.plan("servable-diag", args, results)
    longer = [r for r in runs if r.epochs == 10.0]
    assert sorted((r.task, r.method, r.density, r.seed, r.lr, r.diag) for r in longer) == [
        ("cola", "child-d", 0.05, 0, 1e-3, True), ("cola", "dps", 0.05, 0, 1e-3, True)]
    # and dps at the servable pilot's other lrs (it serves at child-d's choice), RTE and MRPC
    searched = [r for r in runs if r.epochs != 10.0]
    assert sorted((r.task, r.lr) for r in searched) == sorted(
        (t, lr) for t in ("rte", "mrpc") for lr in choices.SERVABLE_LRS if lr != 1e-3)
    assert {(r.method, r.density, r.seed, r.diag, r.epochs) for r in searched} == {
        ("dps", 0.05, 0, True, 3.0)}
    assert choices.servable_collapses(results) == ["cola"]
    assert choices.servable_collapses([r for r in results if r.seed != 2]) == []  # 2 seeds
    shallow = [dataclasses.replace(r, value=r.value + 3.0) if r.recipe == "servable" else r for r in results]
    assert choices.servable_collapses(shallow) == []  # -9 on cola: under the bar
    assert plans.plan("servable-diag", args, shallow) == []


def test_servable_diag_runs_dps_at_its_own_choice_on_the_other_tasks(tmp_path):
    """Once dps's own search (its run at the shared servable lr and servable-diag's at the
    other points) is complete and chose another lr, servable-diag adds dps at that lr on
    STS-B and CoLA; before that, or when it chose the shared lr, nothing."""
    import argparse

    results = [_rec(t, "full", 1e-4, 90.0, True) for t in ("rte", "mrpc")]
    results += [_rec(t, "child-d@0.05", 1e-3, 58.0, True) for t in ("rte", "mrpc")]
    for s in (0, 1, 2):
        for t in ("rte", "mrpc", "stsb", "cola"):
            results.append(_rec(t, "dps", 1e-4, 30.0, False, seed=s))
            servable = _rec(t, "dps@0.05", 1e-3, 15.0, False, seed=s, method="dps", recipe="servable")
            results.append(servable)
    path = tmp_path / "acc.jsonl"
    args = argparse.Namespace(frozen_epochs=10.0, pilot_lrs="1e-4", results=path, precision="fp32")

    def own(lrs_values):
        path.write_text("")
        for lr, v in lrs_values:
            for t in ("rte", "mrpc"):
                records.append(path, _line(_rec(t, "dps@0.05", lr, v, False, plan="diag", method="dps",
                                                recipe="servable")))
        runs = plans.plan("servable-diag", args, results)
        return [(r.task, r.lr) for r in runs if r.task in ("stsb", "cola") and r.epochs == 3.0]

    assert own([(1e-4, 10.0), (3e-4, 40.0)]) == []  # 3e-3 not in yet
    assert own([(1e-4, 10.0), (3e-4, 40.0), (3e-3, 5.0)]) == [("stsb", 3e-4), ("cola", 3e-4)]
    assert own([(1e-4, 10.0), (3e-4, 12.0), (3e-3, 5.0)]) == []  # the shared 1e-3 (15.0) is best


def _servable_pilot_done(tmp_path):
    """(results file, plan args, records): the servable pilot chose 1e-3 (child-d @ 0.05)."""
    import argparse

    path = tmp_path / "acc.jsonl"
    args = argparse.Namespace(frozen_epochs=10.0, pilot_lrs="1e-4", results=path, precision="fp32")
    return path, args, [_rec(t, "child-d@0.05", lr, v, True) for t in ("rte", "mrpc")
                        for lr, v in ((1e-4, 48.0), (1e-3, 58.0))]


def _dps_search_done(path):
    """dps's own servable search in the results file (diagnostic runs): it chose 3e-4."""
    for lr, v in ((1e-4, 10.0), (3e-4, 40.0), (1e-3, 12.0), (3e-3, 5.0)):
        for t in ("rte", "mrpc"):
            records.append(path, _line(_rec(t, "dps@0.05", lr, v, False, plan="diag", method="dps",
                                            recipe="servable")))


def test_servable_defaults_runs_each_servable_default_in_three_seeds(tmp_path):
    """plan servable-defaults (issue 28): child-f at the servable pilot's lr in seeds 0-2 on
    the claim tasks, dps at its own search's lr in seeds 0-2 (seed 0 is servable-diag's run,
    the same key), child-d on CoLA at the longer schedule in every seed; refused until both
    searches are complete; each seed's runs before the next seed's."""
    path, args, results = _servable_pilot_done(tmp_path)
    with pytest.raises(plans.PlanRefused, match="dps's own search"):
        plans.plan("servable-defaults", args, results)
    _dps_search_done(path)
    runs = plans.plan("servable-defaults", args, results)
    got = [(r.method, r.task, r.lr, r.epochs, r.seed) for r in runs]
    tasks = CLAIM_TASKS
    search = [("child-f", t, lr, 3.0, 3) for lr in (*choices.CHILD_F_SERVABLE_LRS, 1e-3)
              for t in ("rte", "mrpc")]
    assert sorted(got) == sorted(
        [("child-f", t, 1e-3, 3.0, 0) for t in tasks]
        + [("dps", t, 3e-4, 3.0, s) for t in tasks for s in (0, 1, 2)]
        + [("child-d", "cola", 1e-3, 10.0, s) for s in (0, 1, 2)] + search)
    assert got[:4] == [("child-f", t, 1e-3, 3.0, 0) for t in tasks]  # never run before: first
    assert got[-10:] == search  # child-f's own search (seed 3, no claim's), last
    for lr, v in (((2e-5, 50.0), (5e-5, 70.0), (1e-4, 60.0), (2e-4, 55.0), (1e-3, 40.0))):
        for t in ("rte", "mrpc"):
            records.append(path, _line(_rec(t, "child-f@0.05", lr, v, False, seed=3, plan="servable-defaults",
                                            method="child-f", recipe="servable")))
    chosen = plans.plan("servable-defaults", args, records.load_results(path) + results)
    # once it has chosen: child-f's 3 seeds at its own lr
    assert [(r.method, r.task, r.lr, r.seed) for r in chosen[-12:]] == [
        ("child-f", t, 5e-5, s) for s in (0, 1, 2) for t in tasks]
    assert {(r.recipe, r.density) for r in runs} == {("servable", 0.05)}
    assert runs[0].name == "child-f@0.05"


def test_child_f_servable_search_chooses_on_the_pilot_seed_once_complete():
    def rec(t, lr, v, seed=3):
        return _rec(t, "child-f@0.05", lr, v, False, seed=seed, plan="servable-defaults")

    done = [rec(t, lr, 60.0 + 1e4 * lr if lr < 1e-3 else 50.0)
            for lr in (*choices.CHILD_F_SERVABLE_LRS, 1e-3) for t in ("rte", "mrpc")]
    assert choices.child_f_servable_best(done) == 2e-4
    assert choices.child_f_servable_best(done[:-1]) is None  # the default's MRPC run not in
    assert choices.child_f_servable_best([*done[:-1], rec("mrpc", 1e-3, 99.0, seed=0)]) is None


# -- issue 28: the papers at their own budgets ------------------------------------------------


def test_keys_of_the_runs_made_before_issue_28_are_unchanged():
    """Batch 16 and the protocol's 10 % warm-up leave a key as it was; anything else shows."""
    base = "rte|child-d|paper|lr=0.0001|ep=3|seed=0|n=None"
    assert Run("rte", "child-d", lr=1e-4).key == base
    assert Run("rte", "child-d", lr=1e-4, warmup=0.1).key == base
    assert Run("rte", "child-d", lr=1e-4, warmup=0.0).key == base + "|wu=0"
    assert Run("rte", "eh-ft", recipe="paper", lr=1e-4, batch=32, head_init="pet:lora",
                        head_init_epochs=6, precision="bf16").key == (
        "rte|eh-ft+pet:lora|paper|lr=0.0001|ep=3|seed=0|n=None|bs=32|s1=6|bf16")


def test_issue_11s_claims_keep_child_tuning_at_the_warm_up_they_ran_with():
    """Child-Tuning's paper recipe is now without warm-up (its code); the claims plan that ran
    it at 10 % keeps saying so, under its old keys."""
    import argparse

    from polyhead.trainer.table import METHODS

    assert METHODS["child-d"].paper.warmup == METHODS["child-f"].paper.warmup == 0.0
    assert METHODS["dps"].paper.warmup == METHODS["full"].paper.warmup == 0.1
    args = argparse.Namespace(frozen_epochs=10.0, pilot_lrs="1e-4", accept_missed_floor=[])
    results = [_rec(t, "full", 1e-4, 90.0, True) for t in ("rte", "mrpc")]
    runs = plans.plan("claims", args, results)
    child = [r for r in runs if r.method in ("child-d", "child-f")]
    assert child and {r.warmup for r in child} == {0.1} and not any("wu=" in r.key for r in child)


def _pilot_rec(task, method, lr, value):
    run = dense_run(task, method, lr, PILOT_SEED)
    return _rec(task, method, lr, value, True, seed=PILOT_SEED, plan="pilot-own-lr", key=run.key)


def test_each_dense_method_searches_its_own_lr_on_a_seed_no_claim_uses():
    import argparse

    args = argparse.Namespace(frozen_epochs=10.0, pilot_lrs="1e-4")
    pilot = plans.plan("pilot-own-lr", args, [])
    assert len(pilot) == 4 * len(choices.OWN_LRS) * 2 == 32
    assert {r.seed for r in pilot} == {PILOT_SEED} and {r.task for r in pilot} == {"rte", "mrpc"}
    for m in DENSE:  # the same size as full's search, around each paper's lr (4e-5, 2e-5)
        lrs = sorted(r.lr for r in pilot if r.method == m and r.task == "rte")
        assert lrs == sorted(choices.OWN_LRS) and lrs[0] <= 2e-5 < 4e-5 < lrs[-1]
    assert {(r.method, r.warmup) for r in pilot} == {("full", None), ("dps", None), ("child-d", 0.0),
                                                     ("child-f", 0.0)}
    with pytest.raises(plans.PlanRefused, match="pilot-own-lr"):
        plans.plan("claims-own-lr", args, [])
    means = {"full": 2e-4, "child-d": 5e-5, "child-f": 1e-4}  # each method's peak (dps incomplete)
    results = [_pilot_rec(t, m, lr, 80.0 - abs(lr - peak) * 1e4)
               for m, peak in means.items() for lr in choices.OWN_LRS for t in ("rte", "mrpc")]
    results += [_pilot_rec("rte", "dps", lr, 70.0) for lr in choices.OWN_LRS]  # MRPC not in yet
    assert {m: choices.own_lr_best(results, m) for m in DENSE} == {**means, "dps": None}
    claims = plans.plan("claims-own-lr", args, results)
    assert {(r.method, r.lr) for r in claims} == set(means.items())
    assert {r.seed for r in claims} == {0, 1, 2} and {r.task for r in claims} == set(CLAIM_TASKS)
    assert not {r.key for r in claims} & {r.key for r in pilot}  # no run is both a pilot and a claim
    full_claims = {r.key for r in claims if r.method == "full"}
    assert "rte|full|paper|lr=0.0002|ep=3|seed=0|n=None" in full_claims  # full: issue 11's keys


def test_eh_ft_plan_pairs_each_pet_with_the_random_head_baseline():
    import argparse

    runs = plans.plan("eh-ft", argparse.Namespace(frozen_epochs=10.0, pilot_lrs="1e-4"), [])
    assert len(runs) == 36 and len({r.key for r in runs}) == 36
    assert {r.name for r in runs} == {"eh-ft", "eh-ft+pet:lora", "eh-ft+pet:bitfit"}
    assert {(r.task, r.head_init_epochs) for r in runs if r.head_init} == {
        ("rte", 6.0), ("mrpc", 6.0), ("stsb", 2.0), ("cola", 2.0)}  # the paper's stage-1 epochs
    assert {(r.recipe, r.batch, r.lr, r.epochs) for r in runs} == {("paper", 32, plans.EHFT_LR, 3.0)}
    assert all(r.head_init_epochs is None for r in runs if r.head_init is None)


def test_pasta_paper_plan_runs_150_epochs_with_a_checkpoint(tmp_path):
    import argparse

    args = argparse.Namespace(frozen_epochs=10.0, pilot_lrs="1e-4", results=tmp_path / "acc.jsonl")
    with pytest.raises(plans.PlanRefused, match="pasta pilot"):
        plans.plan("pasta-paper", args, [])
    results = [_rec(t, "pasta", lr, v, True, epochs=10) for t in ("rte", "mrpc")
               for lr, v in ((1e-3, 50.0), (3e-3, 60.0), (1e-2, 55.0))]
    runs = plans.plan("pasta-paper", args, results)
    assert [(r.task, r.epochs, r.batch, r.lr, r.seed) for r in runs] == [
        (t, 150, 32, 3e-3, 0) for t in ("cola", "rte", "mrpc", "stsb")]
    paths = {checkpoint_of(args.results, r) for r in runs}
    assert len(paths) == 4 and all(p.parent == tmp_path / "acc.jsonl.checkpoints" for p in paths)
    assert checkpoint_of(args.results, Run("rte", "pasta", recipe="servable", epochs=10)) is None
    assert checkpoint_of(args.results, Run("rte", "full", epochs=150)) is None


def test_issue_28_runs_stay_out_of_issue_11s_tables():
    results = [_rec(t, "full", 1e-4, 90.0, True) for t in ("rte", "mrpc")]
    results.append(_rec("rte", "child-d", 1e-4, 61.0, False, plan="claims"))
    new = _rec("rte", "child-d", 5e-5, 70.0, False, plan="claims-own-lr")
    assert new not in choices.claim_runs([*results, new])
    assert choices.missed_floors([*results, _rec("mrpc", "full", 1e-4, 10.0, False, plan="claims-own-lr")],
                                 1e-4) == []


def test_best_dev_epoch_is_recorded_beside_the_last():
    hist = [{"epoch": 1, "accuracy": 0.5}, {"epoch": 2, "accuracy": 0.7}, {"epoch": 3, "accuracy": 0.7},
            {"epoch": 4, "accuracy": 0.6}, {"selected_epoch": 2}]
    assert best_dev(hist, "accuracy") == (2, 70.0)
    assert best_dev([], "f1") is None


def test_issue_28_tables_give_each_interval_its_degrees_of_freedom():
    from bench import papers_budgets

    assert papers_budgets.interval([1.0, 2.0, 3.0]).endswith("(df 2)")
    assert papers_budgets.interval([1.0]) == "+1.00 (1 seed)"
    found = []
    for s, (base, lora) in enumerate(((50.0, 52.0), (60.0, 61.0), (55.0, 58.0))):
        for t in CLAIM_TASKS:
            for h, v in ((None, base), ("pet:lora", lora)):
                run = Run(t, "eh-ft", recipe="paper", seed=s, batch=32, head_init=h)
                found.append((run, _of(run, v)))
    table = papers_budgets.paired_table(found, lambda r: r.name, "eh-ft")
    row = next(line for line in table.splitlines() if line.startswith("| eh-ft+pet:lora"))
    assert "+2.00 [" in row and "(df 2)" in row  # per seed: +2, +1, +3
    assert "52.0 ± 0.0 (1)" not in row and "(3)" in row


def test_pasta_curves_draw_each_runs_dev_metric_against_epoch():
    import xml.etree.ElementTree as ET

    from bench import papers_budgets

    hist = [{"epoch": e, "accuracy": a} for e, a in ((1, 0.5), (2, 0.6), (3, 0.55))]
    run = Run("rte", "pasta", recipe="paper", epochs=150, batch=32)
    svg = papers_budgets.curves_svg([(run, _of(run, 55.0, metric="accuracy", dev_history=tuple(hist)))])
    root = ET.fromstring(svg)
    (line,) = [e for e in root.iter() if e.tag.endswith("polyline")]
    ys = [float(p.split(",")[1]) for p in line.get("points").split()]
    assert len(ys) == 3 and ys[1] < ys[2] < ys[0]  # 60 highest (smallest y), then 55, then 50
    assert "best 60.0 at epoch 2" in svg and "last 55.0" in svg


def test_a_workers_records_name_the_commit_it_started_on(tmp_path):
    """A commit merged into the worktree while a worker runs is not the code it runs: the
    commit is read once per process."""
    def git(*a):
        subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f").write_text("1")
    git("add", "f")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    first = runner.commit_of(tmp_path)
    (tmp_path / "f").write_text("2")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
    assert runner.commit_of(tmp_path) == first and len(first) == 40


def test_issue_28_servable_pilot_and_pasta_tables():
    from bench import papers_budgets

    found = [(run, _of(run, v)) for run, v in (
        (Run("cola", "child-d", recipe="servable", lr=1e-3, epochs=10, seed=s), v)
        for s, v in ((0, 23.0), (1, 20.0), (2, 26.0)))]
    paper = {("child-d", "cola", s): 25.0 for s in (0, 1, 2)}
    pilot_run = Run("cola", "child-d", recipe="servable", lr=1e-3, epochs=10, seed=3)
    found.append((pilot_run, _of(pilot_run, 1.0)))
    row, search = papers_budgets.servable_defaults_table(found, paper).splitlines()[2:]
    assert search.startswith("| child-d@0.05 (search) | 0.001 | 10 | CoLA | 1.0 (1) | 3: 1.0 |")
    assert "| child-d@0.05 | 0.001 | 10 | CoLA | 23.0 ± 3.0 (3) | 0: 23.0, 1: 20.0, 2: 26.0 |" in row
    assert "-2.00 [" in row and "(df 2)" in row
    pilot = [(run, _of(run, v)) for run, v in ((dense_run(t, "dps", lr, 3), v) for t, lr, v in
             (("rte", 1e-4, 50.0), ("mrpc", 1e-4, 80.0), ("rte", 2e-4, 55.0)))]
    table = papers_budgets.own_lr_pilot_table(pilot)
    assert "| dps | 0.0001 | 50.0 | 80.0 | 65.0 |" in table and "| dps | 0.0002 | 55.0 | — | — |" in table
    hist = [{"epoch": e, "f1": 0.8 + e / 1000} for e in range(1, 31)] + [{"selected_epoch": 30}]
    run = Run("mrpc", "pasta", recipe="paper", epochs=150, batch=32)
    (line,) = papers_budgets.pasta_table([(run, _of(run, 83.0, metric="f1", dev_history=tuple(hist)))]
                                         ).splitlines()[2:]
    assert line.startswith("| MRPC | 30 | 83.0 | 83.0 (30) | 1: 80.1, 10: 81.0, 20: 82.0, 30: 83.0 |")


def test_structure_seeds_runs_columns_at_each_servable_default_and_pairs_them(tmp_path):
    """plan structure-seeds (issue 29): whole columns for child-d (servable pilot's lr) and
    dps (its own search's lr) in seeds 0-2 on the claim tasks, child-f only once its search
    chose; the table pairs each with the single-weight run of the same key, diagnostic runs
    (dps's seed 0) included."""
    from bench import papers_budgets

    path, args, results = _servable_pilot_done(tmp_path)
    with pytest.raises(plans.PlanRefused, match="dps's own servable search"):
        plans.plan("structure-seeds", args, results)
    _dps_search_done(path)
    runs = plans.plan("structure-seeds", args, results)
    assert [(r.method, r.lr, r.seed, r.task) for r in runs] == [
        (m, lr, s, t) for m, lr in (("child-d", 1e-3), ("dps", 3e-4)) for s in (0, 1, 2) for t in CLAIM_TASKS]
    assert {(r.recipe, r.density, r.structure) for r in runs} == {("servable", 0.05, "columns")}
    assert runs[0].name == "child-d@0.05/columns" and runs[0].key != dataclasses.replace(
        runs[0], structure="entries").key
    for lr, v in (((2e-5, 50.0), (5e-5, 70.0), (1e-4, 60.0), (2e-4, 55.0), (1e-3, 40.0))):
        for t in ("rte", "mrpc"):
            results.append(_rec(t, "child-f@0.05", lr, v, False, seed=3, plan="servable-defaults",
                                method="child-f", recipe="servable"))
    child_f = plans.plan("structure-seeds", args, results)[-12:]
    assert [(r.method, r.lr) for r in child_f] == [("child-f", 5e-5)] * 12
    # the table: seed by seed against the same key's single weights, a diag record included
    found, everything = [], []
    for run in runs[:12]:  # child-d
        col = 1.0 + run.seed  # columns beat single weights by 1, 2, 3 points on every task
        found.append((run, _of(run, 60.0 + col)))
        single = dataclasses.replace(run, structure="entries")
        everything.append(_of(single, 60.0, plan="diag" if run.seed == 0 else "servable"))
    table = papers_budgets.structure_seeds_table([*found, (runs[12], _of(runs[12], 50.0))], everything)
    lines = table.splitlines()[2:]
    assert lines[0].startswith("| child-d @ 0.001 | RTE | 60.0 ± 0.0 (3) | 62.0 ± 1.0 (3) | +2.00 [")
    assert "(df 2)" in lines[0] and lines[4].startswith("| child-d @ 0.001 | 4-task average, per seed |")
    assert len(lines) == 5  # dps's run has no single-weight pair: no row
