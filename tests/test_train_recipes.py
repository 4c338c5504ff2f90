"""The papers' own recipes (issue 28): PASTA as its main_glue.py runs it, epoch checkpoints
a stopped run resumes from, on a tiny in-code BERT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from methods import Backbone, load_backbone
from tests.test_train import NEG, POS
from tests.tiny import make_bert
from trainer import Dataset, Example, TrainConfig, train
from trainer import loop as loop_mod
from trainer.models import PetModel
from trainer.table import METHODS

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


def test_pasta_paper_classifier_is_hf_normal_init(bert: Backbone) -> None:
    """The classifier starts as BertForSequenceClassification's: N(0, 0.02), zero bias."""
    from methods import HeadConfig

    head = HeadConfig(num_outputs=2, type="pooler")
    model = PetModel(bert, TrainConfig(method="pasta", recipe="paper", seed=3), head)
    w, b = model.head_tensors()["head.weight"], model.head_tensors()["head.bias"]
    want = torch.randn(w.shape, generator=torch.Generator().manual_seed(3)) * 0.02
    torch.testing.assert_close(w, want, atol=0, rtol=0)
    assert not b.any()
    servable = PetModel(bert, TrainConfig(method="pasta", seed=3), head).head_tensors()["head.weight"]
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
    assert again.training["dev_history"] == whole.training["dev_history"]
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
