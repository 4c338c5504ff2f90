"""Server parts without Ray: adapter bank, auth, config, error mapping, generated code, CLI."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import grpc
import pytest

from polyhead.engine.engine import Encoded
from polyhead.server._private import gen_proto
from polyhead.server._private.auth import Auth, bearer
from polyhead.server._private.errors import InvalidInput, PermissionDenied, Unauthenticated, status_for
from polyhead.server._private.inference import check_form, parse_inputs, softmax
from polyhead.server.bank import AdapterBank, TaskMeta, VersionKey
from polyhead.server.config import ConfigError, Secret, ServerConfig
from polyhead.server.serve_cli import register as register_serve

META = TaskMeta(number=1, labels=("a", "b"), regression=False, inputs="any")


class FakeTask:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


class Art:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


class FakeLoader:
    """Loads by recording the thread it ran on; ``unload`` records the task."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.released: list[object] = []

    def load(self, artifact, over_budget: bool = False):
        self.threads.append(threading.current_thread().name)
        return FakeTask(artifact.nbytes)

    def unload(self, task) -> None:
        self.released.append(task)


def make_bank(device_budget: int, host_budget: int, size: int = 100, delay: float = 0.0,
              loader: FakeLoader | None = None):
    fetched: list[VersionKey] = []
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def fetch(key: VersionKey):
        time.sleep(delay)
        with lock:
            fetched.append(key)
        return Art(size), META

    bank = AdapterBank(fetch, loader or FakeLoader(), device_budget=device_budget,  # type: ignore[arg-type]
                       host_budget=host_budget,
                       listener=lambda e, k: events.append((e.value, k.task_id)))
    return bank, fetched, events


def test_bank_loads_every_version_off_the_event_loop() -> None:
    """A miss and a publish (``put``) take the one load path: the table write runs on the
    executor, never on the event loop's thread."""
    loader = FakeLoader()
    bank, fetched, events = make_bank(10_000, 10_000, loader=loader)

    async def main() -> str:
        await bank.get(VersionKey("miss", "v"))
        res = await bank.put(VersionKey("published", "v"), Art(50), META)  # type: ignore[arg-type]
        assert bank.peek(VersionKey("published", "v")) is res and res.nbytes == 50
        assert await bank.put(VersionKey("published", "v"), Art(50), META) is res  # type: ignore[arg-type]
        return threading.current_thread().name

    loop_thread = asyncio.run(main())
    assert len(loader.threads) == 2 and loop_thread not in loader.threads
    assert fetched == [VersionKey("miss", "v")]  # a publish is not read back from the store
    assert events == [("miss", "miss"), ("hit", "published")]


def test_bank_loads_once_under_concurrent_misses() -> None:
    bank, fetched, events = make_bank(10_000, 10_000, delay=0.05)

    async def main():
        key = VersionKey("t", "v1")
        got = await asyncio.gather(*[bank.get(key) for _ in range(8)])
        assert all(g is got[0] for g in got)

    asyncio.run(main())
    assert len(fetched) == 1
    assert [e for e, _ in events].count("miss") == 1


def test_bank_miss_does_not_block_other_tasks() -> None:
    """A hit is answered while another task's load is still running (held inside the fetch
    until the hit has returned): a miss never blocks the event loop."""
    bank, _, _ = make_bank(10_000, 10_000)
    inside, release = threading.Event(), threading.Event()

    async def main():
        hot = VersionKey("hot", "v")
        await bank.get(hot)
        fetch = bank._source

        def held(key):
            inside.set()
            release.wait(60)  # a deadline only so that a broken bank cannot hang the suite
            return fetch(key)

        bank._source = held
        miss = asyncio.create_task(bank.get(VersionKey("cold", "v")))
        while not inside.is_set():
            await asyncio.sleep(0.001)
        got = await asyncio.wait_for(bank.get(hot), 60)  # a hit while the cold load runs
        assert got.key == hot and not miss.done() and not release.is_set()
        release.set()
        assert (await miss).key == VersionKey("cold", "v")

    try:
        asyncio.run(main())
    finally:
        release.set()


