"""Explicit overwrites, undoable deletes, limits and the publish probe (issue 30), on both
catalog backends (``location``: an SQLite folder, a real PostgreSQL database): a task
changes kind only with ``replace_kind``; a delete keeps every version, alias and byte for
its retention (``restore`` brings them back, ``gc`` purges them after); an older catalog
is upgraded in place; artifacts over a store's limits, or whose logits on the probe inputs
are not finite, are refused by a named check before anything is published."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from functools import partial

import pytest
import torch

from polyhead.engine import TaskArtifact
from polyhead.engine.errors import ArtifactError, ConfigError
from polyhead.engine.lora import LoraConfig
from polyhead.engine.probe import probe_forward
from polyhead.engine.sparse import SparseConfig
from polyhead.store import KindChangeError, NotFoundError, Store, StoreError, encode_artifact, new_manifest
from polyhead.store.limits import Limits
from polyhead.store.sql import CATALOG_SCHEMA
from tests import test_store_support as support
from tests.test_store_support import is_pg, labels_for, make_file, stored_blobs

location, pg_url = support.location, support.pg_url  # fixtures (pg_server: conftest)


@pytest.fixture
def store(location, tiny_bert) -> Store:
    return Store(location, tiny_bert.spec)


def file_of(spec, art: TaskArtifact, task_id: str = "sst2") -> bytes:
    manifest = new_manifest(task_id, art, spec, labels=labels_for(art.head.num_outputs, False),
                            regression=False, metrics={})
    return encode_artifact(manifest, art)


# -- explicit overwrites ----------------------------------------------------------------------

def test_a_task_changes_kind_only_with_replace_kind(store, tiny_bert) -> None:
    spec = tiny_bert.spec
    first = store.publish(make_file(spec, seed=1))
    store.publish(make_file(spec, seed=2))  # same kind: no flag needed
    with pytest.raises(KindChangeError, match=r"'pasta' task.*'lora' version.*replace_kind"):
        store.publish(make_file(spec, kind="lora", seed=3))
    assert store.resolve("sst2").number == 2 and len(store.history("sst2")) == 2  # untouched
    lora = store.publish(make_file(spec, kind="lora", seed=3), replace_kind=True)
    assert lora.kind == "lora" and store.list_tasks()[0].kind == "lora"
    store.rollback("sst2", first.version)  # back to pasta: a later pasta publish needs no flag
    assert store.publish(make_file(spec, seed=4)).kind == "pasta"


# -- undoable deletes -------------------------------------------------------------------------

def test_a_delete_keeps_everything_until_restored(store, tiny_bert) -> None:
    spec = tiny_bert.spec
    for seed in (1, 2, 3):
        store.publish(make_file(spec, seed=seed))
    store.set_alias("sst2", "stable", "v2")
    store.rollback("sst2", "v3")
    history, tasks = store.history("sst2"), store.list_tasks()
    kept = {v.version for v in history}
    g = store.generation()
    gone = store.delete("sst2")
    assert store.generation() > g and store.list_tasks() == []
    assert (gone.task_id, gone.num_versions) == ("sst2", 3) and gone.expires_at > gone.deleted_at
    with pytest.raises(NotFoundError, match=re.escape(f"no task 'sst2' (deleted; restorable until "
                                                      f"{gone.expires_at}: `polyhead tasks restore sst2`)")):
        store.get("sst2")  # says how to bring it back
    assert kept <= stored_blobs(store.catalog)  # no byte dropped
    store.gc()  # within the retention: gc keeps it all
    assert kept <= stored_blobs(store.catalog) and [d.task_id for d in store.deleted()] == ["sst2"]
    back = store.restore("sst2")
    assert back.number == 3 and store.history("sst2") == history and store.list_tasks() == tasks
    assert store.get("sst2", "stable").info.number == 2 and store.deleted() == []
    assert store.verify() == []
    with pytest.raises(NotFoundError, match="no deleted task 'sst2'"):
        store.restore("sst2")
    with pytest.raises(NotFoundError, match=r"^no task 'nope'$"):  # never deleted: no hint
        store.get("nope")


def test_restore_is_refused_while_the_id_is_taken_again(store, tiny_bert) -> None:
    spec = tiny_bert.spec
    store.publish(make_file(spec, seed=1))
    store.delete("sst2")
    again = store.publish(make_file(spec, seed=1))  # the very bytes, published afresh
    assert again.number == 1
    with pytest.raises(StoreError, match="exists"):
        store.restore("sst2")
    store.publish(make_file(spec, seed=2))
    store.delete("sst2")  # a second delete of the id: restore takes the latest
    assert [d.num_versions for d in store.deleted()] == [2, 1]
    assert store.restore("sst2").number == 2 and len(store.history("sst2")) == 2
    assert [d.num_versions for d in store.deleted()] == [1] and store.verify() == []


def test_gc_purges_deletes_past_their_retention(store, tiny_bert) -> None:
    spec = tiny_bert.spec
    old = store.publish(make_file(spec, "old", seed=1))
    store.publish(make_file(spec, "young", seed=2))
    store.retention_s = 0  # expired the moment it is deleted
    store.delete("old")
    store.retention_s = 3600
    store.delete("young")
    store.gc()
    assert [d.task_id for d in store.deleted()] == ["young"]
    assert old.version not in stored_blobs(store.catalog)  # rows and bytes gone
    with pytest.raises(NotFoundError, match="retention ended"):
        store.restore("old")
    assert store.restore("young").number == 1 and store.verify() == []


def test_an_older_catalog_is_upgraded_in_place(location, tiny_bert) -> None:
    """A catalog as schema 1 left it (no deleted tables; PostgreSQL's bytes deleted with
    their version): opened by this code, it is upgraded, keeps its versions, and its
    deletes keep their bytes."""
    spec = tiny_bert.spec
    info = Store(location, spec).publish(make_file(spec, seed=1))
    catalog = Store(location, spec).catalog
    schema_1 = ["DROP TABLE deleted_versions", "DROP TABLE deleted_tasks", "DROP TABLE audit",
                "DROP TABLE api_keys", "DROP TABLE tenants", "DELETE FROM meta WHERE key = 'auth'",
                "UPDATE meta SET value = 1 WHERE key = 'schema'"]
    if is_pg(location):
        schema_1.append("ALTER TABLE blobs ADD CONSTRAINT blobs_version_fkey FOREIGN KEY (version) "
                        "REFERENCES versions(version) ON DELETE CASCADE")
    catalog._writing(lambda c: [c.execute(s) for s in schema_1])
    catalog.close()
    upgraded = Store(location, spec)
    assert upgraded.catalog._reading(lambda c: c.execute(
        "SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]) == CATALOG_SCHEMA
    assert upgraded.get("sst2").info == info
    upgraded.delete("sst2")
    assert info.version in stored_blobs(upgraded.catalog)
    assert upgraded.restore("sst2") == info and upgraded.verify() == []


def test_a_sqlite_catalog_from_before_is_upgraded(tmp_path, tiny_bert) -> None:
    """The SQLite file exactly as schema 1 created it (its DDL, frozen here)."""
    root = tmp_path / "store"
    (root / "blobs").mkdir(parents=True)
    (root / "tmp").mkdir()
    conn = sqlite3.connect(root / "catalog.sqlite")
    conn.executescript(SCHEMA_1)
    conn.close()
    store = Store(root, tiny_bert.spec)
    store.publish(make_file(tiny_bert.spec, seed=1))
    store.delete("sst2")
    assert store.restore("sst2").number == 1


SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE tasks (task_id TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE versions (version TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE, number INTEGER NOT NULL,
    kind TEXT NOT NULL, nbytes INTEGER NOT NULL, created_at TEXT NOT NULL, UNIQUE (task_id, number));
CREATE TABLE aliases (task_id TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
    alias TEXT NOT NULL, version TEXT NOT NULL REFERENCES versions(version) ON DELETE CASCADE,
    PRIMARY KEY (task_id, alias));
INSERT INTO meta (key, value) VALUES ('generation', 0);
INSERT INTO meta (key, value) VALUES ('schema', 1);
"""


