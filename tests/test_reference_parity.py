"""Every kind and head against a reference written apart from methods/.

The reference runs the Hugging Face model's own modules (embeddings, Linear, LayerNorm,
pooler) in float64 and restates only what an artifact changes, one sequence at a time
(no padding): weight diffs (sparse, BitFit, LoRA merged as W + scale B A) patched into a
copy of the model, PASTA vectors added at the k-th special token before each layer, and
P-tuning v2 prefixes as extra keys/values whose softmax weights the layer gate scales.
The engine is used only through its public surface (``load`` and ``run``), so any engine
that serves these artifacts must give these logits.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from polyhead.engine import Engine, TaskArtifact
from polyhead.engine.lora import LoraConfig
from polyhead.engine.prefix import PrefixConfig
from polyhead.engine.sparse import SparseConfig

ATOL = 1e-5
INPUTS: list[str | tuple[str, str]] = [
    "the movie was good", "i hated the plot", "a cat sat on the mat !",
    "the film was not very fun , but the actors were great", "rain",
    ("the man walks", "he walks in the park"), ("the sun shines today", "it is rain"),
    ("we loved it", "they hated it because it was boring")]

# (kind, config, head type, outputs, gates for prefix): every kind with every head.
TASKS = [
    ("pasta", None, "linear", 2, None),
    ("pasta", None, "mlp", 3, None),
    ("pasta", None, "pooler", 1, None),
    ("prefix", PrefixConfig(num_prefix=3), "linear", 3, [0.5, 2.0]),
    ("prefix", PrefixConfig(num_prefix=6), "mlp", 2, [1.0, 1.0]),
    ("prefix", PrefixConfig(num_prefix=2), "pooler", 4, [0.0, 3.0]),
    ("lora", LoraConfig(r=4, alpha=8.0), "linear", 2, None),
    ("lora", LoraConfig(r=2, alpha=4.0, targets=("attention.self.key", "intermediate.dense",
                                                 "output.dense")), "mlp", 5, None),
    ("lora", LoraConfig(r=3, alpha=2.0, rslora=True, targets=("attention.output.dense",)),
     "pooler", 2, None),
    ("sparse", SparseConfig(density=0.05), "linear", 2, None),
    ("sparse", SparseConfig(density=0.2), "mlp", 3, None),
    ("sparse", SparseConfig(density=0.1), "pooler", 2, None),
    ("bitfit", None, "linear", 3, None),
    ("bitfit", None, "mlp", 1, None),
    ("bitfit", None, "pooler", 2, None),
]
SCALE = {"pasta": 25.0, "prefix": 25.0, "lora": 4.0, "sparse": 5.0, "bitfit": 5.0}  # visible effects


def make_artifact(spec, i: int, *, zero: bool = False) -> TaskArtifact:
    kind, cfg, head, outputs, gates = TASKS[i]
    art = TaskArtifact.random(kind, spec, outputs, config=cfg, head_type=head, zero=zero, seed=i)
    for k, v in art.kind_tensors().items():
        if v.is_floating_point() and not k.endswith("gate"):
            art.tensors[k] = v * SCALE.get(kind, 1.0)
    if gates is not None and not zero:
        art.tensors["prefix.gate"] = torch.tensor(gates[:spec.num_layers])
    g = torch.Generator().manual_seed(100 + i)
    for k, v in art.head_tensors().items():  # init_head zeroes biases: a dropped one would hide
        if k.endswith("bias"):
            art.tensors[k] = torch.randn(v.shape, generator=g) + torch.where(
                torch.rand(v.shape, generator=g) < 0.5, -1.0, 1.0)
    return art


# --- the reference ----------------------------------------------------------------------

def weight_diffs(art: TaskArtifact, model: torch.nn.Module) -> dict[str, Tensor]:
    """Backbone parameter name -> the dense change the artifact makes to it."""
    t = art.kind_tensors()
    if art.kind == "bitfit":
        return {k.removeprefix("bitfit."): v for k, v in t.items()}
    if art.kind == "sparse":
        params = dict(model.named_parameters())
        out = {}
        for k, idx in t.items():
            if k.endswith(".indices"):
                name = k[len("sparse."):-len(".indices")]
                flat = torch.zeros(params[name].numel(), dtype=torch.float64)
                flat[idx] = t[k[:-len(".indices")] + ".values"].double()
                out[name] = flat.reshape(params[name].shape)
        return out
    if art.kind == "lora":
        cfg = art.config
        scale = cfg.alpha / (math.sqrt(cfg.r) if cfg.rslora else cfg.r)
        return {k[len("lora."):-len(".A")] + ".weight":
                scale * t[k[:-2] + ".B"].double() @ t[k].double()
                for k in t if k.endswith(".A")}
    return {}


def reference_model(backbone, art: TaskArtifact | None) -> torch.nn.Module:
    model = copy.deepcopy(backbone.model).double().eval()
    if art is not None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, d in weight_diffs(art, model).items():
                params[name].add_(d.double())
    return model


def attention(q: Tensor, k: Tensor, v: Tensor, heads: int,
              prefix: tuple[Tensor, Tensor, float] | None) -> Tensor:
    """(T, d) self-attention; a prefix (P, d) keys and values whose exp-scores are scaled
    by the gate g before normalising (g = 1: P-tuning v2, g = 0: no prefix)."""
    T, d = q.shape
    dh = d // heads
    out = []
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        s = q[:, sl] @ k[:, sl].T / math.sqrt(dh)  # (T, T)
        num_v, vals = [s], [v[:, sl]]
        weights = [torch.ones(T, dtype=q.dtype)]
        if prefix is not None:
            pk, pv, g = prefix
            num_v.append(q[:, sl] @ pk[:, sl].T / math.sqrt(dh))  # (T, P)
            vals.append(pv[:, sl])
            weights.append(torch.full((pk.shape[0],), g, dtype=q.dtype))
        m = torch.cat(num_v, 1).max(dim=1, keepdim=True).values
        e = [torch.exp(x - m) * w for x, w in zip(num_v, weights, strict=True)]
        z = sum(x.sum(1, keepdim=True) for x in e)
        out.append(sum(x @ val for x, val in zip(e, vals, strict=True)) / z)
    return torch.cat(out, 1)


def special_positions(ids: Sequence[int], tokenizer) -> list[int]:
    """Positions of [CLS]/[SEP] (<s>/</s> for RoBERTa), in order."""
    specials = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    return [i for i, t in enumerate(ids) if t in specials]


def reference_hidden(backbone, model, art: TaskArtifact | None, x) -> Tensor:
    """Final hidden states (1, T, d) of one unpadded input, in float64."""
    args = (x,) if isinstance(x, str) else x
    enc = backbone.tokenizer(*args, return_tensors="pt", return_token_type_ids=True)
    ids = enc["input_ids"]
    t = {} if art is None else {k: v.double() for k, v in art.kind_tensors().items()}
    specials = special_positions(ids[0].tolist(), backbone.tokenizer)
    with torch.no_grad():
        h = model.embeddings(input_ids=ids, token_type_ids=enc["token_type_ids"])[0]  # (T, d)
        for i, layer in enumerate(model.encoder.layer):
            if "pasta.vectors" in t:
                vec = t["pasta.vectors"][i]  # (S, d)
                assert len(specials) <= vec.shape[0]
                h = h.clone()
                for slot, pos in enumerate(specials):
                    h[pos] += vec[slot]
            sa = layer.attention.self
            pre = None
            if "prefix.kv" in t:
                kv = t["prefix.kv"][i]  # (2, P, d)
                pre = (kv[0], kv[1], float(t["prefix.gate"][i]))
            a = attention(sa.query(h), sa.key(h), sa.value(h), model.config.num_attention_heads, pre)
            h1 = layer.attention.output(a[None], h[None])[0]
            h = layer.output(layer.intermediate(h1[None]), h1[None])[0]
    return h[None]


def reference_head(art: TaskArtifact, model, hidden: Tensor) -> Tensor:
    """(C,) logits from the final hidden states (1, T, d)."""
    t = {k: v.double() for k, v in art.head_tensors().items()}
    cls = hidden[0, 0]
    with torch.no_grad():
        if art.head.type == "mlp":
            inner = torch.tanh(t["head.dense.weight"] @ cls + t["head.dense.bias"])
            return t["head.out.weight"] @ inner + t["head.out.bias"]
        if art.head.type == "pooler":
            cls = model.pooler(hidden)[0]
        return t["head.weight"] @ cls + t["head.bias"]


def reference_logits(backbone, art: TaskArtifact, x) -> Tensor:
    model = reference_model(backbone, art)
    return reference_head(art, model, reference_hidden(backbone, model, art, x))


# --- the tests ----------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_roberta"])
def test_reference_equals_hugging_face(backbone: str, request) -> None:
    """The reference with no artifact is the HF model's own forward (it proves itself)."""
    bb = request.getfixturevalue(backbone)
    model = reference_model(bb, None)
    for x in INPUTS:
        args = (x,) if isinstance(x, str) else x
        with torch.no_grad():
            hf = model(**bb.tokenizer(*args, return_tensors="pt")).last_hidden_state
        torch.testing.assert_close(reference_hidden(bb, model, None, x), hf, atol=1e-9, rtol=0)


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_roberta"])
def test_mixed_batch_equals_the_reference_for_every_kind_and_head(backbone: str, request) -> None:
    bb = request.getfixturevalue(backbone)
    eng = Engine(bb, max_batch_size=64)
    arts = [make_artifact(bb.spec, i) for i in range(len(TASKS))]
    loaded = [eng.load(a) for a in arts]
    rows = [(i, t) for i in range(len(INPUTS)) for t in [*range(len(arts)), None]]
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()
    rows = [rows[p] for p in perm]
    got = eng.run([INPUTS[i] for i, _ in rows], [None if t is None else loaded[t] for _, t in rows])
    bare = reference_model(bb, None)
    models = [reference_model(bb, a) for a in arts]
    for (i, t), g in zip(rows, got, strict=True):
        plain = reference_hidden(bb, bare, None, INPUTS[i])
        if t is None:  # a row with no task: the bare [CLS] state
            torch.testing.assert_close(g.double(), plain[0, 0], atol=ATOL, rtol=0)
            continue
        hidden = reference_hidden(bb, models[t], arts[t], INPUTS[i])
        ref = reference_head(arts[t], models[t], hidden)
        torch.testing.assert_close(g.double(), ref, atol=ATOL, rtol=0, msg=lambda m, t=t: f"{TASKS[t]}: {m}")
        # the artifact visibly acts: its [CLS] state is not the bare backbone's
        assert (hidden[0, 0] - plain[0, 0]).abs().max() > 100 * ATOL, TASKS[t]


