"""The synchronous client: each method builds its call in ``_common`` (the one retry policy,
request and reply conversion shared with the asyncio client) and runs it, blocking."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from polyhead.client import _common as c
from polyhead.client._common import PolyheadError, RetryPolicy, TextInput
from polyhead.client.tokens import find_token
from polyhead.v1 import polyhead_pb2 as pb

R = TypeVar("R")

__all__ = ["Client", "PolyheadClient", "PolyheadError"]


class Client:
    """A Polyhead server's Inference and Registry services, one method per RPC.

    ``token``: the bearer token; None finds it as the CLI does ($POLYHEAD_TOKEN, else the
    token `polyhead serve` saved on this machine), "" sends none. ``tls``: connect over TLS,
    checking the server's certificate against the system's roots, or against ``ca`` (PEM
    bytes or a file; giving one implies TLS). Polyhead's server speaks plaintext gRPC: TLS
    ends in front of it (a Gateway, an Ingress, a mesh sidecar), so this is how a client
    outside the cluster keeps the token off the wire. Retries: see ``polyhead.client._common``.
    """

    def __init__(self, address: str = "localhost:9000", token: str | None = None, *,
                 retries: int = 4, backoff_s: float = 0.1, max_backoff_s: float = 2.0,
                 timeout_s: float = 60.0, tls: bool = False, ca: bytes | str | Path | None = None
                 ) -> None:
        self.address = address
        self.policy = RetryPolicy(retries, backoff_s, max_backoff_s, timeout_s)
        self._metadata = c.metadata(find_token(token) if token is None else token)
        creds = c.credentials(tls, ca)
        self.tls = creds is not None
        self._channel = (grpc.secure_channel(address, creds, options=c.channel_options()) if creds
                         else grpc.insecure_channel(address, options=c.channel_options()))
        self._stubs = c.stubs(self._channel)

    # -- Inference -------------------------------------------------------------------------

    def classify(self, task_id: str, inputs: Sequence[TextInput] | TextInput,
                 version: str | None = None, truncate: bool = False) -> list[dict[str, Any]]:
        """One dict per input: label, label_index, scores {label: p} (or value for regression),
        truncated, and the version (and its number) that served it. ``truncate``: cut texts
        over the server's character limit (marked truncated) instead of failing."""
        return self._run(c.classify(task_id, inputs, version, truncate))

    def classify_raw(self, task_id: str, inputs: Sequence[TextInput] | TextInput,
                     version: str | None = None, truncate: bool = False) -> pb.ClassifyResponse:
        return self._run(c.classify_raw(task_id, inputs, version, truncate))

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
        s = c.Stream(task_id, version, chunk, truncate, self.policy)
        source = iter(inputs)

        def requests() -> Iterator[pb.ClassifyRequest]:
            yield from s.resend()
            try:
                for x in () if s.failed else source:
                    if (req := s.add(x)) is not None:
                        yield req
            except Exception as e:  # end the stream; the inputs before it are still answered
                s.failed.append(e)
            if (req := s.flush()) is not None:
                yield req

        while True:
            call = self._stubs["inference"].ClassifyStream(requests(), metadata=self._metadata)
            try:
                for res in call:
                    yield from s.answer(res)
                s.finish()
                return
            except grpc.RpcError as e:
                step = s.broken(e)
            finally:
                call.cancel()  # the caller stopped early: end the call, not just its reading
            if isinstance(step, c.Refusal):
                if step.before is not None:
                    yield from self._run(step.before)
                raise step.error
            time.sleep(step)

    def health(self) -> dict[str, Any]:
        return self._run(c.health())

    # -- Registry --------------------------------------------------------------------------

    def upload(self, data: bytes, replace_kind: bool = False) -> dict[str, Any]:
        return self._run(c.upload(data, replace_kind))

    def import_peft(self, folder: str | Path, task_id: str,
                    labels: Sequence[str] | None = None, replace_kind: bool = False) -> dict[str, Any]:
        return self._run(c.import_peft(folder, task_id, labels, replace_kind))

    def list_tasks(self) -> list[dict[str, Any]]:
        return self._run(c.list_tasks())

    def get_task(self, task_id: str) -> dict[str, Any]:
        return self._run(c.get_task(task_id))

    def set_alias(self, task_id: str, alias: str, version: str) -> dict[str, Any]:
        return self._run(c.set_alias(task_id, alias, version))

    def rollback(self, task_id: str, version: str) -> dict[str, Any]:
        return self._run(c.rollback(task_id, version))

    def delete(self, task_id: str) -> dict[str, Any]:
        return self._run(c.delete(task_id))

    def restore(self, task_id: str) -> dict[str, Any]:
        """Bring back a deleted task within its retention; its latest version."""
        return self._run(c.restore(task_id))

    # -- Training --------------------------------------------------------------------------

    def upload_dataset(self, data: bytes, filename: str, *, text_col: str = "", pair_col: str = "",
                       label_col: str = "", no_header: bool = False, regression: bool = False,
                       labels_from: str = "") -> dict[str, Any]:
        """Store a dataset file (the formats and column flags of `polyhead train`); its
        DatasetInfo, whose id a job names."""
        return self._run(c.upload_dataset(data, filename, labels_from=labels_from, text_col=text_col,
                                           pair_col=pair_col, label_col=label_col, no_header=no_header,
                                           regression=regression))

    def create_job(self, task_id: str, method: str, train_dataset: str, *, dev_dataset: str = "",
                   dev_fraction: float = 0.0, options: dict[str, Any] | None = None,
                   metric: str = "", replace_kind: bool = False) -> dict[str, Any]:
        return self._run(c.create_job(task_id, method, train_dataset, dev_dataset, dev_fraction,
                                      options, metric, replace_kind))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._run(c.get_job(job_id))

    def list_jobs(self, state: str = "", limit: int = 0) -> list[dict[str, Any]]:
        return self._run(c.list_jobs(state, limit))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._run(c.cancel_job(job_id))

    def watch_job(self, job_id: str, after_seq: int = 0,
                  timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """The job's events up to its last one (published, failed, cancelled); a stream cut
        by a restarting server is opened again after the last event seen."""
        seq, attempt = after_seq, 0
        while True:
            stream = self._stubs["training"].WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=seq),
                                                      timeout=timeout_s, metadata=self._metadata)
            try:
                for event in stream:
                    seq, attempt = event.seq, 0
                    yield c.as_dict(event)
                return
            except grpc.RpcError as e:
                time.sleep(self.policy.resume(e, c.RETRY_CODES, attempt))
                attempt += 1

    # -- plumbing --------------------------------------------------------------------------

    def _run(self, call: c.Call[R]) -> R:
        """One unary call, retried as ``call.retry`` and the policy allow, within timeout_s."""
        method = getattr(self._stubs[call.service], call.method)
        deadline = time.monotonic() + self.policy.timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                reply = method(c.request_of(call), timeout=max(remaining, 0.001), metadata=self._metadata)
                return call.convert(reply)
            except grpc.RpcError as e:
                pause = self.policy.after(e, call.retry, attempt, deadline)
            attempt += 1
            time.sleep(pause)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PolyheadClient = Client  # the name it had before `polyhead.Client`
