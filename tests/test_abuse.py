"""Issue 30: what a client sends costs no more than it should, and no client mistake is a
500 / INTERNAL or a traceback. In process: the HTTP handler, the gate and the services over
stub parts, the store; the probe's cases come from tests/abuse_corpus.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from polyhead.engine.engine import Encoded
from polyhead.engine.errors import ArtifactError
from polyhead.server._private import http as http_route
from polyhead.server._private import registry_rpcs as registry
from polyhead.server._private.auth import Auth
from polyhead.server._private.decoders import MalformedRequest, Unparsed, _lenient, limit_for
from polyhead.server._private.errors import status_for
from polyhead.server._private.gate import StreamAborted, rpc, rpc_stream, rpc_upload
from polyhead.server._private.http import HttpLimits, http_classify
from polyhead.server._private.resolver import BoundedCache, Resolver
from polyhead.server._private.services import InferenceService, Parts
from polyhead.server._private.streams import SETTLE_MESSAGES, OneLineAborts, StreamLimits, client_of
from polyhead.server.config import ServerConfig
from polyhead.store import NotFoundError, Store
from polyhead.store.keys import ApiKey, key_hash, key_id_of, new_key
from polyhead.store.manifest import Manifest
from polyhead.v1 import polyhead_pb2 as pb
from tests import abuse_corpus as corpus
from tests.test_store_support import good_parts

READ = "read-token"
ADMIN = "admin-token"


# -- stubs: a replica's gate and Classify over a store that counts its lookups ----------------

class CountingStore:
    def __init__(self) -> None:
        self.resolved: list[tuple[str, str]] = []

    def generation(self) -> int:
        return 0

    def resolve(self, task_id: str, ref: str) -> Any:
        self.resolved.append((task_id, ref))
        raise NotFoundError(f"task {task_id!r:.80} has no version or alias {ref!r:.80}")


class Metrics:
    def __init__(self) -> None:
        self.codes: list[str] = []

    def request(self, method: str, task: str, code: str, ms: float) -> None:
        self.codes.append(code)

    def tenant_request(self, tenant: str, code: str, rows: int, ms: float) -> None:
        pass

    def tenant_rejected(self, tenant: str, quota: str) -> None:
        pass


class Replica:
    """The gate and the Inference service as a replica wires them, minus the engine."""

    def __init__(self, inference_token: str | None = READ, registry_token: str | None = ADMIN,
                 idle_s: float = 30.0, per_client: int = 2) -> None:
        self.store = CountingStore()
        self.auth = Auth(registry_token, inference_token)
        self.metrics = Metrics()
        self.streams = StreamLimits(idle_s, per_client)
        self.resolver = Resolver(self.store, ThreadPoolExecutor(1))  # type: ignore[arg-type]
        parts = Parts(ServerConfig(insecure=True), "stub", "tiny", 1, None, self.store,  # type: ignore[arg-type]
                      None, self.resolver, None, self.metrics, None)  # type: ignore[arg-type]
        self.inference = InferenceService(parts)

    @rpc("inference", pb.ClassifyResponse)
    async def Classify(self, request: pb.ClassifyRequest) -> pb.ClassifyResponse:
        return await self.inference.classify(request)

    @rpc("inference", pb.HealthResponse, admin_view=True)
    async def Health(self, request: pb.HealthRequest, admin: bool = False) -> pb.HealthResponse:
        return pb.HealthResponse(status="SERVING", replica="admin" if admin else "public")

    @rpc_stream("inference")
    async def ClassifyStream(self, requests: Any) -> Any:
        async for r in requests:
            yield pb.ClassifyResponse(task_id=r.task_id)

    @rpc_upload("publish", pb.DatasetInfo)
    async def UploadDataset(self, requests: Any) -> pb.DatasetInfo:
        return pb.DatasetInfo(rows=len([r async for r in requests]))

    async def http(self, request: Request) -> Any:
        return await http_classify(
            self.Classify, request, lambda ctx: self.auth.check("inference", ctx.invocation_metadata()),
            HttpLimits(max_body=1 << 20))


class Context:
    """The part of grpc's servicer context the gate uses."""

    def __init__(self, token: str | None = READ, peer: str = "ipv4:127.0.0.1:5000") -> None:
        self.md = [("authorization", f"Bearer {token}")] if token else []
        self._peer, self.code, self._details = peer, grpc.StatusCode.OK, ""

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self.md

    def peer(self) -> str:
        return self._peer

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str:
        return self._details


def http_request(body: bytes = b"", token: str | None = READ, chunks: list[bytes] | None = None,
                 length: int | None = None) -> tuple[Request, list[int]]:
    """A starlette request; the list it returns counts the body's reads."""
    headers = [(b"content-type", b"application/json")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope = {"type": "http", "method": "POST", "path": "/v1/classify", "headers": headers,
             "query_string": b"", "scheme": "http", "server": ("test", 80), "root_path": ""}
    parts, reads = list(chunks if chunks is not None else [body]), []

    async def receive() -> dict[str, Any]:
        reads.append(1)
        chunk = parts.pop(0) if parts else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(parts)}

    return Request(scope, receive), reads


class LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        fmt = logging.Formatter()
        return [fmt.format(r) for r in self.records if r.exc_info or "Traceback" in r.getMessage()]


@pytest.fixture
def logs() -> Iterator[LogRecords]:
    handler, root = LogRecords(), logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def post(replica: Replica, body: bytes, token: str | None = READ) -> tuple[int, dict[str, Any]]:
    request, _ = http_request(body, token)
    response = asyncio.run(replica.http(request))
    return response.status_code, json.loads(response.body)


