"""Planted bugs in fair sharing between tenants, its quota and its metrics (issue 24)."""

from tests.mutants import Mutant

T = "tests/test_fair_share.py::"

MUTANTS = [
    Mutant(
        id="fair-idle-tenant-banks-credit",
        file="polyhead/server/_private/fairqueue.py",
        old="self._served[e.tenant] = max(self._served.get(e.tenant, 0.0), lowest)",
        new="self._served.setdefault(e.tenant, 0.0)",
        tests=(T + "test_an_idle_tenant_banks_no_credit",),
        why="a tenant back from idle takes the engine for as long as it was away",
    ),
    Mutant(
        id="fair-ignores-weights",
        file="polyhead/server/_private/fairqueue.py",
        old="self._served[tenant] += e.tokens / self._weight(tenant)",
        new="self._served[tenant] += e.tokens",
        tests=(T + "test_weights_are_respected",),
        why="per-tenant weights accepted and never applied",
    ),
    Mutant(
        id="fair-counts-requests-not-tokens",
        file="polyhead/server/_private/fairqueue.py",
        old="self._served[tenant] += e.tokens / self._weight(tenant)",
        new="self._served[tenant] += 1 / self._weight(tenant)",
        tests=(T + "test_shares_are_of_tokens_not_requests",),
        why="long requests buy a bigger share of the engine than short ones",
    ),
    Mutant(
        id="fair-caps-a-lone-tenant",
        file="polyhead/server/_private/fairqueue.py",
        old="if self.contended_rows is not None and self.sharing():",
        new="if self.contended_rows is not None and len(self._waiting) >= 1:",
        tests=(T + "test_a_lone_tenant_is_never_held_back",),
        why="a tenant alone loses throughput to the cap meant for contention",
    ),
    Mutant(
        id="fair-late-tenant-meets-a-full-batch",
        file="polyhead/server/_private/fairqueue.py",
        old="if self.contended_rows is not None and self.sharing():",
        new="if self.contended_rows is not None and len(self._waiting) > 1:",
        tests=(T + "test_a_tenant_late_for_the_next_batch_waits_behind_a_capped_one",),
        why="a closed-loop tenant a moment late for the next batch waits behind a full batch "
            "of the other tenant's backlog (B's p99 under a flood)",
    ),
    Mutant(
        id="fair-remove-keeps-empty-tenant",
        file="polyhead/server/_private/fairqueue.py",
        old="        if not q:\n            del self._waiting[e.tenant]\n",
        new="",
        tests=(T + "test_removing_a_request_takes_it_out_of_the_queue",),
        why="a cancelled request leaves its tenant counted as waiting (and an empty queue read)",
    ),
    Mutant(
        id="batcher-drops-the-tenant",
        file="polyhead/server/_private/batcher.py",
        old="loop.create_future(),\n                           tenant)",
        new="loop.create_future())",
        tests=(T + "test_two_tenants_through_classify[fair]",),
        why="every request queues as the default tenant: fair sharing silently becomes FIFO",
    ),
    Mutant(
        id="classify-drops-the-tenant",
        file="polyhead/server/_private/services.py",
        old="await p.batcher.run(enc, res.task, tenant=tenant)",
        new="await p.batcher.run(enc, res.task)",
        tests=(T + "test_two_tenants_through_classify[fair]",),
        why="the gate's tenant never reaches the batcher",
    ),
]
MUTANTS += [
    Mutant(
        id="fair-never-expecting",
        file="polyhead/server/_private/fairqueue.py",
        old="return any(len(self._waiting.get(t, ())) < n for t, n in self._answered.items())",
        new="return False",
        tests=(T + "test_a_closed_loop_tenant_makes_the_next_batch",
               T + "test_expecting_only_while_tenants_share"),
        why="a closed-loop tenant always misses the next batch and waits a forward more",
    ),
    Mutant(
        id="fill-ignores-expecting",
        file="polyhead/server/_private/batcher.py",
        old="if self.fill_wait_s <= 0 or (q.rows >= self.max_rows and not q.expecting()):",
        new="if self.fill_wait_s <= 0 or q.rows >= self.max_rows:",
        tests=(T + "test_a_closed_loop_tenant_makes_the_next_batch",),
        why="the batcher forms the next batch before the tenant it just answered is back",
    ),
    Mutant(
        id="expecting-while-alone",
        file="polyhead/server/_private/fairqueue.py",
        old="        if not self.sharing():\n            return False",
        new="        if False:\n            return False",
        tests=(T + "test_expecting_only_while_tenants_share",),
        why="a lone tenant's batches would wait on it where today's do not",
    ),
]
