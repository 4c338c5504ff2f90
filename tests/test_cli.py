"""The `polyhead` command line as a newcomer meets it (issue 31): help without torch, the
README's columns, preset label names, and the client verbs against an in-process gRPC
server whose answers the test controls (no Ray, no backbone)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyhead.cli import build_parser
from polyhead.trainer.cli import load_data

HEAVY = ("torch", "transformers", "ray")


def imports_after(argv: list[str]) -> tuple[int, str, list[str]]:
    """(exit code, stderr, heavy modules imported) of `polyhead ARGV` in a fresh interpreter."""
    code = ("import sys\nfrom polyhead.cli import main\n"
            f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])\nprint(rc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parent.parent, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = out.stdout.strip().splitlines()
    return int(lines[-1]), out.stderr, json.loads(lines[-2].replace("'", '"'))


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["train", "--defaults"],
                                  ["jobs", "submit", "--help"]])
def test_help_imports_no_torch(argv: list[str]) -> None:
    rc, _, heavy = imports_after(argv)
    assert rc == 0 and heavy == []


def test_missing_train_file_is_named_before_the_trainer_loads(tmp_path: Path) -> None:
    rc, err, heavy = imports_after(["train", "--method", "lora", "--train", str(tmp_path / "no.tsv"),
                                    "--dev", str(tmp_path / "no.tsv"), "--out", "x.polyhead"])
    assert rc == 2 and f"{tmp_path / 'no.tsv'}: no such file (given as --train)" in err
    assert heavy == []


def test_train_help_is_short_and_points_at_the_defaults_record(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser("train").parse_args(["train", "--help"])
    help_text = capsys.readouterr().out
    # 171 lines with the study's search record in it; eh-ft and its flags have added a few,
    # and each method's flags under its own heading (issue 26) 14 more; a help text for every
    # flag (a newcomer walkthrough) 2 more
    assert len(help_text.splitlines()) <= 147 and "polyhead train --defaults" in help_text
    # lora's defaults, each marked as chosen by the study
    assert "-> lora; 0.0003/10/0.06* | 0.0003/10/0.06*" in help_text
    assert "best of" not in help_text  # the search record lives in --defaults
    with pytest.raises(SystemExit):
        build_parser("train").parse_args(["train", "--defaults"])
    record = capsys.readouterr().out
    assert "lora     servable lr 0.0003, 10 epochs, warm-up 0.06: lora pilot: 3e-4 best of" in record
    assert "--recipe paper:" in record


def train_args(*argv: str) -> argparse.Namespace:
    return build_parser("train").parse_args(["train", "--method", "lora", "--out", "x.polyhead", *argv])


@pytest.mark.parametrize("suffix,text", [
    (".tsv", "sentence\tlabel\ngood film\tpositive\nbad film\tnegative\n"),
    (".csv", "label,sentence\npositive,good film\nnegative,bad film\n"),
    (".jsonl", '{"sentence": "good film", "label": "positive"}\n'
               '{"sentence": "bad film", "label": "negative"}\n'),
])
def test_sentence_label_files_need_no_column_flags(tmp_path: Path, suffix: str, text: str) -> None:
    """D1: the README's `sentence`/`label` columns train with no --text-col."""
    path = tmp_path / f"data{suffix}"
    path.write_text(text)
    train, _, metric = load_data(train_args("--train", str(path), "--dev", str(path)))
    assert [e.text for e in train.examples] == ["good film", "bad film"] and metric == "accuracy"
    assert train.labels == ["negative", "positive"]


def test_a_text_column_still_wins_and_a_missing_one_is_named(tmp_path: Path) -> None:
    both = tmp_path / "both.tsv"
    both.write_text("sentence\ttext\tlabel\nignored\tused\t1\n")
    train, _, _ = load_data(train_args("--train", str(both), "--dev", str(both)))
    assert train.examples[0].text == "used"
    neither = tmp_path / "neither.tsv"
    neither.write_text("review\tlabel\nfine\t1\n")
    with pytest.raises(ValueError, match=r"no column 'text' \(nor 'sentence'\) in header"):
        load_data(train_args("--train", str(neither), "--dev", str(neither)))