def test_bank_lru_evicts_to_host_then_drops() -> None:
    # 100 bytes per version on each tier: the device holds 2, the host 3 copies, counting
    # the copies that device entries keep.
    bank, fetched, events = make_bank(device_budget=250, host_budget=350)

    async def main():
        for t in "abc":
            await bank.get(VersionKey(t, "v"))
        # device holds 2 (b, c); a went to the host tier; the host holds all three copies
        assert [(k.task_id, tier) for k, tier, _, _ in bank.resident()] == [
            ("b", "device"), ("c", "device"), ("a", "host")]
        assert (bank.device_bytes, bank.host_bytes) == (200, 300)
        await bank.get(VersionKey("a", "v"))  # from host: no store read
        assert len(fetched) == 3
        await bank.get(VersionKey("d", "v"))  # evicts c; the host drops b, its oldest copy
        assert bank.device_bytes <= 250 and bank.host_bytes <= 350
        assert ("evict_host", "b") in events and ("evict_device", "c") in events
        await bank.get(VersionKey("b", "v"))  # dropped from both tiers: read again
        assert fetched.count(VersionKey("b", "v")) == 2

    asyncio.run(main())


def test_bank_frees_a_used_version_only_when_its_last_user_lets_go() -> None:
    loader = FakeLoader()
    released = loader.released
    bank = AdapterBank(lambda key: (Art(100), META), loader,  # type: ignore[arg-type]
                       device_budget=150, host_budget=0)

    async def main():
        async with bank.using(VersionKey("a", "v")) as a:
            b = await bank.get(VersionKey("b", "v"))  # evicts a while a request holds it
            assert bank.peek(VersionKey("a", "v")) is None and bank.device_bytes == 100
            assert released == []  # a's slots still hold its rows
        assert released == [a.task]
        await bank.get(VersionKey("c", "v"))  # evicts b, which nobody holds: freed at once
        assert released == [a.task, b.task]

    asyncio.run(main())


def test_bank_keeps_an_entry_larger_than_the_budget_and_discards() -> None:
    bank, _, _ = make_bank(device_budget=50, host_budget=0, size=100)

    async def main():
        r = await bank.get(VersionKey("big", "v1"))
        assert bank.peek(VersionKey("big", "v1")) is r
        await bank.get(VersionKey("big", "v2"))
        assert bank.peek(VersionKey("big", "v1")) is None
        assert bank.discard("big") == 1 and bank.device_bytes == 0

    asyncio.run(main())


def test_auth() -> None:
    auth = Auth("reg", "inf")
    auth.check("registry", [("authorization", "Bearer reg")])
    auth.check("inference", [("authorization", "Bearer inf")])
    auth.check("inference", [("authorization", "bearer reg")])  # the admin token opens both
    with pytest.raises(Unauthenticated):
        auth.check("registry", [])
    with pytest.raises(Unauthenticated):
        auth.check("registry", [("authorization", "Bearer nope")])
    with pytest.raises(PermissionDenied):
        auth.check("registry", [("authorization", "Bearer inf")])
    Auth("reg", None).check("inference", [])  # no inference token: open
    assert bearer([("authorization", "Basic abc")]) is None


def test_config_refuses_open_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLYHEAD_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="--insecure"):
        ServerConfig().check_auth()
    ServerConfig(insecure=True).check_auth()
    ServerConfig(token=Secret("t")).check_auth()
    monkeypatch.setenv("POLYHEAD_TOKEN", "from-env")
    assert ServerConfig().registry_token() == "from-env"
    assert "t0ps3cret" not in repr(ServerConfig(token=Secret("t0ps3cret")))
    with pytest.raises(ConfigError, match="unknown server options"):
        ServerConfig.from_args({"stroe": "x"})
    with pytest.raises(ConfigError, match="max_inputs"):
        ServerConfig(max_inputs=100, max_batch_rows=10)
    monkeypatch.setenv("POLYHEAD_STORE_JOURNAL", "nfs")
    with pytest.raises(ConfigError, match="unknown store journal mode 'nfs'"):
        ServerConfig(insecure=True)


