"""LoRA parity with the peer: an artifact built from a PEFT model gives PeftModel's logits."""

from __future__ import annotations

import peft
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from polyhead.engine import Engine
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
    from polyhead.engine.errors import ArtifactError

    with pytest.raises(ArtifactError, match="use_dora"):
        artifact_from_peft(state, {**cfg.to_dict(), "use_dora": True}, tiny_bert.spec)
    no_head = {k: v for k, v in state.items() if "classifier" not in k}
    with pytest.raises(ArtifactError, match="modules_to_save"):
        artifact_from_peft(no_head, cfg.to_dict(), tiny_bert.spec)
    wide = {k: torch.zeros(v.shape[0], v.shape[1] * 2) if "lora_A" in k else v
            for k, v in state.items()}
    with pytest.raises(ArtifactError, match="peft_base_model"):
        artifact_from_peft(wide, cfg.to_dict(), tiny_bert.spec)
    deeper = {**state, **{k.replace("encoder.layer.0.", "encoder.layer.7."): v
                          for k, v in state.items() if "encoder.layer.0." in k}}
    with pytest.raises(ArtifactError, match="lacks"):
        artifact_from_peft(deeper, cfg.to_dict(), tiny_bert.spec)
