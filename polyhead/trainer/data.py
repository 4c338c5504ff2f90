"""Training data: GLUE presets and generic TSV/CSV/JSONL files -> examples with labels.

Every malformed row raises DataError naming the file and the (1-based) line.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

Column = str | int  # a header name, or a 0-based index for header-less files
# The text column when none is named: the first of these the file's header has (the
# README's own example data has `sentence`; GLUE's single-sentence tasks do too).
TEXT_NAMES = ("text", "sentence")


class DataError(ValueError):
    """A data file is missing, unreadable or has a malformed row."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.message = str(path), line, message


@dataclasses.dataclass(frozen=True)
class Example:
    text: str
    pair: str | None
    label: str | float  # canonical label string (classification) or score (regression)


@dataclasses.dataclass(frozen=True)
class Columns:
    """Where the fields are and how labels read; validated on construction."""

    text: Column
    label: Column
    pair: Column | None = None
    header: bool = True
    regression: bool = False

    def __post_init__(self) -> None:
        cols = [c for c in (self.text, self.pair, self.label) if c is not None]
        if not self.header and not all(isinstance(c, int) for c in cols):
            raise ValueError("a file without a header needs integer column indices")
        if len(set(cols)) != len(cols):
            raise ValueError(f"text, pair and label columns must differ, got {cols}")


