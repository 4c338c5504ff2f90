"""Helpers for the store tests (no tests here): good artifact files and crafted bad ones;
a real PostgreSQL server (the ``pgserver`` wheel) shared by the session, with a fresh
database per test; ``location``: a test runs once per catalog backend."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from polyhead.engine import TaskArtifact
from polyhead.engine.lora import LoraConfig
from polyhead.engine.sparse import SparseConfig
from polyhead.engine.spec import BackboneSpec
from polyhead.store import Manifest, encode_artifact, new_manifest
from polyhead.store.header import METADATA_KEY, tensors_digest

ST_NAMES = {torch.float32: "F32", torch.int64: "I64", torch.float16: "F16", torch.float64: "F64",
            torch.int32: "I32"}

# (kind, config, head type, outputs, regression): every kind, both head shapes, regression.
KINDS = [
    ("pasta", None, "linear", 2, False),
    ("prefix", None, "mlp", 3, False),
    ("lora", LoraConfig(r=4, alpha=8.0), "linear", 2, False),
    ("sparse", SparseConfig(density=0.05), "pooler", 4, False),
    ("bitfit", None, "linear", 1, True),
]


def labels_for(outputs: int, regression: bool) -> list[str] | None:
    return None if regression else [f"label{i}" for i in range(outputs)]


def make_artifact(spec: BackboneSpec, kind: str = "pasta", *, seed: int = 0, config: Any = None,
                  head_type: str = "linear", outputs: int = 2) -> TaskArtifact:
    return TaskArtifact.random(kind, spec, outputs, config=config, head_type=head_type, seed=seed)


def make_file(spec: BackboneSpec, task_id: str = "sst2", kind: str = "pasta", *, seed: int = 0,
              config: Any = None, head_type: str = "linear", outputs: int = 2,
              regression: bool = False, metrics: dict[str, Any] | None = None) -> bytes:
    art = make_artifact(spec, kind, seed=seed, config=config, head_type=head_type, outputs=outputs)
    manifest = new_manifest(task_id, art, spec, labels=labels_for(outputs, regression),
                            regression=regression, metrics=metrics or {"accuracy": 0.5 + seed / 1e6})
    return encode_artifact(manifest, art)


def good_parts(spec: BackboneSpec, kind: str = "pasta") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A valid manifest dict and tensors, for tests to spoil one thing at a time."""
    art = make_artifact(spec, kind)
    manifest = new_manifest("sst2", art, spec, labels=["neg", "pos"])
    return manifest.to_dict(), dict(art.tensors)


def craft(manifest: dict[str, Any] | None, tensors: dict[str, torch.Tensor], *,
          fix_hash: bool = True) -> bytes:
    """A safetensors file with this manifest dict (None: no manifest at all); with
    ``fix_hash`` its tensors_sha256 is made right, so that only the intended check fails."""
    if manifest is None:
        return safetensors.torch.save(tensors)
    manifest = dict(manifest)
    if fix_hash:
        manifest["tensors_sha256"] = tensors_digest(
            (n, ST_NAMES[t.dtype], tuple(t.shape), t.contiguous().numpy().data)
            for n, t in tensors.items())
    return safetensors.torch.save(tensors, metadata={METADATA_KEY: json.dumps(manifest)})


def manifest_of(data: bytes) -> Manifest:
    from polyhead.store.fileformat import decode_artifact

    return decode_artifact(data)[0]


# -- the two backends ------------------------------------------------------------------------

BACKENDS = ["sqlite", "postgresql"]
_databases = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A private PostgreSQL 16 (Unix socket only), started once per session (~2 s). Its data
    lives in its own /tmp folder: as root, pgserver runs PostgreSQL as user ``pgserver`` and
    opens every parent folder to it, which must not be pytest's private temp root. No fsync:
    these tests kill clients, never the machine, and the shared disk is slow."""
    import pgserver
    import psycopg

    server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="polyhead-pg-")) / "data",
                                 cleanup_mode="delete")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        for setting in ("fsync = off", "full_page_writes = off", "synchronous_commit = off"):
            conn.execute(f"ALTER SYSTEM SET {setting}")
        conn.execute("SELECT pg_reload_conf()")
    yield server
    server.cleanup()
    shutil.rmtree(server.pgdata.parent, ignore_errors=True)


def new_database(server: Any) -> str:
    """A fresh, empty database on ``server``; its URL."""
    import psycopg

    name = f"polyhead_test_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return str(server.get_uri(name))


def drop_database(server: Any, url: str) -> None:
    import psycopg

    name = url.split("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url(pg_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database (dropped after the test); the byte cache in the test's folder."""
    monkeypatch.setenv("POLYHEAD_STORE_CACHE", str(tmp_path / "blob-cache"))
    url = new_database(pg_server)
    yield url
    drop_database(pg_server, url)


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new store's location: a folder, or a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("pg_url"))


def is_pg(location: str) -> bool:
    return location.startswith("postgresql://")


def stored_blobs(catalog: Any) -> set[str]:
    """Versions whose bytes the backend holds (files, or rows of ``blobs``)."""
    if hasattr(catalog, "blob_dir"):
        return {p.name for p in catalog.blob_dir.glob("*/*")}
    return set(catalog._reading(lambda c: [v for (v,) in c.execute("SELECT version FROM blobs")]))


def damage(catalog: Any, version: str, *, remove: bool = False) -> None:
    """Flip the last byte of a version's stored bytes, or remove them."""
    if hasattr(catalog, "blob_path"):
        path = catalog.blob_path(version)
        if remove:
            path.unlink()
            return
        path.chmod(0o644)
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
        return
    if remove:
        catalog._writing(lambda c: c.execute("DELETE FROM blobs WHERE version = ?", (version,)))
        return
    catalog._writing(lambda c: c.execute(
        "UPDATE blobs SET data = set_byte(data, length(data) - 1, "
        "get_byte(data, length(data) - 1) # 1) WHERE version = ?", (version,)))
