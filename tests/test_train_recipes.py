"""The papers' own recipes (issue 28): PASTA as its main_glue.py runs it, epoch checkpoints
a stopped run resumes from, on a tiny in-code BERT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polyhead.engine import Backbone, load_backbone
from polyhead.trainer import Dataset, Example, TrainConfig, train
from polyhead.trainer import loop as loop_mod
from polyhead.trainer.algos.eh_ft import EhFtOptions
from polyhead.trainer.models import PetModel
from polyhead.trainer.table import METHODS
from tests.test_train import NEG, POS
from tests.tiny import make_bert

QUIET = {"progress": False, "log_fn": lambda s: None}


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    return load_backbone(make_bert(tmp_path_factory.mktemp("tiny-bert-recipes")))


@pytest.fixture(scope="module")
def sentiment() -> Dataset:
    rows = [Example(t, None, "positive") for t in POS] + [Example(t, None, "negative") for t in NEG]
    return Dataset(rows, ["negative", "positive"], "str")


def test_pasta_paper_recipe_is_its_codes_optimiser_and_schedule() -> None:
    """main_glue.py: batch 32, transformers' AdamW (eps 1e-6, no weight decay), no warm-up,
    no clipping, up to 150 epochs; the servable recipe keeps the study's schedule."""
    cfg = TrainConfig(method="pasta", recipe="paper")
    d = cfg.to_dict()
    assert (d["batch_size"], d["weight_decay"], d["adam_eps"], d["max_grad_norm"], d["warmup"],
            d["epochs"]) == (32, 0.0, 1e-6, None, 0.0, 150)
    s = TrainConfig(method="pasta").to_dict()
    assert (s["batch_size"], s["weight_decay"], s["adam_eps"], s["max_grad_norm"]) == (16, 0.01, 1e-8, 1.0)
    mine = TrainConfig(method="pasta", recipe="paper", batch_size=8, weight_decay=0.1)
    assert (mine.batch, mine.decay) == (8, 0.1)  # given options win over the recipe's


def test_pasta_paper_classifier_is_hf_normal_init(bert: Backbone, sentiment: Dataset) -> None:
    """The classifier starts as BertForSequenceClassification's: N(0, 0.02), zero bias."""
    paper, servable = TrainConfig(method="pasta", recipe="paper", seed=3), TrainConfig(method="pasta", seed=3)
    model = METHODS["pasta"].build(paper, _ctx(bert, sentiment, paper))
    assert isinstance(model, PetModel)
    w, b = model.head_tensors()["head.weight"], model.head_tensors()["head.bias"]
    want = torch.randn(w.shape, generator=torch.Generator().manual_seed(3)) * 0.02
    torch.testing.assert_close(w, want, atol=0, rtol=0)
    assert not b.any()
    servable = METHODS["pasta"].build(servable, _ctx(bert, sentiment, servable)).head_tensors()["head.weight"]
    assert not torch.equal(servable, w)  # nn.Linear's uniform init there


