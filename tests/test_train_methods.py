"""The papers' rules, checked one by one on a tiny in-code BERT (issue 11):
DPS stages and per-matrix quota, Child-Tuning_F's Bernoulli mask, Child-Tuning_D's Fisher
and global mask, EH-FT's stage split, dropout in training only, and standardised
regression served on the task's own scale."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from polyhead.engine import Backbone, Engine, HeadConfig, load_backbone
from polyhead.store import Store, decode_artifact, encode_artifact
from polyhead.trainer import Dataset, Example, TrainConfig, train
from polyhead.trainer.algos import dps as dps_algo
from polyhead.trainer.algos.child_d import ChildDOptions
from polyhead.trainer.algos.child_f import ChildFOptions
from polyhead.trainer.context import Context
from polyhead.trainer.loop import batches, encode, loss_fn, steps_for
from polyhead.trainer.masks import BernoulliMask, ChildDMask, DpsMask, fisher
from polyhead.trainer.models import Batch, DenseModel, PetModel
from polyhead.trainer.output import encode as encode_result
from polyhead.trainer.table import METHODS
from tests.test_train import NEG, POS
from tests.tiny import make_bert

QUIET = {"progress": False, "log_fn": lambda s: None}


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    return load_backbone(make_bert(tmp_path_factory.mktemp("tiny-bert-methods")))


@pytest.fixture(scope="module")
def sentiment() -> Dataset:
    rows = [Example(t, None, "positive") for t in POS] + [Example(t, None, "negative") for t in NEG]
    return Dataset(rows, ["negative", "positive"], "str")


def context(bert: Backbone, data: Dataset, cfg: TrainConfig) -> Context:
    enc = encode(bert.tokenizer, data, cfg.max_length)
    return Context(bert, enc, enc, HeadConfig(num_outputs=2, type="pooler"), "accuracy", False,
                   steps_for(len(enc), cfg.num_epochs, cfg.batch))


# -- DPS ------------------------------------------------------------------------------------


def test_dps_cycle_length_is_update_ratio_of_max_steps() -> None:
    cfg = TrainConfig(method="dps", recipe="paper")
    # the paper's max_steps (3 epochs, batch 16): RTE 468 -> us 23, CoLA 1,605 -> 80
    assert [dps_algo.stage_length(cfg, n) for n in (468, 690, 1080, 1605)] == [23, 34, 54, 80]
    assert dps_algo.stage_length(cfg, 10) == 1


def test_dps_stage_one_is_dense_stage_two_keeps_each_matrix_top_share() -> None:
    torch.manual_seed(0)
    params = {"w": nn.Parameter(torch.zeros(6, 5)), "v": nn.Parameter(torch.zeros(3, 4)),
              "b": nn.Parameter(torch.zeros(5))}
    policy = DpsMask(params, ["w", "v"], stage_len=2, reserve_p=0.3)
    acc: dict[str, torch.Tensor] = {}
    for t in range(1, 9):  # stages: I (1-2), II (3-4), I (5-6), II (7-8)
        grads = {n: torch.randn_like(p) for n, p in params.items()}
        for n, p in params.items():
            p.grad = grads[n].clone()
        policy.before_clip(params)
        if math.ceil(t / 2) % 2 == 1:  # stage I: every gradient untouched, accumulation
            for n, p in params.items():
                torch.testing.assert_close(p.grad, grads[n], atol=0, rtol=0)
            acc = {n: (acc[n] if (t - 1) % 2 else 0) + grads[n] ** 2 for n in ("w", "v")}
            continue
        for n in ("w", "v"):  # stage II: this matrix's own top ceil(0.7 |W|) by accumulation
            k = math.ceil(0.7 * acc[n].numel())
            want = acc[n] >= torch.topk(acc[n].reshape(-1), k).values.min()
            assert int(want.sum()) == k
            torch.testing.assert_close(params[n].grad, grads[n] * want, atol=0, rtol=0)
        torch.testing.assert_close(params["b"].grad, grads["b"], atol=0, rtol=0)  # biases always
    assert [h["step"] for h in policy.history] == [3, 7]  # re-selected each cycle


def test_dps_paper_selects_in_every_linear_weight_only(bert: Backbone, sentiment: Dataset) -> None:
    cfg = TrainConfig(method="dps", recipe="paper", epochs=1, batch_size=4)
    model = METHODS["dps"].build(cfg, context(bert, sentiment, cfg))
    assert isinstance(model, DenseModel) and isinstance(model.policy, DpsMask)
    names = set(model.policy.names)
    linears = {n + ".weight" for n in bert.spec.linear_names()}
    assert names == linears | {"pooler.dense.weight", "head.weight"}
    assert not any("bias" in n or "LayerNorm" in n or "embeddings" in n for n in names)
    assert model.policy.stage_len == max(1, int(5 * 0.05))  # 20 rows / 4 = 5 steps
    # run_trainer.py: DPS Dense trains without dropout below 2,000 steps
    assert model.dropout is False
    model.set_training(True)
    assert model.encoder.training is False
    servable = METHODS["dps"].build(TrainConfig(method="dps", epochs=1, batch_size=4),
                                    context(bert, sentiment, cfg))
    assert isinstance(servable, DenseModel) and servable.dropout is True


# -- Child-Tuning_F -------------------------------------------------------------------------


def test_child_f_keeps_p_of_each_tensor_and_rescales(bert: Backbone, sentiment: Dataset) -> None:
    cfg = TrainConfig(method="child-f", recipe="paper", options=ChildFOptions(child_f_p=0.3))
    model = METHODS["child-f"].build(cfg, context(bert, sentiment, cfg))
    assert isinstance(model, DenseModel) and isinstance(model.policy, BernoulliMask)
    names = set(model.policy.names)
    assert {"embeddings.word_embeddings.weight", "head.weight", "head.bias",
            "pooler.dense.weight"} <= names and names == set(model.params)
    params = {n: model.params[n] for n in ("embeddings.word_embeddings.weight", "head.weight",
                                           "encoder.layer.0.attention.self.query.weight")}
    policy = model.policy  # the built model's own mask: it must read cfg.child_f_p as p
    assert policy.p == 0.3
    kept = {n: 0 for n in params}
    steps = 40
    for _ in range(steps):
        for p in model.params.values():
            p.grad = None
        for p in params.values():
            p.grad = torch.ones_like(p)
        policy.after_clip(model.params)
        for n, p in params.items():
            dropped, kept_x = p.grad == 0, torch.isclose(p.grad, torch.tensor(1 / 0.3))
            assert bool((dropped | kept_x).all())  # dropped, or kept x 1/p_F
            kept[n] += int((p.grad != 0).sum())
    for n, p in params.items():
        frac = kept[n] / (steps * p.numel())
        assert abs(frac - 0.3) < 4 * math.sqrt(0.3 * 0.7 / (steps * p.numel())) + 1e-3, (n, frac)
    for p in model.params.values():
        p.grad = None


# -- every method's options, read on the built model ---------------------------------------


def test_child_d_keeps_its_fraction_on_the_built_model(bert: Backbone, sentiment: Dataset) -> None:
    """Paper: the global top child_d_p of the Fisher; servable: exactly --density of the
    tunable weights. Values away from 0.5 so that keep and 1 - keep differ."""
    for recipe, keep, opts in (("paper", 0.2, ChildDOptions(child_d_p=0.2)),
                               ("servable", 0.1, ChildDOptions(density=0.1, mask_structure="entries"))):
        cfg = TrainConfig(method="child-d", recipe=recipe, batch_size=8, dropout=False, options=opts)
        model = METHODS["child-d"].build(cfg, context(bert, sentiment, cfg))
        assert isinstance(model.policy, ChildDMask)
        masks = model.policy.masks
        total = sum(m.numel() for m in masks.values())
        kept = sum(int(m.sum()) for m in masks.values())
        assert abs(kept - keep * total) < 1, (recipe, kept, total)  # ceil or floor of the share


def test_dps_reads_its_reserve_ratio_and_stage_length(bert: Backbone, sentiment: Dataset) -> None:
    cfg = TrainConfig(method="dps", recipe="paper", epochs=3, batch_size=4,
                      options=dps_algo.DpsOptions(dps_reserve_p=0.2, dps_update_ratio=0.15))
    ctx = context(bert, sentiment, cfg)
    model = METHODS["dps"].build(cfg, ctx)
    assert isinstance(model.policy, DpsMask)
    # steps, not examples: 20 examples / 4 x 3 epochs = 15 steps, int(15 x 0.15) = 2
    assert ctx.total_steps == 15 and model.policy.stage_len == 2
    assert model.policy.reserve_p == 0.2
    # stage II on the built policy keeps each matrix's top 1 - reserve_p of the accumulation
    params = model.params
    torch.manual_seed(1)
    grads = {n: torch.rand_like(p) for n, p in params.items()}
    for _ in range(1, 5):  # steps 1-2 stage I, 3-4 stage II
        for n, p in params.items():
            p.grad = grads[n].clone()
        model.policy.before_clip(params)
    w = "encoder.layer.0.attention.self.query.weight"
    share = float((params[w].grad != 0).float().mean())
    assert abs(share - 0.8) < 0.01, share
    for p in params.values():
        p.grad = None


@pytest.mark.parametrize("method", list(METHODS))
def test_dropout_follows_the_config_for_every_method(bert: Backbone, sentiment: Dataset,
                                                     method: str) -> None:
    """--no-dropout trains deterministically; with dropout the train-mode forward draws
    (every method; DPS's paper recipe turns it off below 2,000 steps, tested above)."""
    outs = {}
    for dropout in (False, True):
        recipe = "servable" if "servable" in METHODS[method].recipes else "paper"
        fisher = {"fisher_examples": 8} if method == "child-d" else {}
        cfg = TrainConfig.flat(method=method, recipe=recipe, batch_size=8, dropout=dropout, **fisher)
        ctx = context(bert, sentiment, cfg)
        model = METHODS[method].build(cfg, ctx)
        batch = next(batches(ctx.train, 8, ctx.pad_id, ctx.device))
        model.set_training(True)
        with torch.no_grad():
            outs[dropout] = (model.forward(batch), model.forward(batch))
    torch.testing.assert_close(*outs[False], atol=0, rtol=0)
    assert not torch.equal(*outs[True])


# -- Child-Tuning_D -------------------------------------------------------------------------


def test_child_d_fisher_is_clipped_summed_and_divided(bert: Backbone, sentiment: Dataset) -> None:
    cfg = TrainConfig(method="full", recipe="paper", batch_size=8, dropout=False)
    ctx = context(bert, sentiment, cfg)
    model = DenseModel(bert, cfg, ctx.head)
    model.set_training(False)
    names = [n for n in model.backbone_params if n.startswith("encoder.layer.")]
    params = {n: model.params[n] for n in names}
    data = list(batches(ctx.train, 8, ctx.pad_id, ctx.device, shuffle_seed=3))
    assert len(data) == 3

    def loss_of(b):
        return loss_fn(model.forward(b), b.targets, False)

    first = torch.autograd.grad(loss_of(data[0]), list(params.values()), allow_unused=True)
    max_norm = float(np.median([float(g.norm()) for g in first if g is not None]))  # clips half

    got = fisher(params, data, loss_of, max_norm)
    want = {n: torch.zeros_like(p) for n, p in params.items()}
    clipped = 0
    for b in data:  # by hand: per-tensor clip, square, sum, then divide by the batch count
        grads = torch.autograd.grad(loss_of(b), list(params.values()), allow_unused=True)
        for n, g in zip(params, grads, strict=True):
            if g is None:
                continue
            norm = float(g.norm())
            clipped += norm > max_norm
            g = g * min(1.0, max_norm / (norm + 1e-6))
            want[n] += g ** 2
    assert 0 < clipped < 3 * len([g for g in first if g is not None])
    for n in names:
        torch.testing.assert_close(got[n], want[n] / 3, rtol=1e-4, atol=1e-12)
    # the mask: the global top p_D, one threshold over every tensor, fixed
    mask = ChildDMask(got, 0.3, limit_union=False)
    flat = torch.cat([got[n].reshape(-1) for n in names])
    kept = torch.cat([mask.masks[n].reshape(-1) for n in names]).bool()
    assert int(kept.sum()) == math.ceil(0.3 * flat.numel())  # no ties in real gradients
    assert float(flat[kept].min()) >= float(flat[~kept].max())
    per_tensor = [float(mask.masks[n].mean()) for n in names]
    assert max(per_tensor) - min(per_tensor) > 0.1  # global, not a per-matrix quota


def test_child_d_masks_after_clipping_and_leaves_the_rest(bert: Backbone, sentiment: Dataset) -> None:
    cfg = TrainConfig(method="child-d", recipe="paper", batch_size=8, dropout=False)
    model = METHODS["child-d"].build(cfg, context(bert, sentiment, cfg))
    assert isinstance(model, DenseModel) and isinstance(model.policy, ChildDMask)
    assert set(model.policy.masks) == {n for n in model.params if n.startswith("encoder.layer.")}
    for p in model.params.values():
        p.grad = torch.ones_like(p)
    model.before_clip()
    assert all(bool((p.grad == 1).all()) for p in model.params.values())  # not before clipping
    model.after_clip()
    for n, p in model.params.items():
        m = model.policy.masks.get(n)
        torch.testing.assert_close(p.grad, m if m is not None else torch.ones_like(p), atol=0, rtol=0)


# -- EH-FT ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pet", ["pet:lora", "pet:bitfit"])
def test_eh_ft_stage_split_and_stage_two_start(bert: Backbone, sentiment: Dataset, pet: str) -> None:
    cache: dict = {}
    cfg = TrainConfig(method="full", recipe="paper", epochs=4, batch_size=4, head_init=pet,
                      head_init_frac=0.1, dropout=False, seed=2)
    res = train(cfg, bert, sentiment, sentiment, "accuracy", head_cache=cache, export=False, **QUIET)
    total = steps_for(len(sentiment.examples), 4, 4)  # 20 steps
    stage1 = res.training.head_init_stage
    assert stage1 is not None and stage1.steps == round(0.1 * total) == 2 and res.training.steps == total - 2
    assert stage1.method == pet.split(":")[1] and stage1.lr == 5e-4
    ((head, _),) = cache.values()
    # stage 2 with a vanishing lr: the model is the original backbone + the stage-1 head
    frozen = TrainConfig(method="full", recipe="paper", epochs=4, batch_size=4, head_init=pet,
                         head_init_frac=0.1, dropout=False, seed=2, lr=1e-12)
    res2 = train(frozen, bert, sentiment, sentiment, "accuracy", head_cache=cache, export=False,
                 **QUIET)
    model = res2.model
    assert isinstance(model, DenseModel)
    for k, v in model.head_tensors().items():
        torch.testing.assert_close(v, head[k], atol=1e-6, rtol=0)
    original = dict(bert.model.named_parameters())
    for n, p in model.backbone_params.items():
        torch.testing.assert_close(p.detach(), original[n], atol=1e-6, rtol=0)
    names = {n for n, _ in model.module.named_parameters()}
    assert not any("lora" in n or "bitfit" in n for n in names)  # no PET parameters left


# -- dropout --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["full", "pasta", "bitfit"])
def test_dropout_in_training_only(bert: Backbone, sentiment: Dataset, method: str) -> None:
    cfg = TrainConfig(method=method, recipe="servable", batch_size=8)
    ctx = context(bert, sentiment, cfg)
    model = METHODS[method].build(cfg, ctx)
    batch = next(batches(ctx.train, 8, ctx.pad_id, ctx.device))
    model.set_training(True)
    with torch.no_grad():
        a, b = model.forward(batch), model.forward(batch)
    assert not torch.equal(a, b)  # dropout draws differ
    model.set_training(False)
    with torch.no_grad():
        c, d = model.forward(batch), model.forward(batch)
    torch.testing.assert_close(c, d, atol=0, rtol=0)
    if isinstance(model, PetModel):
        assert model.kind == method
    # serving: the engine's encoder never trains, and gives the eval-mode logits
    eng = Engine(bert)
    assert eng.encoder.training is False
    art = model.export()
    texts = POS[:4] + NEG[:4]
    served = torch.stack(eng.run(texts, [eng.load(art)] * 8))
    enc = bert.tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=True)
    from polyhead.trainer.models import Batch

    mine = model.forward(Batch(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"],
                               torch.zeros(8, dtype=torch.long)))
    torch.testing.assert_close(served, mine.detach(), atol=1e-5, rtol=0)


