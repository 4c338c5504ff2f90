"""The artifact store: a catalog (either backend) plus validation of everything that goes in
or comes out. An upload is decoded once: ``ingest`` returns the artifact it validated."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from polyhead.engine.artifact import TaskArtifact
from polyhead.engine.errors import ArtifactError
from polyhead.engine.peft_io import artifact_from_peft
from polyhead.engine.spec import BackboneSpec
from polyhead.store.catalog import (
    DEFAULT_RETENTION_S,
    ChangeFeed,
    DeletedTask,
    TaskInfo,
    VersionInfo,
    open_catalog,
)
from polyhead.store.errors import StoreError
from polyhead.store.fileformat import decode_artifact, encode_artifact
from polyhead.store.header import DEFAULT_MAX_BYTES
from polyhead.store.limits import Limits
from polyhead.store.manifest import Manifest, new_manifest, validate_task_id
from polyhead.store.names import LATEST
from polyhead.store.peft_folder import check_modules, parse_peft, read_peft_folder, training_record

Probe = Callable[[TaskArtifact], None]  # raises ArtifactError for an artifact not to publish


@dataclasses.dataclass(frozen=True)
class StoredArtifact:
    info: VersionInfo
    manifest: Manifest
    artifact: TaskArtifact


class Store:
    """Versions of task artifacts in the catalog at ``location`` (a folder or a
    ``postgresql://`` URL; see ``store.catalog.open_catalog``). With ``spec``, every artifact
    published or read is checked against that backbone (shapes and fingerprint); without,
    structure only. Every publish is checked against ``limits`` and, with ``probe``, run
    by it (a forward on the backbone) before it goes in; a delete is restorable for
    ``retention_s`` seconds."""

    def __init__(self, location: str | os.PathLike[str] | None = None, spec: BackboneSpec | None = None,
                 *, max_artifact_bytes: int = DEFAULT_MAX_BYTES, journal: str | None = None,
                 cache: str | os.PathLike[str] | None = None, create: bool = True,
                 limits: Limits | None = None, probe: Probe | None = None,
                 retention_s: float = DEFAULT_RETENTION_S) -> None:
        self.catalog = open_catalog(location, journal=journal, create=create, cache=cache)
        self.spec = spec
        self.max_artifact_bytes = max_artifact_bytes
        self.limits = limits or Limits()
        self.probe = probe
        self.retention_s = retention_s

    @property
    def location(self) -> str:
        return self.catalog.location

    # -- in: validated once, decoded once ---------------------------------------------------

    def ingest(self, data: bytes, *, replace_kind: bool = False,
               may_write: Callable[[str], None] | None = None) -> StoredArtifact:
        """Validate (limits and probe too), atomically add a version and move the task's
        ``latest`` to it; the decoded artifact comes back with its version (a server loads
        it without a re-read). A task changes kind only with ``replace_kind``.
        ``may_write(task_id)`` raises for a task the publisher may not write (its tenant's
        namespace); the tenant's quotas are checked in the catalog's transaction."""
        manifest, artifact = decode_artifact(data, self.spec, max_bytes=self.max_artifact_bytes)
        if may_write is not None:
            may_write(manifest.task_id)
        self.limits.check(artifact.measures())
        if self.probe is not None:
            self.probe(artifact)
        info = self.catalog.add_version(manifest.task_id, data, manifest.kind,
                                        replace_kind=replace_kind)
        return StoredArtifact(info, manifest, artifact)

    def publish(self, data: bytes, *, replace_kind: bool = False) -> VersionInfo:
        """``ingest`` for callers that need only the version."""
        return self.ingest(data, replace_kind=replace_kind).info

    def import_peft(self, folder: str | os.PathLike[str], task_id: str,
                    labels: list[str] | None = None, *, replace_kind: bool = False) -> VersionInfo:
        """Publish a PEFT LoRA folder as a ``lora`` artifact (see ``import_peft_bytes``)."""
        self._need_spec()
        state, config = read_peft_folder(Path(folder), self.max_artifact_bytes)
        return self._import_peft(state, config, task_id, labels, replace_kind).info

    def import_peft_bytes(self, adapter_config: bytes, adapter_model: bytes, task_id: str,
                          labels: list[str] | None = None, *,
                          replace_kind: bool = False) -> StoredArtifact:
        """Publish a PEFT adapter given as its two files' bytes (adapter_config.json,
        adapter_model.safetensors). Without ``labels``, a 1-output classifier is a
        regression task (as in transformers), else labels are LABEL_<i>."""
        self._need_spec()
        state, config = parse_peft(adapter_config, adapter_model, self.max_artifact_bytes)
        return self._import_peft(state, config, task_id, labels, replace_kind)

    def _import_peft(self, state: dict[str, Tensor], config: dict[str, Any], task_id: str,
                     labels: list[str] | None, replace_kind: bool) -> StoredArtifact:
        spec = self._need_spec()
        validate_task_id(task_id)
        check_modules(state, spec)
        artifact = artifact_from_peft(state, config, spec)
        outputs = artifact.head.num_outputs
        regression = labels is None and outputs == 1
        if labels is None and not regression:
            labels = [f"LABEL_{i}" for i in range(outputs)]
        manifest = new_manifest(task_id, artifact, spec, labels=labels, regression=regression,
                                training=training_record(config))
        return self.ingest(encode_artifact(manifest, artifact), replace_kind=replace_kind)

    def _need_spec(self) -> BackboneSpec:
        if self.spec is None:
            raise StoreError("importing a PEFT adapter needs the backbone: Store(location, spec=...)")
        return self.spec

    # -- out --------------------------------------------------------------------------------

    def get(self, task_id: str, ref: str = LATEST) -> StoredArtifact:
        """A version's manifest and artifact, checked again on the way out."""
        info, data = self.catalog.read_bytes(task_id, ref)
        manifest, artifact = decode_artifact(data, self.spec,
                                             max_bytes=max(len(data), self.max_artifact_bytes))
        if manifest.task_id != info.task_id:
            raise StoreError(f"version {info.short} of {info.task_id!r} holds task "
                             f"{manifest.task_id!r}; run `polyhead store verify`")
        return StoredArtifact(info, manifest, artifact)

    def verify(self) -> list[str]:
        """The catalog's checks, and every version decoded and checked against the backbone."""
        return self.catalog.verify(self._check_blob)

    def _check_blob(self, info: VersionInfo, data: bytes) -> list[str]:
        try:
            manifest, _ = decode_artifact(data, self.spec, max_bytes=len(data))
        except ArtifactError as e:
            return [f"invalid artifact: {e}"]
        problems = []
        if manifest.task_id != info.task_id:
            problems.append(f"blob holds task {manifest.task_id!r}")
        if manifest.kind != info.kind:
            problems.append(f"blob holds kind {manifest.kind!r}, catalog says {info.kind!r}")
        return problems

    # -- the catalog's own operations ---------------------------------------------------------

    def generation(self) -> int:
        return self.catalog.generation()

    def watch(self, poll_s: float = 0.05) -> ChangeFeed:
        return self.catalog.watch(poll_s)

    def resolve(self, task_id: str, ref: str = LATEST) -> VersionInfo:
        return self.catalog.resolve(task_id, ref)

    def read_bytes(self, task_id: str, ref: str = LATEST) -> tuple[VersionInfo, bytes]:
        return self.catalog.read_bytes(task_id, ref)

    def history(self, task_id: str) -> list[VersionInfo]:
        return self.catalog.history(task_id)

    def list_tasks(self) -> list[TaskInfo]:
        return self.catalog.list_tasks()

    def versions(self) -> list[VersionInfo]:
        return self.catalog.versions()

    def set_alias(self, task_id: str, alias: str, version: str) -> VersionInfo:
        return self.catalog.set_alias(task_id, alias, version)

    def rollback(self, task_id: str, version: str) -> VersionInfo:
        return self.catalog.rollback(task_id, version)

    def remove_alias(self, task_id: str, alias: str) -> None:
        self.catalog.remove_alias(task_id, alias)

    def delete(self, task_id: str) -> DeletedTask:
        """Restorable (``restore``) for the store's ``retention_s``; ``gc`` purges it after."""
        return self.catalog.delete(task_id, self.retention_s)

    def restore(self, task_id: str) -> VersionInfo:
        return self.catalog.restore(task_id)

    def deleted(self) -> list[DeletedTask]:
        return self.catalog.deleted()

    def gc(self) -> list[str]:
        return self.catalog.gc()

    def close(self) -> None:
        self.catalog.close()
