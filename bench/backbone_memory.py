"""What a served backbone holds in memory, by precision (and code tree).

    python -m bench.backbone_memory
    python -m bench.backbone_memory --trees /tmp/before . --repeats 2

Each (tree, precision) runs in a fresh process that sets the allocator as the Serve
replica does (polyhead.engine.memory), loads the backbone as the replica does
(``load_backbone(precision=P)``: fp32 prepacked, or int8), and serves one forward of 64
mixed-length rows with no task. It prints:

  tensors MB     bytes of every tensor the backbone holds: the model's parameters and
                 buffers (meta tensors hold none) and its serving kernels' weights, each
                 storage counted once (oneDNN's opaque prepacked weights by their size)
  RSS load MB    the process's resident memory after the load (imports included)
  of it, file MB the part that is the backbone folder's files mapped into memory (Rss of
                 their mappings in /proc/self/smaps: transformers maps safetensors weights
                 from the file, so these are clean page-cache pages, shared by every process
                 that maps the same file and reclaimable by the kernel)
  RSS serve MB   after the forward
  peak MB        the process's peak resident memory (ru_maxrss)

--trees runs the same child in other checkouts (e.g. a git worktree of an older commit):
the child imports polyhead from the tree given (PYTHONPATH), so the rows compare code.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
WORDS = "the film was a quiet delight though its second half drags on far too long for me".split()


def held_bytes(bb: object) -> int:
    """Bytes of the distinct storages the backbone's model and kernels hold."""
    import torch

    model = bb.model  # type: ignore[attr-defined]
    tensors = [*model.parameters(), *model.buffers()]
    linears = getattr(bb, "linears", None)
    for value in getattr(linears, "weights", {}).values():
        tensors += [t for t in value if isinstance(t, torch.Tensor)]
    seen: dict[int, int] = {}
    for t in tensors:
        if t.is_meta:
            continue
        try:
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
        except NotImplementedError:  # oneDNN's prepacked weight: opaque, counted by its size
            seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def file_mapped_mb(folder: Path) -> float:
    """Resident kB of this process's mappings of the files in ``folder`` (each resolved: a
    Hugging Face cache links them into blobs/), in MB."""
    files = {str(p.resolve()) for p in folder.rglob("*") if p.is_file()}
    total, current = 0, ""
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
                current = head[5] if len(head) > 5 else ""
            elif head and head[0] == "Rss:" and current in files:
                total += int(head[1])
    return total / 1024


def child(precision: str) -> None:
    import torch

    import polyhead
    from polyhead.engine import Engine, load_backbone
    from polyhead.engine.memory import keep_freed_memory

    torch.set_num_threads(1)
    keep_freed_memory()
    bb = load_backbone(precision=precision)
    loaded, mapped = rss_mb(), file_mapped_mb(bb.path)
    texts = [" ".join(WORDS[: 3 + (i * 7) % len(WORDS)]) for i in range(64)]
    engine = Engine(bb, max_batch_size=64)
    with torch.inference_mode():
        engine.run(texts, [None] * len(texts))
    print(json.dumps({"tree": str(Path(polyhead.__file__).parents[1]), "tensors": held_bytes(bb) / 2**20,
                      "rss_load": loaded, "file": mapped, "rss_serve": rss_mb(),
                      "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run(tree: Path, precision: str) -> dict[str, float | str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, str(HERE), "--child", precision], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trees", nargs="+", type=Path, default=[HERE.parents[1]],
                    help="code trees to compare (default: this one)")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--repeats", type=int, default=1, help="processes per row (medians)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    print("| tree | precision | tensors MB | RSS load MB | of it, file MB | RSS serve MB | peak MB |\n"
          "|---|---|---:|---:|---:|---:|---:|")
    for precision in args.precisions.split(","):
        for tree in args.trees:
            rows = [run(tree.resolve(), precision) for _ in range(args.repeats)]
            if any(r["tree"] != str(tree.resolve()) for r in rows):
                raise SystemExit(f"{tree}: the child imported polyhead from {rows[0]['tree']}")
            med = {k: statistics.median(float(r[k]) for r in rows)
                   for k in ("tensors", "rss_load", "file", "rss_serve", "peak")}
            print(f"| {tree} | {precision} | {med['tensors']:.1f} | {med['rss_load']:.0f} | "
                  f"{med['file']:.0f} | {med['rss_serve']:.0f} | {med['peak']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