# -- standardised regression ----------------------------------------------------------------


def test_regression_is_standardised_and_served_on_the_task_scale(
        bert: Backbone, tmp_path: Path) -> None:
    from polyhead.server._private.inference import BatchItem, forward, response
    from polyhead.server.bank import Resident, TaskMeta, VersionKey

    rows = [Example(t, None, 40.0) for t in POS] + [Example(t, None, 30.0) for t in NEG]
    data = Dataset(rows, None, "float")
    cfg = TrainConfig(method="full", recipe="servable", epochs=8, lr=3e-3, batch_size=8,
                      warmup=0.0, dropout=False)
    res = train(cfg, bert, data, data, "pearson", **QUIET)
    assert res.scale is not None and res.scale.mean == 35.0 and res.scale.std == 5.0
    assert res.training.regression_scale == {"mean": 35.0, "std": 5.0}
    assert res.metrics["pearson"] > 0.5
    # the trainer's own predictions, on the task's scale
    dev = encode(bert.tokenizer, data, 32)
    from polyhead.trainer.loop import predict

    z = predict(res.model, dev, 8, bert.tokenizer.pad_token_id, bert.device, fp32=True)[:, 0]
    want = z * 5.0 + 35.0
    assert 30.0 < float(want.mean()) < 40.0
    # the stored file carries the scale; the store, the engine and Classify's response
    # give values on the task's scale
    blob = encode_result("sts", res, data, bert.spec)
    manifest, art = decode_artifact(blob, bert.spec)
    assert manifest.regression and manifest.regression_scale == {"mean": 35.0, "std": 5.0}
    store = Store(tmp_path / "store", spec=bert.spec)
    info = store.publish(blob)
    stored = store.get("sts", info.version)
    eng = Engine(bert)
    task = eng.load(stored.artifact)
    texts = [e.text for e in rows]
    (out,), _ = forward(eng, [BatchItem(eng.tokenize(texts), task)])
    meta = TaskMeta(number=1, labels=(), regression=True, inputs="single")
    resp = response(Resident(VersionKey("sts", info.version), task, meta), out, "r0")
    served = np.array([p.value for p in resp.predictions])
    np.testing.assert_allclose(served, want, atol=1e-4, rtol=0)
    # an artifact without the field (older files) loads as before
    old = manifest.to_dict()
    old.pop("regression_scale")
    from polyhead.store.manifest import Manifest

    assert Manifest.from_dict(old).regression_scale is None
    assert encode_artifact(manifest, art)  # re-encodes