def test_serve_cli_never_opens_the_registry(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Without a configured token `polyhead serve` makes one (user-only file) rather than
    start with the Registry open; a restart reuses it."""
    import argparse
    import stat

    from polyhead.server.config import generated_token, saved_token, token_file

    monkeypatch.delenv("POLYHEAD_TOKEN", raising=False)
    monkeypatch.setenv("POLYHEAD_TOKEN_FILE", str(tmp_path / "dir" / "token"))
    assert saved_token() is None
    token = generated_token()
    assert len(token) >= 24 and saved_token() == token == generated_token()
    assert stat.S_IMODE(token_file().stat().st_mode) == 0o600
    parser = argparse.ArgumentParser()
    register_serve(parser.add_subparsers())
    assert parser.parse_args(["serve", "--token", "t"]).token == "t"
    with pytest.raises(SystemExit):  # --token and --insecure exclude each other
        parser.parse_args(["serve", "--token", "t", "--insecure"])


def test_serve_starts_ray_again_after_a_slow_raylet_only(capsys: pytest.CaptureFixture[str]) -> None:
    """Ray gives its raylet a fixed 30 s to register; on a busy host `polyhead serve` starts
    it again (twice at most) rather than fail, and lets any other error through at once."""
    from polyhead.server.serve_cli import RAY_START_TRIES, start_ray

    class FakeRay:
        def __init__(self, errors: list[Exception]) -> None:
            self.errors, self.calls = errors, []

        def init(self, **kw: object) -> None:
            self.calls.append(kw)
            if self.errors:
                raise self.errors.pop(0)

        def shutdown(self) -> None:
            self.calls.append("shutdown")

    slow = Exception("The current node timed out during startup. This could happen because ...")
    ray = FakeRay([slow, slow])
    start_ray(ray, address="local", num_cpus=2)
    init = {"address": "local", "num_cpus": 2}
    assert ray.calls == [init, "shutdown", init, "shutdown", init]
    assert "starting it again" in capsys.readouterr().err
    ray = FakeRay([slow] * RAY_START_TRIES)
    with pytest.raises(Exception, match="timed out during startup"):
        start_ray(ray, address="local")
    ray = FakeRay([ValueError("bad resources")])
    with pytest.raises(ValueError):
        start_ray(ray, address="local")
    assert len(ray.calls) == 1


def test_status_codes_for_errors() -> None:
    from polyhead.engine.errors import ArtifactError
    from polyhead.store import AmbiguousRefError, NotFoundError, StoreError

    cases = [
        (InvalidInput("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFoundError("x"), grpc.StatusCode.NOT_FOUND),
        (AmbiguousRefError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (ArtifactError("not_safetensors", "x"), grpc.StatusCode.INVALID_ARGUMENT),
        (ArtifactError("fingerprint", "x"), grpc.StatusCode.FAILED_PRECONDITION),
        (StoreError("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (RuntimeError("bug"), grpc.StatusCode.INTERNAL),
    ]
    for exc, code in cases:
        assert status_for(exc)[0] == code, exc
    assert "'fingerprint'" in status_for(ArtifactError("fingerprint", "x"))[1]
    assert "bug" not in status_for(RuntimeError("bug"))[1]  # internals stay in the log


def test_input_checks() -> None:
    from polyhead.v1 import polyhead_pb2 as pb

    req = pb.ClassifyRequest(task_id="t", inputs=[pb.Input(text="a"), pb.Input(text="b", pair="c")])
    assert parse_inputs(req, 4, 100) == ["a", ("b", "c")]
    for bad, match in [([], "at least one"), ([pb.Input(text="")], "empty"),
                       ([pb.Input(text="a", pair=" ")], "pair: empty"),
                       ([pb.Input(text="x" * 101)], "limit is 100"),
                       ([pb.Input(text="a")] * 5, "limit is 4")]:
        with pytest.raises(InvalidInput, match=match):
            parse_inputs(pb.ClassifyRequest(task_id="t", inputs=bad), 4, 100)
    single = TaskMeta(1, ("a",), False, "single")
    with pytest.raises(InvalidInput, match="single text"):
        check_form(["a", ("b", "c")], "t", single)
    assert softmax([0.0, 0.0]) == [0.5, 0.5]


def test_softmax_and_response_keep_label_order() -> None:
    """Asymmetric logits: each score is its own label's, the argmax names the right label,
    and the scores are exactly softmax's (a reversed or shifted list would show)."""
    from types import SimpleNamespace

    from polyhead.server._private.inference import response

    logits = [2.0, -1.0, 0.5]
    e = [math.exp(x) for x in logits]
    want = [x / sum(e) for x in e]
    assert softmax(logits) == pytest.approx(want, rel=1e-12)
    assert softmax([1000.0, 999.0]) == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.e)])
    meta = TaskMeta(number=3, labels=("neg", "neu", "pos"), regression=False, inputs="any")
    res = SimpleNamespace(key=VersionKey("t", "v1"), meta=meta)
    out = response(res, [(logits, False), ([-3.0, 0.0, 4.0], True), ([0.0, 5.0, 1.0], False)],  # type: ignore[arg-type]
                   "r0")
    assert list(out.labels) == ["neg", "neu", "pos"] and out.version_number == 3
    assert [(p.label, p.label_index, p.truncated) for p in out.predictions] == [
        ("neg", 0, False), ("pos", 2, True), ("neu", 1, False)]
    assert list(out.predictions[0].scores) == pytest.approx(want, rel=1e-6)  # float32 on the wire
    reg = SimpleNamespace(key=VersionKey("t", "v2"), meta=TaskMeta(1, (), True, "any"))
    got = response(reg, [([0.25], False), ([-1.5], False)], "r0")  # type: ignore[arg-type]
    assert [(p.label_index, p.value) for p in got.predictions] == [(-1, 0.25), (-1, -1.5)]


