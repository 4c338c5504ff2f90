"""The protocol every artifact kind implements, and the registry of kinds by name."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from methods.config import BaseConfig
from methods.encoder import BatchContext, Effect
from methods.errors import ArtifactError, UnknownKindError
from methods.spec import BackboneSpec


@dataclasses.dataclass
class TaskPart:
    """One task's rows inside a batch, with its prepared tensors."""

    rows: Tensor  # (n,) long, row indices into the batch
    tensors: Mapping[str, Tensor]
    config: Any


class Kind(abc.ABC):
    """What an artifact kind IS: its tensors for a backbone, and how they act in a batch."""

    name: ClassVar[str]
    config_cls: ClassVar[type[BaseConfig]]
    prefix: ClassVar[str]  # every tensor name of the kind starts with this
    trainable: ClassVar[bool] = True  # tensors can be optimised through attach()

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

    def prepare(self, tensors: Mapping[str, Tensor], spec: BackboneSpec, cfg: Any,
                device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        """Serve-time form of the tensors on ``device`` (default: a cast)."""
        return {n: t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
                for n, t in tensors.items()}

    @abc.abstractmethod
    def effect(self, parts: Sequence[TaskPart], ctx: BatchContext) -> Effect:
        """The batch's effect for all rows of this kind's tasks."""


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


def register_kind(kind: Kind) -> Kind:
    if kind.name in _KINDS:
        raise ValueError(f"kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> Kind:
    try:
        return _KINDS[name]
    except KeyError:
        raise UnknownKindError(name, kind_names()) from None


def kind_names() -> list[str]:
    return sorted(_KINDS)


def row_table(parts: Sequence[TaskPart], key: str, batch: int, ctx: BatchContext) -> Tensor:
    """(B, *shape): part tensors[key] on each of its rows, zeros on rows of no part.

    Built out of place so that gradients reach the parts' tensors at train time.
    """
    shape = parts[0].tensors[key].shape
    table = torch.zeros((batch, *shape), device=ctx.device, dtype=ctx.dtype)
    for p in parts:
        src = p.tensors[key].to(ctx.dtype).expand(len(p.rows), *shape)
        table = table.index_copy(0, p.rows, src)
    return table
