"""What the synchronous and the asyncio client share, written once: the retry policy and its
decision, each RPC's request and reply conversion (a ``Call``), the state of a
ClassifyStream that resumes after a broken stream, the channel's options and credentials.
The two clients only run the calls: blocking (sync.py) or awaited (aio.py).

Retry policy: calls that are safe to repeat (Classify, Health, ListTasks, GetTask, SetAlias,
Rollback, and Upload, whose versions are content-addressed) are retried when the server
answers UNAVAILABLE (no replica reachable, e.g. one restarting) or RESOURCE_EXHAUSTED (Serve
back-pressure); read-only calls (Classify, Health, ListTasks, GetTask) also on INTERNAL,
which the server never returns for bad input, only for faults such as a replica dying
under the request. Up to ``retries`` more attempts, sleeping ``backoff_s * 2**attempt``
(capped at ``max_backoff_s``, full jitter) between them, all within the call's
``timeout_s``. ImportPeft, DeleteTask and RestoreTask are never retried. Every other status
raises PolyheadError at once.
"""

from __future__ import annotations

import random
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import grpc
from google.protobuf.message import Message

from polyhead.v1 import polyhead_pb2 as pb
from polyhead.v1 import polyhead_pb2_grpc as pb_grpc

RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
READ_RETRY_CODES = RETRY_CODES | {grpc.StatusCode.INTERNAL}
NEVER = frozenset[grpc.StatusCode]()
MAX_MESSAGE = 512 << 20
DATASET_CHUNK = 1 << 20  # UploadDataset's message size (under the server's message limit)
R = TypeVar("R")
TextInput = str | tuple[str, str]


class PolyheadError(Exception):
    """A call failed with a gRPC status; ``code`` is the grpc.StatusCode. ``input_index``:
    in ``classify_stream``, the 0-based index (among all the inputs) of the input the server
    refused, whose problem ``details`` then gives (e.g. "text: 20001 characters; ...")."""

    def __init__(self, code: grpc.StatusCode, details: str, input_index: int | None = None) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details, self.input_index = code, details, input_index


def check_address(address: str, flag: str = "--server") -> str:
    """``address`` when it is HOST:PORT; ValueError naming ``flag`` otherwise (gRPC would
    take a bare host as port 443 and fail with a refusal that does not say why)."""
    if address.startswith("unix:"):  # a Unix socket: gRPC's own form
        return address
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or (host.endswith(":") and not host.startswith("[")):
        raise ValueError(f"{flag} needs HOST:PORT (e.g. localhost:9000), got {address!r}")
    return address


def error_text(prog: str, address: str, code: grpc.StatusCode, details: str) -> str:
    """A command's failed call for its user: ``prog: CODE: details``, and a second line with
    what is likely wrong when the server did not answer (unreachable_hint)."""
    hint = unreachable_hint(address, code, details)
    return f"{prog}: {code.name}: {details}" + (f"\n{prog}: {hint}" if hint else "")


