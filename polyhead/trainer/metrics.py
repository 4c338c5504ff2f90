"""Dev metrics: accuracy, F1, Matthews correlation (classification); Pearson, Spearman (scores)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

CLASSIFICATION = ("accuracy", "f1", "mcc")
REGRESSION = ("pearson", "spearman")


def compute_metrics(logits: np.ndarray, targets: Sequence[float] | Sequence[int],
                    regression: bool) -> dict[str, float]:
    """All metrics of the task type; F1 is binary (positive = class 1) or macro for > 2 classes."""
    y = np.asarray(targets)
    if regression:
        pred = logits.reshape(-1)
        if np.std(pred) == 0 or np.std(y) == 0:  # correlation undefined: report 0
            return {"pearson": 0.0, "spearman": 0.0}
        return {"pearson": float(pearsonr(pred, y)[0]), "spearman": float(spearmanr(pred, y)[0])}
    pred = logits.argmax(axis=-1)
    binary = logits.shape[-1] == 2
    f1 = f1_score(y, pred, average="binary" if binary else "macro", zero_division=0.0)
    return {"accuracy": float(accuracy_score(y, pred)), "f1": float(f1),
            "mcc": float(matthews_corrcoef(y, pred))}


def check_metric(name: str, regression: bool) -> str:
    allowed = REGRESSION if regression else CLASSIFICATION
    if name not in allowed:
        kind = "regression" if regression else "classification"
        raise ValueError(f"metric {name!r} does not apply to {kind}; choose from {', '.join(allowed)}")
    return name
