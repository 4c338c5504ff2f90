"""Training jobs without Ray: the job tables (claim, lease, the publish gate, retries) on
both backends, dataset checks at upload, option parsing as `polyhead train`'s, and the
worker itself (train's code, the store's publish) on a tiny encoder."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from polyhead.store import Store
from polyhead.store.catalog import open_catalog
from polyhead.store.errors import NotFoundError, QuotaExceeded, StoreError
from polyhead.store.jobs import (
    CANCELLED,
    CANCELLING,
    FAILED,
    PUBLISHED,
    QUEUED,
    RUNNING,
    DatasetRecord,
    JobBook,
    JobStateError,
)
from polyhead.trainer.data import DataError
from polyhead.trainer.job import Lease, WorkerSettings, run_job, split
from polyhead.trainer.jobspec import option_flags, parse_job
from polyhead.trainer.uploads import ColumnFlags, dataset_id, read_dataset
from tests import test_store_support as support

location, pg_url = support.location, support.pg_url  # fixtures (pg_server: conftest)
GOOD = ["good fun movie", "great acting", "i loved it", "really fun film"]
BAD = ["bad boring film", "terrible plot", "i hated it", "very boring movie"]


def tsv(n: int = 40, labels: tuple[str, str] = ("neg", "pos")) -> bytes:
    rows = [f"{(GOOD if i % 2 else BAD)[i % 4]}\t{labels[i % 2]}" for i in range(n)]
    return ("text\tlabel\n" + "\n".join(rows) + "\n").encode()


def record_of(data: bytes, name: str = "train.tsv", labels: list[str] | None = None) -> DatasetRecord:
    flags = ColumnFlags()
    ds = read_dataset(name, data, flags, labels)
    return DatasetRecord(dataset_id(data, "tsv", flags), "tsv", flags.to_dict(), ds.labels,
                         len(ds.examples), ds.inputs, len(data), "2026-01-01")


def put(book: JobBook, data: bytes, name: str = "train.tsv", labels: list[str] | None = None,
        tenant: str = "default", **kw: Any) -> str:
    return book.put_dataset(record_of(data, name, labels), data, tenant, **kw).dataset_id


@pytest.fixture
def book(location: str) -> JobBook:
    Store(location)
    return JobBook(open_catalog(location))


# -- the job tables ------------------------------------------------------------------------

def test_claim_is_exclusive_and_counts_attempts(book: JobBook) -> None:
    ds = put(book, tsv())
    jobs = [book.create("t", "lora", {"train": ds, "dev_fraction": 0.2}) for _ in range(3)]
    first = book.claim("a", 30, 2)
    second = book.claim("b", 30, 2)
    assert [j.job_id for j in first] == [j.job_id for j in jobs[:2]]  # oldest first
    assert [j.job_id for j in second] == [jobs[2].job_id]  # never one claimed twice
    assert {j.state for j in first + second} == {RUNNING} and all(j.attempt == 1 for j in first)
    assert book.claim("c", 30, 5) == []


def test_claim_holds_each_tenant_to_its_share(book: JobBook) -> None:
    """max_jobs_per_tenant: a queued job is passed over while its tenant holds that many
    leased jobs (those claimed before, and those this claim takes), the others' are not."""
    ds = put(book, tsv())
    spec = {"train": ds, "dev_fraction": 0.2}
    a1, a2, a3 = (book.create("a/t", "lora", spec) for _ in range(3))
    b1 = book.create("b/t", "lora", spec)
    d1 = book.create("t", "lora", spec)  # the default tenant's
    first = book.claim("s", 30, 10, per_tenant=2)
    assert [j.job_id for j in first] == [a1.job_id, a2.job_id, b1.job_id, d1.job_id]
    assert book.claim("s", 30, 10, per_tenant=2) == []  # a3 waits: a holds 2 already
    b2 = book.create("b/t", "lora", spec)
    assert [j.job_id for j in book.claim("s", 30, 10, per_tenant=2)] == [b2.job_id]
    assert book.finish(a1.job_id, FAILED, "stopped", attempt=1)
    assert [j.job_id for j in book.claim("s", 30, 10, per_tenant=2)] == [a3.job_id]
    assert book.job(a3.job_id).state == RUNNING
    # without a per-tenant limit, only slots count
    a4, a5 = (book.create("a/t", "lora", spec) for _ in range(2))
    assert [j.job_id for j in book.claim("s", 30, 1)] == [a4.job_id]
    assert [j.job_id for j in book.claim("s", 30, 5)] == [a5.job_id]


