"""Config dataclasses shared by every artifact kind: sorted JSON with a schema_version."""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import Any, ClassVar, Self

from polyhead.engine.errors import ConfigError

# sparse artifacts: which weights a mask may choose (single entries, or whole input columns)
STRUCTURES = ("entries", "columns")
# a task head's types (polyhead.engine.heads.HeadConfig; the trainer's --head)
HEAD_TYPES = ("linear", "mlp", "pooler")
# the backbone's arithmetic when serving (polyhead.engine.precision, which needs torch)
PRECISIONS = ("fp32", "int8", "bf16")

CONFIG_SCHEMA_VERSION = 1
__all__ = ["CONFIG_SCHEMA_VERSION", "HEAD_TYPES", "PRECISIONS", "STRUCTURES", "BaseConfig", "ConfigError",
           "require"]


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """Validated in ``__post_init__``; missing keys raise, unknown keys warn."""

    schema_version: ClassVar[int] = CONFIG_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["schema_version"] = self.schema_version
        return dict(sorted(out.items()))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("schema_version", None)
        if version != cls.schema_version:
            raise ConfigError(
                f"{cls.__name__}: schema_version {version!r} is not supported "
                f"(expected {cls.schema_version})"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            warnings.warn(f"{cls.__name__}: ignoring unknown keys {unknown}", stacklevel=2)
        required = [
            n for n, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [n for n in required if n not in data]
        if missing:
            raise ConfigError(f"{cls.__name__}: missing keys {missing}")
        kwargs = {n: _from_json(fields[n], data[n]) for n in fields if n in data}
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f"{cls.__name__}: {e}") from e

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{cls.__name__}: not valid JSON: {e}") from e
        return cls.from_dict(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def _from_json(field: dataclasses.Field[Any], value: Any) -> Any:
    if isinstance(value, list) and "tuple" in str(field.type):
        return tuple(value)
    return value


def require(cond: bool, cls_name: str, message: str) -> None:
    """Raise ConfigError(``cls_name: message``) unless ``cond``."""
    if not cond:
        raise ConfigError(f"{cls_name}: {message}")
