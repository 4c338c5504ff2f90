"""The serving path end to end on a real Serve app: ClassifyStream (client and CLI), the
HTTP/JSON route, and Classify answering while another process holds the catalog's lock."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from polyhead.client import PolyheadClient
from polyhead.server.config import Secret, ServerConfig
from polyhead.v1 import polyhead_pb2 as pb
from polyhead.v1 import polyhead_pb2_grpc as pb_grpc
from tests.test_serving import artifact, free_port, ray_session

pytestmark = pytest.mark.integration
TOKEN = "path-registry-token"
READ_TOKEN = "path-inference-token"
BODY_TIMEOUT_S = 5.0  # the app's http_body_timeout_s


class App:
    def __init__(self, grpc_port: int, http_port: int, store: Path) -> None:
        self.address, self.http, self.store = f"127.0.0.1:{grpc_port}", http_port, store

    def client(self, token: str | None = TOKEN) -> PolyheadClient:
        return PolyheadClient(self.address, token)

    def post(self, body: bytes, token: str | None = READ_TOKEN,
             path: str = "/v1/classify") -> tuple[int, dict]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", data=body,
                                     headers={"Content-Type": "application/json"})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as res:
                return res.status, json.loads(res.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def app(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    from ray import serve
    from ray.serve.config import gRPCOptions

    from polyhead.server.app import APP_NAME, GRPC_SERVICERS, app_for

    store = tmp_path_factory.mktemp("path") / "store"
    grpc_port, http_port = free_port(), free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POLYHEAD_STORE_JOURNAL", "delete")  # readers wait for a writer's lock
        with ray_session():
            serve.start(http_options={"host": "127.0.0.1", "port": http_port},
                        grpc_options=gRPCOptions(port=grpc_port,
                                                 grpc_servicer_functions=GRPC_SERVICERS))
            config = ServerConfig(store=str(store), backbone=str(tiny_bert_dir),
                                  token=Secret(TOKEN), inference_token=Secret(READ_TOKEN),
                                  max_inputs=16, max_batch_rows=32, seed_examples=False,
                                  http_body_timeout_s=BODY_TIMEOUT_S)
            serve.run(app_for(config, num_replicas=1, num_cpus=1), name=APP_NAME,
                      route_prefix="/")
            yield App(grpc_port, http_port, store)


@pytest.fixture(scope="module")
def task(app: App, tiny_bert) -> str:
    with app.client() as c:
        c.upload(artifact(tiny_bert.spec, "path", seed=7, inputs="single")[0])
    return "path"


TEXTS = [f"sentence number {i} about {w}" for i, w in
         enumerate(["rain", "a film", "the sea", "dinner", "a book"] * 60)]  # 300, distinct


def test_stream_answers_every_input_in_order(app: App, task: str) -> None:
    with app.client() as c:
        unary = [r for i in range(0, len(TEXTS), 16) for r in c.classify(task, TEXTS[i:i + 16])]
        streamed = list(c.classify_stream(task, iter(TEXTS), chunk=7))
    assert len(streamed) == len(TEXTS)
    for a, b in zip(unary, streamed, strict=True):
        assert a["label"] == b["label"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_stream_error_names_the_message(app: App, task: str) -> None:
    channel = grpc.insecure_channel(app.address)
    stub = pb_grpc.InferenceStub(channel)
    md = (("authorization", f"Bearer {READ_TOKEN}"),)
    good = pb.ClassifyRequest(task_id=task, inputs=[pb.Input(text="fine")])
    bad = pb.ClassifyRequest(task_id=task, inputs=[pb.Input(text="fine"), pb.Input(text=" ")])
    with pytest.raises(grpc.RpcError) as e:
        list(stub.ClassifyStream(iter([good, good, good, bad, good]), metadata=md))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("message 3: inputs[1].text: empty text")
    missing = pb.ClassifyRequest(task_id="no-such-task", inputs=[pb.Input(text="x")])
    with pytest.raises(grpc.RpcError) as e:
        list(stub.ClassifyStream(iter([missing]), metadata=md))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "message 0" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:  # the stream is gated like Classify
        list(stub.ClassifyStream(iter([good])))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert list(stub.ClassifyStream(iter([]), metadata=md)) == []
    channel.close()


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polyhead.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_cli_classify_file(app: App, task: str, tmp_path: Path) -> None:
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.jsonl"
    r = _cli("classify", "--server", app.address, "--token", READ_TOKEN, "--task", task,
             "--file", str(src), "--out", str(out), "--chunk", "16")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["line"] for row in rows] == list(range(1, len(TEXTS) + 1))
    with app.client(READ_TOKEN) as c:
        want = c.classify(task, TEXTS[:5]) + c.classify(task, TEXTS[-5:])
    assert [r["label"] for r in rows[:5] + rows[-5:]] == [w["label"] for w in want]
    r = _cli("classify", "--server", app.address, "--token", READ_TOKEN, "--task", task,
             "--file", "-", stdin="one text\nanother text\n")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2
    src.write_text("first\n\nthird\n")  # a blank line is skipped (and counted)
    r = _cli("classify", "--server", app.address, "--token", READ_TOKEN, "--task", task,
             "--file", str(src))
    assert r.returncode == 0 and "1 blank line skipped" in r.stderr
    assert [(row["line"], row["text"]) for row in map(json.loads, r.stdout.splitlines())] == [
        (1, "first"), (3, "third")]
    src.write_text("first\n" + "y" * 20_001 + "\nthird\n")  # over the server's 20,000 characters
    args = ("classify", "--server", app.address, "--token", READ_TOKEN, "--task", task, "--file", str(src))
    r = _cli(*args)
    assert r.returncode == 2 and f"{src}:2: text: 20001 characters; the limit is 20000" in r.stderr
    assert len(r.stdout.splitlines()) == 1  # the line before the bad one was answered
    r = _cli(*args, "--truncate")
    assert r.returncode == 0, r.stderr
    assert [row["truncated"] for row in map(json.loads, r.stdout.splitlines())] == [False, True, False]


def test_http_classify(app: App, task: str) -> None:
    body = json.dumps({"task_id": task, "inputs": [{"text": t} for t in TEXTS[:3]]}).encode()
    status, out = app.post(body)
    assert status == 200, out
    with app.client(READ_TOKEN) as c:
        want = c.classify(task, TEXTS[:3])
    assert [p["label"] for p in out["predictions"]] == [w["label"] for w in want]
    assert out["task_id"] == task and out["version"] == want[0]["version"]
    assert app.post(body, token=None)[0] == 401
    assert app.post(body, token="wrong")[0] == 401
    status, out = app.post(json.dumps({"task_id": "nope", "inputs": [{"text": "x"}]}).encode())
    assert (status, out["code"]) == (404, "NOT_FOUND")
    status, out = app.post(json.dumps({"task_id": task, "inputs": []}).encode())
    assert status == 400 and "at least one input" in out["message"]
    status, out = app.post(b"{not json")
    assert status == 400 and out["code"] == "INVALID_ARGUMENT"
    status, out = app.post(json.dumps({"task_id": task, "color": "red"}).encode())
    assert status == 400 and "color" in out["message"]
    assert app.post(body, path="/v1/other")[0] == 404
    status, out = app.post(None, path="/v1/health")  # type: ignore[arg-type]  # no body: a GET
    assert status == 200 and out["status"] == "SERVING" and out["fingerprint"]


def test_http_body_that_stops_arriving_is_answered_408_through_the_proxy(app: App) -> None:
    """The replica reads the body from Serve's HTTP proxy; a client that sent `{` of 1000
    bytes and stopped held a replica slot until it closed the socket."""
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READ_TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    with socket.create_connection(("127.0.0.1", app.http), timeout=120) as s:  # a hang guard
        s.sendall(head.encode())
        answer = b""
        while chunk := s.recv(65536):  # the server closes the connection after its answer
            answer += chunk
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.split()[1] == b"408", answer[:300]
    out = json.loads(body)
    assert out["code"] == "REQUEST_TIMEOUT" and f"within {BODY_TIMEOUT_S:g} s" in out["message"]


def test_classify_answers_while_the_catalog_is_locked(app: App, task: str, tiny_bert) -> None:
    """Another connection holds the catalog's write lock until told to let go: Classify of a
    resident task keeps answering meanwhile (no store I/O on the request path); the lock
    goes only after those answers (events, not a clock), and then the store works."""
    with app.client(READ_TOKEN) as c:
        c.classify(task, "warm")  # resident
    ready, release, released = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        db = sqlite3.connect(app.store / "catalog.sqlite", timeout=60, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        ready.set()
        release.wait(120)  # a deadline only so that a hung server cannot hang the suite
        db.execute("ROLLBACK")
        db.close()
        released.set()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert ready.wait(30)
        with app.client(READ_TOKEN) as c:
            for i in range(3):  # each answer arrives with the lock still held
                assert c.classify(task, f"still answering {i}")[0]["label"]
                assert not released.is_set()
    finally:
        release.set()
        holder.join()
    with app.client() as c:  # and the store still works once the lock is gone
        v = c.upload(artifact(tiny_bert.spec, "after-lock", seed=9)[0])
        assert c.classify("after-lock", "x")[0]["version"] == v["version"]


@pytest.mark.slow
def test_cli_streams_100k_lines_in_bounded_memory(app: App, task: str, tmp_path: Path) -> None:
    """100,000 lines through `polyhead classify --file`: every line answered once, in
    order, and the replica's resident memory does not grow with the file."""

    n = 100_000
    src = tmp_path / "big.txt"
    src.write_text("".join(f"line {i} of a long file about {TEXTS[i % 5]}\n" for i in range(n)))
    out = tmp_path / "big.jsonl"
    replica = _replica_process()
    rss0 = replica.memory_info().rss
    peak = [rss0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            peak.append(replica.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        r = _cli("classify", "--server", app.address, "--token", READ_TOKEN, "--task", task,
                 "--file", str(src), "--out", str(out), "--chunk", "16")
    finally:
        stop.set()
        sampler.join()
    assert r.returncode == 0, r.stderr
    lines = 0
    with out.open() as f:
        for lines, row in enumerate(map(json.loads, f), start=1):
            assert row["line"] == lines
    assert lines == n
    grew = max(peak) - rss0
    print(f"\n100,000 lines: replica RSS {rss0 / 2**20:.0f} MiB at start, peak "
          f"+{grew / 2**20:.1f} MiB")
    assert grew < 64 * 2**20  # a server that buffered the stream would hold ~100k messages


def _replica_process():
    """This test session's replica: Ray's processes are children of the driver (pytest)."""
    import psutil

    for p in psutil.Process().children(recursive=True):
        if any("ServeReplica" in part and "Polyhead" in part for part in p.cmdline()):
            return p
    raise AssertionError("no Polyhead replica process under this test session")
