"""The Training service: datasets in, jobs created, read, cancelled and watched. Every store
call runs in the service's own threads (never on the event loop); the jobs themselves run
on the cluster (polyhead.server._private.scheduler)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from polyhead.server._private.auth import Caller
from polyhead.server._private.errors import InvalidInput, TooLarge
from polyhead.server._private.gate import message_of
from polyhead.server._private.registry_rpcs import task_id_of
from polyhead.server.config import MB, ServerConfig
from polyhead.store.catalog import open_catalog
from polyhead.store.errors import NotFoundError
from polyhead.store.jobs import STATES, TERMINAL, DatasetRecord, JobBook, JobEventRecord, JobRecord
from polyhead.store.manifest import LABEL_RULE, bad_label
from polyhead.trainer.data import DataError
from polyhead.trainer.uploads import ColumnFlags, dataset_id, format_of, read_dataset
from polyhead.v1 import polyhead_pb2 as pb

T = TypeVar("T")
WATCH_POLL_S = 0.3  # how often WatchJob looks for new events
METRICS = ("accuracy", "f1", "mcc", "pearson", "spearman")
ENDS = frozenset({"published", "failed", "cancelled"})  # a job's last event


class TrainingService:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.book = JobBook(open_catalog(config.store))
        self.pool = ThreadPoolExecutor(2, "polyhead-training")

    async def _on(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -- datasets --------------------------------------------------------------------------

    async def upload_dataset(self, chunks: AsyncIterator[Any], caller: Caller) -> pb.DatasetInfo:
        cap = int(self.config.max_dataset_mb * MB)
        first: pb.DatasetChunk | None = None
        parts: list[bytes] = []
        size = 0
        async for raw in chunks:
            chunk = message_of(raw)
            first = first or chunk
            size += len(chunk.data)
            if size > cap:
                raise TooLarge(f"dataset: over the server's cap of {cap:,} bytes "
                               "(max_dataset_mb)")
            parts.append(bytes(chunk.data))
        if first is None:
            raise InvalidInput("dataset: no chunks")
        if not first.filename:
            raise InvalidInput("filename: required in the first chunk (its suffix is the format)")
        record = await self._on(self._store_dataset, first, b"".join(parts), caller)
        return dataset_pb(record)

    def _store_dataset(self, first: pb.DatasetChunk, data: bytes, caller: Caller) -> DatasetRecord:
        c = first.columns
        flags = ColumnFlags(c.text_col, c.pair_col, c.label_col, c.no_header, c.regression)
        try:
            fmt = format_of(first.filename)
            source = self.book.dataset(first.labels_from, _scope(caller)) if first.labels_from else None
            labels = source.labels if source else None
            ds = read_dataset(first.filename, data, flags, labels)
        except DataError as e:
            raise InvalidInput(f"dataset {e}") from None
        cfg = self.config
        if ds.labels is not None:  # what a job trained on it could publish: now, not after training
            if (bad := bad_label(ds.labels)) is not None:
                raise InvalidInput(f"dataset {first.filename:.80}: {LABEL_RULE}, got {bad!r:.80}")
            if len(ds.labels) > cfg.max_outputs:
                raise InvalidInput(f"dataset {first.filename:.80}: {len(ds.labels):,} labels; the "
                                   f"server's max_outputs is {cfg.max_outputs:,}")
        record = DatasetRecord(dataset_id(data, fmt, flags, labels), fmt, flags.to_dict(), ds.labels,
                               len(ds.examples), ds.inputs, len(data), _now())
        return self.book.put_dataset(record, data, caller.tenant,
                                     quota_bytes=int(cfg.max_tenant_datasets_mb * MB),
                                     keep_s=cfg.dataset_retention_days * 86400)

    # -- jobs ------------------------------------------------------------------------------

    async def create_job(self, request: pb.CreateJobRequest, caller: Caller) -> pb.JobInfo:
        task_id = task_id_of(request.task_id)
        spec = await self._on(self._spec, request, caller)
        return job_pb(await self._on(self.book.create, task_id, request.method, spec, _scope(caller)))

    def _spec(self, r: pb.CreateJobRequest, caller: Caller) -> dict[str, Any]:
        """The job's spec, every part checked as `polyhead train` checks its flags; its
        datasets the caller's tenant's own (an admin's: any)."""
        from polyhead.trainer.jobspec import parse_job

        if not r.train_dataset:
            raise InvalidInput("train_dataset: required (UploadDataset gives the id)")
        if bool(r.dev_dataset) == bool(r.dev_fraction):
            raise InvalidInput("give dev_dataset or dev_fraction (one of them)")
        if r.dev_fraction and not 0 < r.dev_fraction < 1:
            raise InvalidInput(f"dev_fraction: {r.dev_fraction:g} is not between 0 and 1")
        options = dict(r.options)
        try:
            parse_job(r.method, options)
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        self.book.catalog.check_room(r.task_id)  # a new task past max_tasks: refused now
        train = self.book.dataset(r.train_dataset, _scope(caller))
        if r.dev_dataset:
            _check_dev(train, self.book.dataset(r.dev_dataset, _scope(caller)))
        if r.metric and r.metric not in METRICS:
            raise InvalidInput(f"metric: unknown {r.metric!r}; choose one of {', '.join(METRICS)}")
        return {"train": r.train_dataset, "dev": r.dev_dataset, "dev_fraction": r.dev_fraction,
                "options": options, "metric": r.metric, "replace_kind": r.replace_kind,
                "created_by": {"key_id": caller.key_id, "tenant": caller.tenant}}

    async def _job(self, job_id: str, caller: Caller) -> JobRecord:
        """The job, if its task is in the caller's namespace; else NOT_FOUND in the words
        an unknown job gets (JobBook.job's), so another tenant's job does not leak."""
        job = await self._on(self.book.job, job_id)
        if not caller.sees(job.task_id):
            raise NotFoundError(f"no job {job_id!r:.80}")
        return job

    async def get_job(self, request: pb.GetJobRequest, caller: Caller) -> pb.JobInfo:
        return job_pb(await self._job(_job_id(request.job_id), caller))

    async def list_jobs(self, request: pb.ListJobsRequest, caller: Caller) -> pb.ListJobsResponse:
        if request.state and request.state not in STATES:
            raise InvalidInput(f"state: unknown {request.state!r}; one of {', '.join(STATES)}")
        limit = request.limit or 100
        if not 0 < limit <= 10_000:
            raise InvalidInput(f"limit: {limit} is not in 1..10000")
        tenant = None if caller.admin else caller.tenant
        jobs = await self._on(self.book.jobs, request.state, limit, tenant)
        return pb.ListJobsResponse(jobs=[job_pb(j) for j in jobs])

    async def cancel_job(self, request: pb.CancelJobRequest, caller: Caller) -> pb.JobInfo:
        job = await self._job(_job_id(request.job_id), caller)  # a job's task never changes
        return job_pb(await self._on(self.book.cancel, job.job_id))

    async def watch_job(self, request: pb.WatchJobRequest, caller: Caller) -> AsyncIterator[pb.JobEvent]:
        """Every event after ``after_seq``, as it happens, up to the job's last one."""
        job_id, seq = (await self._job(_job_id(request.job_id), caller)).job_id, max(0, request.after_seq)
        while True:
            # the state first: a job that ends between the two reads still has its last
            # event in ``events`` (the end and its event are written in one transaction)
            ended = (await self._on(self.book.job, job_id)).state in TERMINAL
            events = await self._on(self.book.events, job_id, seq)
            for e in events:
                seq = e.seq
                yield event_pb(e)
                if e.kind in ENDS:
                    return
            if ended:
                return  # its last event came before after_seq
            await asyncio.sleep(WATCH_POLL_S)


def _scope(caller: Caller) -> str | None:
    """Whose datasets ``caller`` may name: its tenant's (an admin: anyone's, None)."""
    return None if caller.admin else caller.tenant


def _check_dev(train: DatasetRecord, dev: DatasetRecord) -> None:
    if train.columns.get("regression") != dev.columns.get("regression"):
        raise InvalidInput("dev_dataset: uploaded with another --regression than the train set")
    if train.labels is not None and dev.labels is not None and not set(dev.labels) <= set(train.labels):
        extra = sorted(set(dev.labels) - set(train.labels))
        raise InvalidInput(f"dev_dataset: labels {extra} are not in the train set's {train.labels} "
                           "(upload the dev set with labels_from the train set)")


def _job_id(text: str) -> str:
    if not text:
        raise InvalidInput("job_id: required")
    if len(text) > 64 or not text.replace("-", "").isalnum():
        raise InvalidInput(f"job_id: {text[:64]!r} is not a job id")
    return text


def dataset_pb(d: DatasetRecord) -> pb.DatasetInfo:
    return pb.DatasetInfo(dataset_id=d.dataset_id, nbytes=d.nbytes, rows=d.rows,
                          labels=d.labels or [], format=d.format, created_at=d.created_at,
                          inputs=d.inputs)


def job_pb(j: JobRecord) -> pb.JobInfo:
    s = j.spec
    return pb.JobInfo(job_id=j.job_id, task_id=j.task_id, method=j.method, state=j.state,
                      created_at=j.created_at, updated_at=j.updated_at, attempt=j.attempt,
                      reason=j.reason, version=j.version if j.state == "published" else "",
                      version_number=j.version_number, node=j.node,
                      train_dataset=s.get("train", ""), dev_dataset=s.get("dev", ""),
                      dev_fraction=float(s.get("dev_fraction") or 0),
                      options_json=json.dumps(s.get("options", {}), sort_keys=True))


def event_pb(e: JobEventRecord) -> pb.JobEvent:
    fields = {f.name for f in pb.JobEvent.DESCRIPTOR.fields}
    body = {k: v for k, v in e.body.items() if k in fields and not _nan(v)}
    return pb.JobEvent(job_id=e.job_id, seq=e.seq, at=e.at, kind=e.kind, **body)


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")

