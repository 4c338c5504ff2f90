"""The registry matrix: every kind in mixed batches == alone == train time; zero init is a
no-op; export/import is bit-exact; each kind equals an independent reference."""

from __future__ import annotations

import copy
import io

import pytest
import safetensors.torch
import torch

from polyhead.engine import Engine, TaskArtifact, TaskModule, get_kind, kind_names
from polyhead.engine.encoder import special_index
from polyhead.engine.engine import effects_for, forward_slots, group_rows, plan_buckets, row_order
from polyhead.engine.lora import LoraConfig
from polyhead.engine.prefix import PrefixConfig
from polyhead.engine.sparse import SparseConfig, to_dense

ATOL = 1e-5
SINGLES = ["the movie was good", "i hated the plot", "a cat sat on the mat !",
           "the film was not very fun , but the actors were great", "rain"]
PAIRS = [("the man walks", "he walks in the park"), ("the sun shines today", "it is rain"),
         ("we loved it", "they hated it because it was boring")]
INPUTS = SINGLES + PAIRS

# (kind, config, head type, outputs): >= 8 tasks covering every kind, label counts, heads.
TASKS = [
    ("pasta", None, "linear", 2),
    ("pasta", None, "mlp", 1),
    ("prefix", PrefixConfig(num_prefix=3), "linear", 3),
    ("prefix", PrefixConfig(num_prefix=6), "pooler", 2),
    ("lora", LoraConfig(r=4, alpha=8.0), "linear", 2),
    ("lora", LoraConfig(r=2, alpha=4.0, targets=("attention.self.key", "intermediate.dense",
                                                 "output.dense")), "mlp", 5),
    ("sparse", SparseConfig(density=0.05), "linear", 2),
    ("sparse", SparseConfig(density=0.2), "pooler", 4),
    ("sparse", SparseConfig(density=0.05, structure="columns"), "linear", 2),
    ("sparse", SparseConfig(density=0.1, structure="columns"), "mlp", 3),
    ("bitfit", None, "linear", 3),
    ("bitfit", None, "mlp", 1),
]


def artifacts(spec, zero: bool = False) -> list[TaskArtifact]:
    return [TaskArtifact.random(k, spec, c, config=cfg, head_type=h, zero=zero, seed=i)
            for i, (k, cfg, h, c) in enumerate(TASKS)]


def test_registry_has_every_kind() -> None:
    assert kind_names() == ["bitfit", "lora", "pasta", "prefix", "sparse"]
    assert {k for k, *_ in TASKS} == set(kind_names())
    with pytest.raises(ValueError, match="unknown_kind"):
        get_kind("adapterdrop")


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_roberta"])
def test_encoder_equals_hf(backbone: str, request: pytest.FixtureRequest) -> None:
    bb = request.getfixturevalue(backbone)
    eng = Engine(bb)
    out = eng.run(INPUTS, [None] * len(INPUTS))
    for x, cls in zip(INPUTS, out, strict=True):
        args = (x,) if isinstance(x, str) else x
        ref = bb.model(**bb.tokenizer(*args, return_tensors="pt")).last_hidden_state[0, 0]
        torch.testing.assert_close(cls, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_roberta"])
def test_mixed_batch_equals_alone_equals_train_time(backbone: str, request) -> None:
    bb = request.getfixturevalue(backbone)
    eng = Engine(bb, max_batch_size=64)
    arts = artifacts(bb.spec)
    loaded = [eng.load(a) for a in arts]
    # every input under every task, shuffled into one mixed batch
    rows = [(i, t) for i in range(len(INPUTS)) for t in range(len(arts))]
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()
    rows = [rows[p] for p in perm]
    mixed = eng.run([INPUTS[i] for i, _ in rows], [loaded[t] for _, t in rows])
    for t, art in enumerate(arts):
        alone = eng.run(INPUTS, [loaded[t]] * len(INPUTS))
        module = TaskModule(bb, art)
        ids, mask, types = eng.pad(eng.tokenize(INPUTS))
        with torch.no_grad():
            train_time = module(ids, mask, types)
        for (i, tt), got in zip(rows, mixed, strict=True):
            if tt == t:
                torch.testing.assert_close(got, alone[i], atol=ATOL, rtol=0)
                torch.testing.assert_close(got, train_time[i], atol=ATOL, rtol=0)
        assert alone[0].shape == (art.head.num_outputs,)


def test_scattered_rows_equal_the_engine_order(tiny_bert) -> None:
    """The engine runs each table's rows as one slice; the gather/scatter path (rows in any
    order, as attach() and autograd use it) gives the same logits."""
    eng = Engine(tiny_bert, max_batch_size=64)
    loaded = [eng.load(a) for a in artifacts(tiny_bert.spec)]
    rows = [(i, t) for i in range(len(INPUTS)) for t in [*range(len(loaded)), None]]
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(1)).tolist()
    rows = [rows[p] for p in perm]
    tasks = [None if t is None else loaded[t] for _, t in rows]
    order = row_order(tasks)
    assert order is not None and sorted(order) == list(range(len(rows)))
    tables = [tasks[i].table if tasks[i] is not None else None for i in order]
    runs = [k for j, k in enumerate(tables) if j == 0 or k != tables[j - 1]]
    assert len(runs) == len(set(runs))  # each table's rows adjacent
    assert tables[0] is None and all(tasks[i].kind.name == "prefix" for i in order[-2 * len(INPUTS):])
    ordered = eng.run([INPUTS[i] for i, _ in rows], tasks)
    ids, mask, types = eng.pad(eng.tokenize([INPUTS[i] for i, _ in rows]))
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            scattered = forward_slots(eng.encoder, ids, mask, types, group_rows(tasks, ids.device))
        for a, b in zip(ordered, scattered, strict=True):
            torch.testing.assert_close(b.detach(), a, atol=ATOL, rtol=0)


