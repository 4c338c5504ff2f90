"""Training jobs in the catalog (both backends): uploaded datasets, jobs, their events.

The store is the jobs' source of truth; whoever runs them (the scheduler) only claims.
A job moves queued -> running -> publishing -> published, or to failed / cancelled:
  - ``claim`` takes queued jobs under a lease (owner, expiry) in one write transaction,
    so two schedulers never run one job (nor a tenant more than its share,
    ``max_jobs_per_tenant``); the worker renews the lease (``heartbeat``);
  - a job whose lease ran out (its worker or scheduler died) is queued again once
    (``retry_or_fail``), then failed with the reason;
  - ``to_publishing`` is the one gate before the publish: conditional on the job still
    running its attempt, and a cancel is refused from then on, so a cancelled job never
    publishes and a publishing one is never cancelled halfway.
Job changes never move the catalog's generation (replicas reload nothing for them).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import secrets
import time
from typing import Any

from polyhead.store.catalog import Catalog
from polyhead.store.errors import NotFoundError, QuotaExceeded, StoreError
from polyhead.store.keys import now_iso
from polyhead.store.names import DEFAULT_TENANT, namespace_prefix, tenant_of
from polyhead.store.sql import Conn
from polyhead.store.tenancy import AuditRecord, add_audit, dataset_usage

QUEUED, RUNNING, PUBLISHING = "queued", "running", "publishing"
PUBLISHED, FAILED, CANCELLING, CANCELLED = "published", "failed", "cancelling", "cancelled"
STATES = (QUEUED, RUNNING, PUBLISHING, PUBLISHED, FAILED, CANCELLING, CANCELLED)
TERMINAL = frozenset({PUBLISHED, FAILED, CANCELLED})
LEASED = (RUNNING, PUBLISHING, CANCELLING)  # a worker holds these
MAX_ATTEMPTS = 2  # a job whose worker died is retried once
JOB_COLUMNS = ("job_id, task_id, method, state, spec, created_at, updated_at, attempt, reason, "
               "version, version_number, node, lease_owner, lease_until")


class JobStateError(StoreError):
    """The job is not in a state that allows this (cancel a finished job, ...)."""


@dataclasses.dataclass(frozen=True)
class DatasetRecord:
    dataset_id: str
    format: str  # "tsv", "csv" or "jsonl"
    columns: dict[str, Any]  # the column flags it was validated with
    labels: list[str] | None  # None: regression
    rows: int
    inputs: str  # "single" or "pair"
    nbytes: int
    created_at: str


@dataclasses.dataclass(frozen=True)
class JobRecord:
    job_id: str
    task_id: str
    method: str
    state: str
    spec: dict[str, Any]  # train, dev, dev_fraction, options, metric, replace_kind
    created_at: str
    updated_at: str
    attempt: int
    reason: str
    version: str
    version_number: int
    node: str
    lease_owner: str
    lease_until: float

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


@dataclasses.dataclass(frozen=True)
class JobEventRecord:
    job_id: str
    seq: int
    at: str
    kind: str
    body: dict[str, Any]


class JobBook:
    """The job tables of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # -- datasets --------------------------------------------------------------------------
    # One row of bytes per content (a dataset id is its hash), and one owner row per tenant
    # that uploaded it: a tenant names only its own datasets (an admin any), its owner rows
    # count against its quota, and retention drops owner rows no unfinished job needs, then
    # the bytes no owner holds.

    def put_dataset(self, record: DatasetRecord, data: bytes, tenant: str = DEFAULT_TENANT, *,
                    quota_bytes: int | None = None, keep_s: float | None = None,
                    uploaded_at: str | None = None) -> DatasetRecord:
        """Store a validated dataset for ``tenant`` (the same content again keeps its first
        bytes; the tenant's upload time is renewed). ``keep_s``: first drop what retention
        drops (``prune_datasets``; inf drops nothing); ``quota_bytes``: QuotaExceeded if the
        tenant's datasets would then hold more. The record comes back with the tenant's own
        upload time."""
        def body(c: Conn) -> DatasetRecord:
            when, before = uploaded_at or _now(), None if keep_s is None else _kept_since(keep_s)
            if before is not None:
                prune(c, before)
            if quota_bytes is not None:
                again = c.execute("SELECT 1 FROM dataset_owners WHERE tenant = ? AND dataset_id = ?",
                                  (tenant, record.dataset_id)).fetchone() is not None
                held = dataset_usage(c, tenant) - (record.nbytes if again else 0)
                if held + record.nbytes > quota_bytes:
                    raise QuotaExceeded(
                        f"tenant {tenant!r}: its datasets would hold {held + record.nbytes:,} "
                        f"bytes; the limit is {quota_bytes:,} (the server's max_tenant_datasets_mb; "
                        "a dataset no unfinished job uses goes after dataset_retention_days)")
            c.execute("INSERT INTO datasets (dataset_id, format, columns, labels, nrows, inputs, nbytes, "
                      "created_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                      "ON CONFLICT (dataset_id) DO NOTHING",
                      (record.dataset_id, record.format, json.dumps(record.columns, sort_keys=True),
                       None if record.labels is None else json.dumps(record.labels), record.rows,
                       record.inputs, record.nbytes, record.created_at, data))
            c.execute("INSERT INTO dataset_owners (tenant, dataset_id, uploaded_at) VALUES (?, ?, ?) "
                      "ON CONFLICT (tenant, dataset_id) DO UPDATE SET uploaded_at = excluded.uploaded_at",
                      (tenant, record.dataset_id, when))
            return _dataset(c, record.dataset_id, tenant)

        return self.catalog._writing(body)

    def dataset(self, dataset_id: str, tenant: str | None = None) -> DatasetRecord:
        """The dataset, if ``tenant`` uploaded it (None: whoever did, an admin's view); else
        NotFoundError in the words an unknown dataset gets. Its ``created_at`` is that
        tenant's upload time (None: the first upload's)."""
        return self.catalog._reading(lambda c: _dataset(c, dataset_id, tenant))

    def dataset_ids(self) -> list[str]:
        """Every stored dataset's id, oldest first."""
        rows = self.catalog._reading(lambda c: c.execute(
            "SELECT dataset_id FROM datasets ORDER BY created_at, dataset_id").fetchall())
        return [str(r[0]) for r in rows]

    def dataset_owners(self) -> list[tuple[str, str, str]]:
        """(tenant, dataset id, upload time) of every owner row, oldest upload first."""
        rows = self.catalog._reading(lambda c: c.execute(
            "SELECT tenant, dataset_id, uploaded_at FROM dataset_owners "
            "ORDER BY uploaded_at, tenant, dataset_id").fetchall())
        return [(str(t), str(d), str(w)) for t, d, w in rows]

    def prune_datasets(self, keep_s: float) -> int:
        """Drop owner rows older than ``keep_s`` seconds that no unfinished job names, then
        the datasets no owner holds (the bytes); how many datasets went."""
        before = _kept_since(keep_s)
        return 0 if before is None else self.catalog._writing(lambda c: prune(c, before))

    def dataset_bytes(self, dataset_id: str) -> bytes:
        row = self.catalog._reading(lambda c: c.execute(
            "SELECT data FROM datasets WHERE dataset_id = ?", (dataset_id,)).fetchone())
        if row is None:
            raise NotFoundError(f"no dataset {dataset_id!r:.80}")
        return bytes(row[0])

    # -- jobs ------------------------------------------------------------------------------

    def create(self, task_id: str, method: str, spec: dict[str, Any],
               tenant: str | None = None) -> JobRecord:
        """A new queued job, with its ``queued`` event. Its datasets must exist, and with
        ``tenant`` be that tenant's own, checked in the job's own transaction (retention
        cannot drop them in between); their upload time is renewed, so retention counts
        from their last use."""
        job_id = "job-" + secrets.token_hex(6)

        def body(c: Conn) -> JobRecord:
            now = _now()
            for key in ("train", "dev"):
                if spec.get(key):
                    _dataset(c, spec[key], tenant)
                    if tenant is not None:
                        c.execute("UPDATE dataset_owners SET uploaded_at = ? WHERE tenant = ? AND "
                                  "dataset_id = ?", (now, tenant, spec[key]))
            c.execute(f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 0, '', '', 0, "
                      "'', '', 0)", (job_id, task_id, method, QUEUED, json.dumps(spec, sort_keys=True),
                                     now, now))
            _event(c, job_id, QUEUED, {})
            return _job(c, job_id)

        return self.catalog._writing(body)

    def job(self, job_id: str) -> JobRecord:
        return self.catalog._reading(lambda c: _job(c, job_id))

    def jobs(self, state: str = "", limit: int = 100, tenant: str | None = None) -> list[JobRecord]:
        """Newest first; ``tenant``: only the jobs of its namespace's tasks."""
        conds: list[str] = ["state = ?"] if state else []
        args: list[Any] = [state] if state else []
        if tenant == DEFAULT_TENANT:
            conds.append("task_id NOT LIKE ?")  # (a parameter: '%' is PostgreSQL's placeholder)
            args.append("%/%")
        elif tenant is not None:
            prefix = namespace_prefix(tenant)
            conds.append("SUBSTR(task_id, 1, ?) = ?")
            args += [len(prefix), prefix]
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        rows = self.catalog._reading(lambda c: c.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs {where} ORDER BY created_at DESC, job_id LIMIT ?",
            (*args, limit)).fetchall())
        return [_row_job(r) for r in rows]

    def events(self, job_id: str, after_seq: int = 0) -> list[JobEventRecord]:
        def body(c: Conn) -> list[JobEventRecord]:
            _job(c, job_id)
            rows = c.execute("SELECT job_id, seq, at, kind, body FROM job_events WHERE job_id = ? "
                             "AND seq > ? ORDER BY seq", (job_id, after_seq)).fetchall()
            return [JobEventRecord(j, int(s), a, k, json.loads(b)) for j, s, a, k, b in rows]

        return self.catalog._reading(body)

    def add_event(self, job_id: str, kind: str, **body: Any) -> None:
        self.catalog._writing(lambda c: _event(c, job_id, kind, body))

    def cancel(self, job_id: str) -> JobRecord:
        """Queued: cancelled now. Running: cancelling (its worker stops, the scheduler
        records cancelled). Publishing or finished: JobStateError."""
        def body(c: Conn) -> JobRecord:
            job = _job(c, job_id)
            if job.state == QUEUED:
                _set(c, job_id, state=CANCELLED, reason="cancelled before it started")
                _event(c, job_id, CANCELLED, {"reason": "cancelled before it started"})
            elif job.state == RUNNING:
                _set(c, job_id, state=CANCELLING)
            elif job.state != CANCELLING:
                raise JobStateError(f"job {job_id} is {job.state}: it can no longer be cancelled")
            return _job(c, job_id)

        return self.catalog._writing(body)

    # -- the scheduler's and the worker's side ----------------------------------------------

    def claim(self, owner: str, lease_s: float, slots: int, per_tenant: int = 0) -> list[JobRecord]:
        """Up to ``slots`` queued jobs, oldest first, now running under ``owner``'s lease
        (their attempt counted). ``per_tenant`` > 0: a job is passed over while its task's
        tenant already holds that many leased jobs (counted in the same transaction)."""
        def body(c: Conn) -> list[JobRecord]:
            if per_tenant <= 0:
                rows = c.execute("SELECT job_id FROM jobs WHERE state = ? ORDER BY created_at, job_id "
                                 "LIMIT ?", (QUEUED, max(0, slots))).fetchall()
            else:
                rows = _fair_share(c, slots, per_tenant)
            for (job_id,) in rows:
                c.execute("UPDATE jobs SET state = ?, attempt = attempt + 1, lease_owner = ?, "
                          "lease_until = ?, updated_at = ? WHERE job_id = ?",
                          (RUNNING, owner, time.time() + lease_s, _now(), job_id))
            return [_job(c, job_id) for (job_id,) in rows]

        return self.catalog._writing(body)

    def heartbeat(self, job_id: str, attempt: int, lease_s: float) -> str:
        """Renew the lease of the job's ``attempt``; its state (a worker stops on
        ``cancelling``, and on anything but its own attempt still leased)."""
        def body(c: Conn) -> str:
            job = _job(c, job_id)
            if job.attempt != attempt or job.state not in LEASED:
                return "lost"
            c.execute("UPDATE jobs SET lease_until = ? WHERE job_id = ?", (time.time() + lease_s, job_id))
            return job.state

        return self.catalog._writing(body)

    def started(self, job_id: str, attempt: int, node: str, **body: Any) -> None:
        def run(c: Conn) -> None:
            _set(c, job_id, node=node)
            _event(c, job_id, "started", {"node": node, "attempt": attempt, **body})

        self.catalog._writing(run)

    def to_publishing(self, job_id: str, attempt: int, version: str) -> bool:
        """The gate before a publish: True (now publishing ``version``) only when the job
        still runs this attempt; a cancel that came first wins."""
        def body(c: Conn) -> bool:
            job = _job(c, job_id)
            if job.state != RUNNING or job.attempt != attempt:
                return False
            _set(c, job_id, state=PUBLISHING, version=version)
            return True

        return self.catalog._writing(body)

    def published(self, job_id: str, version: str, number: int) -> None:
        def body(c: Conn) -> None:
            _set(c, job_id, state=PUBLISHED, version=version, version_number=number, lease_owner="")
            _event(c, job_id, PUBLISHED, {"version": version, "version_number": number})
            _audit_publish(c, _job(c, job_id))

        self.catalog._writing(body)

    def finish(self, job_id: str, state: str, reason: str, attempt: int | None = None) -> bool:
        """Failed or cancelled with ``reason`` (the attempt's, when given); False if the job
        had finished or moved on to another attempt."""
        assert state in (FAILED, CANCELLED)

        def body(c: Conn) -> bool:
            job = _job(c, job_id)
            if job.done or (attempt is not None and job.attempt != attempt):
                return False
            _set(c, job_id, state=state, reason=reason, lease_owner="")
            _event(c, job_id, state, {"reason": reason, "attempt": job.attempt})
            return True

        return self.catalog._writing(body)

    def retry_or_fail(self, job_id: str, attempt: int, reason: str) -> str:
        """The worker of ``attempt`` died: queued again (once), else failed; a job that was
        cancelling is cancelled, and one whose publish had committed (its version is in the
        catalog) is published. The state it ends in."""
        def body(c: Conn) -> str:
            job = _job(c, job_id)
            if job.state not in LEASED or job.attempt != attempt:  # reported already
                return job.state
            number = _published_number(c, job) if job.state == PUBLISHING else None
            if number is not None:
                _set(c, job_id, state=PUBLISHED, version_number=number, lease_owner="")
                _event(c, job_id, PUBLISHED, {"version": job.version, "version_number": number})
                _audit_publish(c, job)
            elif job.state == CANCELLING:
                _set(c, job_id, state=CANCELLED, reason="cancelled while running", lease_owner="")
                _event(c, job_id, CANCELLED, {"reason": "cancelled while running", "attempt": attempt})
            elif job.attempt < MAX_ATTEMPTS:
                _set(c, job_id, state=QUEUED, reason=reason, lease_owner="", version="")
                _event(c, job_id, "retrying", {"reason": reason, "attempt": attempt})
            else:
                why = f"attempt {attempt} of {MAX_ATTEMPTS}: {reason}"
                _set(c, job_id, state=FAILED, reason=why, lease_owner="")
                _event(c, job_id, FAILED, {"reason": why, "attempt": attempt})
            return _job(c, job_id).state

        return self.catalog._writing(body)

    def expired(self, now: float | None = None) -> list[JobRecord]:
        """Leased jobs whose lease ran out: their worker (or its scheduler) is gone."""
        marks = ",".join("?" * len(LEASED))
        rows = self.catalog._reading(lambda c: c.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ({marks}) AND lease_until < ?",
            (*LEASED, time.time() if now is None else now)).fetchall())
        return [_row_job(r) for r in rows]

    def count(self, states: tuple[str, ...]) -> int:
        marks = ",".join("?" * len(states))
        row = self.catalog._reading(lambda c: c.execute(
            f"SELECT COUNT(*) FROM jobs WHERE state IN ({marks})", states).fetchone())
        return int(row[0])


