"""Offline training: datasets, the methods' training rules, metrics and `polyhead train`."""

from trainer.config import TrainConfig, TrainConfigError
from trainer.data import Columns, DataError, Dataset, Example, load_dataset
from trainer.run import TrainResult, train
from trainer.table import METHODS

__all__ = ["METHODS", "Columns", "DataError", "Dataset", "Example", "TrainConfig",
           "TrainConfigError", "TrainResult", "load_dataset", "train"]
