"""A small synchronous Python client for the Polyhead gRPC services.

Retry policy: calls that are safe to repeat (Classify, Health, ListTasks, GetTask, SetAlias,
Rollback, and Upload, whose versions are content-addressed) are retried when the server
answers UNAVAILABLE (no replica reachable, e.g. one restarting) or RESOURCE_EXHAUSTED (Serve
back-pressure); read-only calls (Classify, Health, ListTasks, GetTask) also on INTERNAL,
which the server never returns for bad input, only for faults such as a replica dying
under the request. Up to ``retries`` more attempts, sleeping ``backoff_s * 2**attempt``
(capped at ``max_backoff_s``, full jitter) between them, all within the call's
``timeout_s``. ImportPeft and DeleteTask are never retried. Every other status raises
PolyheadError at once.
"""

from __future__ import annotations

import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from polyhead.v1 import polyhead_pb2 as pb
from polyhead.v1 import polyhead_pb2_grpc as pb_grpc

RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
READ_RETRY_CODES = RETRY_CODES | {grpc.StatusCode.INTERNAL}
MAX_MESSAGE = 512 << 20
DATASET_CHUNK = 1 << 20  # UploadDataset's message size (under the server's message limit)
T = TypeVar("T")
TextInput = str | tuple[str, str]


class PolyheadError(Exception):
    """A call failed with a gRPC status; ``code`` is the grpc.StatusCode. ``input_index``:
    in ``classify_stream``, the 0-based index (among all the inputs) of the input the server
    refused, whose problem ``details`` then gives (e.g. "text: 20001 characters; ...")."""

    def __init__(self, code: grpc.StatusCode, details: str, input_index: int | None = None) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details, self.input_index = code, details, input_index


# A stream error naming one input: "message 9: inputs[11].text: empty text"
_STREAM_INPUT = re.compile(r"message \d+: inputs\[(\d+)\](?:\.|: )?(.*)", re.DOTALL)