def test_jobs_listed_by_tenant(book: JobBook) -> None:
    spec = {"train": put(book, tsv()), "dev_fraction": 0.2}
    a, ab, d = (book.create(t, "lora", spec) for t in ("a/t", "ab/t", "t"))
    assert [j.job_id for j in book.jobs(tenant="a")] == [a.job_id]  # not ab's
    assert [j.job_id for j in book.jobs(tenant="default")] == [d.job_id]
    assert {j.job_id for j in book.jobs()} == {a.job_id, ab.job_id, d.job_id}
    assert [j.job_id for j in book.jobs(QUEUED, 10, "ab")] == [ab.job_id]
    assert book.jobs(CANCELLED, 10, "ab") == [] and book.jobs(tenant="b") == []


def test_cancel_queued_running_and_refused_once_publishing(book: JobBook) -> None:
    ds = put(book, tsv())
    queued = book.create("t", "lora", {"train": ds, "dev_fraction": 0.2})
    assert book.cancel(queued.job_id).state == CANCELLED
    running = book.create("t", "lora", {"train": ds, "dev_fraction": 0.2})
    book.claim("a", 30, 1)
    assert book.cancel(running.job_id).state == CANCELLING
    assert not book.to_publishing(running.job_id, 1, "ab" * 32)  # a cancel that came first wins
    assert book.heartbeat(running.job_id, 1, 30) == CANCELLING
    third = book.create("t", "lora", {"train": ds, "dev_fraction": 0.2})
    book.claim("a", 30, 1)
    assert book.to_publishing(third.job_id, 1, "cd" * 32)
    with pytest.raises(JobStateError, match="publishing"):
        book.cancel(third.job_id)
    with pytest.raises(NotFoundError):
        book.cancel("job-000000000000")


def test_a_dead_worker_is_retried_once_then_failed_with_the_reason(book: JobBook) -> None:
    job = book.create("t", "lora", {"train": put(book, tsv()), "dev_fraction": 0.2})
    book.claim("a", 30, 1)
    assert book.retry_or_fail(job.job_id, 1, "worker died (SIGKILL)") == QUEUED
    assert book.retry_or_fail(job.job_id, 1, "a stale report") == QUEUED  # not its attempt now
    (again,) = book.claim("a", 30, 1)
    assert again.attempt == 2
    assert book.retry_or_fail(job.job_id, 2, "worker died again") == FAILED
    done = book.job(job.job_id)
    assert "worker died again" in done.reason and done.state == FAILED
    kinds = [e.kind for e in book.events(job.job_id)]
    assert kinds == ["queued", "retrying", "failed"]


def test_a_publish_that_committed_is_published_after_a_death(book: JobBook, location: str,
                                                             tiny_bert: Any) -> None:
    """A worker that died between its publish's commit and recording it: the version is in
    the catalog, so the job is published (not retried into a second version)."""
    from polyhead.engine import TaskArtifact
    from polyhead.store import encode_artifact, new_manifest

    art = TaskArtifact.random("lora", tiny_bert.spec, 2, seed=3)
    data = encode_artifact(new_manifest("t", art, tiny_bert.spec, labels=["neg", "pos"]), art)
    job = book.create("t", "lora", {"train": put(book, tsv()), "dev_fraction": 0.2})
    book.claim("a", 30, 1)
    import hashlib

    assert book.to_publishing(job.job_id, 1, hashlib.sha256(data).hexdigest())
    info = Store(location, tiny_bert.spec).publish(data)
    assert book.retry_or_fail(job.job_id, 1, "died after the commit") == PUBLISHED
    assert book.job(job.job_id).version_number == info.number
    # the publish is in the audit trail once, under a job from before created_by: "job"
    assert [(r.key_id, r.tenant, r.rpc, r.task_id, r.version) for r in book.catalog.audit()] == [
        ("job", "default", "JobPublished", "t", info.version)]


