"""Issue 26's planted bugs: a method's options, checked where they enter and read where they act."""

from __future__ import annotations

from tests.mutants import Mutant

OPT = "tests/test_method_options.py::"
T = "tests/test_train.py::"

MUTANTS = [
    Mutant("options-lora-rank-unchecked", "polyhead/trainer/algos/lora.py",
           'kind_config(lambda: LoraConfig(r=self.lora_r, alpha=self.lora_alpha), "--lora-r/--lora-alpha")',
           "LoraConfig  # the kind's limits not applied",
           (OPT + "test_a_lora_rank_over_the_kinds_limit_fails_when_the_flags_are_parsed",),
           "`--lora-r 1000` trained fully and was then refused at export"),
    Mutant("options-prefix-length-ignored", "polyhead/trainer/algos/prefix.py",
           "cfg.options_as(PrefixOptions).kind_config()", "PrefixOptions().kind_config()",
           (OPT + "test_prefix_length_reaches_the_model",),
           "--num-prefix parsed into prefix's options but the model built at the default length"),
    Mutant("options-lora-rank-not-in-peft", "polyhead/trainer/models.py",
           "r=opts.lora_r, lora_alpha=opts.lora_alpha,", "r=8, lora_alpha=opts.lora_alpha,",
           (OPT + "test_lora_rank_reaches_peft_and_the_head_init_stage",),
           "--lora-r checked but PEFT's LoraConfig given the default rank"),
    Mutant("options-head-init-stage-defaults", "polyhead/trainer/run.py",
           "warmup=cfg.warmup_frac, options=cfg.head_init_options,",
           "warmup=cfg.warmup_frac, options=None,",
           (OPT + "test_lora_rank_reaches_peft_and_the_head_init_stage",),
           "--head-init pet:lora's stage 1 drops --lora-r (it reached stage 1 before the options moved)"),
    Mutant("options-foreign-flag-ignored", "polyhead/trainer/config.py",
           "_check(values[k] == defaults[k],", "_check(True,",
           (OPT + "test_another_methods_flag_is_refused_by_name",),
           "`--method pasta --density 0.2` trains pasta and silently drops the flag"),
    Mutant("options-record-loses-keys", "polyhead/trainer/config.py",
           "        out.update(_option_defaults())\n", "",
           (OPT + "test_the_flat_record_keeps_the_stored_runs_keys",),
           "a pasta run's record without 'density': bench.accuracy's structure table reads it"),
    Mutant("options-child-f-reports-dense", "polyhead/trainer/algos/child_f.py",
           'return sparse, {"sparsify": report}', 'return metrics, {"sparsify": report}',
           (T + "test_child_f_records_sparsifying_cost",),
           "child-f servable reports the dense model's score, not the stored cut's"),
    Mutant("options-dps-budget-not-exported", "polyhead/trainer/algos/dps.py",
           "model = DenseModel(ctx.backbone, cfg, ctx.head, density=opts.export_density(cfg),",
           "model = DenseModel(ctx.backbone, cfg, ctx.head, density=1.0,",
           (T + "test_sparse_diff_is_within_budget_and_reproduces_the_model[dps]",),
           "dps's --density not reaching the stored diff's config"),
    Mutant("options-columns-for-paper", "polyhead/trainer/algos/sparse_budget.py",
           'if self.mask_structure == "columns" and cfg.paper:', "if False:",
           (T + "test_column_masks_only_for_the_servable_sparse_methods",),
           "--mask-structure columns accepted for the paper recipe, which stores every weight"),
    Mutant("options-record-writes-nones", "polyhead/trainer/record.py",
           "out = {k: v for k, v in out.items() if v is not None}", "out = dict(out)",
           (OPT + "test_the_training_record_writes_the_keys_manifests_hold",),
           "manifests gain null keys (regression_scale, head_init_stage) older ones never held"),
]