# -- B1: HTTP bodies ------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "body"), corpus.HTTP_BODIES, ids=[c[0] for c in corpus.HTTP_BODIES])
def test_http_body_a_client_got_wrong_is_a_400(name: str, body: bytes, logs: LogRecords) -> None:
    replica = Replica()
    status, out = post(replica, body)
    assert status == 400, (name, status, out)
    assert out["code"] == "INVALID_ARGUMENT" and len(out["message"]) < 400
    assert not logs.tracebacks()
    assert replica.store.resolved == []  # refused before any lookup


def test_http_token_is_checked_before_the_body_is_read() -> None:
    replica = Replica()
    for token, code in ((None, 401), ("wrong", 401)):
        request, reads = http_request(b"null" * 1000, token)
        response = asyncio.run(replica.http(request))
        assert response.status_code == code
        assert reads == []  # not one chunk of the body was received


def test_http_body_over_the_limit_is_refused_before_it_is_read_or_parsed() -> None:
    replica = Replica()
    request, reads = http_request(length=(1 << 20) + 1)  # Content-Length alone decides
    response = asyncio.run(replica.http(request))
    assert response.status_code == 413 and reads == []
    chunk = b" " * (256 << 10)  # no Content-Length: the read stops at the limit
    request, reads = http_request(chunks=[chunk] * 64)
    response = asyncio.run(replica.http(request))
    assert response.status_code == 413 and "limit" in json.loads(response.body)["message"]
    assert len(reads) <= 5  # 4 chunks fill the 1 MB limit, the 5th passes it; 59 never read


def test_http_too_many_inputs_are_refused_before_the_message_is_built(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """580,000 inputs took ParseDict seconds to build before the count was checked."""
    built: list[int] = []
    parse_dict = http_route.json_format.ParseDict

    def spy(body: Any, message: Any) -> Any:
        built.append(len(body.get("inputs", [])))
        return parse_dict(body, message)

    monkeypatch.setattr(http_route.json_format, "ParseDict", spy)
    inputs = [{"text": "a"}] * 65
    status, out = post(Replica(), json.dumps({"task_id": "sentiment", "inputs": inputs}).encode())
    assert status == 400 and out["code"] == "INVALID_ARGUMENT"
    assert "65 inputs" in out["message"] and "the limit is 64" in out["message"]
    assert built == []  # refused from the decoded JSON's count
    post(Replica(), json.dumps({"task_id": "sentiment", "inputs": inputs[:64]}).encode())
    assert built == [64]  # at the limit the message is built (the spy sees it)


def test_http_body_is_parsed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing on the loop stalled every gRPC call on the replica while it ran."""
    seen: list[tuple[str, bool]] = []
    parse_body = http_route.parse_body

    def spy(raw: bytes, max_inputs: int) -> pb.ClassifyRequest:
        seen.append((threading.current_thread().name, asyncio._get_running_loop() is not None))
        return parse_body(raw, max_inputs)

    monkeypatch.setattr(http_route, "parse_body", spy)
    loop_thread = threading.current_thread().name  # asyncio.run runs the loop here
    status, _ = post(Replica(), b'{"task_id": "sentiment", "inputs": [{"text": "a"}]}')
    assert status == 404  # parsed, then looked up: the stub store has no tasks
    assert len(seen) == 1
    thread, on_a_loop = seen[0]
    assert thread != loop_thread and not on_a_loop


def stalled_request(first: bytes, trickle: bool) -> Request:
    """A request whose body's first chunk arrives, then nothing (or one byte at a time)."""
    sent = [first]

    async def receive() -> dict[str, Any]:
        if sent:
            return {"type": "http.request", "body": sent.pop(), "more_body": True}
        if not trickle:
            await asyncio.Event().wait()  # the client never sends the rest
        await asyncio.sleep(0.001)
        return {"type": "http.request", "body": b" ", "more_body": True}

    return Request(http_request(length=1000)[0].scope, receive)


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickling"])
def test_http_body_that_stops_arriving_is_answered_408(trickle: bool) -> None:
    """2,100 sockets that sent `{` of a 1000-byte body held every replica slot for good."""
    replica = Replica()

    async def call() -> Any:
        request = stalled_request(b"{", trickle)
        limits = HttpLimits(max_body=1 << 20, body_timeout_s=0.05)
        handler = http_classify(replica.Classify, request, None, limits)
        return await asyncio.wait_for(handler, 5)  # only so that a hang fails, not a bound

    response = asyncio.run(call())
    assert response.status_code == 408
    out = json.loads(response.body)
    assert out["code"] == "REQUEST_TIMEOUT" and "within 0.05 s" in out["message"]
    assert response.headers["connection"] == "close"
    assert replica.store.resolved == []


def test_one_client_sends_at_most_its_cap_of_http_bodies_at_once() -> None:
    """The 408 deadline alone let 2,100 slow bodies hold every replica slot for 30 s at a
    time; one client (address, API key) now sends at most max_streams_per_client at once."""
    from polyhead.server._private.streams import StreamLimits

    replica = Replica()
    bodies = StreamLimits(60, 2, "HTTP request bodies of this client are arriving",
                          "send a body whole before the next")

    async def call(timeout_s: float) -> Any:
        limits = HttpLimits(max_body=1 << 20, body_timeout_s=timeout_s)
        return await http_classify(replica.Classify, stalled_request(b"{", False), None, limits,
                                   bodies=bodies)

    async def run() -> tuple[Any, Any]:
        slow = [asyncio.ensure_future(call(60)) for _ in range(2)]
        for _ in range(20):  # (event-loop turns) both are reading their bodies
            await asyncio.sleep(0)
        third = await asyncio.wait_for(call(60), 5)  # only so that a hang fails
        for task in slow:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)
        return third, await asyncio.wait_for(call(0.05), 5)  # the cap was given back

    third, later = asyncio.run(run())
    assert third.status_code == 429
    assert json.loads(third.body)["message"] == (
        "2 HTTP request bodies of this client are arriving (from its address, with its API key if "
        "it gave one); the limit is 2 (send a body whole before the next)")
    assert later.status_code == 408 and bodies.open == {}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
