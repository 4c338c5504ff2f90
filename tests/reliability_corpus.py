"""The hostile artifact corpus (issue 6; no tests here): every crafted bad file of the store's
format tests, plus files that lie in their safetensors container, bombs, and another real
backbone's artifact. Each entry: (name, check the store must name, build(spec) -> bytes).
All are for task "sst2" (the format tests' good file), so one good "sst2" version can be
shown to keep serving while every one of them is refused."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable

import torch

from polyhead.engine.spec import BackboneSpec
from polyhead.store.header import DEFAULT_MAX_BYTES, METADATA_KEY
from tests.test_store_format import BAD
from tests.test_store_support import craft, good_parts, make_file

Build = Callable[[BackboneSpec], bytes]


def split(data: bytes) -> tuple[dict, bytes]:
    """(header JSON, tensor bytes) of a safetensors file."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def join(header_text: str | bytes, body: bytes, length: int | None = None) -> bytes:
    raw = header_text.encode() if isinstance(header_text, str) else header_text
    return struct.pack("<Q", len(raw) if length is None else length) + raw + body


def _edit_header(edit: Callable[[dict], None]) -> Build:
    def build(spec: BackboneSpec) -> bytes:
        header, body = split(make_file(spec))
        edit(header)
        return join(json.dumps(header), body)
    return build


def _duplicate_names(spec: BackboneSpec) -> bytes:
    """JSON with the same tensor name twice: a parser keeps one, its bytes no longer tile."""
    header, body = split(make_file(spec))
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    first = next(iter(entries))
    last = max(entries.values(), key=lambda e: e["data_offsets"][1])
    dup = dict(entries[first], data_offsets=[last["data_offsets"][1],
                                             last["data_offsets"][1] + 4 * _numel(entries[first])])
    text = json.dumps(header)[:-1] + f', "{first}": {json.dumps(dup)}' + "}"
    return join(text, body + b"\0" * (dup["data_offsets"][1] - dup["data_offsets"][0]))


def _numel(entry: dict) -> int:
    n = 1
    for s in entry["shape"]:
        n *= s
    return n


def _length_lies(delta: int) -> Build:
    def build(spec: BackboneSpec) -> bytes:
        data = make_file(spec)
        (n,) = struct.unpack("<Q", data[:8])
        return struct.pack("<Q", n + delta) + data[8:]
    return build


def _offsets_past_end(header: dict) -> None:
    """The last tensor claims a bigger shape and bytes the file does not have."""
    _, entry = max(((k, v) for k, v in header.items() if k != "__metadata__"),
                   key=lambda kv: kv[1]["data_offsets"][1])
    entry["shape"] = [entry["shape"][0] * 1000, *entry["shape"][1:]]
    start = entry["data_offsets"][0]
    entry["data_offsets"] = [start, start + 4 * _numel(entry)]


def _first_entry(header: dict) -> dict:
    return next(v for k, v in header.items() if k != "__metadata__")


def _shape_overflow(header: dict) -> None:
    _first_entry(header)["shape"] = [2 ** 62, 4, 2 ** 62]


def _negative_shape(header: dict) -> None:
    _first_entry(header)["shape"][0] = -1


def _manifest_not_string(header: dict) -> None:
    header["__metadata__"][METADATA_KEY] = {"task_id": "sst2"}


def _nest_header(spec: BackboneSpec) -> bytes:
    return join(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"")


def _nest_manifest(spec: BackboneSpec) -> bytes:
    header, body = split(make_file(spec))
    header["__metadata__"][METADATA_KEY] = "[" * 100_000 + "]" * 100_000
    return join(json.dumps(header), body)


def _manifest(**changes: object) -> Build:
    def build(spec: BackboneSpec) -> bytes:
        manifest, tensors = good_parts(spec)
        manifest.update(changes)
        return craft(manifest, tensors)
    return build


def _zip(spec: BackboneSpec) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("adapter_model.safetensors", make_file(spec))
    return buf.getvalue()


def _bf16(spec: BackboneSpec) -> bytes:
    manifest, tensors = good_parts(spec)
    tensors["head.weight"] = tensors["head.weight"].to(torch.bfloat16)
    import safetensors.torch

    return safetensors.torch.save(tensors, metadata={METADATA_KEY: json.dumps(manifest)})


def _kind_of_other_tensors(spec: BackboneSpec) -> bytes:
    manifest, _ = good_parts(spec, "lora")
    _, tensors = good_parts(spec, "pasta")
    return craft(manifest, tensors)


def _oversized(spec: BackboneSpec) -> bytes:
    """A real artifact padded past the store's default cap (the CLI's) and the server's."""
    data = make_file(spec)
    return data + b" " * (DEFAULT_MAX_BYTES + 1 - len(data))


EXTRA: list[tuple[str, str, Build]] = [
    ("duplicate_tensor_names", "not_safetensors", _duplicate_names),
    ("header_length_says_more", "truncated", _length_lies(10_000)),
    ("header_length_says_less", "not_safetensors", _length_lies(-7)),
    ("offsets_past_end", "truncated", _edit_header(_offsets_past_end)),
    ("shape_overflow", "not_safetensors", _edit_header(_shape_overflow)),
    ("negative_shape", "not_safetensors", _edit_header(_negative_shape)),
    ("manifest_not_a_string", "not_safetensors", _edit_header(_manifest_not_string)),
    ("nesting_bomb_header", "not_safetensors", _nest_header),
    ("nesting_bomb_manifest", "manifest", _nest_manifest),
    ("manifest_is_a_list", "manifest", lambda s: _list_manifest(s)),
    ("task_id_unicode", "task_id", _manifest(task_id="sst2\u0301")),
    ("task_id_nul", "task_id", _manifest(task_id="sst2\x00")),
    ("task_id_empty", "task_id", _manifest(task_id="")),
    ("label_empty", "labels", _manifest(labels=["", "pos"])),
    ("label_not_string", "labels", _manifest(labels=[1, 2])),
    ("bfloat16", "tensor_dtype", _bf16),
    ("zip_renamed", "not_safetensors", _zip),
    ("elf_renamed", "not_safetensors", lambda s: b"\x7fELF\x02\x01\x01" + b"\0" * 200),
    ("lora_manifest_pasta_tensors", "tensor_names", _kind_of_other_tensors),
    ("oversized", "too_large", _oversized),
]


def _list_manifest(spec: BackboneSpec) -> bytes:
    header, body = split(make_file(spec))
    header["__metadata__"][METADATA_KEY] = "[1, 2]"
    return join(json.dumps(header), body)


def corpus(other_backbone: BackboneSpec) -> list[tuple[str, str, Build]]:
    """The store's crafted bad files, the extras, and a good file of another backbone."""
    from tests.test_serving import artifact

    cases = [(name, check, build) for name, check, _, build in BAD]
    cases += EXTRA
    cases.append(("other_backbone", "fingerprint", lambda s: artifact(other_backbone, "sst2")[0]))
    return cases
