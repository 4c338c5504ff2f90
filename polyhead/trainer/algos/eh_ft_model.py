"""EH-FT's model (polyhead/trainer/algos/eh_ft.py has the method: its options and hooks).

The head: d -> 2048 -> ReLU -> C on the first token, weights N(0, 0.005), biases zero;
stage 1 trains LoRA (Q, K, V, O) or BitFit with it over the frozen backbone, stage 2 every
weight from that head.
"""

from __future__ import annotations

import math
import re
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from polyhead.engine import Backbone, HeadConfig, TaskArtifact
from polyhead.engine.attach import tensor_name
from polyhead.trainer.algos.lora import LoraOptions
from polyhead.trainer.config import TrainConfig
from polyhead.trainer.context import Context
from polyhead.trainer.loop import FitSettings, fit, predict, steps_for
from polyhead.trainer.metrics import compute_metrics
from polyhead.trainer.models import LORA_QKVO, Batch, DenseModel, ExportError, _key
from polyhead.trainer.record import StageInfo

HIDDEN = 2048  # the head's hidden width
INIT_STD = 0.005  # the head's init (finetune_roberta.py: std = 0.005)
BITFIT = r"encoder\.layer\.\d+\..*\.bias"  # QKV, attention out, FFN in/out, both LayerNorms


class LoraDelta(nn.Module):
    """W + scale B A as a parametrization of a frozen Linear weight (A as PEFT's init,
    B zero: an exact no-op at the start)."""

    def __init__(self, out_f: int, in_f: int, r: int, alpha: float, g: torch.Generator) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(r, in_f))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5), generator=g)
        self.B = nn.Parameter(torch.zeros(out_f, r))
        self.scale = alpha / r

    def forward(self, w: Tensor) -> Tensor:
        return w + self.scale * (self.B @ self.A).to(w.dtype)


class EhFtModel(DenseModel):
    """Every backbone weight (stage 2), or the frozen backbone and a PET method (``pet``:
    stage 1), under EH-FT's MLP head on the first token."""

    def __init__(self, backbone: Backbone, cfg: TrainConfig, head: HeadConfig,
                 pet: str | None = None) -> None:
        super().__init__(backbone, cfg, head)
        g = torch.Generator().manual_seed(cfg.seed)
        d, c = backbone.spec.hidden, head.num_outputs
        init = {"head.dense.weight": torch.randn(HIDDEN, d, generator=g) * INIT_STD,
                "head.dense.bias": torch.zeros(HIDDEN),
                "head.out.weight": torch.randn(c, HIDDEN, generator=g) * INIT_STD,
                "head.out.bias": torch.zeros(c)}
        self.head = nn.ParameterDict({_key(k): nn.Parameter(v.to(backbone.device)) for k, v in init.items()})
        self.pet = pet
        extra = self._add_pet(pet, cfg, g) if pet is not None else {}
        self.module = nn.ModuleDict({"backbone": self.bb.model, "head": self.head,
                                     "pet": nn.ParameterDict({_key(k): v for k, v in extra.items()})})
        trained = {n: p for n, p in self.backbone_params.items() if p.requires_grad}
        self.params = {**trained, **extra, **{tensor_name(k): v for k, v in self.head.items()}}

    def _add_pet(self, pet: str, cfg: TrainConfig, g: torch.Generator) -> dict[str, nn.Parameter]:
        """Freeze the backbone; return the PET parameters stage 1 trains."""
        for p in self.backbone_params.values():
            p.requires_grad_(False)
        if pet == "bitfit":
            biases = {n: p for n, p in self.backbone_params.items() if re.fullmatch(BITFIT, n)}
            for p in biases.values():
                p.requires_grad_(True)
            return biases
        lora = cfg.head_init_options_as(LoraOptions)
        out: dict[str, nn.Parameter] = {}
        for name, mod in list(self.bb.model.named_modules()):
            if isinstance(mod, nn.Linear) and re.fullmatch(LORA_QKVO, "." + name):
                delta = LoraDelta(mod.out_features, mod.in_features, lora.lora_r, lora.lora_alpha, g)
                parametrize.register_parametrization(mod, "weight", delta.to(mod.weight.device))
                out[f"lora.{name}.A"], out[f"lora.{name}.B"] = delta.A, delta.B
        return out

    def forward(self, batch: Batch) -> Tensor:
        ctx = self.encoder.context(batch.ids, batch.mask)
        cls = self.encoder.forward(ctx, batch.types)[:, 0]  # (B, d): the first token
        h = self.head
        return F.linear(F.relu(F.linear(cls, h["head__dense__weight"], h["head__dense__bias"])),
                        h["head__out__weight"], h["head__out__bias"])  # (B, C)

    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.params.values() if p.requires_grad)

    def export(self) -> TaskArtifact:
        raise ExportError("EH-FT's head (d -> 2048 -> ReLU -> C on the first token) is not a head "
                          "the engine serves: --method eh-ft is for the accuracy study; for an "
                          "artifact, use --method full --head-init (a pooler head)")


def stage_one(cfg: TrainConfig, ctx: Context, epochs: float) -> tuple[dict[str, Tensor], StageInfo]:
    """Train the PET method with a fresh head; return the head stage 2 starts from."""
    assert cfg.head_init is not None
    pet = cfg.head_init.split(":", 1)[1]
    first = EhFtModel(ctx.backbone, cfg, ctx.head, pet=pet)
    steps = steps_for(len(ctx.train), epochs, cfg.batch)
    d = cfg.defaults
    s = FitSettings(steps=steps, lr=cfg.head_init_lr, batch_size=cfg.batch, weight_decay=cfg.decay,
                    warmup=cfg.warmup_frac, seed=cfg.seed, pool=cfg.pool, progress=ctx.progress,
                    desc=f"EH-FT stage 1 ({pet})", amp=cfg.autocast_dtype(ctx.device), max_grad_norm=d.clip,
                    betas=d.betas, eps=d.eps)
    t0 = time.perf_counter()
    fit(first, ctx.train, s, ctx.pad_id, ctx.device)
    dev = compute_metrics(predict(first, ctx.dev, 64, ctx.pad_id, ctx.device), ctx.dev.targets,
                          ctx.dev.regression)  # (regression: pearson/spearman, scale-free)
    head = first.head_tensors()
    if pet == "bitfit":  # NEW_MLPHeadMixin copies the weights; the biases start again
        head = {k: torch.zeros_like(v) if k.endswith("bias") else v for k, v in head.items()}
    info = StageInfo(method=pet, steps=steps, epochs=epochs, lr=cfg.head_init_lr, dev=dev,
                     trainable_params=first.trainable_count(), seconds=round(time.perf_counter() - t0, 1))
    return head, info

