"""The two gRPC services as small classes over the replica's parts (``Parts``).

Everything here is async and never touches the store on the event loop: store reads go
through the resolver's store thread, writes through the admin thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from polyhead.engine import BackboneSpec, Engine, ValidArtifact
from polyhead.server._private import registry_rpcs
from polyhead.server._private.admission import Admission
from polyhead.server._private.auth import Caller, KeyRing
from polyhead.server._private.batcher import Batcher
from polyhead.server._private.errors import InStream, InvalidInput
from polyhead.server._private.gate import message_of
from polyhead.server._private.inference import check_form, cut_inputs, parse_inputs, response
from polyhead.server._private.metrics import ServerMetrics
from polyhead.server._private.resolver import Resolver
from polyhead.server.bank import AdapterBank, TaskMeta, VersionKey
from polyhead.server.config import ServerConfig
from polyhead.store import Store, StoredArtifact, VersionInfo
from polyhead.store.names import DEFAULT_TENANT, clip, is_task_id
from polyhead.v1 import polyhead_pb2 as pb

T = TypeVar("T")
STREAM_WINDOW = 8  # stream messages in flight per ClassifyStream call


@dataclasses.dataclass
class Parts:
    """What a replica holds; the services share it."""

    config: ServerConfig
    replica: str
    backbone_name: str
    threads: int
    engine: Engine
    store: Store
    bank: AdapterBank
    resolver: Resolver
    batcher: Batcher
    metrics: ServerMetrics
    admin: ThreadPoolExecutor  # store writes, one at a time
    keys: KeyRing = dataclasses.field(default_factory=KeyRing)  # the store's API keys, cached

    async def on_admin(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.admin, fn, *args)


class InferenceService:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self.admission = Admission(lambda: parts.keys.limits)

    async def classify(self, request: pb.ClassifyRequest,
                       tenant: str = DEFAULT_TENANT) -> pb.ClassifyResponse:
        """``tenant``: the caller's, held against its rows-in-flight quota (admission) and
        carried to the batcher with the request's rows."""
        p = self.p
        request = message_of(request)  # a stream's messages arrive unparsed
        inputs = parse_inputs(request, p.config.max_inputs, p.config.max_text_chars)
        if not is_task_id(request.task_id):
            raise InvalidInput(f"task_id: {clip(request.task_id)} is not a task id")
        ref = registry_rpcs.ref_of(request.version) if request.version else "latest"
        info = await p.resolver.resolve(request.task_id, ref)
        async with p.bank.using(VersionKey(info.task_id, info.version)) as res:
            check_form(inputs, info.task_id, res.meta)
            with self.admission.holding(tenant, len(inputs)):
                enc = await p.batcher.encode(inputs)
                rows = await p.batcher.run(enc, res.task, tenant=tenant)
            p.metrics.tenant_rows(tenant, len(rows))
            cut = cut_inputs(request, p.config.max_text_chars)
            rows = [(logits, was or c) for (logits, was), c in zip(rows, cut, strict=True)]
            return response(res, rows, p.replica)

    async def classify_stream(self, requests: AsyncIterator[Any],
                              tenant: str = DEFAULT_TENANT) -> AsyncIterator[pb.ClassifyResponse]:
        """One response per request message, in order, each sent as soon as it and every
        earlier one are answered; at most STREAM_WINDOW messages in flight, so a client
        sending faster than the engine runs is held back by gRPC flow control, not buffered
        here. An error ends the stream, naming the message."""
        it = aiter(requests)
        window: deque[asyncio.Future[pb.ClassifyResponse]] = deque()
        read: asyncio.Future[Any] | None = None  # the next message, while the window has room
        index, reading = 0, True
        try:
            while reading or window:
                if read is None and reading and len(window) < STREAM_WINDOW:
                    read = asyncio.ensure_future(_next(it))
                head = window[0] if window else None
                await asyncio.wait([f for f in (head, read) if f is not None],
                                   return_when=asyncio.FIRST_COMPLETED)
                if head is not None and head.done():
                    yield window.popleft().result()
                elif read is not None and read.done():
                    request, read = read.result(), None
                    if request is END:
                        reading = False
                    else:
                        window.append(asyncio.ensure_future(self._message(index, request, tenant)))
                        index += 1
        finally:
            for fut in (*window, read):
                if fut is not None:
                    fut.cancel()

    async def _message(self, index: int, request: Any, tenant: str) -> pb.ClassifyResponse:
        try:
            return await self.classify(request, tenant)
        except Exception as e:
            raise InStream(index, e) from e

    async def health(self, request: pb.HealthRequest, show_tasks: bool = True) -> pb.HealthResponse:
        """The replica's state; its resident task ids only when ``show_tasks`` (the caller
        holds the admin scope): they name every tenant's tasks."""
        p = self.p
        await p.resolver.refresh()
        out = pb.HealthResponse(
            status="SERVING", backbone=p.backbone_name, fingerprint=p.engine.spec.fingerprint,
            device=str(p.engine.backbone.device), precision=p.engine.backbone.precision,
            replica=p.replica,
            store_generation=p.resolver.generation, device_bytes=p.bank.device_bytes,
            device_budget_bytes=p.bank.device_budget, host_bytes=p.bank.host_bytes,
            host_budget_bytes=p.bank.host_budget, device_table_bytes=p.engine.tables.nbytes,
            batches=p.batcher.counters.batches,
            batched_rows=p.batcher.counters.rows, torch_threads=p.threads,
            forward_s=p.batcher.counters.forward_s)
        for key, tier, nbytes, age in p.bank.resident() if show_tasks else ():
            out.resident.add(task_id=key.task_id, version=key.version, tier=tier, nbytes=nbytes,
                             age_s=age)
        return out


