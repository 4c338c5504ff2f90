"""The store: versions, aliases, rollback, delete, generation, refusal of bad files,
concurrent publishers, PEFT import, and engine logits through the store. The contract tests
run on both catalog backends (``location``: an SQLite folder, a real PostgreSQL database)."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import peft
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertModel

from polyhead.engine.errors import ArtifactError
from polyhead.store import AmbiguousRefError, NotFoundError, Store, StoreError
from polyhead.store.sqlite import SqliteCatalog, _set_journal
from tests import test_store_support as support
from tests.test_store_format import BAD, TEXTS
from tests.test_store_support import (
    KINDS,
    damage,
    labels_for,
    make_artifact,
    make_file,
    manifest_of,
    new_database,
    stored_blobs,
)

location, pg_url = support.location, support.pg_url  # fixtures (pg_server: conftest)


@pytest.fixture
def store(location, tiny_bert) -> Store:
    return Store(location, tiny_bert.spec)


@pytest.fixture
def sqlite_store(tmp_path, tiny_bert) -> Store:
    return Store(tmp_path / "store", tiny_bert.spec)


def blobs(store: Store) -> set[str]:
    return stored_blobs(store.catalog)


def test_publish_get_history_latest(store, location, tiny_bert) -> None:
    watcher = Store(location)  # another connection, as a server's watcher would hold
    g0 = watcher.generation()
    first = store.publish(make_file(tiny_bert.spec, seed=1))
    assert watcher.generation() > g0 and watcher.resolve("sst2") == first
    assert (first.task_id, first.number, first.kind, first.aliases) == ("sst2", 1, "pasta", ("latest",))
    assert len(store.read_bytes("sst2", "v1")[1]) == first.nbytes and blobs(store) == {first.version}
    second = store.publish(make_file(tiny_bert.spec, seed=2))
    assert second.number == 2 and store.generation() > g0
    got = store.get("sst2")
    assert got.info == second and got.manifest.labels == ["label0", "label1"]
    assert [v.version for v in store.history("sst2")] == [first.version, second.version]
    assert store.get("sst2", first.version).info.number == 1
    assert store.resolve("sst2", first.version[:8]).number == 1
    assert store.resolve("sst2", "v1") == store.history("sst2")[0]
    info, data = store.read_bytes("sst2")
    assert info == second and manifest_of(data).task_id == "sst2"


def test_republishing_identical_bytes_is_idempotent(store, tiny_bert) -> None:
    a, b = make_file(tiny_bert.spec, seed=1), make_file(tiny_bert.spec, seed=2)
    first = store.publish(a)
    store.publish(b)
    g = store.generation()
    again = store.publish(a)  # same version, and latest moves back to it
    assert again.version == first.version and again.number == 1 and "latest" in again.aliases
    assert len(store.history("sst2")) == 2 and store.generation() > g
    g = store.generation()
    store.publish(a)
    assert store.generation() == g  # nothing changed


def test_aliases_and_rollback(store, tiny_bert) -> None:
    v1 = store.publish(make_file(tiny_bert.spec, seed=1))
    v2 = store.publish(make_file(tiny_bert.spec, seed=2))
    g = store.generation()
    assert store.set_alias("sst2", "stable", v1.version[:10]).aliases == ("stable",)
    assert store.generation() > g
    assert store.get("sst2", "stable").info.version == v1.version
    rolled = store.rollback("sst2", "v1")
    assert rolled.version == v1.version and rolled.aliases == ("latest", "stable")
    assert store.get("sst2").info.version == v1.version
    (task,) = store.list_tasks()
    assert task.latest.version == v1.version and task.num_versions == 2
    assert task.aliases == {"latest": v1.version, "stable": v1.version}
    store.rollback("sst2", v2.version)
    store.remove_alias("sst2", "stable")
    assert store.list_tasks()[0].aliases == {"latest": v2.version}
    for bad in ("Latest", "deadbeef00", "v7", "a/b", ""):
        with pytest.raises(StoreError, match="alias"):
            store.set_alias("sst2", bad, "v1")
    with pytest.raises(StoreError):
        store.remove_alias("sst2", "latest")


def test_unknown_and_ambiguous_refs(store, tiny_bert) -> None:
    store.publish(make_file(tiny_bert.spec))
    for task, ref in [("nope", "latest"), ("sst2", "stable"), ("sst2", "v2"), ("sst2", "f" * 64),
                      ("../x", "latest"), ("sst2", "0123456")]:
        with pytest.raises(NotFoundError):
            store.get(task, ref)
    # two versions sharing an 8-char prefix cannot be made from real hashes: write the rows
    def rows(c) -> None:
        for i, v in enumerate(("abcdef12" + "0" * 56, "abcdef12" + "1" * 56)):
            c.execute("INSERT INTO versions VALUES (?, 'sst2', ?, 'pasta', 1, 'now')", (v, 10 + i))

    store.catalog._writing(rows)
    with pytest.raises(AmbiguousRefError):
        store.resolve("sst2", "abcdef12")
    assert store.resolve("sst2", "ABCDEF121").number == 11


def test_list_and_delete_collects_blobs(store, tiny_bert) -> None:
    store.publish(make_file(tiny_bert.spec, "b-task", seed=1))
    store.publish(make_file(tiny_bert.spec, "a-task", "lora", seed=2))
    store.publish(make_file(tiny_bert.spec, "a-task", "lora", seed=3))
    tasks = store.list_tasks()
    assert [(t.task_id, t.kind, t.num_versions) for t in tasks] == [("a-task", "lora", 2),
                                                                      ("b-task", "pasta", 1)]
    a_blobs = {v.version for v in store.history("a-task")}
    g = store.generation()
    store.retention_s = 0  # final at once (test_store_retention: the restorable default)
    store.delete("a-task")
    assert store.generation() > g
    assert [t.task_id for t in store.list_tasks()] == ["b-task"]
    assert not (a_blobs & blobs(store)) and len(blobs(store)) == 1
    with pytest.raises(NotFoundError):
        store.get("a-task")
    with pytest.raises(NotFoundError):
        store.delete("a-task")
    again = store.publish(make_file(tiny_bert.spec, "a-task", "lora", seed=2))
    assert again.number == 1 and store.verify() == []


@pytest.mark.parametrize(("name", "check", "needs_spec", "build"), BAD, ids=[b[0] for b in BAD])
def test_bad_file_leaves_the_previous_version(store, tiny_bert, name, check, needs_spec, build) -> None:
    good = store.publish(make_file(tiny_bert.spec))
    before = (store.generation(), blobs(store), store.list_tasks())
    with pytest.raises(ArtifactError) as e:
        store.publish(build(tiny_bert.spec))
    assert e.value.check == check
    assert (store.generation(), blobs(store), store.list_tasks()) == before
    assert store.get("sst2").info == good
    if isinstance(store.catalog, SqliteCatalog):
        assert list(store.catalog.tmp_dir.iterdir()) == []


def test_byte_cap_and_fingerprint_in_store(tmp_path, tiny_bert, tiny_roberta) -> None:
    data, big = make_file(tiny_bert.spec), make_file(tiny_bert.spec, kind="lora")
    small = Store(tmp_path / "s", tiny_bert.spec, max_artifact_bytes=len(data))
    good = small.publish(data)
    with pytest.raises(ArtifactError) as e:
        small.publish(big)
    assert e.value.check == "too_large" and small.get("sst2").info == good
    other = Store(tmp_path / "r", tiny_roberta.spec)
    with pytest.raises(ArtifactError) as e:
        other.publish(data)
    assert e.value.check == "fingerprint"
    spec_less = Store(tmp_path / "r")  # structure only: accepted, then refused by a spec'd reader
    spec_less.publish(data)
    with pytest.raises(ArtifactError, match="fingerprint"):
        Store(tmp_path / "r", tiny_roberta.spec).get("sst2")


def test_verify_finds_corrupt_and_missing_blobs(store, tiny_bert) -> None:
    v1 = store.publish(make_file(tiny_bert.spec, seed=1))
    v2 = store.publish(make_file(tiny_bert.spec, seed=2))
    assert store.verify() == []
    damage(store.catalog, v2.version)
    with pytest.raises(StoreError, match="corrupt"):
        store.get("sst2")
    damage(store.catalog, v1.version, remove=True)
    with pytest.raises(StoreError, match="missing"):
        store.get("sst2", "v1")
    problems = store.verify()
    assert len(problems) == 2 and "sha256 mismatch" in problems[1] and "unreadable" in problems[0]


def test_gc_takes_orphans_only(sqlite_store, tiny_bert) -> None:
    store = sqlite_store
    v = store.publish(make_file(tiny_bert.spec))
    orphan = "ab" + "0" * 62
    blob = store.catalog.blob_path(orphan)
    blob.parent.mkdir(exist_ok=True)
    blob.write_bytes(b"left by a killed publisher")
    removed = store.gc()
    assert [Path(p).name for p in removed] == [orphan] and blobs(store) == {v.version}


def test_gc_between_blob_write_and_commit(sqlite_store, tiny_bert, monkeypatch) -> None:
    """A gc (another process deleting a task) right after our blob write must not leave a
    version without its blob: the publisher re-checks under the write lock."""
    store = sqlite_store
    original, raced = SqliteCatalog._put_blob, []

    def racing(self: SqliteCatalog, version: str, data: bytes) -> None:
        original(self, version, data)
        if not raced:
            raced.append(version)
            assert [Path(p).name for p in self.gc()] == [version]

    monkeypatch.setattr(SqliteCatalog, "_put_blob", racing)
    info = store.publish(make_file(tiny_bert.spec))
    assert raced == [info.version] and store.verify() == [] and store.get("sst2").info == info


def test_processes_creating_one_store_at_once(tmp_path, pg_server) -> None:
    from tests.store_children import open_catalog_child

    # forks of a clean forkserver, not of this (threaded) process: see tests/store_children.py
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.store_children"])
    places = [str(tmp_path / f"s{i}") for i in range(8)] + [new_database(pg_server) for _ in range(2)]
    for place in places:
        results = ctx.Queue()
        procs = [ctx.Process(target=open_catalog_child, args=(place, results)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        assert [results.get(timeout=5) for _ in procs] == ["ok"] * 4


def test_creating_the_schema_again_after_another_process_made_it(location) -> None:
    """The race above, made deterministic: a process that found no catalog and then waited
    for the write lock while another made it must not run the DDL again (schema 5's ALTER
    TABLE fails a second time: 'duplicate column name: weight')."""
    from polyhead.store.catalog import open_catalog

    catalog = open_catalog(location)
    catalog.create_tenant("acme")
    if support.is_pg(location):
        catalog._create_schema(catalog._conn())  # type: ignore[attr-defined]
    else:
        catalog._writing(catalog._create_schema)  # type: ignore[attr-defined]
    assert [t.tenant for t in open_catalog(location).tenants()] == ["acme", "default"]


def test_default_root_from_env(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("POLYHEAD_STORE", str(tmp_path / "env-store"))
    assert Store().location == str(tmp_path / "env-store")
    assert (tmp_path / "env-store" / "blobs").is_dir()
    monkeypatch.delenv("POLYHEAD_STORE")
    monkeypatch.chdir(tmp_path)
    assert Store().location == "polyhead-store" and (tmp_path / "polyhead-store").is_dir()


def test_threads_share_a_store(store, tiny_bert) -> None:
    files = [make_file(tiny_bert.spec, f"t{i % 3}", seed=i) for i in range(24)]
    errors: list[BaseException] = []

    def work(chunk: list[bytes]) -> None:
        try:
            for data in chunk:
                store.publish(data)
                store.generation()
                store.get(manifest_of(data).task_id)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(files[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(store.history(f"t{i}")) for i in range(3)) == [8, 8, 8]


# -- engine logits through the store ------------------------------------------------------

def test_engine_logits_from_the_store(location, tiny_engine) -> None:
    spec = tiny_engine.spec
    store = Store(location, spec)
    from polyhead.store import encode_artifact, new_manifest

    for i, (kind, config, head_type, outputs, regression) in enumerate(KINDS):
        art = make_artifact(spec, kind, seed=i, config=config, head_type=head_type, outputs=outputs)
        before = tiny_engine.run(TEXTS, [tiny_engine.load(art)] * len(TEXTS))
        manifest = new_manifest(f"task-{kind}", art, spec, labels=labels_for(outputs, regression),
                                regression=regression)
        store.publish(encode_artifact(manifest, art))
        loaded = Store(location, spec).get(f"task-{kind}").artifact  # a fresh reader
        after = tiny_engine.run(TEXTS, [tiny_engine.load(loaded)] * len(TEXTS))
        for b, a in zip(before, after, strict=True):
            assert torch.equal(a, b), kind


@pytest.mark.integration
def test_real_backbone_logits_from_the_store(tmp_path, real_backbone) -> None:
    from polyhead.engine import Engine, TaskArtifact
    from polyhead.engine.lora import LoraConfig
    from polyhead.engine.sparse import SparseConfig
    from polyhead.store import encode_artifact, new_manifest

    spec, eng = real_backbone.spec, Engine(real_backbone)
    store = Store(tmp_path / "store", spec)
    for kind, config in [("pasta", None), ("lora", LoraConfig(r=8)), ("sparse", SparseConfig(0.01))]:
        art = TaskArtifact.random(kind, spec, 2, config=config, seed=1)
        before = eng.run(TEXTS, [eng.load(art)] * len(TEXTS))
        store.publish(encode_artifact(new_manifest(kind, art, spec, labels=["neg", "pos"]), art))
        after = eng.run(TEXTS, [eng.load(store.get(kind).artifact)] * len(TEXTS))
        for b, a in zip(before, after, strict=True):
            assert torch.equal(a, b), kind


# -- two processes publishing at once -----------------------------------------------------

CHILD = """
import sys
from pathlib import Path
from polyhead.store import Store
store = Store(sys.argv[1])
files = sorted(Path(sys.argv[2]).iterdir())
print("ready", flush=True)
sys.stdin.readline()
for f in files:
    store.publish(f.read_bytes())
