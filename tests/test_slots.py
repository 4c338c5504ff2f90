"""Slot tables: a reused slot never shows its previous task, growth keeps every task's
rows, and a batch after load/unload churn equals each task alone in a fresh engine."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch

from polyhead.engine import Engine, LoadedTask, TaskArtifact
from polyhead.engine.errors import ArtifactError
from polyhead.engine.heads import apply_head
from polyhead.engine.lora import LoraConfig
from polyhead.engine.prefix import PrefixConfig
from polyhead.engine.sparse import SparseConfig

ATOL = 1e-5
TEXTS = ["the movie was good", ("the man walks", "he walks in the park"), "rain",
         "a cat sat on the mat !"]
# Per kind: a big first occupant (larger rank / prefix / entries / head) and a small second.
BIG_SMALL = {
    "pasta": ((None, "mlp", 5), (None, "linear", 2)),
    "bitfit": ((None, "mlp", 4), (None, "linear", 2)),
    "lora": ((LoraConfig(r=8, targets=("attention.self.query", "attention.self.key",
                                       "attention.self.value", "intermediate.dense")), "mlp", 5),
             (LoraConfig(r=2, alpha=4.0), "linear", 2)),
    "prefix": ((PrefixConfig(num_prefix=8), "mlp", 6), (PrefixConfig(num_prefix=2), "linear", 2)),
    "sparse": ((SparseConfig(density=0.3), "mlp", 5), (SparseConfig(density=0.02), "pooler", 2)),
    "sparse-columns": ((SparseConfig(density=0.3, structure="columns"), "mlp", 5),
                       (SparseConfig(density=0.05, structure="columns"), "pooler", 2)),
}


def art(spec, kind: str, which: int, seed: int, zero: bool = False) -> TaskArtifact:
    cfg, head, c = BIG_SMALL[kind][which]
    return TaskArtifact.random(kind.split("-")[0], spec, c, config=cfg, head_type=head, seed=seed,
                               zero=zero)


def alone(bb, artifact: TaskArtifact) -> list[torch.Tensor]:
    eng = Engine(bb)
    return eng.run(TEXTS, [eng.load(artifact)] * len(TEXTS))


@pytest.mark.parametrize("kind", sorted(BIG_SMALL))
@pytest.mark.parametrize("zero", [False, True], ids=["random", "zero"])
def test_a_reused_slot_never_leaks_the_previous_task(tiny_bert, kind: str, zero: bool) -> None:
    eng = Engine(tiny_bert, capacity=1)
    big = eng.load(art(tiny_bert.spec, kind, 0, seed=1))
    slots = (big.slot, big.head_slot)
    eng.run(TEXTS, [big] * len(TEXTS))
    eng.unload(big)
    small_art = art(tiny_bert.spec, kind, 1, seed=2, zero=zero)
    small = eng.load(small_art)
    assert (small.slot, small.head_slot) == slots  # the very rows the big task used
    got = eng.run(TEXTS, [small] * len(TEXTS))
    for g, ref in zip(got, alone(tiny_bert, small_art), strict=True):
        assert g.shape == ref.shape == (small_art.head.num_outputs,)
        torch.testing.assert_close(g, ref, atol=ATOL, rtol=0)
    if zero:  # a zero artifact in a reused slot is the bare backbone under its head
        cls = torch.stack(eng.run(TEXTS, [None] * len(TEXTS)))
        ref = apply_head(small_art.head_tensors(), small_art.head, cls, eng.encoder.pooler)
        torch.testing.assert_close(torch.stack(got), ref, atol=ATOL, rtol=0)


def test_unloaded_slots_are_cleared(tiny_bert) -> None:
    eng = Engine(tiny_bert, capacity=2)
    task = eng.load(art(tiny_bert.spec, "lora", 0, seed=3))
    slot = task.slot
    eng.unload(task)
    table = eng.tables.kinds["lora"]
    assert all(bool((t[slot] == 0).all()) for t in table.fields.values())
    with pytest.raises(ValueError, match="not loaded"):
        eng.run(TEXTS[:1], [task])


def test_mixed_batch_after_churn_and_growth_equals_alone(tiny_bert) -> None:
    eng = Engine(tiny_bert, capacity=1)  # every table grows several times
    spec = tiny_bert.spec
    arts = [art(spec, k, w, seed=10 + i) for i, (k, w) in
            enumerate((k, w) for k in sorted(BIG_SMALL) for w in (0, 1))]
    loaded = [eng.load(a) for a in arts]
    for i in range(0, len(loaded), 3):  # evict every third task, load it again elsewhere
        eng.unload(loaded[i])
    for i in range(0, len(loaded), 3):
        loaded[i] = eng.load(arts[i])
    rows = [(x, t) for t in range(len(arts)) for x in range(len(TEXTS))]
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()
    rows = [rows[p] for p in perm]
    got = eng.run([TEXTS[x] for x, _ in rows], [loaded[t] for _, t in rows])
    refs = [alone(tiny_bert, a) for a in arts]
    for (x, t), g in zip(rows, got, strict=True):
        torch.testing.assert_close(g, refs[t][x], atol=ATOL, rtol=0)
    assert eng.tables.kinds["lora"].capacity >= 2


def test_task_bytes_are_its_table_rows(tiny_bert) -> None:
    eng = Engine(tiny_bert)
    a = TaskArtifact.random("pasta", tiny_bert.spec, 3)
    task = eng.load(a)
    spec = tiny_bert.spec
    vectors = spec.num_layers * spec.num_special * spec.hidden * 4
    head = (3 * spec.hidden + 3 + 1) * 4 + 8  # weight, bias, pooled flag (fp32); mlp slot (int64)
    assert task.nbytes == vectors + head


def test_bank_eviction_frees_slots_for_the_next_version(tiny_bert) -> None:
    """The bank on a real engine: evicted versions give their slots back, and what the
    reused slots serve is the new version's logits."""
    from polyhead.server.bank import AdapterBank, TaskMeta, VersionKey

    eng = Engine(tiny_bert, capacity=2)
    arts = {t: TaskArtifact.random("pasta", tiny_bert.spec, 2, seed=i) for i, t in enumerate("abcdef")}
    meta = TaskMeta(number=1, labels=("x", "y"), regression=False, inputs="any")
    first = eng.load(arts["a"])
    per_task = first.nbytes
    eng.unload(first)
    assert first.nbytes == 0  # unloaded: it holds no device bytes
    bank = AdapterBank(lambda key: (arts[key.task_id], meta), eng,
                       device_budget=2 * per_task, host_budget=0)

    async def main() -> None:
        for t in "abcdef":
            async with bank.using(VersionKey(t, "v")) as res:
                got = eng.run(TEXTS, [res.task] * len(TEXTS))
                for g, ref in zip(got, alone(tiny_bert, arts[t]), strict=True):
                    torch.testing.assert_close(g, ref, atol=ATOL, rtol=0)
        assert bank.device_bytes == 2 * per_task

    asyncio.run(main())
    # a version loads before the oldest is evicted: 3 slots at the peak, never 6
    assert eng.tables.kinds["pasta"].capacity == 4 and eng.tables.kinds["pasta"].used == 2


