"""One training job's worker: the job's datasets from the store, `polyhead train`'s own code,
and the result published through the store's one publish path (decode, limits, probe).

The worker records its events and its end (published, failed, cancelled) in the store.
It renews its lease while it runs and stops at the next step once the job is cancelled.
A worker that dies records nothing: the scheduler sees its task fail (or its lease run
out) and retries the job once (``JobBook.retry_or_fail``); a retry resumes from the
last epoch's checkpoint when the same node still holds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polyhead.store.catalog import open_catalog
from polyhead.store.jobs import CANCELLED, CANCELLING, FAILED, JobBook, JobRecord
from polyhead.store.limits import Limits
from polyhead.trainer.data import Dataset
from polyhead.trainer.uploads import SUFFIX, ColumnFlags, read_dataset

log = logging.getLogger(__name__)
STEP_EVENT_S = 2.0  # the least time between two `step` events of a job


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs of the server's configuration."""

    store: str
    backbone: str | None = None
    device: str = "cpu"  # "cuda" when the worker holds a GPU
    threads: int = 1  # torch threads: the worker's CPUs
    max_artifact_bytes: int = 256 << 20
    limits: Limits = dataclasses.field(default_factory=Limits)
    lease_s: float = 30.0
    checkpoint_dir: str = ""  # "": <tmp>/polyhead-jobs


class Stop(Exception):
    """The job was cancelled (or taken over) under the worker: end without publishing."""


class Lease:
    """Renews the job's lease every lease_s / 3 in a thread; ``check`` raises Stop once the
    job is cancelling or no longer this attempt's."""

    def __init__(self, book: JobBook, job: JobRecord, lease_s: float) -> None:
        self.book, self.job, self.lease_s = book, job, lease_s
        self.state = job.state
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="polyhead-lease", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def _run(self) -> None:
        while not self._done.wait(self.lease_s / 3):
            try:
                self.state = self.book.heartbeat(self.job.job_id, self.job.attempt, self.lease_s)
            except Exception:  # the store is down: the lease runs out if it stays down
                log.exception("job %s: lease renewal failed", self.job.job_id)

    def check(self) -> None:
        if self.state == CANCELLING:
            raise Stop("cancelled while running")
        if self.state == "lost":
            raise Stop("the job moved on without this worker")

    def refresh(self) -> None:
        self.state = self.book.heartbeat(self.job.job_id, self.job.attempt, self.lease_s)
        self.check()


def run_job(s: WorkerSettings, job_id: str, attempt: int, node: str,
            resources: dict[str, float]) -> str:
    """Run the job's ``attempt`` to its end; the state it ended in."""
    book = JobBook(open_catalog(s.store, create=False))
    job = book.job(job_id)
    if job.attempt != attempt:
        return "lost"
    with Lease(book, job, s.lease_s) as lease:
        try:
            return _run(s, book, job, lease, node, resources)
        except Stop as e:
            if lease.state == CANCELLING or "cancelled" in str(e):
                book.finish(job_id, CANCELLED, str(e), attempt)
                return CANCELLED
            return "lost"
        except Exception as e:  # the trainer's own error: retrying gives the same
            log.exception("job %s failed", job_id)
            book.finish(job_id, FAILED, f"{type(e).__name__}: {e}"[:2000], attempt)
            return FAILED


def _run(s: WorkerSettings, book: JobBook, job: JobRecord, lease: Lease, node: str,
         resources: dict[str, float]) -> str:
    import torch

    from polyhead.engine import load_backbone
    from polyhead.trainer.jobspec import parse_job
    from polyhead.trainer.metrics import check_metric
    from polyhead.trainer.run import Listener, finish, result_context, train

    torch.set_num_threads(max(1, s.threads))
    train_data, dev_data = load_job_data(book, job)
    _, cfg = parse_job(job.method, job.spec.get("options", {}))
    cfg = dataclasses.replace(cfg, device=s.device)
    metric = check_metric(job.spec.get("metric") or ("pearson" if train_data.regression else "accuracy"),
                          train_data.regression)
    backbone = load_backbone(s.backbone, device=s.device)
    book.started(job.job_id, job.attempt, node, resources=resources, pid=os.getpid(),
                 train_rows=len(train_data.examples), dev_rows=len(dev_data.examples))
    lease.refresh()
    events = _Events(book, job.job_id, metric, lease.check)
    result = train(cfg, backbone, train_data, dev_data, metric, progress=False, log_fn=log.info,
                   export=False, checkpoint=_checkpoint(s, job, cfg),
                   listener=Listener(on_step=events.step, on_epoch=events.epoch))
    finish(result, result_context(result))
    return _publish(s, book, job, lease, result, train_data, backbone)