class PolyheadClient:
    """``tls``: connect over TLS, checking the server's certificate against the system's
    roots, or against ``ca`` (PEM bytes or a file; giving one implies TLS). Polyhead's
    server speaks plaintext gRPC: TLS ends in front of it (a Gateway, an Ingress, a mesh
    sidecar), so this is how a client outside the cluster keeps the token off the wire."""

    def __init__(self, address: str = "localhost:9000", token: str | None = None, *,
                 retries: int = 4, backoff_s: float = 0.1, max_backoff_s: float = 2.0,
                 timeout_s: float = 60.0, tls: bool = False, ca: bytes | str | Path | None = None
                 ) -> None:
        self.address = address
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.timeout_s = timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        opts = [("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                # a connection of its own: gRPC otherwise shares one per target across a
                # process's channels, and every client would pin to the same server pod
                ("grpc.use_local_subchannel_pool", 1)]
        if tls or ca is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=read_ca(ca))
            self._channel = grpc.secure_channel(address, creds, options=opts)
        else:
            self._channel = grpc.insecure_channel(address, options=opts)
        self.tls = tls or ca is not None
        self._inference = pb_grpc.InferenceStub(self._channel)
        self._registry = pb_grpc.RegistryStub(self._channel)
        self._training = pb_grpc.TrainingStub(self._channel)

    # -- Inference -------------------------------------------------------------------------

    def classify(self, task_id: str, inputs: Sequence[TextInput] | TextInput,
                 version: str | None = None, truncate: bool = False) -> list[dict[str, Any]]:
        """One dict per input: label, label_index, scores {label: p} (or value for regression),
        truncated, and the version (and its number) that served it. ``truncate``: cut texts
        over the server's character limit (marked truncated) instead of failing."""
        return rows_of(self.classify_raw(task_id, inputs, version, truncate))

    def classify_raw(self, task_id: str, inputs: Sequence[TextInput] | TextInput,
                     version: str | None = None, truncate: bool = False) -> pb.ClassifyResponse:
        req = pb.ClassifyRequest(task_id=task_id, version=version or "", inputs=to_inputs(inputs),
                                 truncate=truncate)
        return self._call(self._inference.Classify, req, retry=READ_RETRY_CODES)

    def classify_stream(self, task_id: str, inputs: Iterable[TextInput],
                        version: str | None = None, chunk: int = 32,
                        truncate: bool = False) -> Iterator[dict[str, Any]]:
        """Any number of inputs over one ClassifyStream call, ``chunk`` per message: one dict
        per input (as ``classify``), in order, as they come back. gRPC's flow control keeps
        only a few messages in flight. Where the stream breaks with a status the retry
        policy allows (a replica restarting), a new stream resends the messages not yet
        answered: no input is lost or answered twice. Where the server refuses an input, the
        inputs before it in its message are still answered, then PolyheadError says which
        input (``input_index``)."""
        pending: deque[pb.ClassifyRequest] = deque()  # sent, not yet answered
        failed: list[Exception] = []  # the inputs' own error (a bad line): raised at the end

        def chunks() -> Iterator[list[TextInput]]:
            buf: list[TextInput] = []
            try:
                for x in inputs:
                    buf.append(x)
                    if len(buf) == chunk:
                        yield buf
                        buf = []
            except Exception as e:  # end the stream; the inputs before it are still answered
                failed.append(e)
            if buf:
                yield buf

        source = chunks()

        def requests() -> Iterator[pb.ClassifyRequest]:
            yield from list(pending)
            for c in source:
                req = pb.ClassifyRequest(task_id=task_id, version=version or "",
                                         inputs=to_inputs(c), truncate=truncate)
                pending.append(req)
                yield req

        attempt = answered = 0
        while True:
            try:
                for res in self._inference.ClassifyStream(requests(), metadata=self._metadata):
                    pending.popleft()
                    attempt = 0
                    answered += len(res.predictions)
                    yield from rows_of(res)
                if failed:
                    raise failed[0]
                return
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
                if (m := _STREAM_INPUT.fullmatch(details)) and pending:
                    yield from self._before(pending[0], int(m.group(1)))
                    raise PolyheadError(code, m.group(2),
                                        answered + int(m.group(1))) from None
                if code not in READ_RETRY_CODES or attempt >= self.retries:
                    raise PolyheadError(code, details) from None
            time.sleep(random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** attempt)))
            attempt += 1

    def _before(self, request: pb.ClassifyRequest, bad: int) -> Iterator[dict[str, Any]]:
        """The answers to a refused message's inputs before its bad one (a unary call)."""
        if bad > 0:
            req = pb.ClassifyRequest(task_id=request.task_id, version=request.version,
                                     inputs=request.inputs[:bad], truncate=request.truncate)
            yield from rows_of(self._call(self._inference.Classify, req, retry=READ_RETRY_CODES))

    def health(self) -> dict[str, Any]:
        return as_dict(self._call(self._inference.Health, pb.HealthRequest(),
                                  retry=READ_RETRY_CODES))

    # -- Registry --------------------------------------------------------------------------

    def upload(self, data: bytes, replace_kind: bool = False) -> dict[str, Any]:
        req = pb.UploadRequest(artifact=data, replace_kind=replace_kind)
        return as_dict(self._call(self._registry.Upload, req, retry=RETRY_CODES))

    def import_peft(self, folder: str | Path, task_id: str,
                    labels: Sequence[str] | None = None, replace_kind: bool = False) -> dict[str, Any]:
        folder = Path(folder)
        req = pb.ImportPeftRequest(
            task_id=task_id, labels=list(labels or ()), replace_kind=replace_kind,
            adapter_config=(folder / "adapter_config.json").read_bytes(),
            adapter_model=(folder / "adapter_model.safetensors").read_bytes())
        return as_dict(self._call(self._registry.ImportPeft, req, retry=frozenset()))

    def list_tasks(self) -> list[dict[str, Any]]:
        res = self._call(self._registry.ListTasks, pb.ListTasksRequest(), retry=READ_RETRY_CODES)
        return [as_dict(t) for t in res.tasks]

    def get_task(self, task_id: str) -> dict[str, Any]:
        res = self._call(self._registry.GetTask, pb.GetTaskRequest(task_id=task_id),
                         retry=READ_RETRY_CODES)
        return as_dict(res)

    def set_alias(self, task_id: str, alias: str, version: str) -> dict[str, Any]:
        req = pb.SetAliasRequest(task_id=task_id, alias=alias, version=version)
        return as_dict(self._call(self._registry.SetAlias, req, retry=RETRY_CODES))

    def rollback(self, task_id: str, version: str) -> dict[str, Any]:
        req = pb.RollbackRequest(task_id=task_id, version=version)
        return as_dict(self._call(self._registry.Rollback, req, retry=RETRY_CODES))

    def delete(self, task_id: str) -> dict[str, Any]:
        req = pb.DeleteTaskRequest(task_id=task_id)
        return as_dict(self._call(self._registry.DeleteTask, req, retry=frozenset()))

    def restore(self, task_id: str) -> dict[str, Any]:
        """Bring back a deleted task within its retention; its latest version."""
        req = pb.RestoreTaskRequest(task_id=task_id)
        return as_dict(self._call(self._registry.RestoreTask, req, retry=frozenset()))

    # -- Training --------------------------------------------------------------------------

    def upload_dataset(self, data: bytes, filename: str, *, text_col: str = "", pair_col: str = "",
                       label_col: str = "", no_header: bool = False, regression: bool = False,
                       labels_from: str = "") -> dict[str, Any]:
        """Send a dataset file in DATASET_CHUNK pieces; its DatasetInfo (an identical file
        and flags give the same id, so a retry is safe)."""
        columns = pb.DatasetColumns(text_col=text_col, pair_col=pair_col, label_col=label_col,
                                    no_header=no_header, regression=regression)

        def chunks() -> Iterator[pb.DatasetChunk]:
            yield pb.DatasetChunk(filename=filename, columns=columns, labels_from=labels_from,
                                  data=data[:DATASET_CHUNK])
            for at in range(DATASET_CHUNK, len(data), DATASET_CHUNK):
                yield pb.DatasetChunk(data=data[at:at + DATASET_CHUNK])

        def send(_: object, **kw: Any) -> pb.DatasetInfo:
            return self._training.UploadDataset(chunks(), **kw)

        return as_dict(self._call(send, pb.GetJobRequest(), retry=RETRY_CODES))

    def create_job(self, task_id: str, method: str, train_dataset: str, *, dev_dataset: str = "",
                   dev_fraction: float = 0.0, options: dict[str, str] | None = None,
                   metric: str = "", replace_kind: bool = False) -> dict[str, Any]:
        req = pb.CreateJobRequest(task_id=task_id, method=method, train_dataset=train_dataset,
                                  dev_dataset=dev_dataset, dev_fraction=dev_fraction,
                                  options={k: str(v) for k, v in (options or {}).items()},
                                  metric=metric, replace_kind=replace_kind)
        return as_dict(self._call(self._training.CreateJob, req, retry=frozenset()))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return as_dict(self._call(self._training.GetJob, pb.GetJobRequest(job_id=job_id),
                                  retry=READ_RETRY_CODES))

    def list_jobs(self, state: str = "", limit: int = 0) -> list[dict[str, Any]]:
        res = self._call(self._training.ListJobs, pb.ListJobsRequest(state=state, limit=limit),
                         retry=READ_RETRY_CODES)
        return [as_dict(j) for j in res.jobs]

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return as_dict(self._call(self._training.CancelJob, pb.CancelJobRequest(job_id=job_id),
                                  retry=RETRY_CODES))

    def watch_job(self, job_id: str, after_seq: int = 0,
                  timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """The job's events up to its last one (published, failed, cancelled); a stream cut
        by a restarting server is opened again after the last event seen."""
        seq = after_seq
        while True:
            stream = self._training.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=seq),
                                             timeout=timeout_s, metadata=self._metadata)
            try:
                for event in stream:
                    seq = event.seq
                    yield as_dict(event)
                return
            except grpc.RpcError as e:
                if e.code() not in RETRY_CODES:
                    raise PolyheadError(e.code(), e.details() or "") from None
                time.sleep(self.backoff_s)

    # -- plumbing --------------------------------------------------------------------------

    def _call(self, method: Callable[..., T], request: Message, *,
              retry: frozenset[grpc.StatusCode]) -> T:
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                return method(request, timeout=max(remaining, 0.001), metadata=self._metadata)
            except grpc.RpcError as e:
                code = e.code()
                pause = random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** attempt))
                if (code not in retry or attempt >= self.retries
                        or time.monotonic() + pause >= deadline):
                    raise PolyheadError(code, e.details() or "") from None
            attempt += 1
            time.sleep(pause)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PolyheadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_version(v: dict[str, Any]) -> str:
    """One line for a published version (a VersionInfo as ``as_dict`` gives it), as
    ``polyhead upload`` and ``polyhead train --upload`` both print it."""
    return f"{v['task_id']} v{v['number']} {v['version']} ({v['kind']}, {v['nbytes']:,} bytes)"


