"""Datasets uploaded to a server for training jobs: checked with the readers and column flags
`polyhead train` uses, before they are stored (torch-free: the server's RPCs import it).

A dataset's id is content-addressed over its bytes, its format and its column flags: the
same file read the same way is one dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from polyhead.trainer.data import Columns, DataError, Dataset, default_text_column, load_dataset

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
SUFFIX = {"tsv": ".tsv", "csv": ".csv", "jsonl": ".jsonl"}


@dataclasses.dataclass(frozen=True)
class ColumnFlags:
    """`polyhead train`'s data flags, as given (empty: the same default)."""

    text_col: str = ""
    pair_col: str = ""
    label_col: str = ""
    no_header: bool = False
    regression: bool = False

    def columns(self, path: Path) -> Columns:
        """The Columns `polyhead train` reads ``path`` with (ValueError for bad flags)."""
        text = self.text_col or default_text_column(path)
        return Columns(text=_column(text), label=_column(self.label_col or "label"),
                       pair=_column(self.pair_col) if self.pair_col else None,
                       header=not self.no_header, regression=self.regression)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnFlags:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def _column(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def format_of(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(filename, None, f"unknown format {suffix or '(no suffix)'!r}: name the file "
                        "*.tsv, *.csv or *.jsonl")
    return FORMATS[suffix]


def dataset_id(data: bytes, fmt: str, flags: ColumnFlags, labels_from: list[str] | None = None) -> str:
    """The content address of an upload: its bytes, format and column flags, and for a dev
    set read with another dataset's labels (``labels_from``), those labels, which its record
    keeps: the same file uploaded with other labels, or none, is another dataset."""
    h = hashlib.sha256()
    head: list[object] = [fmt, flags.to_dict()]
    if labels_from is not None:
        head.append(labels_from)
    h.update(json.dumps(head, sort_keys=True).encode())
    h.update(b"\0")
    h.update(data)
    return "ds-" + h.hexdigest()[:32]


def read_dataset(filename: str, data: bytes, flags: ColumnFlags,
                 labels: list[str] | None = None) -> Dataset:
    """The examples of an uploaded file, checked as `polyhead train` checks its files; a dev
    set passes the train set's ``labels``. DataError naming ``filename`` and the line."""
    fmt = format_of(filename)
    _check_text(filename, data)
    with tempfile.TemporaryDirectory(prefix="polyhead-dataset-") as tmp:
        path = Path(tmp) / ("data" + SUFFIX[fmt])
        path.write_bytes(data)
        try:
            return load_dataset(path, flags.columns(path), labels)
        except DataError as e:
            raise DataError(filename, e.line, e.message) from None
        except ValueError as e:  # bad column flags
            raise DataError(filename, None, f"column flags: {e}") from None


def _check_text(filename: str, data: bytes) -> None:
    """Binary data is named by its line before any reader sees it."""
    if not data.strip():
        raise DataError(filename, 1, "the file is empty (no rows)")
    nul = data.find(b"\0")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = e.start if nul < 0 else min(e.start, nul)
        raise DataError(filename, data.count(b"\n", 0, bad) + 1,
                        f"not UTF-8 text (byte {data[bad]:#04x} at offset {bad}): binary data?") from None
    if nul >= 0:
        raise DataError(filename, data.count(b"\n", 0, nul) + 1, "a NUL byte: binary data?")