FIELDS = st.sampled_from(["task_id", "version", "inputs", "text", "pair"])


@st.composite
def classify_like(draw: st.DrawFn) -> Any:
    """JSON values, often shaped like a ClassifyRequest with wrong types inside."""
    if draw(st.booleans()):
        return draw(JSON)
    body = draw(st.dictionaries(FIELDS, JSON, max_size=4))
    if draw(st.booleans()):
        body["inputs"] = draw(st.lists(st.dictionaries(FIELDS, JSON, max_size=3), max_size=3))
    return body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=classify_like(), depth=st.sampled_from([0, 0, 0, 2000, 100_000]))
def test_http_fuzz_any_json_is_4xx_and_never_a_traceback(body: Any, depth: int,
                                                        logs: LogRecords) -> None:
    raw = ("[" * depth + json.dumps(body) + "]" * depth).encode()
    status, out = post(Replica(), raw)
    assert 400 <= status < 500, (status, out)
    assert not logs.tracebacks()


# -- B2: version strings and the resolver's caches --------------------------------------------

@pytest.mark.parametrize(("name", "version"), corpus.BAD_VERSIONS, ids=[c[0] for c in corpus.BAD_VERSIONS])
def test_a_version_that_cannot_be_one_is_refused_before_lookup(name: str, version: str) -> None:
    replica = Replica()
    ctx = Context()
    request = pb.ClassifyRequest(task_id="sentiment", version=version, inputs=[pb.Input(text="x")])
    asyncio.run(replica.Classify(request, ctx))
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT, (ctx.code, ctx.details())
    assert ctx.details().startswith("version: ") and len(ctx.details()) < 300
    assert replica.store.resolved == []


def test_unknown_refs_are_cached_within_entries_and_bytes() -> None:
    """The issue's B2: 100 unknown refs kept +91 MB (each cached by its whole length). Now
    refs are at most 64 characters and both caches are bounded anyway."""
    replica = Replica()
    resolver = replica.resolver
    resolver._missing.max_entries = 50

    async def lookups() -> None:
        for i in range(200):
            with pytest.raises(NotFoundError):
                await resolver.resolve("sentiment", f"v{i + 1}")
        with pytest.raises(NotFoundError):  # a hit: the store is not asked again
            await resolver.resolve("sentiment", "v200")

    asyncio.run(lookups())
    assert len(resolver._missing) == 50 and len(replica.store.resolved) == 200
    cache: BoundedCache[str] = BoundedCache(lambda k, v: len(v), max_entries=100, max_bytes=1000)
    for i in range(30):
        cache.put(("t", str(i)), "x" * 100)
    assert cache.nbytes <= 1000 and len(cache) == 10
    assert cache.get(("t", "29")) is not None and cache.get(("t", "0")) is None
    cache.put(("t", "big"), "x" * 5000)  # larger than the whole cache: not kept
    assert cache.get(("t", "big")) is None and cache.nbytes <= 1000


# -- B3 (and B5 at import): PEFT configs --------------------------------------------------------

def adapter_weights(spec: Any, r: int = 4, labels: int = 2) -> bytes:
    g = torch.Generator().manual_seed(0)
    t: dict[str, torch.Tensor] = {}
    for i in range(spec.num_layers):
        for lin in ("attention.self.query", "attention.self.value"):
            m = spec.layer_prefix(i) + lin
            out, inp = spec.linear_shape(m)
            t[f"base_model.model.bert.{m}.lora_A.weight"] = torch.randn(r, inp, generator=g) * 0.1
            t[f"base_model.model.bert.{m}.lora_B.weight"] = torch.randn(out, r, generator=g) * 0.1
    t["base_model.model.classifier.modules_to_save.default.weight"] = torch.randn(
        labels, spec.hidden, generator=g) * 0.1
    t["base_model.model.classifier.modules_to_save.default.bias"] = torch.zeros(labels)
    return safetensors.torch.save(t)


@pytest.fixture(scope="module")
def peft_store(tiny_bert, tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, bytes]:
    return Store(tmp_path_factory.mktemp("abuse") / "store", tiny_bert.spec), adapter_weights(tiny_bert.spec)


def test_good_adapter_config_imports(peft_store: tuple[Store, bytes]) -> None:
    store, weights = peft_store
    stored = store.import_peft_bytes(corpus.peft_config(), weights, "good")
    assert stored.artifact.config.r == 4 and stored.artifact.config.alpha == 8.0


@pytest.mark.parametrize(("name", "extra", "field"), corpus.PEFT_CONFIGS,
                         ids=[c[0] for c in corpus.PEFT_CONFIGS])