def _fair_share(c: Conn, slots: int, per_tenant: int) -> list[tuple[str]]:
    """The oldest queued jobs (up to ``slots``) whose tenant stays within ``per_tenant``
    leased jobs."""
    marks = ",".join("?" * len(LEASED))
    held: dict[str, int] = {}
    for (task_id,) in c.execute(f"SELECT task_id FROM jobs WHERE state IN ({marks})", LEASED).fetchall():
        held[tenant_of(task_id)] = held.get(tenant_of(task_id), 0) + 1
    picked: list[tuple[str]] = []
    for job_id, task_id in c.execute("SELECT job_id, task_id FROM jobs WHERE state = ? "
                                     "ORDER BY created_at, job_id", (QUEUED,)).fetchall():
        if len(picked) >= slots:
            break
        tenant = tenant_of(task_id)
        if held.get(tenant, 0) >= per_tenant:
            continue
        held[tenant] = held.get(tenant, 0) + 1
        picked.append((job_id,))
    return picked


def _published_number(c: Conn, job: JobRecord) -> int | None:
    row = c.execute("SELECT number FROM versions WHERE version = ? AND task_id = ?",
                    (job.version, job.task_id)).fetchone()
    return None if row is None else int(row[0])


def _dataset(c: Conn, dataset_id: str, tenant: str | None = None) -> DatasetRecord:
    columns = "d.dataset_id, d.format, d.columns, d.labels, d.nrows, d.inputs, d.nbytes"
    if tenant is None:
        row = c.execute(f"SELECT {columns}, d.created_at FROM datasets d WHERE d.dataset_id = ?",
                        (dataset_id,)).fetchone()
    else:  # another tenant's dataset is unknown here
        row = c.execute(f"SELECT {columns}, o.uploaded_at FROM datasets d JOIN dataset_owners o ON "
                        "o.dataset_id = d.dataset_id WHERE d.dataset_id = ? AND o.tenant = ?",
                        (dataset_id, tenant)).fetchone()
    if row is None:
        raise NotFoundError(f"no dataset {dataset_id!r:.80} (upload it first)")
    d, fmt, cols, labels, rows, inputs, nbytes, created = row
    return DatasetRecord(d, fmt, json.loads(cols), None if labels is None else json.loads(labels),
                         int(rows), inputs, int(nbytes), created)