def test_sparse_tasks_share_a_table_only_within_a_size_class(tiny_bert) -> None:
    """A table pads every slot to its largest task: a 2 % task must not sit (and pay) in
    the table of a 30 % one. Rows of both classes in one batch equal each task alone."""
    eng = Engine(tiny_bert)
    arts = [art(tiny_bert.spec, "sparse", w, seed=20 + w) for w in (0, 1, 0)]
    big, small, big2 = (eng.load(a) for a in arts)
    assert big.table == big2.table != small.table

    def padded_entries(table: str) -> int:
        fields = eng.tables.kinds[table].fields
        return sum(t.shape[1] for k, t in fields.items() if k.endswith(".val"))

    assert padded_entries(small.table) < padded_entries(big.table) / 4
    tasks = [big, small, big2, small]
    got = eng.run(TEXTS, tasks)
    for i, (g, t) in enumerate(zip(got, tasks, strict=True)):
        torch.testing.assert_close(g, alone(tiny_bert, arts[[big, small, big2].index(t)])[i],
                                   atol=ATOL, rtol=0)


def test_column_structured_tasks_run_as_columns(tiny_bert) -> None:
    """Whole-column entries go to a column table (and a declared column artifact that is
    not column-structured is refused); CSR and column rows in one batch equal alone."""
    eng = Engine(tiny_bert)
    cols = art(tiny_bert.spec, "sparse-columns", 0, seed=30)
    entries = art(tiny_bert.spec, "sparse", 0, seed=31)
    tc, te = eng.load(cols), eng.load(entries)
    assert "/columns/" in tc.table and "/columns/" not in te.table
    fields = eng.tables.kinds[tc.table].fields
    assert any(k.endswith(".block") for k in fields) and not any(k.endswith(".val") for k in fields)
    tasks = [tc, te, None, tc]
    got = eng.run(TEXTS, tasks)
    for i, (g, a) in enumerate(zip(got, [cols, entries, None, cols], strict=True)):
        if a is not None:
            torch.testing.assert_close(g, alone(tiny_bert, a)[i], atol=ATOL, rtol=0)
    bad = dataclasses.replace(entries, config=SparseConfig(density=0.3, structure="columns"))
    with pytest.raises(ArtifactError, match="not column-structured"):
        eng.load(bad)


