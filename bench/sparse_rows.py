"""Sparse rows: what one Linear's weight diffs cost for the sparse rows of a batch, by
representation, against the base Linear on the same rows.

    python -m bench.sparse_rows --clock cpu

n rows (default 13: about a fifth of a 64-row batch; bench.engine's mix has 12), each of its own
task, T tokens each, MiniLM's Linear shapes (or --hidden/--intermediate), random entries
at each density. Representations:
  csr-block  the engine's: all rows' entries as one block-diagonal CSR, one product
  csr-loop   one CSR product per task (the engine before slot tables)
  dense-bmm  a densified tier: each task's dense dW, gathered by slot, one batched product
  dense-loop a densified tier: each task's dense dW, one product per task
  columns    the engine's column form (a column-structured mask, --mask-structure
             columns): each task's k = density x in whole input columns; the rows'
             features at those columns gathered, times each task's (k, out) block, one
             batched product (its own random columns, floor(entries / out) of them)
Bytes per task and Linear: CSR int32 index + value per entry and a row start per output
row; columns: an int64 index per column + its out values; dense: out x in values.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def timer(clock: Callable[[], float], reps: int) -> Callable[[Callable[[], object]], float]:
    def run(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(reps):
            t0 = clock()
            fn()
            times.append(clock() - t0)
        return statistics.median(times) * 1000

    return run


def entries(out: int, inp: int, density: float, tasks: int,
            g: torch.Generator) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per task: (row, col, value) of density * out * inp entries, sorted row-major."""
    e = int(density * out * inp)
    res = []
    for _ in range(tasks):
        flat = torch.randperm(out * inp, generator=g)[:e].sort().values
        res.append((flat // inp, flat % inp, torch.randn(e, generator=g)))
    return res


def representations(x: Tensor, out: int, ents: list[tuple[Tensor, Tensor, Tensor]]
                    ) -> dict[str, Callable[[], object]]:
    n, T, inp = x.shape
    counts = torch.stack([torch.bincount(r, minlength=out) for r, _, _ in ents]).int()
    cols = torch.stack([c for _, c, _ in ents]).int()
    vals = torch.stack([v for _, _, v in ents])
    sel = torch.arange(n)
    csrs = [torch.sparse_coo_tensor(torch.stack([r, c]), v, (out, inp)).coalesce().to_sparse_csr()
            for r, c, v in ents]
    dense = torch.stack([torch.zeros(out, inp).index_put_((r, c), v) for r, c, v in ents])

    def csr_block() -> Tensor:
        per_row = counts[sel].reshape(-1)
        crow = per_row.new_zeros(len(per_row) + 1)
        torch.cumsum(per_row, 0, dtype=torch.int32, out=crow[1:])
        col = (cols[sel] + torch.arange(n, dtype=torch.int32)[:, None] * inp).reshape(-1)
        m = torch.sparse_csr_tensor(crow, col, vals[sel].reshape(-1), (n * out, n * inp))
        return (m @ x.transpose(1, 2).reshape(n * inp, T)).view(n, out, T).transpose(1, 2)

    k = max(1, len(ents[0][0]) // out)  # whole columns holding as many entries
    col_idx = torch.stack([torch.randperm(inp)[:k] for _ in range(n)])
    blocks = torch.randn(n, k, out)

    def columns() -> Tensor:
        feats = torch.gather(x, 2, col_idx[sel][:, None, :].expand(n, T, k))
        return torch.bmm(feats, blocks[sel])

    return {
        "csr-block": csr_block,
        "columns": columns,
        "csr-loop": lambda: [torch.sparse.mm(csrs[s], x[s].t()).t() for s in range(n)],
        "dense-bmm": lambda: torch.bmm(x, dense[sel].transpose(1, 2)),
        "dense-loop": lambda: [F.linear(x[s], dense[s]) for s in range(n)],
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=13)
    ap.add_argument("--tokens", type=int, default=17, help="T per row (SST-2 dev: mean ~25)")
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--intermediate", type=int, default=1536)
    ap.add_argument("--densities", default="0.01,0.05")
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
    warnings.filterwarnings("ignore", "Sparse invariant checks")
    run = timer(time.thread_time if args.clock == "cpu" else time.perf_counter, args.reps)
    g = torch.Generator().manual_seed(0)
    d, m = args.hidden, args.intermediate
    print(f"rows={args.rows} tokens={args.tokens} clock={args.clock} threads=1 fp32; "
          "cost: % of the base Linear on the same rows; bytes per task and Linear")
    print("| Linear (out x in) | density | base ms | csr-block | columns | csr-loop | dense-bmm "
          "| dense-loop | CSR bytes | columns bytes | dense bytes |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for out, inp in ((d, d), (m, d), (d, m)):
        for density in (float(s) for s in args.densities.split(",")):
            x = torch.randn(args.rows, args.tokens, inp, generator=g)
            w = torch.randn(out, inp, generator=g)
            base = run(lambda x=x, w=w: F.linear(x, w))
            ents = entries(out, inp, density, args.rows, g)
            cost = {k: run(fn) / base * 100 for k, fn in representations(x, out, ents).items()}
            e = int(density * out * inp)
            print(f"| {out} x {inp} | {density:.0%} | {base:.2f} | "
                  + " | ".join(f"{v:.0f} %" for v in cost.values())
                  + f" | {8 * e + 4 * out:,} | {(8 + 4 * out) * max(1, e // out):,} "
                  f"| {4 * out * inp:,} |")


if __name__ == "__main__":
    main()
