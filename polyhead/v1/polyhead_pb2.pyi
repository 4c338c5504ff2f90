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

class DatasetColumns(_message.Message):
    __slots__ = ("text_col", "pair_col", "label_col", "no_header", "regression")
    TEXT_COL_FIELD_NUMBER: _ClassVar[int]
    PAIR_COL_FIELD_NUMBER: _ClassVar[int]
    LABEL_COL_FIELD_NUMBER: _ClassVar[int]
    NO_HEADER_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_FIELD_NUMBER: _ClassVar[int]
    text_col: str
    pair_col: str
    label_col: str
    no_header: bool
    regression: bool
    def __init__(self, text_col: _Optional[str] = ..., pair_col: _Optional[str] = ..., label_col: _Optional[str] = ..., no_header: _Optional[bool] = ..., regression: _Optional[bool] = ...) -> None: ...

class DatasetChunk(_message.Message):
    __slots__ = ("filename", "columns", "labels_from", "data")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FROM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    filename: str
    columns: DatasetColumns
    labels_from: str
    data: bytes
    def __init__(self, filename: _Optional[str] = ..., columns: _Optional[_Union[DatasetColumns, _Mapping]] = ..., labels_from: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("dataset_id", "nbytes", "rows", "labels", "format", "created_at", "inputs")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    nbytes: int
    rows: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    format: str
    created_at: str
    inputs: str
    def __init__(self, dataset_id: _Optional[str] = ..., nbytes: _Optional[int] = ..., rows: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., format: _Optional[str] = ..., created_at: _Optional[str] = ..., inputs: _Optional[str] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("task_id", "method", "train_dataset", "dev_dataset", "dev_fraction", "options", "metric", "replace_kind")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TRAIN_DATASET_FIELD_NUMBER: _ClassVar[int]
    DEV_DATASET_FIELD_NUMBER: _ClassVar[int]
    DEV_FRACTION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    REPLACE_KIND_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    method: str
    train_dataset: str
    dev_dataset: str
    dev_fraction: float
    options: _containers.ScalarMap[str, str]
    metric: str
    replace_kind: bool
    def __init__(self, task_id: _Optional[str] = ..., method: _Optional[str] = ..., train_dataset: _Optional[str] = ..., dev_dataset: _Optional[str] = ..., dev_fraction: _Optional[float] = ..., options: _Optional[_Mapping[str, str]] = ..., metric: _Optional[str] = ..., replace_kind: _Optional[bool] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "task_id", "method", "state", "created_at", "updated_at", "attempt", "reason", "version", "node", "train_dataset", "dev_dataset", "dev_fraction", "options_json", "version_number")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_DATASET_FIELD_NUMBER: _ClassVar[int]
    DEV_DATASET_FIELD_NUMBER: _ClassVar[int]
    DEV_FRACTION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task_id: str
    method: str
    state: str
    created_at: str
    updated_at: str
    attempt: int
    reason: str
    version: str
    node: str
    train_dataset: str
    dev_dataset: str
    dev_fraction: float
    options_json: str
    version_number: int
    def __init__(self, job_id: _Optional[str] = ..., task_id: _Optional[str] = ..., method: _Optional[str] = ..., state: _Optional[str] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ..., version: _Optional[str] = ..., node: _Optional[str] = ..., train_dataset: _Optional[str] = ..., dev_dataset: _Optional[str] = ..., dev_fraction: _Optional[float] = ..., options_json: _Optional[str] = ..., version_number: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("state", "limit")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    state: str
    limit: int
    def __init__(self, state: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_seq")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_seq: int
    def __init__(self, job_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "seq", "at", "kind", "node", "resources", "epoch", "train_loss", "metric", "metric_value", "step", "total_steps", "version", "version_number", "reason", "attempt")
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    METRIC_VALUE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    at: str
    kind: str
    node: str
    resources: _containers.ScalarMap[str, float]
    epoch: int
    train_loss: float
    metric: str
    metric_value: float
    step: int
    total_steps: int
    version: str
    version_number: int
    reason: str
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., at: _Optional[str] = ..., kind: _Optional[str] = ..., node: _Optional[str] = ..., resources: _Optional[_Mapping[str, float]] = ..., epoch: _Optional[int] = ..., train_loss: _Optional[float] = ..., metric: _Optional[str] = ..., metric_value: _Optional[float] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., version: _Optional[str] = ..., version_number: _Optional[int] = ..., reason: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class TenantInfo(_message.Message):
    __slots__ = ("tenant", "created_at", "max_tasks", "max_bytes", "tasks", "nbytes", "max_rows_in_flight", "weight", "dataset_bytes")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATASET_BYTES_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    created_at: str
    max_tasks: int
    max_bytes: int
    tasks: int
    nbytes: int
    max_rows_in_flight: int
    weight: float
    dataset_bytes: int
    def __init__(self, tenant: _Optional[str] = ..., created_at: _Optional[str] = ..., max_tasks: _Optional[int] = ..., max_bytes: _Optional[int] = ..., tasks: _Optional[int] = ..., nbytes: _Optional[int] = ..., max_rows_in_flight: _Optional[int] = ..., weight: _Optional[float] = ..., dataset_bytes: _Optional[int] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("tenant", "max_tasks", "max_bytes", "max_rows_in_flight", "weight")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    max_tasks: int
    max_bytes: int
    max_rows_in_flight: int
    weight: float
    def __init__(self, tenant: _Optional[str] = ..., max_tasks: _Optional[int] = ..., max_bytes: _Optional[int] = ..., max_rows_in_flight: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[TenantInfo]
    def __init__(self, tenants: _Optional[_Iterable[_Union[TenantInfo, _Mapping]]] = ...) -> None: ...

class DeleteTenantRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class DeleteTenantResponse(_message.Message):
    __slots__ = ("tenant", "keys_revoked")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    KEYS_REVOKED_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    keys_revoked: int
    def __init__(self, tenant: _Optional[str] = ..., keys_revoked: _Optional[int] = ...) -> None: ...

class SetQuotaRequest(_message.Message):
    __slots__ = ("tenant", "max_tasks", "max_bytes", "max_rows_in_flight", "weight")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    max_tasks: int
    max_bytes: int
    max_rows_in_flight: int
    weight: float
    def __init__(self, tenant: _Optional[str] = ..., max_tasks: _Optional[int] = ..., max_bytes: _Optional[int] = ..., max_rows_in_flight: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class KeyInfo(_message.Message):
    __slots__ = ("key_id", "tenant", "scopes", "created_at", "expires_at", "revoked_at", "state")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    tenant: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    created_at: str
    expires_at: str
    revoked_at: str
    state: str
    def __init__(self, key_id: _Optional[str] = ..., tenant: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., created_at: _Optional[str] = ..., expires_at: _Optional[str] = ..., revoked_at: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("tenant", "scopes", "expires_in_s")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    expires_in_s: float
    def __init__(self, tenant: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., expires_in_s: _Optional[float] = ...) -> None: ...

class CreateKeyResponse(_message.Message):
    __slots__ = ("info", "key")
    INFO_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    info: KeyInfo
    key: str
    def __init__(self, info: _Optional[_Union[KeyInfo, _Mapping]] = ..., key: _Optional[str] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyInfo, _Mapping]]] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("tenant", "since", "limit")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    since: str
    limit: int
    def __init__(self, tenant: _Optional[str] = ..., since: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("at", "key_id", "tenant", "rpc", "task_id", "version", "outcome")
    AT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    at: str
    key_id: str
    tenant: str
    rpc: str
    task_id: str
    version: str
    outcome: str
    def __init__(self, at: _Optional[str] = ..., key_id: _Optional[str] = ..., tenant: _Optional[str] = ..., rpc: _Optional[str] = ..., task_id: _Optional[str] = ..., version: _Optional[str] = ..., outcome: _Optional[str] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ...) -> None: ...