# -- limits -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("limits", "art", "check", "message"), [
    (Limits(max_outputs=16), ("pasta", None, 20), "max_outputs", "outputs 20 exceeds .* max_outputs = 16"),
    (Limits(max_lora_rank=8), ("lora", LoraConfig(r=16), 2), "max_lora_rank",
     "lora rank 16 exceeds .* max_lora_rank = 8"),
    (Limits(max_sparse_density=0.05), ("sparse", SparseConfig(density=0.1), 2),
     "max_sparse_density", "sparse density 0.1 exceeds .* max_sparse_density = 0.05"),
], ids=["outputs", "rank", "density"])
def test_limits_refuse_naming_the_limit(tmp_path, tiny_bert, limits, art, check, message) -> None:
    spec = tiny_bert.spec
    kind, cfg, outputs = art
    data = file_of(spec, TaskArtifact.random(kind, spec, outputs, config=cfg))
    store = Store(tmp_path / "store", spec, limits=limits)
    with pytest.raises(ArtifactError, match=message) as e:
        store.publish(data)
    assert e.value.check == check and store.list_tasks() == []
    assert Store(tmp_path / "store", spec).publish(data).number == 1  # the defaults take it


def test_limits_are_themselves_checked() -> None:
    for bad in ({"max_outputs": 0}, {"max_lora_rank": 1024}, {"max_sparse_density": 1.5}):
        with pytest.raises(StoreError, match=next(iter(bad))):
            Limits(**bad)


