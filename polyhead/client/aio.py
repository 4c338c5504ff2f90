"""The asyncio client on grpc.aio: the synchronous client's methods as coroutines, and
``classify_stream`` as an async iterator. The calls, the retry policy and the stream's
resume-and-refusal logic are the ones in ``_common``; only the waiting differs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio

from polyhead.client import _common as c
from polyhead.client._common import PolyheadError, RetryPolicy, TextInput
from polyhead.client.tokens import find_token
from polyhead.v1 import polyhead_pb2 as pb

R = TypeVar("R")

__all__ = ["AsyncClient", "PolyheadError"]


# grpc.aio replaces the status a server ended a stream with by INTERNAL "Internal error from
# Core" when the client's next write lands after the server's status (grpc/grpc#36066): a
# refused input would then read as a fault and be retried. A stream resent after a break
# therefore sends its pending messages one at a time, each after the answer to the one
# before, so no write races the status of the message the server refuses.


class AsyncClient:
    """``Client`` for asyncio: the same arguments (token discovery, TLS, retries), the same
    methods, each awaited; ``classify_stream`` is an async iterator and takes the inputs as
    an iterable or an async iterable. Create it in a running event loop and close it there
    (``async with AsyncClient(...) as client``)."""

    def __init__(self, address: str = "localhost:9000", token: str | None = None, *,
                 retries: int = 4, backoff_s: float = 0.1, max_backoff_s: float = 2.0,
                 timeout_s: float = 60.0, tls: bool = False, ca: bytes | str | Path | None = None
                 ) -> None:
        self.address = address
        self.policy = RetryPolicy(retries, backoff_s, max_backoff_s, timeout_s)
        self._metadata = c.metadata(find_token(token) if token is None else token)
        creds = c.credentials(tls, ca)
        self.tls = creds is not None
        self._channel = (grpc.aio.secure_channel(address, creds, options=c.channel_options())
                         if creds else grpc.aio.insecure_channel(address, options=c.channel_options()))
        self._stubs = c.stubs(self._channel)

    # -- Inference -------------------------------------------------------------------------

    async def classify(self, task_id: str, inputs: Sequence[TextInput] | TextInput,
                       version: str | None = None, truncate: bool = False) -> list[dict[str, Any]]:
        """As ``Client.classify``."""
        return await self._run(c.classify(task_id, inputs, version, truncate))

    async def classify_raw(self, task_id: str, inputs: Sequence[TextInput] | TextInput,
                           version: str | None = None, truncate: bool = False) -> pb.ClassifyResponse:
        return await self._run(c.classify_raw(task_id, inputs, version, truncate))

    async def classify_stream(self, task_id: str,
                              inputs: Iterable[TextInput] | AsyncIterable[TextInput],
                              version: str | None = None, chunk: int = 32,
                              truncate: bool = False) -> AsyncIterator[dict[str, Any]]:
        """As ``Client.classify_stream``: every input answered once, in order, across
        retried streams; a refused input raises PolyheadError (with ``input_index``) after
        the answers before it."""
        s = c.Stream(task_id, version, chunk, truncate, self.policy)
        source = aiter(inputs) if isinstance(inputs, AsyncIterable) else iter(inputs)

        answered = asyncio.Condition()  # notified as each message of this stream is answered
        got = 0

        async def requests() -> AsyncIterator[pb.ClassifyRequest]:
            for i, req in enumerate(s.resend()):
                yield req
                if s.attempt:  # after a break, one message at a time (grpc#36066, above)
                    async with answered:
                        while got <= i:
                            await answered.wait()
            try:
                async for x in _each(source, stop=bool(s.failed)):
                    if (full := s.add(x)) is not None:
                        yield full
            except Exception as e:  # end the stream; the inputs before it are still answered
                s.failed.append(e)
            if (rest := s.flush()) is not None:
                yield rest

        while True:
            got = 0
            call = self._stubs["inference"].ClassifyStream(requests(), metadata=self._metadata)
            try:
                async for res in call:
                    rows = s.answer(res)
                    async with answered:
                        got += 1
                        answered.notify_all()
                    for row in rows:
                        yield row
                s.finish()
                return
            except grpc.RpcError as e:
                step = s.broken(e)
            finally:
                call.cancel()  # the caller stopped early: end the call, not just its reading
            if isinstance(step, c.Refusal):
                if step.before is not None:
                    for row in await self._run(step.before):
                        yield row
                raise step.error
            await asyncio.sleep(step)

    async def health(self) -> dict[str, Any]:
        return await self._run(c.health())

    # -- Registry --------------------------------------------------------------------------

    async def upload(self, data: bytes, replace_kind: bool = False) -> dict[str, Any]:
        return await self._run(c.upload(data, replace_kind))

    async def import_peft(self, folder: str | Path, task_id: str, labels: Sequence[str] | None = None,
                          replace_kind: bool = False) -> dict[str, Any]:
        return await self._run(c.import_peft(folder, task_id, labels, replace_kind))

    async def list_tasks(self) -> list[dict[str, Any]]:
        return await self._run(c.list_tasks())

    async def get_task(self, task_id: str) -> dict[str, Any]:
        return await self._run(c.get_task(task_id))

    async def set_alias(self, task_id: str, alias: str, version: str) -> dict[str, Any]:
        return await self._run(c.set_alias(task_id, alias, version))

    async def rollback(self, task_id: str, version: str) -> dict[str, Any]:
        return await self._run(c.rollback(task_id, version))

    async def delete(self, task_id: str) -> dict[str, Any]:
        return await self._run(c.delete(task_id))

    async def restore(self, task_id: str) -> dict[str, Any]:
        return await self._run(c.restore(task_id))

    # -- Training --------------------------------------------------------------------------

    async def upload_dataset(self, data: bytes, filename: str, *, text_col: str = "", pair_col: str = "",
                       label_col: str = "", no_header: bool = False, regression: bool = False,
                       labels_from: str = "") -> dict[str, Any]:
        """Store a dataset file (the formats and column flags of `polyhead train`); its
        DatasetInfo, whose id a job names."""
        return await self._run(c.upload_dataset(data, filename, labels_from=labels_from, text_col=text_col,
                                           pair_col=pair_col, label_col=label_col, no_header=no_header,
                                           regression=regression))

    async def create_job(self, task_id: str, method: str, train_dataset: str, *, dev_dataset: str = "",
                   dev_fraction: float = 0.0, options: dict[str, Any] | None = None,
                   metric: str = "", replace_kind: bool = False) -> dict[str, Any]:
        return await self._run(c.create_job(task_id, method, train_dataset, dev_dataset, dev_fraction,
                                      options, metric, replace_kind))

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return await self._run(c.get_job(job_id))

    async def list_jobs(self, state: str = "", limit: int = 0) -> list[dict[str, Any]]:
        return await self._run(c.list_jobs(state, limit))

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        return await self._run(c.cancel_job(job_id))

    async def watch_job(self, job_id: str, after_seq: int = 0,
                        timeout_s: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """The job's events up to its last one (published, failed, cancelled); a stream cut
        by a restarting server is opened again after the last event seen."""
        seq, attempt = after_seq, 0
        while True:
            stream = self._stubs["training"].WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=seq),
                                                      timeout=timeout_s, metadata=self._metadata)
            try:
                async for event in stream:
                    seq, attempt = event.seq, 0
                    yield c.as_dict(event)
                return
            except grpc.RpcError as e:
                await asyncio.sleep(self.policy.resume(e, c.RETRY_CODES, attempt))
                attempt += 1

    # -- plumbing --------------------------------------------------------------------------

    async def _run(self, call: c.Call[R]) -> R:
        """One unary call, retried as ``call.retry`` and the policy allow, within timeout_s."""
        method = getattr(self._stubs[call.service], call.method)
        deadline = time.monotonic() + self.policy.timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                reply = await method(c.request_of(call), timeout=max(remaining, 0.001),
                                     metadata=self._metadata)
                return call.convert(reply)
            except grpc.RpcError as e:
                pause = self.policy.after(e, call.retry, attempt, deadline)
            attempt += 1
            await asyncio.sleep(pause)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _each(source: Any, stop: bool) -> AsyncIterator[TextInput]:
    """The inputs left in ``source`` (an iterator or an async iterator), or none if ``stop``."""
    if stop:
        return
    if isinstance(source, AsyncIterator):
        async for x in source:
            yield x
    else:
        for x in source:
            yield x
