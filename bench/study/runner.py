"""The runner: plans run in order by one process or by N workers sharing the results file.

Each run is claimed by a lock file in ``<results>.running/`` (the holder's pid and plan),
so no two workers train the same one; a claim whose holder died is taken over. A run
whose key is in the results file is never run again, so a stopped study resumes where it
stopped. A worker reaching a plan waits while another trains a run of a plan it depends on.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.study.choices import full_missed_floors
from bench.study.plans import PLANS, PlanRefused, plan
from bench.study.records import Record, append, done_keys, load_results
from bench.study.runs import TASKS, Run, checkpoint_of, record_of, train_config

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def commit_of(folder: Path) -> str:
    """The code's git commit (+ '-dirty' when polyhead/trainer/, polyhead/engine/ or the study
    differ from it), read once per process (``execute`` reads it when it has imported the
    code): a worker's records name the code it runs, whatever is merged meanwhile."""
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *a], capture_output=True, text=True).stdout.strip()

    sha = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "polyhead/trainer", "polyhead/engine", "bench/accuracy.py",
                "bench/study")
    return sha + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    import torch

    return {"host": platform.node(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "load_avg": [round(x, 2) for x in os.getloadavg()],
            "nice": os.nice(0)}


def run_one(args: argparse.Namespace, run: Run, backbone: Any, cache: dict[Any, Any]) -> Record:
    """Train ``run`` on --data's GLUE files; its record (without the plan)."""
    from polyhead.trainer.presets import load_preset
    from polyhead.trainer.run import train

    folder = args.data / TASKS[run.task]
    tr, dv, metric = load_preset(run.task, folder / "train.tsv", folder / "dev.tsv")
    cfg = train_config(run)
    mach = machine()
    t0 = time.time()
    res = train(cfg, backbone, tr, dv, metric, progress=False, head_cache=cache, export=False,
                log_fn=lambda s: print(f"  {run.task} {s}", flush=True),
                checkpoint=checkpoint_of(args.results, run))
    return record_of(run, cfg, res, metric, time.time() - t0, commit_of(REPO), mach)


# -- claims: one worker a run --------------------------------------------------------------


def running_dir(results: Path) -> Path:
    return results.with_name(results.name + ".running")


def _holder(lock: Path) -> tuple[int, str] | None:
    """(pid, plan) of a claim whose holder is alive; None for a dead or vanished one."""
    try:
        pid, _, plan_name = lock.read_text().partition(" ")
        os.kill(int(pid or 0), 0)
        return int(pid), plan_name
    except (ProcessLookupError, ValueError, FileNotFoundError):
        return None


def claim(results: Path, key: str, plan_name: str = "") -> Path | None:
    """Take ``key`` for this process (a lock file beside the results, holding our pid and
    the plan); None when a live process holds it. A dead holder's claim is taken over."""
    folder = running_dir(results)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / (hashlib.sha1(key.encode()).hexdigest()[:16] + ".pid")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _holder(lock) is not None:
                return None  # a live process trains it
            lock.unlink(missing_ok=True)  # its holder died: take it over
            continue
        os.write(fd, f"{os.getpid()} {plan_name}".encode())
        os.close(fd)
        return lock
    return None


def busy_plans(results: Path) -> set[str]:
    """The plans of the runs other live processes are training now."""
    folder = running_dir(results)
    held = (_holder(lock) for lock in folder.glob("*.pid")) if folder.is_dir() else ()
    return {h[1] for h in held if h is not None and h[0] != os.getpid()}


def wait_for(name: str, results: Path, poll: float = 20.0, on_itself: bool = False) -> None:
    """Block while another worker trains a run plan ``name`` depends on (``on_itself``:
    or a run of ``name`` itself)."""
    said = False
    while busy := busy_plans(results) & {*PLANS[name].depends, *((name,) if on_itself else ())}:
        if not said:
            print(f"== plan {name!r} waits for the runs of {', '.join(sorted(busy))} in flight", flush=True)
            said = True
        time.sleep(poll)


# -- the study -----------------------------------------------------------------------------


def execute(args: argparse.Namespace) -> None:
    """Run --plan's plans in order (--workers processes, each this command with --workers 1)."""
    if args.workers > 1:
        _spawn_workers(args.workers)
    import torch

    import polyhead.trainer.run  # noqa: F401  (the code this process runs, before its commit is read)
    from polyhead.engine import load_backbone

    torch.set_num_threads(args.threads)
    commit_of(REPO)
    backbone = load_backbone()
    caches: dict[str, dict[Any, Any]] = {}
    done_new = 0
    for name, again in [(p, again) for p in args.plan
                        for again in ((False, True) if PLANS[p].extending else (False,))]:
        # (a pilot that can extend its search runs twice: the second time, once every
        # worker's runs of it are in, it plans the point past an end its best landed on)
        wait_for(name, args.results, on_itself=again)
        try:
            results = load_results(args.results, precision=args.precision)
            runs = plan(name, args, results)  # a gated plan refuses any floor missed and not accepted
        except PlanRefused as e:
            print(f"== plan {name!r} skipped: {e}", flush=True)
            continue
        accepted = full_missed_floors(results) if PLANS[name].gated else []
        if accepted:
            print(f"== plan {name!r} runs with full under its floor on {', '.join(accepted)} "
                  f"(--accept-missed-floor)", flush=True)
        for run in runs:
            rec = run_claimed(args, name, run, accepted, lambda r: run_one(
                args, r, backbone, caches.setdefault(r.task, {})))
            if rec is None:
                continue
            print(f"   {run.key}: {rec['metric']} {rec['value']:.2f} in {rec['seconds']}s "
                  f"({rec['tokens_per_s']:.0f} tokens/s)", flush=True)
            done_new += 1
            if args.limit is not None and done_new >= args.limit:
                return


def run_claimed(args: argparse.Namespace, name: str, run: Run, accepted: list[str],
                train: Any) -> Record | None:
    """Train ``run`` (``train(run)`` -> its record) for plan ``name`` and append its record,
    unless it is done or another live worker holds it (None)."""
    if run.key in done_keys(args.results):
        return None
    lock = claim(args.results, run.key, name)
    if lock is None:
        return None  # another worker trains it
    try:
        if run.key in done_keys(args.results):
            return None  # finished by another worker since the check above
        print(f"== {run.key}", flush=True)
        rec: Record = train(run)
        rec["pilot"] = name.startswith("pilot")
        rec["plan"] = "diag" if run.diag else ("claims" if name in ("diag", "claims-full") else name)
        if accepted:
            rec["accepted_missed_floors"] = accepted
        append(args.results, rec)
        return rec
    finally:
        lock.unlink(missing_ok=True)


def _spawn_workers(n: int) -> None:
    """Run this command as ``n`` one-worker processes sharing the results file; exit with
    the worst of their exit codes."""
    cmd = [sys.executable, "-m", "bench.accuracy", *worker_argv(sys.argv[1:])]
    procs = [subprocess.Popen(cmd) for _ in range(n)]
    try:
        sys.exit(max(p.wait() for p in procs))
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise


def worker_argv(argv: list[str]) -> list[str]:
    """``argv`` without its --workers option (a worker is one process)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers="):
            out.append(a)
    return out