def test_expired_leases_are_found(book: JobBook) -> None:
    job = book.create("t", "lora", {"train": put(book, tsv()), "dev_fraction": 0.2})
    book.claim("a", 0.05, 1)
    time.sleep(0.1)
    assert [j.job_id for j in book.expired()] == [job.job_id]
    book.heartbeat(job.job_id, 1, 30)
    assert book.expired() == []


def test_old_catalog_is_upgraded_with_the_job_tables(tmp_path: Path) -> None:
    Store(tmp_path)
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    for table in ("dataset_owners", "job_events", "jobs", "datasets"):
        db.execute(f"DROP TABLE {table}")
    db.execute("ALTER TABLE tenants DROP COLUMN weight")  # schema 5 added it
    db.execute("UPDATE meta SET value = 3 WHERE key = 'schema'")  # schema 4 added the job tables
    db.commit()
    db.close()
    book = JobBook(open_catalog(tmp_path))
    assert book.jobs() == [] and book.create("t", "lora", {}).state == QUEUED


# -- datasets ------------------------------------------------------------------------------

def test_a_tenant_names_only_its_own_datasets(book: JobBook) -> None:
    """Each uploader holds its own row over one copy of the bytes; another tenant's dataset
    is unknown to a tenant (None, an admin's view, sees any)."""
    a = put(book, tsv(20), tenant="a", uploaded_at="2026-01-02T00:00:00.000000+00:00")
    with pytest.raises(NotFoundError, match=f"no dataset '{a}'"):
        book.dataset(a, "b")
    assert book.dataset(a, "a").created_at == "2026-01-02T00:00:00.000000+00:00"
    assert book.dataset(a).dataset_id == a
    assert put(book, tsv(20), tenant="b") == a  # the same file: b's own too, its own time
    assert book.dataset(a, "b").created_at > book.dataset(a, "a").created_at
    assert book.dataset_ids() == [a]
    assert [(t, d) for t, d, _ in book.dataset_owners()] == [("a", a), ("b", a)]


def test_a_tenants_datasets_stay_within_its_quota(book: JobBook) -> None:
    for t in ("a", "b"):
        book.catalog.create_tenant(t)
    first, second = tsv(20), tsv(30)
    cap = len(first) + len(second) - 1
    put(book, first, tenant="a", quota_bytes=cap)
    put(book, first, tenant="a", quota_bytes=cap)  # the same one again is not counted twice
    with pytest.raises(QuotaExceeded, match=f"tenant 'a'.*{len(first) + len(second):,} bytes; the limit "
                       f"is {cap:,} .*max_tenant_datasets_mb"):
        put(book, second, tenant="a", quota_bytes=cap)
    assert put(book, second, tenant="b", quota_bytes=cap)  # another tenant's own quota
    assert {(t, len(book.dataset_bytes(d))) for t, d, _ in book.dataset_owners()} == {
        ("a", len(first)), ("b", len(second))}
    # what `polyhead tenants list` shows beside the other quotas
    assert {t.tenant: t.dataset_bytes for t in book.catalog.tenants()} == {
        "a": len(first), "b": len(second), "default": 0}


