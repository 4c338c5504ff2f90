"""LoRA parity with the peer: an artifact built from a PEFT model gives PeftModel's logits."""

from __future__ import annotations

import peft
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from polyhead.engine import Engine
from polyhead.engine.errors import ArtifactError
from polyhead.engine.peft_io import artifact_from_peft

TEXTS = ["the movie was good", ("the man walks", "he walks in the park"), "i hated the plot !"]


def peft_model(folder, num_labels: int, seed: int):
    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=num_labels,
                                                              local_files_only=True)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                          modules_to_save=["classifier"], task_type="SEQ_CLS")
    model = peft.get_peft_model(base, cfg)
    with torch.no_grad():  # PEFT starts B at zero; make the adapter do something
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model.eval(), cfg


def assert_parity(backbone, folder, num_labels: int, head: str = "pooler") -> None:
    model, cfg = peft_model(folder, num_labels, seed=0)
    state = peft.get_peft_model_state_dict(model)
    art = artifact_from_peft(state, cfg.to_dict(), backbone.spec)
    assert art.kind == "lora" and art.head.type == head and art.head.num_outputs == num_labels
    eng = Engine(backbone)
    got = eng.run(TEXTS, [eng.load(art)] * len(TEXTS))
    for x, g in zip(TEXTS, got, strict=True):
        args = (x,) if isinstance(x, str) else x
        with torch.no_grad():
            ref = model(**backbone.tokenizer(*args, return_tensors="pt")).logits[0]
        torch.testing.assert_close(g, ref, atol=1e-5, rtol=0)


def test_lora_parity_tiny(tiny_bert, tiny_bert_dir) -> None:
    assert_parity(tiny_bert, tiny_bert_dir, num_labels=3)


def test_lora_parity_tiny_roberta(tiny_roberta, tiny_roberta_dir) -> None:
    """RobertaForSequenceClassification's head (dense, tanh, out_proj over <s>) imports as
    an `mlp` head; the pair input is <s> A </s></s> B </s>."""
    assert_parity(tiny_roberta, tiny_roberta_dir, num_labels=3, head="mlp")


@pytest.mark.integration
def test_lora_parity_real_backbone(real_backbone) -> None:
    assert_parity(real_backbone, real_backbone.path, num_labels=2)


def test_peft_import_rejects_other_adapters(tiny_bert, tiny_bert_dir) -> None:
    model, cfg = peft_model(tiny_bert_dir, 2, seed=1)
    state = peft.get_peft_model_state_dict(model)
    with pytest.raises(ArtifactError, match="use_dora"):
        artifact_from_peft(state, {**cfg.to_dict(), "use_dora": True}, tiny_bert.spec)
    no_head = {k: v for k, v in state.items() if "classifier" not in k}
    with pytest.raises(ArtifactError, match="modules_to_save"):
        artifact_from_peft(no_head, cfg.to_dict(), tiny_bert.spec)
    deeper = {**state, **{k.replace("encoder.layer.0.", "encoder.layer.7."): v
                          for k, v in state.items() if "encoder.layer.0." in k}}
    with pytest.raises(ArtifactError, match="lacks"):
        artifact_from_peft(deeper, cfg.to_dict(), tiny_bert.spec)


POOLER = "base_model.model.bert.pooler.dense.modules_to_save.default"
EMBED = "base_model.model.bert.embeddings.word_embeddings"
CLS = "base_model.model.classifier"
QUERY0 = "base_model.model.bert.encoder.layer.0.attention.self.query"


@pytest.fixture(scope="module")
def adapter(tiny_bert_dir):
    """A genuine PEFT SEQ_CLS adapter (r=4 on query and value; the classifier in
    modules_to_save), as get_peft_model_state_dict gives it, and its config."""
    model, cfg = peft_model(tiny_bert_dir, 3, seed=2)
    return peft.get_peft_model_state_dict(model), cfg.to_dict()


