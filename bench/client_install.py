"""The client-only install, measured: `pip install polyhead` without the server extras.

    python -m bench.client_install [--calls 300] [--concurrency 8]

Builds the wheel from this checkout (as tests/test_client_install.py does), installs it
into a fresh venv (its grpcio and protobuf from the package index, through pip's cache),
and prints: the wheel's size; the venv's size (du) and the install's wall time; the time
of `import polyhead; from polyhead import Client` in a fresh interpreter, in the
client-only venv and in this (full) venv; then Client against AsyncClient on one
`polyhead serve` with the packaged backbone and its shipped `sentiment` example: --calls
Classify calls of one sentence each, the sync client one after another, the async client
one after another and --concurrency at a time. Wall clock throughout (time.perf_counter);
the server, the clients and the machine's other work share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What pip prints when it cannot reach a package index (the caller may skip, not fail).
OFFLINE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
           "No matching distribution found")
IMPORT = "import polyhead; from polyhead import Client"


class InstallUnavailable(RuntimeError):
    """pip could not fetch the client's dependencies (no package index reachable)."""


def build_wheel(out: Path) -> Path:
    """The polyhead wheel, built from a copy of pyproject.toml, README.md and polyhead/
    (so the checkout gets no build/ or egg-info), without fetching a build backend where
    this interpreter's setuptools is new enough."""
    ctx = out / "context"
    ctx.mkdir(parents=True)
    shutil.copytree(ROOT / "polyhead", ctx / "polyhead",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, ctx / name)
    from importlib.metadata import version

    isolation = [] if int(version("setuptools").split(".")[0]) < 77 else ["--no-build-isolation"]
    pip([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation,
         "-w", str(out / "dist"), str(ctx)], "pip wheel")
    (wheel,) = (out / "dist").glob("polyhead-*.whl")
    return wheel


def pip(argv: list[str], what: str) -> None:
    """Run pip; InstallUnavailable when it could not reach a package index."""
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        if any(s in out.stderr for s in OFFLINE):
            raise InstallUnavailable(out.stderr.strip().splitlines()[-1])
        raise RuntimeError(f"{what} failed:\n{out.stderr}")


def client_venv(where: Path, wheel: Path) -> float:
    """A fresh venv at ``where`` with the wheel and its dependencies (grpcio, protobuf) and
    nothing else; the install's wall seconds. InstallUnavailable when pip cannot reach an
    index."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=300)
    t0 = time.perf_counter()
    pip([str(where / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         str(wheel)], f"pip install {wheel.name}")
    return time.perf_counter() - t0


def du(path: Path) -> int:
    """Bytes on disk under ``path`` (as `du -sk`)."""
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) * 1024


def import_ms(python: Path | str, runs: int = 7) -> float:
    """Median milliseconds of IMPORT in a fresh interpreter, timed inside it."""
    code = f"import time; t = time.perf_counter(); {IMPORT}; print(time.perf_counter() - t)"
    times = [float(subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                                  check=True, cwd=tempfile.gettempdir()).stdout) for _ in range(runs)]
    return 1000 * statistics.median(times)


def sync_rate(address: str, task: str, texts: list[str]) -> float:
    from polyhead import Client

    with Client(address, token="") as c:
        c.classify(task, texts[0])  # warm: channel up, task resident
        t0 = time.perf_counter()
        for t in texts:
            c.classify(task, t)
        return len(texts) / (time.perf_counter() - t0)


async def async_rate(address: str, task: str, texts: list[str], concurrency: int) -> float:
    from polyhead import AsyncClient

    async with AsyncClient(address, token="") as c:
        await c.classify(task, texts[0])
        queue = list(texts)

        async def worker() -> None:
            while queue:
                await c.classify(task, queue.pop())

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(texts) / (time.perf_counter() - t0)


def throughput(calls: int, concurrency: int, work: Path) -> dict[str, float]:
    from bench.serve import Server

    texts = [f"review {i}: the film was {'good' if i % 2 else 'dull'}" for i in range(calls)]
    server = Server(work / "store", replicas=1, log=work / "serve.log", probe_task="sentiment",
                    examples=True)
    try:
        load = os.getloadavg()[0]
        out = {"sync": sync_rate(server.address, "sentiment", texts),
               "async_1": asyncio.run(async_rate(server.address, "sentiment", texts, 1)),
               f"async_{concurrency}": asyncio.run(async_rate(server.address, "sentiment", texts,
                                                              concurrency)),
               "load_before": load, "load_after": os.getloadavg()[0]}
    finally:
        server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="client-install-") as tmp:
        work = Path(tmp)
        wheel = build_wheel(work / "wheel")
        venv = work / "venv"
        seconds = client_venv(venv, wheel)
        bare = work / "bare"
        subprocess.run([sys.executable, "-m", "venv", str(bare)], check=True)
        rows = [("wheel", f"{wheel.stat().st_size / 1024:.0f} KiB", wheel.name),
                ("client-only venv (du)", f"{du(venv) / 2**20:.1f} MiB",
                 f"a bare venv (pip, setuptools) is {du(bare) / 2**20:.1f} MiB"),
                ("install wall time", f"{seconds:.1f} s", "pip install <wheel>, pip's cache warm"),
                ("full venv site-packages (du)", f"{du(full_site_packages()) / 2**20:,.0f} MiB",
                 "torch, Ray, transformers, ... (shared with this venv)"),
                (f"`{IMPORT}`, client-only", f"{import_ms(venv / 'bin' / 'python'):.0f} ms",
                 "median of 7 fresh interpreters"),
                (f"`{IMPORT}`, full venv", f"{import_ms(sys.executable):.0f} ms", "same")]
        rates = throughput(args.calls, args.concurrency, work)
    for name, value, note in rows:
        print(f"| {name} | {value} | {note} |")
    sync = rates["sync"]
    for name, rate in rates.items():
        if not name.startswith("load"):
            print(f"| Classify calls/s, {name} | {rate:.1f} | x{rate / sync:.2f} of sync |")
    print(f"| load average (1 min) before / after | {rates['load_before']:.1f} / "
          f"{rates['load_after']:.1f} | |")


def full_site_packages() -> Path:
    """Where torch is installed: the full venv's packages."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    assert spec is not None and spec.origin is not None, "the full venv has torch"
    return Path(spec.origin).parents[1]


if __name__ == "__main__":
    main()
