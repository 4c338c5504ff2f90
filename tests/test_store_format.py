"""The `*.polyhead` file: round trips for every kind, and every validation failure by name."""

from __future__ import annotations

import dataclasses
import pickle
import struct
from collections.abc import Callable

import pytest
import safetensors
import torch

from polyhead.engine.errors import ArtifactError
from polyhead.engine.spec import BackboneSpec
from polyhead.store import decode_artifact, encode_artifact, load_artifact, new_manifest, save_artifact
from polyhead.store.header import MAX_HEADER_BYTES, METADATA_KEY
from tests.test_store_support import KINDS, craft, good_parts, labels_for, make_artifact, make_file

TEXTS = ["the movie was good", ("the man walks", "he walks in the park"), "i hated the plot !"]


@pytest.mark.parametrize(("kind", "config", "head_type", "outputs", "regression"), KINDS,
                         ids=[k[0] for k in KINDS])
def test_round_trip_is_bit_exact(tiny_bert, kind, config, head_type, outputs, regression) -> None:
    spec = tiny_bert.spec
    art = make_artifact(spec, kind, config=config, head_type=head_type, outputs=outputs)
    manifest = new_manifest("task-1", art, spec, labels=labels_for(outputs, regression),
                            regression=regression, training={"method": "m", "hyperparameters": {"lr": 1e-3}},
                            metrics={"accuracy": 0.75})
    data = encode_artifact(manifest, art)
    got_manifest, got = decode_artifact(data, spec)
    assert got_manifest == dataclasses.replace(manifest, tensors_sha256=got_manifest.tensors_sha256)
    assert len(got_manifest.tensors_sha256) == 64
    assert got.kind == art.kind and got.config == art.config and got.head == art.head
    assert got.tensors.keys() == art.tensors.keys()
    for name, t in art.tensors.items():
        assert got.tensors[name].dtype == t.dtype and torch.equal(got.tensors[name], t), name
    assert encode_artifact(manifest, art) == data  # deterministic bytes


def test_engine_logits_survive_the_file(tiny_engine, tmp_path) -> None:
    spec = tiny_engine.spec
    for i, (kind, config, head_type, outputs, regression) in enumerate(KINDS):
        art = make_artifact(spec, kind, seed=i, config=config, head_type=head_type, outputs=outputs)
        before = tiny_engine.run(TEXTS, [tiny_engine.load(art)] * len(TEXTS))
        path = tmp_path / f"{kind}.polyhead"
        save_artifact(path, new_manifest(kind, art, spec, labels=labels_for(outputs, regression),
                                         regression=regression), art)
        _, loaded = load_artifact(path, spec)
        after = tiny_engine.run(TEXTS, [tiny_engine.load(loaded)] * len(TEXTS))
        for b, a in zip(before, after, strict=True):
            assert torch.equal(a, b), kind


def test_file_is_plain_safetensors(tiny_bert, tmp_path) -> None:
    path = tmp_path / "a.polyhead"
    path.write_bytes(make_file(tiny_bert.spec))
    with safetensors.safe_open(str(path), framework="pt") as f:
        assert METADATA_KEY in f.metadata()
        assert "pasta.vectors" in f.keys()  # noqa: SIM118 (safe_open is not a dict)


def test_decoding_never_unpickles(tiny_bert, monkeypatch) -> None:
    data = make_file(tiny_bert.spec, kind="sparse")

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling during decode")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    decode_artifact(data, tiny_bert.spec)


def test_encode_refuses_a_manifest_of_another_artifact(tiny_bert) -> None:
    spec = tiny_bert.spec
    art = make_artifact(spec, "pasta")
    manifest = new_manifest("t", make_artifact(spec, "bitfit"), spec, labels=["a", "b"])
    with pytest.raises(ArtifactError, match="manifest"):
        encode_artifact(manifest, art)


def test_new_manifest_checks_its_inputs(tiny_bert) -> None:
    art = make_artifact(tiny_bert.spec)
    with pytest.raises(ArtifactError) as e:
        new_manifest("Bad/Id", art, tiny_bert.spec, labels=["a", "b"])
    assert e.value.check == "task_id"
    with pytest.raises(ArtifactError) as e:
        new_manifest("t", art, tiny_bert.spec, labels=["a", "a"])
    assert e.value.check == "duplicate_labels"
    with pytest.raises(ArtifactError) as e:
        new_manifest("t", art, tiny_bert.spec, labels=["a"], metrics={"x": 1})
    assert e.value.check == "labels"


# -- crafted bad files: (name, check, needs spec, build(spec) -> bytes) -------------------

def _spoil(base: str = "pasta", **changes) -> Callable[[BackboneSpec], bytes]:
    def build(spec: BackboneSpec) -> bytes:
        manifest, tensors = good_parts(spec, base)
        for key, value in changes.items():
            if key == "drop":
                del manifest[value]
            else:
                manifest[key] = value
        return craft(manifest, tensors)
    return build


def _tensors(edit: Callable[[dict[str, torch.Tensor]], None], kind: str = "pasta",
             fix_hash: bool = True) -> Callable[[BackboneSpec], bytes]:
    def build(spec: BackboneSpec) -> bytes:
        manifest, tensors = good_parts(spec, kind)
        edit(tensors)
        return craft(manifest, tensors, fix_hash=fix_hash)
    return build


def _flip_last_byte(spec: BackboneSpec) -> bytes:
    data = bytearray(make_file(spec))
    data[-1] ^= 0x01
    return bytes(data)


