"""Server configuration: one validated dataclass, built from CLI flags or a Serve config's args."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from typing import Any

from polyhead.client.tokens import TOKEN_ENV, saved_token, token_file  # shared with the clients
from polyhead.client.tokens import TOKEN_FILE_ENV as TOKEN_FILE_ENV  # re-exported
from polyhead.engine.config import PRECISIONS  # torch-free: `polyhead --help` imports this module
from polyhead.engine.errors import ConfigError  # the one configuration error type (re-exported)
from polyhead.store.catalog import journal_mode
from polyhead.store.errors import StoreError
from polyhead.store.limits import Limits

INFERENCE_TOKEN_ENV = "POLYHEAD_INFERENCE_TOKEN"
MB = 1 << 20
BATCH_ORDERS = ("fair", "fifo")


@dataclasses.dataclass(frozen=True)
class Secret:
    """A token that never shows up in reprs, logs or the Ray dashboard."""

    value: str = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    store: str | None = None  # store root; None: $POLYHEAD_STORE or ./polyhead-store
    backbone: str | None = None  # local HF folder; None: the packaged all-MiniLM-L6-v2
    device: str = "cpu"  # "cpu", "cuda", "auto"
    # the backbone's arithmetic (polyhead.engine.precision): fp32 (exact), int8 (its Linear weights;
    # every task stays fp32), bf16 (where the device multiplies it natively)
    precision: str = "fp32"
    # the replica's glibc malloc keeps freed activations for the next batch instead of handing
    # them back to the kernel (polyhead.engine.memory): faster forwards, peak memory resident
    keep_freed_memory: bool = True
    token: Secret | None = None  # Registry bearer token; None: read $POLYHEAD_TOKEN
    inference_token: Secret | None = None  # Classify/Health token; None: $POLYHEAD_INFERENCE_TOKEN
    insecure: bool = False  # allow an open Registry when no token is configured
    max_batch_rows: int = 64  # rows per batch (one or more engine forwards)
    max_batch_tokens: int = 8192  # tokens per batch (before padding)
    batch_wait_ms: float = 2.0  # how long a batch waits to fill once the engine is free
    # the order batches take requests in: "fair" (weighted fair sharing of tokens between
    # tenants; one tenant alone is served in arrival order) or "fifo" (arrival order)
    batch_order: str = "fair"
    # rows per batch while two or more tenants wait ("fair" only): the longest a tenant
    # waits behind another's rows is one such batch; a lone tenant's use max_batch_rows
    fair_batch_rows: int = 8  # bench.fair_share: 8 against 16 on the packaged MiniLM, CPU
    max_inputs: int = 64  # inputs per Classify request
    max_text_chars: int = 20_000  # per text; longer texts are rejected, not truncated
    device_budget_mb: float = 512.0  # device tier: the slot tables allocate within it
    host_budget_mb: float = 2048.0  # host tier: decoded artifacts (device entries' copies too)
    max_artifact_mb: float = 256.0  # largest artifact Upload accepts
    torch_threads: int = 0  # intra-op threads; 0: the replica's CPUs
    seed_examples: bool = True  # publish polyhead/server/examples/*.polyhead into an empty store
    watch_interval_s: float = 0.05  # store generation poll (prefetch of new versions)
    max_outputs: int = 10_000  # largest head (labels) a publish may have
    max_lora_rank: int = 512  # largest LoRA rank a publish may have
    max_sparse_density: float = 1.0  # largest sparse density a publish may have
    delete_retention_days: float = 7.0  # a deleted task stays restorable this long
    max_request_mb: float = 8.0  # an HTTP body (checked before it is parsed)
    # an HTTP body not received whole within this is answered 408: until then it holds one
    # of the replica's max_ongoing_requests (a client that stops sending would hold it forever)
    http_body_timeout_s: float = 30.0
    stream_idle_s: float = 60.0  # a ClassifyStream with no message for this long is closed
    max_streams_per_client: int = 64  # ClassifyStream calls one client (address, API key) holds open
    # Training jobs (polyhead.server._private.scheduler): each holds job_cpus, job_gpus and
    # one unit of job_resource, the custom resource only training nodes have
    jobs: bool = True  # run the cluster's job scheduler (False: Training RPCs only queue)
    max_jobs: int = 2  # jobs running at once, cluster-wide
    max_jobs_per_tenant: int = 0  # jobs of one tenant running at once; 0: only max_jobs
    job_cpus: float = 1.0
    job_gpus: float = 0.0
    job_resource: str = "polyhead_train"
    job_lease_s: float = 30.0  # a job whose worker stops renewing for this long is retried
    max_dataset_mb: float = 64.0  # largest dataset UploadDataset takes
    max_tenant_datasets_mb: float = 1024.0  # what one tenant's uploaded datasets hold in all
    # an upload no unfinished job names is dropped this long after its last upload or use,
    # at the next upload of any tenant (inf: keep every upload)
    dataset_retention_days: float = 7.0

    def __post_init__(self) -> None:
        positive = ("max_batch_rows", "max_batch_tokens", "fair_batch_rows", "max_inputs",
                    "max_text_chars", "device_budget_mb",
                    "host_budget_mb", "max_artifact_mb", "watch_interval_s", "max_request_mb",
                    "http_body_timeout_s",
                    "stream_idle_s", "max_streams_per_client", "max_jobs", "job_cpus",
                    "job_lease_s", "max_dataset_mb", "max_tenant_datasets_mb", "dataset_retention_days")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_inputs > self.max_batch_rows:
            raise ConfigError(f"max_inputs ({self.max_inputs}) must be <= max_batch_rows "
                              f"({self.max_batch_rows}): a request never spans batches")
        if self.batch_order not in BATCH_ORDERS:
            raise ConfigError(f"batch_order {self.batch_order!r}: choose one of "
                              f"{', '.join(BATCH_ORDERS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.job_gpus < 0:
            raise ConfigError(f"job_gpus must be >= 0, got {self.job_gpus!r}")
        if self.max_jobs_per_tenant < 0:
            raise ConfigError(f"max_jobs_per_tenant must be >= 0 (0: no limit), got "
                              f"{self.max_jobs_per_tenant!r}")
        if self.batch_wait_ms < 0 or self.torch_threads < 0:
            raise ConfigError("batch_wait_ms and torch_threads must be >= 0")
        if not self.delete_retention_days >= 0:
            raise ConfigError(f"delete_retention_days must be >= 0, got {self.delete_retention_days!r}")
        self.limits()
        try:  # refused here, not by every replica that later opens the store
            journal_mode()
        except StoreError as e:
            raise ConfigError(str(e)) from e

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> ServerConfig:
        """From a Serve config's ``args`` (plain values); tokens become Secrets."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(args) - fields)
        if unknown:
            raise ConfigError(f"unknown server options {unknown}; known: {sorted(fields)}")
        kw = dict(args)
        for name in ("token", "inference_token"):
            if isinstance(kw.get(name), str):
                kw[name] = Secret(kw[name]) if kw[name] else None
        return cls(**kw)

    def limits(self) -> Limits:
        """The store's publish limits (ConfigError for a bad one)."""
        try:
            return Limits(self.max_outputs, self.max_lora_rank, self.max_sparse_density)
        except StoreError as e:
            raise ConfigError(str(e)) from e

    def registry_token(self) -> str | None:
        return _token(self.token, TOKEN_ENV)

    def inference_token_value(self) -> str | None:
        return _token(self.inference_token, INFERENCE_TOKEN_ENV)

    def check_auth(self) -> None:
        """Refuse an open Registry unless ``insecure`` was asked for."""
        if self.registry_token() is None and not self.insecure:
            raise ConfigError(f"no Registry token: set ${TOKEN_ENV} or pass --token "
                              "(or --insecure to run with the Registry open)")


def _token(secret: Secret | None, env: str) -> str | None:
    if secret is not None and secret.value:
        return secret.value
    return os.environ.get(env) or None


def generated_token() -> str:
    """The token in token_file(), created (readable by this user only) if there is none."""
    old = saved_token()
    if old:
        return old
    path = token_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
