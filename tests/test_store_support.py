"""Helpers for the store tests (no tests here): good artifact files and crafted bad ones."""

from __future__ import annotations

import json
from typing import Any

import safetensors.torch
import torch

from methods import TaskArtifact
from methods.lora import LoraConfig
from methods.sparse import SparseConfig
from methods.spec import BackboneSpec
from store import Manifest, encode_artifact, new_manifest
from store.header import METADATA_KEY, tensors_digest

ST_NAMES = {torch.float32: "F32", torch.int64: "I64", torch.float16: "F16", torch.float64: "F64",
            torch.int32: "I32"}

# (kind, config, head type, outputs, regression): every kind, both head shapes, regression.
KINDS = [
    ("pasta", None, "linear", 2, False),
    ("prefix", None, "mlp", 3, False),
    ("lora", LoraConfig(r=4, alpha=8.0), "linear", 2, False),
    ("sparse", SparseConfig(density=0.05), "pooler", 4, False),
    ("bitfit", None, "linear", 1, True),
]


def labels_for(outputs: int, regression: bool) -> list[str] | None:
    return None if regression else [f"label{i}" for i in range(outputs)]


def make_artifact(spec: BackboneSpec, kind: str = "pasta", *, seed: int = 0, config: Any = None,
                  head_type: str = "linear", outputs: int = 2) -> TaskArtifact:
    return TaskArtifact.random(kind, spec, outputs, config=config, head_type=head_type, seed=seed)


def make_file(spec: BackboneSpec, task_id: str = "sst2", kind: str = "pasta", *, seed: int = 0,
              config: Any = None, head_type: str = "linear", outputs: int = 2,
              regression: bool = False, metrics: dict[str, Any] | None = None) -> bytes:
    art = make_artifact(spec, kind, seed=seed, config=config, head_type=head_type, outputs=outputs)
    manifest = new_manifest(task_id, art, spec, labels=labels_for(outputs, regression),
                            regression=regression, metrics=metrics or {"accuracy": 0.5 + seed / 1e6})
    return encode_artifact(manifest, art)


def good_parts(spec: BackboneSpec, kind: str = "pasta") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A valid manifest dict and tensors, for tests to spoil one thing at a time."""
    art = make_artifact(spec, kind)
    manifest = new_manifest("sst2", art, spec, labels=["neg", "pos"])
    return manifest.to_dict(), dict(art.tensors)


def craft(manifest: dict[str, Any] | None, tensors: dict[str, torch.Tensor], *,
          fix_hash: bool = True) -> bytes:
    """A safetensors file with this manifest dict (None: no manifest at all); with
    ``fix_hash`` its tensors_sha256 is made right, so that only the intended check fails."""
    if manifest is None:
        return safetensors.torch.save(tensors)
    manifest = dict(manifest)
    if fix_hash:
        manifest["tensors_sha256"] = tensors_digest(
            (n, ST_NAMES[t.dtype], tuple(t.shape), t.contiguous().numpy().data)
            for n, t in tensors.items())
    return safetensors.torch.save(tensors, metadata={METADATA_KEY: json.dumps(manifest)})


def manifest_of(data: bytes) -> Manifest:
    from store.fileformat import decode_artifact

    return decode_artifact(data)[0]
