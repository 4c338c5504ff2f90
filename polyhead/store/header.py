"""The safetensors container, read with struct and json only (no torch, nothing unpickled).

Layout: an 8-byte little-endian header length n, n bytes of JSON header
({name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}), then the tensor bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from collections.abc import Iterable

from polyhead.engine.errors import ArtifactError

DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # cap on a whole artifact file
MAX_HEADER_BYTES = 8 * 1024 * 1024  # safetensors itself allows 100 MB; a manifest needs far less
METADATA_KEY = "polyhead.manifest"
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str  # safetensors name: "F32", "I64", ...
    shape: tuple[int, ...]
    start: int  # absolute byte offsets into the file
    end: int


@dataclasses.dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    data_start: int


# what a file that is not an artifact at all (a README, a pickle, a zip) is told
NOT_AN_ARTIFACT = "is it a .polyhead artifact? (`polyhead train ... --out FILE.polyhead` writes one)"


def parse_header(data: bytes | memoryview, max_bytes: int = DEFAULT_MAX_BYTES) -> Header:
    """Check the container completely and return where each tensor's bytes lie."""
    size = len(data)
    if size > max_bytes:
        raise ArtifactError("too_large", f"{size} bytes exceed the cap of {max_bytes} bytes")
    if size < 8:
        raise ArtifactError("not_safetensors", f"{size} bytes: too short for a safetensors file; "
                            + NOT_AN_ARTIFACT)
    if size > 8 and data[8:9] != b"{":  # e.g. a pickle or a zip: say so, not "header too large"
        raise ArtifactError("not_safetensors", "no JSON header after the 8-byte length prefix; "
                            + NOT_AN_ARTIFACT)
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:
        raise ArtifactError("header_too_large", f"header of {n} bytes exceeds {MAX_HEADER_BYTES}")
    if 8 + n > size:
        raise ArtifactError("truncated", f"header needs {n} bytes, only {size - 8} follow")
    raw = bytes(data[8:8 + n])
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # nesting bomb
        raise ArtifactError("not_safetensors", f"header is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ArtifactError("not_safetensors", "header is not a JSON object")
    metadata = _metadata(obj.pop("__metadata__", {}))
    start = 8 + n
    tensors = {name: _entry(name, spec, start) for name, spec in obj.items()}
    _check_layout(tensors.values(), start, size)
    return Header(tensors, metadata, start)


def _metadata(meta: object) -> dict[str, str]:
    if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ArtifactError("not_safetensors", "__metadata__ must map strings to strings")
    return meta


def _entry(name: str, spec: object, start: int) -> TensorEntry:
    if not isinstance(spec, dict):
        raise ArtifactError("not_safetensors", f"tensor {name!r}: entry is not an object")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        raise ArtifactError("not_safetensors", f"tensor {name!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_uint(s) for s in shape):
        raise ArtifactError("not_safetensors", f"tensor {name!r}: bad shape {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_uint(o) for o in offsets)
            or offsets[0] > offsets[1]):
        raise ArtifactError("not_safetensors", f"tensor {name!r}: bad data_offsets {offsets!r}")
    numel = 1
    for s in shape:
        numel *= s
    if numel * DTYPE_SIZES[dtype] != offsets[1] - offsets[0]:
        raise ArtifactError("not_safetensors",
                          f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for {dtype} {shape}")
    return TensorEntry(name, dtype, tuple(shape), start + offsets[0], start + offsets[1])


def _is_uint(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_layout(entries: Iterable[TensorEntry], start: int, size: int) -> None:
    """Tensor bytes must tile the data section exactly: no gaps, no overlaps, no tail."""
    pos = start
    for e in sorted(entries, key=lambda e: (e.start, e.end)):
        if e.start != pos:
            raise ArtifactError("not_safetensors", f"tensor {e.name!r}: bytes do not follow on "
                              "from the previous tensor (gap or overlap)")
        pos = e.end
    if pos > size:
        raise ArtifactError("truncated", f"tensor data needs {pos} bytes, the file has {size}")
    if pos < size:
        raise ArtifactError("not_safetensors", f"{size - pos} trailing bytes after the tensor data")


def tensors_digest(items: Iterable[tuple[str, str, tuple[int, ...], bytes | memoryview]]) -> str:
    """sha256 over (name, dtype, shape, raw little-endian bytes) of each tensor, by name."""
    h = hashlib.sha256()
    for name, dtype, shape, buf in sorted(items, key=lambda t: t[0]):
        meta = json.dumps([name, dtype, list(shape)]).encode()
        h.update(struct.pack("<Q", len(meta)))
        h.update(meta)
        h.update(buf)
    return h.hexdigest()


def digest_of(data: bytes | memoryview, header: Header) -> str:
    """tensors_digest straight from a parsed file's bytes (no copies)."""
    view = memoryview(data)
    return tensors_digest((e.name, e.dtype, e.shape, view[e.start:e.end])
                          for e in header.tensors.values())


def read_manifest_json(data: bytes | memoryview, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, object]:
    """The raw manifest dict of an artifact file (for listing tools; not validated)."""
    header = parse_header(data, max_bytes)
    text = header.metadata.get(METADATA_KEY)
    if text is None:
        raise ArtifactError("manifest_missing", f"no {METADATA_KEY!r} in the safetensors metadata")
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError("manifest", f"manifest is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ArtifactError("manifest", "manifest is not a JSON object")
    return obj