def test_peft_parity_in_a_reused_slot(tiny_bert, tiny_bert_dir) -> None:
    """A PEFT adapter imported into the slot a larger LoRA task left gives PeftModel's logits."""
    import peft

    from polyhead.engine.peft_io import artifact_from_peft
    from tests.test_peft_parity import TEXTS as PEFT_TEXTS
    from tests.test_peft_parity import peft_model

    eng = Engine(tiny_bert, capacity=1)
    big = eng.load(art(tiny_bert.spec, "lora", 0, seed=30))
    eng.run(PEFT_TEXTS, [big] * len(PEFT_TEXTS))
    eng.unload(big)
    model, cfg = peft_model(tiny_bert_dir, 3, seed=0)
    task = eng.load(artifact_from_peft(peft.get_peft_model_state_dict(model), cfg.to_dict(),
                                       tiny_bert.spec))
    assert task.slot == 0
    got = eng.run(PEFT_TEXTS, [task] * len(PEFT_TEXTS))
    for x, g in zip(PEFT_TEXTS, got, strict=True):
        args = (x,) if isinstance(x, str) else x
        with torch.no_grad():
            ref = model(**tiny_bert.tokenizer(*args, return_tensors="pt")).logits[0]
        torch.testing.assert_close(g, ref, atol=ATOL, rtol=0)


def embedding_art(spec, word_rows: int, encoder_entries: int, seed: int) -> TaskArtifact:
    """A whole-model-style sparse artifact: deltas on the first ``word_rows`` rows of the word
    embeddings (and, when it has any, every position and token-type row) plus
    ``encoder_entries`` random entries of the encoder's Linear weights."""
    from polyhead.engine.heads import HeadConfig, init_head
    from polyhead.engine.sparse import from_dense

    g = torch.Generator().manual_seed(seed)
    diffs = {}
    for name in spec.embedding_params():
        d = torch.zeros(spec.param_shapes[name])
        rows = word_rows if "word" in name else (len(d) if word_rows else 0)
        d[:rows] = torch.randn(rows, d.shape[1], generator=g) * 0.5
        diffs[name] = d
    weights = [n + ".weight" for n in spec.linear_names()]
    sizes = [spec.param_shapes[w][0] * spec.param_shapes[w][1] for w in weights]
    flat = torch.zeros(sum(sizes))
    flat[torch.randperm(len(flat), generator=g)[:encoder_entries]] = 0.1
    for w, part in zip(weights, flat.split(sizes), strict=True):
        diffs[w] = part.reshape(spec.param_shapes[w])
    head = HeadConfig(num_outputs=2, type="linear")
    return TaskArtifact("sparse", SparseConfig(density=1.0), head,
                        {**from_dense(diffs), **init_head(spec, head, g)})


