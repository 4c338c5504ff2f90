"""`polyhead store ...`: inspect and change the local artifact store.

The store is a folder (SQLite + blob files) or a postgresql:// URL (rows and bytes in
PostgreSQL), from --store or $POLYHEAD_STORE. list/show/history/rollback/alias/delete/
restore/deleted/gc/copy touch only the catalog and never import torch; import-peft, publish
and verify load the backbone to check tensors against it (publishes also run the probe
forward: logits on fixed inputs must be finite).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyhead._words import counted
from polyhead.store.catalog import (
    DEFAULT_RETENTION_S,
    Catalog,
    VersionInfo,
    copy_rest,
    default_location,
    iter_copy,
    open_catalog,
)
from polyhead.store.errors import StoreError
from polyhead.store.header import read_manifest_json
from polyhead.store.names import LATEST

if TYPE_CHECKING:
    from polyhead.engine.backbone import Backbone
    from polyhead.store.store import Store

Command = Callable[[argparse.Namespace], int]


def register(subparsers: Any) -> None:
    """Add the ``store`` verb to the ``polyhead`` parser."""
    root_help = "store folder or postgresql:// URL (default: $POLYHEAD_STORE or ./polyhead-store)"
    parser = subparsers.add_parser("store", help="inspect and change the artifact store",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", dest="store_root", metavar="STORE", default=None, help=root_help)
    common = argparse.ArgumentParser(add_help=False)  # --store also after the subcommand
    common.add_argument("--store", dest="store_root", metavar="STORE", default=argparse.SUPPRESS,
                        help=root_help)
    backbone = argparse.ArgumentParser(add_help=False)
    backbone.add_argument("--backbone", metavar="PATH", default=None,
                          help="backbone folder (default: the packaged all-MiniLM-L6-v2)")
    sub = parser.add_subparsers(dest="store_command", required=True, metavar="COMMAND")

    def add(name: str, func: Command, text: str, parents: list[argparse.ArgumentParser] | None = None,
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common, *(parents or [])], help=text, description=text)
        p.set_defaults(func=_guarded(func))
        return p

    p = add("list", _list, "one line per task: id, kind, latest version, aliases")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("show", _show, "a version's catalog entry and manifest")
    p.add_argument("task_id", help="the task's id")
    p.add_argument("ref", nargs="?", default=LATEST, help="alias, version (prefix) or vN")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("history", _history, "every version of a task, oldest first")
    p.add_argument("task_id", help="the task's id")
    p = add("rollback", _rollback, "point a task's 'latest' at another of its versions")
    p.add_argument("task_id", help="the task's id")
    p.add_argument("ref", help="alias, version (prefix) or vN")
    p = add("alias", _alias, "point an alias (e.g. 'stable') at a version")
    p.add_argument("task_id", help="the task's id")
    p.add_argument("alias", help="a name that starts with a letter (e.g. stable)")
    p.add_argument("ref", help="alias, version (prefix) or vN")
    p = add("delete", _delete, "delete a task: restorable (`restore`) for --retention-days, "
            "then `gc` purges it")
    p.add_argument("task_id", help="the task's id")
    p.add_argument("--retention-days", type=float, default=DEFAULT_RETENTION_S / 86400,
                   help="how long it stays restorable (default 7; 0: gone at the next gc)")
    p = add("restore", _restore, "bring back a deleted task (its latest delete, within retention)")
    p.add_argument("task_id", help="the task's id")
    add("deleted", _deleted, "deleted tasks still restorable, and until when")
    add("gc", _gc, "purge deleted tasks past their retention and bytes nothing refers to")
    p = add("import-peft", _import_peft, "publish a PEFT LoRA adapter folder as a lora artifact",
            [backbone])
    p.add_argument("folder", type=Path, help="holds adapter_config.json + adapter_model.safetensors")
    p.add_argument("task_id", help="the task's id")
    p.add_argument("--labels", default=None,
                   help="comma-separated label names (default: LABEL_0..; 1 output: regression)")
    p.add_argument("--replace-kind", action="store_true",
                   help="allow it onto a task whose latest version is of another kind")
    p = add("publish", _publish, "validate and publish a .polyhead file", [backbone])
    p.add_argument("file", type=Path, help="a .polyhead file (`polyhead train --out` writes one)")
    p.add_argument("--replace-kind", action="store_true",
                   help="allow a version of another kind than the task's latest")
    p = add("copy", _copy, "copy every tenant (with its quotas), task, version, alias, API key, "
            "audit record and dataset from one store into another (not jobs) "
            "(idempotent, hashes checked; e.g. a folder into postgresql://...)")
    p.add_argument("src", help="the store to read: folder or postgresql:// URL")
    p.add_argument("dst", help="the store to write (created if need be)")
    p = add("verify", _verify, "check the catalog, every blob's hash and every artifact",
            [backbone])
    p.add_argument("--no-backbone", action="store_true",
                   help="check structure and hashes only (no backbone load)")


def _guarded(func: Command) -> Command:
    """Bad input is a one-line message on stderr and exit code 2, never a traceback."""
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (StoreError, ValueError, OSError) as e:  # ArtifactError, BackboneError: ValueError
            print(f"polyhead store {args.store_command}: error: {e}", file=sys.stderr)
            return 2
    return run


def _location(args: argparse.Namespace) -> str:
    return str(args.store_root) if args.store_root else default_location()


def _catalog(args: argparse.Namespace) -> Catalog:
    return open_catalog(_location(args), create=False)


def _store(args: argparse.Namespace, *, spec: bool, create: bool = False) -> Store:
    """With ``spec``: the backbone loaded, every publish checked against it and probed."""
    from functools import partial

    from polyhead.store.store import Store  # torch and the backbone: only for commands that need them

    if not spec:
        return Store(_location(args), None, create=create)
    from polyhead.engine.probe import probe_forward

    backbone = _backbone(args)
    return Store(_location(args), backbone.spec, create=create,
                 probe=partial(probe_forward, backbone))


def _backbone(args: argparse.Namespace) -> Backbone:
    from transformers.utils import logging as hf_logging

    from polyhead.engine import load_backbone

    hf_logging.disable_progress_bar()  # keep stderr for our one-line errors
    return load_backbone(args.backbone)


def _line(info: VersionInfo) -> str:
    return (f"v{info.number:<4} {info.short}  {info.created_at}  {info.kind:<7} "
            f"{info.nbytes:>10} B  {','.join(info.aliases)}").rstrip()


def _list(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    tasks = catalog.list_tasks()
    if args.json:
        print(json.dumps([dataclasses.asdict(t) for t in tasks], indent=2))
        return 0
    for t in tasks:
        numbers = {v.version: v.number for v in catalog.history(t.task_id)}
        aliases = ",".join(f"{a}->v{numbers[v]}" for a, v in sorted(t.aliases.items()))
        print(f"{t.task_id}  {t.kind}  v{t.latest.number}/{t.num_versions}  {t.latest.short}  "
              f"{t.latest.created_at}  aliases {aliases}")  # as they point (as `tasks list`)
    if not tasks:
        print(f"no tasks in {catalog.location}", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    info, data = _catalog(args).read_bytes(args.task_id, args.ref)
    manifest = read_manifest_json(data, max_bytes=len(data))
    if args.json:
        print(json.dumps({"version": dataclasses.asdict(info), "manifest": manifest}, indent=2))
        return 0
    print(f"task       {info.task_id}\nversion    v{info.number} {info.version}\n"
          f"aliases    {', '.join(info.aliases) or '-'}\nkind       {info.kind}\n"
          f"published  {info.created_at}\nbytes      {info.nbytes}\nmanifest")
    print(json.dumps(manifest, indent=2, sort_keys=True))
    return 0


def _history(args: argparse.Namespace) -> int:
    for info in _catalog(args).history(args.task_id):
        print(_line(info))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    info = _catalog(args).rollback(args.task_id, args.ref)
    print(f"{info.task_id}: latest -> v{info.number} ({info.short})")
    return 0


def _alias(args: argparse.Namespace) -> int:
    info = _catalog(args).set_alias(args.task_id, args.alias, args.ref)
    print(f"{info.task_id}: {args.alias} -> v{info.number} ({info.short})")
    return 0


def _delete(args: argparse.Namespace) -> int:
    gone = _catalog(args).delete(args.task_id, args.retention_days * 86400)
    print(f"deleted {args.task_id} ({counted(gone.num_versions, 'version')}); restorable until "
          f"{gone.expires_at} (`polyhead store restore {args.task_id}`)")
    return 0


def _restore(args: argparse.Namespace) -> int:
    info = _catalog(args).restore(args.task_id)
    print(f"restored {args.task_id}: latest -> v{info.number} ({info.short})")
    return 0


def _deleted(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    gone = catalog.deleted()
    for d in gone:
        print(f"{d.task_id}\t{counted(d.num_versions, 'version')}\tdeleted {d.deleted_at}\t"
              f"restorable until {d.expires_at}")
    if not gone:
        print(f"no deleted tasks in {catalog.location}", file=sys.stderr)
    return 0


def _gc(args: argparse.Namespace) -> int:
    gone = _catalog(args).gc()
    for item in gone:
        print(item)
    print(f"gc: {counted(len(gone), 'item')} removed from {_catalog(args).location}")
    return 0


def _import_peft(args: argparse.Namespace) -> int:
    labels = [x.strip() for x in args.labels.split(",")] if args.labels is not None else None
    if not args.folder.is_dir():  # before the slow backbone load
        raise StoreError(f"{args.folder}: not a folder")
    store = _store(args, spec=True, create=True)
    info = store.import_peft(args.folder, args.task_id, labels=labels, replace_kind=args.replace_kind)
    print(f"{info.task_id}: v{info.number} ({info.short}) published from {args.folder}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    data = args.file.read_bytes()
    info = _store(args, spec=True, create=True).publish(data, replace_kind=args.replace_kind)
    print(f"{info.task_id}: v{info.number} ({info.short}) published from {args.file}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    store = _store(args, spec=not args.no_backbone)
    problems = store.verify()
    for p in problems:
        print(p)
    if problems:
        print(f"{counted(len(problems), 'problem')} in {store.location}", file=sys.stderr)
        return 1
    versions = store.versions()
    tasks = counted(len({v.task_id for v in versions}), "task")
    print(f"ok: {counted(len(versions), 'version')} of {tasks} in {store.location}")
    return 0


def _copy(args: argparse.Namespace) -> int:
    src = open_catalog(args.src, create=False)
    dst = open_catalog(args.dst)
    if src.location == dst.location:
        raise StoreError(f"source and destination are the same store: {src.location}")
    new = old = 0
    for info, added in iter_copy(src, dst):
        new, old = new + added, old + (not added)
        if added:
            print(f"{info.task_id} v{info.number} ({info.short}) copied")
    tasks = len(src.list_tasks())
    rest = copy_rest(src, dst)
    print(f"copied {counted(new, 'version')} ({old} already there) of {counted(tasks, 'task')} from "
          f"{src.location} to {dst.location}; every hash checked")
    print(f"and {rest.keys} API keys (or their revocations), {rest.audit} audit records and "
          f"{rest.datasets} datasets new there (jobs are not copied)")
    return 0
