"""Issue 28's planted bugs: the papers' recipes as their code runs them, and runs that resume."""

from __future__ import annotations

from tests.mutants import Mutant

R = "tests/test_train_recipes.py::"
A = "tests/test_accuracy_study.py::"

MUTANTS = [
    Mutant("ehft-head-tanh", "polyhead/trainer/algos/eh_ft_model.py",
           'return F.linear(F.relu(F.linear(cls, h["head__dense__weight"]',
           'return F.linear(torch.tanh(F.linear(cls, h["head__dense__weight"]',
           (R + "test_eh_ft_head_is_a_2048_relu_mlp_on_the_first_token",),
           "EH-FT's head is d->2048->ReLU->C; the study's earlier one was a tanh (pooler) head"),
    Mutant("ehft-adam-betas", "polyhead/trainer/table.py", "betas=(0.9, 0.98), eps=1e-6, clip=0.1)",
           "betas=(0.9, 0.999), eps=1e-6, clip=0.1)",
           (R + "test_eh_ft_recipe_is_the_papers_optimiser_in_both_stages",),
           "EH-FT's optimiser is AdamW (0.9, 0.98); the study ran HF's defaults"),
    Mutant("ehft-bitfit-head-bias", "polyhead/trainer/algos/eh_ft_model.py",
           'head = {k: torch.zeros_like(v) if k.endswith("bias") else v for k, v in head.items()}',
           "head = dict(head)",
           (R + "test_eh_ft_stage_one_trains_the_pet_and_head_and_stage_two_starts_from_them",),
           "EH-FT's BitFit path copies the head's weights only (NEW_MLPHeadMixin)"),
    Mutant("pasta-paper-clips", "polyhead/trainer/table.py",
           "weight_decay=0.0, eps=1e-6,\n                                   clip=None)",
           "weight_decay=0.0, eps=1e-6,\n                                   clip=1.0)",
           (R + "test_pasta_paper_recipe_never_clips",),
           "PASTA's main_glue.py never clips gradients; the study clipped at 1.0"),
    Mutant("resume-without-rng", "polyhead/trainer/loop.py",
           '        torch.set_rng_state(saved["rng"])\n', "",
           (R + "test_a_stopped_run_resumes_from_its_epoch_checkpoint",),
           "a resumed run must draw the dropout masks an unbroken run draws"),
    Mutant("child-tuning-warmup", "polyhead/trainer/table.py",
           "_CHILD_PAPER = dataclasses.replace(_DENSE_PAPER, warmup=0.0)",
           "_CHILD_PAPER = dataclasses.replace(_DENSE_PAPER, warmup=0.1)",
           (A + "test_issue_11s_claims_keep_child_tuning_at_the_warm_up_they_ran_with",),
           "Child-Tuning's code never applies run.sh's warm-up (its own scheduler)"),
    Mutant("pilot-seed-is-a-claim-seed", "bench/study/runs.py", "PILOT_SEED = 3", "PILOT_SEED = 0",
           (A + "test_each_dense_method_searches_its_own_lr_on_a_seed_no_claim_uses",),
           "full's pilot winner served as its seed 0 claim (a winner's curse)"),
    Mutant("commit-read-per-record", "bench/study/runner.py", "@functools.cache\ndef commit_of(",
           "def commit_of(",
           (A + "test_a_workers_records_name_the_commit_it_started_on",),
           "a worker's records named whatever was merged while it ran, not the code it ran"),
]
