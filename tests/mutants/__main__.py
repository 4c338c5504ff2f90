"""The mutation check: every planted bug in ``tests/mutants/m_*.py`` must be caught.

    .venv/bin/python -m tests.mutants            # all mutants, 2 at a time
    .venv/bin/python -m tests.mutants ID ...     # some of them (ids or id prefixes)
    .venv/bin/python -m tests.mutants --list     # ids, files and tests

For each mutant the tree (without .git and .venv) is copied to a temporary directory, the
mutant's edit is applied there (its ``old`` text must occur exactly once, or the check
fails naming it) and ``python -m pytest <its tests>`` runs in the copy with this venv's
python. To save start-up, each run is a process forked from a forkserver that has the heavy
third-party libraries (torch, transformers, scikit-learn...) loaded, never this tree's own
packages (``tests/mutants/child.py``; ``--spawn``: a fresh python per run, twice the CPU).
The copy's own modules are the ones imported: pytest runs from the copy with the copy
first on ``sys.path`` and PYTHONPATH, and a guard plugin (``-p tests.mutants.guard``,
loaded from the copy) stops the run with exit code 99 unless ``polyhead`` (and its
subpackages), ``bench`` and ``tests`` all come from the copy. A mutant is killed when
its tests fail (exit 1, or 2 for an error while collecting); it survived when they pass
(exit 0); any other outcome (a test id that does not exist, the guard, a timeout) is an
error. First, the same tests run once on an
unmutated copy and must pass, so that a test which fails anyway (e.g. only in a copy)
cannot count as a kill. The check exits 1 naming every mutant that survived or erred.

Why a small harness and not mutmut: mutmut generates its own operator mutants for every
line it can (for ~9,400 lines of polyhead/, thousands, each
run against the tests that cover it: hours here, not minutes) and runs them through its own
rewritten copy of the source; its equivalent and trivial mutants would need triage on every
change. Here the mutants are chosen by hand as realistic bugs (the probe's fifteen
and the ones fixed since), each with the tests that must catch it, so that all of them run
in CI within minutes on two cores; a kept list also makes "every bug fixed adds its
mutant" a one-line change that review can read. What is needed from a tool is only: copy,
edit, run pytest, compare exit codes — about 300 lines with the forkserver and the guard.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import multiprocessing
import os
import pkgutil
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.mutants import Mutant, child

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache",
                              ".mypy_cache", "*.egg-info", "polyhead-store", "build", "dist")
TIMEOUT_S = 300  # one mutant's tests; a hang is an error, not a kill
BASELINE_TIMEOUT_S = 1200  # every mutant's tests in one run
GUARD_EXIT = 99  # tests/mutants/guard.py: a module was imported from outside the copy
# Forked from a server with torch & co. loaded (tests/mutants/child.py); --spawn: a fresh
# python per run instead (~2x the CPU time)
FORKSERVER = multiprocessing.get_context("forkserver")
SPAWN = False


@dataclass
class Outcome:
    mutant: Mutant
    verdict: str  # "killed", "survived" or "error"
    seconds: float
    detail: str


def load_mutants() -> list[Mutant]:
    """Every ``MUTANTS`` of ``tests/mutants/m_*.py``; ids must be unique."""
    out: list[Mutant] = []
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if info.name.startswith("m_"):
            out += importlib.import_module(f"tests.mutants.{info.name}").MUTANTS
    seen: set[str] = set()
    for m in out:
        if m.id in seen:
            raise SystemExit(f"mutant id {m.id!r} is defined twice")
        seen.add(m.id)
    return out


def edit_problem(m: Mutant, root: Path = ROOT) -> str | None:
    """Why ``m`` cannot be applied to ``root`` (None: ``old`` occurs exactly once)."""
    path = root / m.file
    if not path.is_file():
        return f"{m.file} does not exist"
    n = path.read_text().count(m.old)
    return None if n == 1 else f"its old text occurs {n} times in {m.file} (must be once)"


def copy_tree(dest: Path) -> Path:
    tree = dest / "tree"
    shutil.copytree(ROOT, tree, ignore=SKIP, symlinks=True)
    return tree


def pytest_in(tree: Path, tests: Sequence[str], timeout_s: float = TIMEOUT_S) -> tuple[int, str]:
    """Run ``tests`` with this venv's python from ``tree``: (exit code, output tail)."""
    env = {"PYTHONPATH": str(tree),  # for processes tests start
           "POLYHEAD_MUTANT_TREE": str(tree)}
    # -x: the first failure kills the mutant; the anyio and hypothesis plugins cost 1.3 s of
    # start-up per run and no mutant's tests need them (hypothesis runs without its plugin),
    # nor xdist's (execnet's import, ~50 ms a run)
    args = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:anyio", "-p", "no:hypothesispytest",
            "-p", "no:xdist",
            "-p", "tests.mutants.guard", "--durations=0", "--durations-min=1000", *tests]
    log = tree.parent / "pytest.log"
    if SPAWN:
        with log.open("w") as out:
            try:
                rc = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=tree,
                                    env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                    timeout=timeout_s).returncode
            except subprocess.TimeoutExpired:
                rc = -1
    else:
        proc = FORKSERVER.Process(target=child.run, args=(str(tree), args, env, str(log)))
        proc.start()
        proc.join(timeout_s)
        if proc.is_alive():
            proc.kill()
            proc.join()
        rc = -1 if proc.exitcode is None or proc.exitcode < 0 else proc.exitcode
    out = log.read_text(errors="replace") if log.exists() else ""
    return rc, (out if rc != -1 else f"timed out after {timeout_s:g} s\n{out}")[-3000:]