def test_generated_code_is_fresh() -> None:
    assert gen_proto.stale_files() == []


def test_seed_examples_only_into_an_empty_store(tiny_bert, tiny_roberta, tmp_path) -> None:
    """Examples go into an empty store only; one for another backbone is skipped, a broken
    one stops the replica with its file named (never a server that silently serves nothing)."""
    from polyhead.engine import ArtifactError, TaskArtifact
    from polyhead.server._private.replica import seed_examples
    from polyhead.store import Store, encode_artifact, new_manifest

    examples = tmp_path / "examples"
    examples.mkdir()
    for name, bb in (("good", tiny_bert), ("other-backbone", tiny_roberta)):
        art = TaskArtifact.random("pasta", bb.spec, 2)
        manifest = new_manifest(name, art, bb.spec, labels=["neg", "pos"])
        (examples / f"{name}.polyhead").write_bytes(encode_artifact(manifest, art))
    store = Store(tmp_path / "store", tiny_bert.spec)
    assert [v.task_id for v in seed_examples(store, examples)] == ["good"]
    assert [t.task_id for t in store.list_tasks()] == ["good"]
    assert seed_examples(store, examples) == []  # not empty any more: left alone
    assert seed_examples(Store(tmp_path / "other", tiny_bert.spec), tmp_path / "none") == []
    (examples / "broken.polyhead").write_bytes(b"not an artifact")
    with pytest.raises(ArtifactError, match=r"broken\.polyhead"):
        seed_examples(Store(tmp_path / "third", tiny_bert.spec), examples)


