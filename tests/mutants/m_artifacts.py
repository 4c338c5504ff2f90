"""Planted bugs for issue 30's artifact pricing, publish checks, overwrites and deletes."""

from __future__ import annotations

from tests.mutants import Mutant

PRICING = "tests/test_artifact_pricing.py"

MUTANTS: list[Mutant] = [
    Mutant("artifacts-head-one-table", "methods/heads.py",
           'return "head" if c <= BASE_OUTPUTS else f"head/{1 << (c - 1).bit_length()}"',
           'return "head"',
           (f"{PRICING}::test_a_wide_task_costs_its_own_rows_only[10k-labels]",),
           "B4: one head table for every head, so a 10,000-label head widens every task's row"),
    Mutant("artifacts-lora-one-table", "methods/lora.py",
           'return self.name if r <= BASE_RANK else f"{self.name}/r{1 << (r - 1).bit_length()}"',
           "return self.name",
           (f"{PRICING}::test_a_wide_task_costs_its_own_rows_only[rank-512]",),
           "B4: one LoRA table for every rank, so a rank-512 task pads every LoRA row to 512"),
    Mutant("artifacts-table-never-shrinks", "methods/engine.py",
           "            del tables[key]\n", "            pass\n",
           (f"{PRICING}::test_a_wide_task_costs_its_own_rows_only[10k-labels]",
            f"{PRICING}::test_deleted_and_evicted_wide_tasks_give_their_tables_back"),
           "B4: a wide task's table stays allocated after it is deleted or evicted"),
]