def test_badly_typed_or_meaningless_peft_config_names_the_field(
        peft_store: tuple[Store, bytes], name: str, extra: str, field: str, logs: LogRecords) -> None:
    store, weights = peft_store
    with pytest.raises(ArtifactError) as e:
        store.import_peft_bytes(corpus.peft_config(extra), weights, f"p-{name.replace('_', '-')}")
    code, details = status_for(e.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert f"'peft_config' failed: adapter_config.json: {field}" in details, details  # not a tensor's
    assert len(details) < 400
    assert not logs.tracebacks()


PEFT_FIELDS = ["r", "lora_alpha", "use_rslora", "target_modules", "peft_type", "bias",
               "base_model_name_or_path", "lora_dropout", "use_dora"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(PEFT_FIELDS), value=JSON | st.sampled_from([1e400, -1e400, 8.7, 1e30]))
def test_peft_fuzz_any_json_per_field_is_invalid_argument(
        peft_store: tuple[Store, bytes], field: str, value: Any, logs: LogRecords) -> None:
    store, weights = peft_store
    extra = f'"{field}": {json.dumps(value)}'  # 1e400 -> Infinity: JSON's parser takes both
    try:
        store.import_peft_bytes(corpus.peft_config(extra), weights, "fuzz")
    except Exception as e:
        code, details = status_for(e)
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION), (
            type(e).__name__, details)
    assert not logs.tracebacks()


# -- B6: strings at entry, and what errors echo -------------------------------------------------