@pytest.mark.parametrize("extra", [
    {f"{POOLER}.weight": torch.randn(32, 32), f"{POOLER}.bias": torch.randn(32)},  # trained pooler
    {f"{EMBED}.lora_embedding_A": torch.randn(4, 60), f"{EMBED}.lora_embedding_B": torch.randn(32, 4)},
    {f"{QUERY0}.lora_magnitude_vector": torch.ones(32)},  # DoRA without use_dora in the config
    {f"{CLS}.original_module.weight": torch.randn(3, 32)},  # not in what peft saves
    {f"{QUERY0}.lora_A.default.weight": torch.randn(4, 32)},  # a second A for one Linear
], ids=["pooler", "lora-embedding", "dora-magnitude", "original-module", "duplicate-lora"])
def test_peft_import_refuses_weights_it_would_drop(adapter, tiny_bert, extra) -> None:
    """Probe: trained weights the artifact would not hold (a modules_to_save pooler, LoRA on
    the embeddings) once imported OK and served other logits than the PEFT model's."""
    from polyhead.server._private.errors import status_for

    state, cfg = adapter
    with pytest.raises(ArtifactError) as e:
        artifact_from_peft({**state, **extra}, cfg, tiny_bert.spec)
    assert e.value.check == "peft_tensors"
    assert next(iter(extra)) in e.value.message and "classifier" in e.value.message
    assert status_for(e.value)[0].name == "INVALID_ARGUMENT"


def test_peft_import_takes_both_classifier_spellings(adapter, tiny_bert) -> None:
    """peft saves ``classifier.weight``; a state dict read off the model (or an older
    peft) names it ``classifier.modules_to_save.default.weight``: both are the head."""
    state, cfg = adapter
    renamed = {k.replace(f"{CLS}.", f"{CLS}.modules_to_save.default."): v for k, v in state.items()}
    a, b = (artifact_from_peft(s, cfg, tiny_bert.spec) for s in (state, renamed))
    assert a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(t, b.tensors[n]) for n, t in a.tensors.items())


@pytest.mark.parametrize(("key", "value", "check", "said"), [
    (f"{CLS}.weight", torch.tensor(1.0), "tensor_shape", "(num_labels, 32)"),
    (f"{CLS}.bias", torch.zeros(2), "tensor_shape", "(3,)"),
    (f"{QUERY0}.lora_A.weight", torch.randn(8, 32), "tensor_shape", "r = 4"),
    (f"{QUERY0}.lora_B.weight", torch.randn(32, 8), "tensor_shape", "r = 4"),
    (f"{QUERY0}.lora_A.weight", torch.randn(4, 33), "tensor_shape", "(4, 32)"),
    (f"{QUERY0}.lora_B.weight", torch.full((32, 4), float("nan")), "non_finite", "NaN"),
], ids=["classifier-0d", "bias-labels", "rank-A", "rank-B", "in-dim", "nan-B"])
def test_peft_import_names_a_malformed_tensor(adapter, tiny_bert, key, value, check, said) -> None:
    """Probe: a 0-D classifier was INTERNAL (an IndexError); a wrong rank, a wrong input
    size or NaN in the adapter were FAILED_PRECONDITION 'peft_base_model', as if the
    backbone were at fault. The adapter's own fault keeps its check: INVALID_ARGUMENT."""
    from polyhead.server._private.errors import status_for

    state, cfg = adapter
    with pytest.raises(ArtifactError) as e:
        artifact_from_peft({**state, key: value}, cfg, tiny_bert.spec)
    assert (e.value.check, key in e.value.message, said in e.value.message) == (check, True, True), \
        str(e.value)
    assert status_for(e.value)[0].name == "INVALID_ARGUMENT"


def test_peft_import_from_another_backbone_is_a_precondition(tiny_bert) -> None:
    """An adapter whose sizes agree among themselves but not with this backbone (trained
    on hidden 48) is ``peft_base_model``: FAILED_PRECONDITION, naming both sizes."""
    from polyhead.server._private.errors import status_for

    torch.manual_seed(0)
    wide = BertForSequenceClassification(BertConfig(
        vocab_size=60, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, num_labels=2))
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "output.dense"],
                          modules_to_save=["classifier"], task_type="SEQ_CLS")
    state = peft.get_peft_model_state_dict(peft.get_peft_model(wide, cfg))
    with pytest.raises(ArtifactError) as e:
        artifact_from_peft(state, cfg.to_dict(), tiny_bert.spec)
    assert e.value.check == "peft_base_model" and "48" in e.value.message, str(e.value)
    assert status_for(e.value)[0].name == "FAILED_PRECONDITION"


def test_peft_import_refuses_half_a_lora_pair(adapter, tiny_bert) -> None:
    """A lone lora_B would be paired with a zero A (PEFT: a random one); either way the
    adapter's logits are lost."""
    state, cfg = adapter
    lone = "base_model.model.bert.encoder.layer.1.attention.self.key.lora_B.weight"
    with pytest.raises(ArtifactError, match="without its lora_A") as e:
        artifact_from_peft({**state, lone: torch.randn(32, 4)}, cfg, tiny_bert.spec)
    assert e.value.check == "peft_tensors" and lone in e.value.message