@pytest.mark.integration
def test_shipped_example_serves_on_the_packaged_backbone(real_backbone, tmp_path) -> None:
    """The README's first command: `make serve` publishes `sentiment`, and it answers the
    README's sentences (the examples README's plain cases) on the packaged MiniLM."""
    from polyhead.engine import Engine
    from polyhead.server._private.replica import EXAMPLES, seed_examples
    from polyhead.store import Store

    store = Store(tmp_path / "store", real_backbone.spec)
    assert [v.task_id for v in seed_examples(store, EXAMPLES)] == ["sentiment"]
    stored = store.get("sentiment")
    assert stored.manifest.labels == ["negative", "positive"]
    eng = Engine(real_backbone)
    texts = ["I really enjoyed the meal.", "The film was dreadful."]
    logits = eng.run(texts, [eng.load(stored.artifact)] * 2)
    assert [stored.manifest.labels[int(x.argmax())] for x in logits] == ["positive", "negative"]


def test_client_retry_policy() -> None:
    """UNAVAILABLE is retried for calls safe to repeat, INTERNAL only for read-only ones;
    DeleteTask and client errors never."""
    from concurrent import futures

    from polyhead.client import PolyheadClient, PolyheadError
    from polyhead.v1 import polyhead_pb2 as pb
    from polyhead.v1 import polyhead_pb2_grpc as pb_grpc

    calls: dict[str, int] = {}
    plan: dict[str, list[grpc.StatusCode]] = {}

    def answer(name: str, context, response):
        calls[name] = calls.get(name, 0) + 1
        codes = plan.get(name, [])
        if codes:
            context.abort(codes.pop(0), f"{name} fails")
        return response

    class Inference(pb_grpc.InferenceServicer):
        def Classify(self, request, context):
            res = pb.ClassifyResponse(version="v", labels=["a"])
            res.predictions.add(label="a", scores=[1.0])
            return answer("Classify", context, res)

    class Registry(pb_grpc.RegistryServicer):
        def DeleteTask(self, request, context):
            return answer("DeleteTask", context, pb.DeleteTaskResponse(task_id=request.task_id))

        def Rollback(self, request, context):
            return answer("Rollback", context, pb.VersionInfo(task_id=request.task_id))

    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_InferenceServicer_to_server(Inference(), server)
    pb_grpc.add_RegistryServicer_to_server(Registry(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    U, INT, INV = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                   grpc.StatusCode.INVALID_ARGUMENT)
    try:
        with PolyheadClient(f"127.0.0.1:{port}", retries=3, backoff_s=0.001) as c:
            plan["Classify"] = [U, INT, U]
            assert c.classify("t", "x")[0]["label"] == "a" and calls["Classify"] == 4
            plan["Classify"] = [INV]
            with pytest.raises(PolyheadError):
                c.classify("t", "x")
            assert calls["Classify"] == 5
            plan["Rollback"] = [U, U]
            assert c.rollback("t", "v1")["task_id"] == "t" and calls["Rollback"] == 3
            plan["Rollback"] = [INT]
            with pytest.raises(PolyheadError):  # a write is not retried on INTERNAL
                c.rollback("t", "v1")
            plan["DeleteTask"] = [U]
            with pytest.raises(PolyheadError) as e:
                c.delete("t")
            assert e.value.code == U and calls["DeleteTask"] == 1
            plan["Classify"] = [U] * 10
            with pytest.raises(PolyheadError):  # gives up after `retries`
                c.classify("t", "x")
            assert calls["Classify"] == 9
    finally:
        server.stop(None)


def test_batcher_merges_requests_that_queue_during_a_forward() -> None:
    from polyhead.server._private.batcher import Batcher
    from polyhead.server._private.inference import BatchStats

    sizes: list[int] = []
    threads: set[str] = set()
    running, release = threading.Event(), threading.Event()

    def tokenize(texts):
        threads.add("tokenize:" + threading.current_thread().name)
        return [Encoded([1] * len(t), [0] * len(t), False) for t in texts]

    def forward(items):
        threads.add("forward:" + threading.current_thread().name)
        if not release.is_set():  # a held forward: later requests queue behind it
            running.set()
            release.wait(60)  # a deadline only so that a broken batcher cannot hang the suite
        if any(len(it.enc[0].ids) == 4 for it in items):  # "boom"
            raise RuntimeError("engine fault")
        sizes.append(sum(len(it) for it in items))
        return [[([1.0], False)] * len(it) for it in items], BatchStats(0, 0, {}, 0, 0)

    async def run(b: Batcher, texts: list[str]):
        return await b.run(await b.encode(texts), None)  # type: ignore[arg-type]

    async def held(b: Batcher, queued) -> list:
        """Hold a forward of one row while ``queued()``'s requests queue; then release."""
        running.clear()
        release.clear()
        first = asyncio.create_task(run(b, ["x"]))
        while not running.is_set():
            await asyncio.sleep(0.001)
        tasks = queued()
        while b.queued_rows < sum(n for _, n in tasks):
            await asyncio.sleep(0.001)
        release.set()
        assert len(await first) == 1
        return await asyncio.gather(*[t for t, _ in tasks])

    async def main():
        b = Batcher(tokenize, forward, max_rows=8, max_tokens=10_000, fill_wait_s=0,
                    threads=1, on_batch=lambda s: None)

        def twelve():
            return [(asyncio.create_task(run(b, ["x", "x"])), 2) for _ in range(6)]

        assert all(len(r) == 2 for r in await held(b, twelve))  # 12 queued rows: 8 + 4
        cancelled = asyncio.create_task(run(b, ["x"]))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        assert cancelled.cancelled()
        with pytest.raises(RuntimeError, match="engine fault"):
            await run(b, ["boom"])
        assert len(await run(b, ["xyz"] * 3)) == 3  # still serving after a fault
        b.max_tokens = 10  # the token budget bounds a batch too: 3 x 5 tokens -> 2 + 1

        def fives():
            return [(asyncio.create_task(run(b, ["xxxxx"])), 1) for _ in range(3)]

        await held(b, fives)
        b.close()

    try:
        asyncio.run(main())
    finally:
        release.set()
    assert sizes == [1, 8, 4, 3, 1, 2, 1], sizes  # the cancelled row in none
    assert {t.split(":")[0] for t in threads} == {"tokenize", "forward"}
    assert not {t.split(":")[1] for t in threads} & {threading.current_thread().name}



def test_batcher_hands_each_request_its_own_rows() -> None:
    """Requests of 1, 3 and 2 rows queue behind a held forward and run as one batch through
    ``inference.forward`` (its split into requests included) over a fake engine whose
    logits name their row: every request gets exactly its rows, in its order."""
    from types import SimpleNamespace

    import torch

    from polyhead.server._private import inference
    from polyhead.server._private.batcher import Batcher

    running, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    class Engine:
        max_batch_size = 4  # the 7 rows take two engine buckets

        def run_encoded(self, enc, tasks):
            assert len(enc) == len(tasks)
            return [torch.tensor([float(e.ids[0]), float(t.n), -float(e.ids[0])]) for e, t in
                    zip(enc, tasks, strict=True)]

    def forward(items):
        if not release.is_set():
            running.set()
            release.wait(60)  # a deadline only so that a broken batcher cannot hang the suite
        batches.append([len(it) for it in items])
        return inference.forward(Engine(), items)  # type: ignore[arg-type]

    def tokenize(texts):  # "12" -> ids [12, 12, ...]: lengths differ by request
        return [Encoded([int(t)] * (1 + int(t) % 5), [0] * (1 + int(t) % 5), int(t) % 2 == 1)
                for t in texts]

    def task(n: int):
        return SimpleNamespace(n=n, kind=SimpleNamespace(name="k"))

    async def main():
        b = Batcher(tokenize, forward, max_rows=16, max_tokens=10_000, fill_wait_s=0,
                    threads=1, on_batch=lambda s: None)

        async def ask(texts: list[str], n: int):
            return await b.run(await b.encode(texts), task(n))  # type: ignore[arg-type]

        first = asyncio.create_task(ask(["1"], 0))
        while not running.is_set():
            await asyncio.sleep(0.001)
        reqs = {1: ["10"], 2: ["20", "21", "22"], 3: ["30", "31"], 4: ["40"]}
        tasks = {n: asyncio.create_task(ask(t, n)) for n, t in reqs.items()}
        while b.queued_rows < 7:
            await asyncio.sleep(0.001)
        release.set()
        assert await first == [([1.0, 0.0, -1.0], True)]
        for n, t in reqs.items():
            want = [([float(x), float(n), -float(x)], int(x) % 2 == 1) for x in t]
            assert await tasks[n] == want, (n, await tasks[n])
        await asyncio.sleep(0)  # the batch's counters are added after its results are set
        assert (b.counters.batches, b.counters.rows) == (2, 8)  # what Health reports
        b.close()

    try:
        asyncio.run(main())
    finally:
        release.set()
    assert batches == [[1], [1, 3, 2, 1]]  # the four requests shared one forward


def test_classify_stream_holds_at_most_its_window_and_answers_in_order() -> None:
    """A client streams 500 messages at a slow fake batcher that answers the newest
    request first: the service pulls a message only when fewer than its window are
    pending (so a fast client is held back, not buffered), and still answers in order."""
    import contextlib
    from types import SimpleNamespace

    from polyhead.server._private.services import STREAM_WINDOW, InferenceService
    from polyhead.v1 import polyhead_pb2 as pb

    n = 500
    sent = answered = 0
    most_pending = most_in_batcher = 0
    waiting: list[tuple[str, asyncio.Future]] = []

    class SlowBatcher:
        async def encode(self, inputs):
            return list(inputs)

        async def run(self, enc, task, tenant="default"):
            nonlocal most_in_batcher
            fut = asyncio.get_running_loop().create_future()
            waiting.append((enc[0], fut))
            most_in_batcher = max(most_in_batcher, len(waiting))
            return await fut

    async def driver(stop: asyncio.Event) -> None:
        idle = 0
        while not stop.is_set():
            await asyncio.sleep(0)
            idle += 1
            if waiting and (len(waiting) >= STREAM_WINDOW or idle > 100):  # a message's way in: ~25 turns
                text, fut = waiting.pop()  # newest first: out of order on purpose
                fut.set_result([([float(text[1:]), 0.0], False)])
                idle = 0

    @contextlib.asynccontextmanager
    async def using(key):
        yield SimpleNamespace(key=key, meta=TaskMeta(1, (), True, "any"), task=None)  # regression

    async def resolve(task_id, ref):
        return SimpleNamespace(task_id=task_id, version="v1")

    parts = SimpleNamespace(config=SimpleNamespace(max_inputs=4, max_text_chars=100),
                            resolver=SimpleNamespace(resolve=resolve),
                            bank=SimpleNamespace(using=using), batcher=SlowBatcher(), replica="r0",
                            keys=SimpleNamespace(limits={}),  # no tenant quotas
                            metrics=SimpleNamespace(tenant_rows=lambda tenant, rows: None))

    async def requests():
        nonlocal sent, most_pending
        for i in range(n):
            sent += 1
            most_pending = max(most_pending, sent - answered)
            yield pb.ClassifyRequest(task_id="t", inputs=[pb.Input(text=f"m{i}")])

    async def main() -> list[float]:
        nonlocal answered
        stop = asyncio.Event()
        drive = asyncio.create_task(driver(stop))
        got = []
        async for r in InferenceService(parts).classify_stream(requests()):  # type: ignore[arg-type]
            answered += 1
            got.append(r.predictions[0].value)
        stop.set()
        await drive
        return got

    got = asyncio.run(main())
    assert sent == answered == n
    assert got == [float(i) for i in range(n)]  # message i's value is i: in order
    assert most_pending == most_in_batcher == STREAM_WINDOW
