"""Typed contracts: the manifest's input form, one ArtifactError, one ConfigError."""

from __future__ import annotations

import pytest

from polyhead.engine import ArtifactError, ConfigError, TaskArtifact
from polyhead.engine.prefix import PrefixConfig
from polyhead.store import decode_artifact, encode_artifact, new_manifest
from polyhead.store.header import parse_header
from polyhead.store.manifest import Manifest


def manifest(tiny_bert, **kw) -> Manifest:
    art = TaskArtifact.random("pasta", tiny_bert.spec, 2)
    return new_manifest("t", art, tiny_bert.spec, labels=["a", "b"], **kw)


def test_inputs_is_a_typed_manifest_field(tiny_bert) -> None:
    art = TaskArtifact.random("pasta", tiny_bert.spec, 2)
    m = new_manifest("t", art, tiny_bert.spec, labels=["a", "b"], inputs="pair")
    back, _ = decode_artifact(encode_artifact(m, art), tiny_bert.spec)
    assert back.inputs == "pair"
    assert manifest(tiny_bert).inputs == "any"
    # the trainer's record (training["inputs"]) fills the field when it is not given
    assert manifest(tiny_bert, training={"inputs": "single"}).inputs == "single"
    with pytest.raises(ArtifactError, match="inputs must be one of"):
        manifest(tiny_bert, inputs="triple")


def test_manifests_without_the_field_still_load(tiny_bert) -> None:
    old = manifest(tiny_bert, training={"inputs": "pair"}).to_dict()
    del old["inputs"]
    assert Manifest.from_dict(old).inputs == "pair"
    old["training"] = {"method": "pasta", "hyperparameters": {}}
    assert Manifest.from_dict(old).inputs == "any"
    with pytest.raises(ArtifactError, match="inputs"):
        Manifest.from_dict({**old, "inputs": 3})


def test_one_error_type_each() -> None:
    from polyhead.engine.config import ConfigError as KindConfigError
    from polyhead.server.config import ConfigError as ServerConfigError

    assert ServerConfigError is ConfigError is KindConfigError
    with pytest.raises(ConfigError, match="num_prefix"):
        PrefixConfig(num_prefix=0)
    with pytest.raises(ArtifactError) as e:  # a malformed file is an ArtifactError too
        parse_header(b"\x01" * 4, 1 << 20)
    assert e.value.check == "not_safetensors"