def test_missing_columns_are_named_together_with_the_flags(tmp_path: Path, capsys) -> None:
    """A walkthrough: a review,sentiment CSV named 'text' missing; with --text-col, 'label'."""
    from polyhead.cli import main

    data = tmp_path / "rev.csv"
    data.write_text("review,sentiment\nfine,1\n")
    assert main(["train", "--method", "lora", "--train", str(data), "--dev", str(data),
                 "--out", str(tmp_path / "r.polyhead")]) == 2
    err = capsys.readouterr().err
    assert ("rev.csv:1: no column 'text' (nor 'sentence'), no column 'label' in header "
            "['review', 'sentiment'] (--text-col, --pair-col and --label-col name them)") in err


def test_glue_presets_name_their_labels(tmp_path: Path) -> None:
    """SST-2's 0/1 are stored (and so answered) as negative/positive; order is kept."""
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\na fine film\t1\na dull movie\t0\n")
    train, dev, _ = load_data(train_args("--preset", "sst2", "--train", str(path), "--dev", str(path)))
    assert train.labels == ["negative", "positive"] and dev.labels == train.labels
    assert [e.label for e in train.examples] == ["positive", "negative"] and train.targets() == [1, 0]


# -- the client verbs, against a fake server ---------------------------------------------------

class FakeServer:
    """Inference and Registry answering as the real servicer does for a single-text task
    `t` (labels negative/positive; any other task takes pairs): a text "BAD", or a pair for
    `t`, is refused, naming the input."""

    def __init__(self) -> None:
        import grpc

        from polyhead.v1 import polyhead_pb2 as pb
        from polyhead.v1 import polyhead_pb2_grpc as pb_grpc

        self.requests: list = []
        self.deleted: list[str] = []
        fake = self

        def refusal(req) -> str | None:
            for i, x in enumerate(req.inputs):
                if x.text == "BAD":
                    return f"inputs[{i}].text: no BAD texts"
                if x.text == "LONG" and not req.truncate:  # the real server's words
                    return (f"inputs[{i}].text: 4 characters; the limit is 3 "
                            "(set `truncate` to cut longer texts)")
                if x.HasField("pair") and req.task_id == "t":
                    return f"inputs[{i}]: task 't' takes a single text (no `pair`)"
            return None

        def answer(req) -> pb.ClassifyResponse:
            res = pb.ClassifyResponse(task_id="t", version="ab" * 32, version_number=2,
                                      labels=["negative", "positive"])
            for x in req.inputs:
                p = 0.9 if "good" in x.text else 0.2
                res.predictions.add(label="positive" if p > 0.5 else "negative", label_index=int(p > 0.5),
                                    scores=[1 - p, p], truncated=req.truncate and len(x.text) > 20)
            return res

        class Inference(pb_grpc.InferenceServicer):
            def Classify(self, request, context):
                fake.requests.append(request)
                if (why := refusal(request)) is not None:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)
                return answer(request)

            def ClassifyStream(self, request_iterator, context):
                for index, request in enumerate(request_iterator):
                    fake.requests.append(request)
                    if (why := refusal(request)) is not None:
                        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"message {index}: {why}")
                    yield answer(request)

            def Health(self, request, context):
                res = pb.HealthResponse(status="SERVING", backbone="minilm", fingerprint="f" * 64,
                                        device="cpu", replica="r1")
                res.resident.add(task_id="t", version="ab" * 32, tier="device")
                return res

        def version(number: int, kind: str, aliases: list[str]) -> pb.VersionInfo:
            return pb.VersionInfo(task_id="t", version=f"{number}" * 64, number=number, kind=kind,
                                  nbytes=1234, created_at=f"2026-12-0{number}", aliases=aliases)

        class Registry(pb_grpc.RegistryServicer):
            def ListTasks(self, request, context):
                info = pb.TaskInfo(task_id="t", kind="lora", latest=version(2, "lora", ["latest"]),
                                   num_versions=2, aliases=["latest", "stable"],
                                   alias_numbers={"latest": 2, "stable": 1})
                return pb.ListTasksResponse(tasks=[info])

            def GetTask(self, request, context):
                if request.task_id != "t":
                    context.abort(grpc.StatusCode.NOT_FOUND, f"no task {request.task_id!r}")
                info = pb.TaskInfo(task_id="t", kind="lora", latest=version(2, "lora", ["latest"]),
                                   num_versions=2, aliases=["latest", "stable"])
                manifest = {"inputs": "single", "kind": "lora", "labels": ["negative", "positive"]}
                return pb.TaskDetail(info=info, labels=["negative", "positive"],
                                     versions=[version(1, "pasta", ["stable"]),
                                               version(2, "lora", ["latest"])],
                                     manifest_json=json.dumps(manifest))

            def DeleteTask(self, request, context):
                fake.deleted.append(request.task_id)
                return pb.DeleteTaskResponse(task_id=request.task_id)

            def Upload(self, request, context):
                return version(3, "pasta", ["latest"])

        from concurrent import futures

        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        pb_grpc.add_InferenceServicer_to_server(Inference(), self.server)
        pb_grpc.add_RegistryServicer_to_server(Registry(), self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()


@pytest.fixture(scope="module")
def fake():
    s = FakeServer()
    yield s
    s.server.stop(None)


def polyhead(fake: FakeServer, capsys, *argv: str) -> tuple[int, str, str]:
    from polyhead.cli import main

    verb, rest = argv[0], argv[1:]
    head = [verb, rest[0]] if verb == "tasks" else [verb]
    rc = main([*head, "--server", fake.address, "--token", "x", *rest[len(head) - 1:]])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_file_keeps_every_answer_before_a_refused_line_and_names_it(fake, capsys, tmp_path) -> None:
    """D3: line 30 of 40 is refused in the middle of a message: lines 1-29 are all written
    (none of its message lost) and the error names the file's line, not the message."""
    path = tmp_path / "in.txt"
    lines = [f"text {i}" for i in range(1, 41)]
    lines[29] = "BAD"
    path.write_text("\n".join(lines) + "\n")
    rc, out, err = polyhead(fake, capsys, "classify", "--task", "t", "--file", str(path), "--chunk", "8")
    answers = [json.loads(x) for x in out.splitlines()]
    assert rc == 2 and [a["line"] for a in answers] == list(range(1, 30))
    assert [a["text"] for a in answers] == lines[:29]
    assert f"{path}:30: text: no BAD texts" in err and "message" not in err
    assert "# 29 lines classified" in err


def test_blank_lines_are_skipped_and_counted(fake, capsys, monkeypatch) -> None:
    """D4: a trailing (or inner) blank line no longer aborts a run; lines keep their numbers."""
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("good film\n\n  \nbad film\n\n"))
    rc, out, err = polyhead(fake, capsys, "classify", "--task", "t", "--file", "-")
    answers = [json.loads(x) for x in out.splitlines()]
    assert rc == 0 and [(a["line"], a["text"], a["label"]) for a in answers] == [
        (1, "good film", "positive"), (4, "bad film", "negative")]
    assert "# 2 lines classified with t; 3 blank lines skipped" in err