@pytest.mark.parametrize(("name", "alias"), corpus.BAD_ALIASES, ids=[c[0] for c in corpus.BAD_ALIASES])
def test_set_alias_with_a_bad_alias_is_a_short_invalid_argument(name: str, alias: str,
                                                                 tmp_path: Path) -> None:
    """The store's one alias check, through the RPC: refused before any lookup."""
    request = pb.SetAliasRequest(task_id="sentiment", alias=alias, version="v1")
    with pytest.raises(Exception) as e:
        registry.set_alias(Store(tmp_path / "store"), request)
    code, details = status_for(e.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("alias: ")
    assert len(details) < 300


def test_set_alias_and_rollback_refuse_a_version_that_cannot_be_one() -> None:
    for request, op in ((pb.SetAliasRequest(task_id="t", alias="prod", version="x" * 100_000),
                         registry.set_alias),
                        (pb.RollbackRequest(task_id="t", version="v1\n"), registry.rollback)):
        with pytest.raises(Exception) as e:
            op(None, request)  # type: ignore[operator]
        code, details = status_for(e.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < 300


@pytest.mark.parametrize(("name", "labels"), corpus.BAD_LABELS, ids=[c[0] for c in corpus.BAD_LABELS])
def test_labels_with_control_characters_are_refused(tiny_bert, name: str, labels: list[str],
                                                    tmp_path: Path) -> None:
    manifest, tensors = good_parts(tiny_bert.spec)
    from tests.test_store_support import craft
    data = craft({**manifest, "labels": labels}, tensors)
    with pytest.raises(ArtifactError) as e:
        Store(tmp_path / "s", tiny_bert.spec).publish(data)
    assert e.value.check == "labels" and len(str(e.value)) < 400


@pytest.mark.parametrize(("name", "field", "value"), corpus.BAD_MANIFEST_TEXT,
                         ids=[c[0] for c in corpus.BAD_MANIFEST_TEXT])
def test_manifest_free_text_is_bounded_and_printable(tiny_bert, name: str, field: str,
                                                     value: str) -> None:
    manifest, _ = good_parts(tiny_bert.spec)
    data = json.loads(json.dumps(manifest))
    if field.startswith("training."):
        data["training"][field.split(".", 1)[1]] = value
    else:
        data[field] = value
    with pytest.raises(ArtifactError) as e:
        Manifest.from_dict(data)
    assert e.value.check == "manifest" and field.split(".")[-1] in str(e.value)
    assert len(str(e.value)) < 400


# -- limits before work on gRPC: the proxy's deserializer, then the gate ------------------------

class CountingType:
    """A message type whose parses are counted."""

    parsed = 0

    @classmethod
    def FromString(cls, data: bytes) -> pb.ClassifyRequest:
        cls.parsed += 1
        return pb.ClassifyRequest.FromString(data)


def test_proxy_measures_messages_and_the_replica_parses_after_the_token() -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda r, c: r,
                                                  request_deserializer=CountingType.FromString)
    classify = _lenient("/polyhead.v1.Inference/Classify", handler).request_deserializer
    assert limit_for("Classify") == 6 << 20 and limit_for("/polyhead.v1.Registry/Upload") == 257 << 20
    big = classify(b"\x0a" + b"x" * (7 << 20))  # a 7 MB message: dropped in the proxy, unparsed
    assert isinstance(big, MalformedRequest) and big.code == "RESOURCE_EXHAUSTED"
    message = pb.ClassifyRequest(task_id="sentiment", inputs=[pb.Input(text="x")])
    small = classify(message.SerializeToString())
    assert isinstance(small, Unparsed) and CountingType.parsed == 0
    replica = Replica()
    for request, token, code in ((small, None, grpc.StatusCode.UNAUTHENTICATED),
                                 (big, None, grpc.StatusCode.UNAUTHENTICATED),
                                 (big, READ, grpc.StatusCode.RESOURCE_EXHAUSTED),
                                 (Unparsed(b"\xff\xff", CountingType), READ,
                                  grpc.StatusCode.INVALID_ARGUMENT)):
        ctx = Context(token)
        asyncio.run(replica.Classify(request, ctx))
        assert ctx.code == code, (ctx.code, ctx.details())
    assert CountingType.parsed == 1  # only the authenticated, small, broken one
    ctx = Context(READ)
    asyncio.run(replica.Classify(small, ctx))
    assert ctx.code == grpc.StatusCode.NOT_FOUND and CountingType.parsed == 2


def test_health_shows_task_ids_only_to_the_registry_token() -> None:
    replica = Replica()
    assert asyncio.run(replica.Health(pb.HealthRequest(), Context(READ))).replica == "public"
    assert asyncio.run(replica.Health(pb.HealthRequest(), Context(ADMIN))).replica == "admin"
    open_replica = Replica(inference_token=None)  # no inference token: anyone reads Health
    assert asyncio.run(open_replica.Health(pb.HealthRequest(), Context(None))).replica == "public"


# -- cancellation: a request whose client went away is never forwarded -------------------------

def test_cancelled_request_leaves_the_queue_and_is_never_forwarded() -> None:
    from polyhead.server._private.batcher import Batcher
    from polyhead.server._private.inference import BatchStats

    forwarded: list[list[str]] = []
    running, release = threading.Event(), threading.Event()

    def tokenize(texts: list[str]) -> list[Encoded]:
        return [Encoded([ord(c) for c in t], [0] * len(t), False) for t in texts]

    def forward(items: Any) -> Any:
        forwarded.append(["".join(map(chr, it.enc[0].ids)) for it in items])
        if not release.is_set():
            running.set()
            release.wait(60)  # a bound only so that a broken batcher cannot hang the suite
        return [[([1.0], False)] * len(it) for it in items], BatchStats(0, 0, {}, 0, 0)

    async def main() -> None:
        b = Batcher(tokenize, forward, max_rows=8, max_tokens=10_000, fill_wait_s=0,
                    threads=1, on_batch=lambda s: None)

        async def run(text: str) -> Any:
            return await b.run(await b.encode([text]), None)  # type: ignore[arg-type]

        first = asyncio.create_task(run("held"))
        while not running.is_set():
            await asyncio.sleep(0.001)
        queued = {t: asyncio.create_task(run(t)) for t in ("a", "gone", "b")}
        while b.queued_rows < 3:
            await asyncio.sleep(0.001)
        queued["gone"].cancel()  # its client went away while it queued
        await asyncio.sleep(0)
        assert b.queued_rows == 2  # out of the queue at once, not when a batch reaches it
        release.set()
        await first
        assert [len(await queued[t]) for t in ("a", "b")] == [1, 1]
        b.close()

    try:
        asyncio.run(main())
    finally:
        release.set()
    assert forwarded == [["held"], ["a", "b"]]


def test_a_batch_drops_a_request_cancelled_after_it_was_taken() -> None:
    from polyhead.server._private.batcher import Batcher, _Pending
    from polyhead.server._private.inference import BatchItem, BatchStats

    seen: list[int] = []

    def forward(items: Any) -> Any:
        seen.append(len(items))
        return [[([1.0], False)] for _ in items], BatchStats(0, 0, {}, 0, 0)

    async def main() -> None:
        b = Batcher(lambda t: [], forward, max_rows=8, max_tokens=100, fill_wait_s=0, threads=1,
                    on_batch=lambda s: None)
        loop = asyncio.get_running_loop()
        live, gone = (_Pending(BatchItem([Encoded([1], [0], False)], None), 1,  # type: ignore[arg-type]
                               loop.create_future()) for _ in range(2))
        gone.future.cancel()
        ran = b._start([live, gone])
        assert ran is not None and ran[0] == [live]
        assert b._start([gone]) is None
        b.close()

    asyncio.run(main())
    assert seen == [1]


# -- streams: idle timeout, per-client cap, one log line for a refused stream -------------------

def test_stream_idle_timeout_and_per_client_cap() -> None:
    replica = Replica(idle_s=0.05, per_client=2)

    async def silent() -> Any:
        await asyncio.Event().wait()  # a client that opens a stream and sends nothing
        yield None

    async def drain(requests: Any, ctx: Context) -> list[Any]:
        out = []
        try:
            async for r in replica.ClassifyStream(requests, ctx):
                out.append(r)
        except StreamAborted:
            pass
        return out

    ctx = Context()  # (the 10 s bound only keeps a server without the timeout from hanging)
    assert asyncio.run(asyncio.wait_for(drain(silent(), ctx), 10)) == []
    assert ctx.code == grpc.StatusCode.DEADLINE_EXCEEDED and "no message" in ctx.details()
    assert replica.streams.open == {}  # closed streams are not counted

    async def three_at_once() -> list[Context]:
        ctxs = [Context(peer=f"ipv4:10.0.0.1:{5000 + i}") for i in range(3)]
        other = Context(peer="ipv4:10.0.0.2:6000")
        held = asyncio.Event()

        async def waiting() -> Any:
            await held.wait()
            return
            yield

        # in this order: the third stream of 10.0.0.1 is refused at once (it does not wait
        # for its messages: without the cap it would stay open until they end), another
        # client's is not
        tasks = [asyncio.create_task(drain(waiting(), c)) for c in [*ctxs, other]]
        await asyncio.sleep(0.01)
        held.set()
        await asyncio.gather(*tasks)
        return [*ctxs, other]

    replica.streams.idle_s = 30.0
    ctxs = asyncio.run(three_at_once())
    assert [c.code for c in ctxs] == [grpc.StatusCode.OK, grpc.StatusCode.OK,
                                      grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OK]
    assert client_of(Context(peer="ipv6:[::1]:5000")) == "ipv6:[::1]"


class KeyCatalog:
    """What KeyRing.load reads of a store: two tenants' keys."""

    def __init__(self, keys: dict[str, str]) -> None:  # key -> tenant
        self.rows = [(ApiKey(key_id_of(k) or "", t, ("classify",), "2026-01-01T00:00:00Z", None, None),
                      key_hash(k)) for k, t in keys.items()]

    def auth_generation(self) -> int:
        return 1

    def key_table(self, since: int) -> tuple[int, list]:
        return 1, self.rows

    def admission_limits(self) -> dict[str, int]:
        return {}

    def weights(self) -> dict[str, float]:
        return {}


def test_each_api_key_has_its_own_stream_cap_behind_one_address() -> None:
    """Behind HAProxy or an L4 balancer every client has the balancer's address: two
    tenants' keys each hold their own cap there, while the shared token's callers (any
    number of clients) count by address alone, as before."""
    (_, a), (_, b) = new_key(), new_key()
    replica = Replica(per_client=1)
    replica.auth.keys.load(KeyCatalog({a: "acme", b: "globex"}))
    balancer = "ipv4:10.0.0.9"

    async def main() -> list[Context]:
        held = asyncio.Event()

        async def waiting() -> Any:
            await held.wait()
            return
            yield

        async def drain(ctx: Context) -> None:
            try:
                async for _ in replica.ClassifyStream(waiting(), ctx):
                    pass
            except StreamAborted:
                pass

        tokens = (a, b, a, READ, READ)
        ctxs = [Context(token, peer=f"{balancer}:{5000 + i}") for i, token in enumerate(tokens)]
        tasks = []
        for c in ctxs:  # in this order, each open before the next comes
            tasks.append(asyncio.create_task(drain(c)))
            await asyncio.sleep(0.01)
        held.set()
        await asyncio.gather(*tasks)
        return ctxs

    ok, full = grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [c.code for c in asyncio.run(main())] == [ok, ok, full, ok, full]
    assert replica.streams.open == {}


class InstantParts:
    """A replica's parts for ClassifyStream, minus the engine: every task resolves, and a
    message whose one input is "m<i>" is answered at once with the value i (a regression)."""

    def __init__(self) -> None:
        from polyhead.server.bank import TaskMeta

        async def resolve(task_id: str, ref: str) -> Any:
            return SimpleNamespace(task_id=task_id, version="v1")

        @contextlib.asynccontextmanager
        async def using(key: Any) -> Any:
            yield SimpleNamespace(key=key, meta=TaskMeta(1, (), True, "any"), task=None)

        class Batcher:
            async def encode(self, inputs: Any) -> Any:
                return list(inputs)

            async def run(self, enc: Any, task: Any, tenant: str = "default") -> Any:
                return [([float(text[1:]), 0.0], False) for text in enc]

        self.config = SimpleNamespace(max_inputs=4, max_text_chars=100)
        self.resolver, self.bank = SimpleNamespace(resolve=resolve), SimpleNamespace(using=using)
        self.batcher, self.keys, self.replica = Batcher(), SimpleNamespace(limits={}), "r0"
        self.metrics = SimpleNamespace(tenant_rows=lambda tenant, rows: None)


class StreamReplica(Replica):
    """The gate over the real ClassifyStream service (InferenceService), on InstantParts."""

    def __init__(self) -> None:
        super().__init__()
        self.inference = InferenceService(InstantParts())  # type: ignore[arg-type]

    @rpc_stream("inference")
    async def ClassifyStream(self, requests: Any, caller: Any) -> Any:
        async for out in self.inference.classify_stream(requests, caller.tenant):
            yield out


def message(i: int, task: str = "acme/t") -> pb.ClassifyRequest:
    return pb.ClassifyRequest(task_id=task, inputs=[pb.Input(text=f"m{i}")])


class ChangingKeys(KeyCatalog):
    """A key catalog whose key can be revoked (each change moves its 'auth' counter)."""

    def __init__(self, key: str, tenant: str, expires_at: str | None = None) -> None:
        super().__init__({key: tenant})
        self.rows[0] = (dataclasses.replace(self.rows[0][0], expires_at=expires_at), self.rows[0][1])
        self.generation = 1

    def auth_generation(self) -> int:
        return self.generation

    def key_table(self, since: int) -> tuple[int, list]:
        return self.generation, self.rows

    def revoke(self) -> None:
        self.rows[0] = (dataclasses.replace(self.rows[0][0], revoked_at="2026-01-02T00:00:00Z"),
                        self.rows[0][1])
        self.generation += 1


def test_a_key_revoked_or_expired_mid_stream_ends_its_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate checks a stream's key at every message, not once: a key revoked (the key
    cache re-read, as the replica's store watch does) or past its expiry while its stream
    is open ends the stream UNAUTHENTICATED at the next message, naming the message and the
    reason; the messages before it are answered, in order."""
    from polyhead.server._private import auth

    key_id, key = new_key()
    clock = [datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.UTC).timestamp()]
    monkeypatch.setattr(auth, "time", SimpleNamespace(time=lambda: clock[0]))

    def run(change: Any, catalog: ChangingKeys) -> tuple[list[float], Context]:
        replica = StreamReplica()
        replica.auth.keys.load(catalog)
        ctx = Context(key)

        async def sent() -> Any:
            for i in range(6):
                if i == 3:
                    change(replica, catalog)
                yield message(i)

        async def main() -> list[float]:
            got: list[float] = []
            with pytest.raises(StreamAborted):
                async for r in replica.ClassifyStream(sent(), ctx):
                    got.append(r.predictions[0].value)
            return got

        return asyncio.run(asyncio.wait_for(main(), 10)), ctx

    def revoke(replica: StreamReplica, catalog: ChangingKeys) -> None:
        catalog.revoke()
        assert replica.auth.keys.load(catalog)

    got, ctx = run(revoke, ChangingKeys(key, "acme"))
    assert got == [0.0, 1.0, 2.0]
    assert (ctx.code, ctx.details()) == (grpc.StatusCode.UNAUTHENTICATED,
                                         f"message 3: API key {key_id} was revoked")

    def expire(replica: StreamReplica, catalog: ChangingKeys) -> None:
        clock[0] += 3600  # past the key's expiry; the key cache unchanged

    got, ctx = run(expire, ChangingKeys(key, "acme", expires_at="2026-01-01T12:30:00+00:00"))
    assert got == [0.0, 1.0, 2.0]
    assert ctx.code == grpc.StatusCode.UNAUTHENTICATED
    assert ctx.details().startswith(f"message 3: API key {key_id} expired at ")


def test_a_stream_answers_each_message_as_soon_as_it_is_done() -> None:
    """A client that sends a message and waits for its answer before sending the next gets
    each answer without more messages in flight: answers are not held back until the
    window fills (they were, until 8 messages were in flight: such a client got DEADLINE_EXCEEDED
    after the idle timeout, its answer lost). The 10 s bound only keeps that from hanging."""
    replica = StreamReplica()
    answered = asyncio.Event()

    async def one_at_a_time() -> Any:
        for i in range(4):
            answered.clear()
            yield message(i, task="t")
            await answered.wait()

    async def main() -> list[float]:
        got: list[float] = []
        async for r in replica.ClassifyStream(one_at_a_time(), Context()):
            got.append(r.predictions[0].value)
            answered.set()
        return got

    assert asyncio.run(asyncio.wait_for(main(), 10)) == [0.0, 1.0, 2.0, 3.0]


def test_a_stream_ended_mid_way_is_still_read_to_its_end_before_its_status() -> None:
    """The service waits on the client's next message while it answers earlier ones; when
    a message ends the stream, that pending read is kept (not cancelled, which would close
    grpc's request iterator), so settle() still reads the client's messages to their end
    before the status goes out (grpc#36066). Here the client sends the rest only after the
    status is set: a read cancelled with the stream would have closed its iterator."""
    replica = StreamReplica()
    read: list[int] = []

    class Watched(Context):
        def __init__(self) -> None:
            super().__init__()
            self.ended = asyncio.Event()

        def set_code(self, code: grpc.StatusCode) -> None:
            super().set_code(code)
            self.ended.set()

    async def main() -> Watched:
        ctx = Watched()

        async def sent() -> Any:
            for i in range(5):
                if i == 2:  # once the status is set and the service's end has run its course
                    await ctx.ended.wait()
                    for _ in range(20):
                        await asyncio.sleep(0)
                read.append(i)
                yield message(i, task="acme/t" if i == 1 else "t")  # 1: not the caller's

        with pytest.raises(StreamAborted):
            async for _ in replica.ClassifyStream(sent(), ctx):
                pass
        return ctx

    ctx = asyncio.run(asyncio.wait_for(main(), 10))
    assert (ctx.code, ctx.details()) == (grpc.StatusCode.NOT_FOUND, "message 1: no task 'acme/t'")
    assert read == [0, 1, 2, 3, 4]


def test_a_refused_stream_is_read_to_its_end_before_its_status() -> None:
    """grpc.aio turns the status into INTERNAL when a client's write or half-close is still
    under way as it arrives (grpc#36066): a refused stream's status goes out only after the
    client's messages and its end were read, or the bounds were reached."""
    replica = Replica(per_client=1)
    read: list[int] = []

    async def sent(n: int, then_wait: bool = False) -> Any:
        for i in range(n):
            read.append(i)
            yield pb.ClassifyRequest(task_id="t")
        if then_wait:
            await asyncio.Event().wait()

    async def call(requests: Any, ctx: Context) -> None:
        with pytest.raises(StreamAborted):
            async for _ in replica.ClassifyStream(requests, ctx):
                pass

    async def main() -> None:
        for token, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                            ("wrong", grpc.StatusCode.UNAUTHENTICATED)):
            read.clear()
            ctx = Context(token)
            await call(sent(3), ctx)
            assert ctx.code == code and read == [0, 1, 2]  # all three, and the end, were read
        # the second stream of a client holding one (per_client=1): refused, read to its end
        held = asyncio.Event()

        async def holding() -> Any:
            await held.wait()
            return
            yield

        first = asyncio.create_task(replica.ClassifyStream(holding(), Context()).__anext__())
        await asyncio.sleep(0.01)
        read.clear()
        ctx = Context()
        await call(sent(2), ctx)
        assert ctx.code == grpc.StatusCode.RESOURCE_EXHAUSTED and read == [0, 1]
        held.set()
        with pytest.raises(StopAsyncIteration):
            await first
        # a client that streams on is read no further than the bound; one that holds the
        # stream open costs at most the bound's time (the 10 s wait only stops a hang)
        read.clear()
        await asyncio.wait_for(call(sent(10 * SETTLE_MESSAGES), Context(None)), 10)
        assert len(read) <= SETTLE_MESSAGES + 1
        read.clear()
        await asyncio.wait_for(call(sent(1, then_wait=True), Context(None)), 10)
        assert read == [0]
        # a client stream in, one message out (UploadDataset): the same
        for token in (None, READ):  # (READ: the inference token lacks the publish scope)
            read.clear()
            ctx = Context(token)
            assert await replica.UploadDataset(sent(3), ctx) == pb.DatasetInfo()
            assert ctx.code in (grpc.StatusCode.UNAUTHENTICATED,
                                grpc.StatusCode.PERMISSION_DENIED) and read == [0, 1, 2]

    asyncio.run(main())


def test_failed_stream_authentication_logs_one_line() -> None:
    logger = logging.getLogger("test.abuse.serve")
    handler = LogRecords()
    logger.addHandler(handler)
    logger.addFilter(OneLineAborts(StreamAborted))
    try:
        try:  # as Serve logs it: its own error, raised from the gate's
            try:
                raise StreamAborted("inference RPCs need `authorization: Bearer <token>` metadata")
            except StreamAborted as e:
                raise RuntimeError(str(e)) from e
        except RuntimeError:
            logger.exception("Request failed.")
    finally:
        logger.removeHandler(handler)
    (record,) = handler.records
    text = logging.Formatter().format(record)
    assert "Traceback" not in text and "\n" not in text and "authorization" in text


# -- safe defaults on a host ---------------------------------------------------------------------

def test_serve_binds_loopback_and_takes_tokens_from_files(tmp_path: Path, capsys) -> None:
    import argparse

    from polyhead.server._private.bind import address_for
    from polyhead.server.serve_cli import config_from, private_ray_token, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve"])
    assert args.host == "127.0.0.1"
    assert address_for("[::]:9000", "127.0.0.1") == "127.0.0.1:9000"
    assert address_for("[::]:9000", "::1") == "[::1]:9000"
    assert address_for("[::]:9000", None) == "[::]:9000"
    token = tmp_path / "token"
    token.write_text("from-a-file\n")
    args = parser.parse_args(["serve", "--token-file", str(token), "--inference-token-file",
                              str(token)])
    config = config_from(args)
    assert config.registry_token() == config.inference_token_value() == "from-a-file"
    assert "deprecated" not in capsys.readouterr().err
    config = config_from(parser.parse_args(["serve", "--inference-token", "in-argv"]))
    assert config.inference_token_value() == "in-argv"
    assert "--inference-token is deprecated" in capsys.readouterr().err
    path = private_ray_token(tmp_path / "ray" / "auth_token")
    assert path is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    path.chmod(0o644)
    private_ray_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_store_files_are_private(tiny_bert, tmp_path: Path) -> None:
    from tests.test_store_support import make_file

    store = Store(tmp_path / "store", tiny_bert.spec)
    info = store.publish(make_file(tiny_bert.spec))
    root = tmp_path / "store"
    blob = root / "blobs" / info.version[:2] / info.version
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(blob.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(blob.stat().st_mode) & 0o077 == 0
    for f in root.glob("catalog.sqlite*"):
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f


def test_proxy_refuses_a_call_by_its_metadata_before_reading_its_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The servicer functions Serve's proxy loads, on a plain grpc.aio server: told the tokens,
    a call without the right one is refused when its handler is looked up. Its 5 MB message
    is over this server's 4 MB receive limit, so an answer other than UNAUTHENTICATED (i.e.
    RESOURCE_EXHAUSTED) would mean it was read."""
    from polyhead.server._private import decoders as servicers
    from polyhead.v1 import polyhead_pb2_grpc as pb_grpc

    seen: list[Any] = []

    class Servicer(pb_grpc.InferenceServicer):
        async def Classify(self, request: Any, context: Any) -> pb.ClassifyResponse:
            seen.append(request)
            return pb.ClassifyResponse(task_id="answered")

    big = pb.ClassifyRequest(task_id="t", inputs=[pb.Input(text="x" * (5 << 20))])
    small = pb.ClassifyRequest(task_id="t", inputs=[pb.Input(text="x")])
    md = (("authorization", f"Bearer {READ}"),)

    async def calls() -> list[str]:
        server = grpc.aio.server()
        servicers.add_InferenceServicer_to_server(Servicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        out = []
        try:
            async with grpc.aio.insecure_channel(
                    f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
                stub = pb_grpc.InferenceStub(ch)
                for request, metadata in ((big, ()), (big, (("authorization", "Bearer wrong"),)),
                                          (small, md), (big, md)):
                    try:
                        out.append((await stub.Classify(request, metadata=metadata, timeout=30)).task_id)
                    except grpc.aio.AioRpcError as e:
                        out.append(e.code().name)
        finally:
            await server.stop(None)
        return out

    monkeypatch.setenv(servicers.PROXY_AUTH_ENV, "1")
    monkeypatch.setenv(servicers.PROXY_REGISTRY_ENV, ADMIN)
    monkeypatch.setenv(servicers.PROXY_INFERENCE_ENV, READ)
    assert asyncio.run(calls()) == ["UNAUTHENTICATED", "UNAUTHENTICATED", "answered",
                                    "RESOURCE_EXHAUSTED"]
    assert len(seen) == 1 and isinstance(seen[0], Unparsed)
    monkeypatch.delenv(servicers.PROXY_AUTH_ENV)  # not told the tokens: the replica decides
    assert asyncio.run(calls())[:3] == ["RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED", "answered"]
