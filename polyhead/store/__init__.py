"""Artifacts at rest: the `*.polyhead` file format, its validation, and the versioned store.

    data = encode_artifact(new_manifest(task_id, artifact, spec, labels=[...]), artifact)
    store = Store(location, spec)      # a folder or postgresql://...; default $POLYHEAD_STORE
                                       # or ./polyhead-store
    info = store.publish(data)         # validated; a new immutable version; latest moves
    got = store.get(task_id)           # or a version (>= 8 hex chars), an alias, "v3"

Modules: header (safetensors container, no torch), manifest, fileformat (encode/decode:
every check, each an ArtifactError with a stable ``check`` name), names (ids, refs),
catalog (the catalog protocol, no torch) with its two backends, sqlite (SQLite index +
content-addressed blob files) and pg (PostgreSQL: rows and bytes, NOTIFY on change), sql
(the queries both run), cache (a replica's local bytes), store (catalog + validation),
peft_folder, cli. Names here are imported on first use, so that catalog-only tools
(``polyhead store list``) never import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyhead._lazy import lazy_exports

if TYPE_CHECKING:
    from polyhead.store.catalog import Catalog, open_catalog
    from polyhead.store.errors import AmbiguousRefError, NotFoundError, StoreError, StoreUnavailable
    from polyhead.store.fileformat import decode_artifact, encode_artifact, load_artifact, save_artifact
    from polyhead.store.header import DEFAULT_MAX_BYTES
    from polyhead.store.manifest import Manifest, new_manifest, validate_task_id
    from polyhead.store.sql import TaskInfo, VersionInfo
    from polyhead.store.store import Store, StoredArtifact

_WHERE = {
    "Catalog": ".catalog", "open_catalog": ".catalog",
    "TaskInfo": ".sql", "VersionInfo": ".sql",
    "AmbiguousRefError": ".errors", "KindChangeError": ".errors",
    "NotFoundError": ".errors", "StoreError": ".errors",
    "StoreUnavailable": ".errors",
    "decode_artifact": ".fileformat", "encode_artifact": ".fileformat",
    "load_artifact": ".fileformat", "save_artifact": ".fileformat",
    "DEFAULT_MAX_BYTES": ".header",
    "Manifest": ".manifest", "new_manifest": ".manifest",
    "validate_task_id": ".manifest",
    "Store": ".store", "StoredArtifact": ".store",
}
__all__ = [
    "DEFAULT_MAX_BYTES", "AmbiguousRefError", "Catalog", "KindChangeError", "Manifest",
    "NotFoundError", "Store",
    "StoreError", "StoreUnavailable", "StoredArtifact", "TaskInfo", "VersionInfo", "decode_artifact",
    "encode_artifact",
    "load_artifact", "new_manifest", "open_catalog", "save_artifact", "validate_task_id",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