@pytest.mark.parametrize("second", ["fewer-rows", "no-embeddings"])
def test_a_reused_slot_never_leaks_embedding_deltas(tiny_bert, second: str) -> None:
    """A task with deltas on every embedding row leaves its slot; the next task in the very
    same slot of the same table (fewer touched rows, or none) gets none of them."""
    spec = tiny_bert.spec
    vocab = spec.param_shapes["embeddings.word_embeddings.weight"][0]
    eng = Engine(tiny_bert, capacity=1)
    big = eng.load(embedding_art(spec, vocab, 300, seed=1))
    where = (big.table, big.slot)
    eng.run(TEXTS, [big] * len(TEXTS))
    eng.unload(big)
    small_art = (embedding_art(spec, 4, 2500, seed=2) if second == "fewer-rows"
                 else embedding_art(spec, 0, 6000, seed=3))
    small = eng.load(small_art)
    assert (small.table, small.slot) == where  # the very rows big used
    got = eng.run(TEXTS, [small] * len(TEXTS))
    for g, ref in zip(got, alone(tiny_bert, small_art), strict=True):
        torch.testing.assert_close(g, ref, atol=ATOL, rtol=0)
    fields = eng.tables.kinds[small.table].fields
    touched = int((fields["embeddings.word_embeddings.rowpos"][small.slot] > 0).sum())
    assert touched == (4 if second == "fewer-rows" else 0)


def test_tables_stay_within_the_device_budget(tiny_bert) -> None:
    """The tables never allocate past the budget: growth is clipped to it, trailing free
    slots (and emptied tables) go back when another table needs room, and a load that
    still does not fit says so; what loads serves exactly."""
    from polyhead.engine import SlotsExhausted

    spec = tiny_bert.spec
    probe = Engine(tiny_bert)
    row = probe.load(TaskArtifact.random("pasta", spec, 2)).nbytes
    budget = 10 * row
    eng = Engine(tiny_bert, device_budget=budget)
    pasta = [TaskArtifact.random("pasta", spec, 2, seed=i) for i in range(12)]
    loaded = []
    with pytest.raises(SlotsExhausted, match="device budget"):
        for a in pasta:
            loaded.append(eng.load(a))
            assert eng.tables.nbytes <= budget
    assert 5 <= len(loaded) <= 10 and eng.tables.nbytes <= budget
    for t in loaded[2:]:  # the highest slots free up: they can go back to the device
        eng.unload(t)
    bitfit = TaskArtifact.random("bitfit", spec, 2, seed=99)
    b = eng.load(bitfit)  # fits only once pasta's free slots are given back
    assert eng.tables.nbytes <= budget and eng.tables.kinds["pasta"].capacity == 2
    got = eng.run(TEXTS, [loaded[0], b, loaded[1], b])
    want = [alone(tiny_bert, pasta[0])[0], alone(tiny_bert, bitfit)[1],
            alone(tiny_bert, pasta[1])[2], alone(tiny_bert, bitfit)[3]]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=ATOL, rtol=0)


def test_a_task_costs_its_rows_at_the_tables_present_width(tiny_bert) -> None:
    eng = Engine(tiny_bert)
    small = eng.load(art(tiny_bert.spec, "lora", 1, seed=40))  # r=2 on q, v
    before = small.nbytes
    eng.load(art(tiny_bert.spec, "lora", 0, seed=41))  # r=8 on 4 targets: the table widens
    assert small.nbytes > before
    assert small.nbytes == eng.tables.kinds[small.table].row_bytes() + eng.tables.heads.row_bytes()


def test_bank_evicts_unheld_versions_when_the_tables_are_full(tiny_bert) -> None:
    """Tables that fit 2 tasks: a third version evicts the oldest one no request holds;
    while every slot is held it loads over the budget rather than failing the request,
    and the tables hold no more than that one extra slot afterwards."""
    from polyhead.server.bank import AdapterBank, TaskMeta, VersionKey

    spec = tiny_bert.spec
    arts = {t: TaskArtifact.random("pasta", spec, 2, seed=i) for i, t in enumerate("abcde")}
    row = Engine(tiny_bert).load(arts["a"]).nbytes
    budget = 2 * row + row // 2
    eng = Engine(tiny_bert, device_budget=budget)  # the tables fit 2 tasks
    meta = TaskMeta(number=1, labels=("x", "y"), regression=False, inputs="any")
    bank = AdapterBank(lambda key: (arts[key.task_id], meta), eng,
                       device_budget=100 * row, host_budget=0)  # the bank alone would keep all

    async def check(t: str) -> None:
        async with bank.using(VersionKey(t, "v")) as res:
            got = eng.run(TEXTS, [res.task] * len(TEXTS))
            for g, ref in zip(got, alone(tiny_bert, arts[t]), strict=True):
                torch.testing.assert_close(g, ref, atol=ATOL, rtol=0)

    async def main() -> None:
        async with bank.using(VersionKey("a", "v")), bank.using(VersionKey("b", "v")):
            await check("c")  # both slots held: c loads over the budget
            assert eng.tables.nbytes > budget
        for t in "de":  # nothing held now: the oldest versions give their slots up
            await check(t)
        device = [k.task_id for k, tier, *_ in bank.resident() if tier == "device"]
        assert device == ["c", "d", "e"] and eng.tables.kinds["pasta"].used == 3

    asyncio.run(main())
    assert eng.tables.kinds["pasta"].capacity == 3  # the one extra slot, reused, not more