def test_a_tab_line_for_a_single_text_task_is_refused_by_line(fake, capsys, tmp_path) -> None:
    """D6: `a<TAB>b` is sent as a pair, and a single-text task refuses it, naming the line."""
    path = tmp_path / "in.txt"
    path.write_text("good film\nfine\tfilm\n")
    rc, out, err = polyhead(fake, capsys, "classify", "--task", "t", "--file", str(path))
    assert rc == 2 and len(out.splitlines()) == 1
    assert f"{path}:2: task 't' takes a single text" in err


def test_truncate_is_asked_for_and_shown(fake, capsys) -> None:
    long = "good " * 10
    rc, out, _ = polyhead(fake, capsys, "classify", "--task", "t", "--truncate", long)
    assert rc == 0 and fake.requests[-1].truncate and out.rstrip().endswith("(truncated)")
    rc, out, _ = polyhead(fake, capsys, "classify", "--task", "t", long)
    assert rc == 0 and not fake.requests[-1].truncate and "(truncated)" not in out
    rc, _, err = polyhead(fake, capsys, "classify", "--task", "t", "LONG")  # the CLI names its flag
    assert rc == 2 and "the limit is 3 (add --truncate to cut longer texts)" in err


def test_pair_output_shows_both_texts(fake, capsys) -> None:
    rc, out, _ = polyhead(fake, capsys, "classify", "--task", "p", "good premise", "--pair", "a hypothesis")
    assert rc == 0 and out == "positive\t0.900\tgood premise\ta hypothesis\n"
    rc, out, _ = polyhead(fake, capsys, "classify", "--task", "t", "good one", "bad two")
    assert rc == 0 and out.splitlines() == ["positive\t0.900\tgood one", "negative\t0.800\tbad two"]


