"""The training jobs' scheduler: one named Ray actor per cluster (every replica asks for it
by name; the first creates it), which claims queued jobs from the store and runs each as
a Ray task on a node with the training resource.

The store stays the source of truth: a job runs only under a lease claimed in a write
transaction (``JobBook.claim``), so a second scheduler (another app on the same store)
never runs it twice; a job whose lease runs out (its scheduler died: a restart) is
retried once, as is one whose worker died (Ray reports its task failed). Concurrency is
limited globally by ``max_jobs`` (jobs leased across the store), per tenant by
``max_jobs_per_tenant`` (a tenant's leased jobs, counted in the claim's transaction) and
per node by the training resource each job holds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from typing import Any

import ray

from polyhead.store.catalog import open_catalog
from polyhead.store.jobs import CANCELLING, LEASED, JobBook
from polyhead.trainer.job import WorkerSettings, run_job

logger = logging.getLogger("ray.serve")
SCHEDULER_NAME = "polyhead-jobs"
NAMESPACE = "polyhead"
TICK_S = 0.5  # how often the scheduler looks at the store and its tasks


@dataclasses.dataclass(frozen=True)
class SchedulerSettings:
    worker: WorkerSettings
    max_jobs: int = 2  # jobs running at once, store-wide
    cpus: float = 1.0  # each job's Ray resources
    gpus: float = 0.0
    resource: str = "polyhead_train"  # the custom resource of training nodes; each job holds 1
    max_jobs_per_tenant: int = 0  # jobs of one tenant's tasks running at once; 0: no limit


def _job_task(settings: WorkerSettings, job_id: str, attempt: int) -> str:
    """A job's attempt as a Ray task: the node and resources it got go into its events."""
    ctx = ray.get_runtime_context()
    held = {k: float(v) for k, v in ctx.get_assigned_resources().items()}
    node = f"{ray.util.get_node_ip_address()} ({ctx.get_node_id()[:12]})"
    device = "cuda" if held.get("GPU") else "cpu"
    settings = dataclasses.replace(settings, device=device,
                                   threads=max(1, round(held.get("CPU", settings.threads))))
    return run_job(settings, job_id, attempt, node, held)


class JobScheduler:
    """Its loop runs in a thread of the actor; the actor's methods only report."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self.s = settings
        self.owner = f"scheduler-{uuid.uuid4().hex[:12]}"
        self.book = JobBook(open_catalog(settings.worker.store))
        self.running: dict[str, tuple[Any, int]] = {}  # job id -> (task ref, attempt)
        self.killed: set[str] = set()
        self.task = ray.remote(max_retries=0)(_job_task)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="polyhead-jobs", daemon=True)
        self._thread.start()

    def ping(self) -> str:
        return self.owner

    def running_jobs(self) -> list[str]:
        return sorted(self.running)

    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick()
            except Exception:
                logger.exception("job scheduler: tick failed; retrying")

    def tick(self) -> None:
        self._reap()
        self._renew_and_cancel()
        self._recover()
        self._launch()

    def _reap(self) -> None:
        """Tasks that ended: their worker recorded the end, unless it died."""
        refs = [ref for ref, _ in self.running.values()]
        if not refs:
            return
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        ended = {ref.hex() for ref in done}
        for job_id, (ref, attempt) in list(self.running.items()):
            if ref.hex() not in ended:
                continue
            del self.running[job_id]
            self.killed.discard(job_id)
            try:
                ray.get(ref)
            except Exception as e:  # the worker process or its node died, or was cancelled
                state = self.book.retry_or_fail(job_id, attempt, _died(e))
                logger.warning("job %s attempt %d: worker died (%s): now %s", job_id, attempt,
                               type(e).__name__, state)

    def _renew_and_cancel(self) -> None:
        """Keep the leases of jobs still waiting for a node; stop the cancelled ones."""
        for job_id, (ref, attempt) in list(self.running.items()):
            state = self.book.heartbeat(job_id, attempt, self.s.worker.lease_s)
            if state == CANCELLING and job_id not in self.killed:
                self.killed.add(job_id)
                ray.cancel(ref, force=True)  # the worker cannot be publishing: cancel refuses that

    def _recover(self) -> None:
        for job in self.book.expired():
            if job.job_id not in self.running:
                state = self.book.retry_or_fail(job.job_id, job.attempt,
                                                "its worker stopped renewing the lease (a restart, "
                                                "or the node died)")
                logger.warning("job %s: lease expired; now %s", job.job_id, state)

    def _launch(self) -> None:
        slots = self.s.max_jobs - self.book.count(LEASED)
        if slots <= 0:
            return
        for job in self.book.claim(self.owner, self.s.worker.lease_s, slots, self.s.max_jobs_per_tenant):
            options: dict[str, Any] = {"num_cpus": self.s.cpus, "num_gpus": self.s.gpus}
            if self.s.resource:
                options["resources"] = {self.s.resource: 1}
            ref = self.task.options(**options).remote(self.s.worker, job.job_id, job.attempt)
            self.running[job.job_id] = (ref, job.attempt)
            logger.info("job %s attempt %d launched", job.job_id, job.attempt)


def _died(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"its worker died ({type(e).__name__}: {text[0][:300] if text else ''})"


def ensure_scheduler(settings: SchedulerSettings) -> Any:
    """The cluster's scheduler actor, created by the first replica that asks (detached: it
    outlives the replica that made it; it restarts if its process dies)."""
    actor = ray.remote(JobScheduler).options(  # type: ignore[attr-defined]
        name=SCHEDULER_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
        num_cpus=0, max_restarts=-1, max_concurrency=4)
    return actor.remote(settings)