def _set(name: str, value: torch.Tensor) -> Callable[[dict[str, torch.Tensor]], None]:
    return lambda t: t.__setitem__(name, value)


def _nan(t: dict[str, torch.Tensor]) -> None:
    t["pasta.vectors"] = t["pasta.vectors"].clone()
    t["pasta.vectors"][0, 0, 0] = float("nan")


def _inf(t: dict[str, torch.Tensor]) -> None:
    t["head.weight"] = t["head.weight"].clone()
    t["head.weight"][1, 3] = float("-inf")


def _dense_sparse(t: dict[str, torch.Tensor]) -> None:  # every weight of a matrix: over budget
    t["sparse.encoder.layer.0.intermediate.dense.weight.indices"] = torch.arange(64 * 32)
    t["sparse.encoder.layer.0.intermediate.dense.weight.values"] = torch.ones(64 * 32)


BAD = [
    ("empty", "not_safetensors", False, lambda s: b""),
    ("pickle", "not_safetensors", False, lambda s: pickle.dumps({"a": 1})),
    ("torch_save", "not_safetensors", False, lambda s: _torch_save()),
    ("header_not_json", "not_safetensors", False, lambda s: struct.pack("<Q", 4) + b"{abc"),
    ("trailing_bytes", "not_safetensors", False, lambda s: make_file(s) + b"\0"),
    ("truncated_data", "truncated", False, lambda s: make_file(s)[:-5]),
    ("truncated_header", "truncated", False, lambda s: make_file(s)[:60]),
    ("header_too_large", "header_too_large", False,
     lambda s: struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{" + b" " * 100),
    ("no_manifest", "manifest_missing", False, lambda s: craft(None, good_parts(s)[1])),
    ("manifest_missing_key", "manifest", False, _spoil(drop="head")),
    ("manifest_wrong_type", "manifest", False, _spoil(regression="no")),
    ("manifest_bad_training", "manifest", False, _spoil(training={"lr": 1})),
    ("schema_version", "schema_version", False, _spoil(schema_version=2)),
    ("task_id_traversal", "task_id", False, _spoil(task_id="../../etc/passwd")),
    ("task_id_upper", "task_id", False, _spoil(task_id="SST2")),
    ("task_id_long", "task_id", False, _spoil(task_id="a" * 65)),
    ("unknown_kind", "unknown_kind", False, _spoil(kind="adapterdrop")),
    ("bad_kind_config", "config", False, _spoil("lora", kind_config={"r": 0, "schema_version": 1})),
    ("bad_head", "head", False, _spoil(head={"num_outputs": 0, "type": "linear", "schema_version": 1})),
    ("labels_count", "labels", False, _spoil(labels=["a", "b", "c"])),
    ("labels_missing", "labels", False, _spoil(labels=None)),
    ("regression_with_labels", "labels", False, _spoil(regression=True)),
    ("duplicate_labels", "duplicate_labels", False, _spoil(labels=["pos", "pos"])),
    ("foreign_tensor", "tensor_names", False, _tensors(_set("lora.x", torch.zeros(2)))),
    ("float16", "tensor_dtype", False, _tensors(_set("head.bias", torch.zeros(2, dtype=torch.float16)))),
    ("nan", "non_finite", False, _tensors(_nan)),
    ("inf", "non_finite", False, _tensors(_inf)),
    ("tensors_sha256", "tensors_sha256", False, _flip_last_byte),
    ("sha_of_other_tensors", "tensors_sha256", False, _tensors(_nan, fix_hash=False)),
    ("missing_tensor", "tensor_names", True, _tensors(lambda t: t.pop("head.bias"))),
    ("extra_tensor", "tensor_names", True, _tensors(_set("pasta.more", torch.zeros(3)))),
    ("wrong_shape", "tensor_shape", True, _tensors(_set("pasta.vectors", torch.zeros(2, 3, 33)))),
    ("int_where_float", "tensor_dtype", True,
     _tensors(_set("head.bias", torch.zeros(2, dtype=torch.int64)))),
    ("sparse_over_budget", "density", True, _tensors(_dense_sparse, kind="sparse")),
    ("fingerprint", "fingerprint", True, _spoil(backbone_fingerprint="0" * 64)),
]


def _torch_save() -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    return buf.getvalue()


@pytest.mark.parametrize(("name", "check", "needs_spec", "build"), BAD, ids=[b[0] for b in BAD])
def test_bad_file_is_refused_by_name(tiny_bert, name, check, needs_spec, build) -> None:
    data = build(tiny_bert.spec)
    with pytest.raises(ArtifactError) as e:
        decode_artifact(data, tiny_bert.spec)
    assert e.value.check == check, str(e.value)
    if not needs_spec:  # structural: caught without a backbone too
        with pytest.raises(ArtifactError) as e:
            decode_artifact(data)
        assert e.value.check == check, str(e.value)


def test_byte_cap(tiny_bert, tmp_path) -> None:
    data = make_file(tiny_bert.spec)
    with pytest.raises(ArtifactError) as e:
        decode_artifact(data, tiny_bert.spec, max_bytes=len(data) - 1)
    assert e.value.check == "too_large"
    decode_artifact(data, tiny_bert.spec, max_bytes=len(data))
    path = tmp_path / "a.polyhead"
    path.write_bytes(data)
    with pytest.raises(ArtifactError, match="too_large"):
        load_artifact(path, max_bytes=100)
