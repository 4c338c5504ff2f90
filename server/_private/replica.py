"""The ingress deployment: one replica holds the backbone, the engine and the adapter bank,
and implements both gRPC services (its method names are the RPC names)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import grpc
import ray
import torch
from polyhead.v1 import polyhead_pb2 as pb
from ray import serve

from methods import ArtifactError, Engine, TaskArtifact, load_backbone
from server._private import registry
from server._private.auth import Auth
from server._private.batcher import Coalescer, rows_of
from server._private.errors import InvalidInput, status_for
from server._private.inference import (
    BatchItem,
    BatchStats,
    Row,
    check_form,
    forward,
    parse_inputs,
    response,
)
from server._private.metrics import ServerMetrics
from server._private.servicers import MalformedRequest
from server._private.swap import Resolver
from server.bank import AdapterBank, TaskMeta, VersionKey
from server.config import MB, ServerConfig
from store import NotFoundError, Store, StoredArtifact, VersionInfo
from store.names import is_task_id

logger = logging.getLogger("ray.serve")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
T = TypeVar("T")
WATCH_WAIT_S = 1.0  # the longest the watcher blocks on the feed before looking again


@serve.deployment(name="Polyhead", max_ongoing_requests=2048, ray_actor_options={"num_cpus": 1})
class Polyhead:
    async def __init__(self, config: ServerConfig) -> None:  # type: ignore[misc]  # Ray awaits it
        config.check_auth()
        self.config = config
        self.threads = config.torch_threads or _assigned_cpus()
        torch.set_num_threads(self.threads)  # Ray sets OMP_NUM_THREADS; be explicit
        self.replica = _replica_name()
        self.backbone = load_backbone(config.backbone, device=config.device)
        self.engine = Engine(self.backbone, max_batch_size=config.max_batch_rows)
        self.store = Store(config.store, self.engine.spec,
                           max_artifact_bytes=int(config.max_artifact_mb * MB))
        self.metrics = ServerMetrics()
        self.auth = Auth(config.registry_token(), config.inference_token_value())
        forward_pool = ThreadPoolExecutor(1, "polyhead-forward", initializer=torch.set_num_threads,
                                          initargs=(self.threads,))
        self.coalescer = Coalescer(partial(forward, self.engine), forward_pool,
                                   config.max_batch_rows, self._record)
        self._admin_pool = ThreadPoolExecutor(1, "polyhead-admin")
        self.bank = AdapterBank(
            self._fetch, self.engine.load, self.engine.unload,
            device_budget=int(config.device_budget_mb * MB),
            host_budget=int(config.host_budget_mb * MB),
            executor=ThreadPoolExecutor(2, "polyhead-load"), listener=self._bank_event)
        self.resolver = Resolver(self.store)
        self._run_batch.set_max_batch_size(config.max_batch_rows)  # type: ignore[attr-defined]
        self._run_batch.set_batch_wait_timeout_s(  # type: ignore[attr-defined]
            config.batch_wait_ms / 1000)
        if config.seed_examples:
            seed_examples(self.store)
        self.engine.run(["warm up"], [None])  # first forward pays lazy init, not a request
        self._watched = -1
        self.batches = self.batched_rows = 0
        self.forward_s = 0.0
        self._watcher = asyncio.get_running_loop().create_task(self._watch_store())
        logger.info("polyhead replica %s ready: backbone %s on %s, %d torch threads",
                    self.replica, self.backbone.path.name, self.backbone.device, self.threads)

    # -- Inference -------------------------------------------------------------------------

    async def Classify(self, request: pb.ClassifyRequest, grpc_context: Any = None) -> Any:
        return await self._serve("Classify", "inference", grpc_context, request, self._classify,
                                 pb.ClassifyResponse())

    async def Health(self, request: pb.HealthRequest, grpc_context: Any = None) -> Any:
        return await self._serve("Health", "inference", grpc_context, request, self._health,
                                 pb.HealthResponse())

    # -- Registry --------------------------------------------------------------------------

    async def Upload(self, request: pb.UploadRequest, grpc_context: Any = None) -> Any:
        return await self._serve("Upload", "registry", grpc_context, request,
                                 lambda r: self._publish(self._upload, r), pb.VersionInfo())

    async def ImportPeft(self, request: pb.ImportPeftRequest, grpc_context: Any = None) -> Any:
        return await self._serve(
            "ImportPeft", "registry", grpc_context, request,
            lambda r: self._publish(lambda x: registry.import_peft(self.store, x), r),
            pb.VersionInfo())

    async def ListTasks(self, request: pb.ListTasksRequest, grpc_context: Any = None) -> Any:
        return await self._serve("ListTasks", "registry", grpc_context, request,
                                 lambda _: self._admin(registry.list_tasks, self.store),
                                 pb.ListTasksResponse())

    async def GetTask(self, request: pb.GetTaskRequest, grpc_context: Any = None) -> Any:
        return await self._serve("GetTask", "registry", grpc_context, request,
                                 lambda r: self._admin(registry.get_task, self.store, r.task_id),
                                 pb.TaskDetail())

    async def SetAlias(self, request: pb.SetAliasRequest, grpc_context: Any = None) -> Any:
        return await self._serve("SetAlias", "registry", grpc_context, request,
                                 lambda r: self._change(registry.set_alias, r), pb.VersionInfo())

    async def Rollback(self, request: pb.RollbackRequest, grpc_context: Any = None) -> Any:
        return await self._serve("Rollback", "registry", grpc_context, request,
                                 lambda r: self._change(registry.rollback, r), pb.VersionInfo())

    async def DeleteTask(self, request: pb.DeleteTaskRequest, grpc_context: Any = None) -> Any:
        return await self._serve("DeleteTask", "registry", grpc_context, request,
                                 lambda r: self._delete(r.task_id), pb.DeleteTaskResponse())

    def check_health(self) -> None:
        if self._watcher.done():
            raise RuntimeError("the store watcher stopped")

    # -- the one place where errors become status codes -----------------------------------

    async def _serve(self, method: str, scope: str, ctx: Any, request: Any,
                     call: Callable[[Any], Awaitable[Any]], empty: Any) -> Any:
        t0, code, task = time.perf_counter(), "OK", ""
        try:
            self.auth.check(scope, ctx.invocation_metadata() if ctx is not None else ())
            if isinstance(request, MalformedRequest):
                raise InvalidInput(request.message)
            out = await call(request)
            task = getattr(out, "task_id", "")
            return out
        except Exception as e:
            status, details = status_for(e)
            code = status.name
            if status is grpc.StatusCode.INTERNAL:
                logger.exception("%s failed", method)
            if ctx is None:
                raise
            ctx.set_code(status)
            ctx.set_details(details)
            return empty
        finally:
            self.metrics.request(method, task, code, (time.perf_counter() - t0) * 1000)

    # -- Classify --------------------------------------------------------------------------

    async def _classify(self, request: pb.ClassifyRequest) -> pb.ClassifyResponse:
        inputs = parse_inputs(request, self.config.max_inputs, self.config.max_text_chars)
        if not is_task_id(request.task_id):
            raise InvalidInput(f"task_id: {request.task_id[:80]!r} is not a task id")
        info = self.resolver.resolve(request.task_id, request.version or "latest")
        async with self.bank.using(VersionKey(info.task_id, info.version)) as res:
            check_form(inputs, info.task_id, res.meta)
            rows = await self._run_batch(BatchItem(inputs, res.task))
            return response(res, rows, self.replica)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002, max_concurrent_batches=32,
                 batch_size_fn=rows_of)
    async def _run_batch(self, items: list[BatchItem]) -> list[list[Row]]:
        """Serve's batch of requests (any mix of tasks and kinds), merged by the coalescer
        with the batches that queue while a forward runs."""
        return await self.coalescer.run(items)

    def _record(self, stats: BatchStats) -> None:
        self.batches += 1
        self.batched_rows += stats.rows
        self.forward_s += stats.seconds
        m = self.metrics
        m.batch_rows.observe(stats.rows)
        m.batch_tasks.observe(stats.tasks)
        for kind, n in stats.kind_rows.items():
            m.batch_kind_rows.inc(n, tags={"kind": kind})
        m.padding_efficiency.observe(stats.real_tokens / max(1, stats.padded_tokens))

    async def _health(self, request: pb.HealthRequest) -> pb.HealthResponse:
        self.resolver.sync()
        out = pb.HealthResponse(
            status="SERVING", backbone=str(self.backbone.path),
            fingerprint=self.engine.spec.fingerprint, device=str(self.backbone.device),
            replica=self.replica, store_generation=self.resolver.generation,
            device_bytes=self.bank.device_bytes, device_budget_bytes=self.bank.device_budget,
            host_bytes=self.bank.host_bytes, host_budget_bytes=self.bank.host_budget,
            device_table_bytes=self.engine.tables.nbytes,
            batches=self.batches, batched_rows=self.batched_rows, torch_threads=self.threads,
            forward_s=self.forward_s)
        for key, tier, nbytes, age in self.bank.resident():
            out.resident.add(task_id=key.task_id, version=key.version, tier=tier, nbytes=nbytes,
                             age_s=age)
        return out

    # -- Registry --------------------------------------------------------------------------

    def _upload(self, request: pb.UploadRequest) -> StoredArtifact:
        if not request.artifact:
            raise InvalidInput("artifact: empty")
        return self.store.ingest(bytes(request.artifact))

    async def _publish(self, publish: Callable[[Any], StoredArtifact], request: Any) -> pb.VersionInfo:
        """Publish, then return once the new version is servable on this replica: the bank
        takes the artifact the store validated and decoded (no second read or decode)."""
        t0 = time.perf_counter()
        try:
            stored = await self._admin(publish, request)
        except Exception:
            self.metrics.uploads.inc(tags={"result": "rejected"})
            raise
        self.resolver.sync()
        info = stored.info
        self.bank.put(VersionKey(info.task_id, info.version), stored.artifact, _meta_of(stored))
        self.metrics.swap_latency.observe((time.perf_counter() - t0) * 1000, tags={"origin": "local"})
        self.metrics.uploads.inc(tags={"result": "published"})
        return registry.version_pb(info)

    async def _change(self, op: Callable[[Store, Any], VersionInfo], request: Any) -> pb.VersionInfo:
        t0 = time.perf_counter()
        info = await self._admin(op, self.store, request)
        latest = await self._admin(self.store.resolve, info.task_id, "latest")
        await self._servable(latest, t0, "local")
        return registry.version_pb(info)

    async def _delete(self, task_id: str) -> pb.DeleteTaskResponse:
        task_id = registry.task_id_of(task_id)
        await self._admin(self.store.delete, task_id)
        self.resolver.sync()
        self.bank.discard(task_id)
        return pb.DeleteTaskResponse(task_id=task_id)

    async def _servable(self, info: VersionInfo, t0: float, origin: str) -> None:
        self.resolver.sync()
        await self.bank.get(VersionKey(info.task_id, info.version))
        self.metrics.swap_latency.observe((time.perf_counter() - t0) * 1000, tags={"origin": origin})

    async def _admin(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._admin_pool, fn, *args)

    # -- the bank's loader and the store watch -----------------------------------------------

    def _fetch(self, key: VersionKey) -> tuple[TaskArtifact, TaskMeta]:
        stored = self.store.get(key.task_id, key.version)
        return stored.artifact, _meta_of(stored)

    def _bank_event(self, event: str, key: VersionKey) -> None:
        self.metrics.bank_event(event)
        if event != "hit":
            self.metrics.bank_bytes.set(self.bank.device_bytes, tags={"tier": "device"})
            self.metrics.bank_bytes.set(self.bank.host_bytes, tags={"tier": "host"})

    async def _watch_store(self) -> None:
        """Follow the store's change feed (pushed by PostgreSQL, polled on SQLite; the store
        decides): load new latest versions of the tasks held here, drop deleted tasks."""
        loop = asyncio.get_running_loop()
        waiter = ThreadPoolExecutor(1, "polyhead-watch")  # the feed blocks in its own thread
        feed = None
        while True:
            try:
                if feed is None:
                    feed = await loop.run_in_executor(waiter, self.store.watch,
                                                      self.config.watch_interval_s)
                await loop.run_in_executor(waiter, feed.wait, WATCH_WAIT_S)
                self.resolver.sync()
                if self.resolver.generation != self._watched:
                    self._watched = self.resolver.generation
                    await self._follow_store(self.resolver.changed_at)
            except Exception:
                logger.exception("store watch failed; retrying")
                await asyncio.sleep(self.config.watch_interval_s)

    async def _follow_store(self, changed_at: float) -> None:
        tasks = self.bank.task_ids()
        latest = await self._admin(_latest_of, self.store, tasks)
        for task_id, info in latest.items():
            if info is None:
                self.bank.discard(task_id)
                continue
            key = VersionKey(task_id, info.version)
            if self.bank.peek(key) is None:
                await self.bank.get(key)
                ms = (time.perf_counter() - changed_at) * 1000
                self.metrics.swap_latency.observe(ms, tags={"origin": "store"})


def _meta_of(stored: StoredArtifact) -> TaskMeta:
    m = stored.manifest
    return TaskMeta(number=stored.info.number, labels=tuple(m.labels or ()),
                    regression=m.regression, inputs=m.inputs)


def _latest_of(store: Store, task_ids: set[str]) -> dict[str, VersionInfo | None]:
    out: dict[str, VersionInfo | None] = {}
    for t in sorted(task_ids):
        try:
            out[t] = store.resolve(t, "latest")
        except NotFoundError:
            out[t] = None
    return out


def seed_examples(store: Store, folder: Path = EXAMPLES) -> list[VersionInfo]:
    """Publish the shipped example artifacts into an empty store; a store that already holds
    tasks is left alone. An example trained on another backbone than the one served (a
    `--backbone` of the user's) is skipped; any other failure is a broken install and raises
    (the replica does not start serving nothing in silence)."""
    if store.list_tasks():
        return []
    out = []
    for path in sorted(folder.glob("*.polyhead")):
        try:
            out.append(store.publish(path.read_bytes()))
        except ArtifactError as e:
            if e.check != "fingerprint":
                raise ArtifactError(e.check, f"shipped example {path}: {e.message}") from e
            logger.info("example %s is for another backbone; not published", path.name)
    return out


def _assigned_cpus() -> int:
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
    except Exception:
        cpus = 0
    return max(1, round(cpus)) if cpus else (os.cpu_count() or 1)


def _replica_name() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:
        return f"pid{os.getpid()}"
