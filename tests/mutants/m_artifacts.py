"""Planted bugs for issue 30's artifact pricing, publish checks, overwrites and deletes."""

from __future__ import annotations

from tests.mutants import Mutant

PRICING = "tests/test_artifact_pricing.py"
RETENTION = "tests/test_store_retention.py"
RPCS = "tests/test_publish_rpcs.py"

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
    Mutant("artifacts-replace-kind-ignored", "store/catalog.py",
           "    if row is not None and row[0] != kind and not replace_kind:",
           "    if False:",
           (f"{RETENTION}::test_a_task_changes_kind_only_with_replace_kind",
            f"{RPCS}::test_kind_changes_probe_and_restore"),
           "ImportPeft onto a pasta task silently made its next version a LoRA task"),
    Mutant("artifacts-probe-skipped", "store/store.py",
           "        if self.probe is not None:\n            self.probe(artifact)\n", "",
           (f"{RETENTION}::test_the_probe_refuses_an_artifact_that_serves_nan",
            f"{RPCS}::test_kind_changes_probe_and_restore",
            f"{RPCS}::test_import_peft_b5_alpha_1e30_is_refused"),
           "B5: an artifact whose logits overflow (lora_alpha 1e30) published and served NaN"),
    Mutant("artifacts-limits-ignored", "store/store.py",
           "        self.limits.check(artifact.measures())\n", "",
           (f"{RETENTION}::test_limits_refuse_naming_the_limit",
            f"{RPCS}::test_configured_limits_refuse_naming_themselves"),
           "no configured limit on outputs, LoRA rank or sparse density"),
    Mutant("artifacts-delete-drops-bytes", "store/sql.py",
           'c.execute("SELECT version FROM versions UNION "\n'
           '                                    "SELECT version FROM deleted_versions")',
           'c.execute("SELECT version FROM versions")',
           (f"{RETENTION}::test_a_delete_keeps_everything_until_restored",),
           "DeleteTask removed the stored bytes, so it could not be undone"),
    Mutant("artifacts-delete-not-kept", "store/catalog.py",
           "            self._changed(c)\n            return DeletedTask(task_id, when, until, n)",
           '            c.execute("DELETE FROM deleted_tasks WHERE task_id = ?", (task_id,))\n'
           "            self._changed(c)\n            return DeletedTask(task_id, when, until, n)",
           (f"{RETENTION}::test_a_delete_keeps_everything_until_restored",
            f"{RPCS}::test_kind_changes_probe_and_restore"),
           "a delete that cannot be restored"),
    Mutant("artifacts-gc-purges-unexpired", "store/catalog.py",
           '"SELECT task_id, deleted_at FROM deleted_tasks WHERE expires_at <= ?"',
           '"SELECT task_id, deleted_at FROM deleted_tasks WHERE expires_at >= ?"',
           (f"{RETENTION}::test_gc_purges_deletes_past_their_retention",),
           "gc purged deletes still within their retention (and kept the expired ones)"),
    Mutant("artifacts-no-schema-upgrade", "store/sqlite.py",
           "            self._writing(lambda c: sql.upgrade(c, sql.UPGRADE))", "            pass",
           (f"{RETENTION}::test_a_sqlite_catalog_from_before_is_upgraded",),
           "an existing store left at schema 1: every delete fails on the missing tables"),
    Mutant("artifacts-restore-open", "server/_private/replica.py",
           '@rpc("registry", pb.VersionInfo)\n    async def RestoreTask',
           '@rpc("inference", pb.VersionInfo)\n    async def RestoreTask',
           (f"{RPCS}::test_restore_task_needs_the_registry_token",),
           "RestoreTask callable without the Registry token"),
]