@dataclasses.dataclass
class Dataset:
    examples: list[Example]
    labels: list[str] | None  # class names in output order; None for regression
    label_type: str  # "str" | "int" | "bool" | "float"

    @property
    def regression(self) -> bool:
        return self.labels is None

    @property
    def inputs(self) -> str:
        """"pair" or "single": what the task takes; servers check requests against it."""
        return "pair" if any(e.pair is not None for e in self.examples) else "single"

    @property
    def num_outputs(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    def targets(self) -> list[int] | list[float]:
        if self.labels is None:
            return [float(e.label) for e in self.examples]
        index = {name: i for i, name in enumerate(self.labels)}
        return [index[str(e.label)] for e in self.examples]

    def renamed(self, names: Sequence[str]) -> Dataset:
        """The same rows with labels[i] called names[i] (e.g. SST-2's 0/1 -> negative/positive)."""
        if self.labels is None or len(names) != len(self.labels):
            raise ValueError(f"{len(names)} label names for labels {self.labels}")
        name = dict(zip(self.labels, names, strict=True))
        rows = [dataclasses.replace(e, label=name[str(e.label)]) for e in self.examples]
        return Dataset(rows, list(names), "str")

    def subsample(self, n: int | None, seed: int) -> Dataset:
        """A seeded random subset of n examples (all of them when n is None or larger)."""
        if n is None or n >= len(self.examples):
            return self
        rows = random.Random(seed).sample(range(len(self.examples)), n)
        return Dataset([self.examples[i] for i in sorted(rows)], self.labels, self.label_type)


def canonical_label(value: Any) -> tuple[str, str]:
    """(label string, its type): bools -> "true"/"false", ints -> "3", strings stripped."""
    if isinstance(value, bool):
        return ("true" if value else "false"), "bool"
    if isinstance(value, int):
        return str(value), "int"
    if isinstance(value, str):
        return value.strip(), "str"
    raise TypeError(f"label {value!r} is not a string, int or bool")


def _sort_key(label: str, label_type: str) -> tuple[int, Any]:
    if label_type == "int":
        return (0, int(label))
    if label_type == "bool":
        return (0, label == "true")
    return (1, label)


def infer_label_type(labels: Sequence[str], types: set[str]) -> str:
    """"bool"/"int" if every label reads as one (JSON types or text like 0/1, true/false)."""
    if types and types <= {"bool"}:
        return "bool"
    if types and types <= {"int"}:
        return "int"
    if all(x.lstrip("-").isdigit() for x in labels):
        return "int"
    if all(x.lower() in ("true", "false") for x in labels):
        return "bool"
    return "str"


def default_text_column(path: str | Path) -> str:
    """The text column for a file when none is named: the first of TEXT_NAMES in its header
    (TSV/CSV) or first JSON object; else "text", which the load then reports missing."""
    names = _first_names(Path(path))
    return next((n for n in TEXT_NAMES if n in names), TEXT_NAMES[0])


def _first_names(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            first = next((line for line in f if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return []  # the load names the problem
    if path.suffix.lower() in (".jsonl", ".json"):
        try:
            row = json.loads(first)
        except (json.JSONDecodeError, RecursionError):
            return []  # the load names the problem
        return list(row) if isinstance(row, dict) else []
    cells = next(csv.reader([first])) if path.suffix.lower() == ".csv" else first.split("\t")
    return [c.strip() for c in cells]


def read_rows(path: Path, columns: Columns) -> Iterator[tuple[int, dict[Column, Any]]]:
    """(line number, row) for each data row; a row maps column names or indices to values."""
    if not path.is_file():
        raise DataError(path, None, "no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            yield from _read_jsonl(path)
        else:
            yield from _read_delimited(path, columns, "," if suffix == ".csv" else "\t")
    except UnicodeDecodeError as e:
        raise DataError(path, None, f"not UTF-8 text: {e}") from e
    except csv.Error as e:  # e.g. a field over csv's limit (131,072 characters), as it words it
        raise DataError(path, None, f"not readable as CSV: {e}") from e


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[Column, Any]]]:
    with path.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, n, f"not valid JSON: {e.msg}") from e
            except RecursionError:
                raise DataError(path, n, "JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise DataError(path, n, "each line must be a JSON object")
            yield n, row


def _read_delimited(path: Path, columns: Columns, sep: str) -> Iterator[tuple[int, dict[Column, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        if sep == "\t":  # GLUE TSVs carry unescaped quotes: split on tabs, no quoting
            lines: Iterator[list[str]] = (line.rstrip("\r\n").split("\t") for line in f)
        else:
            lines = csv.reader(f)
        header: list[str] | None = None
        for n, cells in enumerate(lines, 1):
            if not cells or cells == [""]:
                continue
            if columns.header and header is None:
                header = [c.strip() for c in cells]
                _check_header(path, header, columns)
                continue
            if header is not None and len(cells) != len(header):
                raise DataError(path, n, f"expected {len(header)} fields, found {len(cells)}")
            row: dict[Column, Any] = dict(enumerate(cells))
            if header is not None:
                row.update(zip(header, cells, strict=True))
            yield n, row


def _check_header(path: Path, header: list[str], columns: Columns) -> None:
    """Every named column is in ``header``; else one error naming all that are not."""
    wanted = [(c, role) for c, role in ((columns.text, "text"), (columns.pair, "pair"),
                                        (columns.label, "label")) if isinstance(c, str)]
    named = [f"no column {c!r}" + (" (nor 'sentence')" if role == "text" and c == TEXT_NAMES[0] else "")
             for c, role in wanted if c not in header]
    if named:
        raise DataError(path, 1, f"{', '.join(named)} in header {header}")


def load_dataset(path: str | Path, columns: Columns, labels: Sequence[str] | None = None) -> Dataset:
    """Read every example; ``labels`` fixes the class names and order (e.g. the train set's)."""
    path = Path(path)
    examples: list[Example] = []
    types: set[str] = set()
    allowed = None if labels is None else frozenset(labels)  # (a list's `in`: quadratic)
    for n, row in read_rows(path, columns):
        text = _field(path, n, row, columns.text, "text")
        pair = _field(path, n, row, columns.pair, "pair") if columns.pair is not None else None
        raw = _field(path, n, row, columns.label, "label", allow_any=True)
        if columns.regression:
            label: str | float = _score(path, n, raw)
        else:
            try:
                label, kind = canonical_label(raw)
            except TypeError as e:
                raise DataError(path, n, str(e)) from e
            if not label:
                raise DataError(path, n, "empty label")
            if allowed is not None and label not in allowed:
                assert labels is not None
                shown = list(labels)[:10]
                more = f" and {len(labels) - 10:,} more" if len(labels) > 10 else ""
                raise DataError(path, n, f"label {label!r:.80} is not one of {shown}{more}")
            types.add(kind)
        examples.append(Example(text, pair, label))
    if not examples:
        raise DataError(path, None, "no examples")
    if columns.regression:
        return Dataset(examples, None, "float")
    seen = sorted({str(e.label) for e in examples})
    label_type = infer_label_type(seen, types)
    if labels is None:
        labels = sorted(seen, key=lambda x: _sort_key(x, label_type))
    return Dataset(examples, list(labels), label_type)



def load_train_dev(train: str | Path, dev: str | Path, columns: Columns,
                   labels: Sequence[str] | None = None,
                   names: Sequence[str] | None = None) -> tuple[Dataset, Dataset]:
    """A train and a dev set read with the same columns: the dev set's classes are the
    train set's (``labels`` fixes them, e.g. a preset's file values); ``names`` then renames
    them in both (what each class is called in artifacts and answers)."""
    train_set = load_dataset(train, columns, labels)
    dev_set = load_dataset(dev, columns, train_set.labels)
    if names is not None:
        train_set, dev_set = train_set.renamed(names), dev_set.renamed(names)
    return train_set, dev_set

def _field(path: Path, n: int, row: dict[Column, Any], col: Column | None, what: str,
           allow_any: bool = False) -> Any:
    if col not in row:
        raise DataError(path, n, f"missing {what} column {col!r}")
    value = row[col]
    if allow_any:
        return value
    if not isinstance(value, str):
        raise DataError(path, n, f"{what} column {col!r} is not a string: {value!r}")
    if not value.strip():
        raise DataError(path, n, f"empty {what} in column {col!r}")
    return value


def _score(path: Path, n: int, raw: Any) -> float:
    if isinstance(raw, bool):
        raise DataError(path, n, f"score {raw!r} is not a number")
    try:
        value = float(raw)
    except (TypeError, ValueError) as e:
        raise DataError(path, n, f"score {raw!r} is not a number") from e
    if value != value or value in (float("inf"), float("-inf")):
        raise DataError(path, n, f"score {raw!r} is not finite")
    return value
