"""LoRA, PEFT-compatible: for each targeted Linear, y += scale * B(A x)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from methods.config import BaseConfig, require
from methods.encoder import BatchContext, Effect, add_rows
from methods.registry import Kind, TaskPart, register_kind
from methods.spec import LAYER_LINEARS, BackboneSpec


@dataclasses.dataclass(frozen=True)
class LoraConfig(BaseConfig):
    r: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("attention.self.query", "attention.self.value")
    rslora: bool = False

    def __post_init__(self) -> None:
        name = "LoraConfig"
        require(isinstance(self.r, int) and 1 <= self.r <= 512, name,
                f"r must be in [1, 512], got {self.r!r}")
        require(isinstance(self.alpha, (int, float)) and self.alpha > 0, name, "alpha must be > 0")
        require(len(self.targets) > 0, name, "targets is empty")
        bad = [t for t in self.targets if t not in LAYER_LINEARS]
        require(not bad, name, f"unknown targets {bad}; choose from {list(LAYER_LINEARS)}")

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)

    def modules(self, spec: BackboneSpec) -> list[str]:
        return [spec.layer_prefix(i) + t for i in range(spec.num_layers) for t in self.targets]


class LoraEffect(Effect):
    def __init__(self, parts: Sequence[TaskPart], ctx: BatchContext) -> None:
        self.by_name: dict[str, list[TaskPart]] = {}
        for p in parts:
            for key in p.tensors:
                if key.endswith(".A"):
                    self.by_name.setdefault(key[len("lora."):-2], []).append(p)
        self.linear_names = frozenset(self.by_name)
        self.dtype = ctx.dtype

    def linear(self, name: str, x: Tensor, y: Tensor) -> Tensor:
        parts = self.by_name[name]
        r = max(p.config.r for p in parts)
        rows = torch.cat([p.rows for p in parts])
        A = torch.cat([_expand(p, f"lora.{name}.A", r, 0, self.dtype) for p in parts])  # (n, r, in)
        B = torch.cat([_expand(p, f"lora.{name}.B", r, 1, self.dtype) for p in parts])  # (n, out, r)
        scale = torch.cat([x.new_full((len(p.rows),), p.config.scale) for p in parts])
        h = torch.bmm(x[rows], A.transpose(1, 2))  # (n, T, r)
        delta = torch.bmm(h, B.transpose(1, 2)) * scale[:, None, None]  # (n, T, out)
        return add_rows(y, rows, delta)


def _expand(p: TaskPart, key: str, r: int, rank_dim: int, dtype: torch.dtype) -> Tensor:
    """The part's matrix zero-padded to rank r along rank_dim, one copy per row."""
    t = p.tensors[key].to(dtype)
    pad = r - t.shape[rank_dim]
    if pad:
        shape = list(t.shape)
        shape[rank_dim] = pad
        t = torch.cat([t, t.new_zeros(shape)], dim=rank_dim)
    return t.expand(len(p.rows), *t.shape)


class Lora(Kind):
    name = "lora"
    config_cls = LoraConfig
    prefix = "lora."

    def shapes(self, spec: BackboneSpec, cfg: LoraConfig) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {}
        for m in cfg.modules(spec):
            o, i = spec.linear_shape(m)
            out[f"lora.{m}.A"] = (cfg.r, i)
            out[f"lora.{m}.B"] = (o, cfg.r)
        return out

    def init(self, spec: BackboneSpec, cfg: LoraConfig, *, zero: bool,
             generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Standard LoRA init is A random (Kaiming-uniform as PEFT), B zero: still a no-op."""
        out = super().init(spec, cfg, zero=True)
        for key, t in out.items():
            if key.endswith(".A") or not zero:
                bound = 1.0 / math.sqrt(t.shape[1])
                t.uniform_(-bound, bound, generator=generator)
        return out

    def effect(self, parts: Sequence[TaskPart], ctx: BatchContext) -> Effect:
        return LoraEffect(parts, ctx)


register_kind(Lora())
