"""The servable budget shared by the sparse methods (child-d, child-f, dps): --density of the
tunable weights, chosen as single weights or whole input columns (--mask-structure)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from polyhead.engine.config import STRUCTURES
from polyhead.trainer.method import MethodOptions, TrainConfigError, kind_config, option

if TYPE_CHECKING:
    from polyhead.trainer.config import TrainConfig


# each method's servable mask structure (its options class's ``servable_structure``) and the
# runs that chose it (`polyhead train --defaults`)
SERVABLE_STRUCTURES = {"child-d": "columns", "child-f": "entries", "dps": "columns"}
STRUCTURE_EVIDENCE = {
    "child-d": "structure-seeds: columns - single weights at density 0.05, seeds 0-2, RTE -0.72, "
               "MRPC +0.22, STS-B +0.01, CoLA +5.27 (no cost on any task)",
    "child-f": "structure-seeds: columns - single weights at density 0.05, seeds 0-2, STS-B -14.24 "
               "[-18.87, -9.61] (a cost), RTE +0.12, MRPC -0.34: single weights",
    "dps": "structure-seeds: columns - single weights at density 0.05, seeds 0-2, RTE +1.68, "
           "MRPC +0.30, STS-B -0.21, CoLA +0.10 (no cost on any task)",
}


@dataclasses.dataclass(frozen=True)
class SparseOptions(MethodOptions):
    density: float = option(0.05, "servable sparse budget (default 0.05)", type=float)
    mask_structure: str | None = option(
        None, "servable child-d/child-f/dps: columns (whole input columns of each matrix: a "
        "small dense product when served) or entries (single weights: a sparse product); "
        "default per method, see --defaults", choices=STRUCTURES)
    # the structure a servable run of this method uses when --mask-structure is not given
    servable_structure: ClassVar[str] = "entries"

    def __post_init__(self) -> None:
        from polyhead.engine.sparse import SparseConfig  # the sparse kind's own limits

        kind_config(lambda: SparseConfig(density=self.density,
                                         structure=self.servable()),
                    "--density/--mask-structure")

    def servable(self) -> str:
        """The servable recipe's mask structure: --mask-structure, else the method's default."""
        return self.mask_structure or self.servable_structure

    def structure(self, cfg: TrainConfig) -> str:
        """The mask's structure for this run: single weights in the paper recipe."""
        return "entries" if cfg.paper else self.servable()

    def record(self, cfg: TrainConfig) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "mask_structure": self.structure(cfg)}

    @classmethod
    def record_defaults(cls) -> dict[str, Any]:
        return {**super().record_defaults(), "mask_structure": "entries"}  # no mask: no columns

    def check(self, cfg: TrainConfig) -> None:
        if self.mask_structure == "columns" and cfg.paper:
            raise TrainConfigError("--mask-structure columns applies to the servable recipe of "
                                   "child-d, child-f and dps")

    def export_density(self, cfg: TrainConfig) -> float:
        """The stored diff's density: the budget (servable) or every weight (paper)."""
        return 1.0 if cfg.paper else self.density