@pytest.mark.parametrize("backbone", ["tiny_bert", "tiny_roberta"])
@pytest.mark.parametrize("index", range(len(TASKS)))
def test_zero_artifact_is_a_no_op(backbone: str, index: int, request) -> None:
    """A zero-initialised artifact of every kind serves the bare backbone's [CLS] state."""
    bb = request.getfixturevalue(backbone)
    art = make_artifact(bb.spec, index, zero=True)
    if art.kind == "sparse":
        art = explicit_zero_sparse(bb.spec, index)
    eng = Engine(bb)
    got = eng.run(INPUTS, [eng.load(art)] * len(INPUTS))
    bare = reference_model(bb, None)
    for x, g in zip(INPUTS, got, strict=True):
        ref = reference_head(art, bare, reference_hidden(bb, bare, None, x))
        torch.testing.assert_close(g.double(), ref, atol=ATOL, rtol=0)


def explicit_zero_sparse(spec, index: int) -> TaskArtifact:
    """The random sparse artifact's entries (every tunable weight, bias and LayerNorm
    parameter, within the density budget) with every value an explicit 0.0."""
    art = make_artifact(spec, index)
    for k, v in art.kind_tensors().items():
        if k.endswith(".values"):
            art.tensors[k] = torch.zeros_like(v)
    assert sum(k.endswith(".indices") for k in art.tensors) >= 4 * spec.num_layers
    assert any("LayerNorm.weight" in k for k in art.tensors)
    return art


