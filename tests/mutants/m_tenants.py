"""Planted bugs for issue 24: tenants, API keys, isolation, quotas, the key cache's feed."""

from __future__ import annotations

from tests.mutants import Mutant

T = "tests/test_tenants.py::"
MATRIX = T + "test_the_matrix_over_grpc_and_http[sqlite]"
REVOKED = T + "test_a_key_revoked_through_one_replica_is_refused_by_another[sqlite]"
STORE = T + "test_tenants_keys_quotas_and_audit_in_the_store[sqlite]"

MUTANTS: list[Mutant] = [
    Mutant("tenants-namespace-unchecked", "polyhead/server/_private/gate.py",
           "    if isinstance(task_id, str) and is_task_id(task_id) and not caller.sees(task_id):",
           "    if False:", (MATRIX,),
           "a tenant's key reads, changes and classifies another tenant's tasks"),
    Mutant("tenants-everyone-sees-everything", "polyhead/server/_private/auth.py",
           "        return self.admin or tenant_of(task_id) == self.tenant",
           "        return True", (MATRIX,),
           "namespaces not told apart: every key is an admin of every tenant's tasks"),
    Mutant("tenants-stream-unchecked", "polyhead/server/_private/gate.py",
           "                check_namespace(caller, request)\n            except NotFoundError as e:",
           "                pass\n            except NotFoundError as e:", (MATRIX,),
           "ClassifyStream's messages skip the namespace check that Classify gets"),
    Mutant("tenants-upload-into-any-namespace", "polyhead/store/store.py",
           "            may_write(manifest.task_id)", "            pass", (MATRIX,),
           "Upload (its task id inside the artifact) publishes into another tenant's namespace"),
    Mutant("tenants-list-unfiltered", "polyhead/server/_private/registry_rpcs.py",
           "    tasks = [t for t in store.list_tasks() if visible(t.task_id)]",
           "    tasks = store.list_tasks()", (MATRIX,),
           "ListTasks lists every tenant's tasks"),
    Mutant("tenants-health-shows-tasks", "polyhead/server/_private/gate.py",
           "                    out = await fn(self, request, caller.admin)",
           "                    out = await fn(self, request, True)", (MATRIX,),
           "Health shows every tenant's task ids to any key"),
    Mutant("tenants-revoked-accepted", "polyhead/server/_private/auth.py",
           "        if k.revoked_at is not None:", "        if False:", (MATRIX, REVOKED),
           "a revoked key keeps working"),
    Mutant("tenants-expiry-ignored", "polyhead/server/_private/auth.py",
           "        if entry.expires <= time.time():", "        if False:", (MATRIX,),
           "an expired key keeps working"),
    Mutant("tenants-scope-ignored", "polyhead/server/_private/auth.py",
           '        if scope not in entry.scopes and "admin" not in entry.scopes:', "        if False:",
           (MATRIX,), "a classify-only key publishes, a publish key administers"),
    Mutant("tenants-feed-does-not-reload-keys", "polyhead/server/_private/replica.py",
           "                    if await resolver.read(self.parts.keys.load, self.parts.store.catalog):",
           "                    if False:", (REVOKED,),
           "a key revoked elsewhere is accepted here until the replica restarts"),
    Mutant("tenants-revocation-not-marked-changed", "polyhead/store/tenancy.py",
           "                  (now_iso(), bump_auth(c), key_id))",
           "                  (now_iso(), 0, key_id))",
           (REVOKED,), "the key cache reads only changed keys, and a revocation is not marked changed"),
    Mutant("tenants-quota-ignored", "polyhead/store/tenancy.py",
           "    if new_task and max_tasks is not None and tasks + 1 > max_tasks:", "    if False:",
           (STORE, T + "test_quota_exhaustion_at_publish"), "a tenant publishes past its max_tasks"),
    Mutant("tenants-key-stored-in-clear", "polyhead/store/tenancy.py",
           "record.created_at, expires_at, None, key_hash(key),",
           "record.created_at, expires_at, None, key,", (STORE,),
           "the catalog keeps the key itself, not its hash"),
    Mutant("tenants-no-upgrade-step", "polyhead/store/sql.py",
           "UPGRADE = {1: DELETED, 2: TENANTS, 3: JOBS, 4: WEIGHTS, 5: OWNERS_UPGRADE}",
           "UPGRADE = {1: DELETED, 2: (), 3: JOBS, 4: WEIGHTS, 5: OWNERS_UPGRADE}",
           (T + "test_a_schema_2_store_is_upgraded_in_place[sqlite]",),
           "an existing store is marked schema 3 without its tenant tables"),
]

ADMISSION = (T + "test_admission_counts_rows_in_flight_per_tenant", T + "test_quota_exhaustion_at_admission")
COMMANDS = T + "test_the_commands_on_a_store_and_over_grpc"

