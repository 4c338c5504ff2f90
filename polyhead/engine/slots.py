"""Slot tables: every resident task's tensors as one row of preallocated device tables.

A kind declares its table layout (field name -> per-slot shape, dtype and fill). Loading a
task writes its rows into a free slot (padding the rest of the row with the field's fill,
so a reused slot never shows the previous task's values); a batch carries one slot index
per row (-1: the row is not this kind's) and the kind gathers its rows by that index.

Tables grow to the capacity their owner gives (the engine's tables double, within the
device budget: ``polyhead.engine.engine.SlotTables``); a field's trailing dims grow (e.g. LoRA
rank, prefix length, head outputs) to the largest task loaded, padded with the fill.
Growth allocates new tensors, so readers that hold the old ones are unaffected. Free
slots are handed out lowest first, so the used ones stay packed low and ``trim`` can give
the free ones above them back to the device. ``put``, ``free`` and ``trim`` hold the
table's lock; a forward reads a snapshot of the fields and only the slots of tasks it holds.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import threading
from collections.abc import Mapping

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class Field:
    """One per-slot tensor of a table: its shape for one task, dtype (None: the engine's
    float dtype) and the value that pads it (0 is a no-op for additive kinds)."""

    shape: tuple[int, ...]
    dtype: torch.dtype | None = None
    fill: float = 0.0


class SlotTable:
    """Rows of same-named tensors on one device; slot s is row s of every field."""

    def __init__(self, name: str, device: torch.device, dtype: torch.dtype,
                 capacity: int = 16) -> None:
        self.name, self.device, self.dtype = name, device, dtype
        self.capacity = capacity
        self.fields: dict[str, Tensor] = {}
        self.fills: dict[str, float] = {}
        self._free = list(range(capacity))  # a min-heap: the lowest free slot goes first
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self.capacity - len(self._free)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    @property
    def nbytes(self) -> int:
        """Bytes the table holds on its device (every slot, used or free)."""
        return sum(t.numel() * t.element_size() for t in self.fields.values())

    def row_bytes(self, names: list[str] | None = None) -> int:
        # from the shape, not row 0: a table trimmed to no slots keeps its fields
        names = list(self.fields) if names is None else names
        return sum(math.prod(self.fields[n].shape[1:]) * self.fields[n].element_size() for n in names)

    def row_bytes_after(self, layout: Mapping[str, Field]) -> int:
        """Bytes of one slot once ``layout`` is in (its fields widened as ``put`` would)."""
        total = 0
        for name in {*self.fields, *layout}:
            old, f = self.fields.get(name), layout.get(name)
            if old is None:
                assert f is not None
                shape, size = f.shape, torch.empty((), dtype=f.dtype or self.dtype).element_size()
            else:
                have = tuple(old.shape[1:])
                shape = have if f is None else tuple(max(a, b) for a, b in zip(have, f.shape, strict=True))
                size = old.element_size()
            total += math.prod(shape) * size
        return total

    def put(self, layout: Mapping[str, Field], rows: Mapping[str, Tensor],
            grow_to: int | None = None) -> int:
        """Write one task's rows into a free slot and return it. Every field of ``layout``
        is made present and large enough first; the slot's other fields and the rest of
        each row are set to the fill, so nothing of a previous occupant remains. Without a
        free slot the table grows to ``grow_to`` slots (default: double)."""
        with self._lock:
            for name, f in layout.items():
                self._ensure_field(name, f)
            if not self._free:
                self._grow(max(self.capacity + 1, grow_to or 2 * self.capacity))
            slot = heapq.heappop(self._free)
            for name, t in self.fields.items():
                t[slot].fill_(self.fills[name])
                src = rows.get(name)
                if src is not None:
                    t[slot][tuple(slice(0, s) for s in src.shape)].copy_(src)
            return slot

    def free(self, slot: int) -> None:
        """Return a slot; its rows are cleared so that nothing of the task stays behind."""
        with self._lock:
            for name, t in self.fields.items():
                t[slot].fill_(self.fills[name])
            heapq.heappush(self._free, slot)

    def trim(self) -> int:
        """Give the free slots above the highest used one back to the device; the bytes
        freed."""
        with self._lock:
            free = set(self._free)
            cap = self.capacity
            while cap > 0 and cap - 1 in free:
                cap -= 1
            if cap == self.capacity:
                return 0
            before = self.nbytes
            self.fields = {n: t[:cap].clone() for n, t in self.fields.items()}
            self._free = sorted(s for s in free if s < cap)
            self.capacity = cap
            return before - self.nbytes

    def _ensure_field(self, name: str, f: Field) -> None:
        dtype = f.dtype or self.dtype
        old = self.fields.get(name)
        if old is None:
            self.fields[name] = torch.full((self.capacity, *f.shape), f.fill, dtype=dtype,
                                           device=self.device)
            self.fills[name] = f.fill
            return
        have = tuple(old.shape[1:])
        if len(have) != len(f.shape):
            raise ValueError(f"{self.name}.{name}: rank {len(f.shape)} != table's {len(have)}")
        want = tuple(max(a, b) for a, b in zip(have, f.shape, strict=True))
        if want != have:
            self.fields[name] = _padded(old, (self.capacity, *want), f.fill)

    def _grow(self, capacity: int) -> None:
        for name, t in self.fields.items():
            self.fields[name] = _padded(t, (capacity, *t.shape[1:]), self.fills[name])
        for s in range(self.capacity, capacity):
            heapq.heappush(self._free, s)
        self.capacity = capacity


def _padded(t: Tensor, shape: tuple[int, ...], fill: float) -> Tensor:
    out = torch.full(shape, fill, dtype=t.dtype, device=t.device)
    out[tuple(slice(0, s) for s in t.shape)] = t
    return out


def single_row(rows: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Train-time tables: one task's rows as a one-slot table (views: gradients flow)."""
    return {k: v.unsqueeze(0) for k, v in rows.items()}


