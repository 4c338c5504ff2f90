"""Where a trained artifact goes: a .polyhead file, the local store, or a running server."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polyhead.engine import BackboneSpec, TaskArtifact
from polyhead.trainer.data import Dataset
from polyhead.trainer.run import TrainResult


class OutputError(RuntimeError):
    """The artifact could not be written, published or uploaded."""


@dataclasses.dataclass(frozen=True)
class Targets:
    out: Path | None = None
    publish: bool = False
    store: str | None = None  # a folder or a postgresql:// URL
    upload: str | None = None  # HOST:PORT
    token: str | None = None
    max_bytes: int | None = None  # the store's size cap (None: the store's default)
    replace_kind: bool = False  # publish even when the task's latest version is another kind

    def __post_init__(self) -> None:
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError(f"--max-upload-bytes must be >= 1, got {self.max_bytes}")
        if self.out is None and not self.publish and self.upload is None:
            raise ValueError("say where the artifact goes: --out FILE.polyhead, --publish "
                             "or --upload HOST:PORT")
        if self.out is not None and self.out.suffix != ".polyhead":
            raise ValueError(f"--out must end in .polyhead, got {self.out}")
        if self.upload is not None:
            from polyhead.client._common import check_address

            check_address(self.upload, "--upload")


def encode(task_id: str, result: TrainResult, data: Dataset, spec: BackboneSpec) -> bytes:
    from polyhead.store import encode_artifact, new_manifest

    artifact = result.artifact
    if artifact is None:
        raise ValueError("this run was trained with export=False: it has no artifact to encode")
    manifest = new_manifest(task_id, artifact, spec, labels=data.labels,
                            regression=data.regression,
                            training={**result.training.to_json(), "inputs": data.inputs},
                            metrics=result.metrics,
                            regression_scale=(dataclasses.asdict(result.scale)
                                              if result.scale is not None else None))
    return encode_artifact(manifest, artifact)


def check_upload(targets: Targets) -> None:
    """Before any training: --upload's server answers and takes the token. ListTasks needs
    the publish scope, as Upload does, so a run is not trained only to be refused at its end."""
    if targets.upload is None:
        return
    from polyhead.client import Client, PolyheadError, find_token
    from polyhead.client._common import unreachable_hint

    try:  # (its address was checked when the Targets were made)
        with Client(targets.upload, token=find_token(targets.token), timeout_s=30.0) as client:
            client.list_tasks()
    except PolyheadError as e:
        hint = unreachable_hint(targets.upload, e.code, e.details)
        raise OutputError(f"--upload {targets.upload}: {e} (checked before training; nothing was "
                          f"trained){'; ' + hint if hint else ''}") from e


def deliver(data: bytes, targets: Targets, spec: BackboneSpec,
            hint: str = "use a sparse method or a lower --density",
            probe: Callable[[TaskArtifact], None] | None = None,
            keep: Path | None = None) -> list[str]:
    """Write/publish/upload ``data``; one line per destination for the user. --out is
    written first, whatever its size; the store's cap decides only whether the artifact
    may be published or uploaded (``hint``: what to do when it is over). A publish or
    upload that fails never loses the trained artifact: without --out it is written to
    ``keep`` (or the first free name beside it) and the error says where."""
    from polyhead.store.paths import atomic_write

    lines = []
    if targets.out is not None:
        targets.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(targets.out, data)
        lines.append(f"wrote {targets.out} ({len(data):,} bytes)")
    try:
        lines += _send(data, targets, spec, hint, probe)
    except OutputError as e:
        saved = targets.out
        if saved is None and keep is not None:
            saved = _free_name(keep)
            atomic_write(saved, data)
        if saved is None:
            raise
        again = f"`polyhead upload {saved}` sends it" if targets.upload else \
            f"`polyhead store publish {saved}` publishes it"
        raise OutputError(f"{e}; the artifact is kept in {saved} ({len(data):,} bytes): {again}") from e
    return lines


def _send(data: bytes, targets: Targets, spec: BackboneSpec, hint: str,
          probe: Callable[[TaskArtifact], None] | None) -> list[str]:
    from polyhead.store.header import DEFAULT_MAX_BYTES

    lines = []
    cap = targets.max_bytes if targets.max_bytes is not None else DEFAULT_MAX_BYTES
    if (targets.publish or targets.upload) and len(data) > cap:
        raise OutputError(f"not published: the artifact is {len(data):,} bytes, over the "
                          f"store's cap of {cap:,}; raise --max-upload-bytes (and the "
                          f"server's cap), or {hint}")
    if targets.publish:
        from polyhead.store import Store
        from polyhead.store.errors import StoreError

        try:
            store = Store(targets.store, spec=spec, max_artifact_bytes=cap, probe=probe)
            info = store.publish(data, replace_kind=targets.replace_kind)
        except StoreError as e:
            raise OutputError(f"publish to the store failed: {e}") from e
        lines.append(f"published {_describe(info)}")
    if targets.upload is not None:
        from polyhead.client import Client, PolyheadError, describe_version, find_token

        try:  # the token as every client command finds it: --token, $POLYHEAD_TOKEN, saved
            with Client(targets.upload, token=find_token(targets.token)) as client:
                reply = client.upload(data, replace_kind=targets.replace_kind)
        except PolyheadError as e:
            raise OutputError(f"upload to {targets.upload} failed: {e}") from e
        lines.append(f"uploaded {describe_version(reply)} to {targets.upload}")
    return lines


def _free_name(path: Path) -> Path:
    """``path``, or ``<stem>-2<suffix>``, ``-3``...: the first that does not exist."""
    n, candidate = 1, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _describe(info: Any) -> str:
    fields = ("task_id", "version", "sha256")
    parts = [f"{f}={getattr(info, f)}" for f in fields if hasattr(info, f)]
    return " ".join(parts) or str(info)