def test_pair_line_shows_the_pair() -> None:
    from polyhead.client_cli import row_json

    row = {"label": "positive", "label_index": 1, "scores": {"negative": 0.1, "positive": 0.9},
           "truncated": False, "version": "v", "version_number": 1}
    assert row_json(3, ("a", "b"), row) == {
        "line": 3, "text": "a", "pair": "b", "label": "positive", "label_index": 1,
        "labels": ["negative", "positive"], "scores": [0.1, 0.9], "truncated": False,
        "version": "v", "version_number": 1}


class FakeRequest:
    def __init__(self, path: str, method: str, body: bytes = b"") -> None:
        self.url = argparse.Namespace(path=path)
        self.method, self._body, self.headers = method, body, {}

    async def body(self) -> bytes:
        return self._body

    async def stream(self):  # as Starlette's Request.stream(): the body in chunks
        yield self._body


def test_one_json_shape_for_scores_in_the_cli_and_http(fake, capsys) -> None:
    """`classify --json` prints what POST /v1/classify answers for the same response."""
    import asyncio

    from polyhead.server._private.http import http_classify

    rc, out, _ = polyhead(fake, capsys, "classify", "--task", "t", "--json", "good film", "dull")
    cli = json.loads(out)
    assert rc == 0 and cli["labels"] == ["negative", "positive"]
    assert [p["scores"] for p in cli["predictions"]] == [pytest.approx([0.1, 0.9]), pytest.approx([0.8, 0.2])]
    answered = fake.requests[-1]

    async def classify(request, ctx):  # the same fake answer, through the HTTP route
        from polyhead.client import PolyheadClient

        with PolyheadClient(fake.address) as c:
            return c.classify_raw(request.task_id, [x.text for x in request.inputs])

    body = json.dumps({"task_id": "t", "inputs": [{"text": x.text} for x in answered.inputs]}).encode()
    http = asyncio.run(http_classify(classify, FakeRequest("/v1/classify", "POST", body)))
    assert json.loads(http.body) == cli


def test_health_verb_and_http_route(fake, capsys) -> None:
    import asyncio

    from polyhead.server._private.http import http_health
    from polyhead.v1 import polyhead_pb2 as pb

    rc, out, _ = polyhead(fake, capsys, "health")
    assert rc == 0 and out.startswith(f"SERVING: {fake.address}, replica r1, backbone minilm")
    assert "resident tasks: t (device)" in out

    async def health(request, ctx):
        return pb.HealthResponse(status="SERVING", replica="r9")

    res = asyncio.run(http_health(health, FakeRequest("/v1/health", "GET")))
    assert res.status_code == 200 and json.loads(res.body)["replica"] == "r9"
    res = asyncio.run(http_health(health, FakeRequest("/v1/health", "POST")))
    assert res.status_code == 405


def test_tasks_show_and_list_give_kinds_and_aliases_as_they_point(fake, capsys) -> None:
    """D7, D9: a kind per version; aliases beside the version they point at, once."""
    rc, out, _ = polyhead(fake, capsys, "tasks", "show", "t")
    lines = out.splitlines()
    assert rc == 0 and lines[0] == "t  2 versions  labels: negative, positive  inputs: single"
    assert lines[1].split() == ["v1", "1" * 12, "pasta", "1,234", "B", "2026-12-01", "stable"]
    assert lines[2].split() == ["v2", "2" * 12, "lora", "1,234", "B", "2026-12-02", "latest"]
    assert lines[3] == "manifest of v2 (latest):" and json.loads("\n".join(lines[4:]))["kind"] == "lora"
    assert "<- latest" not in out
    rc, out, _ = polyhead(fake, capsys, "tasks", "list")
    assert rc == 0 and out.rstrip().endswith("aliases latest->v2,stable->v1")


