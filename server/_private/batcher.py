"""One engine forward at a time, each taking every batch that queued while the last ran.

Serve's ``@serve.batch`` forms the next batch as soon as it hands one over, not when the
engine is free: under load it hands over many small batches (one ``batch_wait`` each).
They wait here while a forward runs and go into the next forward together (up to
``max_rows`` rows), so the batch size follows the load.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from server._private.inference import BatchItem, BatchStats, Row

Forward = Callable[[Sequence[BatchItem]], tuple[list[list[Row]], BatchStats]]
Waiting = tuple[list[BatchItem], "asyncio.Future[list[list[Row]]]"]


def rows_of(items: Sequence[BatchItem]) -> int:
    return sum(len(it) for it in items)


class Coalescer:
    def __init__(self, forward: Forward, executor: Executor, max_rows: int,
                 on_batch: Callable[[BatchStats], None]) -> None:
        self._forward, self._executor = forward, executor
        self.max_rows = max_rows
        self._on_batch = on_batch
        self._waiting: deque[Waiting] = deque()
        self._busy = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps weak references

    async def run(self, items: list[BatchItem]) -> list[list[Row]]:
        """Each item's rows, after the forward that took them."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[list[Row]]] = loop.create_future()
        self._waiting.append((items, fut))
        if not self._busy:
            self._busy = True
            self._task = loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                take = self._take()
                if not take:
                    continue
                flat = [it for items, _ in take for it in items]
                try:
                    out, stats = await loop.run_in_executor(self._executor, self._forward, flat)
                except Exception as e:  # a server fault: every request in the forward fails
                    for _, fut in take:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                start = 0
                for items, fut in take:
                    if not fut.done():
                        fut.set_result(out[start:start + len(items)])
                    start += len(items)
                self._on_batch(stats)
        finally:
            self._busy = False

    def _take(self) -> list[Waiting]:
        """Queued batches, oldest first, up to max_rows rows (at least one batch)."""
        take: list[Waiting] = []
        rows = 0
        while self._waiting and (not take or rows + rows_of(self._waiting[0][0]) <= self.max_rows):
            items, fut = self._waiting.popleft()
            if not fut.done():  # its requests were cancelled
                take.append((items, fut))
                rows += rows_of(items)
        return take
