"""Artifacts priced by their own size (issue 30, B4): a wide task (a 10,000-label head, a
rank-512 LoRA) sits in a table of its own size class, so every other task's device cost
is unchanged while it is resident, and the tables shrink back when it goes (unloaded,
deleted or evicted). Mixed batches stay exact across the size-class tables."""

from __future__ import annotations

import asyncio

import pytest
import torch

from polyhead.engine import Engine, TaskArtifact
from polyhead.engine.lora import LoraConfig
from polyhead.engine.prefix import PrefixConfig

ATOL = 1e-5
TEXTS = ["the movie was good", ("the man walks", "he walks in the park"), "rain"]
WIDE = {  # what once widened every row of its table
    "10k-labels": ("pasta", None, 10_000),
    "rank-512": ("lora", LoraConfig(r=512, alpha=512.0), 2),
}


def residents(spec) -> list[TaskArtifact]:
    """Ordinary tasks of every kind and head type, LoRA among them (the wide LoRA's kind)."""
    return [TaskArtifact.random("pasta", spec, 2, seed=1),
            TaskArtifact.random("lora", spec, 3, config=LoraConfig(r=8), head_type="mlp", seed=2),
            TaskArtifact.random("bitfit", spec, 5, seed=3),
            TaskArtifact.random("prefix", spec, 2, config=PrefixConfig(num_prefix=4),
                                head_type="pooler", seed=4),
            TaskArtifact.random("lora", spec, 16, config=LoraConfig(r=16), seed=5)]


def alone(bb, artifact: TaskArtifact) -> list[torch.Tensor]:
    eng = Engine(bb)
    return eng.run(TEXTS, [eng.load(artifact)] * len(TEXTS))


@pytest.mark.parametrize("wide", sorted(WIDE))
def test_a_wide_task_costs_its_own_rows_only(real_backbone, wide: str) -> None:
    spec = real_backbone.spec
    arts = residents(spec)
    eng = Engine(real_backbone)
    tasks = [eng.load(a) for a in arts]
    costs, allocated = [t.nbytes for t in tasks], eng.tables.nbytes
    kind, cfg, outputs = WIDE[wide]
    big_art = TaskArtifact.random(kind, spec, outputs, config=cfg, seed=9)
    big = eng.load(big_art)
    assert [t.nbytes for t in tasks] == costs  # nobody else pays for the wide rows
    assert big.nbytes >= big_art.nbytes  # the wide task pays for its own
    # one mixed batch over every table, exact against each task alone
    rows = [(x, i) for i in range(len(arts) + 1) for x in range(len(TEXTS))]
    everyone = [*tasks, big]
    got = eng.run([TEXTS[x] for x, _ in rows], [everyone[i] for _, i in rows])
    refs = [alone(real_backbone, a) for a in [*arts, big_art]]
    for (x, i), g in zip(rows, got, strict=True):
        torch.testing.assert_close(g, refs[i][x], atol=ATOL, rtol=0)
    eng.unload(big)
    assert eng.tables.nbytes == allocated  # the tables shrank back
    assert [t.nbytes for t in tasks] == costs


def test_deleted_and_evicted_wide_tasks_give_their_tables_back(real_backbone) -> None:
    """Through the adapter bank: DeleteTask's discard and LRU eviction both free the wide
    table, not only an explicit unload."""
    from polyhead.server.bank import AdapterBank, TaskMeta, VersionKey

    spec = real_backbone.spec
    arts = {"small": TaskArtifact.random("pasta", spec, 2, seed=1),
            "wide": TaskArtifact.random("pasta", spec, 10_000, seed=2),
            "wide-lora": TaskArtifact.random("lora", spec, 2, config=LoraConfig(r=512), seed=3)}
    meta = TaskMeta(number=1, labels=(), regression=False, inputs="any")
    eng = Engine(real_backbone)
    small_only = Engine(real_backbone)
    small_only.load(arts["small"])
    bank = AdapterBank(lambda key: (arts[key.task_id], meta), eng,
                       device_budget=1 << 30, host_budget=0)

    async def main() -> None:
        for t in arts:
            await bank.get(VersionKey(t, "v"))
        assert eng.tables.nbytes > 30 * small_only.tables.nbytes
        assert bank.discard("wide") == 1  # deleted
        bank.device_budget = 0  # the next admission evicts every older version
        await bank.get(VersionKey("small", "v2"))

    asyncio.run(main())
    assert eng.tables.nbytes == small_only.tables.nbytes
