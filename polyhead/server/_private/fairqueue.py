"""The batcher's queue, in one of two orders: arrival (FIFO) or fair sharing between tenants.

Fair sharing is weighted fair queueing on tokens, the Virtual Token Counter of Sheng et al.
(arXiv 2401.00588): each tenant has a counter of the tokens it was served, divided by its
weight; the next request comes from the backlogged tenant whose counter is lowest (the
oldest head first on a tie). A tenant that starts waiting has its counter lifted to the
lowest counter of those already waiting (to the last one served when none wait), so time
spent idle banks no credit. Counters are charged when a batch takes a request.

Both orders are work-conserving: ``take`` returns at least one request whenever any waits,
so the engine never idles with work queued beyond the batcher's fill wait, and a lone
tenant is served exactly as FIFO serves it. While tenants share the engine, a batch holds
at most ``contended_rows`` rows: the engine runs one forward at a time and cannot be
interrupted, so the longest a tenant waits behind another's rows is one such batch, not
one of ``max_rows``. Tenants share the engine while two or more wait, or one waits and
another was served by the last batch and has not sent its next requests yet: a
closed-loop client a few milliseconds late for the next batch then waits behind one
capped batch, not behind a full one of the other tenant's backlog; a tenant left alone
is capped for one batch at most. And while tenants share the engine, ``expecting`` tells
the batcher's fill wait (bounded by it) that such a tenant's next requests are on their
way: a closed-loop client would otherwise always miss the next batch, which forms the
moment the engine is free.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Entry(Protocol):
    @property
    def tenant(self) -> str: ...

    @property
    def rows(self) -> int: ...

    @property
    def tokens(self) -> int: ...


E = TypeVar("E", bound=Entry)


class FifoQueue(Generic[E]):
    """Arrival order, whoever sent it."""

    def __init__(self) -> None:
        self._q: deque[E] = deque()
        self.rows = self.tokens = 0  # queued

    def __len__(self) -> int:
        return len(self._q)

    def push(self, e: E) -> None:
        self._q.append(e)
        self.rows += e.rows
        self.tokens += e.tokens

    def remove(self, e: E) -> bool:
        """Take ``e`` out (a cancelled request); False when it is not queued."""
        try:
            self._q.remove(e)
        except ValueError:
            return False
        self.rows -= e.rows
        self.tokens -= e.tokens
        return True

    def expecting(self) -> bool:
        """Never: arrival order has nobody to wait for."""
        return False

    def take(self, max_rows: int, max_tokens: int) -> list[E]:
        """The oldest requests within the budgets (at least one, when any waits)."""
        out: list[E] = []
        rows = tokens = 0
        while self._q:
            e = self._q[0]
            if out and (rows + e.rows > max_rows or tokens + e.tokens > max_tokens):
                break
            self._q.popleft()
            self.rows -= e.rows
            self.tokens -= e.tokens
            rows += e.rows
            tokens += e.tokens
            out.append(e)
        return out


class FairQueue(Generic[E]):
    """Weighted fair sharing of tokens between tenants (the module's docstring)."""

    def __init__(self, weight: Callable[[str], float] = lambda tenant: 1.0,
                 contended_rows: int | None = None) -> None:
        self._weight, self.contended_rows = weight, contended_rows
        self._waiting: dict[str, deque[tuple[int, E]]] = {}  # tenant -> (arrival, request)
        self._served: dict[str, float] = {}  # tenant -> tokens served / weight
        self._floor = 0.0  # the counter of the tenant served last
        self._arrivals = itertools.count()
        self._answered: dict[str, int] = {}  # tenant -> its requests in the last batch
        self.rows = self.tokens = 0  # queued

    def __len__(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def served(self, tenant: str) -> float:
        """The tenant's counter: tokens served over its weight, lifted as described."""
        return self._served.get(tenant, 0.0)

    @property
    def tenants_waiting(self) -> int:
        return len(self._waiting)

    def sharing(self) -> bool:
        """Whether tenants share the engine: two or more wait or were served by the last
        batch (the module's docstring)."""
        return len(self._answered.keys() | self._waiting.keys()) > 1

    def expecting(self) -> bool:
        """While tenants share the engine: whether one the last batch served has fewer
        requests waiting than that batch took from it (its next ones are on their way)."""
        if not self.sharing():
            return False
        return any(len(self._waiting.get(t, ())) < n for t, n in self._answered.items())

    def push(self, e: E) -> None:
        q = self._waiting.get(e.tenant)
        if q is None:  # newly backlogged: no credit for the time it was idle
            lowest = min((self._served[t] for t in self._waiting), default=self._floor)
            self._served[e.tenant] = max(self._served.get(e.tenant, 0.0), lowest)
            q = self._waiting[e.tenant] = deque()
        q.append((next(self._arrivals), e))
        self.rows += e.rows
        self.tokens += e.tokens

    def remove(self, e: E) -> bool:
        """Take ``e`` out (a cancelled request; it was never charged); False when not queued."""
        q = self._waiting.get(e.tenant)
        hit = next((x for x in q if x[1] is e), None) if q is not None else None
        if q is None or hit is None:
            return False
        q.remove(hit)
        if not q:
            del self._waiting[e.tenant]
        self.rows -= e.rows
        self.tokens -= e.tokens
        return True

    def take(self, max_rows: int, max_tokens: int) -> list[E]:
        """Requests of the least-served tenants, one at a time, within the budgets (at least
        one, when any waits); at most ``contended_rows`` rows while tenants share the engine."""
        if self.contended_rows is not None and self.sharing():
            max_rows = min(max_rows, self.contended_rows)
        out: list[E] = []
        rows = tokens = 0
        self._answered = {}
        while self._waiting:
            tenant = min(self._waiting, key=self._rank)
            e = self._waiting[tenant][0][1]
            if out and (rows + e.rows > max_rows or tokens + e.tokens > max_tokens):
                break
            self._pop(tenant)
            self._answered[tenant] = self._answered.get(tenant, 0) + 1
            rows += e.rows
            tokens += e.tokens
            out.append(e)
        return out

    def _rank(self, tenant: str) -> tuple[float, int]:
        return self._served[tenant], self._waiting[tenant][0][0]

    def _pop(self, tenant: str) -> None:
        q = self._waiting[tenant]
        e = q.popleft()[1]
        if not q:
            del self._waiting[tenant]
        self.rows -= e.rows
        self.tokens -= e.tokens
        self._served[tenant] += e.tokens / self._weight(tenant)
        self._floor = self._served[tenant]


Queue = FifoQueue[E] | FairQueue[E]