def test_the_first_token_alone_equals_the_whole_last_layer(tiny_bert) -> None:
    """Serving runs the last layer for the first token only (all a head reads): with rows of
    every kind and rows without a task in one batch, its state equals the whole layer's."""
    eng = Engine(tiny_bert, max_batch_size=64)
    loaded = [eng.load(a) for a in artifacts(tiny_bert.spec)]
    rows = [(i, t) for i in range(len(INPUTS)) for t in [*range(len(loaded)), None]]
    tasks = [None if t is None else loaded[t] for _, t in rows]
    order = row_order(tasks) or list(range(len(rows)))
    tasks = [tasks[i] for i in order]
    ids, mask, types = eng.pad(eng.tokenize([INPUTS[rows[i][0]] for i in order]))
    ctx = eng.encoder.context(ids, mask)
    effects = effects_for(group_rows(tasks, ids.device), ctx)
    with torch.no_grad():
        whole = eng.encoder.forward(ctx, types, effects)
        first = eng.encoder.forward(ctx, types, effects, first_only=True)
    assert whole.shape[1] > 1 and first.shape == (len(rows), 1, whole.shape[2])
    torch.testing.assert_close(first[:, 0], whole[:, 0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind_index", range(len(TASKS)))
def test_zero_artifact_is_a_no_op(tiny_bert, kind_index: int) -> None:
    eng = Engine(tiny_bert)
    art = artifacts(tiny_bert.spec, zero=True)[kind_index]
    task = eng.load(art)
    ids, mask, types = eng.pad(eng.tokenize(INPUTS))
    ctx = eng.encoder.context(ids, mask)
    effects = effects_for(group_rows([task] * len(INPUTS), ids.device), ctx)
    with torch.no_grad():
        got = eng.encoder.forward(ctx, types, effects)[:, 0]
        ref = eng.encoder.forward(ctx, types, ())[:, 0]
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind_index", range(len(TASKS)))
def test_export_import_round_trip_is_bit_exact(tiny_bert, kind_index: int) -> None:
    art = artifacts(tiny_bert.spec)[kind_index]
    exported = TaskModule(tiny_bert, art).export()
    buf = safetensors.torch.save(exported.tensors)
    back = safetensors.torch.load(io.BytesIO(buf).read())
    assert back.keys() == art.tensors.keys()
    for k, v in art.tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def test_pasta_acts_only_on_special_positions(tiny_bert) -> None:
    eng = Engine(tiny_bert)
    art = TaskArtifact.random("pasta", tiny_bert.spec, 2, seed=3)
    vec = art.tensors["pasta.vectors"]  # (L, S, d)
    ids, mask, types = eng.pad(eng.tokenize(INPUTS))
    tok = tiny_bert.tokenizer
    idx = special_index(ids, tiny_bert.special_ids, tiny_bert.spec.num_special)
    is_cls_sep = (ids == tok.cls_token_id) | (ids == tok.sep_token_id)
    assert torch.equal(idx.ge(0), is_cls_sep)
    pair_rows = [i for i, x in enumerate(INPUTS) if not isinstance(x, str)]
    assert all(int(idx[i].max()) == 2 for i in pair_rows)  # [CLS], [SEP], [SEP]
    # Reference: the HF model with pre-hooks adding the vectors at [CLS]/[SEP] only, the
    # k-th special token of a row found here from the tokenizer's ids (not special_index).
    hooks = []
    onehot = torch.zeros(*ids.shape, vec.shape[1])
    for r, row in enumerate(ids.tolist()):
        found = [t for t, x in enumerate(row) if x in (tok.cls_token_id, tok.sep_token_id)]
        assert len(found) == (3 if r in pair_rows else 2)
        for k, t in enumerate(found):
            onehot[r, t, k] = 1.0
    for layer_i, layer in enumerate(tiny_bert.model.encoder.layer):
        def pre(mod, args, kwargs, li=layer_i):
            add = onehot.float() @ vec[li]  # (B, T, d): zero off the special positions
            return (args[0] + add, *args[1:]), kwargs
        hooks.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        with torch.no_grad():
            ref = tiny_bert.model(input_ids=ids, attention_mask=mask.long(),
                                  token_type_ids=types).last_hidden_state[:, 0]
    finally:
        for h in hooks:
            h.remove()
    task = eng.load(art)
    ctx = eng.encoder.context(ids, mask)
    with torch.no_grad():
        got = eng.encoder.forward(ctx, types, effects_for(group_rows([task] * len(INPUTS),
                                                                       ids.device), ctx))[:, 0]
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["sparse", "bitfit"])
def test_weight_diffs_equal_a_patched_model(tiny_bert, kind: str) -> None:
    """Sparse and BitFit rows equal the HF model with the diff added to its weights."""
    eng = Engine(tiny_bert)
    cfg = SparseConfig(density=0.1) if kind == "sparse" else None
    art = TaskArtifact.random(kind, tiny_bert.spec, 2, config=cfg, seed=5)
    if kind == "sparse":
        diffs = to_dense(art.kind_tensors(), tiny_bert.spec)
    else:
        diffs = {k[len("bitfit."):]: v for k, v in art.kind_tensors().items()}
    patched = copy.deepcopy(tiny_bert.model)
    params = dict(patched.named_parameters())
    with torch.no_grad():
        for name, d in diffs.items():
            params[name].add_(d)
    ids, mask, types = eng.pad(eng.tokenize(INPUTS))
    with torch.no_grad():
        ref_cls = patched(input_ids=ids, attention_mask=mask.long(),
                          token_type_ids=types).last_hidden_state[:, 0]
    ref = ref_cls @ art.tensors["head.weight"].T + art.tensors["head.bias"]
    bare = eng.load(TaskArtifact.random("pasta", tiny_bert.spec, 2, zero=True))
    tasks = [eng.load(art) if i % 2 == 0 else bare for i in range(len(INPUTS))]
    got = eng.run(INPUTS, tasks)
    for i in range(0, len(INPUTS), 2):
        torch.testing.assert_close(got[i], ref[i], atol=ATOL, rtol=0)


def test_truncation_is_flagged(tiny_bert) -> None:
    eng = Engine(tiny_bert)
    long = " ".join(["good"] * 200)
    enc = eng.tokenize([long, ("the movie", long), "short"])
    assert [e.truncated for e in enc] == [True, True, False]
    assert all(len(e.ids) <= tiny_bert.spec.max_length for e in enc)
    out = eng.run([long, "short"], [None, None])
    for x, got in zip([long, "short"], out, strict=True):  # the first 64 tokens, as HF cuts them
        enc = tiny_bert.tokenizer(x, truncation=True, max_length=tiny_bert.spec.max_length,
                                  return_tensors="pt")
        with torch.no_grad():
            ref = tiny_bert.model(**enc).last_hidden_state[0, 0]
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


def test_plan_buckets_cover_every_row_once_and_cut_padding() -> None:
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(4, 120, (300,), generator=g).tolist()
    buckets = plan_buckets(lengths, 64)
    flat = sorted(i for b in buckets for i in b)
    assert flat == list(range(300))
    assert all(1 <= len(b) <= 64 for b in buckets)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in buckets)
    naive = sum(64 * max(lengths[i:i + 64]) for i in range(0, 300, 64))
    assert padded < naive
    # equal lengths: every forward costs its rows plus a fixed cost, so the plan takes as
    # few forwards as it may, and none over the limit (130 rows: 3 forwards, not 2 of 65)
    same = plan_buckets([50] * 130, 64)
    assert len(same) == 3 and max(len(b) for b in same) <= 64