def test_pasta_dropout_acts_on_the_added_vectors_only() -> None:
    from polyhead.engine.encoder import Effect
    from polyhead.trainer.models import _DropAdded

    class Add(Effect):  # adds v at (row 0, position 1) and (row 1, position 0), as PASTA does
        acts_before_layers = True

        def before_layer(self, layer: int, h: torch.Tensor) -> torch.Tensor:
            pos = (torch.tensor([0, 1]), torch.tensor([1, 0]))
            return h.index_put(pos, torch.ones(2, 64), accumulate=True)

    torch.manual_seed(0)
    h = torch.randn(2, 3, 64)
    out = _DropAdded(Add(), 0.5).before_layer(0, h)
    added = out - h
    off = torch.ones(2, 3, dtype=torch.bool)
    off[0, 1] = off[1, 0] = False
    assert bool((added[off].abs() < 1e-6).all())  # nothing added elsewhere
    on = torch.stack([added[0, 1], added[1, 0]])
    assert bool((torch.isclose(on, torch.zeros(1)) | torch.isclose(on, torch.full((1,), 2.0))).all())
    assert 0.2 < float((on == 0).float().mean()) < 0.8  # per element of each row's vector
    assert _DropAdded(Add(), 0.5).acts_before_layers  # the rest is delegated


