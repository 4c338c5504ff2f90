"""Tenants, API keys, quotas and the audit trail (issue 24), on both store backends.

The store: tenants, keys (only hashes stored), quotas, the audit trail, the task id rule,
and the upgrade of schema-2 stores made by the code before tenants (tests/fixtures).
The server (tests/tenants_support.py: the replica in process behind real gRPC and HTTP
servers on loopback, one per backend): the matrix two tenants x every RPC x {own task,
the other tenant's task, no key, wrong key, revoked key, expired key, missing scope},
over gRPC and HTTP, with no key in any log line or error message; a key revoked through
one replica refused by a second that shares the store (waiting on its change feed);
quota exhaustion at publish and at admission (rows in flight); `polyhead tenants|keys|audit`
on a store and over gRPC; `store copy` taking the tenants along.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from polyhead.server.config import Secret, ServerConfig
from polyhead.store import NotFoundError, Store, StoreError
from polyhead.store.errors import QuotaExceeded
from polyhead.store.jobs import JobBook
from polyhead.store.keys import key_hash, now_iso, parse_duration, parse_scopes
from polyhead.store.names import is_task_id, tenant_of
from polyhead.store.sql import CATALOG_SCHEMA
from polyhead.store.tenancy import AuditRecord
from polyhead.v1 import polyhead_pb2 as pb
from polyhead.v1 import polyhead_pb2_grpc as pb_grpc
from tests import test_store_support as support
from tests.tenants_support import captured_logs, serving
from tests.test_serving import artifact
from tests.test_store_support import make_file

location, pg_url = support.location, support.pg_url  # fixtures (pg_server: conftest)
FIXTURES = Path(__file__).parent / "fixtures"
OWNER, INFERENCE = "owner-token-5b2d", "inference-token-9e1f"
OK, NF, UN, PD = "OK", "NOT_FOUND", "UNAUTHENTICATED", "PERMISSION_DENIED"
RAIN = [pb.Input(text="rain")]


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ENABLE_AUTO_CONNECT", "0")  # Ray's metrics API must not start Ray


# -- the store ----------------------------------------------------------------------------------


def test_task_id_rule() -> None:
    good = ["sst2", "nli.v2", "acme/sst2", "team_1/a-b.c", "a/b"]
    bad = ["default/sst2", "a/b/c", "/x", "x/", "../x", "acme/../x", "Acme/x", "acme/.x", "a" * 33 + "/x"]
    assert all(is_task_id(t) for t in good) and not any(is_task_id(t) for t in bad)
    assert (tenant_of("sst2"), tenant_of("acme/sst2")) == ("default", "acme")


def test_tenants_keys_quotas_and_audit_in_the_store(location, tiny_bert) -> None:
    spec = tiny_bert.spec
    store = Store(location, spec)
    cat = store.catalog
    cat.create_tenant("acme", max_tasks=2)
    with pytest.raises(StoreError, match="exists"):
        cat.create_tenant("acme")
    with pytest.raises(StoreError, match="tenant name"):
        cat.create_tenant("Bad/Name")
    with pytest.raises(NotFoundError, match="no tenant 'ghost'"):
        store.publish(make_file(spec, "ghost/x"))
    gen = cat.auth_generation()
    record, key = cat.create_key("acme", ("classify", "publish"))
    assert cat.auth_generation() > gen and record.state() == "active"
    _, rows = cat.key_table()
    (stored,) = [h for k, h in rows if k.key_id == record.key_id]
    assert stored == key_hash(key) == hashlib.sha256(key.encode()).hexdigest()
    assert record.key_id in key and key not in _dump(cat)  # the catalog holds the hash only
    old, _ = cat.create_key("acme", ("classify",), expires_at=now_iso(-1))
    assert old.state() == "expired"
    assert cat.revoke_key(record.key_id).state() == "revoked"
    assert {k.key_id: k.state() for k in cat.keys("acme")} == {
        record.key_id: "revoked",
        old.key_id: "expired",
    }
    # a replica's key cache reads only the keys changed after the counter it holds
    held, _ = cat.key_table()
    third, _ = cat.create_key("acme", ("classify",))
    assert [k.key_id for k, _ in cat.key_table(held)[1]] == [third.key_id]
    held, _ = cat.key_table()
    cat.revoke_key(third.key_id)
    assert [(k.key_id, k.state()) for k, _ in cat.key_table(held)[1]] == [(third.key_id, "revoked")]
    # quotas: tasks, then bytes (the catalog's transaction counts the tenant's live versions)
    store.publish(make_file(spec, "acme/a", seed=1))
    second = store.publish(make_file(spec, "acme/b", seed=2))
    with pytest.raises(QuotaExceeded, match=r"quota max_tasks = 2 reached"):
        store.publish(make_file(spec, "acme/c", seed=3))
    store.publish(make_file(spec, "sst2", seed=3))  # the default tenant has no quota
    cat.set_quota("acme", None, 2 * second.nbytes, 4)
    assert cat.admission_limits() == {"acme": 4}  # rows in flight: held by each replica
    with pytest.raises(QuotaExceeded, match=rf"quota max_bytes = {2 * second.nbytes} would be"):
        store.publish(make_file(spec, "acme/c", seed=3))
    tenants = {t.tenant: t for t in cat.tenants()}
    assert (tenants["acme"].tasks, tenants["default"].tasks) == (2, 1)
    assert (tenants["acme"].max_rows_in_flight, tenants["default"].max_rows_in_flight) == (4, None)
    with pytest.raises(StoreError, match="owns 2 task"):
        cat.delete_tenant("acme")
    with pytest.raises(StoreError, match="default tenant cannot be deleted"):
        cat.delete_tenant("default")
    store.delete("acme/a")
    store.delete("acme/b")
    assert cat.delete_tenant("acme") == 1  # the expired key; the revoked ones were already
    assert {k.state() for k in cat.keys("acme")} == {"revoked"}
    cat.add_audit(AuditRecord("2026-01-01T00:00:00.000000+00:00", "k1", "acme", "Upload", "acme/a", "v", OK))
    cat.add_audit(AuditRecord(now_iso(), "k2", "beta", "DeleteTask", "beta/x", "", NF))
    assert [r.key_id for r in cat.audit()] == ["k1", "k2"]
    assert [r.key_id for r in cat.audit(tenant="acme")] == ["k1"]
    assert [r.key_id for r in cat.audit(since="2026-06-01")] == ["k2"]


def test_a_restore_is_held_to_the_tenant_and_its_quotas(location, tiny_bert) -> None:
    """A probe restored deleted tasks past max_tasks (5 tasks under a quota of 1), and into
    a tenant deleted and made again with the same name (the old owner's model, served to
    the new one's key). A restore is now checked as a publish of its versions would be,
    and a deleted tenant's restorable tasks go with it."""
    spec = tiny_bert.spec
    store = Store(location, spec)
    cat = store.catalog
    cat.create_tenant("tiny", max_tasks=1)
    store.publish(make_file(spec, "tiny/one", seed=1))
    store.delete("tiny/one")
    store.publish(make_file(spec, "tiny/two", seed=2))
    with pytest.raises(QuotaExceeded, match=r"quota max_tasks = 1 reached"):
        store.restore("tiny/one")
    assert [t.task_id for t in store.list_tasks()] == ["tiny/two"]
    assert [d.task_id for d in store.deleted()] == ["tiny/one"]  # still restorable, once room
    store.delete("tiny/two")
    assert store.restore("tiny/one").task_id == "tiny/one"
    store.delete("tiny/one")
    cat.delete_tenant("tiny")  # its restorable tasks go with it
    assert store.deleted() == []
    with pytest.raises(NotFoundError, match="no deleted task 'tiny/one'"):
        store.restore("tiny/one")
    cat.create_tenant("gone")
    store.publish(make_file(spec, "gone/secret", seed=3))
    store.delete("gone/secret")
    cat.delete_tenant("gone")
    cat.create_tenant("gone")  # the same name, another owner
    with pytest.raises(NotFoundError, match="no deleted task 'gone/secret'"):
        store.restore("gone/secret")


def test_fair_share_weights_in_the_store(location, tiny_bert) -> None:
    """A tenant's weight: 1 unless set, set with the quotas (an omitted one goes back to 1),
    from 0.001 to 1000 (a probe's 5e-324 made every virtual time infinite); a change moves
    the 'auth' counter the replicas reload on."""
    cat = Store(location, tiny_bert.spec).catalog
    cat.create_tenant("acme", weight=3.0)
    cat.create_tenant("beta")
    assert {t.tenant: t.weight for t in cat.tenants()} == {"acme": 3.0, "beta": 1.0, "default": 1.0}
    assert cat.weights() == {"acme": 3.0}  # what a replica's batch queue reads
    gen = cat.auth_generation()
    cat.set_quota("beta", None, None, 8, weight=0.25)
    assert cat.auth_generation() > gen and cat.weights() == {"acme": 3.0, "beta": 0.25}
    cat.set_quota("acme", 5, None)  # every term is set: the omitted weight is 1 again
    assert cat.weights() == {"beta": 0.25}
    for bad in (0.0, -1.0, float("nan"), float("inf"), 5e-324, 9e-4, 1000.5):
        with pytest.raises(StoreError, match=r"weight must be a number from 0\.001 to 1000"):
            cat.set_quota("beta", None, None, None, weight=bad)
        with pytest.raises(StoreError, match=r"weight must be a number from 0\.001 to 1000"):
            cat.create_tenant("gamma", weight=bad)
    assert cat.weights() == {"beta": 0.25} and "gamma" not in {t.tenant for t in cat.tenants()}


def test_admin_refuses_numbers_out_of_range(location, tiny_bert) -> None:
    """A probe: expires_in_s=1e12 (or inf) was INTERNAL (a timestamp past year 9999), and
    ListAudit limit=-1 returned the whole trail (SQLite's LIMIT -1)."""
    from polyhead.admin import AdminInputError, StoreAdmin

    cat = Store(location, tiny_bert.spec).catalog
    cat.create_tenant("acme")
    admin = StoreAdmin(cat)
    for bad in (1e12, 3.2e9, float("inf"), -1.0, float("nan")):
        with pytest.raises(AdminInputError, match=r"expires_in_s: .* must be from 0 \(never\) to"):
            admin.CreateKey(pb.CreateKeyRequest(tenant="acme", scopes=["classify"], expires_in_s=bad))
    admin.CreateKey(pb.CreateKeyRequest(tenant="acme", scopes=["classify"], expires_in_s=3e9))
    for bad_limit in (-1, 10_001):
        with pytest.raises(AdminInputError, match=rf"limit: {bad_limit} is not in 0..10000"):
            admin.ListAudit(pb.ListAuditRequest(limit=bad_limit))


def test_an_audit_record_stays_one_line(location, tiny_bert, capsys) -> None:
    """A probe's refused CreateJob, its task id holding a newline and a whole forged line,
    printed as two records in `polyhead audit`; control characters are now escaped."""
    forged = "beta/x\n2026-12-07T23:00:00.000000+00:00\ttoken\tdefault\tDeleteTask\tsentiment\x1b[2K"
    cat = Store(location, tiny_bert.spec).catalog
    cat.add_audit(AuditRecord(now_iso(), "k1", "beta", "CreateJob", forged, "", "INVALID_ARGUMENT"))
    (r,) = cat.audit()
    assert r.task_id == forged.replace("\n", "\\n").replace("\t", "\\t").replace("\x1b", "\\x1b")
    code, out, _ = _cli(capsys, "audit", "--store", location)
    (line,) = out.splitlines()
    assert code == 0 and len(line.split("\t")) == 7 and "\x1b" not in line


def _dump(catalog: Any) -> str:
    """Every key table cell, as text."""
    rows = catalog._reading(lambda c: c.execute("SELECT * FROM api_keys").fetchall())
    return json.dumps([list(map(str, r)) for r in rows])


def test_scopes_and_durations() -> None:
    assert parse_scopes("publish, classify") == ("classify", "publish")
    with pytest.raises(ValueError, match="each must be one of"):
        parse_scopes("classify,root")
    assert parse_duration("30d") == 30 * 86400 and parse_duration("90m") == 5400
    with pytest.raises(ValueError, match="a number and a unit"):
        parse_duration("1 year")


# -- the upgrade of a store made by the code before tenants ------------------------------------


def _psql(pg_server: Any, url: str, script: Path) -> None:
    import pgserver

    psql = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    subprocess.run(
        [str(psql), "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script), url], check=True, capture_output=True
    )


def _old_store(backend: str, schema: int, tmp_path: Path, request: Any) -> str:
    """A copy of the schema-``schema`` fixture store of ``backend``: its location."""
    if backend == "sqlite":
        loc = str(tmp_path / "store")
        shutil.copytree(FIXTURES / f"store-schema{schema}", loc)
        with sqlite3.connect(Path(loc) / "catalog.sqlite") as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (schema,)
    else:
        loc = request.getfixturevalue("pg_url")
        _psql(request.getfixturevalue("pg_server"), loc, FIXTURES / f"store-schema{schema}.pg.sql")
    return loc


def _schema(store: Store) -> int:
    return int(store.catalog._reading(
        lambda c: c.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone())[0])


@pytest.mark.parametrize("backend", support.BACKENDS)
def test_a_schema_2_store_is_upgraded_in_place(backend, tmp_path, tiny_bert, request) -> None:
    """tests/fixtures/make_schema2.py wrote these with the code of 0400301 (schema 2)."""
    loc = _old_store(backend, 2, tmp_path, request)
    store = Store(loc, tiny_bert.spec)
    assert _schema(store) == CATALOG_SCHEMA
    assert [(t.task_id, t.num_versions) for t in store.list_tasks()] == [("nli", 1), ("sst2", 2)]
    assert store.get("sst2", "stable").info.number == 1 and store.verify() == []
    assert [(t.tenant, t.tasks, t.weight) for t in store.catalog.tenants()] == [("default", 2, 1.0)]
    assert store.restore("old").number == 1  # the deleted task kept through the upgrade
    store.catalog.create_tenant("acme", weight=2.0)
    store.catalog.create_key("acme", ("publish",))
    assert store.publish(make_file(tiny_bert.spec, "acme/x", seed=9)).number == 1
    assert store.catalog.weights() == {"acme": 2.0}
    assert Store(loc, tiny_bert.spec).catalog.keys()[0].tenant == "acme"  # reopened: no second upgrade


@pytest.mark.parametrize("backend", support.BACKENDS)
def test_a_schema_4_store_is_upgraded_in_place(backend, tmp_path, tiny_bert, request) -> None:
    """tests/fixtures/make_schema4.py wrote these with the code of b81b860 (schema 4, before
    tenant weights): every tenant keeps its quotas, tasks and keys, and gets weight 1."""
    loc = _old_store(backend, 4, tmp_path, request)
    store = Store(loc, tiny_bert.spec)
    assert _schema(store) == CATALOG_SCHEMA
    cat = store.catalog
    assert {t.tenant: (t.max_tasks, t.max_rows_in_flight, t.tasks, t.weight) for t in cat.tenants()} == {
        "acme": (5, 16, 1, 1.0), "default": (None, None, 1, 1.0)}
    assert [(k.tenant, k.scopes, k.state()) for k in cat.keys(None)] == [("acme", ("classify",), "active")]
    assert [r.rpc for r in cat.audit()] == ["CreateTenant"] and cat.weights() == {}
    cat.set_quota("acme", 5, None, 16, weight=2.5)
    reopened = Store(loc, tiny_bert.spec).catalog  # no second upgrade
    assert reopened.weights() == {"acme": 2.5} and reopened.admission_limits() == {"acme": 16}
    assert [i.task_id for i in store.list_tasks()] == ["acme/x", "sst2"] and store.verify() == []


# -- the server: the matrix ---------------------------------------------------------------------


class Keys:
    """Each tenant's keys, by what the matrix tries."""

    def __init__(self) -> None:
        self.by: dict[tuple[str, str], str] = {}
        self.jobs: dict[str, str] = {}  # task id -> the id of a job the owner queued for it
        self.datasets: dict[str, str] = {}  # tenant -> a dataset its own key uploaded

    def md(self, tenant: str, case: str) -> tuple[tuple[str, str], ...]:
        key = self.by.get((tenant, case))
        if case == "none":
            return ()
        return (("authorization", f"Bearer {key}"),)

    def secrets(self) -> list[str]:
        return [k for k in self.by.values() if k]


async def _status(call: Any) -> tuple[str, str, Any]:
    try:
        out = await call
    except grpc.aio.AioRpcError as e:
        return e.code().name, e.details() or "", None
    return OK, "", out


async def _stream(stub: Any, md: Any, task: str) -> Any:
    call = stub.ClassifyStream(iter([pb.ClassifyRequest(task_id=task, inputs=RAIN)]), metadata=md)
    return [r async for r in call]


async def _watch(stub: Any, md: Any, job_id: str) -> Any:
    # a deadline: a watch that wrongly reaches another tenant's queued job would never end
    return [e async for e in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=md, timeout=20)]


def _job_request(task: str, keys: Keys) -> pb.CreateJobRequest:
    return pb.CreateJobRequest(task_id=task, method="lora", train_dataset=keys.datasets[tenant_of(task)],
                               dev_fraction=0.25)


async def _setup(s: Any, spec: Any, peft: tuple[bytes, bytes]) -> Keys:
    admin = pb_grpc.AdminStub(s.channel)
    reg = pb_grpc.RegistryStub(s.channel)
    owner = (("authorization", f"Bearer {OWNER}"),)
    keys = Keys()
    for t in ("a", "b"):
        await admin.CreateTenant(pb.CreateTenantRequest(tenant=t), metadata=owner)
        for case, scopes in (
            ("own", ["classify", "publish"]),
            ("classify", ["classify"]),
            ("publish", ["publish"]),
            ("revoked", ["classify", "publish"]),
        ):
            made = await admin.CreateKey(pb.CreateKeyRequest(tenant=t, scopes=scopes), metadata=owner)
            keys.by[(t, case)] = made.key
        revoked = keys.by[(t, "revoked")]
        await admin.RevokeKey(pb.RevokeKeyRequest(key_id=revoked[4:16]), metadata=owner)
        _, expired = s.replica.parts.store.catalog.create_key(t, ("classify", "publish"), now_iso(-60))
        keys.by[(t, "expired")] = expired
        own = keys.by[(t, "own")]
        keys.by[(t, "wrong")] = own[:-6] + ("AAAAAA" if not own.endswith("AAAAAA") else "BBBBBB")
        for name, seed in (("t1", 1), ("t2", 2), ("del", 3), ("gone", 4)):
            data = artifact(spec, f"{t}/{name}", seed=seed)[0]
            await reg.Upload(pb.UploadRequest(artifact=data), metadata=owner)
        await reg.DeleteTask(pb.DeleteTaskRequest(task_id=f"{t}/gone"), metadata=owner)
    made = await admin.CreateKey(pb.CreateKeyRequest(tenant="a", scopes=["admin"]), metadata=owner)
    keys.by[("a", "admin")] = made.key
    training = pb_grpc.TrainingStub(s.channel)
    rows = "".join(f"{'good fun' if i % 2 else 'bad film'}\t{'pos' if i % 2 else 'neg'}\n" for i in range(8))
    chunk = pb.DatasetChunk(filename="train.tsv", data=f"text\tlabel\n{rows}".encode())
    await _keys_reach(s.replica)
    for t in ("a", "b"):  # each tenant's own upload (the same file: each owns it)
        up = await training.UploadDataset(iter([chunk]), metadata=keys.md(t, "own"))
        keys.datasets[t] = up.dataset_id
    assert keys.datasets["a"] == keys.datasets["b"]
    for t in ("a", "b"):  # queued, never run (no scheduler in process)
        job = await training.CreateJob(_job_request(f"{t}/t1", keys), metadata=owner)
        keys.jobs[f"{t}/t1"] = job.job_id
    return keys


async def _datasets_belong_to_their_uploaders(s: Any, keys: Keys) -> None:
    """A tenant names only the datasets it uploaded: another tenant's id answers NOT_FOUND in
    the words an unknown id gets (as a train set, a dev set and labels_from); the same file
    uploaded by both is each one's own, with each one's own upload time; an admin names any."""
    training = pb_grpc.TrainingStub(s.channel)
    mine = pb.DatasetChunk(filename="a.tsv", data=b"text\tlabel\nonly a has this\tpos\nand this\tneg\n")
    a_ds = (await training.UploadDataset(iter([mine]), metadata=keys.md("a", "own"))).dataset_id
    unknown = "ds-" + "0" * 64

    def job(tenant: str, train: str, dev: str = "") -> Any:
        return pb.CreateJobRequest(task_id=f"{tenant}/t1", method="lora", train_dataset=train,
                                   dev_dataset=dev, dev_fraction=0 if dev else 0.25)

    b = keys.md("b", "own")
    for ds in (a_ds, unknown):
        for request in (job("b", ds), job("b", keys.datasets["b"], ds)):
            code, det, _ = await _status(training.CreateJob(request, metadata=b))
            assert (code, det) == (NF, f"no dataset {ds!r} (upload it first)"), (code, det)
        dev = pb.DatasetChunk(filename="dev.tsv", data=b"text\tlabel\nfine\tpos\n", labels_from=ds)
        code, det, _ = await _status(training.UploadDataset(iter([dev]), metadata=b))
        assert (code, det) == (NF, f"no dataset {ds!r} (upload it first)"), (code, det)
    assert (await _status(training.CreateJob(job("a", a_ds), metadata=keys.md("a", "own"))))[0] == OK
    theirs = pb.DatasetChunk(filename="b.tsv", data=b"text\tlabel\nonly b has this\tpos\nb too\tneg\n")
    b_ds = (await training.UploadDataset(iter([theirs]), metadata=b)).dataset_id
    # an admin key (tenant a's) names a dataset only b uploaded
    assert (await _status(training.CreateJob(job("a", b_ds), metadata=keys.md("a", "admin"))))[0] == OK
    # a dev set read with a's train labels keeps them, so b's upload of the same file is
    # another dataset: b never sees a's label names
    a_train = pb.DatasetChunk(filename="t.tsv", data=b"text\tlabel\nx\tneg\ny\tpos\nz\tzz-secret\n")
    a_train_id = (await training.UploadDataset(iter([a_train]), metadata=keys.md("a", "own"))).dataset_id
    dev_bytes = b"text\tlabel\nfine\tpos\nbad\tneg\n"
    a_dev = await training.UploadDataset(iter([pb.DatasetChunk(filename="d.tsv", data=dev_bytes,
                                                               labels_from=a_train_id)]),
                                         metadata=keys.md("a", "own"))
    b_dev = await training.UploadDataset(iter([pb.DatasetChunk(filename="d.tsv", data=dev_bytes)]),
                                         metadata=b)
    assert "zz-secret" in a_dev.labels and list(b_dev.labels) == ["neg", "pos"]
    assert a_dev.dataset_id != b_dev.dataset_id
    again = await training.UploadDataset(iter([mine]), metadata=b)  # now b's own too
    assert again.dataset_id == a_ds
    book = JobBook(s.replica.parts.store.catalog)
    assert again.created_at == book.dataset(a_ds, "b").created_at != book.dataset(a_ds, "a").created_at
    assert (await _status(training.CreateJob(job("b", a_ds), metadata=b)))[0] == OK
    assert book.dataset(a_ds, "b").created_at > again.created_at  # the job renewed b's
    # what each tenant's uploads hold, as ListTenants (and `polyhead tenants list`) show it
    listed = await pb_grpc.AdminStub(s.channel).ListTenants(pb.ListTenantsRequest(),
                                                            metadata=keys.md("a", "admin"))
    held = {t.tenant: t.dataset_bytes for t in listed.tenants}
    assert held["b"] == sum(len(book.dataset_bytes(d)) for t, d, _ in book.dataset_owners() if t == "b") > 0


async def _keys_reach(replica: Any) -> None:
    """Wait on the change feed until the replica's key cache holds the store's keys."""
    want = replica.parts.store.catalog.auth_generation()
    while replica.parts.keys.generation < want:
        replica.keys_loaded.clear()
        await asyncio.wait_for(replica.keys_loaded.wait(), 30)


def _rpcs(s: Any, spec: Any, peft: tuple[bytes, bytes], keys: Keys) -> dict[str, Any]:
    """RPC name -> call(metadata, tenant, target task) for the matrix; a job RPC's target is
    the task's job (CancelJob before WatchJob: a cancelled job's watch ends)."""
    inf, reg = pb_grpc.InferenceStub(s.channel), pb_grpc.RegistryStub(s.channel)
    training = pb_grpc.TrainingStub(s.channel)
    cfg, model = peft
    return {
        "Classify": lambda md, t, task: inf.Classify(
            pb.ClassifyRequest(task_id=task, inputs=RAIN), metadata=md
        ),
        "ClassifyStream": lambda md, t, task: _stream(inf, md, task),
        "GetTask": lambda md, t, task: reg.GetTask(pb.GetTaskRequest(task_id=task), metadata=md),
        "SetAlias": lambda md, t, task: reg.SetAlias(
            pb.SetAliasRequest(task_id=task, alias="stable", version="v1"), metadata=md
        ),
        "Rollback": lambda md, t, task: reg.Rollback(
            pb.RollbackRequest(task_id=task, version="v1"), metadata=md
        ),
        "ImportPeft": lambda md, t, task: reg.ImportPeft(
            pb.ImportPeftRequest(task_id=task.replace("t1", "peft"), adapter_config=cfg, adapter_model=model),
            metadata=md,
        ),
        "Upload": lambda md, t, task: reg.Upload(
            pb.UploadRequest(artifact=artifact(spec, task.replace("t1", "up"), seed=7)[0]), metadata=md
        ),
        "DeleteTask": lambda md, t, task: reg.DeleteTask(
            pb.DeleteTaskRequest(task_id=task.replace("t1", "del")), metadata=md
        ),
        "RestoreTask": lambda md, t, task: reg.RestoreTask(
            pb.RestoreTaskRequest(task_id=task.replace("t1", "gone")), metadata=md
        ),
        "CreateJob": lambda md, t, task: training.CreateJob(_job_request(task, keys), metadata=md),
        "GetJob": lambda md, t, task: training.GetJob(pb.GetJobRequest(job_id=keys.jobs[task]), metadata=md),
        "CancelJob": lambda md, t, task: training.CancelJob(
            pb.CancelJobRequest(job_id=keys.jobs[task]), metadata=md
        ),
        "WatchJob": lambda md, t, task: _watch(training, md, keys.jobs[task]),
    }


JOB_RPCS = frozenset({"GetJob", "CancelJob", "WatchJob"})


INFERENCE_RPCS = frozenset({"Classify", "ClassifyStream", "Health"})
REFUSED = {"none": UN, "wrong": UN, "revoked": UN, "expired": UN}


def _expected(rpc: str, case: str) -> str:
    if case in REFUSED:
        return REFUSED[case]
    if case == "scope":
        return PD
    if case == "other":
        return PD if rpc == "Upload" else NF
    return OK


async def _grpc_matrix(s: Any, spec: Any, peft: tuple[bytes, bytes], keys: Keys) -> tuple[dict, list[str]]:
    """(case -> status) for every tenant x RPC x case, and every error message seen."""
    got, details = {}, []
    calls = _rpcs(s, spec, peft, keys)
    for tenant, other in (("a", "b"), ("b", "a")):
        own_task, other_task = f"{tenant}/t1", f"{other}/t1"
        for case in ("none", "wrong", "revoked", "expired", "scope", "other", "own"):
            for rpc, call in calls.items():
                key_case = case
                if case == "scope":
                    key_case = "publish" if rpc in INFERENCE_RPCS else "classify"
                elif case == "other":
                    key_case = "own"
                md = keys.md(tenant, key_case)
                code, det, _ = await _status(call(md, tenant, other_task if case == "other" else own_task))
                got[(tenant, rpc, case)] = code
                details.append(det)
                if case == "other" and code == NF:  # the words an unknown task (job) gets
                    unknown = f"no task {_target(rpc, other_task)!r}"
                    if rpc in JOB_RPCS:
                        unknown = f"no job {keys.jobs[other_task]!r}"
                    # (a stream's: "message 0: ...", behind grpc.aio's own prefix here)
                    tail = f"message 0: {unknown}" if rpc == "ClassifyStream" else f">: {unknown}"
                    assert det == unknown or det.endswith(tail), (rpc, det)
    return got, details


def _target(rpc: str, task: str) -> str:
    return {
        "ImportPeft": task.replace("t1", "peft"),
        "DeleteTask": task.replace("t1", "del"),
        "RestoreTask": task.replace("t1", "gone"),
    }.get(rpc, task)


async def _listing_and_health(s: Any, keys: Keys) -> dict:
    inf, reg = pb_grpc.InferenceStub(s.channel), pb_grpc.RegistryStub(s.channel)
    training = pb_grpc.TrainingStub(s.channel)
    got = {}
    for tenant in ("a", "b"):
        for case in ("none", "wrong", "revoked", "expired", "scope", "own"):
            kc = {"scope": "classify"}.get(case, case)
            code, _, out = await _status(reg.ListTasks(pb.ListTasksRequest(), metadata=keys.md(tenant, kc)))
            got[(tenant, "ListTasks", case)] = code
            if out is not None:
                assert {tenant_of(t.task_id) for t in out.tasks} == {tenant}, out
            kc = {"scope": "publish"}.get(case, case)
            code, _, out = await _status(inf.Health(pb.HealthRequest(), metadata=keys.md(tenant, kc)))
            got[(tenant, "Health", case)] = code
            if out is not None:
                assert list(out.resident) == []  # a tenant's key sees no task ids
            kc = {"scope": "classify"}.get(case, case)
            listing = training.ListJobs(pb.ListJobsRequest(), metadata=keys.md(tenant, kc))
            code, _, out = await _status(listing)
            got[(tenant, "ListJobs", case)] = code
            if out is not None:  # its own: the one the owner queued, and the matrix's CreateJob
                assert {tenant_of(j.task_id) for j in out.jobs} == {tenant} and len(out.jobs) == 2, out
    admin = keys.md("a", "admin")
    everything = await reg.ListTasks(pb.ListTasksRequest(), metadata=admin)
    assert {tenant_of(t.task_id) for t in everything.tasks} == {"a", "b"}
    jobs = await training.ListJobs(pb.ListJobsRequest(), metadata=admin)
    assert {tenant_of(j.task_id) for j in jobs.jobs} == {"a", "b"}
    # the words an unknown job gets: the matrix checks that another tenant's job gets them
    code, det, _ = await _status(training.GetJob(pb.GetJobRequest(job_id="job-000000000000"), metadata=admin))
    assert (code, det) == (NF, "no job 'job-000000000000'")
    assert len((await inf.Health(pb.HealthRequest(), metadata=admin)).resident) > 0
    return got


async def _admin_matrix(s: Any, keys: Keys) -> dict:
    admin = pb_grpc.AdminStub(s.channel)
    calls = {
        "ListTenants": lambda md: admin.ListTenants(pb.ListTenantsRequest(), metadata=md),
        "ListKeys": lambda md: admin.ListKeys(pb.ListKeysRequest(), metadata=md),
        "ListAudit": lambda md: admin.ListAudit(pb.ListAuditRequest(), metadata=md),
        "SetQuota": lambda md: admin.SetQuota(pb.SetQuotaRequest(tenant="a"), metadata=md),
        "CreateTenant": lambda md: admin.CreateTenant(pb.CreateTenantRequest(tenant="c"), metadata=md),
        "CreateKey": lambda md: admin.CreateKey(
            pb.CreateKeyRequest(tenant="c", scopes=["classify"]), metadata=md
        ),
        "RevokeKey": lambda md: admin.RevokeKey(pb.RevokeKeyRequest(key_id="000000000000"), metadata=md),
        "DeleteTenant": lambda md: admin.DeleteTenant(pb.DeleteTenantRequest(tenant="c"), metadata=md),
    }
    got = {}
    for tenant in ("a", "b"):
        for case in ("none", "wrong", "revoked", "expired", "scope"):
            for rpc, call in calls.items():
                got[(tenant, rpc, case)] = (
                    await _status(call(keys.md(tenant, "own" if case == "scope" else case)))
                )[0]
    for rpc, call in calls.items():
        got[("a", rpc, "admin")] = (await _status(call(keys.md("a", "admin"))))[0]
    return got


def _http(port: int, path: str, md: Any, body: dict | None = None) -> tuple[int, str]:
    headers = {k: v for k, v in md}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        headers=headers,
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def _http_matrix(s: Any, keys: Keys) -> tuple[dict, list[str]]:
    got, bodies = {}, []
    for tenant, other in (("a", "b"), ("b", "a")):
        for case in ("none", "wrong", "revoked", "expired", "scope", "other", "own"):
            kc = {"scope": "publish", "other": "own"}.get(case, case)
            task = f"{other}/t1" if case == "other" else f"{tenant}/t1"
            body = {"task_id": task, "inputs": [{"text": "rain"}]}
            code, text = await asyncio.to_thread(
                _http, s.http_port, "/v1/classify", keys.md(tenant, kc), body
            )
            got[(tenant, "http:classify", case)] = code
            bodies.append(text)
            if case != "other":
                code, text = await asyncio.to_thread(_http, s.http_port, "/v1/health", keys.md(tenant, kc))
                got[(tenant, "http:health", case)] = code
                bodies.append(text)
                if code == 200:
                    assert json.loads(text)["resident"] == []
    return got, bodies


HTTP_CODE = {OK: 200, NF: 404, UN: 401, PD: 403}


def _peft(tiny_bert_dir: Path, tmp_path: Path) -> tuple[bytes, bytes]:
    from tests.test_store import save_peft

    save_peft(tiny_bert_dir, tmp_path / "adapter", num_labels=2)
    return (
        (tmp_path / "adapter" / "adapter_config.json").read_bytes(),
        (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes(),
    )


def _config(loc: str, tiny_bert_dir: Path) -> ServerConfig:
    return ServerConfig(
        store=loc,
        backbone=str(tiny_bert_dir),
        seed_examples=False,
        torch_threads=1,
        max_inputs=16,
        max_batch_rows=32,
        token=Secret(OWNER),
        inference_token=Secret(INFERENCE),
        watch_interval_s=0.02,
    )


def test_the_matrix_over_grpc_and_http(
    no_ray, location, tiny_bert_dir, tiny_bert, tmp_path, capfd, monkeypatch
) -> None:
    """Two tenants x every RPC x every case, on one server per backend."""
    spec, peft = tiny_bert.spec, _peft(tiny_bert_dir, tmp_path)
    # the proxy-side check (decoders) runs too, as `polyhead serve` configures it
    monkeypatch.setenv("POLYHEAD_PROXY_AUTH", "1")
    monkeypatch.setenv("POLYHEAD_PROXY_REGISTRY_TOKEN", OWNER)
    monkeypatch.setenv("POLYHEAD_PROXY_INFERENCE_TOKEN", INFERENCE)

    async def main() -> None:
        with captured_logs() as logs:
            async with serving(_config(location, tiny_bert_dir)) as s:
                refused: list[tuple[str, str]] = []
                s.replica.auth._on_refused = lambda tenant, reason: refused.append((tenant, reason))
                keys = await _setup(s, spec, peft)
                got, details = await _grpc_matrix(s, spec, peft, keys)
                got |= await _listing_and_health(s, keys)
                got |= await _admin_matrix(s, keys)
                http, bodies = await _http_matrix(s, keys)
                await _datasets_belong_to_their_uploaders(s, keys)
                audit = s.replica.parts.store.catalog.audit()
                catalog_text = _dump(s.replica.parts.store.catalog)
        want = {k: (OK if k[2] == "admin" else _expected(k[1], k[2])) for k in got}
        for k in got:  # a tenant's key holds no admin scope
            if (
                k[1]
                in (
                    "ListTenants",
                    "ListKeys",
                    "ListAudit",
                    "SetQuota",
                    "CreateTenant",
                    "CreateKey",
                    "RevokeKey",
                    "DeleteTenant",
                )
                and k[2] == "scope"
            ):
                want[k] = PD
        want |= {("a", "RevokeKey", "admin"): NF}  # an unknown key id, with the admin key
        assert {k: v for k, v in got.items() if want[k] != v} == {}
        assert len(got) == 2 * 13 * 7 + 2 * 3 * 6 + 2 * 8 * 5 + 8
        want_http = {k: HTTP_CODE[_expected("Classify", k[2])] for k in http}
        assert http == want_http
        leaked = [
            k
            for k in keys.secrets()
            if k in logs.text()
            or k in "".join(details + bodies)
            or k in catalog_text
            or k in "".join(capfd.readouterr())
        ]
        assert leaked == []
        reasons = {r for _, r in refused}
        assert reasons == {"missing", "wrong", "revoked", "expired", "scope"}
        assert ("a", "revoked") in refused and ("b", "expired") in refused
        # the audit trail: every Registry change with its key id, tenant, task and outcome
        mine = [
            (r.key_id, r.rpc, r.task_id, r.outcome) for r in audit if r.tenant == "a" and r.key_id != "token"
        ]
        own_id = keys.by[("a", "own")][4:16]
        assert (own_id, "DeleteTask", "a/del", OK) in mine and (own_id, "RestoreTask", "a/gone", OK) in mine
        assert (own_id, "Rollback", "b/t1", NF) in mine
        # and the training jobs it created and cancelled (a job's task is its target)
        assert (own_id, "CreateJob", "a/t1", OK) in mine and (own_id, "CreateJob", "b/t1", NF) in mine
        assert (own_id, "CancelJob", "a/t1", OK) in mine
        assert all(r.at and r.rpc for r in audit)

    asyncio.run(main())


# -- revocation reaches another replica; quotas at publish ---------------------------------------


def test_a_key_revoked_through_one_replica_is_refused_by_another(
    no_ray, location, tiny_bert_dir, tiny_bert
) -> None:
    spec = tiny_bert.spec
    owner = (("authorization", f"Bearer {OWNER}"),)

    async def main() -> None:
        cfg = _config(location, tiny_bert_dir)
        async with serving(cfg) as one, serving(cfg) as two:
            admin = pb_grpc.AdminStub(one.channel)
            await admin.CreateTenant(pb.CreateTenantRequest(tenant="a"), metadata=owner)
            made = await admin.CreateKey(
                pb.CreateKeyRequest(tenant="a", scopes=["classify", "publish"]), metadata=owner
            )
            md = (("authorization", f"Bearer {made.key}"),)
            await pb_grpc.RegistryStub(one.channel).Upload(
                pb.UploadRequest(artifact=artifact(spec, "a/t1", seed=1)[0]), metadata=md
            )
            await _keys_reach(two.replica)  # the new key reached the second replica by its feed
            on_two = pb_grpc.InferenceStub(two.channel)
            assert (
                await _status(on_two.Classify(pb.ClassifyRequest(task_id="a/t1", inputs=RAIN), metadata=md))
            )[0] == OK
            await admin.RevokeKey(pb.RevokeKeyRequest(key_id=made.info.key_id), metadata=owner)
            await _keys_reach(two.replica)
            code, details, _ = await _status(
                on_two.Classify(pb.ClassifyRequest(task_id="a/t1", inputs=RAIN), metadata=md)
            )
            assert (code, details) == (UN, f"API key {made.info.key_id} was revoked")

    asyncio.run(main())


def test_a_weight_set_through_one_replica_reaches_anothers_batch_queue(
    no_ray, location, tiny_bert_dir, tiny_bert
) -> None:
    """SetQuota's weight, over the Admin RPC of one replica (refused unless finite and > 0,
    recorded in the audit trail), reaches the second replica's fair queue by its change
    feed: two backlogged tenants share a contended batch 1:1, then 3:1."""
    from tests.test_fair_share import Req

    owner = (("authorization", f"Bearer {OWNER}"),)

    def shares(queue: Any) -> dict[str, int]:
        for _ in range(8):  # a's heads are older; equal tokens each
            queue.push(Req("a"))
        for _ in range(8):
            queue.push(Req("b"))
        batch = queue.take(64, 10_000)  # a contended batch: fair_batch_rows (8) rows
        while queue.take(64, 10_000):
            pass
        return {t: sum(r.tenant == t for r in batch) for t in ("a", "b")}

    async def main() -> None:
        cfg = _config(location, tiny_bert_dir)
        async with serving(cfg) as one, serving(cfg) as two:
            admin = pb_grpc.AdminStub(one.channel)
            made = await admin.CreateTenant(pb.CreateTenantRequest(tenant="a", weight=0.5), metadata=owner)
            assert made.weight == 0.5
            await admin.CreateTenant(pb.CreateTenantRequest(tenant="b"), metadata=owner)
            await admin.SetQuota(pb.SetQuotaRequest(tenant="a"), metadata=owner)  # back to 1
            await _keys_reach(two.replica)
            queue = two.replica.parts.batcher._queue  # the replica's own queue, as serving built it
            assert shares(queue) == {"a": 4, "b": 4}
            info = await admin.SetQuota(pb.SetQuotaRequest(tenant="a", weight=3.0), metadata=owner)
            assert (info.tenant, info.weight, info.HasField("max_tasks")) == ("a", 3.0, False)
            for bad in (0.0, -2.0, float("nan"), float("inf")):
                code, details, _ = await _status(
                    admin.SetQuota(pb.SetQuotaRequest(tenant="a", weight=bad), metadata=owner))
                assert code == "INVALID_ARGUMENT" and details.startswith("weight: "), (bad, details)
            await _keys_reach(two.replica)  # no restart: the feed brought the new weight
            assert shares(queue) == {"a": 6, "b": 2}
            listed = await admin.ListTenants(pb.ListTenantsRequest(), metadata=owner)
            assert {t.tenant: t.weight for t in listed.tenants} == {"a": 3.0, "b": 1.0, "default": 1.0}
            trail = await admin.ListAudit(pb.ListAuditRequest(), metadata=owner)
            assert [(r.rpc, r.task_id, r.outcome) for r in trail.records if r.rpc == "SetQuota"] == [
                ("SetQuota", "tenant:a", OK)] * 2 + [("SetQuota", "tenant:a", "INVALID_ARGUMENT")] * 4

    asyncio.run(main())


def test_quota_exhaustion_at_publish(no_ray, tmp_path, tiny_bert_dir, tiny_bert) -> None:
    spec = tiny_bert.spec
    owner = (("authorization", f"Bearer {OWNER}"),)

    async def main() -> None:
        async with serving(_config(str(tmp_path / "store"), tiny_bert_dir)) as s:
            admin, reg = pb_grpc.AdminStub(s.channel), pb_grpc.RegistryStub(s.channel)
            await admin.CreateTenant(pb.CreateTenantRequest(tenant="a", max_tasks=1), metadata=owner)
            made = await admin.CreateKey(pb.CreateKeyRequest(tenant="a", scopes=["publish"]), metadata=owner)
            md = (("authorization", f"Bearer {made.key}"),)
            first = await reg.Upload(
                pb.UploadRequest(artifact=artifact(spec, "a/t1", seed=1)[0]), metadata=md
            )
            code, details, _ = await _status(
                reg.Upload(pb.UploadRequest(artifact=artifact(spec, "a/t2", seed=2)[0]), metadata=md)
            )
            assert code == "RESOURCE_EXHAUSTED" and "quota max_tasks = 1" in details
            await admin.SetQuota(pb.SetQuotaRequest(tenant="a", max_bytes=first.nbytes + 10), metadata=owner)
            code, details, _ = await _status(
                reg.Upload(pb.UploadRequest(artifact=artifact(spec, "a/t1", seed=3)[0]), metadata=md)
            )
            assert code == "RESOURCE_EXHAUSTED" and f"quota max_bytes = {first.nbytes + 10}" in details
            listed = await reg.ListTasks(pb.ListTasksRequest(), metadata=md)
            assert [(t.task_id, t.num_versions) for t in listed.tasks] == [("a/t1", 1)]

    asyncio.run(main())


def test_single_owner_tokens_are_the_default_tenants(no_ray, tmp_path, tiny_bert_dir, tiny_bert) -> None:
    """The configured token: the default tenant's admin key (every namespace, Admin too);
    the inference token: its classify key; --insecure: everything open, as before."""
    spec = tiny_bert.spec

    async def main() -> None:
        async with serving(_config(str(tmp_path / "store"), tiny_bert_dir)) as s:
            owner, inference = (
                (("authorization", f"Bearer {OWNER}"),),
                (("authorization", f"Bearer {INFERENCE}"),),
            )
            reg, inf = pb_grpc.RegistryStub(s.channel), pb_grpc.InferenceStub(s.channel)
            await reg.Upload(pb.UploadRequest(artifact=artifact(spec, "sst2", seed=1)[0]), metadata=owner)
            assert (
                await _status(
                    inf.Classify(pb.ClassifyRequest(task_id="sst2", inputs=RAIN), metadata=inference)
                )
            )[0] == OK
            assert (await _status(reg.ListTasks(pb.ListTasksRequest(), metadata=inference)))[0] == PD
            assert (
                len(
                    (
                        await pb_grpc.AdminStub(s.channel).ListTenants(
                            pb.ListTenantsRequest(), metadata=owner
                        )
                    ).tenants
                )
                == 1
            )
        async with serving(
            ServerConfig(
                store=str(tmp_path / "open"),
                backbone=str(tiny_bert_dir),
                seed_examples=False,
                torch_threads=1,
                max_inputs=16,
                max_batch_rows=32,
                insecure=True,
            )
        ) as s:
            reg = pb_grpc.RegistryStub(s.channel)
            await reg.Upload(pb.UploadRequest(artifact=artifact(spec, "sst2", seed=1)[0]))
            assert [t.task_id for t in (await reg.ListTasks(pb.ListTasksRequest())).tasks] == ["sst2"]

    asyncio.run(main())


# -- quotas at admission ------------------------------------------------------------------------


def test_admission_counts_rows_in_flight_per_tenant() -> None:
    from polyhead.server._private.admission import Admission

    limits = {"a": 3}
    adm = Admission(lambda: limits)
    with adm.holding("a", 2), adm.holding("b", 50):  # b: no quota, only counted
        assert (adm.in_flight("a"), adm.in_flight("b")) == (2, 50)
        with (pytest.raises(QuotaExceeded, match=r"quota max_rows_in_flight = 3 reached \(2 rows"),
              adm.holding("a", 2)):
            pass
        assert adm.in_flight("a") == 2  # the refused request holds nothing
        with adm.holding("a", 1):
            assert adm.in_flight("a") == 3
    assert (adm.in_flight("a"), adm.in_flight("b")) == (0, 0)
    limits["a"] = 1  # a changed quota applies to the next request
    with pytest.raises(QuotaExceeded, match="max_rows_in_flight = 1"), adm.holding("a", 2):
        pass


def test_quota_exhaustion_at_admission(no_ray, tmp_path, tiny_bert_dir, tiny_bert) -> None:
    """Tenant a may have 2 rows in flight: a request of 3 rows is refused whole; while 2 of
    its rows wait for the engine (held busy here), one more is refused and tenant b's are
    not; afterwards a is admitted again. Over gRPC and HTTP (429)."""
    import threading

    spec = tiny_bert.spec
    owner = (("authorization", f"Bearer {OWNER}"),)

    async def main() -> None:
        async with serving(_config(str(tmp_path / "store"), tiny_bert_dir)) as s:
            admin, reg = pb_grpc.AdminStub(s.channel), pb_grpc.RegistryStub(s.channel)
            inf = pb_grpc.InferenceStub(s.channel)
            md = {}
            for t in ("a", "b"):
                quota = {"max_rows_in_flight": 2} if t == "a" else {}
                await admin.CreateTenant(pb.CreateTenantRequest(tenant=t, **quota), metadata=owner)
                made = await admin.CreateKey(pb.CreateKeyRequest(tenant=t, scopes=["classify"]),
                                             metadata=owner)
                md[t] = (("authorization", f"Bearer {made.key}"),)
                data = artifact(spec, f"{t}/t1", seed=1)[0]
                await reg.Upload(pb.UploadRequest(artifact=data), metadata=owner)
            await _keys_reach(s.replica)
            seen: list[tuple[str, str, str]] = []  # metrics: (method, tenant, code), rows by tenant
            rows: dict[str, int] = {}
            metrics = s.replica.metrics
            metrics.request = lambda method, tenant, code, ms: seen.append((method, tenant, code))
            metrics.tenant_rows = lambda tenant, n: rows.__setitem__(tenant, rows.get(tenant, 0) + n)

            def ask(t: str, n: int) -> Any:
                request = pb.ClassifyRequest(task_id=f"{t}/t1", inputs=[pb.Input(text="rain")] * n)
                return _status(inf.Classify(request, metadata=md[t]))

            code, details, _ = await ask("a", 3)
            assert code == "RESOURCE_EXHAUSTED" and "quota max_rows_in_flight = 2" in details
            body3 = {"task_id": "a/t1", "inputs": [{"text": "x"}] * 3}
            status, body = await asyncio.to_thread(_http, s.http_port, "/v1/classify", md["a"], body3)
            assert status == 429 and "max_rows_in_flight = 2" in body
            release = threading.Event()
            s.replica.parts.batcher._forward.submit(release.wait)  # the engine is busy
            admission = s.replica.inference.admission
            try:
                held = asyncio.ensure_future(ask("a", 2))
                while admission.in_flight("a") < 2:  # a's two rows are queued
                    await asyncio.sleep(0.005)
                code, details, _ = await ask("a", 1)
                assert code == "RESOURCE_EXHAUSTED"
                assert "(2 rows in flight on this replica + 1 new)" in details
                other = asyncio.ensure_future(ask("b", 4))
                while admission.in_flight("b") < 4:  # b has no quota: admitted, queued
                    await asyncio.sleep(0.005)
            finally:
                release.set()
            assert [(await held)[0], (await other)[0]] == [OK, OK]
            assert (await ask("a", 2))[0] == OK and admission.in_flight("a") == 0
            assert (await _status(inf.Classify(pb.ClassifyRequest(task_id="a/t1", inputs=RAIN))))[0] == UN
            # labelled by tenant, never by task id; refused credentials: "unknown"
            assert {t for _, t, _ in seen} == {"a", "b", "unknown"}
            assert ("Classify", "a", "RESOURCE_EXHAUSTED") in seen and ("Classify", "unknown", UN) in seen
            assert rows == {"a": 4, "b": 4}

    asyncio.run(main())


# -- the commands -------------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from polyhead.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    # (stderr also holds what the in-process server logs; the callers check the messages)
    return code, out, err


def test_the_commands_on_a_store_and_over_grpc(no_ray, tmp_path, tiny_bert_dir, tiny_bert, capsys) -> None:
    """`polyhead tenants|keys|audit` with --store, then the same over gRPC with an admin
    key made by the first; a publish-only key is refused the Admin RPCs."""
    folder = str(tmp_path / "store")
    Store(folder, tiny_bert.spec)  # the store exists (the commands do not create one)
    code, out, _ = _cli(capsys, "tenants", "create", "acme", "--max-tasks", "3", "--max-bytes", "2M",
                        "--max-rows-in-flight", "64", "--weight", "2", "--store", folder)
    assert code == 0 and out.startswith("acme\ttasks 0/3\tbytes 0/2097152\trows in flight <= 64\tweight 2\t")
    for bad in ("0", "-1", "nan", "inf", "heavy", "1e-9"):
        with pytest.raises(SystemExit) as refused:
            _cli(capsys, "tenants", "quota", "acme", "--weight", bad, "--store", folder)
        err = capsys.readouterr().err
        assert refused.value.code == 2 and "argument --weight" in err and "number from 0.001 to 1000" in err
    assert Store(folder, tiny_bert.spec).catalog.weights() == {"acme": 2.0}
    code, out, err = _cli(capsys, "keys", "create", "--tenant", "acme", "--scope", "admin", "--store", folder)
    admin_key = out.strip()
    assert code == 0 and admin_key.startswith("phk_") and "shown this once" in err
    assert admin_key not in err and admin_key not in str(Store(folder, tiny_bert.spec).catalog.keys())
    code, _, err = _cli(capsys, "keys", "create", "--tenant", "acme", "--scope", "root", "--store", folder)
    assert code == 2 and "each must be one of" in err

    async def main() -> None:
        async with serving(_config(folder, tiny_bert_dir)) as s:
            await _keys_reach(s.replica)
            over = ("--server", s.grpc_address, "--token", admin_key)

            def run(*argv: str) -> tuple[int, str, str]:
                return _cli(capsys, *argv, *over)

            code, out, _ = await asyncio.to_thread(run, "tenants", "create", "beta", "--weight", "0.5")
            assert code == 0 and out.startswith("beta\ttasks 0/-") and "\tweight 0.5\t" in out
            code, out, _ = await asyncio.to_thread(run, "tenants", "quota", "beta", "--max-tasks", "4",
                                                   "--weight", "3")
            assert code == 0 and out.startswith("beta\ttasks 0/4\tbytes 0/-\trows in flight <= -\tweight 3\t")
            await _keys_reach(s.replica)
            assert s.replica.parts.keys.weights == {"acme": 2.0, "beta": 3.0}
            code, out, _ = await asyncio.to_thread(run, "keys", "create", "--tenant", "beta", "--scope",
                                                   "publish", "--expires", "1h")
            publish_key = out.strip()
            code, out, _ = await asyncio.to_thread(run, "keys", "list", "--tenant", "beta")
            (line,) = out.splitlines()
            key_id = publish_key[4:16]
            assert code == 0 and line.startswith(f"{key_id}\tbeta\tpublish\tactive")
            assert publish_key not in out
            code, _, err = await asyncio.to_thread(
                _cli, capsys, "tenants", "list", "--server", s.grpc_address, "--token", publish_key)
            assert code == 2 and "PERMISSION_DENIED" in err and publish_key not in err
            code, out, _ = await asyncio.to_thread(run, "keys", "revoke", key_id)
            assert code == 0 and "\trevoked\t" in out
            code, out, _ = await asyncio.to_thread(run, "tenants", "delete", "beta")
            assert (code, out.strip()) == (0, "deleted tenant beta (0 keys revoked)")
            code, out, _ = await asyncio.to_thread(run, "tenants", "list")
            assert [ln.split("\t")[0] for ln in out.splitlines()] == ["acme", "default"]
            code, _, err = await asyncio.to_thread(run, "tenants", "delete", "ghost")
            assert code == 2 and "NOT_FOUND" in err

    asyncio.run(main())
    code, out, _ = _cli(capsys, "audit", "--store", folder, "--since", "1h")
    rows = [ln.split("\t") for ln in out.splitlines()]
    admin_id = admin_key[4:16]
    assert [(r[1], r[3]) for r in rows] == [
        ("local", "CreateTenant"), ("local", "CreateKey"), (admin_id, "CreateTenant"),
        (admin_id, "SetQuota"), (admin_id, "CreateKey"), (admin_id, "RevokeKey"), (admin_id, "DeleteTenant"),
        (admin_id, "DeleteTenant")]
    assert rows[-1][-1] == "NOT_FOUND" and all(r[-1] == "OK" for r in rows[:-1])
    code, out, _ = _cli(capsys, "audit", "--store", folder, "--tenant", "acme")
    assert len(out.splitlines()) == 6  # the admin key's records: its tenant is acme


def test_store_copy_takes_the_tenants_along(location, tiny_bert, tmp_path) -> None:
    """A namespaced task needs its tenant in the destination: `store copy` makes the
    tenants first and sets their quotas and weights after their tasks are in (a quota lowered below
    what the tenant holds does not stop the copy); twice is a no-op."""
    from polyhead.store.catalog import iter_copy, open_catalog

    spec = tiny_bert.spec
    src = Store(location, spec)
    src.catalog.create_tenant("acme")
    src.publish(make_file(spec, "acme/a", seed=1))
    src.publish(make_file(spec, "acme/b", seed=2))
    src.catalog.set_quota("acme", 1, None, 8, weight=2.0)  # below what acme holds
    dst = open_catalog(str(tmp_path / "copy"))
    copied = [(i.task_id, new) for i, new in iter_copy(src.catalog, dst)]
    assert copied == [("acme/a", True), ("acme/b", True)]
    got = {t.tenant: (t.tasks, t.max_tasks, t.max_bytes, t.max_rows_in_flight, t.weight)
           for t in dst.tenants()}
    assert got == {"acme": (2, 1, None, 8, 2.0), "default": (0, None, None, None, 1.0)}
    assert [new for _, new in iter_copy(src.catalog, dst)] == [False, False]


def test_store_copy_takes_keys_audit_and_datasets_along(location, tmp_path) -> None:
    """`store copy` carries every key as it is (hash, scopes, expiry, revocation), the
    audit trail and the datasets; a second copy adds nothing, except a revocation made at
    the source in between, which must reach the copy (a revoked key must not stay live)."""
    from polyhead.store.catalog import copy_rest, iter_copy, open_catalog
    from polyhead.store.jobs import JobBook
    from polyhead.store.tenancy import AuditRecord
    from tests.test_jobs import put, tsv

    Store(location)
    src = open_catalog(location)
    src.create_tenant("acme")
    live, _ = src.create_key("acme", ("classify",), expires_at="2999-01-01T00:00:00+00:00")
    gone, _ = src.create_key("acme", ("publish",))
    src.revoke_key(gone.key_id)
    later, _ = src.create_key("default", ("admin",))
    for rpc in ("CreateTenant", "CreateKey", "RevokeKey"):
        src.add_audit(AuditRecord("2026-01-01T00:00:00.000+00:00", "local", "default", rpc, "", "", "OK"))
    dataset = put(JobBook(src), tsv())
    put(JobBook(src), tsv(), tenant="acme", uploaded_at="2026-02-02T00:00:00.000000+00:00")  # two owners

    dst = open_catalog(str(tmp_path / "copy"))
    list(iter_copy(src, dst))
    first = copy_rest(src, dst)
    assert (first.keys, first.audit, first.datasets) == (3, 3, 1)
    assert dst.keys() == src.keys()
    hashes = [{k.key_id: h for k, h in c.key_table()[1]} for c in (src, dst)]
    assert hashes[0] == hashes[1]
    assert dst.audit() == src.audit()
    assert JobBook(dst).dataset_bytes(dataset) == JobBook(src).dataset_bytes(dataset)
    assert JobBook(dst).dataset(dataset) == JobBook(src).dataset(dataset)
    assert JobBook(dst).dataset_owners() == JobBook(src).dataset_owners()  # each owner, its time
    assert JobBook(dst).dataset(dataset, "acme") == JobBook(src).dataset(dataset, "acme")

    src.revoke_key(later.key_id)
    again = copy_rest(src, dst)
    assert (again.keys, again.audit, again.datasets) == (1, 0, 0)
    states = {k.key_id: k.state() for k in dst.keys()}  # noqa: SIM118 (a Catalog, not a dict)
    assert states == {live.key_id: "active", gone.key_id: "revoked", later.key_id: "revoked"}
    assert dst.keys() == src.keys()
    assert copy_rest(src, dst) == again.__class__(0, 0, 0)
