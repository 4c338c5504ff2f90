"""The artifact store: the catalog plus validation of everything that goes in or comes out."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from methods.artifact import TaskArtifact
from methods.errors import ArtifactError
from methods.peft_io import artifact_from_peft
from methods.spec import BackboneSpec
from store.catalog import Catalog, VersionInfo
from store.errors import StoreError
from store.fileformat import decode_artifact, encode_artifact
from store.header import DEFAULT_MAX_BYTES
from store.manifest import Manifest, new_manifest, validate_task_id
from store.names import LATEST
from store.peft_folder import check_modules, read_peft_folder, training_record


@dataclasses.dataclass(frozen=True)
class StoredArtifact:
    info: VersionInfo
    manifest: Manifest
    artifact: TaskArtifact


class Store(Catalog):
    """Versions of task artifacts. With ``spec``, every artifact published or read is
    checked against that backbone (shapes and fingerprint); without, structure only."""

    def __init__(self, root: str | os.PathLike[str] | None = None, spec: BackboneSpec | None = None,
                 *, max_artifact_bytes: int = DEFAULT_MAX_BYTES, journal: str | None = None) -> None:
        super().__init__(root, journal)
        self.spec = spec
        self.max_artifact_bytes = max_artifact_bytes

    def publish(self, data: bytes) -> VersionInfo:
        """Validate, then atomically add a version and move the task's ``latest`` to it."""
        manifest, _ = decode_artifact(data, self.spec, max_bytes=self.max_artifact_bytes)
        return self.add_version(manifest.task_id, data, manifest.kind)

    def publish_artifact(self, manifest: Manifest, artifact: TaskArtifact) -> VersionInfo:
        return self.publish(encode_artifact(manifest, artifact))

    def get(self, task_id: str, ref: str = LATEST) -> StoredArtifact:
        """A version's manifest and artifact, checked again on the way out."""
        info, data = self.read_bytes(task_id, ref)
        manifest, artifact = decode_artifact(data, self.spec,
                                             max_bytes=max(len(data), self.max_artifact_bytes))
        if manifest.task_id != info.task_id:
            raise StoreError(f"version {info.short} of {info.task_id!r} holds task "
                             f"{manifest.task_id!r}; run `polyhead store verify`")
        return StoredArtifact(info, manifest, artifact)

    def import_peft(self, folder: str | os.PathLike[str], task_id: str,
                    labels: list[str] | None = None) -> VersionInfo:
        """Publish a PEFT LoRA folder as a ``lora`` artifact. Without ``labels``, a 1-output
        classifier is a regression task (as in transformers), else labels are LABEL_<i>."""
        if self.spec is None:
            raise StoreError("importing a PEFT adapter needs the backbone: Store(root, spec=...)")
        validate_task_id(task_id)
        state, config = read_peft_folder(Path(folder), self.max_artifact_bytes)
        check_modules(state, self.spec)
        artifact = artifact_from_peft(state, config, self.spec)
        outputs = artifact.head.num_outputs
        regression = labels is None and outputs == 1
        if labels is None and not regression:
            labels = [f"LABEL_{i}" for i in range(outputs)]
        manifest = new_manifest(task_id, artifact, self.spec, labels=labels, regression=regression,
                                training=training_record(config))
        return self.publish(encode_artifact(manifest, artifact))

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
