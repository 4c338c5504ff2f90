from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Input(_message.Message):
    __slots__ = ("text", "pair")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    text: str
    pair: str
    def __init__(self, text: _Optional[str] = ..., pair: _Optional[str] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("task_id", "version", "inputs", "truncate")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    version: str
    inputs: _containers.RepeatedCompositeFieldContainer[Input]
    truncate: bool
    def __init__(self, task_id: _Optional[str] = ..., version: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[Input, _Mapping]]] = ..., truncate: _Optional[bool] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("label", "label_index", "scores", "value", "truncated")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    label: str
    label_index: int
    scores: _containers.RepeatedScalarFieldContainer[float]
    value: float
    truncated: bool
    def __init__(self, label: _Optional[str] = ..., label_index: _Optional[int] = ..., scores: _Optional[_Iterable[float]] = ..., value: _Optional[float] = ..., truncated: _Optional[bool] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("task_id", "version", "version_number", "labels", "regression", "predictions", "replica")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    version: str
    version_number: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    regression: bool
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    replica: str
    def __init__(self, task_id: _Optional[str] = ..., version: _Optional[str] = ..., version_number: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., regression: _Optional[bool] = ..., predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., replica: _Optional[str] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResidentTask(_message.Message):
    __slots__ = ("task_id", "version", "tier", "nbytes", "age_s")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    version: str
    tier: str
    nbytes: int
    age_s: float
    def __init__(self, task_id: _Optional[str] = ..., version: _Optional[str] = ..., tier: _Optional[str] = ..., nbytes: _Optional[int] = ..., age_s: _Optional[float] = ...) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status", "backbone", "fingerprint", "device", "replica", "store_generation", "resident", "device_bytes", "device_budget_bytes", "batches", "batched_rows", "torch_threads", "forward_s", "host_bytes", "host_budget_bytes", "device_table_bytes", "precision")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    STORE_GENERATION_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    BATCHED_ROWS_FIELD_NUMBER: _ClassVar[int]
    TORCH_THREADS_FIELD_NUMBER: _ClassVar[int]
    FORWARD_S_FIELD_NUMBER: _ClassVar[int]
    HOST_BYTES_FIELD_NUMBER: _ClassVar[int]
    HOST_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_TABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    status: str
    backbone: str
    fingerprint: str
    device: str
    replica: str
    store_generation: int
    resident: _containers.RepeatedCompositeFieldContainer[ResidentTask]
    device_bytes: int
    device_budget_bytes: int
    batches: int
    batched_rows: int
    torch_threads: int
    forward_s: float
    host_bytes: int
    host_budget_bytes: int
    device_table_bytes: int
    precision: str
    def __init__(self, status: _Optional[str] = ..., backbone: _Optional[str] = ..., fingerprint: _Optional[str] = ..., device: _Optional[str] = ..., replica: _Optional[str] = ..., store_generation: _Optional[int] = ..., resident: _Optional[_Iterable[_Union[ResidentTask, _Mapping]]] = ..., device_bytes: _Optional[int] = ..., device_budget_bytes: _Optional[int] = ..., batches: _Optional[int] = ..., batched_rows: _Optional[int] = ..., torch_threads: _Optional[int] = ..., forward_s: _Optional[float] = ..., host_bytes: _Optional[int] = ..., host_budget_bytes: _Optional[int] = ..., device_table_bytes: _Optional[int] = ..., precision: _Optional[str] = ...) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("task_id", "version", "number", "created_at", "kind", "nbytes", "aliases")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    version: str
    number: int
    created_at: str
    kind: str
    nbytes: int
    aliases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task_id: _Optional[str] = ..., version: _Optional[str] = ..., number: _Optional[int] = ..., created_at: _Optional[str] = ..., kind: _Optional[str] = ..., nbytes: _Optional[int] = ..., aliases: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("task_id", "kind", "latest", "num_versions", "aliases", "alias_numbers")
    class AliasNumbersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    NUM_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    ALIAS_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: str
    latest: VersionInfo
    num_versions: int
    aliases: _containers.RepeatedScalarFieldContainer[str]
    alias_numbers: _containers.ScalarMap[str, int]
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[str] = ..., latest: _Optional[_Union[VersionInfo, _Mapping]] = ..., num_versions: _Optional[int] = ..., aliases: _Optional[_Iterable[str]] = ..., alias_numbers: _Optional[_Mapping[str, int]] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("artifact", "replace_kind")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    REPLACE_KIND_FIELD_NUMBER: _ClassVar[int]
    artifact: bytes
    replace_kind: bool
    def __init__(self, artifact: _Optional[bytes] = ..., replace_kind: _Optional[bool] = ...) -> None: ...

class ImportPeftRequest(_message.Message):
    __slots__ = ("task_id", "adapter_config", "adapter_model", "labels", "replace_kind")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_MODEL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REPLACE_KIND_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    adapter_config: bytes
    adapter_model: bytes
    labels: _containers.RepeatedScalarFieldContainer[str]
    replace_kind: bool
    def __init__(self, task_id: _Optional[str] = ..., adapter_config: _Optional[bytes] = ..., adapter_model: _Optional[bytes] = ..., labels: _Optional[_Iterable[str]] = ..., replace_kind: _Optional[bool] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class TaskDetail(_message.Message):
    __slots__ = ("info", "versions", "labels", "regression", "manifest_json")
    INFO_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    info: TaskInfo
    versions: _containers.RepeatedCompositeFieldContainer[VersionInfo]
    labels: _containers.RepeatedScalarFieldContainer[str]
    regression: bool
    manifest_json: str
    def __init__(self, info: _Optional[_Union[TaskInfo, _Mapping]] = ..., versions: _Optional[_Iterable[_Union[VersionInfo, _Mapping]]] = ..., labels: _Optional[_Iterable[str]] = ..., regression: _Optional[bool] = ..., manifest_json: _Optional[str] = ...) -> None: ...

class SetAliasRequest(_message.Message):
    __slots__ = ("task_id", "alias", "version")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    alias: str
    version: str
    def __init__(self, task_id: _Optional[str] = ..., alias: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("task_id", "version")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    version: str
    def __init__(self, task_id: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DeleteTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class DeleteTaskResponse(_message.Message):
    __slots__ = ("task_id", "expires_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    expires_at: str
    def __init__(self, task_id: _Optional[str] = ..., expires_at: _Optional[str] = ...) -> None: ...

class RestoreTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...
