"""The ingress deployment: the wiring of one replica (backbone, engine, bank, batcher, store
watch) and the RPC methods Serve calls by name, which only delegate to the services."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import ray
import torch
from ray import serve

from polyhead.engine import ArtifactError, Engine, load_backbone
from polyhead.engine.backbone import backbone_label
from polyhead.engine.memory import keep_freed_memory
from polyhead.engine.probe import probe_forward
from polyhead.server._private.admin_rpcs import AdminService
from polyhead.server._private.auth import Auth, Caller, KeyRing
from polyhead.server._private.batcher import Batcher, batch_queue
from polyhead.server._private.gate import StreamAborted, rpc, rpc_stream, rpc_upload, rpc_watch
from polyhead.server._private.http import HEALTH_ROUTE, HttpLimits, http_classify, http_health
from polyhead.server._private.inference import BatchStats, forward
from polyhead.server._private.metrics import ServerMetrics
from polyhead.server._private.resolver import Resolver
from polyhead.server._private.services import InferenceService, Parts, RegistryService, StoreSource
from polyhead.server._private.streams import OneLineAborts, StreamLimits
from polyhead.server._private.training import TrainingService
from polyhead.server.bank import AdapterBank, BankEvent, VersionKey
from polyhead.server.config import MB, ServerConfig
from polyhead.store import NotFoundError, Store, VersionInfo
from polyhead.store.keys import now_iso
from polyhead.store.tenancy import AuditRecord
from polyhead.v1 import polyhead_pb2 as pb

logger = logging.getLogger("ray.serve")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WATCH_WAIT_S = 1.0  # the longest the watcher blocks on the feed before looking again


@serve.deployment(name="Polyhead", max_ongoing_requests=2048, ray_actor_options={"num_cpus": 1})
class Polyhead:
    async def __init__(self, config: ServerConfig) -> None:  # type: ignore[misc]  # Ray awaits it
        config.check_auth()
        threads = config.torch_threads or _assigned_cpus()
        torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS; be explicit
        if config.keep_freed_memory:
            keep_freed_memory()
        backbone = load_backbone(config.backbone, device=config.device, precision=config.precision)
        # the slot tables are allocated within the device tier's budget (the bank evicts
        # versions when they are full); the bank counts the rows in use against the same
        engine = Engine(backbone, max_batch_size=config.max_batch_rows,
                        device_budget=int(config.device_budget_mb * MB))
        store = Store(config.store, engine.spec, max_artifact_bytes=int(config.max_artifact_mb * MB),
                      limits=config.limits(), probe=partial(probe_forward, backbone),
                      retention_s=config.delete_retention_days * 86400)
        self.metrics = ServerMetrics()
        keys = KeyRing()
        self.auth = Auth(config.registry_token(), config.inference_token_value(), keys,
                         on_refused=self.metrics.auth_failure)
        self.streams = StreamLimits(config.stream_idle_s, config.max_streams_per_client)
        self.http_bodies = StreamLimits(config.stream_idle_s, config.max_streams_per_client,
                                        "HTTP request bodies of this client are arriving",
                                        "send a body whole before the next")
        self.http_limits = HttpLimits(int(config.max_request_mb * MB), config.max_inputs,
                                      config.http_body_timeout_s)
        # HTTP bodies are parsed here, one at a time: a flood of large ones takes one
        # thread's share of the GIL from the event loop, not one per request
        self.http_parse = ThreadPoolExecutor(1, "polyhead-http")
        logger.addFilter(OneLineAborts(StreamAborted))
        bank = AdapterBank(
            StoreSource(store, engine.spec), engine, device_budget=int(config.device_budget_mb * MB),
            host_budget=int(config.host_budget_mb * MB),
            executor=ThreadPoolExecutor(2, "polyhead-load"), listener=self._bank_event)
        batcher = Batcher(engine.tokenize, partial(forward, engine), max_rows=config.max_batch_rows,
                          max_tokens=config.max_batch_tokens,
                          fill_wait_s=config.batch_wait_ms / 1000, threads=threads,
                          on_batch=self._record, queue=batch_queue(config.batch_order, keys.weight,
                                                                 config.fair_batch_rows))
        resolver = Resolver(store, ThreadPoolExecutor(1, "polyhead-store"))
        self.parts = Parts(config, _replica_name(), backbone_label(backbone.path), threads, engine, store,
                           bank, resolver, batcher, self.metrics,
                           ThreadPoolExecutor(1, "polyhead-admin"), keys=keys)
        self.inference = InferenceService(self.parts)
        self.registry = RegistryService(self.parts)
        self.admin = AdminService(self.parts)
        self.training = TrainingService(config)
        self._scheduler = start_scheduler(config) if config.jobs else None
        if config.seed_examples:
            await self.parts.on_admin(seed_examples, store)
        engine.run(["warm up"], [None])  # first forward pays lazy init, not a request
        await resolver.refresh(wait=True)
        await resolver.read(keys.load, store.catalog)
        self.keys_loaded = asyncio.Event()  # set whenever the key cache was re-read (tests wait on it)
        self._watched = resolver.generation
        self._watcher = asyncio.get_running_loop().create_task(self._watch_store())
        logger.info("polyhead replica %s ready: backbone %s on %s, %d torch threads",
                    self.parts.replica, backbone.path.name, backbone.device, threads)

    # -- Inference -------------------------------------------------------------------------

    @rpc("classify", pb.ClassifyResponse)
    async def Classify(self, request: pb.ClassifyRequest, caller: Caller) -> pb.ClassifyResponse:
        return await self.inference.classify(request, caller.tenant)

    @rpc_stream("classify")
    async def ClassifyStream(self, requests: Any, caller: Caller) -> AsyncIterator[pb.ClassifyResponse]:
        async for out in self.inference.classify_stream(requests, caller.tenant):
            yield out

    @rpc("classify", pb.HealthResponse, admin_view=True)
    async def Health(self, request: pb.HealthRequest, admin: bool = False) -> pb.HealthResponse:
        return await self.inference.health(request, show_tasks=admin)

    async def __call__(self, request: Any) -> Any:
        """HTTP: ``POST /v1/classify`` with ClassifyRequest's fields as JSON; ``GET /v1/health``."""
        if request.url.path.rstrip("/") == HEALTH_ROUTE:
            return await http_health(self.Health, request)
        return await http_classify(
            self.Classify, request, lambda ctx: self.auth.check("classify", ctx.invocation_metadata()),
            self.http_limits, self.http_parse, self.http_bodies)

    # -- Registry --------------------------------------------------------------------------

    @rpc("publish", pb.VersionInfo, audit=True)
    async def Upload(self, request: pb.UploadRequest, caller: Caller) -> pb.VersionInfo:
        return await self.registry.upload(request, caller)

    @rpc("publish", pb.VersionInfo, audit=True)
    async def ImportPeft(self, request: pb.ImportPeftRequest) -> pb.VersionInfo:
        return await self.registry.import_peft(request)

    @rpc("publish", pb.ListTasksResponse)
    async def ListTasks(self, request: pb.ListTasksRequest, caller: Caller) -> pb.ListTasksResponse:
        return await self.registry.list_tasks(request, caller)

    @rpc("publish", pb.TaskDetail)
    async def GetTask(self, request: pb.GetTaskRequest) -> pb.TaskDetail:
        return await self.registry.get_task(request)

    @rpc("publish", pb.VersionInfo, audit=True)
    async def SetAlias(self, request: pb.SetAliasRequest) -> pb.VersionInfo:
        return await self.registry.set_alias(request)

    @rpc("publish", pb.VersionInfo, audit=True)
    async def Rollback(self, request: pb.RollbackRequest) -> pb.VersionInfo:
        return await self.registry.rollback(request)

    @rpc("publish", pb.DeleteTaskResponse, audit=True)
    async def DeleteTask(self, request: pb.DeleteTaskRequest) -> pb.DeleteTaskResponse:
        return await self.registry.delete(request)

    @rpc("publish", pb.VersionInfo, audit=True)
    async def RestoreTask(self, request: pb.RestoreTaskRequest) -> pb.VersionInfo:
        return await self.registry.restore(request)

    # -- Training: the publish scope. A job belongs to its task's tenant: CreateJob names a
    # -- task in the caller's namespace (the gate's check), and the other RPCs answer only
    # -- for jobs whose task the caller sees (an admin: every job). A dataset belongs to the
    # -- tenants that uploaded it: only they (and admins) may name it. ----------------------

    @rpc_upload("publish", pb.DatasetInfo)
    async def UploadDataset(self, chunks: Any, caller: Caller) -> pb.DatasetInfo:
        return await self.training.upload_dataset(chunks, caller)

    @rpc("publish", pb.JobInfo, audit=True)
    async def CreateJob(self, request: pb.CreateJobRequest, caller: Caller) -> pb.JobInfo:
        return await self.training.create_job(request, caller)

    @rpc("publish", pb.JobInfo)
    async def GetJob(self, request: pb.GetJobRequest, caller: Caller) -> pb.JobInfo:
        return await self.training.get_job(request, caller)

    @rpc("publish", pb.ListJobsResponse)
    async def ListJobs(self, request: pb.ListJobsRequest, caller: Caller) -> pb.ListJobsResponse:
        return await self.training.list_jobs(request, caller)

    @rpc("publish", pb.JobInfo, audit=True)
    async def CancelJob(self, request: pb.CancelJobRequest, caller: Caller) -> pb.JobInfo:
        return await self.training.cancel_job(request, caller)

    @rpc_watch("publish")
    async def WatchJob(self, request: pb.WatchJobRequest, caller: Caller) -> AsyncIterator[pb.JobEvent]:
        async for event in self.training.watch_job(request, caller):
            yield event

    # -- Admin -----------------------------------------------------------------------------

    @rpc("admin", pb.TenantInfo, audit=True)
    async def CreateTenant(self, request: pb.CreateTenantRequest) -> pb.TenantInfo:
        return await self.admin.call("CreateTenant", request)

    @rpc("admin", pb.ListTenantsResponse)
    async def ListTenants(self, request: pb.ListTenantsRequest) -> pb.ListTenantsResponse:
        return await self.admin.call("ListTenants", request)

    @rpc("admin", pb.DeleteTenantResponse, audit=True)
    async def DeleteTenant(self, request: pb.DeleteTenantRequest) -> pb.DeleteTenantResponse:
        return await self.admin.call("DeleteTenant", request)

    @rpc("admin", pb.TenantInfo, audit=True)
    async def SetQuota(self, request: pb.SetQuotaRequest) -> pb.TenantInfo:
        return await self.admin.call("SetQuota", request)

    @rpc("admin", pb.CreateKeyResponse, audit=True)
    async def CreateKey(self, request: pb.CreateKeyRequest) -> pb.CreateKeyResponse:
        return await self.admin.call("CreateKey", request)

    @rpc("admin", pb.ListKeysResponse)
    async def ListKeys(self, request: pb.ListKeysRequest) -> pb.ListKeysResponse:
        return await self.admin.call("ListKeys", request)

    @rpc("admin", pb.KeyInfo, audit=True)
    async def RevokeKey(self, request: pb.RevokeKeyRequest) -> pb.KeyInfo:
        return await self.admin.call("RevokeKey", request)

    @rpc("admin", pb.ListAuditResponse)
    async def ListAudit(self, request: pb.ListAuditRequest) -> pb.ListAuditResponse:
        return await self.admin.call("ListAudit", request)

    async def audit(self, caller: Caller, rpc: str, task_id: str, version: str, outcome: str) -> None:
        """One audit record per Registry/Admin change (the gate calls it); a store that
        cannot take it is logged, not the caller's failure."""
        record = AuditRecord(now_iso(), caller.key_id, caller.tenant, rpc, task_id, version, outcome)
        try:
            await self.parts.on_admin(self.parts.store.catalog.add_audit, record)
        except Exception:
            logger.exception("audit record of %s not written", rpc)

    def check_health(self) -> None:
        if self._watcher.done():
            raise RuntimeError("the store watcher stopped")

    # -- batches, the bank's events, the store watch -----------------------------------------

    def _record(self, stats: BatchStats) -> None:
        m = self.metrics
        m.batch_rows.observe(stats.rows)
        m.batch_tasks.observe(stats.tasks)
        for kind, n in stats.kind_rows.items():
            m.batch_kind_rows.inc(n, tags={"kind": kind})
        m.padding_efficiency.observe(stats.real_tokens / max(1, stats.padded_tokens))

    def _bank_event(self, event: BankEvent, key: VersionKey) -> None:
        self.metrics.bank_event(event.value)
        if event is not BankEvent.HIT:
            bank = self.parts.bank
            self.metrics.bank_bytes.set(bank.device_bytes, tags={"tier": "device"})
            self.metrics.bank_bytes.set(bank.host_bytes, tags={"tier": "host"})

    async def _watch_store(self) -> None:
        """Follow the store's change feed (pushed by PostgreSQL, polled on SQLite; the store
        decides): load new latest versions of the tasks held here, drop deleted tasks."""
        loop = asyncio.get_running_loop()
        waiter = ThreadPoolExecutor(1, "polyhead-watch")  # the feed blocks in its own thread
        resolver, interval = self.parts.resolver, self.parts.config.watch_interval_s
        feed = None
        while True:
            try:
                if feed is None:
                    feed = await loop.run_in_executor(waiter, self.parts.store.watch, interval)
                await loop.run_in_executor(waiter, feed.wait, WATCH_WAIT_S)
                await resolver.refresh(wait=True)
                if resolver.generation != self._watched:
                    self._watched = resolver.generation
                    if await resolver.read(self.parts.keys.load, self.parts.store.catalog):
                        self.keys_loaded.set()
                    await self._follow_store(resolver.changed_at)
            except Exception:
                logger.exception("store watch failed; retrying")
                await asyncio.sleep(interval)

    async def _follow_store(self, changed_at: float) -> None:
        bank = self.parts.bank
        latest = await self.parts.resolver.latest_of(bank.task_ids())
        for task_id, info in latest.items():
            if info is None:
                bank.discard(task_id)
                continue
            key = VersionKey(task_id, info.version)
            if bank.peek(key) is None:
                try:
                    await bank.get(key)
                except NotFoundError:  # deleted since it was read: the next change drops it
                    continue
                ms = (time.perf_counter() - changed_at) * 1000
                self.metrics.swap_latency.observe(ms, tags={"origin": "store"})


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


def start_scheduler(config: ServerConfig) -> Any:
    """The cluster's job scheduler (the first replica creates it; see scheduler.py)."""
    from polyhead.server._private.scheduler import SchedulerSettings, ensure_scheduler
    from polyhead.store.catalog import absolute, default_location
    from polyhead.trainer.job import WorkerSettings

    worker = WorkerSettings(store=absolute(config.store or default_location()), backbone=config.backbone,
                            max_artifact_bytes=int(config.max_artifact_mb * MB),
                            limits=config.limits(), lease_s=config.job_lease_s)
    return ensure_scheduler(SchedulerSettings(worker, config.max_jobs, config.job_cpus,
                                              config.job_gpus, config.job_resource,
                                              config.max_jobs_per_tenant))


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