MUTANTS += [
    Mutant("tenants-admission-unchecked", "polyhead/server/_private/admission.py",
           "        if limit is not None and now + rows > limit:", "        if False:", ADMISSION,
           "a tenant queues any number of rows past its max_rows_in_flight"),
    Mutant("tenants-admission-never-released", "polyhead/server/_private/admission.py",
           "            left = self._in_flight[tenant] - rows", "            left = self._in_flight[tenant]",
           ADMISSION, "rows stay counted in flight after their request ended: the tenant is locked out"),
    Mutant("tenants-admission-not-held", "polyhead/server/_private/services.py",
           "            with self.admission.holding(tenant, len(inputs)):", "            if True:",
           (T + "test_quota_exhaustion_at_admission",), "Classify queues rows without admission"),
    Mutant("tenants-admission-quota-not-cached", "polyhead/server/_private/auth.py",
           "        self.limits = catalog.admission_limits()  # type: ignore[attr-defined]",
           "        self.limits = {}", (T + "test_quota_exhaustion_at_admission",),
           "the replica never learns the tenants' rows-in-flight quotas"),
    Mutant("tenants-cli-quota-flag-dropped", "polyhead/tenants_cli.py",
           "        req.max_rows_in_flight = args.max_rows_in_flight", "        pass", (COMMANDS,),
           "`tenants create --max-rows-in-flight` silently sets no quota"),
    Mutant("tenants-store-commands-not-audited", "polyhead/admin.py",
           "        if self.audit_as is not None:", "        if False:", (COMMANDS,),
           "a change made with --store leaves no audit record"),
]

COPY = (T + "test_store_copy_takes_the_tenants_along[sqlite]",)
MUTANTS += [
    Mutant("tenants-copy-without-tenants", "polyhead/store/catalog.py",
           "        dst.create_tenant(t.tenant)\n", "        pass\n", COPY,
           "`store copy` of a store with namespaced tasks fails: the destination has no tenant"),
    Mutant("tenants-copy-drops-quotas", "polyhead/store/catalog.py",
           "        dst.set_quota(t.tenant, t.max_tasks, t.max_bytes, t.max_rows_in_flight, t.weight)",
           "        pass", COPY, "a copied store loses its tenants' quotas and weights"),
]

WEIGHT_FEED = (T + "test_a_weight_set_through_one_replica_reaches_anothers_batch_queue[sqlite]",)
MUTANTS += [
    Mutant("tenants-weights-not-reloaded", "polyhead/server/_private/auth.py",
           "        self.weights = catalog.weights()  # type: ignore[attr-defined]",
           "        self.weights = {}", WEIGHT_FEED,
           "a stored weight never reaches the replicas: every tenant shares the engine equally"),
    Mutant("tenants-queue-ignores-stored-weights", "polyhead/server/_private/replica.py",
           "queue=batch_queue(config.batch_order, keys.weight,",
           "queue=batch_queue(config.batch_order, lambda tenant: 1.0,", WEIGHT_FEED,
           "the replica's batch queue is built without the key cache's weights"),
    Mutant("tenants-no-weight-upgrade-step", "polyhead/store/sql.py",
           "UPGRADE = {1: DELETED, 2: TENANTS, 3: JOBS, 4: WEIGHTS, 5: OWNERS_UPGRADE}",
           "UPGRADE = {1: DELETED, 2: TENANTS, 3: JOBS, 4: (), 5: OWNERS_UPGRADE}",
           (T + "test_a_schema_4_store_is_upgraded_in_place[sqlite]",),
           "a schema-4 store is marked schema 5 without the tenants' weight column"),
    Mutant("tenants-set-quota-keeps-weight", "polyhead/store/tenancy.py",
           'max_rows_in_flight = ?, weight = ? "\n              "WHERE tenant = ?", '
           '(max_tasks, max_bytes, max_rows_in_flight, w, name))',
           'max_rows_in_flight = ? "\n              "WHERE tenant = ?", '
           '(max_tasks, max_bytes, max_rows_in_flight, name))',
           (T + "test_fair_share_weights_in_the_store[sqlite]",),
           "SetQuota stores the quotas and drops the new weight"),
]
COPY_REST = (T + "test_store_copy_takes_keys_audit_and_datasets_along[sqlite]",)
MUTANTS += [
    Mutant("tenants-copy-keeps-revoked-key-live", "polyhead/store/tenancy.py",
           "        if row[0] is not None or key.revoked_at is None:", "        if True:", COPY_REST,
           "a key revoked at the source after an earlier `store copy` stays live in the copy"),
    Mutant("tenants-copy-drops-keys", "polyhead/store/catalog.py",
           "    keys = sum(dst.import_key(key, hashed) for key, hashed in table)", "    keys = 0",
           COPY_REST, "`store copy` leaves the API keys behind: every client is locked out of the copy"),
    Mutant("tenants-copy-audit-twice", "polyhead/store/tenancy.py",
           "outcome = ?\", fields).fetchone() is None:",
           "outcome = ?\", fields).fetchone() or True:",
           COPY_REST, "a second `store copy` duplicates the audit trail"),
]