def test_delete_asks_unless_yes(fake, capsys, monkeypatch) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal: refused without --yes
    rc, _, err = polyhead(fake, capsys, "tasks", "delete", "t")
    assert rc == 2 and "add --yes" in err and fake.deleted == []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda q: "n")
    rc, out, _ = polyhead(fake, capsys, "tasks", "delete", "t")
    assert rc == 0 and out.strip() == "kept t" and fake.deleted == []
    monkeypatch.setattr("builtins.input", lambda q: "y")
    assert polyhead(fake, capsys, "tasks", "delete", "t")[0] == 0 and fake.deleted == ["t"]
    assert polyhead(fake, capsys, "tasks", "delete", "t", "--yes")[0] == 0 and fake.deleted == ["t", "t"]


def test_upload_prints_one_tidy_line(fake, capsys, tmp_path) -> None:
    """D10: `upload` and `train --upload` print the same line (not a raw dict)."""
    from polyhead.trainer.output import Targets, deliver

    path = tmp_path / "a.polyhead"
    path.write_bytes(b"x")
    rc, out, _ = polyhead(fake, capsys, "upload", str(path))
    assert rc == 0 and out == f"uploaded t v3 {'3' * 64} (pasta, 1,234 bytes) to {fake.address}\n"
    lines = deliver(b"x", Targets(upload=fake.address, token="x"), spec=None)  # type: ignore[arg-type]
    assert lines == [out.rstrip("\n")]


def _closed_port() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_a_failed_upload_keeps_the_trained_artifact(tmp_path, monkeypatch) -> None:
    """A walkthrough's `train --upload` to a server that was down trained to the end, then
    threw the artifact away: without --out it is now kept beside the task id, never over
    another file, and the error says where and how to send it."""
    from polyhead.trainer.output import OutputError, Targets, deliver

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.polyhead").write_bytes(b"older")
    down = Targets(upload=_closed_port(), token="x")
    with pytest.raises(OutputError, match=r"UNAVAILABLE.*kept in t-2\.polyhead \(3 bytes\): "
                                          r"`polyhead upload t-2\.polyhead`"):
        deliver(b"new", down, spec=None, keep=Path("t.polyhead"))  # type: ignore[arg-type]
    assert (tmp_path / "t.polyhead").read_bytes() == b"older"
    assert (tmp_path / "t-2.polyhead").read_bytes() == b"new"
    out = tmp_path / "o.polyhead"  # with --out, that file is where it is kept
    with pytest.raises(OutputError, match=r"kept in .*o\.polyhead"):
        deliver(b"new", Targets(out=out, upload=down.upload), spec=None,  # type: ignore[arg-type]
                keep=Path("t.polyhead"))
    assert out.read_bytes() == b"new" and not (tmp_path / "t-3.polyhead").exists()
    with pytest.raises(OutputError, match=r"over the store's cap of 2; .*kept in t-3\.polyhead"):
        deliver(b"new", Targets(upload=down.upload, max_bytes=2), spec=None,  # type: ignore[arg-type]
                keep=Path("t.polyhead"))


def test_train_upload_checks_the_server_before_training(tmp_path, capsys, fake, monkeypatch) -> None:
    """`train --upload` to a server that does not answer stops before the backbone loads."""
    import polyhead.trainer.cli as train_cli
    from polyhead.cli import main

    data = tmp_path / "d.csv"
    data.write_text("text,label\ngood,1\nbad,0\n")
    trained: list = []
    monkeypatch.setattr(train_cli, "_train_and_deliver", lambda *a: trained.append(a) or 0)
    argv = ["train", "--method", "lora", "--train", str(data), "--dev", str(data),
            "--task-id", "t", "--token", "x", "--upload"]
    assert main([*argv, _closed_port()]) == 1 and not trained
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err and "nothing was trained" in err
    assert main([*argv, fake.address]) == 0 and len(trained) == 1  # one that answers: trains


