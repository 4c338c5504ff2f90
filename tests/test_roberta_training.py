"""Training on a RoBERTa-family backbone with sentence pairs (<s> A </s></s> B </s>): every
artifact kind the trainer makes learns, and the engine serves the trainer's own logits.
(PASTA's four pair slots against a reference: test_reference_parity; PEFT import of a
RoBERTa classifier: test_peft_parity.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from polyhead.engine import Backbone, Engine, load_backbone
from polyhead.store import decode_artifact, encode_artifact, new_manifest
from polyhead.trainer import METHODS, Dataset, Example, TrainConfig, train
from polyhead.trainer.loop import encode, predict
from tests.tiny import make_roberta

GOOD = ["the movie was good", "i loved the film", "really great acting", "the plot is fun",
        "very good film", "a great movie", "i loved it", "the actors were good"]
BAD = ["the movie was bad", "i hated the film", "really terrible acting", "the plot is boring",
       "very bad film", "a terrible movie", "i hated it", "the actors were terrible"]
FIRST = ["he said", "she said", "they said", "we said"]
LR = {"pasta": 0.1, "prefix": 0.05, "lora": 0.02, "bitfit": 0.05, "child-d": 3e-3}
EPOCHS = {"child-d": 15}  # its mask applies after global clipping (as the official code): slower
KIND = {"child-d": "sparse"}


@pytest.fixture(scope="module")
def roberta(tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    """Wide init (0.2) so that a few steps separate the classes."""
    return load_backbone(make_roberta(tmp_path_factory.mktemp("tiny-roberta-wide"), init_std=0.2))


@pytest.fixture(scope="module")
def pairs() -> Dataset:
    """The label is the second text's sentiment: the model must read past </s></s>."""
    rows = [Example(FIRST[i % 4], t, lab) for lab, texts in (("positive", GOOD), ("negative", BAD))
            for i, t in enumerate(texts)]
    return Dataset(rows * 2, ["negative", "positive"], "str")


def test_roberta_pairs_have_four_special_tokens(roberta: Backbone) -> None:
    tok = roberta.tokenizer
    ids = tok("he said", "the movie was good")["input_ids"]
    specials = [i for i in ids if i in (tok.bos_token_id, tok.eos_token_id)]
    assert specials == [tok.bos_token_id] + [tok.eos_token_id] * 3
    assert roberta.spec.num_special == 4


@pytest.mark.parametrize("method", list(LR))
def test_method_trains_on_roberta_pairs_and_engine_matches(roberta: Backbone, pairs: Dataset,
                                                           method: str) -> None:
    # dropout off: 12 steps on 32 rows measure learning, not dropout's noise (dropout in
    # training has its own test in test_train)
    mine = {f.name for f in dataclasses.fields(METHODS[method].options)}
    opts = {k: v for k, v in dict(density=0.2, fisher_examples=16).items() if k in mine}
    cfg = TrainConfig.flat(method=method, epochs=EPOCHS.get(method, 6), lr=LR[method], batch_size=8,
                           max_length=60, seed=0, warmup=0.0, dropout=False, **opts)
    res = train(cfg, roberta, pairs, pairs, "accuracy", progress=False, log_fn=lambda s: None)
    first, last = np.mean(res.losses[:3]), np.mean(res.losses[-3:])
    assert last < first - 0.05, f"{method}: loss {first:.3f} -> {last:.3f}"
    manifest = new_manifest("pairs", res.artifact, roberta.spec, labels=pairs.labels,
                            training=res.training.to_json(), metrics=res.metrics)
    manifest, art = decode_artifact(encode_artifact(manifest, res.artifact), roberta.spec)
    assert art.kind == KIND.get(method, method)
    if method == "pasta":  # the doubled separator and the last one each have their own vector
        vec = art.tensors["pasta.vectors"]  # (L, 4, d)
        assert vec.shape[1] == 4 and bool((vec[:, 2:].abs().amax(dim=(0, 2)) > 0).all())
    inputs = [(FIRST[0], GOOD[0]), (FIRST[1], BAD[1]), (FIRST[2], "rain today , sun tomorrow")]
    eng = Engine(roberta)
    served = torch.stack(eng.run(inputs, [eng.load(art)] * len(inputs))).numpy()
    data = Dataset([Example(a, b, "negative") for a, b in inputs], pairs.labels, "str")
    own = predict(res.model, encode(roberta.tokenizer, data, 60), 8, roberta.tokenizer.pad_token_id,
                  roberta.device, fp32=True)
    np.testing.assert_allclose(served, own, atol=1e-5, rtol=0)
