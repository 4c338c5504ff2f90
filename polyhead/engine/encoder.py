"""One forward of the frozen encoder, with per-row effects from any mix of artifact kinds.

The backbone's own modules hold the weights; this file only re-states BERT's forward so
that kinds can act at five points: on the embedding sum, before each layer, after each
Linear, after each LayerNorm, and as extra attention keys/values (prefixes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers.activations import ACT2FN

from polyhead.engine.backbone import Backbone
from polyhead.engine.slots import Rows
from polyhead.engine.spec import EMBED_NORM, EMBED_TABLES, LAYER_NORMS, BackboneSpec


@dataclasses.dataclass
class BatchContext:
    """What every effect may read about the batch being run."""

    input_ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T) bool
    special_index: Tensor  # (B, T) long: k for the k-th special token of a row, -1 elsewhere
    device: torch.device
    dtype: torch.dtype
    spec: BackboneSpec


@dataclasses.dataclass(frozen=True)
class Normed:
    """A LayerNorm's input, normalised without its affine for the rows an effect asks for
    (an effect that changes the gain pays for its own rows only)."""

    x: Tensor
    shape: tuple[int, ...]
    eps: float

    def rows(self, rows: Rows) -> Tensor:
        return F.layer_norm(rows.take(self.x), self.shape, None, None, self.eps)


class Effect:
    """Per-batch action of one kind on its rows. Defaults do nothing."""

    linear_names: frozenset[str] = frozenset()  # Linear paths whose outputs it changes
    norm_names: frozenset[str] = frozenset()  # LayerNorm paths whose outputs it changes
    acts_before_layers: bool = False
    has_prefix: bool = False
    embeds: bool = False  # embed() changes the embedding sum

    def embed(self, lookups: Mapping[str, Tensor], h: Tensor) -> Tensor:
        """h (B, T, d): the sum of the embedding lookups, before the embedding LayerNorm;
        lookups: embedding table path (spec.EMBED_TABLES) -> the (B, T) ids it looked up."""
        return h

    def before_layer(self, layer: int, h: Tensor) -> Tensor:
        return h

    def linear(self, name: str, x: Tensor, y: Tensor) -> Tensor:
        return y

    def norm(self, name: str, normed: Normed, y: Tensor) -> Tensor:
        """y: the LayerNorm's output for the whole batch; normed: its input, normalised
        on demand."""
        return y

    def prefix(self, layer: int) -> tuple[Rows, Tensor, Tensor, Tensor]:
        """Rows with prefixes, their keys (n, P, d), values (n, P, d), and an additive
        attention bias (n, P): log gate for a prefix key, -inf for one the row must not see."""
        raise NotImplementedError


def special_index(input_ids: Tensor, special_ids: frozenset[int], num_special: int) -> Tensor:
    """(B, T): 0 for the first special token of a row ([CLS]), 1 for the next ([SEP])..."""
    ids = torch.tensor(sorted(special_ids), device=input_ids.device)
    is_special = torch.isin(input_ids, ids)
    order = torch.cumsum(is_special.long(), dim=1) - 1
    order = order.clamp(max=num_special - 1)
    return torch.where(is_special, order, torch.full_like(order, -1))


class Encoder:
    """Runs the backbone's layers with effects; stateless apart from the backbone."""

    def __init__(self, backbone: Backbone) -> None:
        self.bb = backbone
        m: Any = backbone.model  # HF modules: attributes are dynamic
        self.cfg = m.config
        self.emb = m.embeddings
        self.layers: list[Any] = list(m.encoder.layer)
        self.act = ACT2FN[self.cfg.hidden_act]
        self.eps = self.cfg.layer_norm_eps
        self.roberta_positions = self.emb.position_embeddings.padding_idx is not None
        self.pooler: Any = getattr(m, "pooler", None)
        self.linears = backbone.linears  # serve-time Linear kernels (polyhead.engine.precision), or None
        # BERT's dropout, used only while ``training`` is set (by the trainer); serving
        # never sets it, so eval forwards are unchanged.
        self.training = False
        self.hidden_dropout = float(getattr(self.cfg, "hidden_dropout_prob", 0.0))
        self.attention_dropout = float(getattr(self.cfg, "attention_probs_dropout_prob", 0.0))

    def context(self, input_ids: Tensor, attention_mask: Tensor) -> BatchContext:
        spec = self.bb.spec
        return BatchContext(
            input_ids=input_ids,
            attention_mask=attention_mask.bool(),
            special_index=special_index(input_ids, self.bb.special_ids, spec.num_special),
            device=input_ids.device,
            dtype=self.bb.dtype,
            spec=spec,
        )

    def forward(
        self, ctx: BatchContext, token_type_ids: Tensor, effects: Sequence[Effect] = (),
        first_only: bool = False,
    ) -> Tensor:
        """Final hidden states (B, T, d); with ``first_only`` (B, 1, d), the first token's
        alone, which is all a head reads: the last layer then runs its query, attention
        output and feed-forward for that token only (its keys and values for every token),
        which is exactly what the whole layer computes for it. While ``training`` every
        token runs (the same dropout draws as ever) and the first is returned."""
        h = self._embed(ctx, token_type_ids, effects)
        last = len(self.layers) - 1 if first_only and not self.training else -1
        for i, layer in enumerate(self.layers):
            h = self._layer(i, layer, h, ctx, effects, i == last)
        return h[:, :1] if first_only else h

    def _embed(self, ctx: BatchContext, token_type_ids: Tensor, effects: Sequence[Effect]) -> Tensor:
        ids = ctx.input_ids
        if self.roberta_positions:
            pad = self.emb.position_embeddings.padding_idx
            mask = ids.ne(pad).long()
            pos = torch.cumsum(mask, dim=1) * mask + pad
        else:
            pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        h = self.emb.word_embeddings(ids) + self.emb.position_embeddings(pos)
        h = h + self.emb.token_type_embeddings(token_type_ids)
        if any(e.embeds for e in effects):
            lookups = dict(zip(EMBED_TABLES, (ids, pos, token_type_ids), strict=True))
            for e in effects:
                if e.embeds:
                    h = e.embed(lookups, h)
        return self._drop(self._norm(EMBED_NORM, self.emb.LayerNorm, h, effects))

    def _drop(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.hidden_dropout, training=True) if self.training else x

    def _layer(self, i: int, layer: Any, h: Tensor, ctx: BatchContext,
               effects: Sequence[Effect], first_only: bool = False) -> Tensor:
        for e in effects:
            if e.acts_before_layers:
                h = e.before_layer(i, h)
        p = f"encoder.layer.{i}."
        att = layer.attention
        out = h[:, :1].contiguous() if first_only else h  # the tokens whose outputs are kept
        q = self._linear(p + "attention.self.query", att.self.query, out, effects)
        k = self._linear(p + "attention.self.key", att.self.key, h, effects)
        v = self._linear(p + "attention.self.value", att.self.value, h, effects)
        a = self._attend(i, q, k, v, ctx, effects)
        a = self._drop(self._linear(p + "attention.output.dense", att.output.dense, a, effects))
        h1 = self._norm(p + LAYER_NORMS[0], att.output.LayerNorm, a + out, effects)
        x = self.act(self._linear(p + "intermediate.dense", layer.intermediate.dense, h1, effects))
        o = self._drop(self._linear(p + "output.dense", layer.output.dense, x, effects))
        return self._norm(p + LAYER_NORMS[1], layer.output.LayerNorm, o + h1, effects)

    def _attend(self, i: int, q: Tensor, k: Tensor, v: Tensor, ctx: BatchContext,
                effects: Sequence[Effect]) -> Tensor:
        pre = [e for e in effects if e.has_prefix]
        if len(pre) > 1:
            raise ValueError("at most one prefix effect per batch")
        if not pre:
            return self._sdpa(q, k, v, ctx.attention_mask)
        rows, pk, pv, pbias = pre[0].prefix(i)
        # Only the prefix rows pay for the extra keys; the other rows attend as usual.
        keep = rows.take(ctx.attention_mask)
        mask = torch.cat([pbias.to(q.dtype),
                          torch.zeros_like(keep, dtype=q.dtype).masked_fill(~keep, float("-inf"))], 1)
        with_prefix = self._sdpa(rows.take(q), torch.cat([pk, rows.take(k)], 1),
                                 torch.cat([pv, rows.take(v)], 1), mask)
        B = q.shape[0]
        if len(rows) == B:
            return with_prefix
        span = rows.span
        if span is not None and span.stop == B:  # the engine puts prefix rows last
            a = span.start
            rest = self._sdpa(q[:a], k[:a], v[:a], ctx.attention_mask[:a])
            return torch.cat([rest, with_prefix])
        out = self._sdpa(q, k, v, ctx.attention_mask)
        return out.index_copy(0, rows.index, with_prefix)

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """Multi-head attention; mask (B, Tk), bool (True = attend) or additive float."""
        B, T, d = q.shape
        H = self.bb.spec.num_heads
        q, k, v = (t.view(B, -1, H, d // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, dh)
        drop = self.attention_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :], dropout_p=drop)
        return out.transpose(1, 2).reshape(B, T, d)

    def _linear(self, name: str, mod: torch.nn.Linear, x: Tensor,
                effects: Sequence[Effect]) -> Tensor:
        if self.linears is not None and name in self.linears and not self.training:
            y = self.linears(name, x)
        elif self.training and self.bb.precision == "int8":
            raise RuntimeError("an int8 backbone serves only; train on fp32 (or bf16)")
        else:
            y = F.linear(x, mod.weight, mod.bias)
        for e in effects:
            if name in e.linear_names:
                y = e.linear(name, x, y)
        return y

    def _norm(self, name: str, mod: torch.nn.LayerNorm, x: Tensor,
              effects: Sequence[Effect]) -> Tensor:
        y = F.layer_norm(x, mod.normalized_shape, mod.weight, mod.bias, self.eps)
        touching = [e for e in effects if name in e.norm_names]
        if touching:
            normed = Normed(x, tuple(mod.normalized_shape), self.eps)
            for e in touching:
                y = e.norm(name, normed, y)
        return y