END = object()  # _next: the stream has ended


async def _next(it: AsyncIterator[Any]) -> Any:
    try:
        return await anext(it)
    except StopAsyncIteration:
        return END


class RegistryService:
    def __init__(self, parts: Parts) -> None:
        self.p = parts

    async def upload(self, request: pb.UploadRequest, caller: Caller) -> pb.VersionInfo:
        if not request.artifact:
            raise InvalidInput("artifact: empty")
        return await self._publish(partial(self.p.store.ingest, replace_kind=request.replace_kind,
                                           may_write=caller.may_write), bytes(request.artifact))

    async def import_peft(self, request: pb.ImportPeftRequest) -> pb.VersionInfo:
        return await self._publish(registry_rpcs.import_peft, self.p.store, request)

    async def list_tasks(self, request: pb.ListTasksRequest, caller: Caller) -> pb.ListTasksResponse:
        """The caller's namespace (every task for an admin)."""
        return await self.p.resolver.read(registry_rpcs.list_tasks, self.p.store, caller.sees)

    async def get_task(self, request: pb.GetTaskRequest) -> pb.TaskDetail:
        return await self.p.resolver.read(registry_rpcs.get_task, self.p.store, request.task_id)

    async def set_alias(self, request: pb.SetAliasRequest) -> pb.VersionInfo:
        return await self._change(registry_rpcs.set_alias, request)

    async def rollback(self, request: pb.RollbackRequest) -> pb.VersionInfo:
        return await self._change(registry_rpcs.rollback, request)

    async def delete(self, request: pb.DeleteTaskRequest) -> pb.DeleteTaskResponse:
        p = self.p
        task_id = registry_rpcs.task_id_of(request.task_id)
        gone = await p.on_admin(p.store.delete, task_id)
        await p.resolver.refresh(wait=True)
        p.bank.discard(task_id)
        return pb.DeleteTaskResponse(task_id=task_id, expires_at=gone.expires_at)

    async def restore(self, request: pb.RestoreTaskRequest) -> pb.VersionInfo:
        task_id = registry_rpcs.task_id_of(request.task_id)
        t0 = time.perf_counter()
        info = await self.p.on_admin(self.p.store.restore, task_id)
        await self._servable(info, t0)
        return registry_rpcs.version_pb(info)

    async def _publish(self, publish: Callable[..., StoredArtifact], *args: Any) -> pb.VersionInfo:
        """Publish, then return once the new version is servable on this replica: the bank
        takes the artifact the store validated and decoded (no second read or decode)."""
        p, t0 = self.p, time.perf_counter()
        try:
            stored = await p.on_admin(publish, *args)
        except Exception:
            p.metrics.uploads.inc(tags={"result": "rejected"})
            raise
        await p.resolver.refresh(wait=True)
        info = stored.info
        await p.bank.put(VersionKey(info.task_id, info.version),
                         stored.artifact.checked(p.engine.spec), meta_of(stored))
        p.metrics.swap_latency.observe((time.perf_counter() - t0) * 1000, tags={"origin": "local"})
        p.metrics.uploads.inc(tags={"result": "published"})
        return registry_rpcs.version_pb(info)

    async def _change(self, op: Callable[[Store, Any], VersionInfo], request: Any) -> pb.VersionInfo:
        t0 = time.perf_counter()
        info = await self.p.on_admin(op, self.p.store, request)
        latest = await self.p.resolver.read(self.p.store.resolve, info.task_id, "latest")
        await self._servable(latest, t0)
        return registry_rpcs.version_pb(info)

    async def _servable(self, info: VersionInfo, t0: float) -> None:
        await self.p.resolver.refresh(wait=True)
        await self.p.bank.get(VersionKey(info.task_id, info.version))
        self.p.metrics.swap_latency.observe((time.perf_counter() - t0) * 1000,
                                            tags={"origin": "local"})


@dataclasses.dataclass(frozen=True)
class StoreSource:
    """The bank's Source: a version read from the store, which checks it against the
    backbone (``checked`` then costs nothing)."""

    store: Store
    spec: BackboneSpec

    def __call__(self, key: VersionKey) -> tuple[ValidArtifact, TaskMeta]:
        stored = self.store.get(key.task_id, key.version)
        return stored.artifact.checked(self.spec), meta_of(stored)


def meta_of(stored: StoredArtifact) -> TaskMeta:
    m = stored.manifest
    return TaskMeta(number=stored.info.number, labels=tuple(m.labels or ()),
                    regression=m.regression, inputs=m.inputs)
