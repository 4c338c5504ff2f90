"""PEFT LoRA adapters (sequence classification, classifier in modules_to_save) <-> artifacts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from methods.artifact import TaskArtifact
from methods.errors import ArtifactError
from methods.heads import HeadConfig
from methods.lora import LoraConfig
from methods.spec import LAYER_LINEARS, BackboneSpec

_LORA_KEY = re.compile(r"(encoder\.layer\.\d+\.[\w.]+?)\.lora_([AB])(?:\.default)?\.weight$")
_UNSUPPORTED = ("use_dora", "rank_pattern", "alpha_pattern", "layer_replication")


def artifact_from_peft(state: Mapping[str, Tensor], config: Mapping[str, Any],
                       spec: BackboneSpec) -> TaskArtifact:
    """A ``lora`` artifact with the same logits as the PEFT model it came from."""
    ptype = config.get("peft_type", "LORA")
    ptype = str(getattr(ptype, "value", ptype))  # an enum in memory, a string in adapter_config.json
    if ptype.upper() != "LORA":
        raise ArtifactError("peft", f"only LoRA adapters can be imported, got {ptype}")
    for key in _UNSUPPORTED:
        if config.get(key):
            raise ArtifactError("peft", f"adapter uses {key}, which polyhead does not support")
    if config.get("bias", "none") != "none":
        raise ArtifactError("peft", "adapter trains biases (bias != 'none'); not supported")
    mats: dict[str, dict[str, Tensor]] = {}
    for key, t in state.items():
        m = _LORA_KEY.search(key)
        if m:
            mats.setdefault(m.group(1), {})[m.group(2)] = t.detach().float().cpu()
    if not mats:
        raise ArtifactError("peft", "adapter holds no LoRA weights for encoder layers")
    r = int(config.get("r", 8))
    targets = tuple(t for t in LAYER_LINEARS if any(name.endswith("." + t) for name in mats))
    cfg = LoraConfig(r=r, alpha=float(config.get("lora_alpha", 8)), targets=targets,
                     rslora=bool(config.get("use_rslora", False)))
    unknown = sorted(set(mats) - set(cfg.modules(spec)))
    if unknown:
        raise ArtifactError("peft_base_model", f"adapter has LoRA weights for modules this backbone "
                            f"lacks, e.g. {unknown[0]} (backbone has {spec.num_layers} layers)")
    tensors: dict[str, Tensor] = {}
    for module in cfg.modules(spec):  # layers the adapter skipped get zeros: an exact no-op
        out_dim, in_dim = spec.linear_shape(module)
        ab = mats.get(module, {})
        tensors[f"lora.{module}.A"] = ab.get("A", torch.zeros(r, in_dim))
        tensors[f"lora.{module}.B"] = ab.get("B", torch.zeros(out_dim, r))
    head, head_tensors = _head_from_peft(state)
    tensors.update(head_tensors)
    art = TaskArtifact("lora", cfg, head, tensors)
    try:
        art.validate(spec)
    except ArtifactError as e:
        raise ArtifactError("peft_base_model", f"adapter does not fit this backbone: {e}") from e
    return art


def _head_from_peft(state: Mapping[str, Tensor]) -> tuple[HeadConfig, dict[str, Tensor]]:
    def find(suffix: str) -> Tensor | None:
        for key, t in state.items():
            k = key.replace(".modules_to_save.default", "")
            if k.endswith(suffix):
                return t.detach().float().cpu()
        return None

    w, b = find("classifier.weight"), find("classifier.bias")
    if w is not None and b is not None:  # BERT: classifier over the frozen pooler
        return HeadConfig(num_outputs=w.shape[0], type="pooler"), {"head.weight": w, "head.bias": b}
    names = {"dense.weight": "head.dense.weight", "dense.bias": "head.dense.bias",
             "out_proj.weight": "head.out.weight", "out_proj.bias": "head.out.bias"}
    cls = {ours: t for theirs, ours in names.items() if (t := find(f"classifier.{theirs}")) is not None}
    if len(cls) == len(names):  # RoBERTa: dense + tanh + out_proj
        return HeadConfig(num_outputs=cls["head.out.weight"].shape[0], type="mlp"), cls
    raise ArtifactError("peft", "adapter has no classifier weights; train with "
                        "modules_to_save=['classifier'] (task_type SEQ_CLS)")