def unreachable_hint(address: str, code: grpc.StatusCode, details: str) -> str:
    """A line to add to an UNAVAILABLE error that says what is likely wrong ("" if none)."""
    if code != grpc.StatusCode.UNAVAILABLE:
        return ""
    if "HTTP/2" in details or "http1" in details.lower():
        return (f"{address} answers HTTP/1, not gRPC: is it the HTTP port? `polyhead serve` "
                "takes gRPC on 9000 and HTTP on 8000 by default")
    if "refused" in details.lower() or "failed to connect" in details.lower():
        return (f"nothing answers on {address}: is `polyhead serve` running there? "
                "(`make serve` starts one on localhost:9000)")
    return ""


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 4
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    timeout_s: float = 60.0

    def pause(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_backoff_s, backoff_s * 2**attempt)]."""
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** attempt))

    def resume(self, error: grpc.RpcError, retry: frozenset[grpc.StatusCode], attempt: int) -> float:
        """The pause before retry ``attempt + 1`` after ``error`` (a broken stream opened
        again, or a unary call: ``after``); PolyheadError when its status or the retries
        spent say not to."""
        code = error.code()
        if code not in retry or attempt >= self.retries:
            raise PolyheadError(code, error.details() or "") from None
        return self.pause(attempt)

    def after(self, error: grpc.RpcError, retry: frozenset[grpc.StatusCode], attempt: int,
              deadline: float) -> float:
        """The pause before attempt ``attempt + 1`` of a unary call that failed with
        ``error``; PolyheadError when it is not to be retried (its status, the attempts
        spent, or no time left before ``deadline``, a time.monotonic())."""
        pause = self.resume(error, retry, attempt)
        if time.monotonic() + pause >= deadline:
            raise PolyheadError(error.code(), error.details() or "") from None
        return pause


@dataclass(frozen=True)
class Call(Generic[R]):
    """One unary RPC as both clients make it: the service and method, the request, the
    statuses it may be retried on, and what the reply becomes."""

    service: Literal["inference", "registry", "training"]
    method: str
    request: Message | list[Message]  # a list: a client stream (UploadDataset), sent again on a retry
    retry: frozenset[grpc.StatusCode]
    convert: Callable[[Any], R]


def request_of(call: Call[Any]) -> Any:
    """What the stub takes: the request, or a fresh iterator over a client stream's
    messages (each attempt sends them all again)."""
    return iter(call.request) if isinstance(call.request, list) else call.request


def classify_raw(task_id: str, inputs: Sequence[TextInput] | TextInput, version: str | None,
                 truncate: bool) -> Call[pb.ClassifyResponse]:
    req = pb.ClassifyRequest(task_id=task_id, version=version or "", inputs=to_inputs(inputs),
                             truncate=truncate)
    return Call("inference", "Classify", req, READ_RETRY_CODES, lambda res: res)


def classify(task_id: str, inputs: Sequence[TextInput] | TextInput, version: str | None,
             truncate: bool) -> Call[list[dict[str, Any]]]:
    req = classify_raw(task_id, inputs, version, truncate).request
    return Call("inference", "Classify", req, READ_RETRY_CODES, rows_of)


def health() -> Call[dict[str, Any]]:
    return Call("inference", "Health", pb.HealthRequest(), READ_RETRY_CODES, as_dict)


def upload(data: bytes, replace_kind: bool) -> Call[dict[str, Any]]:
    req = pb.UploadRequest(artifact=data, replace_kind=replace_kind)
    return Call("registry", "Upload", req, RETRY_CODES, as_dict)


def import_peft(folder: str | Path, task_id: str, labels: Sequence[str] | None,
                replace_kind: bool) -> Call[dict[str, Any]]:
    folder = Path(folder)
    req = pb.ImportPeftRequest(
        task_id=task_id, labels=list(labels or ()), replace_kind=replace_kind,
        adapter_config=(folder / "adapter_config.json").read_bytes(),
        adapter_model=(folder / "adapter_model.safetensors").read_bytes())
    return Call("registry", "ImportPeft", req, NEVER, as_dict)


def list_tasks() -> Call[list[dict[str, Any]]]:
    return Call("registry", "ListTasks", pb.ListTasksRequest(), READ_RETRY_CODES,
                lambda res: [as_dict(t) for t in res.tasks])


def get_task(task_id: str) -> Call[dict[str, Any]]:
    return Call("registry", "GetTask", pb.GetTaskRequest(task_id=task_id), READ_RETRY_CODES, as_dict)


def set_alias(task_id: str, alias: str, version: str) -> Call[dict[str, Any]]:
    req = pb.SetAliasRequest(task_id=task_id, alias=alias, version=version)
    return Call("registry", "SetAlias", req, RETRY_CODES, as_dict)


def rollback(task_id: str, version: str) -> Call[dict[str, Any]]:
    req = pb.RollbackRequest(task_id=task_id, version=version)
    return Call("registry", "Rollback", req, RETRY_CODES, as_dict)


def delete(task_id: str) -> Call[dict[str, Any]]:
    return Call("registry", "DeleteTask", pb.DeleteTaskRequest(task_id=task_id), NEVER, as_dict)


def restore(task_id: str) -> Call[dict[str, Any]]:
    return Call("registry", "RestoreTask", pb.RestoreTaskRequest(task_id=task_id), NEVER, as_dict)


def upload_dataset(data: bytes, filename: str, *, labels_from: str = "", **columns: Any
                   ) -> Call[dict[str, Any]]:
    """A dataset file in DATASET_CHUNK pieces, the first naming it and its ``columns``
    (DatasetColumns' fields: text_col, pair_col, label_col, no_header, regression; an
    identical file and flags give the same id, so a retry is safe)."""
    first = pb.DatasetChunk(filename=filename, columns=pb.DatasetColumns(**columns),
                            labels_from=labels_from, data=data[:DATASET_CHUNK])
    rest = [pb.DatasetChunk(data=data[at:at + DATASET_CHUNK])
            for at in range(DATASET_CHUNK, len(data), DATASET_CHUNK)]
    return Call("training", "UploadDataset", [first, *rest], RETRY_CODES, as_dict)


def create_job(task_id: str, method: str, train_dataset: str, dev_dataset: str, dev_fraction: float,
               options: dict[str, Any] | None, metric: str, replace_kind: bool) -> Call[dict[str, Any]]:
    req = pb.CreateJobRequest(task_id=task_id, method=method, train_dataset=train_dataset,
                              dev_dataset=dev_dataset, dev_fraction=dev_fraction,
                              options={k: str(v) for k, v in (options or {}).items()},
                              metric=metric, replace_kind=replace_kind)
    return Call("training", "CreateJob", req, NEVER, as_dict)


def get_job(job_id: str) -> Call[dict[str, Any]]:
    return Call("training", "GetJob", pb.GetJobRequest(job_id=job_id), READ_RETRY_CODES, as_dict)


def list_jobs(state: str, limit: int) -> Call[list[dict[str, Any]]]:
    return Call("training", "ListJobs", pb.ListJobsRequest(state=state, limit=limit), READ_RETRY_CODES,
                lambda res: [as_dict(j) for j in res.jobs])


def cancel_job(job_id: str) -> Call[dict[str, Any]]:
    return Call("training", "CancelJob", pb.CancelJobRequest(job_id=job_id), RETRY_CODES, as_dict)


# A stream error naming one input: "message 9: inputs[11].text: empty text"
_STREAM_INPUT = re.compile(r"message \d+: inputs\[(\d+)\](?:\.|: )?(.*)", re.DOTALL)


@dataclass(frozen=True)
class Refusal:
    """The server refused one input of a stream: ``before`` answers its message's inputs
    before it (None: it was the first), then ``error`` is raised."""

    before: Call[list[dict[str, Any]]] | None
    error: PolyheadError


class Stream:
    """One ``classify_stream``: the inputs cut into messages of ``chunk``, the messages sent
    and not yet answered (resent, in order, by the next stream after a retryable break), and
    an error the inputs themselves raised (raised once every input before it is answered)."""

    def __init__(self, task_id: str, version: str | None, chunk: int, truncate: bool,
                 policy: RetryPolicy) -> None:
        self.task_id, self.version, self.chunk, self.truncate = task_id, version or "", chunk, truncate
        self.policy = policy
        self.pending: deque[pb.ClassifyRequest] = deque()  # sent, not yet answered
        self.buffer: list[TextInput] = []
        self.failed: list[Exception] = []
        self.attempt = self.answered = 0

    def resend(self) -> list[pb.ClassifyRequest]:
        return list(self.pending)

    def add(self, x: TextInput) -> pb.ClassifyRequest | None:
        """Take one input; the message to send when it fills one."""
        self.buffer.append(x)
        return self.flush() if len(self.buffer) == self.chunk else None

    def flush(self) -> pb.ClassifyRequest | None:
        """The message of the inputs taken and not yet sent (None: there are none)."""
        if not self.buffer:
            return None
        req = pb.ClassifyRequest(task_id=self.task_id, version=self.version,
                                 inputs=to_inputs(self.buffer), truncate=self.truncate)
        self.buffer = []
        self.pending.append(req)
        return req

    def answer(self, res: pb.ClassifyResponse) -> list[dict[str, Any]]:
        self.pending.popleft()
        self.attempt = 0
        self.answered += len(res.predictions)
        return rows_of(res)

    def finish(self) -> None:
        """The stream ended: every message is answered; raise the inputs' own error, if any."""
        if self.failed:
            raise self.failed[0]

    def broken(self, error: grpc.RpcError) -> Refusal | float:
        """The stream broke with ``error``: a Refusal of one input, or the pause before a new
        stream resends the pending messages; PolyheadError when it is not to be retried."""
        code, details = error.code(), error.details() or ""
        if (m := _STREAM_INPUT.fullmatch(details)) and self.pending:
            bad = int(m.group(1))
            return Refusal(self._before(bad), PolyheadError(code, m.group(2), self.answered + bad))
        pause = self.policy.resume(error, READ_RETRY_CODES, self.attempt)
        self.attempt += 1
        return pause

    def _before(self, bad: int) -> Call[list[dict[str, Any]]] | None:
        if bad == 0:
            return None
        head = self.pending[0]
        req = pb.ClassifyRequest(task_id=head.task_id, version=head.version,
                                 inputs=head.inputs[:bad], truncate=head.truncate)
        return Call("inference", "Classify", req, READ_RETRY_CODES, rows_of)


def stubs(channel: Any) -> dict[str, Any]:
    """Each service's stub on ``channel`` (blocking or grpc.aio: the same generated classes)."""
    return {"inference": pb_grpc.InferenceStub(channel), "registry": pb_grpc.RegistryStub(channel),
            "training": pb_grpc.TrainingStub(channel)}


def channel_options() -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            # a connection of its own: gRPC otherwise shares one per target across a
            # process's channels, and every client would pin to the same server pod
            ("grpc.use_local_subchannel_pool", 1)]


def credentials(tls: bool, ca: bytes | str | Path | None) -> grpc.ChannelCredentials | None:
    """TLS credentials (the system's roots, or ``ca``; a ``ca`` implies TLS), or None for a
    plaintext channel."""
    if not tls and ca is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates=read_ca(ca))


def metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


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