def test_run_rejects_mismatched_lengths(tiny_engine) -> None:
    with pytest.raises(ValueError, match="2 inputs but 1 tasks"):
        tiny_engine.run(["a", "b"], [None])


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_roberta"])
def test_embedding_diffs_equal_a_patched_model(backbone: str, request: pytest.FixtureRequest) -> None:
    """A sparse artifact with word, position and token-type embedding deltas (and encoder
    entries) equals the HF model with the diff added to its weights, rows of it mixed with
    rows of an embedding-free sparse task and of no task."""
    from tests.test_slots import embedding_art

    bb = request.getfixturevalue(backbone)
    art = embedding_art(bb.spec, 20, 400, seed=7)
    patched = copy.deepcopy(bb.model)
    with torch.no_grad():
        for name, d in to_dense(art.kind_tensors(), bb.spec).items():
            patched.get_parameter(name).add_(d)
    eng = Engine(bb)
    ids, mask, types = eng.pad(eng.tokenize(INPUTS))
    with torch.no_grad():
        cls = patched(input_ids=ids, attention_mask=mask.long(), token_type_ids=types).last_hidden_state[:, 0]
    ref = cls @ art.tensors["head.weight"].T + art.tensors["head.bias"]
    other = TaskArtifact.random("sparse", bb.spec, 2, config=SparseConfig(density=0.05), seed=8)
    tasks = [eng.load(art), eng.load(other), None]
    got = eng.run(INPUTS, [tasks[i % 3] for i in range(len(INPUTS))])
    for i in range(0, len(INPUTS), 3):
        torch.testing.assert_close(got[i], ref[i], atol=ATOL, rtol=0)
    alone = eng.run(INPUTS, [tasks[1]] * len(INPUTS))
    for i in range(1, len(INPUTS), 3):
        torch.testing.assert_close(got[i], alone[i], atol=ATOL, rtol=0)


