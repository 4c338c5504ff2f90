"""GLUE presets: columns, label names and metric for the original GLUE TSV files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from polyhead.trainer.data import Columns, Dataset, load_train_dev


@dataclasses.dataclass(frozen=True)
class Preset:
    columns: Columns
    labels: tuple[str, ...] | None  # the files' label values in output order; None: regression
    metric: str  # the task's headline dev metric
    names: tuple[str, ...] | None = None  # what labels[i] is called in artifacts and answers


PRESETS: dict[str, Preset] = {
    "sst2": Preset(Columns("sentence", "label"), ("0", "1"), "accuracy", ("negative", "positive")),
    # CoLA has no header: source, label, original label, sentence
    "cola": Preset(Columns(3, 1, header=False), ("0", "1"), "mcc", ("unacceptable", "acceptable")),
    "mrpc": Preset(Columns("#1 String", "Quality", "#2 String"), ("0", "1"), "f1",
                   ("not_equivalent", "equivalent")),
    "rte": Preset(Columns("sentence1", "label", "sentence2"), ("entailment", "not_entailment"), "accuracy"),
    "stsb": Preset(Columns("sentence1", "score", "sentence2", regression=True), None, "pearson"),
    "qnli": Preset(Columns("question", "label", "sentence"), ("entailment", "not_entailment"), "accuracy"),
}

# each preset's folder in the GLUE distribution (<glue>/<folder>/train.tsv and dev.tsv)
GLUE_FOLDERS = {"sst2": "SST-2", "cola": "CoLA", "mrpc": "MRPC", "rte": "RTE", "stsb": "STS-B",
                "qnli": "QNLI"}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None


def load_preset(name: str, train: str | Path, dev: str | Path,
                metric: str | None = None) -> tuple[Dataset, Dataset, str]:
    """GLUE task ``name``'s train and dev files read with its preset (columns, label names),
    and its metric (``metric``: another, checked against the task type)."""
    from polyhead.trainer.metrics import check_metric

    preset = get_preset(name)
    train_set, dev_set = load_train_dev(train, dev, preset.columns, preset.labels, preset.names)
    return train_set, dev_set, check_metric(metric or preset.metric, train_set.regression)