def read_ca(ca: bytes | str | Path | None) -> bytes | None:
    """PEM CA certificates from bytes or a file (None: the system's roots); a file that is
    missing or holds no certificate raises ValueError naming it."""
    if ca is None or isinstance(ca, bytes):
        return ca
    try:
        pem = Path(ca).read_bytes()
    except OSError as e:
        raise ValueError(f"CA file {ca}: cannot read it ({e.strerror})") from e
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError(f"CA file {ca}: no PEM certificate in it")
    return pem


def rows_of(res: pb.ClassifyResponse) -> list[dict[str, Any]]:
    out = []
    for p in res.predictions:
        row: dict[str, Any] = {"truncated": p.truncated, "version": res.version,
                               "version_number": res.version_number}
        if res.regression:
            row["value"] = p.value
        else:
            row.update(label=p.label, label_index=p.label_index,
                       scores=dict(zip(res.labels, p.scores, strict=True)))
        out.append(row)
    return out


def to_inputs(inputs: Sequence[TextInput] | TextInput) -> list[pb.Input]:
    """A text, a (text, pair) tuple, or a list of either -> Input messages."""
    if isinstance(inputs, str) or (isinstance(inputs, tuple) and len(inputs) == 2
                                   and all(isinstance(x, str) for x in inputs)):
        inputs = [inputs]  # type: ignore[list-item]
    out = []
    for x in inputs:
        out.append(pb.Input(text=x) if isinstance(x, str) else pb.Input(text=x[0], pair=x[1]))
    return out


def as_dict(msg: Message) -> dict[str, Any]:
    """Every field by its proto name, defaults included, integers as ints (not JSON strings)."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        is_msg = field.message_type is not None
        if is_msg and field.message_type.GetOptions().map_entry:  # a map of scalars
            out[field.name] = dict(value)
        elif _is_repeated(field):
            out[field.name] = [as_dict(v) if is_msg else v for v in value]
        else:
            out[field.name] = as_dict(value) if is_msg else value
    return out


def _is_repeated(field: Any) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5.28; `label` is deprecated
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED
