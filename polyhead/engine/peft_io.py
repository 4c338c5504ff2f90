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
from polyhead.engine.kinds import check_float
from polyhead.engine.lora import LoraConfig
from polyhead.engine.spec import LAYER_LINEARS, BackboneSpec

_LORA_KEY = re.compile(r"(encoder\.layer\.\d+\.[\w.]+?)\.lora_([AB])(?:\.default)?\.weight$")
# peft saves classifier.weight; a state dict read off the model says classifier.modules_to_save.default.weight
_HEAD_KEY = re.compile(r"(?:^|\.)classifier(?:\.modules_to_save\.default)?"
                       r"\.((?:dense\.|out_proj\.)?(?:weight|bias))$")
SUPPORTED = ("lora_A/lora_B on the encoder layers' Linears and the classifier head "
             "(classifier.* or classifier.modules_to_save.default.*)")
_UNSUPPORTED = ("use_dora", "rank_pattern", "alpha_pattern", "layer_replication")
MAX_SCALE = 1024.0  # lora_alpha / r (or / sqrt(r)): PEFT's defaults give 1-2; 1e30 gives NaN
MIN_SCALE = 1e-6
# (out, in) of each Linear of a BERT layer, by the backbone size each has
_LINEAR_DIMS = {
    "attention.self.query": ("hidden", "hidden"),
    "attention.self.key": ("hidden", "hidden"),
    "attention.self.value": ("hidden", "hidden"),
    "attention.output.dense": ("hidden", "hidden"),
    "intermediate.dense": ("intermediate", "hidden"),
    "output.dense": ("hidden", "intermediate"),
}
# PEFT's classifier tensors -> ours, with their dims: BERT's linear over the pooler, or
# RoBERTa's dense + tanh + out_proj
_POOLER_HEAD = {"weight": ("head.weight", ("num_labels", "hidden")),
                "bias": ("head.bias", ("num_labels",))}
_MLP_HEAD = {"dense.weight": ("head.dense.weight", ("hidden", "hidden")),
             "dense.bias": ("head.dense.bias", ("hidden",)),
             "out_proj.weight": ("head.out.weight", ("num_labels", "hidden")),
             "out_proj.bias": ("head.out.bias", ("num_labels",))}
_BACKBONE_DIMS = ("hidden", "intermediate")

Entry = tuple[str, str, Tensor, tuple[str, ...]]  # (adapter key, our name, tensor, dims)


def artifact_from_peft(state: Mapping[str, Tensor], config: Mapping[str, Any],
                       spec: BackboneSpec) -> TaskArtifact:
    """A ``lora`` artifact with the same logits as the PEFT model it came from.

    Every tensor of ``state`` must be one the artifact holds (LoRA A/B on an encoder Linear,
    the classifier), so that nothing the adapter trained is dropped. Raises ArtifactError:
    ``peft_base_model`` only where the adapter fits another backbone; a fault of the adapter
    itself keeps its own check (``peft_tensors``, ``tensor_shape``, ``non_finite``, ...)."""
    _check_method(config)
    mats, head_keys = _sort_keys(state)
    r, alpha, rslora = peft_hyperparameters(config)
    targets = tuple(t for t in LAYER_LINEARS if any(name.endswith("." + t) for name in mats))
    cfg = LoraConfig(r=r, alpha=alpha, targets=targets, rslora=rslora)
    unknown = sorted(set(mats) - set(cfg.modules(spec)))
    if unknown:
        raise ArtifactError("peft_base_model", f"adapter has LoRA weights for modules this backbone "
                            f"lacks, e.g. {unknown[0]} (backbone has {spec.num_layers} layers)")
    head_type, entries = _entries(state, mats, head_keys)
    sizes = {"r": r, "hidden": spec.hidden, "intermediate": spec.intermediate}
    if (labels := entries[-len(head_keys)][2]).dim() == 2:  # the classifier: (num_labels, hidden)
        sizes["num_labels"] = labels.shape[0]
    _check_shapes(entries, sizes)
    tensors: dict[str, Tensor] = {}
    for key, name, t, _ in entries:
        tensors[name] = t.detach().float().cpu()
        check_float(key, tensors[name])
    for module in cfg.modules(spec):  # layers the adapter skipped get zeros: an exact no-op
        out_dim, in_dim = spec.linear_shape(module)
        tensors.setdefault(f"lora.{module}.A", torch.zeros(r, in_dim))
        tensors.setdefault(f"lora.{module}.B", torch.zeros(out_dim, r))
    head = HeadConfig(num_outputs=sizes["num_labels"], type=head_type)
    art = TaskArtifact("lora", cfg, head, tensors)
    art.validate(spec)  # the artifact's own gate; its checks keep their names
    return art


def _check_method(config: Mapping[str, Any]) -> None:
    ptype = config.get("peft_type", "LORA")
    ptype = str(getattr(ptype, "value", ptype))  # an enum in memory, a string in adapter_config.json
    if ptype.upper() != "LORA":
        raise ArtifactError("peft", f"only LoRA adapters can be imported, got {ptype}")
    for key in _UNSUPPORTED:
        if config.get(key):
            raise ArtifactError("peft", f"adapter uses {key}, which polyhead does not support")
    if config.get("bias", "none") != "none":
        raise ArtifactError("peft", "adapter trains biases (bias != 'none'); not supported")


