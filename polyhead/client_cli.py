"""`polyhead classify | upload | tasks ...`: client verbs against a running server."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import ipaddress
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from polyhead._words import counted
from polyhead.client._common import (
    PolyheadError,
    TextInput,
    check_address,
    describe_version,
    error_text,
    rows_of,
)
from polyhead.client.sync import Client
from polyhead.client.tokens import TOKEN_ENV, find_token
from polyhead.v1 import polyhead_pb2 as pb

# Status codes that mean "the request was wrong" (exit 2) rather than "the server failed" (1).
_USER_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.ALREADY_EXISTS}


TASK_HELP = "task id (as `polyhead tasks list` shows it)"
VERSION_HELP = "a version: vN or N (its number), a hash prefix of >= 8 hex digits, or an alias"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify a text (or a text pair) with a task")
    _common(p)
    p.add_argument("--task", required=True, help="task id")
    p.add_argument("--version", help=VERSION_HELP + " (default: latest)")
    p.add_argument("text", nargs="*", help="one or more texts")
    p.add_argument("--pair", help="second text of a pair (with exactly one text)")
    p.add_argument("--json", action="store_true",
                   help="print the answer as JSON, as the HTTP route gives it (scores: a list in "
                   "`labels` order)")
    p.add_argument("--truncate", action="store_true",
                   help="cut a text over the server's limit (20,000 characters by default) and "
                   "mark it truncated, instead of refusing it")
    p.add_argument("--file", help="bulk: one text per line, or a tab-separated pair for a pair "
                   "task ('-': stdin); blank lines are skipped (and counted); streamed over "
                   "ClassifyStream; one JSON line per input, with its line number and text")
    p.add_argument("--out", help="with --file: write the JSON lines here (default stdout)")
    p.add_argument("--chunk", type=int, default=32,
                   help="with --file: inputs per stream message (<= the server's max inputs)")
    p.set_defaults(func=lambda a: _run(a, _classify))

    p = sub.add_parser("health", help="is the server up: its backbone, device and resident tasks")
    _common(p)
    p.add_argument("--json", action="store_true", help="print the HealthResponse as JSON")
    p.set_defaults(func=lambda a: _run(a, _health))

    p = sub.add_parser("upload", help="upload a .polyhead artifact (publish a new version)")
    _common(p)
    p.add_argument("file", type=Path, help="a .polyhead file (`polyhead train --out` writes one); "
                   "its manifest names the task")
    p.add_argument("--replace-kind", action="store_true",
                   help="allow a version of another kind than the task's latest")
    p.set_defaults(func=lambda a: _run(a, _upload))

    tasks = sub.add_parser("tasks", help="list, show, roll back or delete served tasks")
    tsub = tasks.add_subparsers(dest="tasks_verb", required=True, metavar="ACTION")
    t = tsub.add_parser("list", help="one line per task: id, kind, latest version, aliases -> versions")
    _common(t)
    t.set_defaults(func=lambda a: _run(a, _list))
    t = tsub.add_parser("show", help="a task's versions, labels and manifest")
    _common(t)
    t.add_argument("task", help=TASK_HELP)
    t.set_defaults(func=lambda a: _run(a, _show))
    t = tsub.add_parser("rollback", help="make an earlier version the latest again")
    _common(t)
    t.add_argument("task", help=TASK_HELP)
    t.add_argument("version", help=VERSION_HELP)
    t.set_defaults(func=lambda a: _run(a, _rollback))
    t = tsub.add_parser("alias", help="point an alias at a version")
    _common(t)
    t.add_argument("task", help=TASK_HELP)
    t.add_argument("alias", help="a name that starts with a letter (e.g. stable); `latest` is kept "
                   "by publishes and rollbacks")
    t.add_argument("version", help=VERSION_HELP)
    t.set_defaults(func=lambda a: _run(a, _alias))
    t = tsub.add_parser("delete", help="delete a task and all its versions (asks first)")
    _common(t)
    t.add_argument("task", help=TASK_HELP + " (restorable for the server's --delete-retention-days)")
    t.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    t.set_defaults(func=lambda a: _run(a, _delete))
    t = tsub.add_parser("import-peft", help="import a PEFT LoRA adapter folder as a task")
    _common(t)
    t.add_argument("folder", type=Path, help="the adapter's folder (adapter_config.json and "
                   "adapter_model.safetensors, as PEFT's save_pretrained writes it)")
    t.add_argument("--task", required=True, help="the task id to publish it as")
    t.add_argument("--labels", nargs="+", help="label names in the classifier's output order")
    t.add_argument("--replace-kind", action="store_true",
                   help="allow it onto a task whose latest version is of another kind")
    t.set_defaults(func=lambda a: _run(a, _import_peft))
    t = tsub.add_parser("restore", help="bring back a deleted task (within its retention)")
    _common(t)
    t.add_argument("task", help=TASK_HELP)
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


def _run(args: argparse.Namespace, verb: Callable[[Client, argparse.Namespace], Any]) -> int:
    token = find_token(args.token)
    prog = f"polyhead {args.verb}"
    tls = args.tls or args.ca is not None
    if token and not tls and not _is_loopback(args.server):
        print(f"{prog}: warning: sending the token to {args.server} without TLS (see --tls)",
              file=sys.stderr)
    try:
        with Client(check_address(args.server), token, timeout_s=120.0, tls=tls, ca=args.ca) as client:
            verb(client, args)
    except PolyheadError as e:
        details = e.details.replace("set `truncate`", "add --truncate")  # the API's word; the flag
        print(error_text(prog, args.server, e.code, details), file=sys.stderr)
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


def _classify(client: Client, args: argparse.Namespace) -> None:
    if args.file is not None:
        if args.text or args.pair is not None:
            raise ValueError("--file takes the inputs from the file: give no texts or --pair")
        _classify_file(client, args)
        return
    if not args.text:
        raise ValueError("give one or more texts, or --file")
    if args.pair is not None and len(args.text) != 1:
        raise ValueError("--pair goes with exactly one text")
    inputs: list[TextInput] = [(args.text[0], args.pair)] if args.pair is not None else list(args.text)
    res = client.classify_raw(args.task, inputs, version=args.version, truncate=args.truncate)
    if args.json:
        print(json.dumps(response_json(res), indent=2))
        return
    for x, row in zip(inputs, rows_of(res), strict=True):
        shown = x if isinstance(x, str) else f"{x[0]}\t{x[1]}"  # a pair: both texts
        cut = "  (truncated)" if row["truncated"] else ""
        if "value" in row:
            print(f"{row['value']:.4f}\t{shown}{cut}")
        else:
            print(f"{row['label']}\t{row['scores'][row['label']]:.3f}\t{shown}{cut}")
    print(f"# {args.task} v{res.version_number} ({res.version[:12]})", file=sys.stderr)


def response_json(res: pb.ClassifyResponse) -> dict[str, Any]:
    """ClassifyResponse as JSON, exactly as the HTTP route answers it: scores are a list in
    the order of `labels` (the one JSON shape of scores; docs: README 'HTTP')."""
    return json_format.MessageToDict(res, preserving_proto_field_name=True,
                                      always_print_fields_with_no_presence=True)


def row_json(line: int, x: TextInput, row: dict[str, Any]) -> dict[str, Any]:
    """One --file answer: its line and text, then the prediction with scores as a list in
    `labels` order (the shape of the HTTP answer's predictions)."""
    out: dict[str, Any] = {"line": line, "text": x if isinstance(x, str) else x[0]}
    if not isinstance(x, str):
        out["pair"] = x[1]
    if "value" in row:
        out["value"] = row["value"]
    else:
        out.update(label=row["label"], label_index=row["label_index"], labels=list(row["scores"]),
                   scores=list(row["scores"].values()))
    out.update(truncated=row["truncated"], version=row["version"],
               version_number=row["version_number"])
    return out


@dataclasses.dataclass
class FileInputs:
    """Inputs from lines: "text" or "text<TAB>pair"; blank lines skipped and counted. The line
    of each input not yet answered is kept, so an answer (or a refusal) names its line."""

    src: Any
    name: str
    blank: int = 0
    lines: collections.deque[tuple[int, TextInput]] = dataclasses.field(
        default_factory=collections.deque)

    def __iter__(self) -> Iterator[TextInput]:
        for i, line in enumerate(self.src, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                self.blank += 1
                continue
            text, tab, pair = line.partition("\t")
            if not text.strip() or (tab and not pair.strip()):
                raise ValueError(f"{self.name}:{i}: empty {'pair' if text.strip() else 'text'} "
                                 "beside a tab")
            x: TextInput = (text, pair) if tab else text
            self.lines.append((i, x))
            yield x

    def answered(self) -> tuple[int, TextInput]:
        return self.lines.popleft()


def _classify_file(client: Client, args: argparse.Namespace) -> None:
    """Stream every line through ClassifyStream; a JSON line per input, in order. A refused
    input stops the run after every answer before it is written, naming its line."""
    src = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    total = None if args.file == "-" else _count_lines(Path(args.file))
    dst = sys.stdout if args.out is None else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    inputs = FileInputs(src, "<stdin>" if args.file == "-" else args.file)
    n = 0
    try:
        with _progress(total, args.task) as bar:
            rows = client.classify_stream(args.task, inputs, args.version, chunk=args.chunk,
                                          truncate=args.truncate)
            for row in rows:
                dst.write(json.dumps(row_json(*inputs.answered(), row)) + "\n")
                n += 1
                bar.update(1)
    except PolyheadError as e:
        if e.input_index is None or not inputs.lines:
            raise
        raise PolyheadError(e.code, f"{inputs.name}:{inputs.lines[0][0]}: {e.details}") from None
    finally:
        if src is not sys.stdin:
            src.close()
        if dst is not sys.stdout:
            dst.close()
        skipped = f"; {counted(inputs.blank, 'blank line')} skipped" if inputs.blank else ""
        print(f"# {counted(n, 'line')} classified with {args.task}{skipped}", file=sys.stderr)


class _NoBar:
    """No progress bar without tqdm (a client-only install): the closing count remains."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _progress(total: int | None, desc: str) -> Any:
    """tqdm's bar on stderr (on a terminal) where tqdm is installed, else none."""
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        return _NoBar()
    return tqdm(total=total, unit="line", desc=desc, file=sys.stderr, disable=None)


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _upload(client: Client, args: argparse.Namespace) -> None:
    v = client.upload(args.file.read_bytes(), replace_kind=args.replace_kind)
    print(f"uploaded {describe_version(v)} to {args.server}")


def _health(client: Client, args: argparse.Namespace) -> None:
    h = client.health()
    if args.json:
        print(json.dumps(h, indent=2))
        return
    resident = ", ".join(f"{r['task_id']} ({r['tier']})" for r in h["resident"]) or "none"
    print(f"{h['status']}: {args.server}, replica {h['replica']}, backbone {h['backbone']} "
          f"({h['fingerprint'][:12]}) on {h['device']}; resident tasks: {resident}")


def _aliases(numbers: dict[str, int]) -> str:
    """Every alias with the version it points at: "latest->v2,stable->v1"."""
    return ",".join(f"{a}->v{n}" for a, n in sorted(numbers.items())) or "-"


def _list(client: Client, args: argparse.Namespace) -> None:
    for t in client.list_tasks():
        latest = t["latest"]
        print(f"{t['task_id']}\t{t['kind']}\tv{latest['number']}\t{latest['version'][:12]}\t"
              f"{counted(t['num_versions'], 'version')}\taliases {_aliases(t['alias_numbers'])}")


def _show(client: Client, args: argparse.Namespace) -> None:
    """Each version with its own kind and aliases, the labels, then the latest's manifest."""
    d = client.get_task(args.task)
    info = d["info"]
    manifest = json.loads(d["manifest_json"] or "{}")
    print(f"{info['task_id']}  {counted(info['num_versions'], 'version')}  "
          f"labels: {', '.join(d['labels']) or '(regression)'}  inputs: {manifest.get('inputs', 'any')}")
    for v in d["versions"]:
        aliases = ",".join(v["aliases"])
        print(f"  v{v['number']:<3} {v['version'][:12]}  {v['kind']:<7} {v['nbytes']:>10,} B  "
              f"{v['created_at']}  {aliases}".rstrip())
    print(f"manifest of v{info['latest']['number']} (latest):")
    print(json.dumps(manifest, indent=2, sort_keys=True))


def _rollback(client: Client, args: argparse.Namespace) -> None:
    v = client.rollback(args.task, args.version)
    print(f"{v['task_id']} latest is now v{v['number']} {v['version']}")


def _alias(client: Client, args: argparse.Namespace) -> None:
    v = client.set_alias(args.task, args.alias, args.version)
    print(f"{v['task_id']} {args.alias} -> v{v['number']} {v['version']}")


def _delete(client: Client, args: argparse.Namespace) -> None:
    if not args.yes:
        n = client.get_task(args.task)["info"]["num_versions"]  # NOT_FOUND before asking
        question = f"delete task {args.task!r} and its {n} version(s)? [y/N] "
        if not sys.stdin.isatty():
            raise ValueError(f"{question.split('?')[0]}: not confirmed (no terminal); add --yes")
        if input(question).strip().lower() not in ("y", "yes"):
            print(f"kept {args.task}")
            return
    client.delete(args.task)
    print(f"deleted {args.task}")


def _import_peft(client: Client, args: argparse.Namespace) -> None:
    v = client.import_peft(args.folder, args.task, args.labels, replace_kind=args.replace_kind)
    print(f"{v['task_id']} v{v['number']} {v['version']} ({v['kind']})")


def _restore(client: Client, args: argparse.Namespace) -> None:
    v = client.restore(args.task)
    print(f"restored {v['task_id']}: latest is v{v['number']} {v['version']}")