def test_prefix_with_zero_gate_is_a_no_op_whatever_its_keys(tiny_bert) -> None:
    """Gate 0 removes a layer's prefix entirely, however large its keys and values."""
    art = make_artifact(tiny_bert.spec, 3)
    art.tensors["prefix.gate"] = torch.zeros(tiny_bert.spec.num_layers)
    eng = Engine(tiny_bert)
    got = eng.run(INPUTS, [eng.load(art)] * len(INPUTS))
    bare = reference_model(tiny_bert, None)
    for x, g in zip(INPUTS, got, strict=True):
        ref = reference_head(art, bare, reference_hidden(tiny_bert, bare, None, x))
        torch.testing.assert_close(g.double(), ref, atol=ATOL, rtol=0)


def test_roberta_pairs_give_pasta_a_slot_per_separator(tiny_roberta) -> None:
    """RoBERTa marks a pair <s> A </s></s> B </s>: four special tokens, four PASTA slots,
    and each slot's vector reaches only its own token."""
    tok = tiny_roberta.tokenizer
    ids = tok("the man walks", "he walks in the park")["input_ids"]
    pos = special_positions(ids, tok)
    assert [ids[p] for p in pos] == [tok.bos_token_id] + [tok.eos_token_id] * 3
    assert pos[2] == pos[1] + 1  # the doubled separator
    assert tiny_roberta.spec.num_special == 4
    eng = Engine(tiny_roberta)
    base = make_artifact(tiny_roberta.spec, 0)
    pair = INPUTS[5]
    outs = []
    for slot in range(4):  # a vector on one slot only: each moves the logits differently
        art = copy.deepcopy(base)
        keep = torch.zeros_like(art.tensors["pasta.vectors"])
        keep[:, slot] = 4 * art.tensors["pasta.vectors"][:, slot]
        art.tensors["pasta.vectors"] = keep
        got = eng.run([pair], [eng.load(art)])[0]
        torch.testing.assert_close(got.double(), reference_logits(tiny_roberta, art, pair),
                                   atol=ATOL, rtol=0)
        outs.append(got)
    for a in range(4):  # a slot mix-up would break the parity above by far more than ATOL
        for b in range(a + 1, 4):
            assert (outs[a] - outs[b]).abs().max() > 10 * ATOL, (a, b)
