"""Reading a PEFT adapter folder (adapter_config.json + adapter_model.safetensors), no pickle."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import safetensors.torch
from safetensors import SafetensorError
from torch import Tensor

from polyhead.engine.errors import ArtifactError
from polyhead.engine.spec import BackboneSpec

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_MODULE = re.compile(r"(encoder\.layer\.\d+\.[\w.]+?)\.lora_[AB]\b")
MAX_CONFIG_BYTES = 64 << 10  # adapter_config.json: PEFT's own files are ~1 KB
MAX_BASE_MODEL_CHARS = 512
_HYPERPARAMETERS = ("r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora",
                    "modules_to_save", "task_type", "init_lora_weights")


def read_peft_folder(folder: Path, max_bytes: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The adapter's state dict and config; a pickled ``adapter_model.bin`` is refused."""
    if not folder.is_dir():
        raise ArtifactError("peft", f"{folder}: not a folder")
    config_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file():
        raise ArtifactError("peft", f"{folder}: no {CONFIG_FILE}")
    if not weights.is_file():
        if (folder / "adapter_model.bin").is_file():
            raise ArtifactError("peft", f"{folder}: adapter_model.bin is a pickle, which polyhead "
                                "never loads; save with save_pretrained(..., safe_serialization=True)")
        raise ArtifactError("peft", f"{folder}: no {WEIGHTS_FILE}")
    if weights.stat().st_size > max_bytes:  # before reading it into memory
        raise ArtifactError("too_large", f"{weights}: more than {max_bytes} bytes")
    return parse_peft(config_path.read_bytes(), weights.read_bytes(), max_bytes, f"{folder}/")


def parse_peft(config: bytes, weights: bytes, max_bytes: int,
               where: str = "") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The adapter's state dict and config from the two files' bytes (as an upload sends them)."""
    if len(weights) > max_bytes:
        raise ArtifactError("too_large", f"{where}{WEIGHTS_FILE}: more than {max_bytes} bytes")
    if len(config) > MAX_CONFIG_BYTES:
        raise ArtifactError("peft_config", f"{where}{CONFIG_FILE}: {len(config)} bytes; the "
                            f"limit is {MAX_CONFIG_BYTES}")
    try:
        parsed = json.loads(config.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError("peft", f"{where}{CONFIG_FILE}: not valid JSON: {e}") from e
    if not isinstance(parsed, dict):
        raise ArtifactError("peft", f"{where}{CONFIG_FILE}: not a JSON object")
    try:
        state = safetensors.torch.load(weights)
    except SafetensorError as e:
        raise ArtifactError("peft", f"{where}{WEIGHTS_FILE}: not a safetensors file: {e}") from e
    return state, parsed


def check_modules(state: dict[str, Tensor], spec: BackboneSpec) -> None:
    """Every LoRA weight must sit on a Linear this backbone has (same layer count, names)."""
    known = set(spec.linear_names())
    for key in state:
        m = _MODULE.search(key)
        if m and m.group(1) not in known:
            raise ArtifactError("peft_base_model", f"adapter has LoRA weights for {m.group(1)}, "
                                f"which this backbone ({spec.num_layers} layers) does not have")


def training_record(config: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``training`` for an imported adapter."""
    hyper = {k: config[k] for k in _HYPERPARAMETERS if k in config}
    base = config.get("base_model_name_or_path") or ""
    if not isinstance(base, str) or len(base) > MAX_BASE_MODEL_CHARS or not base.isprintable():
        raise ArtifactError("peft_config", f"{CONFIG_FILE}: base_model_name_or_path must be a "
                            f"printable string of at most {MAX_BASE_MODEL_CHARS} characters, "
                            f"got {base!r:.80}")
    try:
        plain = json.loads(json.dumps(hyper, default=str))
    except (ValueError, RecursionError) as e:
        raise ArtifactError("peft_config", f"{CONFIG_FILE}: hyperparameters do not round-trip "
                            f"as JSON: {e}") from e
    return {"method": "peft-lora", "hyperparameters": plain, "base_model": base}
