"""Offline training: datasets, the methods' training rules, metrics and `polyhead train`.

Names load on first use (as in ``methods``), so that `polyhead train --help` and the
checks of its arguments run without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from methods._lazy import lazy_exports

if TYPE_CHECKING:
    from trainer.config import TrainConfig, TrainConfigError
    from trainer.data import Columns, DataError, Dataset, Example, load_dataset
    from trainer.run import TrainResult, train
    from trainer.table import METHODS

_WHERE = {
    "TrainConfig": "trainer.config", "TrainConfigError": "trainer.config",
    "Columns": "trainer.data", "DataError": "trainer.data", "Dataset": "trainer.data",
    "Example": "trainer.data", "load_dataset": "trainer.data",
    "TrainResult": "trainer.run", "train": "trainer.run", "METHODS": "trainer.table",
}
__all__ = ["METHODS", "Columns", "DataError", "Dataset", "Example", "TrainConfig",
           "TrainConfigError", "TrainResult", "load_dataset", "train"]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