def test_retention_drops_uploads_no_unfinished_job_names(book: JobBook) -> None:
    old = "2020-01-01T00:00:00.000000+00:00"
    gone, queued, shared = (put(book, tsv(n), tenant="a", uploaded_at=old) for n in (20, 22, 24))
    put(book, tsv(24), tenant="b")  # b uploaded it just now
    finished = put(book, tsv(26), tenant="a", uploaded_at=old)
    book.create("a/t", "lora", {"train": queued, "dev": ""})
    done = book.create("a/t", "lora", {"train": finished, "dev": ""})
    book.cancel(done.job_id)  # a queued job is cancelled at once: finished
    assert book.prune_datasets(86400) == 2  # gone and finished: no owner left
    assert set(book.dataset_ids()) == {queued, shared}
    assert {(t, d) for t, d, _ in book.dataset_owners()} == {("a", queued), ("b", shared)}
    with pytest.raises(NotFoundError):
        book.dataset_bytes(gone)
    # an upload prunes first (keep_s), so an expired dataset frees its quota; inf keeps all
    stale = put(book, tsv(30), tenant="a", uploaded_at=old)
    kept = put(book, tsv(32), tenant="a", keep_s=float("inf"))
    assert book.prune_datasets(float("inf")) == 0 and stale in book.dataset_ids()
    fresh = put(book, tsv(28), tenant="a", keep_s=86400)
    assert set(book.dataset_ids()) == {queued, shared, kept, fresh}


def test_a_job_names_only_its_tenants_datasets_and_renews_them(book: JobBook) -> None:
    """Checked in the job's own transaction (retention cannot drop them in between); the
    job renews its tenant's upload time, so retention counts from the last use."""
    old = "2020-01-01T00:00:00.000000+00:00"
    a, b = put(book, tsv(20), tenant="a", uploaded_at=old), put(book, tsv(22), tenant="b")
    with pytest.raises(NotFoundError, match=f"no dataset '{b}'"):
        book.create("a/t", "lora", {"train": a, "dev": b}, "a")
    assert book.jobs() == []
    book.create("a/t", "lora", {"train": a, "dev": ""}, "a")
    assert book.dataset(a, "a").created_at > old
    book.create("a/t", "lora", {"train": b, "dev": ""})  # an admin's (no tenant): any dataset


def test_deleting_a_tenant_drops_its_datasets(book: JobBook) -> None:
    """Its owner rows all go (a tenant made again later with its name owns nothing); the
    bytes stay where another tenant holds them or an unfinished job names them."""
    book.catalog.create_tenant("gone")
    mine, both, queued = (put(book, tsv(n), tenant="gone") for n in (20, 22, 24))
    put(book, tsv(22), tenant="kept")
    book.create("kept/t", "lora", {"train": queued, "dev": ""})  # an admin's job on it
    book.catalog.delete_tenant("gone")
    assert set(book.dataset_ids()) == {both, queued} and mine not in book.dataset_ids()
    assert [(t, d) for t, d, _ in book.dataset_owners()] == [("kept", both)]


def test_deleting_a_tenant_waits_for_its_jobs_then_drops_them(book: JobBook) -> None:
    """A probe's tenant made again with a deleted one's name listed the old owner's jobs
    (their ids, datasets and options). Its unfinished jobs now hold the deletion back; its
    finished ones go with it."""
    book.catalog.create_tenant("gone")
    spec = {"train": put(book, tsv(), tenant="gone"), "dev_fraction": 0.2}
    job = book.create("gone/t", "lora", spec, "gone")
    with pytest.raises(StoreError, match=r"tenant 'gone' has 1 unfinished training job\(s\): cancel"):
        book.catalog.delete_tenant("gone")
    book.cancel(job.job_id)
    kept = book.create("t", "lora", {"train": put(book, tsv(30)), "dev_fraction": 0.2})
    book.catalog.delete_tenant("gone")
    book.catalog.create_tenant("gone")
    assert book.jobs(tenant="gone") == [] and [j.job_id for j in book.jobs()] == [kept.job_id]
    with pytest.raises(NotFoundError):
        book.job(job.job_id)