def test_a_table_trimmed_to_no_rows_takes_tasks_again(tiny_bert) -> None:
    """Every table emptied and given back to the device (the heads' too, which keep their
    fields at no rows), then a load of another kind that needs that room: it loads and
    serves exactly (it once failed measuring a row of a table with none)."""
    spec = tiny_bert.spec
    pasta, bitfit = TaskArtifact.random("pasta", spec, 2), TaskArtifact.random("bitfit", spec, 2)
    probe = Engine(tiny_bert)
    budget = max(probe.load(pasta).nbytes, probe.load(bitfit).nbytes)
    eng = Engine(tiny_bert, capacity=1, device_budget=budget)
    eng.unload(eng.load(pasta))
    b = eng.load(bitfit)  # only fits once pasta's table (and the heads' row) are given back
    assert eng.tables.heads.capacity == 1 and eng.tables.nbytes <= budget
    for g, ref in zip(eng.run(TEXTS, [b] * len(TEXTS)), alone(tiny_bert, bitfit), strict=True):
        torch.testing.assert_close(g, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("seed", range(6))
def test_random_churn_under_a_budget_keeps_every_task_exact(tiny_bert, seed: int) -> None:
    """Random loads and unloads of every kind and head type in tables that fit a few tasks,
    now and then all unloaded (where the tables say there is no room, the oldest task
    goes first, as the bank does):
    the tables never pass the budget, and every mixed batch equals each task alone."""
    from polyhead.engine import SlotsExhausted

    spec, rng = tiny_bert.spec, torch.Generator().manual_seed(seed)
    kinds = sorted(BIG_SMALL)
    probe = Engine(tiny_bert)
    budget = 3 * max(probe.load(art(spec, k, 0, seed=0)).nbytes for k in kinds)
    eng = Engine(tiny_bert, capacity=1, device_budget=budget)
    loaded: list[tuple[LoadedTask, int]] = []  # (task, the step that made it)
    refs: dict[int, list[torch.Tensor]] = {}  # each step's artifact alone
    for step in range(40):
        roll = int(torch.randint(8, (1,), generator=rng))
        if roll == 0:  # everything goes: the next loads find every table trimmable
            while loaded:
                eng.unload(loaded.pop()[0])
        elif loaded and roll < 3:
            task, _ = loaded.pop(int(torch.randint(len(loaded), (1,), generator=rng)))
            eng.unload(task)
        else:
            k = kinds[int(torch.randint(len(kinds), (1,), generator=rng))]
            a = art(spec, k, int(torch.randint(2, (1,), generator=rng)), seed=100 * seed + step)
            refs[step] = alone(tiny_bert, a)
            while True:
                try:
                    loaded.append((eng.load(a), step))
                    break
                except SlotsExhausted:
                    assert loaded, "one task alone always loads"
                    eng.unload(loaded.pop(0)[0])
        assert eng.tables.nbytes <= budget or len(loaded) == 1
        assert eng.tables.used_bytes == sum(t.nbytes for t, _ in loaded)
        tasks = [t for t, _ in loaded for _ in TEXTS]
        got = eng.run(TEXTS * len(loaded), tasks)
        for i, (_, made) in enumerate(loaded):
            for g, w in zip(got[i * len(TEXTS):(i + 1) * len(TEXTS)], refs[made], strict=True):
                torch.testing.assert_close(g, w, atol=ATOL, rtol=0)
