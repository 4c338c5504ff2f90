"""The servable budget shared by the sparse methods (child-d, child-f, dps): --density of the
tunable weights, chosen as single weights or whole input columns (--mask-structure)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from polyhead.engine.config import STRUCTURES
from polyhead.trainer.method import MethodOptions, TrainConfigError, kind_config, option

if TYPE_CHECKING:
    from polyhead.trainer.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class SparseOptions(MethodOptions):
    density: float = option(0.05, "servable sparse budget (default 0.05)", type=float)
    mask_structure: str = option(
        "entries", "servable child-d/child-f/dps: choose single weights (default), or whole "
        "input columns of each weight matrix, which serve as small dense products (sparse rows "
        "nearly free in mixed batches; see BENCHMARKS.md)", choices=STRUCTURES)

    def __post_init__(self) -> None:
        from polyhead.engine.sparse import SparseConfig  # the sparse kind's own limits

        kind_config(lambda: SparseConfig(density=self.density, structure=self.mask_structure),
                    "--density/--mask-structure")

    def check(self, cfg: TrainConfig) -> None:
        if self.mask_structure != "entries" and cfg.paper:
            raise TrainConfigError("--mask-structure columns applies to the servable recipe of "
                                   "child-d, child-f and dps")

    def export_density(self, cfg: TrainConfig) -> float:
        """The stored diff's density: the budget (servable) or every weight (paper)."""
        return 1.0 if cfg.paper else self.density