print("done", flush=True)
"""


@pytest.mark.parametrize(("journal", "each"), [("wal", 200), ("delete", 50), ("postgresql", 200)])
def test_two_processes_publish_200_each(tmp_path, tiny_bert, journal, each, request) -> None:
    pg = journal == "postgresql"
    root = request.getfixturevalue("pg_url") if pg else str(tmp_path / "store")
    journal = None if pg else journal
    Store(root, journal=journal)
    dirs = [tmp_path / "a", tmp_path / "b"]
    expected = set()
    for p, folder in enumerate(dirs):
        folder.mkdir()
        for i in range(each):
            data = make_file(tiny_bert.spec, "shared", seed=p * 1000 + i)
            (folder / f"{i:03d}.polyhead").write_bytes(data)
            expected.add(hashlib.sha256(data).hexdigest())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "POLYHEAD_STORE_JOURNAL": journal or "wal"}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(d)], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=Path.cwd())
             for d in dirs]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:  # both start at once
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "done"
    store = Store(root, tiny_bert.spec, journal=journal)
    history = store.history("shared")
    assert {v.version for v in history} == expected
    assert [v.number for v in history] == list(range(1, 2 * each + 1))
    assert store.generation() == 2 * each and store.verify() == []
    if not pg:
        assert _file_journal(Path(root)) == journal


def _file_journal(root: Path) -> str:
    with contextlib.closing(sqlite3.connect(root / "catalog.sqlite")) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def test_journal_mode_setting(tmp_path, tiny_bert, monkeypatch) -> None:
    root = tmp_path / "store"
    store = Store(root, tiny_bert.spec)
    info = store.publish(make_file(tiny_bert.spec))
    store.close()
    assert _file_journal(root) == "wal"
    monkeypatch.setenv("POLYHEAD_STORE_JOURNAL", "DELETE")  # a network filesystem's store
    moved = Store(root, tiny_bert.spec)
    assert moved.catalog.journal == "delete" and moved.get("sst2").info == info
    assert _file_journal(root) == "delete" and not (root / "catalog.sqlite-wal").exists()
    moved.close()
    monkeypatch.setenv("POLYHEAD_STORE_JOURNAL", "nfs")
    with pytest.raises(StoreError, match=r"unknown store journal mode 'nfs'.*wal, delete"):
        Store(root)


def test_journal_switch_refused_while_open_elsewhere(tmp_path) -> None:
    root = tmp_path / "store"
    catalog = SqliteCatalog(root)
    catalog.generation()  # this connection holds the catalog open in WAL mode
    other = sqlite3.connect(root / "catalog.sqlite", timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError, match="cannot switch it to 'delete'"):
            _set_journal(other, "delete", wait_s=0.2)
    finally:
        other.close()
    assert catalog.generation() == 0 and _file_journal(root) == "wal"


# -- PEFT import --------------------------------------------------------------------------

def save_peft(base_dir: Path, out: Path, num_labels: int, seed: int = 0) -> peft.PeftModel:
    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels,
                                                              local_files_only=True)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                          modules_to_save=["classifier"], task_type="SEQ_CLS")
    model = peft.get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.save_pretrained(out)
    return model.eval()


def test_import_peft_folder(tmp_path, tiny_bert, tiny_bert_dir) -> None:
    folder = tmp_path / "adapter"
    model = save_peft(tiny_bert_dir, folder, num_labels=3)
    assert (folder / "adapter_model.safetensors").is_file()
    store = Store(tmp_path / "store", tiny_bert.spec)
    info = store.import_peft(folder, "nli", labels=["entail", "neutral", "contra"])
    got = store.get("nli")
    assert info.kind == "lora" and got.manifest.labels == ["entail", "neutral", "contra"]
    assert got.manifest.training["method"] == "peft-lora"
    assert got.manifest.training["hyperparameters"]["r"] == 4
    from polyhead.engine import Engine

    eng = Engine(tiny_bert)
    logits = eng.run(TEXTS, [eng.load(got.artifact)] * len(TEXTS))
    for x, g in zip(TEXTS, logits, strict=True):
        args = (x,) if isinstance(x, str) else x
        with torch.no_grad():
            ref = model(**tiny_bert.tokenizer(*args, return_tensors="pt")).logits[0]
        torch.testing.assert_close(g, ref, atol=1e-5, rtol=0)
    assert store.import_peft(folder, "nli2").aliases == ("latest",)
    assert store.get("nli2").manifest.labels == ["LABEL_0", "LABEL_1", "LABEL_2"]


def test_import_peft_refuses_other_base_shapes(tmp_path, tiny_bert, tiny_bert_dir) -> None:
    store = Store(tmp_path / "store", tiny_bert.spec)
    wide = tmp_path / "wide-bert"  # same vocabulary, hidden 48 instead of 32
    BertModel(BertConfig(vocab_size=tiny_bert.tokenizer.vocab_size, hidden_size=48,
                         num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                         max_position_embeddings=64)).save_pretrained(wide)
    save_peft(wide, tmp_path / "a-wide", num_labels=2)
    deep = tmp_path / "deep-bert"  # 3 layers instead of 2
    from tests.tiny import make_bert

    make_bert(deep, layers=3)
    save_peft(deep, tmp_path / "a-deep", num_labels=2)
    for name in ("a-wide", "a-deep"):
        with pytest.raises(ArtifactError) as e:
            store.import_peft(tmp_path / name, "x")
        assert e.value.check == "peft_base_model", str(e.value)
    assert store.list_tasks() == []


def test_import_peft_refuses_pickles_and_missing_files(tmp_path, tiny_bert) -> None:
    store = Store(tmp_path / "store", tiny_bert.spec)
    folder = tmp_path / "p"
    folder.mkdir()
    with pytest.raises(ArtifactError, match=r"adapter_config\.json"):
        store.import_peft(folder, "x")
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ArtifactError, match="pickle"):
        store.import_peft(folder, "x")
    with pytest.raises(StoreError, match="backbone"):
        Store(tmp_path / "store").import_peft(folder, "x")


def test_ingest_decodes_once_and_returns_the_artifact(sqlite_store, tiny_bert, monkeypatch) -> None:
    """An upload is validated and decoded once; the server's bank takes what ``ingest`` returns."""
    import polyhead.store.store as store_module

    calls = []
    original = store_module.decode_artifact

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(store_module, "decode_artifact", counting)
    data = make_file(tiny_bert.spec, "sst2", "lora", seed=5)
    stored = sqlite_store.ingest(data)
    assert len(calls) == 1 and stored.info == sqlite_store.resolve("sst2")
    again = sqlite_store.get("sst2")  # a reader decodes what it reads
    assert stored.manifest == again.manifest
    assert stored.artifact.tensors.keys() == again.artifact.tensors.keys()
    for name, t in stored.artifact.tensors.items():
        assert torch.equal(t, again.artifact.tensors[name])


def test_import_peft_bytes_equals_the_folder(tmp_path, tiny_bert, tiny_bert_dir) -> None:
    folder = tmp_path / "adapter"
    save_peft(tiny_bert_dir, folder, num_labels=2)
    store = Store(tmp_path / "store", tiny_bert.spec)
    from_folder = store.get("a", store.import_peft(folder, "a").version)
    from_bytes = store.import_peft_bytes((folder / "adapter_config.json").read_bytes(),
                                         (folder / "adapter_model.safetensors").read_bytes(), "b")
    for name, t in from_folder.artifact.tensors.items():
        assert torch.equal(t, from_bytes.artifact.tensors[name])
    with pytest.raises(ArtifactError, match="not valid JSON"):
        store.import_peft_bytes(b"{", (folder / "adapter_model.safetensors").read_bytes(), "c")
    with pytest.raises(ArtifactError, match="not a safetensors file"):
        store.import_peft_bytes(b"{}", b"\x00" * 16, "c")
