"""`polyhead jobs submit | list | show | watch | cancel`: training jobs on a running server.

`submit` uploads the data (the column flags as `polyhead train` takes them), creates the
job with the method's options (the flags and defaults of `polyhead train`) and prints its
id; with `--wait` it follows the job's events with a progress bar and exits 1 unless the
job published.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polyhead.client import PolyheadClient
from polyhead.client_cli import _common, _run

OPTION_PREFIX = "opt_"


def register(sub: argparse._SubParsersAction) -> None:
    from polyhead.trainer.jobspec import option_flags
    from polyhead.trainer.table import METHODS

    jobs = sub.add_parser("jobs", help="training jobs on a server: submit, list, show, watch, cancel")
    jsub = jobs.add_subparsers(dest="jobs_verb", required=True, metavar="ACTION")
    p = jsub.add_parser("submit", help="upload a dataset and train a task on the server",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--method", required=True, choices=list(METHODS),
                   help="the training method (`polyhead train --help` describes each)")
    p.add_argument("--task-id", required=True, help="the task the job publishes")
    p.add_argument("--train", required=True, type=Path, help="TSV, CSV or JSONL file")
    dev = p.add_mutually_exclusive_group(required=True)
    dev.add_argument("--dev", type=Path, help="dev file, same format and columns")
    dev.add_argument("--dev-fraction", type=float, help="hold out this seeded share of --train")
    data = p.add_argument_group("data (as polyhead train)")
    data.add_argument("--text-col", default="", help="text column: header name or 0-based index "
                      "(default: text, else sentence)")
    data.add_argument("--pair-col", default="", help="second-text column, for sentence pairs")
    data.add_argument("--label-col", default="", help="label column (default: label)")
    data.add_argument("--no-header", action="store_true", help="TSV/CSV without a header row")
    data.add_argument("--regression", action="store_true", help="labels are scores (1 output, MSE)")
    data.add_argument("--metric", default="", help="headline dev metric (default accuracy; pearson)")
    p.add_argument("--replace-kind", action="store_true",
                   help="publish even when the task's latest version is another kind")
    p.add_argument("--wait", action="store_true",
                   help="follow the job with a progress bar; exit 1 unless it publishes")
    opts = p.add_argument_group("method options (as polyhead train; default: the method's)")
    for name, action in option_flags().items():
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:
            opts.add_argument(flag, dest=OPTION_PREFIX + name, action="store_const", const="true",
                              help=action.help)
        else:
            opts.add_argument(flag, dest=OPTION_PREFIX + name, choices=action.choices,
                              help=action.help, metavar=action.metavar or name.upper())
    p.set_defaults(func=lambda a: _verb(a, _submit))
    _simple(jsub, "list", "one line per job, newest first", _list,
            lambda q: q.add_argument("--state", default="", help="only jobs in this state"))
    _simple(jsub, "show", "a job as JSON", _show, _job_arg)
    _simple(jsub, "watch", "follow a job's events until it ends", _watch, _job_arg)
    _simple(jsub, "cancel", "cancel a queued or running job", _cancel, _job_arg)


def _job_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", help="as `polyhead jobs submit` printed it, or `jobs list` shows it")


def _simple(jsub: Any, name: str, text: str, verb: Callable[[PolyheadClient, argparse.Namespace], int],
            add: Callable[[argparse.ArgumentParser], Any]) -> None:
    p = jsub.add_parser(name, help=text)
    _common(p)
    add(p)
    p.set_defaults(func=lambda a: _verb(a, verb))


def _verb(args: argparse.Namespace, verb: Callable[[PolyheadClient, argparse.Namespace], int]) -> int:
    """client_cli's error handling and exit codes, and the verb's own exit code."""
    rc = 0

    def call(client: PolyheadClient, a: argparse.Namespace) -> None:
        nonlocal rc
        rc = verb(client, a)

    return _run(args, call) or rc


def _submit(client: PolyheadClient, args: argparse.Namespace) -> int:
    flags = {"text_col": args.text_col, "pair_col": args.pair_col, "label_col": args.label_col,
             "no_header": args.no_header, "regression": args.regression}
    train = client.upload_dataset(args.train.read_bytes(), args.train.name, **flags)
    dev = (client.upload_dataset(args.dev.read_bytes(), args.dev.name, labels_from=(
        "" if args.regression else train["dataset_id"]), **flags) if args.dev else None)
    options = {k[len(OPTION_PREFIX):]: v for k, v in vars(args).items()
               if k.startswith(OPTION_PREFIX) and v is not None}
    job = client.create_job(args.task_id, args.method, train["dataset_id"],
                            dev_dataset=dev["dataset_id"] if dev else "",
                            dev_fraction=args.dev_fraction or 0.0, options=options,
                            metric=args.metric, replace_kind=args.replace_kind)
    print(job["job_id"], flush=True)
    if not args.wait:
        return 0
    return _follow(client, job["job_id"], bar=True)


def _follow(client: PolyheadClient, job_id: str, bar: bool) -> int:
    """Print (or show as a bar) the job's events; 0 if it published, else 1. Without tqdm
    (a client-only install) the events are printed as lines."""
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        bar = False
    progress = tqdm(total=0, desc=job_id, unit="step", file=sys.stderr) if bar else None
    last: dict[str, Any] = {}
    try:
        for e in client.watch_job(job_id):
            last = e
            if progress is None:
                print(describe_event(e), flush=True)
            elif e["kind"] == "step":
                progress.total = e["total_steps"]
                progress.update(e["step"] - progress.n)
            elif e["kind"] == "epoch":
                progress.set_postfix({"loss": f"{e['train_loss']:.4f}",
                                      e["metric"]: f"{e['metric_value']:.4f}"})
            else:
                progress.write(describe_event(e), file=sys.stdout)
    finally:
        if progress is not None:
            progress.close()
    return 0 if last.get("kind") == "published" else 1


def describe_event(e: dict[str, Any]) -> str:
    kind, what = e["kind"], ""
    if kind == "started":
        res = ", ".join(f"{k} {v:g}" for k, v in sorted(e["resources"].items()))
        what = f"on {e['node']} ({res}), attempt {e['attempt']}"
    elif kind == "step":
        what = f"{e['step']}/{e['total_steps']}"
    elif kind == "epoch":
        what = (f"{e['epoch']}: train loss {e['train_loss']:.4f}, dev {e['metric']} "
                f"{e['metric_value']:.4f}")
    elif kind == "published":
        what = f"v{e['version_number']} {e['version']}"
    elif kind in ("failed", "retrying", "cancelled"):
        what = e["reason"]
    return f"{e['at']} {kind} {what}".rstrip()


def _list(client: PolyheadClient, args: argparse.Namespace) -> int:
    for j in client.list_jobs(args.state):
        end = f"v{j['version_number']} {j['version'][:12]}" if j["state"] == "published" else j["reason"]
        print(f"{j['job_id']}  {j['state']:10s} {j['task_id']:20s} {j['method']:8s} "
              f"attempt {j['attempt']}  {j['created_at'][:19]}  {end}".rstrip())
    return 0


def _show(client: PolyheadClient, args: argparse.Namespace) -> int:
    print(json.dumps(client.get_job(args.job_id), indent=2, sort_keys=True))
    return 0


def _watch(client: PolyheadClient, args: argparse.Namespace) -> int:
    return _follow(client, args.job_id, bar=False)


def _cancel(client: PolyheadClient, args: argparse.Namespace) -> int:
    job = client.cancel_job(args.job_id)
    print(f"{job['job_id']} {job['state']}")
    return 0