def _kept_since(keep_s: float) -> str | None:
    """The upload time before which retention drops (None: it drops nothing, as with inf)."""
    return None if keep_s >= time.time() else _now(time.time() - keep_s)


def prune(c: Conn, before: str, tenant: str | None = None) -> int:
    """Retention: owner rows uploaded before ``before`` (of ``tenant``, or every tenant's)
    that no unfinished job names go, then the datasets left with no owner; how many
    datasets went."""
    marks = ",".join("?" * len(TERMINAL))
    used: set[str] = set()
    for (spec,) in c.execute(f"SELECT spec FROM jobs WHERE state NOT IN ({marks})", tuple(TERMINAL)):
        used.update(v for k, v in json.loads(spec).items() if k in ("train", "dev") and v)
    rows = c.execute("SELECT tenant, dataset_id FROM dataset_owners WHERE uploaded_at < ?",
                     (before,)).fetchall()
    for owner, dataset_id in rows:
        if dataset_id not in used and tenant in (None, owner):
            c.execute("DELETE FROM dataset_owners WHERE tenant = ? AND dataset_id = ?",
                      (owner, dataset_id))
    orphans = [d for (d,) in c.execute("SELECT dataset_id FROM datasets WHERE dataset_id NOT IN "
                                       "(SELECT dataset_id FROM dataset_owners)").fetchall()
               if d not in used]
    for d in orphans:
        c.execute("DELETE FROM datasets WHERE dataset_id = ?", (d,))
    return len(orphans)


