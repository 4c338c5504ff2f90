"""What a kind needs to know about a backbone: sizes, parameter shapes, fingerprint."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# Linear modules inside one encoder layer, by their Hugging Face path suffix.
LAYER_LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
LAYER_NORMS = ("attention.output.LayerNorm", "output.LayerNorm")
EMBED_NORM = "embeddings.LayerNorm"
# Embedding tables, each looked up by its own ids (tokens, positions, token types).
EMBED_TABLES = (
    "embeddings.word_embeddings",
    "embeddings.position_embeddings",
    "embeddings.token_type_embeddings",
)


def position_limit(config: Any) -> int:
    """Tokens a sequence may hold: the model's positions (a Hugging Face config; RoBERTa's
    start after its padding index, two of them spent)."""
    return int(config.max_position_embeddings) - (2 if config.model_type != "bert" else 0)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """Shapes of a BERT-family encoder; enough to validate and build any artifact."""

    model_type: str
    num_layers: int
    hidden: int
    num_heads: int
    intermediate: int
    max_length: int
    num_special: int  # special-token slots per sequence: [CLS] + each [SEP] of a pair
    fingerprint: str
    param_shapes: Mapping[str, tuple[int, ...]]  # HF names, e.g. encoder.layer.0.output.dense.weight

    def layer_prefix(self, layer: int) -> str:
        return f"encoder.layer.{layer}."

    def linear_names(self) -> list[str]:
        """Every encoder Linear, e.g. ``encoder.layer.3.attention.self.query``."""
        return [self.layer_prefix(i) + s for i in range(self.num_layers) for s in LAYER_LINEARS]

    def norm_names(self) -> list[str]:
        layers = [self.layer_prefix(i) + s for i in range(self.num_layers) for s in LAYER_NORMS]
        return [EMBED_NORM, *layers]

    def linear_shape(self, name: str) -> tuple[int, int]:
        """(out, in) of the Linear ``name``."""
        out, inp = self.param_shapes[name + ".weight"]
        return out, inp

    def tunable_params(self) -> list[str]:
        """Parameters a sparse diff may touch: encoder layers and the embedding LayerNorm."""
        return [
            n for n in self.param_shapes
            if n.startswith("encoder.layer.") or n.startswith(EMBED_NORM + ".")
        ]

    def embedding_params(self) -> list[str]:
        """The embedding tables' weights, which a whole-model sparse diff may also touch."""
        return [n + ".weight" for n in EMBED_TABLES if n + ".weight" in self.param_shapes]

    def bias_params(self) -> list[str]:
        """BitFit's parameters: every Linear bias and LayerNorm bias that the encoder uses."""
        return [n + ".bias" for n in (*self.linear_names(), *self.norm_names())]
