"""The protocol every artifact kind implements, and the registry of kinds by name."""

from __future__ import annotations

import abc
import importlib
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from polyhead.engine.config import BaseConfig
from polyhead.engine.encoder import BatchContext, Effect
from polyhead.engine.errors import ArtifactError, UnknownKindError
from polyhead.engine.slots import Field
from polyhead.engine.spec import BackboneSpec


class Kind(abc.ABC):
    """What an artifact kind IS: its tensors for a backbone, its slot-table layout, and how
    its table rows act on the batch rows that carry a slot of it."""

    name: ClassVar[str]
    config_cls: ClassVar[type[BaseConfig]]
    prefix: ClassVar[str]  # every tensor name of the kind starts with this
    trainable: ClassVar[bool] = True  # tensors can be optimised through attach()
    fills: ClassVar[dict[str, float]] = {}  # table field -> padding value, if not 0
    rows_last: ClassVar[bool] = False  # the engine puts this kind's rows at a batch's end

    @abc.abstractmethod
    def shapes(self, spec: BackboneSpec, cfg: Any) -> dict[str, tuple[int, ...]]:
        """Tensor name -> shape, for fixed-shape kinds."""

    def init(self, spec: BackboneSpec, cfg: Any, *, zero: bool,
             generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Zero tensors (a no-op artifact) or random ones (N(0, 0.02))."""
        out = {}
        for name, shape in self.shapes(spec, cfg).items():
            t = torch.zeros(shape)
            if not zero:
                t.normal_(0.0, 0.02, generator=generator)
            out[name] = t
        return out

    def validate(self, tensors: Mapping[str, Tensor], spec: BackboneSpec, cfg: Any) -> None:
        """Raise ArtifactError unless ``tensors`` are exactly this kind's for ``spec``."""
        check_exact(tensors, self.shapes(spec, cfg), self.name)

    def layout(self, rows: Mapping[str, Tensor]) -> dict[str, Field]:
        """The table fields a task's rows need: their shapes, index dtypes, and the fill
        that pads a field (``fills``; 0 elsewhere, a no-op for additive kinds)."""
        return {k: Field(tuple(v.shape), None if v.is_floating_point() else v.dtype,
                         self.fills.get(k, 0.0)) for k, v in rows.items()}

    def rows(self, tensors: Mapping[str, Tensor], spec: BackboneSpec,
             cfg: Any) -> dict[str, Tensor]:
        """The task's table rows from its tensors (default: the tensors themselves).
        Differentiable, so that train time runs the very rows serving writes."""
        return dict(tensors)

    def measures(self, cfg: Any) -> dict[str, float]:
        """Sizes a store may limit (``store.Limits``: ``max_<name>``), from the config."""
        return {}

    def table_key(self, rows: Mapping[str, Tensor]) -> str:
        """Which of the kind's tables a task's rows go to (default: one table per kind)."""
        return self.name

    @abc.abstractmethod
    def effect(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> Effect:
        """The batch's effect: ``tables`` (field -> (N, *shape)), ``slots`` (B,) the row's
        slot in them, -1 for rows of other kinds or none."""


def check_exact(tensors: Mapping[str, Tensor], shapes: Mapping[str, tuple[int, ...]],
                what: str) -> None:
    missing = sorted(set(shapes) - set(tensors))
    extra = sorted(set(tensors) - set(shapes))
    if missing:
        raise ArtifactError("tensor_names", f"{what}: missing tensors {missing[:5]}")
    if extra:
        raise ArtifactError("tensor_names", f"{what}: unexpected tensors {extra[:5]}")
    for name, shape in shapes.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(shape):
            raise ArtifactError(
                "tensor_shape", f"{name}: shape {tuple(t.shape)}, expected {tuple(shape)}")
        check_float(name, t)


def check_float(name: str, t: Tensor) -> None:
    if t.dtype != torch.float32:
        raise ArtifactError("tensor_dtype", f"{name}: dtype {t.dtype}, expected float32")
    if not bool(torch.isfinite(t).all()):
        raise ArtifactError("non_finite", f"{name}: contains NaN or Inf")


_KINDS: dict[str, Kind] = {}
KIND_MODULES = tuple(f"polyhead.engine.{m}" for m in ("bitfit", "lora", "pasta", "prefix", "sparse"))
# each registers its kind when imported


def _load_kinds() -> None:
    if len(_KINDS) < len(KIND_MODULES):
        for module in KIND_MODULES:
            importlib.import_module(module)


def register_kind(kind: Kind) -> Kind:
    if kind.name in _KINDS:
        raise ValueError(f"kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> Kind:
    _load_kinds()
    try:
        return _KINDS[name]
    except KeyError:
        raise UnknownKindError(name, kind_names()) from None


def kind_names() -> list[str]:
    _load_kinds()
    return sorted(_KINDS)