# The audit trail's name for a job's publish (no RPC makes it: the job's worker does)
JOB_PUBLISH = "JobPublished"


def _audit_publish(c: Conn, job: JobRecord) -> None:
    """A job's publish in the audit trail, under the key that created the job (its tenant;
    a job from before this was recorded: "job" and the task's tenant)."""
    by = job.spec.get("created_by") or {}
    add_audit(c, AuditRecord(now_iso(), str(by.get("key_id") or "job"),
                             str(by.get("tenant") or tenant_of(job.task_id)), JOB_PUBLISH, job.task_id,
                             job.version, "OK"))


def _job(c: Conn, job_id: str) -> JobRecord:
    row = c.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no job {job_id!r:.80}")
    return _row_job(row)


def _row_job(row: Any) -> JobRecord:
    (job_id, task_id, method, state, spec, created, updated, attempt, reason, version, number,
     node, owner, until) = row
    return JobRecord(job_id, task_id, method, state, json.loads(spec), created, updated, int(attempt),
                     reason, version, int(number), node, owner, float(until))


_SETTABLE = frozenset({"state", "reason", "version", "version_number", "node", "lease_owner"})


def _set(c: Conn, job_id: str, **fields: Any) -> None:
    assert set(fields) <= _SETTABLE
    names = ", ".join(f"{k} = ?" for k in fields)
    c.execute(f"UPDATE jobs SET {names}, updated_at = ? WHERE job_id = ?",
              (*fields.values(), _now(), job_id))


def _event(c: Conn, job_id: str, kind: str, body: dict[str, Any]) -> None:
    (seq,) = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM job_events WHERE job_id = ?",
                       (job_id,)).fetchone()
    c.execute("INSERT INTO job_events (job_id, seq, at, kind, body) VALUES (?, ?, ?, ?, ?)",
              (job_id, seq, _now(), kind, json.dumps(body, sort_keys=True)))


def _now(at: float | None = None) -> str:
    """``at`` (epoch seconds; default now) as ISO-8601 UTC with microseconds."""
    return datetime.datetime.fromtimestamp(time.time() if at is None else at, datetime.UTC).isoformat(
        timespec="microseconds")
