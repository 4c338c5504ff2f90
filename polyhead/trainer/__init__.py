"""Offline training: datasets, the methods' training rules, metrics and `polyhead train`.

Names load on first use (as in ``methods``), so that `polyhead train --help` and the
checks of its arguments run without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyhead._lazy import lazy_exports

if TYPE_CHECKING:
    from polyhead.trainer.config import TrainConfig, TrainConfigError
    from polyhead.trainer.data import Columns, DataError, Dataset, Example, load_dataset
    from polyhead.trainer.run import TrainResult, train
    from polyhead.trainer.table import METHODS

_WHERE = {
    "TrainConfig": ".config", "TrainConfigError": ".config",
    "Columns": ".data", "DataError": ".data", "Dataset": ".data",
    "Example": ".data", "load_dataset": ".data",
    "TrainResult": ".run", "train": ".run", "METHODS": ".table",
}
__all__ = ["METHODS", "Columns", "DataError", "Dataset", "Example", "TrainConfig",
           "TrainConfigError", "TrainResult", "load_dataset", "train"]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
