"""The served app end to end: a real Ray Serve app (2 replicas, tiny backbone) over real gRPC
on loopback. One Ray session for the module: Ray starts slowly on 2 cores."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import torch

from polyhead.client import PolyheadClient, PolyheadError
from polyhead.engine import Engine, TaskArtifact
from polyhead.engine.lora import LoraConfig
from polyhead.engine.sparse import SparseConfig
from polyhead.server.config import Secret, ServerConfig
from polyhead.store import encode_artifact, new_manifest

pytestmark = pytest.mark.integration
TOKEN = "test-registry-token"
TEXTS = ["the movie was good", "i hated the plot", "a cat sat on the mat !", "rain"]
PAIRS = [("the man walks", "he walks in the park"), ("we loved it", "they hated it")]
ATOL = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def ray_session(env: dict[str, str] | None = None) -> Iterator[None]:
    """A local Ray (2 CPUs, no dashboard) with Serve's throughput env, as `polyhead serve`
    runs it (Ray's processes inherit the env), ``env`` over it; Serve and Ray shut down and
    the env restored."""
    import ray
    from ray import serve

    from polyhead.server.app import SERVE_ENV

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**SERVE_ENV, **(env or {})}.items():
            mp.setenv(key, value)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            serve.shutdown()
            ray.shutdown()


def artifact(spec, task_id: str, kind: str = "pasta", labels=("neg", "pos"), *, seed: int = 0,
             config=None, inputs: str | None = None, regression: bool = False):
    art = TaskArtifact.random(kind, spec, 1 if regression else len(labels), config=config, seed=seed)
    manifest = new_manifest(task_id, art, spec, labels=None if regression else list(labels),
                            regression=regression, training={"inputs": inputs} if inputs else None)
    return encode_artifact(manifest, art), art


class Cluster:
    def __init__(self, address: str, store: Path) -> None:
        self.address, self.store = address, store

    def client(self, token: str | None = TOKEN, **kw) -> PolyheadClient:  # "": no token
        return PolyheadClient(self.address, token, **kw)


@pytest.fixture(scope="module")
def cluster(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from ray import serve
    from ray.serve.config import gRPCOptions

    from polyhead.server.app import APP_NAME, GRPC_SERVICERS, app_for

    store = tmp_path_factory.mktemp("served") / "store"
    port = free_port()
    with ray_session():
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()},
                    grpc_options=gRPCOptions(port=port, grpc_servicer_functions=GRPC_SERVICERS))
        config = ServerConfig(store=str(store), backbone=str(tiny_bert_dir), token=Secret(TOKEN),
                              max_inputs=16, max_batch_rows=32, max_text_chars=5000,
                              seed_examples=False)
        serve.run(app_for(config, num_replicas=2, num_cpus=1), name=APP_NAME, route_prefix="/")
        yield Cluster(f"127.0.0.1:{port}", store)


@pytest.fixture(scope="module")
def engine(tiny_bert) -> Engine:
    return Engine(tiny_bert)


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(PolyheadError) as e:
        call()
    return e.value.code, e.value.details


def both_replicas(client: PolyheadClient, task: str, want: Callable[[str], bool],
                  deadline_s: float = 120.0) -> tuple[set[str], list[tuple[str, str]]]:
    """Classify from 4 threads until each of the 2 replicas has answered with a version
    that ``want``s (the deadline only stops the wait); the replicas that did, and every
    answer that named another version: (replica, version)."""
    stop_at, done, lock = time.monotonic() + deadline_s, set(), threading.Lock()
    others: list[tuple[str, str]] = []

    def poll() -> None:
        while time.monotonic() < stop_at and len(done) < 2:
            res = client.classify_raw(task, "the movie was good")
            with lock:
                if want(res.version):
                    done.add(res.replica)
                else:
                    others.append((res.replica, res.version))

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done, others


def test_classify_equals_engine(cluster: Cluster, engine: Engine, tiny_bert) -> None:
    spec = tiny_bert.spec
    tasks = {
        "eq-pasta": artifact(spec, "eq-pasta", seed=1, inputs="single"),
        "eq-lora": artifact(spec, "eq-lora", "lora", ("a", "b", "c"), seed=2,
                            config=LoraConfig(r=4, alpha=8.0)),
        "eq-prefix": artifact(spec, "eq-prefix", "prefix", seed=3, inputs="pair"),
        "eq-sparse": artifact(spec, "eq-sparse", "sparse", seed=4, config=SparseConfig(density=0.05)),
        "eq-bitfit": artifact(spec, "eq-bitfit", "bitfit", seed=5, regression=True),
    }
    with cluster.client() as c:
        for data, _ in tasks.values():
            c.upload(data)

    def expected(task_id: str, inputs) -> list[torch.Tensor]:
        loaded = engine.load(tasks[task_id][1])
        return engine.run(inputs, [loaded] * len(inputs))

    def check(c: PolyheadClient, task_id: str) -> None:
        inputs = PAIRS if task_id == "eq-prefix" else TEXTS + ([] if task_id == "eq-pasta" else PAIRS)
        got = c.classify(task_id, inputs)
        for row, logits in zip(got, expected(task_id, inputs), strict=True):
            if task_id == "eq-bitfit":
                assert row["value"] == pytest.approx(logits.item(), abs=ATOL)
                continue
            probs = logits.softmax(-1)
            assert row["label_index"] == int(probs.argmax())
            torch.testing.assert_close(torch.tensor(list(row["scores"].values())), probs,
                                       atol=ATOL, rtol=0)

    with cluster.client() as c:
        for task_id in tasks:
            check(c, task_id)
    # the same from 8 threads at once: requests of every task and kind share batches
    errors: list[BaseException] = []

    def hammer(i: int) -> None:
        try:
            with cluster.client() as c:
                for _ in range(3):
                    for task_id in list(tasks)[i % 5:] + list(tasks)[:i % 5]:
                        check(c, task_id)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_truncation_is_reported(cluster: Cluster, engine: Engine, tiny_bert) -> None:
    data, art = artifact(tiny_bert.spec, "trunc", seed=7)
    long = " ".join(["the movie was good and"] * 40)  # > 64 tokens of the tiny backbone
    with cluster.client() as c:
        c.upload(data)
        short, cut = c.classify("trunc", ["rain", long])
    assert not short["truncated"] and cut["truncated"]
    probs = engine.run([long], [engine.load(art)])[0].softmax(-1)
    torch.testing.assert_close(torch.tensor(list(cut["scores"].values())), probs, atol=ATOL, rtol=0)


def test_error_codes(cluster: Cluster, tiny_bert, tiny_roberta) -> None:
    spec = tiny_bert.spec
    single, _ = artifact(spec, "err-single", seed=11, inputs="single")
    pair, _ = artifact(spec, "err-pair", seed=12, inputs="pair")
    foreign, _ = artifact(tiny_roberta.spec, "err-single", seed=13)  # another backbone
    INV, NF, FP = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                   grpc.StatusCode.FAILED_PRECONDITION)
    with cluster.client() as c:
        v1 = c.upload(single)
        c.upload(pair)
        cases: list[tuple[str, Callable[[], object], grpc.StatusCode, str]] = [
            ("unknown task", lambda: c.classify("no-such-task", "x"), NF, "no-such-task"),
            ("unknown version", lambda: c.classify("err-single", "x", version="v99"), NF, ""),
            ("traversal id", lambda: c.classify("../etc/passwd", "x"), INV, "task_id"),
            ("no inputs", lambda: c.classify("err-single", []), INV, "at least one"),
            ("too many", lambda: c.classify("err-single", ["x"] * 17), INV, "limit is 16"),
            ("oversized", lambda: c.classify("err-single", "x" * 5001), INV, "limit is 5000"),
            ("empty text", lambda: c.classify("err-single", ""), INV, "empty"),
            ("pair to single", lambda: c.classify("err-single", ("a", "b")), INV, "single text"),
            ("single to pair", lambda: c.classify("err-pair", "a"), INV, "text pair"),
            ("empty upload", lambda: c.upload(b""), INV, "artifact"),
            ("random bytes", lambda: c.upload(b"\x00garbage" * 50), INV, "'"),
            ("truncated", lambda: c.upload(single[: len(single) // 2]), INV, "'"),
            ("other backbone", lambda: c.upload(foreign), FP, "'fingerprint'"),
            ("bad alias", lambda: c.set_alias("err-single", "Bad Alias!", v1["version"]), INV, "alias"),
            ("rollback unknown", lambda: c.rollback("err-single", "v42"), NF, ""),
            ("get unknown", lambda: c.get_task("nope"), NF, ""),
            ("delete unknown", lambda: c.delete("nope"), NF, ""),
            ("bad ref", lambda: c.classify("err-single", "x", version="zzzz"), NF, ""),
        ]
        for name, call, want, text in cases:
            code, details = code_of(call)
            assert code == want, f"{name}: {code} {details}"
            assert text in details, f"{name}: {details!r}"
            assert "Traceback" not in details
        # the failed uploads left the first version serving
        assert c.classify("err-single", "rain")[0]["version"] == v1["version"]


def test_auth(cluster: Cluster, tiny_bert) -> None:
    data, _ = artifact(tiny_bert.spec, "auth", seed=21)
    UN = grpc.StatusCode.UNAUTHENTICATED
    with cluster.client(token="") as anon, cluster.client(token="wrong") as wrong:
        assert code_of(lambda: anon.upload(data))[0] == UN
        assert code_of(lambda: wrong.upload(data))[0] == UN
        assert code_of(lambda: anon.list_tasks())[0] == UN
        assert code_of(lambda: wrong.delete("auth"))[0] == UN
        with cluster.client() as admin:
            admin.upload(data)
        assert anon.classify("auth", "rain")[0]["label"] in ("neg", "pos")  # Inference is open
        code, details = code_of(lambda: wrong.rollback("auth", "v1"))
        assert code == UN and "wrong" not in details.split("token")[-1]  # the token is not echoed


def test_upload_rollback_delete_reach_both_replicas(cluster: Cluster, tiny_bert) -> None:
    """Once Upload (or Rollback, or Delete) has returned, every answer from either replica
    names the new state: no request sent afterwards sees the old version."""
    spec = tiny_bert.spec
    with cluster.client() as c:
        v1 = c.upload(artifact(spec, "swap", seed=31)[0])
        seen, _ = both_replicas(c, "swap", lambda v: v == v1["version"])
        assert len(seen) == 2, "requests never reached both replicas"
        v2 = c.upload(artifact(spec, "swap", seed=32)[0])
        seen, stale = both_replicas(c, "swap", lambda v: v == v2["version"])
        assert len(seen) == 2 and not stale, (seen, stale[:5])
        c.rollback("swap", v1["version"][:12])
        seen, stale = both_replicas(c, "swap", lambda v: v == v1["version"])
        assert len(seen) == 2 and not stale, (seen, stale[:5])
        c.delete("swap")
        for _ in range(20):  # every replica answers NOT_FOUND at once
            assert code_of(lambda: c.classify("swap", "rain"))[0] == grpc.StatusCode.NOT_FOUND


def test_50_swaps_under_load(cluster: Cluster, tiny_bert) -> None:
    """A steady stream of Classify calls while 50 uploads and rollbacks land: no call fails,
    and each response names a version that was the latest at some point during the call."""
    spec = tiny_bert.spec
    blobs = [artifact(spec, "churn", seed=100 + i)[0] for i in range(26)]
    admin = cluster.client()
    first = admin.upload(blobs[0])["version"]
    ops: list[tuple[float, float, str]] = [(float("-inf"), float("-inf"), first)]
    calls: list[tuple[float, float, str]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def stream() -> None:
        with cluster.client(token="") as c:
            while not stop.is_set():
                s = time.perf_counter()
                try:
                    v = c.classify_raw("churn", ["the movie was good", "rain"]).version
                except BaseException as e:
                    failures.append(e)
                    continue
                calls.append((s, time.perf_counter(), v))

    def calls_since(t: float) -> int:
        return sum(1 for start, _, _ in calls if start >= t)

    def wait_for_calls(n: int, since: float) -> None:
        """Until ``n`` calls started after ``since`` have answered (the deadline only stops
        the wait: the assertions below say what went wrong)."""
        stop_at = time.monotonic() + 120
        while calls_since(since) < n and not failures and time.monotonic() < stop_at:
            time.sleep(0.01)

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for_calls(4, float("-inf"))  # the stream runs before the first swap
    published = [first]
    for i in range(50):
        s = time.perf_counter()
        if i % 2 == 0:
            v = admin.upload(blobs[1 + i // 2])["version"]
            published.append(v)
        else:
            v = admin.rollback("churn", published[-2])["version"]
        ops.append((s, time.perf_counter(), v))
        time.sleep(0.02)
    wait_for_calls(4, ops[-1][1])  # ... and after the last one
    stop.set()
    for t in threads:
        t.join()
    admin.close()
    assert not failures, failures[:3]
    assert calls_since(ops[-1][1]) >= 4 and calls[0][0] < ops[1][0], "the stream did not run throughout"

    def current_during(s: float, e: float, v: str) -> bool:
        for i, (start, _, version) in enumerate(ops):
            next_end = ops[i + 1][1] if i + 1 < len(ops) else float("inf")
            if version == v and start <= e and s <= next_end:
                return True
        return False

    stale = [c for c in calls if not current_during(*c)]
    assert not stale, f"{len(stale)} of {len(calls)} responses named a version not current: {stale[:3]}"
    last = [v for start, _, v in calls if start >= ops[-1][1]]
    assert set(last) == {ops[-1][2]}, "calls sent after the last swap named another version"


def test_health_and_listing(cluster: Cluster, tiny_bert) -> None:
    with cluster.client() as c:
        c.upload(artifact(tiny_bert.spec, "listed", seed=41)[0])
        c.classify("listed", "rain")
        h = c.health()
        assert h["status"] == "SERVING" and h["fingerprint"] == tiny_bert.spec.fingerprint
        assert h["precision"] == "fp32"
        # both tiers report use and budget; the served version's table rows are on the
        # device, its decoded copy on the host; the tables hold at least those rows
        assert 0 < h["device_bytes"] <= h["device_table_bytes"]
        assert 0 < h["host_bytes"] <= h["host_budget_bytes"]
        assert h["device_budget_bytes"] > 0
        tasks = {t["task_id"]: t for t in c.list_tasks()}
        assert tasks["listed"]["kind"] == "pasta" and tasks["listed"]["latest"]["number"] == 1
        detail = c.get_task("listed")
        assert detail["labels"] == ["neg", "pos"] and len(detail["versions"]) == 1


def test_cli(cluster: Cluster, tiny_bert, tmp_path: Path, capsys) -> None:
    from polyhead.cli import main

    path = tmp_path / "cli.polyhead"
    path.write_bytes(artifact(tiny_bert.spec, "cli-task", seed=51)[0])
    common = ["--server", cluster.address, "--token", TOKEN]
    assert main(["upload", str(path), *common]) == 0
    version = capsys.readouterr().out.split()[3]  # "uploaded cli-task v1 HASH (...) to ..."
    assert main(["tasks", "list", *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"cli-task\tpasta\tv1\t{version[:12]}\t1 version") for line in lines), lines
    assert main(["classify", "--task", "cli-task", "the movie was good", *common]) == 0
    label, score, text = capsys.readouterr().out.rstrip("\n").split("\t")
    assert label in ("neg", "pos") and 0.5 <= float(score) <= 1 and text == "the movie was good"
    assert main(["tasks", "show", "cli-task", *common]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].startswith("cli-task  1 version  labels: neg, pos  inputs: ")
    assert shown[1].split()[:3] == ["v1", version[:12], "pasta"] and shown[1].endswith("latest")
    assert main(["classify", "--task", "cli-task", "a", "--pair", "b", *common[:2]]) == 0
    label, _, text, pair = capsys.readouterr().out.rstrip("\n").split("\t")
    assert label in ("neg", "pos") and (text, pair) == ("a", "b")
    # bad input: a message naming it, exit 2, no traceback
    assert main(["classify", "--task", "missing-task", "x", *common]) == 2
    err = capsys.readouterr().err
    assert "NOT_FOUND" in err and "missing-task" in err and "Traceback" not in err
    assert main(["upload", str(tmp_path / "absent.polyhead"), *common]) == 2
    assert main(["tasks", "delete", "cli-task", "--yes", "--server", cluster.address, "--token", "x"]) == 2
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert main(["tasks", "delete", "cli-task", "--yes", *common]) == 0
    assert capsys.readouterr().out.strip() == "deleted cli-task"
    assert main(["classify", "--task", "cli-task", "x", *common]) == 2


def test_import_peft_serves_peft_logits(cluster: Cluster, tiny_bert, tiny_bert_dir, tmp_path: Path) -> None:
    """The parity proof over the wire: a PEFT LoRA folder imported through ImportPeft
    answers with PeftModel's own probabilities."""
    from tests.test_peft_parity import TEXTS as PEFT_TEXTS
    from tests.test_peft_parity import peft_model

    model, _ = peft_model(tiny_bert_dir, 3, seed=0)
    model.save_pretrained(tmp_path / "adapter")
    with cluster.client() as c:
        info = c.import_peft(tmp_path / "adapter", "peft-task", labels=["x", "y", "z"])
        assert info["kind"] == "lora"
        got = c.classify("peft-task", PEFT_TEXTS)
    for x, row in zip(PEFT_TEXTS, got, strict=True):
        args = (x,) if isinstance(x, str) else x
        with torch.no_grad():
            ref = model(**tiny_bert.tokenizer(*args, return_tensors="pt")).logits[0].softmax(-1)
        torch.testing.assert_close(torch.tensor(list(row["scores"].values())), ref, atol=ATOL, rtol=0)


def test_malformed_wire_requests_are_invalid_argument(cluster: Cluster) -> None:
    """Bytes that do not parse as the request message (bad UTF-8, wrong wire types) are the
    client's fault: INVALID_ARGUMENT, never INTERNAL."""
    from polyhead.v1 import polyhead_pb2 as pb

    good = pb.ClassifyRequest(task_id="abc", inputs=[pb.Input(text="hi")]).SerializeToString()
    bad_utf8 = good.replace(b"abc", b"\xff\xfe\x00")
    wrong_type = b"\x0d\x00\x00\x80\x3f"  # field 1 as a fixed32: parsed as an unknown field
    with grpc.insecure_channel(cluster.address) as channel:
        for method in ("/polyhead.v1.Inference/Classify", "/polyhead.v1.Registry/Upload"):
            call = channel.unary_unary(method)  # raw bytes in and out
            for payload in (bad_utf8, wrong_type, b"\xff" * 7):
                with pytest.raises(grpc.RpcError) as e:
                    call(payload, timeout=30, metadata=(("authorization", f"Bearer {TOKEN}"),))
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, payload)
                if payload != wrong_type and method.endswith("Classify"):
                    assert "does not parse" in (e.value.details() or "")
