"""The results file: one JSON object a line, appended whole by whichever worker finished."""

from __future__ import annotations

import dataclasses
import fcntl
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Record = dict[str, Any]  # one line of the results file, as written


@dataclasses.dataclass(frozen=True)
class Result:
    """One finished run as the plans and the report read it back: the record's fields
    they use, typed (``config``: the trainer's whole configuration, as recorded)."""

    task: str
    name: str  # the row: method, EH-FT stage, servable density (Run.name)
    method: str
    recipe: str
    seed: int
    pilot: bool
    value: float  # the headline dev metric x100, last epoch
    lr: float
    epochs: float
    plan: str = "claims"  # "diag": a diagnostic run, kept out of the tables
    key: str = ""
    metric: str = ""
    precision: str = "fp32"
    density: float = 0.05
    mask_structure: str = "entries"
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    commit: str = ""
    dev_history: tuple[Mapping[str, float], ...] = ()  # each epoch's dev metrics and train loss
    cut_value: float | None = None  # child-f servable: the cut model's dev metric x100
    cut_rule: str = ""
    accepted_missed_floors: tuple[str, ...] = ()
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, r: Record) -> Result:
        """The result of a results-file line (records before the ``plan`` field came from
        the full pilot or the claims; before ``precision``, fp32)."""
        c = r["config"]
        return cls(task=r["task"], name=r["name"], method=r["method"], recipe=r["recipe"], seed=r["seed"],
                   pilot=r["pilot"], value=r["value"], lr=c["lr"], epochs=c["epochs"],
                   plan=r.get("plan", "pilot-full" if r["pilot"] else "claims"), key=r.get("key", ""),
                   metric=r.get("metric", ""), precision=c.get("precision", "fp32"),
                   density=c.get("density", 0.05), mask_structure=c.get("mask_structure", "entries"),
                   seconds=r.get("seconds", 0.0), tokens_per_s=r.get("tokens_per_s", 0.0),
                   commit=r.get("commit", ""), dev_history=tuple(r.get("dev_history", ())),
                   cut_value=r.get("cut_value"), cut_rule=r.get("cut_rule", ""),
                   accepted_missed_floors=tuple(r.get("accepted_missed_floors", ())), config=c)


def load_results(path: Path, diag: bool = False, precision: str | None = None) -> list[Result]:
    """The study's results (``diag``: the diagnostic runs instead), of one ``precision``
    (None: all)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            r = Result.of(json.loads(line))
            if (r.plan == "diag") == diag and precision in (None, r.precision):
                out.append(r)
    return out


def done_keys(path: Path) -> set[str]:
    """The keys of every run in ``path``, diagnostic ones included."""
    return {r.key for r in load_results(path) + load_results(path, diag=True)}


def append(results: Path, rec: Record) -> None:
    """Add ``rec`` as one whole line (the file is locked while it is written)."""
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # one whole line at a time, whichever worker writes
        f.write(json.dumps(rec, sort_keys=True) + "\n")