def _publish(s: WorkerSettings, book: JobBook, job: JobRecord, lease: Lease, result: Any,
             train_data: Dataset, backbone: Any) -> str:
    """Through the gate (``to_publishing``), then the store's publish: all or nothing."""
    from functools import partial

    from polyhead.engine.probe import probe_forward
    from polyhead.store import Store
    from polyhead.trainer.output import encode

    data = encode(job.task_id, result, train_data, backbone.spec)
    lease.refresh()
    if not book.to_publishing(job.job_id, job.attempt, hashlib.sha256(data).hexdigest()):
        lease.refresh()  # cancelled just now: Stop says so
        raise Stop("the job is no longer running this attempt")
    store = Store(s.store, backbone.spec, max_artifact_bytes=s.max_artifact_bytes, limits=s.limits,
                  probe=partial(probe_forward, backbone), create=False)
    stored = store.ingest(data, replace_kind=bool(job.spec.get("replace_kind")))
    book.published(job.job_id, stored.info.version, stored.info.number)
    return "published"


def load_job_data(book: JobBook, job: JobRecord) -> tuple[Dataset, Dataset]:
    """The job's train and dev sets as `polyhead train` reads them: the dev set from its
    own dataset, or a seeded share of the train rows (``dev_fraction``)."""
    spec = job.spec
    record = book.dataset(spec["train"])
    flags = ColumnFlags.from_dict(record.columns)
    train_data = read_dataset("train" + SUFFIX[record.format], book.dataset_bytes(record.dataset_id), flags)
    if spec.get("dev"):
        dev_record = book.dataset(spec["dev"])
        dev_data = read_dataset("dev" + SUFFIX[dev_record.format], book.dataset_bytes(spec["dev"]),
                                ColumnFlags.from_dict(dev_record.columns), train_data.labels)
        return train_data, dev_data
    return split(train_data, float(spec["dev_fraction"]), int(spec.get("options", {}).get("seed", 0)))


def split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(train, dev): a seeded ``fraction`` of the rows (at least one) held out; the labels
    stay the full set's."""
    n = len(data.examples)
    if n < 2:
        raise ValueError(f"dev_fraction needs at least 2 train rows, the dataset has {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = min(n - 1, max(1, round(fraction * n)))
    dev, train = sorted(order[:k]), sorted(order[k:])
    return (Dataset([data.examples[i] for i in train], data.labels, data.label_type),
            Dataset([data.examples[i] for i in dev], data.labels, data.label_type))


def _checkpoint(s: WorkerSettings, job: JobRecord, cfg: Any) -> Path | None:
    """The job's epoch checkpoint on this node, for the methods the trainer checkpoints."""
    from polyhead.trainer.table import METHODS

    if METHODS[cfg.method].dense or cfg.head_init is not None:
        return None
    folder = Path(s.checkpoint_dir or Path(tempfile.gettempdir()) / "polyhead-jobs")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder / f"{job.job_id}.ckpt"


class _Events:
    """The run's hooks: `step` events (the first, then at most one per STEP_EVENT_S, and
    the last), `epoch` events, and the cancel check at every step."""

    def __init__(self, book: JobBook, job_id: str, metric: str, check: Callable[[], None]) -> None:
        self.book, self.job_id, self.metric, self.check = book, job_id, metric, check
        self.last = 0.0

    def step(self, done: int, total: int) -> None:
        self.check()
        now = time.monotonic()
        if done == 1 or done == total or now - self.last >= STEP_EVENT_S:
            self.last = now
            self.book.add_event(self.job_id, "step", step=done, total_steps=total)

    def epoch(self, entry: dict[str, Any]) -> None:
        self.book.add_event(self.job_id, "epoch", epoch=int(entry["epoch"]),
                            train_loss=float(entry["train_loss"]), metric=self.metric,
                            metric_value=float(entry.get(self.metric, float("nan"))))
