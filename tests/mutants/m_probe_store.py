"""Planted bugs for what an abuse probe (2026-12-07, eighth session) found in the store,
the Admin API and the dataset readers."""

from __future__ import annotations

from tests.mutants import Mutant

TT = "tests/test_tenants.py::"
TJ = "tests/test_jobs.py::"
TD = "tests/test_train_data.py::"

MUTANTS: list[Mutant] = [
    Mutant("probe-restore-skips-quota", "polyhead/store/catalog.py",
           "            tenancy.check_publish(c, task_id, sum(int(v[3]) for v in versions), new_task=True)\n",
           "",
           (TT + "test_a_restore_is_held_to_the_tenant_and_its_quotas",),
           "RestoreTask took a tenant past max_tasks (5 tasks under a quota of 1)"),
    Mutant("probe-deleted-tenant-keeps-deleted-tasks", "polyhead/store/tenancy.py",
           '    for table in ("deleted_versions", "deleted_tasks"):\n'
           '        c.execute(f"DELETE FROM {table} WHERE {where}", params)\n',
           "",
           (TT + "test_a_restore_is_held_to_the_tenant_and_its_quotas",),
           "a tenant made again with a deleted one's name restored the old owner's model"),
    Mutant("probe-tenant-deleted-under-running-job", "polyhead/store/tenancy.py",
           "    if unfinished:\n", "    if False:\n",
           (TJ + "test_deleting_a_tenant_waits_for_its_jobs_then_drops_them",),
           "a tenant was deleted while its training job ran"),
    Mutant("probe-deleted-tenant-keeps-jobs", "polyhead/store/tenancy.py",
           '    c.execute(f"DELETE FROM jobs WHERE {where}", params)\n', "",
           (TJ + "test_deleting_a_tenant_waits_for_its_jobs_then_drops_them",),
           "a tenant made again with a deleted one's name listed the old owner's jobs"),
    Mutant("probe-labels-scanned", "polyhead/trainer/data.py",
           "allowed = None if labels is None else frozenset(labels)", "allowed = labels",
           (TD + "test_a_dev_set_is_checked_against_its_labels_without_scanning_them",),
           "an 80,000-label dev set took 47 s to upload: each row searched the label list"),
    Mutant("probe-denormal-weight", "polyhead/store/tenancy.py",
           "    return MIN_WEIGHT <= weight <= MAX_WEIGHT  # (NaN compares False)",
           "    return 0 < weight < float('inf')",
           (TT + "test_fair_share_weights_in_the_store",),
           "a weight of 5e-324 made every tenant's virtual time infinite (sharing 50/50)"),
    Mutant("probe-key-life-overflow", "polyhead/admin.py",
           "        if not 0 <= request.expires_in_s <= MAX_KEY_LIFE_S:\n",
           "        if not request.expires_in_s >= 0:\n",
           (TT + "test_admin_refuses_numbers_out_of_range",),
           "CreateKey with expires_in_s=1e12 was INTERNAL"),
    Mutant("probe-audit-limit-negative", "polyhead/admin.py",
           "        if not 0 <= request.limit <= 10_000:\n", "        if False:\n",
           (TT + "test_admin_refuses_numbers_out_of_range",),
           "ListAudit limit=-1 returned the whole trail"),
    Mutant("probe-csv-field-internal", "polyhead/trainer/data.py",
           "    except csv.Error as e:  # e.g. a field over csv's limit",
           "    except KeyboardInterrupt as e:  # e.g. a field over csv's limit",
           (TD + "test_files_past_the_readers_limits_are_named_not_internal",),
           "a CSV field over 131,072 characters was INTERNAL"),
    Mutant("probe-json-depth-internal", "polyhead/trainer/data.py",
           '            except RecursionError:\n'
           '                raise DataError(path, n, "JSON nested too deeply") from None\n',
           "",
           (TD + "test_files_past_the_readers_limits_are_named_not_internal",),
           "a deeply nested JSON line was INTERNAL"),
    Mutant("probe-audit-forged-line", "polyhead/store/tenancy.py",
           "(r.at, r.key_id, r.tenant, r.rpc, printable(r.task_id), printable(r.version),",
           "(r.at, r.key_id, r.tenant, r.rpc, r.task_id, printable(r.version),",
           (TT + "test_an_audit_record_stays_one_line",),
           "a task id with a newline forged a whole line of `polyhead audit`"),
]
