"""Registry RPCs against the store (blocking; run in the replica's admin thread)."""

from __future__ import annotations

import json
from collections.abc import Callable

from polyhead.server._private.errors import InvalidInput
from polyhead.store import Store, StoredArtifact, TaskInfo, VersionInfo, validate_task_id
from polyhead.store.names import REF_RE, clip, is_ref
from polyhead.v1 import polyhead_pb2 as pb


def version_pb(v: VersionInfo) -> pb.VersionInfo:
    return pb.VersionInfo(task_id=v.task_id, version=v.version, number=v.number,
                          created_at=str(v.created_at), kind=v.kind, nbytes=v.nbytes,
                          aliases=sorted(v.aliases))


def task_pb(t: TaskInfo, numbers: dict[tuple[str, str], int]) -> pb.TaskInfo:
    """``numbers``: (task id, version) -> version number, for where each alias points (0: a
    version deleted since the task was read)."""
    return pb.TaskInfo(task_id=t.task_id, kind=t.kind, latest=version_pb(t.latest),
                       num_versions=t.num_versions, aliases=sorted(t.aliases),
                       alias_numbers={a: numbers.get((t.task_id, v), 0) for a, v in t.aliases.items()})


def task_id_of(text: str) -> str:
    if not text:
        raise InvalidInput("task_id: required")
    validate_task_id(text)
    return text


def ref_of(text: str, field: str = "version") -> str:
    """A version reference as a client sent it, refused before any lookup unless it could
    name a version (an alias, a version or its prefix, ``v3``)."""
    if not text:
        raise InvalidInput(f"{field}: required")
    if not is_ref(text):
        raise InvalidInput(f"{field}: {clip(text)} is not a version, prefix or alias "
                           f"(they match {REF_RE.pattern})")
    return text


def list_tasks(store: Store, visible: Callable[[str], bool] = lambda _: True) -> pb.ListTasksResponse:
    """The tasks ``visible`` says the caller sees (its namespace)."""
    tasks = [t for t in store.list_tasks() if visible(t.task_id)]
    numbers = {(v.task_id, v.version): v.number for v in store.versions() if visible(v.task_id)}
    return pb.ListTasksResponse(tasks=[task_pb(t, numbers) for t in tasks])


def get_task(store: Store, task_id: str) -> pb.TaskDetail:
    task_id = task_id_of(task_id)
    stored = store.get(task_id, "latest")
    info = next(t for t in store.list_tasks() if t.task_id == task_id)
    history = store.history(task_id)
    m = stored.manifest
    return pb.TaskDetail(info=task_pb(info, {(v.task_id, v.version): v.number for v in history}),
                         versions=[version_pb(v) for v in history],
                         labels=m.labels or [], regression=m.regression,
                         manifest_json=json.dumps(m.to_dict(), sort_keys=True, default=str))


def set_alias(store: Store, request: pb.SetAliasRequest) -> VersionInfo:
    task_id = task_id_of(request.task_id)
    ref = ref_of(request.version)  # the alias is checked by the store
    return store.set_alias(task_id, request.alias, ref)


def rollback(store: Store, request: pb.RollbackRequest) -> VersionInfo:
    task_id = task_id_of(request.task_id)
    ref = ref_of(request.version)
    return store.rollback(task_id, ref)


def import_peft(store: Store, request: pb.ImportPeftRequest) -> StoredArtifact:
    """The request's two files are parsed as they came (nothing written to disk)."""
    task_id = task_id_of(request.task_id)
    if not request.adapter_config or not request.adapter_model:
        raise InvalidInput("adapter_config and adapter_model: both files are required")
    return store.import_peft_bytes(bytes(request.adapter_config), bytes(request.adapter_model),
                                   task_id, labels=list(request.labels) or None,
                                   replace_kind=request.replace_kind)