def test_what_a_job_would_fail_on_is_refused_before_it_trains(location: str) -> None:
    """A probe's jobs trained, then failed at publish: labels no head may carry (control
    characters, more than max_outputs), lr=inf, and a new task past max_tasks; epochs=1e9
    and lora_alpha=inf queued. Each is now refused at UploadDataset or CreateJob."""
    from polyhead.server._private.auth import Caller
    from polyhead.server._private.errors import InvalidInput
    from polyhead.server._private.training import TrainingService
    from polyhead.server.config import ServerConfig
    from polyhead.v1 import polyhead_pb2 as pb

    Store(location)
    service = TrainingService(ServerConfig(store=location, max_outputs=3))
    admin = Caller("default", "token", frozenset({"admin"}))
    first = pb.DatasetChunk(filename="t.tsv")
    with pytest.raises(InvalidInput, match=r"t\.tsv: labels must be non-empty printable .*'neg\\x1b"):
        service._store_dataset(first, b"text\tlabel\na\tneg\x1b[31m\nb\tpos\n", admin)
    with pytest.raises(InvalidInput, match="4 labels; the server's max_outputs is 3"):
        service._store_dataset(first, b"text\tlabel\na\tw\nb\tx\nc\ty\nd\tz\n", admin)
    ds = service._store_dataset(first, tsv(), admin).dataset_id

    def job(task: str = "t", **options: str) -> pb.CreateJobRequest:
        return pb.CreateJobRequest(task_id=task, method="lora", train_dataset=ds, dev_fraction=0.25,
                                   options=options)

    for options, problem in (({"lr": "inf"}, r"lr must be in \(0, 1\]"),
                             ({"epochs": "1e9"}, r"epochs must be in \(0, 1000\]"),
                             ({"lora_alpha": "inf"}, "alpha must be a finite number > 0"),
                             ({"weight_decay": "inf"}, r"weight decay must be in \[0, 10\]")):
        with pytest.raises(InvalidInput, match=problem):
            service._spec(job(**options), admin)
    service.book.catalog.create_tenant("acme", max_tasks=0)
    with pytest.raises(QuotaExceeded, match="max_tasks = 0 reached"):
        service._spec(job("acme/new"), admin)
    assert service._spec(job(), admin)["train"] == ds


def test_a_schema_5_catalog_gets_its_dataset_owners(location: str) -> None:
    """Owners from the jobs that named each dataset (the job's tenant), and the default
    tenant for a dataset no job named, on both backends."""
    Store(location)
    book = JobBook(open_catalog(location))
    named, dev, unnamed = (put(book, tsv(n)) for n in (20, 22, 24))
    book.create("acme/t", "lora", {"train": named, "dev": dev})
    book.create("t", "lora", {"train": named, "dev": ""})

    def to_schema_5(c: Any) -> None:
        c.execute("DROP TABLE dataset_owners")
        c.execute("UPDATE meta SET value = 5 WHERE key = 'schema'")

    book.catalog._writing(to_schema_5)
    book.catalog.close()
    book = JobBook(open_catalog(location))
    assert {(t, d) for t, d, _ in book.dataset_owners()} == {
        ("acme", named), ("acme", dev), ("default", named), ("default", unnamed)}
    assert book.dataset(dev, "acme").created_at == book.dataset(dev).created_at


@pytest.mark.parametrize(("name", "data", "labels", "problem"), [
    ("a.tsv", b"sentence\tx\nhi there\t1\n", None, r"a\.tsv:1: no column 'label'"),
    ("dev.tsv", b"text\tlabel\ngood\tpos\nmeh\tmaybe\n", ["neg", "pos"], r"dev\.tsv:3: label 'maybe'"),
    ("e.csv", b"", None, r"e\.csv:1: the file is empty"),
    ("g.jsonl", b'{"text": "a", "label": 1}\n\x89PNG\r\n\x1a\n\x00\xff', None, r"g\.jsonl:2: not UTF-8"),
    ("n.tsv", b"text\tlabel\nok\tpos\n\tneg\n", None, r"n\.tsv:3: empty text"),
    ("x.parquet", b"PAR1", None, r"unknown format '\.parquet'"),
], ids=["missing-column", "unknown-dev-label", "empty", "binary", "empty-row", "format"])
def test_bad_datasets_name_the_line(name: str, data: bytes, labels: list[str] | None, problem: str) -> None:
    with pytest.raises(DataError, match=problem):
        read_dataset(name, data, ColumnFlags(), labels)