def first_failure(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    return lines[0] if lines else output.strip().splitlines()[-1] if output.strip() else ""


def run_mutant(m: Mutant) -> Outcome:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{m.id}-") as tmp:
        tree = copy_tree(Path(tmp))
        problem = edit_problem(m, tree)
        if problem is not None:
            return Outcome(m, "error", time.monotonic() - t0, problem)
        path = tree / m.file
        path.write_text(path.read_text().replace(m.old, m.new))
        rc, out = pytest_in(tree, m.tests)
    dt = time.monotonic() - t0
    if rc in (1, 2):
        return Outcome(m, "killed", dt, first_failure(out))
    if rc == 0:
        return Outcome(m, "survived", dt, "its tests passed with the bug planted")
    return Outcome(m, "error", dt, f"pytest exit {rc}: {out}")


def baseline(mutants: Sequence[Mutant]) -> Outcome | None:
    """The mutants' tests on an unmutated copy: they must pass (None when they do)."""
    tests = sorted({t for m in mutants for t in m.tests})
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutant-baseline-") as tmp:
        rc, out = pytest_in(copy_tree(Path(tmp)), tests, BASELINE_TIMEOUT_S)
    probe = Mutant("(baseline: no mutation)", "", "", "", tuple(tests))
    print(f"baseline: {len(tests)} test ids on an unmutated copy, exit {rc}, "
          f"{time.monotonic() - t0:.0f} s", flush=True)
    return None if rc == 0 else Outcome(probe, "error", time.monotonic() - t0,
                                        f"pytest exit {rc}: {out}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__.split("\n")[0])
    ap.add_argument("ids", nargs="*", help="mutant ids or id prefixes (default: all)")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="mutants at a time (default 2)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    ap.add_argument("--spawn", action="store_true",
                    help="a fresh python per run instead of forks of a preloaded server")
    args = ap.parse_args(argv)
    global SPAWN
    SPAWN = args.spawn
    # before the forkserver starts: its imports (torch, transformers) read these
    os.environ.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    FORKSERVER.set_forkserver_preload([*child.PRELOAD, "tests.mutants.child"])
    mutants = [m for m in load_mutants() if not args.ids or m.id.startswith(tuple(args.ids))]
    if args.list:
        for m in mutants:
            print(f"{m.id}\t{m.file}\t{' '.join(m.tests)}\t{m.why}")
        return 0
    if not mutants:
        print("no mutant matches", args.ids)
        return 1
    bad = [Outcome(m, "error", 0.0, p) for m in mutants if (p := edit_problem(m)) is not None]
    t0 = time.monotonic()
    with ThreadPoolExecutor(args.jobs) as pool:
        base = pool.submit(baseline, mutants) if not args.no_baseline else None
        todo = [m for m in mutants if m not in {o.mutant for o in bad}]
        outcomes = list(pool.map(lambda m: report(run_mutant(m)), todo))
    if base is not None and (b := base.result()) is not None:
        bad.append(b)
    outcomes += bad
    return summary(outcomes, time.monotonic() - t0, cpu_seconds())


def cpu_seconds() -> tuple[float, float]:
    """(user, system) CPU seconds of this check: this process, the runs it waited for,
    and the forkserver with the runs forked from it (read before it stops)."""
    import resource
    from multiprocessing import forkserver

    import psutil

    user = sys_ = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        user, sys_ = user + r.ru_utime, sys_ + r.ru_stime
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid is not None:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            user += t.user + t.children_user
            sys_ += t.system + t.children_system
    return user, sys_


def report(o: Outcome) -> Outcome:
    print(f"{o.verdict:8} {o.mutant.id:32} {o.seconds:5.0f} s  {o.detail.splitlines()[0][:120]}"
          if o.detail else f"{o.verdict:8} {o.mutant.id}", flush=True)
    return o


def summary(outcomes: Sequence[Outcome], seconds: float, cpu: tuple[float, float]) -> int:
    killed = sum(o.verdict == "killed" for o in outcomes)
    failed = [o for o in outcomes if o.verdict != "killed"]
    print(f"\nmutation check: {killed} of {len(outcomes)} killed in {seconds:.0f} s wall, "
          f"{cpu[0]:.0f} s user + {cpu[1]:.0f} s system CPU")
    for o in failed:
        print(f"\n{o.verdict.upper()}: {o.mutant.id} ({o.mutant.file}) {o.mutant.why}\n"
              f"  tests: {' '.join(o.mutant.tests)}\n  {o.detail}")
    if failed:
        print("\nmutants not killed: " + ", ".join(o.mutant.id for o in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
