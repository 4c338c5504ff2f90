"""A task's artifact in memory: kind, kind config, head config and tensors."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from polyhead.engine.errors import ArtifactError
from polyhead.engine.heads import HeadConfig, init_head, validate_head
from polyhead.engine.kinds import Kind, get_kind
from polyhead.engine.spec import BackboneSpec


@dataclasses.dataclass
class TaskArtifact:
    kind: str
    config: Any  # the kind's config dataclass
    head: HeadConfig
    tensors: dict[str, Tensor]  # the kind's tensors and head.* tensors, fp32 on CPU

    @property
    def kind_impl(self) -> Kind:
        return get_kind(self.kind)

    def kind_tensors(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.tensors.items() if not k.startswith("head.")}

    def head_tensors(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.tensors.items() if k.startswith("head.")}

    def validate(self, spec: BackboneSpec) -> None:
        """Raise ArtifactError unless every tensor is what the kind and head need for spec."""
        kind = self.kind_impl
        if not isinstance(self.config, kind.config_cls):
            raise ArtifactError("config", f"config for {self.kind!r} is a {type(self.config).__name__}")
        kind.validate(self.kind_tensors(), spec, self.config)
        validate_head(self.head_tensors(), spec, self.head)

    def checked(self, spec: BackboneSpec) -> ValidArtifact:
        """This artifact as checked against ``spec``'s backbone (``validate``; raises
        ArtifactError): the type ``decode_artifact`` returns and the engine's tables take."""
        self.validate(spec)
        return ValidArtifact(self.kind, self.config, self.head, self.tensors,
                             fingerprint=spec.fingerprint)

    def measures(self) -> dict[str, float]:
        """Sizes a store may limit: head outputs and the kind's own (rank, density)."""
        return {"outputs": self.head.num_outputs, **self.kind_impl.measures(self.config)}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @classmethod
    def random(cls, kind: str, spec: BackboneSpec, num_outputs: int, *, config: Any = None,
               head_type: str = "linear", zero: bool = False, seed: int = 0) -> TaskArtifact:
        """An artifact with random (or zero, i.e. no-op) kind tensors and a random head."""
        impl = get_kind(kind)
        cfg = config if config is not None else impl.config_cls()
        g = torch.Generator().manual_seed(seed)
        head = HeadConfig(num_outputs=num_outputs, type=head_type)
        tensors = {**impl.init(spec, cfg, zero=zero, generator=g), **init_head(spec, head, g)}
        return cls(kind, cfg, head, tensors)


@dataclasses.dataclass
class ValidArtifact(TaskArtifact):
    """A TaskArtifact checked against the backbone with ``fingerprint`` (made by
    ``TaskArtifact.checked``, which ``decode_artifact`` runs): the engine loads it into
    that backbone's tables without checking it again. Its tensors are not to be changed."""

    fingerprint: str = dataclasses.field(kw_only=True)

    def checked(self, spec: BackboneSpec) -> ValidArtifact:
        return self if self.fingerprint == spec.fingerprint else super().checked(spec)