def test_a_server_that_does_not_answer_gets_a_hint(capsys) -> None:
    """A walkthrough: a refused connection, the HTTP port, or a host with no port gave gRPC's
    own words only (a bare host went to port 443); now each says what is likely wrong."""
    import http.server
    import threading

    from polyhead.cli import main

    def classify(server: str) -> tuple[int, str]:
        rc = main(["classify", "--server", server, "--token", "x", "--task", "t", "good"])
        return rc, capsys.readouterr().err

    rc, err = classify(_closed_port())
    assert rc == 1 and "is `polyhead serve` running there?" in err
    rc, err = classify("localhost")
    assert rc == 2 and "--server needs HOST:PORT (e.g. localhost:9000), got 'localhost'" in err
    web = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        rc, err = classify(f"127.0.0.1:{web.server_address[1]}")
    finally:
        web.shutdown()
    assert rc == 1 and "answers HTTP/1, not gRPC: is it the HTTP port?" in err


@pytest.mark.parametrize("address,ok", [("localhost:9000", True), ("[::1]:9000", True),
                                        ("unix:/tmp/s", True), ("localhost", False),
                                        ("::1", False), ("host:", False), (":9000", False)])
def test_addresses_need_a_port(address: str, ok: bool) -> None:
    from polyhead.client._common import check_address

    if ok:
        assert check_address(address) == address
    else:
        with pytest.raises(ValueError, match="needs HOST:PORT"):
            check_address(address)


@pytest.mark.parametrize("argv,usage,named", [
    (["classify", "--task", "t", "--verison", "v1", "x"], "usage: polyhead classify",
     "unrecognized argument: --verison (did you mean --version?)"),
    (["classify", "--tsk", "t", "x"], "usage: polyhead classify",
     "unrecognized argument: --tsk (did you mean --task?)"),
    (["tasks", "show", "--servr=h:1", "t"], "usage: polyhead tasks show",
     "unrecognized argument: --servr (did you mean --server?)"),
])
def test_a_mistyped_flag_is_named_in_its_verbs_usage(argv, usage, named, capsys) -> None:
    """A walkthrough: `--verison` got the top-level usage, and `--tsk` only "required: --task"."""
    from polyhead.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(usage) and named in err


def test_flag_prefixes_and_dashed_texts_still_parse() -> None:
    from polyhead.cli import build_parser

    args = build_parser("classify").parse_args(["classify", "--tas", "t", "--", "--not-a-flag"])
    assert args.task == "t" and args.text == ["--not-a-flag"]