def test_dataset_id_covers_bytes_format_and_columns() -> None:
    data = tsv()
    assert dataset_id(data, "tsv", ColumnFlags()) == dataset_id(data, "tsv", ColumnFlags())
    assert dataset_id(data, "tsv", ColumnFlags()) != dataset_id(data + b"x\tpos\n", "tsv", ColumnFlags())
    assert dataset_id(data, "tsv", ColumnFlags()) != dataset_id(data, "tsv", ColumnFlags(label_col="text"))
    # a dev set read with another dataset's labels keeps them: they are part of its identity
    # (else one tenant's upload of the same file would get back another's label names)
    with_labels = dataset_id(data, "tsv", ColumnFlags(), ["neg", "pos", "secret"])
    assert with_labels != dataset_id(data, "tsv", ColumnFlags())
    assert with_labels != dataset_id(data, "tsv", ColumnFlags(), ["neg", "pos"])


def test_split_holds_out_a_seeded_share() -> None:
    ds = read_dataset("t.tsv", tsv(40), ColumnFlags())
    train, dev = split(ds, 0.25, seed=1)
    assert len(dev.examples) == 10 and len(train.examples) == 30
    assert split(ds, 0.25, seed=1)[1].examples == dev.examples
    assert train.labels == dev.labels == ds.labels


# -- options: polyhead train's names and defaults ------------------------------------------

def test_job_options_are_train_flags_with_train_defaults() -> None:
    from polyhead.cli import build_parser
    from polyhead.trainer.cli import train_config

    args = build_parser("train").parse_args(["train", "--method", "lora", "--train", "t.tsv",
                                             "--dev", "d.tsv", "--out", "x.polyhead", "--lora-r", "4"])
    _, cfg = parse_job("lora", {"lora_r": "4"})
    assert cfg == train_config(args)
    assert {"lora_r", "epochs", "lr", "no_dropout", "head", "recipe"} <= set(option_flags())
    assert not {"threads", "device", "out", "store", "upload"} & set(option_flags())
    for bad, message in (({"lora_rr": "1"}, "unknown option 'lora_rr'"),
                         ({"lora_r": "x"}, "invalid int"), ({"no_dropout": "maybe"}, "switch")):
        with pytest.raises(ValueError, match=message):
            parse_job("lora", bad)


# -- the worker (no Ray) -------------------------------------------------------------------

def test_worker_trains_and_publishes_through_the_store(book: JobBook, location: str,
                                                       tiny_bert_dir: Path) -> None:
    job = book.create("tiny-task", "lora", {"train": put(book, tsv()), "dev_fraction": 0.25,
                                            "options": {"epochs": "2", "batch_size": "8"},
                                            "created_by": {"key_id": "0123456789ab", "tenant": "default"}})
    book.claim("a", 30, 1)
    settings = WorkerSettings(location, str(tiny_bert_dir))
    assert run_job(settings, job.job_id, 1, "here", {"CPU": 1}) == PUBLISHED
    done = book.job(job.job_id)
    events = book.events(job.job_id)
    kinds = [e.kind for e in events if e.kind != "step"]
    assert kinds == ["queued", "started", "epoch", "epoch", "published"]
    assert [e.body["epoch"] for e in events if e.kind == "epoch"] == [1, 2]
    info = Store(location).resolve("tiny-task")
    assert (done.version, done.version_number) == (info.version, info.number)
    assert (info.version, info.number) == (events[-1].body["version"], 1)
    # the publish is in the audit trail, under the key that created the job
    assert [(r.key_id, r.tenant, r.rpc, r.task_id, r.version, r.outcome) for r in book.catalog.audit()] == [
        ("0123456789ab", "default", "JobPublished", "tiny-task", info.version, "OK")]


