"""`polyhead classify | upload | tasks ...`: client verbs against a running server."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from server.client import PolyheadClient, PolyheadError, TextInput
from server.config import TOKEN_ENV, saved_token

# Status codes that mean "the request was wrong" (exit 2) rather than "the server failed" (1).
_USER_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.ALREADY_EXISTS}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify a text (or a text pair) with a task")
    _common(p)
    p.add_argument("--task", required=True, help="task id")
    p.add_argument("--version", help="version hash (prefix), vN, or alias (default: latest)")
    p.add_argument("text", nargs="*", help="one or more texts")
    p.add_argument("--pair", help="second text of a pair (with exactly one text)")
    p.add_argument("--json", action="store_true", help="print the full JSON answer")
    p.add_argument("--file", help="bulk: one text, or a tab-separated pair, per line ('-': "
                   "stdin), streamed over ClassifyStream; writes one JSON line per input")
    p.add_argument("--out", help="with --file: write the JSON lines here (default stdout)")
    p.add_argument("--chunk", type=int, default=32,
                   help="with --file: inputs per stream message (<= the server's max inputs)")
    p.set_defaults(func=lambda a: _run(a, _classify))

    p = sub.add_parser("upload", help="upload a .polyhead artifact (publish a new version)")
    _common(p)
    p.add_argument("file", type=Path)
    p.add_argument("--replace-kind", action="store_true",
                   help="allow a version of another kind than the task's latest")
    p.set_defaults(func=lambda a: _run(a, _upload))

    tasks = sub.add_parser("tasks", help="list, show, roll back or delete served tasks")
    tsub = tasks.add_subparsers(dest="tasks_verb", required=True, metavar="ACTION")
    t = tsub.add_parser("list", help="one line per task: id, kind, latest version, aliases")
    _common(t)
    t.set_defaults(func=lambda a: _run(a, _list))
    t = tsub.add_parser("show", help="a task's versions, labels and manifest")
    _common(t)
    t.add_argument("task")
    t.set_defaults(func=lambda a: _run(a, _show))
    t = tsub.add_parser("rollback", help="make an earlier version the latest again")
    _common(t)
    t.add_argument("task")
    t.add_argument("version", help="version hash (prefix of >= 8) or vN")
    t.set_defaults(func=lambda a: _run(a, _rollback))
    t = tsub.add_parser("alias", help="point an alias at a version")
    _common(t)
    t.add_argument("task")
    t.add_argument("alias")
    t.add_argument("version")
    t.set_defaults(func=lambda a: _run(a, _alias))
    t = tsub.add_parser("delete", help="delete a task and all its versions")
    _common(t)
    t.add_argument("task")
    t.set_defaults(func=lambda a: _run(a, _delete))
    t = tsub.add_parser("import-peft", help="import a PEFT LoRA adapter folder as a task")
    _common(t)
    t.add_argument("folder", type=Path)
    t.add_argument("--task", required=True)
    t.add_argument("--labels", nargs="+", help="label names in the classifier's output order")
    t.add_argument("--replace-kind", action="store_true",
                   help="allow it onto a task whose latest version is of another kind")
    t.set_defaults(func=lambda a: _run(a, _import_peft))
    t = tsub.add_parser("restore", help="bring back a deleted task (within its retention)")
    _common(t)
    t.add_argument("task")
    t.set_defaults(func=lambda a: _run(a, _restore))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default="localhost:9000", help="HOST:PORT (default localhost:9000)")
    p.add_argument("--token", default=None, help=f"bearer token (default: ${TOKEN_ENV}, else the "
                   "token `polyhead serve` saved on this machine)")
    p.add_argument("--tls", action="store_true",
                   help="connect over TLS (to a Gateway/Ingress that terminates it), checking the "
                   "server certificate against the system's CA roots")
    p.add_argument("--ca", type=Path, default=None,
                   help="PEM file of CA certificates to check the server against (implies --tls)")


def _run(args: argparse.Namespace, verb: Callable[[PolyheadClient, argparse.Namespace], Any]) -> int:
    token = args.token or os.environ.get(TOKEN_ENV) or saved_token()
    prog = f"polyhead {args.verb}"
    tls = args.tls or args.ca is not None
    if token and not tls and not _is_loopback(args.server):
        print(f"{prog}: warning: sending the token to {args.server} without TLS (see --tls)",
              file=sys.stderr)
    try:
        with PolyheadClient(args.server, token, timeout_s=120.0, tls=tls, ca=args.ca) as client:
            verb(client, args)
    except PolyheadError as e:
        print(f"{prog}: {e.code.name}: {e.details}", file=sys.stderr)
        return 2 if e.code in _USER_ERRORS else 1
    except (OSError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    return 0


def _is_loopback(server: str) -> bool:
    host = server.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _classify(client: PolyheadClient, args: argparse.Namespace) -> None:
    if args.file is not None:
        if args.text or args.pair is not None:
            raise ValueError("--file takes the inputs from the file: give no texts or --pair")
        _classify_file(client, args)
        return
    if not args.text:
        raise ValueError("give one or more texts, or --file")
    if args.pair is not None and len(args.text) != 1:
        raise ValueError("--pair goes with exactly one text")
    inputs = [(args.text[0], args.pair)] if args.pair is not None else list(args.text)
    res = client.classify(args.task, inputs, version=args.version)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    for text, row in zip(args.text, res, strict=True):
        cut = "  (truncated)" if row["truncated"] else ""
        if "value" in row:
            print(f"{row['value']:.4f}\t{text}{cut}")
        else:
            print(f"{row['label']}\t{row['scores'][row['label']]:.3f}\t{text}{cut}")
    print(f"# {args.task} v{res[0]['version_number']} ({res[0]['version'][:12]})", file=sys.stderr)


def _classify_file(client: PolyheadClient, args: argparse.Namespace) -> None:
    """Stream every line through ClassifyStream; a JSON line per input, in order."""
    from tqdm import tqdm

    src = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    total = None if args.file == "-" else _count_lines(Path(args.file))
    dst = sys.stdout if args.out is None else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    n = 0
    try:
        with tqdm(total=total, unit="line", desc=args.task, file=sys.stderr,
                  disable=None) as bar:
            for n, row in enumerate(client.classify_stream(args.task, _lines(src), args.version,
                                                            chunk=args.chunk),
                                    start=1):
                dst.write(json.dumps({"line": n, **row}) + "\n")
                bar.update(1)
    finally:
        if src is not sys.stdin:
            src.close()
        if dst is not sys.stdout:
            dst.close()
    print(f"# {n} lines classified with {args.task}", file=sys.stderr)


def _lines(src: Any) -> Iterator[TextInput]:
    """Inputs from lines: "text" or "text<TAB>pair". An empty line is an error naming it
    (skipping it would shift every answer after it)."""
    for i, line in enumerate(src, start=1):
        line = line.rstrip("\r\n")
        text, tab, pair = line.partition("\t")
        if not text.strip() or (tab and not pair.strip()):
            raise ValueError(f"{getattr(src, 'name', 'input')}:{i}: empty text")
        yield (text, pair) if tab else text


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _upload(client: PolyheadClient, args: argparse.Namespace) -> None:
    v = client.upload(args.file.read_bytes(), replace_kind=args.replace_kind)
    print(f"{v['task_id']} v{v['number']} {v['version']} ({v['kind']}, {v['nbytes']} bytes)")


def _list(client: PolyheadClient, args: argparse.Namespace) -> None:
    for t in client.list_tasks():
        latest = t["latest"]
        aliases = ",".join(t["aliases"]) or "-"
        print(f"{t['task_id']}\t{t['kind']}\tv{latest['number']}\t{latest['version'][:12]}\t"
              f"{t['num_versions']} versions\taliases={aliases}")


def _show(client: PolyheadClient, args: argparse.Namespace) -> None:
    d = client.get_task(args.task)
    info = d["info"]
    print(f"{info['task_id']}  kind={info['kind']}  versions={info['num_versions']}  "
          f"labels={','.join(d['labels']) or '(regression)'}")
    for v in d["versions"]:
        latest = "  <- latest" if v["version"] == info["latest"]["version"] else ""
        aliases = f"  [{','.join(v['aliases'])}]" if v["aliases"] else ""
        print(f"  v{v['number']}  {v['version'][:12]}  {v['created_at']}{aliases}{latest}")
    manifest = json.loads(d["manifest_json"] or "{}")
    if manifest.get("metrics"):
        print(f"  metrics: {json.dumps(manifest['metrics'], sort_keys=True)}")


def _rollback(client: PolyheadClient, args: argparse.Namespace) -> None:
    v = client.rollback(args.task, args.version)
    print(f"{v['task_id']} latest is now v{v['number']} {v['version']}")


def _alias(client: PolyheadClient, args: argparse.Namespace) -> None:
    v = client.set_alias(args.task, args.alias, args.version)
    print(f"{v['task_id']} {args.alias} -> v{v['number']} {v['version']}")


def _delete(client: PolyheadClient, args: argparse.Namespace) -> None:
    client.delete(args.task)
    print(f"deleted {args.task}")


def _import_peft(client: PolyheadClient, args: argparse.Namespace) -> None:
    v = client.import_peft(args.folder, args.task, args.labels, replace_kind=args.replace_kind)
    print(f"{v['task_id']} v{v['number']} {v['version']} ({v['kind']})")


def _restore(client: PolyheadClient, args: argparse.Namespace) -> None:
    v = client.restore(args.task)
    print(f"restored {v['task_id']}: latest is v{v['number']} {v['version']}")