def test_empty_lists_say_so_on_stderr(tmp_path, capsys) -> None:
    """A walkthrough: `keys list` (and `audit`) printed nothing at all on an empty store."""
    from polyhead.cli import main
    from polyhead.store.catalog import open_catalog

    root = str(tmp_path / "store")
    open_catalog(root, create=True).close()
    assert main(["keys", "list", "--store", root]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no keys (`polyhead keys create --tenant T --scope classify` makes one)" in err
    assert main(["audit", "--store", root, "--tenant", "acme"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no audit records of tenant acme" in err


def test_every_argument_of_every_verb_has_a_help_text() -> None:
    """A walkthrough found a dozen flags and arguments that `--help` listed bare."""
    from polyhead.cli import build_parser

    def bare(p: argparse.ArgumentParser, path: str) -> Iterator[str]:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, child in a.choices.items():
                    yield from bare(child, f"{path} {name}")
            elif a.help is None and not isinstance(a, argparse._HelpAction):
                yield f"{path} {'/'.join(a.option_strings) or a.dest}"

    assert list(bare(build_parser(None), "polyhead")) == []


def test_counts_agree_with_their_nouns() -> None:
    from polyhead._words import counted

    assert [counted(n, "version") for n in (0, 1, 2)] == ["0 versions", "1 version", "2 versions"]
    assert counted(1234, "key") == "1,234 keys" and counted(1, "entry", "entries") == "1 entry"
    assert counted(3, "entry", "entries") == "3 entries"


def test_health_names_the_packaged_backbone_not_its_folder(tmp_path) -> None:
    """A walkthrough: `polyhead health` said "backbone model" (the packaged folder's name)."""
    from polyhead.engine.backbone import backbone_label, default_backbone_path

    assert backbone_label(default_backbone_path()) == "all-MiniLM-L6-v2"
    assert backbone_label(tmp_path / "my-bert") == "my-bert"


# -- the server side of the same fixes ---------------------------------------------------------

def test_truncate_cuts_long_texts_and_marks_them() -> None:
    """D3: without `truncate` a text over the limit is refused (the message says how to cut
    it); with it the text is cut to the limit and its prediction marked truncated."""
    from polyhead.server._private.errors import InvalidInput
    from polyhead.server._private.inference import cut_inputs, parse_inputs
    from polyhead.v1 import polyhead_pb2 as pb

    inputs = [pb.Input(text="a" * 30), pb.Input(text="b", pair="c" * 12), pb.Input(text="d")]
    with pytest.raises(InvalidInput, match=r"inputs\[0\].text: 30 characters; the limit is 10 "
                                           r"\(set `truncate`"):
        parse_inputs(pb.ClassifyRequest(task_id="t", inputs=inputs), 4, 10)
    req = pb.ClassifyRequest(task_id="t", inputs=inputs, truncate=True)
    assert parse_inputs(req, 4, 10) == ["a" * 10, ("b", "c" * 10), "d"]
    assert cut_inputs(req, 10) == [True, True, False]


def test_the_shipped_example_takes_single_texts() -> None:
    """D6: its manifest says `inputs: single`, so a pair for it is refused as for trained tasks."""
    from polyhead.server._private.replica import EXAMPLES
    from polyhead.store.header import read_manifest_json

    data = (EXAMPLES / "sentiment.polyhead").read_bytes()
    assert read_manifest_json(data, max_bytes=len(data))["inputs"] == "single"


@pytest.mark.parametrize("ref,number", [("v1", 1), ("1", 1), ("12", 12), ("1234567", 1234567),
                                        ("12345678", None), ("v0", None), ("0", None), ("stable", None)])
def test_a_bare_version_number_reads_as_vN(ref: str, number: int | None) -> None:
    """D8: `--version 1` is v1 (8 or more digits stay a hash prefix; aliases start with a letter)."""
    from polyhead.store.names import version_number_ref

    assert version_number_ref(ref) == number


# -- a quiet install, start, training and stop -------------------------------------------------

def test_pyproject_installs_one_namespace_with_its_data() -> None:
    """project.license as an SPDX string (a TOML table is deprecated); the packages found are
    `polyhead` and its subpackages only (no top-level `server`, `store`, `bench`...), and the
    examples' folder, whose data ships, is one of them."""
    import tomllib

    from setuptools import find_namespace_packages

    root = Path(__file__).parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    found = set(find_namespace_packages(str(root), **project["tool"]["setuptools"]["packages"]["find"]))
    assert {p.split(".")[0] for p in found} == {"polyhead"}
    assert {"polyhead.server.examples", "polyhead.v1", "polyhead.server._private"} <= found
    data = project["tool"]["setuptools"]["package-data"]
    assert data["polyhead.server.examples"] == ["*.polyhead"] and set(data) <= found


def test_readme_artifacts_are_ignored_but_not_the_shipped_example(tmp_path: Path) -> None:
    # the repository's .gitignore in a repository of its own: the check needs no .git here
    # (the mutation check runs the suite in a copy of the tree without one)
    shutil.copy(Path(__file__).parent.parent / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=tmp_path).returncode == 0

    assert ignored("sentiment.polyhead") and ignored("out/sst2.polyhead")
    assert ignored("texts.txt") and ignored("site/index.html")  # the README's bulk file, mkdocs build
    assert not ignored("docs/index.md") and not ignored("tests/texts.txt")
    assert not ignored("polyhead/server/examples/sentiment.polyhead")


def test_serve_drops_rays_noise_lines_only(monkeypatch, capsys) -> None:
    """D12 and a quiet start: the two lines Ray prints on every start/stop are dropped;
    anything else it reports is still printed."""
    import logging

    from ray._private import worker

    from polyhead.server.serve_cli import quiet_ray

    monkeypatch.setattr(worker, "print_to_stdstream", worker.print_to_stdstream)  # restored after
    serve_log = logging.getLogger("ray.serve")
    monkeypatch.setattr(serve_log, "filters", list(serve_log.filters))
    quiet_ray()
    quiet_ray()  # twice: still one wrapper
    noise = ("Task ServeController.graceful_shutdown failed. There are infinite retries "
             "remaining, so the task will be retried. Error: The actor died")
    worker.print_to_stdstream({"lines": [noise, "a real problem"], "pid": "raylet", "is_err": False},
                              ignore_prefix=False)
    worker.print_to_stdstream({"lines": [noise], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    out = capsys.readouterr().out
    assert "a real problem" in out and "graceful_shutdown" not in out
    record = logging.LogRecord("ray.serve", logging.INFO, "api.py", 1, 'Connecting to existing Serve '
                               'app in namespace "serve". New http_options will not be applied.', None, None)
    assert not serve_log.filter(record)
    other = logging.LogRecord("ray.serve", logging.INFO, "api.py", 1, "Deploying new version of "
                              "Deployment(name='Polyhead', app='polyhead')", None, None)
    assert serve_log.filter(other)


def test_serve_drops_rays_start_lines_only(monkeypatch) -> None:
    """Ray's and Serve's start-up lines (polyhead serve's own line says it is ready) are
    dropped, from Ray's modules and Serve's logger; Ray's other warnings are not."""
    import logging

    from polyhead.server.app import APP_NAME
    from polyhead.server.serve_cli import _DropNoise, quiet_ray

    ray_log, serve_log = logging.getLogger("ray"), logging.getLogger("ray.serve")
    assert ray_log.handlers  # Ray's handler, made when ray was imported
    for handler in ray_log.handlers:
        monkeypatch.setattr(handler, "filters", list(handler.filters))
    monkeypatch.setattr(serve_log, "filters", list(serve_log.filters))
    quiet_ray()
    quiet_ray()  # twice: one filter per handler

    def shown(name: str, level: int, text: str) -> bool:
        record = logging.LogRecord(name, level, "x.py", 1, text, None, None)
        if name == "ray.serve":
            return bool(serve_log.filter(record))
        return all(h.filter(record) for h in ray_log.handlers)

    assert [sum(isinstance(f, _DropNoise) for f in h.filters) for h in ray_log.handlers] == [1] * len(
        ray_log.handlers)
    for name, level, text in (
            ("ray._private.authentication.authentication_token_setup", logging.WARNING,
             "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out."),
            ("ray._private.worker", logging.INFO, "Started a local Ray instance."),
            ("ray.serve", logging.INFO, 'Started Serve in namespace "serve".'),
            ("ray.serve", logging.INFO, f"Application '{APP_NAME}' is ready at http://127.0.0.1:8000/.")):
        assert not shown(name, level, text), text
    for name, level, text in (
            ("ray._private.authentication.authentication_token_setup", logging.ERROR,
             "Token authentication is enabled but no authentication token was found"),
            ("ray._private.worker", logging.WARNING, "Failed to start the dashboard"),
            ("ray.serve", logging.WARNING, "Deployment 'Polyhead' has 1 replica that took over 30 s")):
        assert shown(name, level, text), text


def test_lora_training_shows_one_loading_bar(tiny_bert, monkeypatch) -> None:
    """The backbone's load shows transformers' "Loading weights" bar; LoRA's own model load
    (peft wraps a fresh AutoModelForSequenceClassification) does not show a second one."""
    import transformers
    from transformers.utils import logging as hf_logging

    from polyhead.engine import HeadConfig
    from polyhead.trainer.config import TrainConfig
    from polyhead.trainer.models import LoraModel

    seen: list[bool] = []
    original = transformers.AutoModelForSequenceClassification.from_pretrained

    def spy(*args, **kwargs):
        seen.append(hf_logging.is_progress_bar_enabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", spy)
    hf_logging.enable_progress_bar()
    LoraModel(tiny_bert, TrainConfig(method="lora"), HeadConfig(2, "pooler"))
    assert seen == [False] and hf_logging.is_progress_bar_enabled()


def test_registry_lists_where_each_alias_points(tiny_bert, tmp_path) -> None:
    """D9's server side: ListTasks (and GetTask) say which version each alias names."""
    from polyhead.server._private import registry_rpcs as registry
    from polyhead.store import Store
    from tests.test_serving import artifact

    store = Store(tmp_path / "store", tiny_bert.spec)
    for seed in (1, 2):
        store.publish(artifact(tiny_bert.spec, "t", seed=seed)[0])
    store.set_alias("t", "stable", "v1")
    (info,) = registry.list_tasks(store).tasks
    assert dict(info.alias_numbers) == {"latest": 2, "stable": 1}
    assert dict(registry.get_task(store, "t").info.alias_numbers) == {"latest": 2, "stable": 1}