def slot_rows(slots: Tensor) -> tuple[Tensor, Tensor]:
    """(rows, sel): the batch rows with a slot (>= 0) and their slots."""
    rows = torch.nonzero(slots >= 0, as_tuple=True)[0]
    return rows, slots[rows]


@dataclasses.dataclass(frozen=True)
class Rows:
    """The batch rows one table acts on. The engine orders a batch so that each table's
    rows are adjacent (``span``): then reading them is a view and adding to them is an
    in-place add on a slice, with no gather and no scatter."""

    index: Tensor  # (n,) ascending batch rows
    span: slice | None  # the same rows as a slice, when they are contiguous

    @classmethod
    def of(cls, slots: Tensor) -> tuple[Rows, Tensor]:
        """(rows, sel): the rows with a slot (>= 0) and their slots."""
        index, sel = slot_rows(slots)
        n, span = len(index), None
        if n:
            first, last = (int(v) for v in index[[0, -1]].tolist())
            if last - first + 1 == n:
                span = slice(first, last + 1)
        return cls(index, span), sel

    def __len__(self) -> int:
        return len(self.index)

    def take(self, x: Tensor) -> Tensor:
        """x's rows (a view when contiguous)."""
        return x[self.span] if self.span is not None else x[self.index]

    def add(self, y: Tensor, delta: Tensor) -> Tensor:
        """y[rows] += delta (broadcast over y's other dims): in place when serving, out of
        place when autograd records. ``delta`` takes y's dtype (under autocast y is bf16)."""
        if delta.dtype != y.dtype:
            delta = delta.to(y.dtype)
        if delta.shape[1:] != y.shape[1:] and (self.span is None or torch.is_grad_enabled()):
            delta = delta.expand(len(self.index), *y.shape[1:])
        if torch.is_grad_enabled():
            return y.index_add(0, self.index, delta)
        if self.span is not None:
            y[self.span] += delta
            return y
        return y.index_add_(0, self.index, delta)