def test_pasta_paper_recipe_never_clips(bert: Backbone, sentiment: Dataset,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(max_norm)
        return real(params, max_norm, *a, **k)

    monkeypatch.setattr(loop_mod.torch.nn.utils, "clip_grad_norm_", spy)
    train(TrainConfig(method="pasta", recipe="paper", epochs=1, batch_size=8), bert, sentiment,
          sentiment, "accuracy", export=False, **QUIET)
    assert calls == []
    train(TrainConfig(method="pasta", epochs=1, batch_size=8), bert, sentiment, sentiment,
          "accuracy", export=False, **QUIET)
    assert calls and set(calls) == {1.0}


class Stop(Exception):
    """Stands for the study being stopped mid-run."""


def test_a_stopped_run_resumes_from_its_epoch_checkpoint(bert: Backbone, sentiment: Dataset,
                                                          tmp_path: Path) -> None:
    """Stopped during epoch 3 of 4 (its checkpoint is epoch 2's) and run again with the same
    checkpoint file, the run ends exactly where an unbroken run does: the same dev history,
    losses and weights."""
    cfg = TrainConfig(method="pasta", recipe="paper", epochs=4, batch_size=8, seed=1, select="best")
    whole = train(cfg, bert, sentiment, sentiment, "accuracy", export=False, **QUIET)
    ckpt = tmp_path / "run.pt"

    def stop_after_two(line: str) -> None:
        if "epoch 3:" in line:  # (epoch 3's own checkpoint comes after its dev line)
            raise Stop

    with pytest.raises(Stop):
        train(cfg, bert, sentiment, sentiment, "accuracy", export=False, progress=False,
              log_fn=stop_after_two, checkpoint=ckpt)
    assert ckpt.is_file()
    said: list[str] = []
    again = train(cfg, bert, sentiment, sentiment, "accuracy", export=False, progress=False,
                  log_fn=said.append, checkpoint=ckpt)
    assert any("resumed after epoch 2" in s for s in said)
    assert not any("epoch 1:" in s or "epoch 2:" in s for s in said)  # not trained again
    assert again.training.dev_history == whole.training.dev_history
    assert again.losses == whole.losses
    for k, v in whole.model.state().items():
        torch.testing.assert_close(again.model.state()[k], v, atol=0, rtol=0)
    assert not ckpt.exists()  # removed once the run is done


def test_a_checkpoint_of_another_run_is_not_resumed(bert: Backbone, sentiment: Dataset,
                                                    tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"

    def stop_after_one(line: str) -> None:
        if "epoch 1:" in line:
            raise Stop

    cfg = TrainConfig(method="pasta", recipe="paper", epochs=3, batch_size=8, seed=1)
    with pytest.raises(Stop):
        train(cfg, bert, sentiment, sentiment, "accuracy", export=False, progress=False,
              log_fn=stop_after_one, checkpoint=ckpt)
    said: list[str] = []
    other = TrainConfig(method="pasta", recipe="paper", epochs=3, batch_size=8, seed=2)
    train(other, bert, sentiment, sentiment, "accuracy", export=False, progress=False,
          log_fn=said.append, checkpoint=ckpt)
    assert not any("resumed" in s for s in said) and any("epoch 1:" in s for s in said)


def test_checkpoints_refuse_the_dense_methods(bert: Backbone, sentiment: Dataset, tmp_path: Path) -> None:
    assert METHODS["child-d"].dense
    with pytest.raises(ValueError, match="mask policies"):
        train(TrainConfig(method="child-d", epochs=1, batch_size=8), bert, sentiment, sentiment,
              "accuracy", export=False, checkpoint=tmp_path / "x.pt", **QUIET)


# -- EH-FT as published -----------------------------------------------------------------------


def _ctx(bert: Backbone, data: Dataset, cfg: TrainConfig):  # type: ignore[no-untyped-def]
    from polyhead.engine import HeadConfig
    from polyhead.trainer.context import Context
    from polyhead.trainer.loop import encode, steps_for

    enc = encode(bert.tokenizer, data, cfg.max_length)
    return Context(bert, enc, enc, HeadConfig(num_outputs=2, type="pooler"), "accuracy", False,
                   steps_for(len(enc), cfg.num_epochs, cfg.batch))


def test_eh_ft_recipe_is_the_papers_optimiser_in_both_stages(
        bert: Backbone, sentiment: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """AdamW (0.9, 0.98), eps 1e-6, weight decay 0.01 and clipping 0.1 in stage 1 and stage 2,
    batch 32, 10 % warm-up each; only the paper recipe exists."""
    cfg = TrainConfig(method="eh-ft", recipe="paper")
    d = cfg.to_dict()
    assert (d["batch_size"], d["adam_betas"], d["adam_eps"], d["weight_decay"], d["max_grad_norm"],
            d["warmup"]) == (32, [0.9, 0.98], 1e-6, 0.01, 0.1, 0.1)
    from polyhead.trainer.config import TrainConfigError

    with pytest.raises(TrainConfigError, match="only the paper recipe"):
        TrainConfig(method="eh-ft")
    with pytest.raises(TrainConfigError, match="--head-init-epochs applies to --method eh-ft, not full"):
        TrainConfig.flat(method="full", recipe="paper", head_init="pet:lora", head_init_epochs=2)
    made: list[dict] = []
    clips: list[float] = []
    real_adamw, real_clip = torch.optim.AdamW, torch.nn.utils.clip_grad_norm_

    def adamw(groups, **kw):  # type: ignore[no-untyped-def]
        made.append(kw)
        return real_adamw(groups, **kw)

    def clip(params, max_norm, *a, **k):  # type: ignore[no-untyped-def]
        clips.append(max_norm)
        return real_clip(params, max_norm, *a, **k)

    monkeypatch.setattr(loop_mod.torch.optim, "AdamW", adamw)
    monkeypatch.setattr(loop_mod.torch.nn.utils, "clip_grad_norm_", clip)
    run = TrainConfig(method="eh-ft", recipe="paper", epochs=1, head_init="pet:lora", batch_size=8,
                      options=EhFtOptions(head_init_epochs=1))
    res = train(run, bert, sentiment, sentiment, "accuracy", export=False, **QUIET)
    assert [(k["betas"], k["eps"], k["lr"]) for k in made] == [((0.9, 0.98), 1e-6, 5e-4),
                                                              ((0.9, 0.98), 1e-6, 1e-4)]
    assert clips and set(clips) == {0.1}
    assert res.training.head_init_stage is not None and res.training.head_init_stage.lr == 5e-4


def test_eh_ft_head_is_a_2048_relu_mlp_on_the_first_token(bert: Backbone, sentiment: Dataset) -> None:
    from polyhead.trainer.algos.eh_ft_model import EhFtModel
    from polyhead.trainer.loop import batches

    cfg = TrainConfig(method="eh-ft", recipe="paper", seed=4)
    ctx = _ctx(bert, sentiment, cfg)
    model = EhFtModel(bert, cfg, ctx.head)
    h = model.head_tensors()
    g = torch.Generator().manual_seed(4)
    exact = {"atol": 0, "rtol": 0}
    torch.testing.assert_close(h["head.dense.weight"], torch.randn(2048, 32, generator=g) * 0.005, **exact)
    torch.testing.assert_close(h["head.out.weight"], torch.randn(2, 2048, generator=g) * 0.005, **exact)
    assert not h["head.dense.bias"].any() and not h["head.out.bias"].any()
    model.set_training(False)
    batch = next(batches(ctx.dev, 8, ctx.pad_id, ctx.device))
    with torch.no_grad():
        cls = bert.model(input_ids=batch.ids, attention_mask=batch.mask,
                         token_type_ids=batch.types).last_hidden_state[:, 0]
        want = torch.relu(cls @ h["head.dense.weight"].T + h["head.dense.bias"]) @ h["head.out.weight"].T
        torch.testing.assert_close(model.forward(batch), want + h["head.out.bias"], atol=1e-5, rtol=0)
    from polyhead.trainer.models import ExportError

    with pytest.raises(ExportError, match="not a head the engine serves"):
        model.export()


@pytest.mark.parametrize("pet", ["pet:lora", "pet:bitfit"])
def test_eh_ft_stage_one_trains_the_pet_and_head_and_stage_two_starts_from_them(
        bert: Backbone, sentiment: Dataset, pet: str) -> None:
    """Stage 1: only LoRA on Q, K, V, O (or the encoder biases) and the head train, for
    --head-init-epochs at batch 32; stage 2 starts from the original weights and that head
    (BitFit's path: its weights, biases zero), with no PET parameter left."""
    from polyhead.trainer.algos import eh_ft_model as eh_ft
    from polyhead.trainer.loop import steps_for

    cfg = TrainConfig(method="eh-ft", recipe="paper", head_init=pet, batch_size=4, seed=2, lr=1e-12,
                      options=EhFtOptions(head_init_epochs=3))
    ctx = _ctx(bert, sentiment, cfg)
    first = eh_ft.EhFtModel(bert, cfg, ctx.head, pet=pet.split(":")[1])
    trained = {n for n, p in first.params.items() if p.requires_grad}
    if pet == "pet:lora":
        kinds = {n.rsplit(".", 2)[-2] + "." + n[-1] for n in trained if n.startswith("lora.")}
        assert kinds == {"query.A", "query.B", "key.A", "key.B", "value.A", "value.B", "dense.A", "dense.B"}
        assert sum(n.startswith("lora.") for n in trained) == 2 * 4 * 2  # 2 layers x QKVO x (A, B)
        assert all("attention" in n for n in trained if n.startswith("lora."))
    else:
        body = {n for n in trained if not n.startswith("head.")}
        assert body and all(n.startswith("encoder.layer.") and n.endswith(".bias") for n in body)
        assert any("LayerNorm.bias" in n for n in body) and any("intermediate" in n for n in body)
    assert {n for n in trained if n.startswith("head.")} == {
        "head.dense.weight", "head.dense.bias", "head.out.weight", "head.out.bias"}
    torch.manual_seed(cfg.seed)  # as train() seeds the run
    head, info = eh_ft.stage_one(cfg, ctx, 3)
    assert info.steps == steps_for(len(sentiment.examples), 3, 4) and info.epochs == 3
    res = train(cfg, bert, sentiment, sentiment, "accuracy", export=False, **QUIET)
    stage = res.training.head_init_stage
    assert stage is not None and stage.steps == info.steps
    assert res.training.steps == steps_for(len(sentiment.examples), cfg.num_epochs, 4)  # stage 2: --epochs
    model = res.model
    for k, v in model.head_tensors().items():
        want = torch.zeros_like(v) if (pet == "pet:bitfit" and k.endswith("bias")) else head[k]
        torch.testing.assert_close(v, want, atol=1e-6, rtol=0)
    if pet == "pet:lora":
        assert head["head.out.bias"].any()  # (so the bias rule above is a real difference)
    original = dict(bert.model.named_parameters())
    assert isinstance(model, eh_ft.EhFtModel)
    for n, p in model.backbone_params.items():
        torch.testing.assert_close(p.detach(), original[n], atol=1e-6, rtol=0)
    names = [n for n, _ in model.module.named_parameters()]
    assert not any("lora" in n or "parametrizations" in n for n in names)
    assert all(p.requires_grad for p in model.backbone_params.values())  # stage 2: every weight


def test_eh_ft_lora_starts_as_a_no_op_and_adds_scale_b_a(bert: Backbone, sentiment: Dataset) -> None:
    from polyhead.trainer.algos.eh_ft_model import EhFtModel
    from polyhead.trainer.loop import batches

    cfg = TrainConfig(method="eh-ft", recipe="paper", seed=5, dropout=False, head_init="pet:lora")
    ctx = _ctx(bert, sentiment, cfg)
    plain, lora = EhFtModel(bert, cfg, ctx.head), EhFtModel(bert, cfg, ctx.head, pet="lora")
    batch = next(batches(ctx.dev, 8, ctx.pad_id, ctx.device))
    for m in (plain, lora):
        m.set_training(False)
    with torch.no_grad():
        torch.testing.assert_close(lora.forward(batch), plain.forward(batch), atol=0, rtol=0)
        a, b = lora.params["lora.encoder.layer.0.attention.self.query.A"], \
            lora.params["lora.encoder.layer.0.attention.self.query.B"]
        b.normal_()
        q = lora.bb.model.encoder.layer[0].attention.self.query
        w0 = plain.bb.model.encoder.layer[0].attention.self.query.weight
        torch.testing.assert_close(q.weight, w0 + (16 / 8) * b @ a)


def test_eh_ft_without_head_init_is_the_fair_baseline(bert: Backbone, sentiment: Dataset) -> None:
    """The same head, randomly initialised, and stage 2 alone on the same budget."""
    from polyhead.trainer.loop import steps_for

    cfg = TrainConfig(method="eh-ft", recipe="paper", epochs=2, batch_size=4, seed=1)
    res = train(cfg, bert, sentiment, sentiment, "accuracy", export=False, **QUIET)
    assert "head_init_stage" not in res.training.to_json()
    assert res.training.steps == steps_for(len(sentiment.examples), 2, 4)
    with_head = TrainConfig(method="eh-ft", recipe="paper", epochs=2, batch_size=4, seed=1,
                            head_init="pet:bitfit", options=EhFtOptions(head_init_epochs=1))
    said: list[str] = []
    res2 = train(with_head, bert, sentiment, sentiment, "accuracy", export=False, progress=False,
                 log_fn=said.append)
    assert res2.training.steps == res.training.steps  # the same stage-2 budget
    assert any(s.startswith("[EH-FT stage 1] 5 steps of bitfit") for s in said)  # 20 rows, batch 4
