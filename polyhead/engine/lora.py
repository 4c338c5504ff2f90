"""LoRA, PEFT-compatible: for each targeted Linear, y += scale * B(A x)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch
from torch import Tensor

from polyhead.engine.config import BaseConfig, require
from polyhead.engine.encoder import BatchContext, Effect
from polyhead.engine.kinds import Kind, register_kind
from polyhead.engine.slots import Rows
from polyhead.engine.spec import LAYER_LINEARS, BackboneSpec

SCALE = "lora.scale"
BASE_RANK = 16  # ranks up to this share one table; higher ones go by size class


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
        require(isinstance(self.alpha, (int, float)) and 0 < self.alpha < math.inf, name,
                "alpha must be a finite number > 0")
        require(len(self.targets) > 0, name, "targets is empty")
        bad = [t for t in self.targets if t not in LAYER_LINEARS]
        require(not bad, name, f"unknown targets {bad}; choose from {list(LAYER_LINEARS)}")

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)

    def modules(self, spec: BackboneSpec) -> list[str]:
        return [spec.layer_prefix(i) + t for i in range(spec.num_layers) for t in self.targets]


class LoraEffect(Effect):
    """Rows with a slot get scale * B_s (A_s x), A/B gathered by slot (rank padded with
    zeros to the table's largest rank: an exact no-op beyond a task's own rank)."""

    def __init__(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> None:
        self.tables, self.dtype = tables, ctx.dtype
        self.rows, self.sel = Rows.of(slots)
        self.scale = tables[SCALE][self.sel].to(ctx.dtype)[:, None, None]
        self.linear_names = frozenset(k[len("lora."):-2] for k in tables if k.endswith(".A"))

    def linear(self, name: str, x: Tensor, y: Tensor) -> Tensor:
        A = self.tables[f"lora.{name}.A"][self.sel].to(self.dtype)  # (n, r, in)
        B = self.tables[f"lora.{name}.B"][self.sel].to(self.dtype)  # (n, out, r)
        h = torch.bmm(self.rows.take(x), A.transpose(1, 2))  # (n, T, r)
        delta = torch.bmm(h, B.transpose(1, 2)) * self.scale  # (n, T, out)
        return self.rows.add(y, delta)


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

    def rows(self, tensors: Mapping[str, Tensor], spec: BackboneSpec,
             cfg: LoraConfig) -> dict[str, Tensor]:
        dev = next(iter(tensors.values())).device
        return {**tensors, SCALE: torch.tensor(cfg.scale, device=dev)}

    def measures(self, cfg: LoraConfig) -> dict[str, float]:
        return {"lora_rank": cfg.r}

    def table_key(self, rows: Mapping[str, Tensor]) -> str:
        """Ranks up to ``BASE_RANK`` share the "lora" table; higher ranks go by size class
        (rank rounded up to a power of 2), so a rank-512 task never pads rank-8 rows."""
        r = next(v.shape[0] for k, v in rows.items() if k.endswith(".A"))
        return self.name if r <= BASE_RANK else f"{self.name}/r{1 << (r - 1).bit_length()}"

    def effect(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> Effect:
        return LoraEffect(tables, slots, ctx)


register_kind(Lora())
