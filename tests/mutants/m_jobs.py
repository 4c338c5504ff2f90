"""Planted bugs for training jobs (issue 25): the store's job rules and the upload checks."""

from __future__ import annotations

from tests.mutants import Mutant

T = "tests/test_jobs.py::"

MUTANTS: list[Mutant] = [
    Mutant("jobs-dead-worker-queued-twice", "polyhead/store/jobs.py",
           "if job.state not in LEASED or job.attempt != attempt:  # reported already",
           "if job.attempt != attempt:  # reported already",
           (T + "test_a_dead_worker_is_retried_once_then_failed_with_the_reason",),
           "a second report of the same dead worker queued the job again (found while testing)"),
    Mutant("jobs-cancel-loses-to-publish", "polyhead/store/jobs.py",
           "            if job.state != RUNNING or job.attempt != attempt:\n                return False",
           "            if job.attempt != attempt:\n                return False",
           (T + "test_cancel_queued_running_and_refused_once_publishing",),
           "a job cancelled while training would still publish at its end"),
    Mutant("jobs-claim-twice", "polyhead/store/jobs.py",
           '"SELECT job_id FROM jobs WHERE state = ? ORDER BY created_at, job_id "',
           '"SELECT job_id FROM jobs WHERE state IN (?, \'running\') ORDER BY created_at, job_id "',
           (T + "test_claim_is_exclusive_and_counts_attempts",),
           "two schedulers would both run a job already claimed"),
    Mutant("jobs-binary-upload-no-line", "polyhead/trainer/uploads.py",
           "    _check_text(filename, data)\n", "",
           (T + "test_bad_datasets_name_the_line",),
           "binary garbage and an empty file were refused without naming the line"),
    Mutant("jobs-watch-misses-the-end", "polyhead/server/_private/training.py",
           "            ended = (await self._on(self.book.job, job_id)).state in TERMINAL\n"
           "            events = await self._on(self.book.events, job_id, seq)\n",
           "            events = await self._on(self.book.events, job_id, seq)\n"
           "            ended = (await self._on(self.book.job, job_id)).state in TERMINAL\n",
           (T + "test_watch_returns_the_last_event_of_a_job_that_ends_between_polls[sqlite]",),
           "WatchJob ended on the last step when the job finished between its two reads "
           "(found by CI: test_cancel_while_running_publishes_nothing)"),
    Mutant("datasets-any-tenant-names-any", "polyhead/server/_private/training.py",
           "    return None if caller.admin else caller.tenant", "    return None",
           ("tests/test_tenants.py::test_the_matrix_over_grpc_and_http",),
           "a tenant's key trained on (and read the labels of) another tenant's dataset by its id"),
    Mutant("datasets-no-quota", "polyhead/store/jobs.py",
           "                if int(held) + record.nbytes > quota_bytes:", "                if False:",
           (T + "test_a_tenants_datasets_stay_within_its_quota",),
           "one tenant's uploads filled the store's database without bound"),
    Mutant("datasets-retention-drops-a-queued-jobs", "polyhead/store/jobs.py",
           "        if dataset_id not in used and tenant in (None, owner):",
           "        if tenant in (None, owner):",
           (T + "test_retention_drops_uploads_no_unfinished_job_names",),
           "retention dropped the dataset a queued job was about to train on"),
    Mutant("datasets-upload-never-prunes", "polyhead/store/jobs.py",
           "            if keep_s is not None:\n                prune(",
           "            if False:\n                prune(",
           (T + "test_retention_drops_uploads_no_unfinished_job_names",),
           "expired uploads kept counting against their tenant's quota for ever"),
    Mutant("datasets-kept-after-their-tenant", "polyhead/store/tenancy.py",
           '    prune(c, "9999", name)', "    pass",
           (T + "test_deleting_a_tenant_drops_its_datasets",),
           "a deleted tenant's datasets stayed in the store"),
    Mutant("datasets-upgrade-leaves-unnamed-unowned", "polyhead/store/sql.py",
           "    _UNOWNED_TO_DEFAULT)\nSCHEMA =", ")\nSCHEMA =",
           (T + "test_a_schema_5_catalog_gets_its_dataset_owners",),
           "an upgraded store's datasets that no job had named belonged to no one"),
]