MUTANTS += [
    Mutant("tenants-metrics-by-task", "polyhead/server/_private/gate.py",
           "self.metrics.request(name, tenant, code, (time.perf_counter() - t0) * 1000)\n"
           "                if audit",
           "self.metrics.request(name, target, code, (time.perf_counter() - t0) * 1000)\n"
           "                if audit",
           (T + "test_quota_exhaustion_at_admission",),
           "request metrics labelled by task id: one series per task, unbounded at 10,000 tasks"),
]
J = "tests/test_jobs.py::"
MUTANTS += [
    Mutant("tenants-jobs-other-tenants-job-found", "polyhead/server/_private/training.py",
           "        if not caller.sees(job.task_id):", "        if False:", (MATRIX,),
           "a tenant's key reads, cancels and watches another tenant's training jobs"),
    Mutant("tenants-jobs-cancel-unchecked", "polyhead/server/_private/training.py",
           "        job = await self._job(_job_id(request.job_id), caller)  # a job's task never changes",
           "        job = await self._on(self.book.job, _job_id(request.job_id))", (MATRIX,),
           "CancelJob cancels another tenant's job (GetJob refuses it)"),
    Mutant("tenants-jobs-watch-unchecked", "polyhead/server/_private/training.py",
           "        job_id, seq = (await self._job(_job_id(request.job_id), caller)).job_id, "
           "max(0, request.after_seq)",
           "        job_id, seq = _job_id(request.job_id), max(0, request.after_seq)", (MATRIX,),
           "WatchJob streams another tenant's job's events"),
    Mutant("tenants-jobs-list-unfiltered", "polyhead/server/_private/training.py",
           "        tenant = None if caller.admin else caller.tenant", "        tenant = None", (MATRIX,),
           "ListJobs lists every tenant's training jobs"),
    Mutant("tenants-jobs-list-by-prefix-only", "polyhead/store/jobs.py",
           '            prefix = namespace_prefix(tenant)', '            prefix = tenant',
           (J + "test_jobs_listed_by_tenant[sqlite]",),
           "ListJobs of tenant 'a' lists tenant 'ab''s jobs too"),
    Mutant("tenants-jobs-create-for-classify-keys", "polyhead/server/_private/replica.py",
           '    @rpc("publish", pb.JobInfo, audit=True)\n    async def CreateJob',
           '    @rpc("classify", pb.JobInfo, audit=True)\n    async def CreateJob', (MATRIX,),
           "a classify-only key queues training jobs"),
    Mutant("tenants-jobs-claim-ignores-tenant-limit", "polyhead/store/jobs.py",
           "        if held.get(tenant, 0) >= per_tenant:", "        if False:",
           (J + "test_claim_holds_each_tenant_to_its_share[sqlite]",),
           "max_jobs_per_tenant ignored: one tenant's queue takes every job slot"),
    Mutant("tenants-jobs-claim-counts-only-earlier-leases", "polyhead/store/jobs.py",
           "        held[tenant] = held.get(tenant, 0) + 1\n", "        pass\n",
           (J + "test_claim_holds_each_tenant_to_its_share[sqlite]",),
           "one claim takes any number of a tenant's jobs: only jobs leased before it count"),
    Mutant("tenants-jobs-fair-claim-twice", "polyhead/store/jobs.py",
           '"SELECT job_id, task_id FROM jobs WHERE state = ? "',
           '"SELECT job_id, task_id FROM jobs WHERE state IN (?, \'running\') "',
           (J + "test_claim_holds_each_tenant_to_its_share[sqlite]",),
           "with a per-tenant limit, a claim takes jobs another scheduler already runs"),
    Mutant("tenants-jobs-limit-not-passed-to-scheduler", "polyhead/server/_private/replica.py",
           "                                              config.max_jobs_per_tenant))",
           "                                              0))",
           (J + "test_max_jobs_per_tenant_reaches_the_scheduler",),
           "`serve --max-jobs-per-tenant` is accepted and never reaches the scheduler"),
]

RACE = ("tests/test_store.py::test_creating_the_schema_again_after_another_process_made_it",)
MUTANTS += [
    Mutant("store-create-race-sqlite", "polyhead/store/sqlite.py",
           "        if made is not None:\n            return\n", "", RACE,
           "processes creating one SQLite store at once failed: 'duplicate column name: weight'"),
    Mutant("store-create-race-pg", "polyhead/store/pg.py",
           "            if made is None:\n                for stmt in sql.PG_SCHEMA:",
           "            if True:\n                for stmt in sql.PG_SCHEMA:", RACE,
           "processes creating one PostgreSQL store at once failed on schema 5's ALTER TABLE"),
]