def test_full_paper_recipe_is_bert_for_sequence_classification(bert: Backbone, sentiment: Dataset) -> None:
    """The paper recipe's model and gradients equal Hugging Face's BertForSequenceClassification
    (the papers' code) with the same weights, parameter for parameter (dropout off)."""
    from transformers import AutoModelForSequenceClassification

    cfg = TrainConfig(method="full", recipe="paper", batch_size=8)
    ctx = context(bert, sentiment, cfg)
    mine = METHODS["full"].build(cfg, ctx)
    assert isinstance(mine, DenseModel)
    hf = AutoModelForSequenceClassification.from_pretrained(bert.path, num_labels=2, local_files_only=True)
    with torch.no_grad():
        hf.classifier.weight.copy_(mine.params["head.weight"])
        hf.classifier.bias.copy_(mine.params["head.bias"])
    hf.eval()
    mine.set_training(False)
    batch = next(batches(ctx.train, 8, ctx.pad_id, ctx.device, shuffle_seed=0))
    ours = mine.forward(batch)
    theirs = hf(input_ids=batch.ids, attention_mask=batch.mask, token_type_ids=batch.types).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    loss_fn(ours, batch.targets, False).backward()
    loss_fn(theirs, batch.targets, False).backward()
    hf_params = dict(hf.named_parameters())
    trained = set()
    for name, p in mine.params.items():
        ref = hf_params["classifier." + name[5:] if name.startswith("head.") else "bert." + name]
        torch.testing.assert_close(p.grad, ref.grad, atol=1e-6, rtol=1e-3)
        trained.add(name)
    assert len(trained) == len(hf_params)  # every parameter of the HF model is trained
    groups = mine.param_groups(0.01)  # HF Trainer: decay on all but biases and LayerNorm weights
    no_decay = {id(p) for p in groups[1]["params"]}
    for name, p in mine.params.items():
        assert (id(p) in no_decay) == (name.endswith("bias") or "LayerNorm" in name), name


