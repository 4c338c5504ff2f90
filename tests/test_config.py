"""Configs: sorted JSON with schema_version; missing keys raise, unknown keys warn."""

from __future__ import annotations

import json

import pytest

from polyhead.engine import HeadConfig, get_kind, kind_names
from polyhead.engine.config import ConfigError
from polyhead.engine.kinds import register_kind
from polyhead.engine.lora import LoraConfig
from polyhead.engine.prefix import PrefixConfig
from polyhead.engine.sparse import SparseConfig


@pytest.mark.parametrize("name", kind_names())
def test_every_kind_config_round_trips(name: str) -> None:
    cls = get_kind(name).config_cls
    cfg = cls()
    text = cfg.to_json()
    assert json.loads(text)["schema_version"] == 1
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert cls.from_json(text) == cfg


def test_missing_keys_raise_unknown_keys_warn() -> None:
    with pytest.raises(ConfigError, match=r"missing keys \['num_outputs'\]"):
        HeadConfig.from_dict({"schema_version": 1, "type": "linear"})
    with pytest.warns(UserWarning, match="unknown keys"):
        cfg = LoraConfig.from_dict({**LoraConfig().to_dict(), "dropout": 0.1})
    assert cfg == LoraConfig()


def test_schema_version_and_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="schema_version"):
        PrefixConfig.from_dict({"num_prefix": 4})
    with pytest.raises(ConfigError, match="num_prefix"):
        PrefixConfig(num_prefix=0)
    with pytest.raises(ConfigError, match="unknown targets"):
        LoraConfig(targets=("attention.self.querry",))
    with pytest.raises(ConfigError, match="density"):
        SparseConfig(density=1.5)
    with pytest.raises(ConfigError, match="type"):
        HeadConfig(num_outputs=2, type="svm")
    with pytest.raises(ConfigError, match="not valid JSON"):
        HeadConfig.from_json("{")


def test_tuple_fields_survive_json() -> None:
    cfg = LoraConfig(targets=("attention.self.key", "output.dense"))
    assert LoraConfig.from_json(cfg.to_json()).targets == cfg.targets


def test_duplicate_kind_name_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_kind(get_kind("pasta"))
