"""The results file: one JSON object a line, appended whole by whichever worker finished."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

Record = dict[str, Any]  # one line of the results file, as written


def precision_of(r: Record) -> str:
    """A record's training precision (records before the field trained in fp32)."""
    return str(r.get("config", {}).get("precision", "fp32"))


def load_results(path: Path, diag: bool = False, precision: str | None = None) -> list[Record]:
    """The study's records (``diag``: the diagnostic runs instead), of one ``precision``
    (None: all). Records written before the ``plan`` field came from the full pilot."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            r.setdefault("plan", "pilot-full" if r["pilot"] else "claims")
            if (r["plan"] == "diag") == diag and precision in (None, precision_of(r)):
                out.append(r)
    return out


def done_keys(path: Path) -> set[str]:
    """The keys of every run in ``path``, diagnostic ones included."""
    return {r["key"] for r in load_results(path) + load_results(path, diag=True)}


def append(results: Path, rec: Record) -> None:
    """Add ``rec`` as one whole line (the file is locked while it is written)."""
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # one whole line at a time, whichever worker writes
        f.write(json.dumps(rec, sort_keys=True) + "\n")