def test_sparse_embedding_entries_are_validated_by_name(tiny_bert) -> None:
    from polyhead.engine import ArtifactError
    from tests.test_slots import embedding_art

    spec = tiny_bert.spec
    art = embedding_art(spec, 5, 10, seed=9)
    word = "sparse.embeddings.word_embeddings.weight"
    bad = dict(art.tensors)
    bad[word + ".indices"] = bad[word + ".indices"].flip(0)
    with pytest.raises(ArtifactError, match=r"word_embeddings\.weight\.indices must be strictly"):
        TaskArtifact(art.kind, art.config, art.head, bad).validate(spec)
    bad = dict(art.tensors)
    bad[word + ".indices"] = bad[word + ".indices"] + spec.param_shapes[word[7:]][0] * spec.hidden
    with pytest.raises(ArtifactError, match=r"word_embeddings\.weight\.indices out of range"):
        TaskArtifact(art.kind, art.config, art.head, bad).validate(spec)
    bad = {**art.tensors, "sparse.pooler.dense.weight.indices": torch.tensor([0]),
           "sparse.pooler.dense.weight.values": torch.tensor([1.0])}
    with pytest.raises(ArtifactError, match=r"'pooler\.dense\.weight' is not a backbone parameter"):
        TaskArtifact(art.kind, art.config, art.head, bad).validate(spec)
    # the budget: each part within density of its own weights (here 0.1 of the embedding
    # tables, though the encoder layers have room to spare)
    with pytest.raises(ArtifactError, match="embedding-table weights"):
        TaskArtifact(art.kind, SparseConfig(density=0.1), art.head, art.tensors).validate(spec)