def test_worker_stops_on_cancel_and_publishes_nothing(book: JobBook, location: str,
                                                      tiny_bert_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    job = book.create("never", "lora", {"train": put(book, tsv()), "dev_fraction": 0.25,
                                        "options": {"epochs": "3", "batch_size": "4"}})
    book.claim("a", 30, 1)
    real_check = Lease.check

    def cancel_at_a_step(lease: Lease) -> None:  # the cancel arrives while it trains
        if lease.state == RUNNING and book.events(job.job_id)[-1].kind == "step":
            book.cancel(job.job_id)
            lease.state = book.heartbeat(job.job_id, 1, 30)
        real_check(lease)

    monkeypatch.setattr(Lease, "check", cancel_at_a_step)
    assert run_job(WorkerSettings(location, str(tiny_bert_dir)), job.job_id, 1, "here", {}) == CANCELLED
    assert book.job(job.job_id).state == CANCELLED
    assert [t.task_id for t in Store(location).list_tasks()] == []


def test_max_jobs_per_tenant_reaches_the_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --max-jobs-per-tenant` -> ServerConfig -> the scheduler's settings (whose
    claim takes it: test_claim_holds_each_tenant_to_its_share)."""
    from polyhead.cli import build_parser
    from polyhead.engine.errors import ConfigError
    from polyhead.server._private import scheduler
    from polyhead.server._private.replica import start_scheduler
    from polyhead.server.config import ServerConfig
    from polyhead.server.serve_cli import config_from

    cfg = config_from(build_parser("serve").parse_args(["serve", "--insecure", "--max-jobs-per-tenant", "3"]))
    assert cfg.max_jobs_per_tenant == 3 and ServerConfig(insecure=True).max_jobs_per_tenant == 0
    monkeypatch.setattr(scheduler, "ensure_scheduler", lambda settings: settings)
    assert start_scheduler(cfg).max_jobs_per_tenant == 3
    with pytest.raises(ConfigError, match="max_jobs_per_tenant must be >= 0"):
        ServerConfig(insecure=True, max_jobs_per_tenant=-1)


def test_watch_returns_the_last_event_of_a_job_that_ends_between_polls(
        location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job is cancelled just after WatchJob's poll found no new events: the stream
    still ends with the `cancelled` event, never with the last step."""
    import asyncio

    from polyhead.server._private.auth import Caller
    from polyhead.server._private.training import TrainingService
    from polyhead.server.config import ServerConfig
    from polyhead.v1 import polyhead_pb2 as pb

    Store(location)
    service = TrainingService(ServerConfig(store=location))
    book = service.book
    job = book.create("t", "lora", {"train": put(book, tsv()), "dev_fraction": 0.25})
    book.claim("a", 30, 1)
    book.add_event(job.job_id, "step", step=1)
    real_events = book.events
    polls = []

    def events_then_cancel(job_id: str, after: int = 0) -> list[Any]:
        found = real_events(job_id, after)
        polls.append(len(found))
        if len(polls) == 2:  # nothing new this poll; the job ends before the next read
            book.cancel(job_id)
            book.finish(job_id, CANCELLED, "cancelled while running", 1)
        return found

    monkeypatch.setattr(book, "events", events_then_cancel)
    caller = Caller("default", "token", frozenset({"admin"}))

    async def watch() -> list[str]:
        return [e.kind async for e in service.watch_job(pb.WatchJobRequest(job_id=job.job_id), caller)]

    kinds = asyncio.run(watch())
    assert kinds[-1] == CANCELLED and polls[1] == 0, (kinds, polls)
