"""`*.polyhead` files: safetensors whose header metadata carries the manifest JSON.

decode_artifact is the one gate every artifact passes before it is stored or served.
Each failure is an ArtifactError whose ``check`` is one of:
too_large, not_safetensors, truncated, header_too_large, manifest_missing, manifest,
schema_version, task_id, unknown_kind, config, head, labels, duplicate_labels,
tensor_names, tensor_dtype, tensor_shape, tensors_sha256, non_finite, density, fingerprint.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import overload

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import Tensor

from polyhead.engine.artifact import TaskArtifact, ValidArtifact
from polyhead.engine.config import ConfigError
from polyhead.engine.errors import ArtifactError
from polyhead.engine.heads import HeadConfig
from polyhead.engine.kinds import get_kind
from polyhead.engine.spec import BackboneSpec
from polyhead.store.header import (
    DEFAULT_MAX_BYTES,
    METADATA_KEY,
    Header,
    digest_of,
    parse_header,
    tensors_digest,
)
from polyhead.store.manifest import Manifest, check_labels, validate_task_id
from polyhead.store.paths import atomic_write

DTYPES = {torch.float32: "F32", torch.int64: "I64"}  # all an artifact may hold


def encode_artifact(manifest: Manifest, artifact: TaskArtifact) -> bytes:
    """The file's bytes; the manifest's tensors_sha256 is filled in from the tensors."""
    _check_agrees(manifest, artifact)
    validate_task_id(manifest.task_id)
    check_labels(manifest.labels, manifest.regression, artifact.head)
    tensors = {n: t.detach().cpu().contiguous().clone() for n, t in artifact.tensors.items()}
    for name, t in tensors.items():
        if t.dtype not in DTYPES:
            raise ArtifactError("tensor_dtype", f"{name}: dtype {t.dtype}, expected float32 or int64")
    digest = tensors_digest((n, DTYPES[t.dtype], tuple(t.shape), t.numpy().data)
                            for n, t in tensors.items())
    full = dataclasses.replace(manifest, tensors_sha256=digest)
    try:
        text = json.dumps(full.to_dict(), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ArtifactError("manifest", f"manifest is not plain JSON: {e}") from e
    return safetensors.torch.save(tensors, metadata={METADATA_KEY: text})


@overload
def decode_artifact(data: bytes, spec: BackboneSpec, *,
                    max_bytes: int = ...) -> tuple[Manifest, ValidArtifact]: ...
@overload
def decode_artifact(data: bytes, spec: None = None, *,
                    max_bytes: int = ...) -> tuple[Manifest, TaskArtifact]: ...


def decode_artifact(data: bytes, spec: BackboneSpec | None = None, *,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Manifest, TaskArtifact]:
    """Check everything (against ``spec``'s shapes and fingerprint when given) and decode.
    With ``spec`` the artifact comes back as a ValidArtifact for that backbone, which the
    engine loads without checking it again."""
    header = parse_header(data, max_bytes)
    manifest = _manifest(header)
    validate_task_id(manifest.task_id)
    kind = get_kind(manifest.kind)
    try:
        config = kind.config_cls.from_dict(manifest.kind_config)
    except ConfigError as e:
        raise ArtifactError("config", str(e)) from e
    try:
        head = HeadConfig.from_dict(manifest.head)
    except ConfigError as e:
        raise ArtifactError("head", str(e)) from e
    check_labels(manifest.labels, manifest.regression, head)
    _check_entries(header, kind.prefix)
    if digest_of(data, header) != manifest.tensors_sha256:
        raise ArtifactError("tensors_sha256", "tensor bytes do not match the manifest's sha256")
    artifact = TaskArtifact(manifest.kind, config, head, _tensors(data))
    if spec is None:
        _check_finite(artifact.tensors)
        return manifest, artifact
    return manifest, _check_backbone(manifest, artifact, spec)


def save_artifact(path: str | os.PathLike[str], manifest: Manifest, artifact: TaskArtifact) -> None:
    """Write the file atomically (a crash leaves the old file or the new one)."""
    atomic_write(Path(path), encode_artifact(manifest, artifact))


@overload
def load_artifact(path: str | os.PathLike[str], spec: BackboneSpec, *,
                  max_bytes: int = ...) -> tuple[Manifest, ValidArtifact]: ...
@overload
def load_artifact(path: str | os.PathLike[str], spec: None = None, *,
                  max_bytes: int = ...) -> tuple[Manifest, TaskArtifact]: ...


def load_artifact(path: str | os.PathLike[str], spec: BackboneSpec | None = None, *,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Manifest, TaskArtifact]:
    p = Path(path)
    size = p.stat().st_size
    if size > max_bytes:  # before reading it into memory
        raise ArtifactError("too_large", f"{p}: {size} bytes exceed the cap of {max_bytes} bytes")
    return decode_artifact(p.read_bytes(), spec, max_bytes=max_bytes)


def _manifest(header: Header) -> Manifest:
    text = header.metadata.get(METADATA_KEY)
    if text is None:
        raise ArtifactError("manifest_missing", f"no {METADATA_KEY!r} in the safetensors metadata")
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: a nesting bomb
        raise ArtifactError("manifest", f"manifest is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ArtifactError("manifest", "manifest is not a JSON object")
    return Manifest.from_dict(obj)


def _check_agrees(manifest: Manifest, artifact: TaskArtifact) -> None:
    pairs = {"kind": (manifest.kind, artifact.kind),
             "kind_config": (manifest.kind_config, artifact.config.to_dict()),
             "head": (manifest.head, artifact.head.to_dict())}
    for name, (said, actual) in pairs.items():
        if said != actual:
            raise ArtifactError("manifest", f"manifest {name} {said!r:.80} does not describe "
                                f"the artifact ({actual!r:.80})")


def _check_entries(header: Header, prefix: str) -> None:
    """What needs no backbone: names inside the kind's namespace, dtypes fp32 or int64."""
    for e in header.tensors.values():
        if not e.name.startswith((prefix, "head.")):
            raise ArtifactError("tensor_names", f"{e.name!r} is neither a {prefix}* nor a head.* tensor")
        if e.dtype not in DTYPES.values():
            raise ArtifactError("tensor_dtype", f"{e.name}: dtype {e.dtype}, expected F32 or I64")


def _tensors(data: bytes) -> dict[str, Tensor]:
    try:
        return safetensors.torch.load(bytes(data))
    except SafetensorError as e:  # the header already passed; this is the library's second look
        raise ArtifactError("not_safetensors", f"safetensors cannot read the file: {e}") from e


def _check_finite(tensors: dict[str, Tensor]) -> None:
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ArtifactError("non_finite", f"{name}: contains NaN or Inf")


def _check_backbone(manifest: Manifest, artifact: TaskArtifact,
                    spec: BackboneSpec) -> ValidArtifact:
    if manifest.backbone_fingerprint != spec.fingerprint:
        raise ArtifactError("fingerprint", f"trained on backbone {manifest.backbone_fingerprint[:16]}…,"
                            f" this backbone is {spec.fingerprint[:16]}…")
    try:
        return artifact.checked(spec)
    except ArtifactError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        raise ArtifactError("tensor_shape", f"tensors do not fit this backbone: {e!r}") from e
