"""Tiny in-code encoders (hidden 32, 2 layers) saved as local Hugging Face folders."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    RobertaConfig,
    RobertaModel,
    RobertaTokenizerFast,
)

WORDS = """
the a an movie film was is good bad great terrible boring fun i it this that not very
really loved hated plot actors acting cat dog sat on mat man walks park rain today
tomorrow sun shines he she they we you and or but so because , . ! ?
""".split()


def make_bert(folder: Path, seed: int = 0, layers: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, model_max_length=64)
    tok.save_pretrained(folder)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(folder)
    return folder


def make_roberta(folder: Path, seed: int = 0, init_std: float = 0.02) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    chars = sorted({c for w in WORDS for c in w} | {"Ġ"})
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = RobertaTokenizerFast(vocab=vocab, merges=[], model_max_length=60)
    tok.save_pretrained(folder)
    cfg = RobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2, initializer_range=init_std)
    torch.manual_seed(seed)
    RobertaModel(cfg).save_pretrained(folder)
    return folder