# -- the paper recipe's artifact ------------------------------------------------------------


@pytest.mark.parametrize("method,head_init", [("full", None), ("dps", None), ("full", "pet:bitfit")],
                         ids=["full", "dps", "eh-ft"])
def test_paper_artifact_in_a_mixed_batch_gives_the_trained_logits(
        bert: Backbone, sentiment: Dataset, method: str, head_init: str | None) -> None:
    """A whole-model (paper recipe) result, through the file format, run in one batch with
    every other kind: its rows give the trained model's eval logits. The file holds the
    embedding tables' diffs, and the trained pooler as the first layer of an mlp head."""
    from polyhead.engine import TaskArtifact
    from tests.test_engine import INPUTS, artifacts

    cfg = TrainConfig(method=method, recipe="paper", epochs=2, batch_size=4, lr=1e-3,
                      head_init=head_init)
    res = train(cfg, bert, sentiment, sentiment, "accuracy", **QUIET)
    _, art = decode_artifact(encode_result("paper", res, sentiment, bert.spec), bert.spec)
    touched = {k[len("sparse."):-len(".indices")] for k in art.tensors if k.endswith(".indices")}
    assert set(bert.spec.embedding_params()) <= touched
    assert art.head.type == "mlp" and not any("pooler" in p for p in touched)
    eng = Engine(bert)
    others = [eng.load(a) for a in artifacts(bert.spec)]
    paper = eng.load(art)
    rows = [(x, t) for x in range(len(INPUTS)) for t in range(len(others) + 1)]
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(1)).tolist()
    rows = [rows[p] for p in perm]
    got = eng.run([INPUTS[x] for x, _ in rows], [others[t] if t < len(others) else paper
                                                for _, t in rows])
    ids, mask, types = eng.pad(eng.tokenize(INPUTS))
    res.model.set_training(False)
    with torch.no_grad():
        want = res.model.forward(Batch(ids, mask, types, torch.zeros(len(INPUTS), dtype=torch.long)))
    seen = 0
    for (x, t), g in zip(rows, got, strict=True):
        if t == len(others):
            torch.testing.assert_close(g, want[x], atol=1e-5, rtol=0)
            seen += 1
    assert seen == len(INPUTS)
    bare = TaskArtifact(art.kind, art.config, art.head, {k: v for k, v in art.tensors.items()
                                                         if "_embeddings." not in k})
    without = torch.stack(eng.run(INPUTS, [eng.load(bare)] * len(INPUTS)))
    assert float((without - want).abs().max()) > 1e-3  # the embedding diffs matter