def _sort_keys(state: Mapping[str, Tensor]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """({module: {"A"|"B": key}}, {classifier tensor, e.g. "out_proj.weight": key}); any
    other key (or a second key for the same tensor) is refused: its weights would be lost."""
    mats: dict[str, dict[str, str]] = {}
    head: dict[str, str] = {}
    unused = []
    for key in state:
        if m := _LORA_KEY.search(key):
            slot, name = mats.setdefault(m.group(1), {}), m.group(2)
        elif m := _HEAD_KEY.search(key):
            slot, name = head, m.group(1)
        else:
            unused.append(key)
            continue
        if name in slot:
            unused.append(key)
        else:
            slot[name] = key
    if not mats:
        raise ArtifactError("peft", "adapter holds no LoRA weights for encoder layers")
    half = next((ab for ab in mats.values() if len(ab) == 1), None)
    if half:  # PEFT would pair it with a random A (or a zero B): not the adapter's logits either
        raise ArtifactError("peft_tensors", f"adapter holds {next(iter(half.values()))} "
                            f"without its lora_{'B' if 'A' in half else 'A'}")
    if unused:
        more = f" and {len(unused) - 3} more" if len(unused) > 3 else ""
        raise ArtifactError("peft_tensors", f"adapter holds tensors polyhead cannot import, e.g. "
                            f"{', '.join(unused[:3])}{more}; it imports {SUPPORTED} only")
    return mats, head


def _entries(state: Mapping[str, Tensor], mats: Mapping[str, Mapping[str, str]],
             head_keys: Mapping[str, str]) -> tuple[str, list[Entry]]:
    """(head type, entries): each LoRA pair, then the classifier, its weight first."""
    entries: list[Entry] = []
    for module, ab in mats.items():  # A: (r, in), B: (out, r)
        out, inp = _LINEAR_DIMS[module.split(".", 3)[3]]
        entries.append((ab["A"], f"lora.{module}.A", state[ab["A"]], ("r", inp)))
        entries.append((ab["B"], f"lora.{module}.B", state[ab["B"]], (out, "r")))
    for head_type, names in (("pooler", _POOLER_HEAD), ("mlp", _MLP_HEAD)):
        if head_keys.keys() == names.keys():
            order = sorted(names, key=lambda n: n not in ("weight", "out_proj.weight"))
            ours = {n: (head_keys[n], names[n][0], state[head_keys[n]], names[n][1]) for n in order}
            return head_type, entries + list(ours.values())
    if head_keys:
        raise ArtifactError("peft_tensors", f"adapter's classifier holds {', '.join(sorted(head_keys))};"
                            " expected weight and bias (BERT), or dense.* and out_proj.* (RoBERTa)")
    raise ArtifactError("peft", "adapter has no classifier weights; train with "
                        "modules_to_save=['classifier'] (task_type SEQ_CLS)")


def _check_shapes(entries: list[Entry], sizes: Mapping[str, int]) -> None:
    """Every tensor has the shape its dims give under ``sizes``. Else ArtifactError:
    ``peft_base_model`` where the adapter's hidden and intermediate sizes agree among
    themselves (it was trained on another backbone), ``tensor_shape`` naming the first
    wrong tensor where they do not (or where its rank or label count is wrong)."""
    seen: dict[str, set[int]] = {}
    wrong: Entry | None = None
    for entry in entries:
        _, _, t, dims = entry
        if t.dim() != len(dims):
            raise _shape_error(entry, sizes)
        for d, n in zip(dims, t.shape, strict=True):
            seen.setdefault(d, set()).add(n)
        if wrong is None and tuple(t.shape) != tuple(sizes.get(d) for d in dims):
            wrong = entry
    if wrong is None:
        return
    own = all(v == {sizes[d]} for d, v in seen.items() if d not in _BACKBONE_DIMS)
    if own and all(len(seen.get(d, ())) <= 1 for d in _BACKBONE_DIMS):
        theirs = ", ".join(f"{d} {min(seen[d])}" for d in _BACKBONE_DIMS if d in seen)
        ours = ", ".join(f"{d} {sizes[d]}" for d in _BACKBONE_DIMS)
        raise ArtifactError("peft_base_model", f"adapter was trained on a backbone of other "
                            f"sizes ({theirs}); this backbone has {ours}")
    raise _shape_error(wrong, sizes)


def _shape_error(entry: Entry, sizes: Mapping[str, int]) -> ArtifactError:
    key, _, t, dims = entry
    expected = ", ".join(str(sizes.get(d, d)) for d in dims) + ("," if len(dims) == 1 else "")
    why = f" (r = {sizes['r']} in adapter_config.json)" if "r" in dims else ""
    return ArtifactError("tensor_shape", f"{key}: shape {tuple(t.shape)}, expected ({expected}){why}")


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
