"""PEFT LoRA adapters (sequence classification, classifier in modules_to_save) <-> artifacts."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from polyhead.engine.artifact import TaskArtifact
from polyhead.engine.errors import ArtifactError
from polyhead.engine.heads import HeadConfig
from polyhead.engine.lora import LoraConfig
from polyhead.engine.spec import LAYER_LINEARS, BackboneSpec

_LORA_KEY = re.compile(r"(encoder\.layer\.\d+\.[\w.]+?)\.lora_([AB])(?:\.default)?\.weight$")
_UNSUPPORTED = ("use_dora", "rank_pattern", "alpha_pattern", "layer_replication")
MAX_SCALE = 1024.0  # lora_alpha / r (or / sqrt(r)): PEFT's defaults give 1-2; 1e30 gives NaN
MIN_SCALE = 1e-6


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
    r, alpha, rslora = peft_hyperparameters(config)
    targets = tuple(t for t in LAYER_LINEARS if any(name.endswith("." + t) for name in mats))
    cfg = LoraConfig(r=r, alpha=alpha, targets=targets, rslora=rslora)
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


def peft_hyperparameters(config: Mapping[str, Any]) -> tuple[int, float, bool]:
    """(r, lora_alpha, use_rslora) of an adapter_config, each checked for its type and range;
    ``target_modules`` must name only Linears a BERT layer has. Raises ArtifactError
    ("peft_config") naming the field."""
    r = _integer(config.get("r", 8), "r")
    alpha = _number(config.get("lora_alpha", 8), "lora_alpha")
    rslora = config.get("use_rslora", False)
    if not isinstance(rslora, bool):
        raise _bad("use_rslora", rslora, "must be true or false")
    scale = alpha / (math.sqrt(r) if rslora else r)
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise _bad("lora_alpha", alpha, f"gives a scale lora_alpha/{'sqrt(r)' if rslora else 'r'}"
                   f" = {scale:.3g}, outside [{MIN_SCALE:g}, {MAX_SCALE:g}]")
    _check_targets(config.get("target_modules"))
    return r, alpha, rslora


def _bad(field: str, value: Any, why: str) -> ArtifactError:
    return ArtifactError("peft_config", f"adapter_config.json: {field} {why}, got {value!r:.80}")


def _integer(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(field, value, "must be an integer")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise _bad(field, value, "must be an integer (a fractional rank has no meaning)")
    if not 1 <= value <= 512:
        raise _bad(field, value, "must be in [1, 512]")
    return int(value)


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(field, value, "must be a number")
    out = float(value)  # an int of any size: inf once converted, refused below
    if not math.isfinite(out) or out <= 0:
        raise _bad(field, value, "must be a finite number > 0")
    return out


def _check_targets(targets: Any) -> None:
    """PEFT's target_modules: a list of module-name suffixes, or one regex string."""
    if targets is None or targets == "all-linear":
        return
    if isinstance(targets, str):
        if len(targets) > 512:
            raise _bad("target_modules", targets, "is longer than 512 characters")
        try:
            pattern = re.compile(targets)
        except (re.error, RecursionError, OverflowError) as e:
            raise _bad("target_modules", targets, f"is not a regular expression ({e})") from e
        if not any(pattern.fullmatch(f"encoder.layer.0.{t}") for t in LAYER_LINEARS):
            raise _bad("target_modules", targets, "matches none of a BERT layer's Linears")
        return
    if isinstance(targets, (set, frozenset, tuple)):  # a PeftConfig in memory holds a set
        targets = sorted(targets) if all(isinstance(t, str) for t in targets) else list(targets)
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise _bad("target_modules", targets, "must be a list of module names or a regex string")
    unknown = [t for t in targets if not any(("." + lin).endswith("." + t) for lin in LAYER_LINEARS)]
    if unknown:
        raise _bad("target_modules", unknown, f"names modules a BERT layer lacks (it has "
                   f"{', '.join(LAYER_LINEARS)})")


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
