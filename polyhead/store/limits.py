"""Publish limits: the largest artifact a store takes, configurable below the format's own
ceilings (no torch here: the server's config builds them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from polyhead.engine.errors import ArtifactError
from polyhead.store.errors import StoreError


@dataclasses.dataclass(frozen=True)
class Limits:
    """The largest artifacts a store publishes (each at most the format's own ceiling):
    head outputs, LoRA rank, sparse density. Refusals name the limit and its value."""

    max_outputs: int = 10_000
    max_lora_rank: int = 512
    max_sparse_density: float = 1.0

    def __post_init__(self) -> None:
        for name, top in (("max_outputs", 10_000), ("max_lora_rank", 512), ("max_sparse_density", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= top:
                raise StoreError(f"{name} must be in (0, {top}], got {value!r}")

    def check(self, measures: Mapping[str, float]) -> None:
        """Raise ArtifactError (check ``max_<name>``) for a measure above its limit."""
        for name, value in measures.items():
            limit = getattr(self, f"max_{name}", None)
            if limit is not None and value > limit:
                raise ArtifactError(f"max_{name}", f"{name.replace('_', ' ')} {value:g} exceeds this "
                                    f"server's limit max_{name} = {limit:g}")
