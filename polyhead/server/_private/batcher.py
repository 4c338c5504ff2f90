"""The one batching layer: requests' rows -> engine forwards, across tasks and kinds.

A request is tokenized as it arrives, on the tokenizer thread (off the event loop and off
the forward's thread), then queues. One forward runs at a time, on the forward thread.
When the engine is free, the next batch takes queued requests up to a row and a token
budget, in the queue's order (``fairqueue``: fair sharing between tenants, or arrival
order); if that leaves room it waits up to ``fill_wait_s`` for more. So
the next batch forms, already tokenized, while the engine runs, and is handed over the
moment the engine is free; the batch size follows the load.

A request whose caller went away (the call was cancelled, its deadline passed: Serve then
cancels the handler) leaves the queue at once, and a batch drops it if it was taken but
not yet started: the engine never computes rows nobody waits for.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from polyhead.engine import LoadedTask, TextInput
from polyhead.engine.engine import Encoded
from polyhead.server._private.fairqueue import FairQueue, FifoQueue, Queue
from polyhead.server._private.inference import BatchItem, BatchStats, Row
from polyhead.store.names import DEFAULT_TENANT

Tokenize = Callable[[Sequence[TextInput]], list[Encoded]]
Forward = Callable[[Sequence[BatchItem]], tuple[list[list[Row]], BatchStats]]


@dataclasses.dataclass
class BatchCounters:
    """Totals since the replica started (Health reports them)."""

    batches: int = 0
    rows: int = 0
    forward_s: float = 0.0  # the forwards' wall time

    def add(self, stats: BatchStats) -> None:
        self.batches += 1
        self.rows += stats.rows
        self.forward_s += stats.seconds


@dataclasses.dataclass(eq=False)
class _Pending:
    item: BatchItem
    tokens: int
    future: asyncio.Future[list[Row]]
    tenant: str = DEFAULT_TENANT

    @property
    def rows(self) -> int:
        return len(self.item)


def batch_queue(order: str, weight: Callable[[str], float],
                contended_rows: int | None) -> Queue[_Pending]:
    """The queue for ``order`` ("fair" or "fifo"; ServerConfig.batch_order)."""
    if order == "fifo":
        return FifoQueue()
    return FairQueue(weight, contended_rows)


class Batcher:
    def __init__(self, tokenize: Tokenize, forward: Forward, *, max_rows: int, max_tokens: int,
                 fill_wait_s: float, threads: int, on_batch: Callable[[BatchStats], None],
                 queue: Queue[_Pending] | None = None) -> None:
        """``queue``: the order batches take requests in; default fair sharing with equal
        weights (for one tenant, arrival order)."""
        self._tokenize, self._run = tokenize, forward
        self.max_rows, self.max_tokens, self.fill_wait_s = max_rows, max_tokens, fill_wait_s
        self._on_batch = on_batch
        self.counters = BatchCounters()
        self._tokenizer = ThreadPoolExecutor(1, "polyhead-tokenize")
        self._forward = ThreadPoolExecutor(1, "polyhead-forward", initializer=torch.set_num_threads,
                                           initargs=(threads,))
        self._queue: Queue[_Pending] = queue if queue is not None else FairQueue()
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None  # held: the loop keeps weak references

    async def encode(self, inputs: Sequence[TextInput]) -> list[Encoded]:
        return await asyncio.get_running_loop().run_in_executor(
            self._tokenizer, self._tokenize, inputs)

    async def run(self, enc: list[Encoded], task: LoadedTask,
                  tenant: str = DEFAULT_TENANT) -> list[Row]:
        """These rows' logits, from the next forward that has room for them and serves
        ``tenant`` in its turn."""
        loop = asyncio.get_running_loop()
        pending = _Pending(BatchItem(enc, task), sum(len(e.ids) for e in enc), loop.create_future(),
                           tenant)
        self._queue.push(pending)
        if self._loop_task is None or self._loop_task.done():
            self._wake = asyncio.Event()
            self._loop_task = loop.create_task(self._drain())
        assert self._wake is not None
        self._wake.set()
        try:
            return await pending.future
        except asyncio.CancelledError:
            self._queue.remove(pending)  # a no-op once a batch took it
            raise

    @property
    def queued_rows(self) -> int:
        return self._queue.rows

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            await self._fill()
            batch = self._take()
            if not batch:
                continue
            try:
                ran = await loop.run_in_executor(self._forward, self._start, batch)
            except Exception as e:  # a server fault: every request in the forward fails
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
            if ran is None:  # every request of the batch was cancelled before it started
                continue
            live, out, stats = ran
            for p, rows in zip(live, out, strict=True):
                if not p.future.done():
                    p.future.set_result(rows)
            self.counters.add(stats)
            self._on_batch(stats)

    def _start(self, batch: list[_Pending]) -> tuple[list[_Pending], list[list[Row]], BatchStats] | None:
        """The forward of the batch's requests still awaited (on the forward thread)."""
        live = [p for p in batch if not p.future.done()]
        if not live:
            return None
        out, stats = self._run([p.item for p in live])
        return live, out, stats

    async def _fill(self) -> None:
        """Wait up to fill_wait_s while the queue leaves room, or while it expects a tenant
        the last forward served (clients of the last forward are sending their next
        requests)."""
        q = self._queue
        if self.fill_wait_s <= 0 or (q.rows >= self.max_rows and not q.expecting()):
            return
        deadline = asyncio.get_running_loop().time() + self.fill_wait_s
        assert self._wake is not None
        while (q.rows < self.max_rows and q.tokens < self.max_tokens) or q.expecting():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        """Queued requests in the queue's order, within the row and token budgets."""
        return [p for p in self._queue.take(self.max_rows, self.max_tokens)
                if not p.future.done()]  # not one whose request was cancelled

    def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._tokenizer.shutdown(wait=False)
        self._forward.shutdown(wait=False)
