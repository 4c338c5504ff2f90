"""The accuracy study's planted bugs (bench/study/): the runner's claims and resume, the
paired statistics, and the evidence behind the trainer's defaults."""

from __future__ import annotations

from tests.mutants import Mutant

A = "tests/test_accuracy_study.py::"

MUTANTS = [
    Mutant("study-stale-lock-kept", "bench/study/runner.py",
           "lock.unlink(missing_ok=True)  # its holder died: take it over\n            continue",
           "return None  # its holder died: take it over",
           (A + "test_dead_holders_claim_is_taken_over",),
           "a worker killed mid-run leaves its lock file; nobody ever trains that run again"),
    Mutant("study-unpaired-difference", "bench/study/stats.py",
           "return [v - base[k] for k, v in values if k in base]",
           "return [v - statistics.mean(base.values()) for k, v in values if k in base]",
           (A + "test_paired_differences_pair_each_seed_with_the_same_seeds_reference",),
           "a method's difference from full taken against full's mean, not the same seed's run: "
           "the seeds' shared spread widens every interval"),
    Mutant("study-resume-reruns-diag", "bench/study/records.py",
           "return {r.key for r in load_results(path) + load_results(path, diag=True)}",
           "return {r.key for r in load_results(path)}",
           (A + "test_a_resumed_study_never_trains_a_finished_run_again",),
           "a resumed study trains its finished diagnostic runs (10 epochs each) again"),
    Mutant("study-first-lines-as-bf16", "bench/study/records.py",
           'precision=c.get("precision", "fp32")', 'precision=c.get("precision", "bf16")',
           (A + "test_a_line_from_before_the_plan_and_precision_fields_reads_back_as_written_then",),
           "the study's first 62 lines (no precision field; trained in fp32) read as bf16 runs: the fp32 "
           "study loses its full and servable pilots and its first claims, and trains them again"),
    Mutant("study-child-f-default-from-child-d", "bench/study/evidence.py",
           '("child-f", "servable"): CHILD_F_SEARCH,', '("child-f", "servable"): SERVABLE_PILOT,',
           (A + "test_each_default_follows_its_own_search",),
           "child-f's servable default checked against child-d's pilot (1e-3, where child-f's "
           "dense model learned nothing) instead of its own search"),
]
