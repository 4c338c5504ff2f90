"""What each method's artifact costs to store and ship: `polyhead train` with each method's
defaults (each recipe; the sparse methods at two densities) on the default backbone, its
file's bytes and the numbers it stores.

    HF_HUB_OFFLINE=1 python -m bench.artifact_bytes [--backbone DIR]

Size does not depend on what is learned, so each run is 30 steps (10 epochs, batch 2) over
six sentences written here (no dataset is read): enough for DPS to pick its masks (a
1-step run stores no encoder entries: its first stage only accumulates). The table also
gives each file against the store's default size cap (``polyhead.store.header.DEFAULT_MAX_BYTES``;
`--max-upload-bytes` moves it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import tempfile
from pathlib import Path

from safetensors import safe_open

from polyhead.cli import main as polyhead
from polyhead.store.header import DEFAULT_MAX_BYTES

SENTENCES = ("a warm and lovely film", "the plot was dull and tired", "bright clever writing",
             "i want those two hours back", "the cast shines in every scene", "a flat lifeless mess")

# (method, recipe, density): the sparse methods' servable artifacts depend on --density
RUNS = [("pasta", "servable", None), ("prefix", "servable", None), ("lora", "servable", None),
        ("bitfit", "servable", None), *[(m, "servable", d) for d in (0.05, 0.01)
                                        for m in ("child-d", "child-f", "dps")],
        ("full", "servable", None), *[(m, "paper", None) for m in ("full", "child-d", "child-f", "dps")]]


def stored_numbers(path: Path) -> int:
    """Every number in the artifact's tensors (sparse indices included)."""
    with safe_open(str(path), "pt") as f:
        names = f.keys()  # (a safe_open handle is not iterable)
        return sum(math.prod(f.get_slice(k).get_shape()) for k in names)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", help="a local Hugging Face encoder folder (default: the packaged one)")
    args = p.parse_args(argv)
    rows = ["| method | recipe | density | stored numbers | file bytes | MiB | under the default cap |",
            "|---|---|---|---:|---:|---:|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "d.tsv"
        data.write_text("text\tlabel\n" + "".join(f"{s}\t{'positive' if i % 2 == 0 else 'negative'}\n"
                                                  for i, s in enumerate(SENTENCES)))
        for method, recipe, density in RUNS:
            out = Path(tmp) / f"{method}-{recipe}-{density}.polyhead"
            argv_ = ["train", "--method", method, "--recipe", recipe, "--train", str(data),
                     "--dev", str(data), "--epochs", "10", "--batch-size", "2", "--out", str(out), "--quiet"]
            argv_ += ["--density", str(density)] if density else []
            argv_ += ["--backbone", args.backbone] if args.backbone else []
            with contextlib.redirect_stdout(io.StringIO()):
                rc = polyhead(argv_)
            if rc != 0:
                raise SystemExit(f"polyhead {' '.join(argv_)} exited {rc}")
            size = out.stat().st_size
            rows.append(f"| {method} | {recipe} | {density if density else '—'} | {stored_numbers(out):,} | "
                        f"{size:,} | {size / 2**20:.2f} | {'yes' if size <= DEFAULT_MAX_BYTES else 'no'} |")
            out.unlink()
    print(f"default store cap: {DEFAULT_MAX_BYTES:,} bytes\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