# -- the publish probe ------------------------------------------------------------------------

def overflowing(spec) -> TaskArtifact:
    """Finite tensors of a valid LoRA whose effect overflows fp32 on the backbone."""
    art = TaskArtifact.random("lora", spec, 2, config=LoraConfig(r=4, alpha=8.0), seed=1)
    for name, t in art.tensors.items():
        if name.endswith(".B"):
            art.tensors[name] = torch.full_like(t, 1e25)
    return art


def test_the_probe_refuses_an_artifact_that_serves_nan(tmp_path, tiny_bert) -> None:
    spec = tiny_bert.spec
    bad = file_of(spec, overflowing(spec))
    store = Store(tmp_path / "store", spec, probe=partial(probe_forward, tiny_bert))
    store.publish(make_file(spec, seed=1))  # an ordinary artifact passes
    with pytest.raises(ArtifactError, match="not finite") as e:
        store.publish(bad)
    assert e.value.check == "probe_forward" and store.resolve("sst2").number == 1


def test_the_probe_refuses_peft_imports_that_overflow(tmp_path, tiny_bert, tiny_bert_dir) -> None:
    """B5: a PEFT adapter with lora_alpha 1e30 (or weights that overflow) never publishes."""
    from tests.test_store import save_peft

    folder = tmp_path / "adapter"
    save_peft(tiny_bert_dir, folder, num_labels=2)
    config = json.loads((folder / "adapter_config.json").read_text())
    model = (folder / "adapter_model.safetensors").read_bytes()
    store = Store(tmp_path / "store", tiny_bert.spec, probe=partial(probe_forward, tiny_bert))
    huge = json.dumps({**config, "lora_alpha": 1e30}).encode()
    with pytest.raises((ArtifactError, ConfigError)):  # the probe, or an earlier range check
        store.import_peft_bytes(huge, model, "nli")
    assert store.list_tasks() == []
    assert store.import_peft_bytes(json.dumps(config).encode(), model, "nli").info.number == 1


# -- the store CLI ----------------------------------------------------------------------------

def test_store_cli_delete_restore_gc_and_replace_kind(tmp_path, tiny_bert, tiny_bert_dir,
                                                      capsys) -> None:
    from polyhead.cli import main

    spec, root = tiny_bert.spec, str(tmp_path / "store")

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["store", *argv, "--store", root])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    pasta, lora, bad = tmp_path / "pasta.polyhead", tmp_path / "lora.polyhead", tmp_path / "bad.polyhead"
    pasta.write_bytes(make_file(spec, seed=1))
    lora.write_bytes(make_file(spec, kind="lora", seed=2))
    bad.write_bytes(file_of(spec, overflowing(spec)))
    back = ("--backbone", str(tiny_bert_dir))
    assert run("publish", str(pasta), *back)[0] == 0
    code, _, err = run("publish", str(lora), *back)
    assert code == 2 and "needs replace_kind (--replace-kind)" in err
    code, _, err = run("publish", str(bad), "--replace-kind", *back)
    assert code == 2 and "probe_forward" in err  # the CLI path probes too
    assert run("publish", str(lora), "--replace-kind", *back)[0] == 0
    code, out, _ = run("delete", "sst2")
    assert code == 0 and "restorable until" in out and "store restore sst2" in out
    code, out, _ = run("deleted")
    assert out.startswith("sst2\t2 versions")
    code, out, _ = run("restore", "sst2")
    assert code == 0 and "latest -> v2" in out and Store(root).resolve("sst2").kind == "lora"
    assert run("delete", "sst2", "--retention-days", "0.00001")[0] == 0  # 0.864 s
    assert run("deleted")[1].startswith("sst2")
    time.sleep(1.0)
    code, out, _ = run("gc")
    assert code == 0 and "deleted task sst2" in out
    code, _, err = run("restore", "sst2")
    assert code == 2 and "no deleted task 'sst2'" in err
    code, out, err = run("deleted")  # nothing left: said on stderr, stdout stays a table
    assert out == "" and f"no deleted tasks in {Store(root).catalog.location}" in err
    assert stored_blobs(Store(root).catalog) == set()
