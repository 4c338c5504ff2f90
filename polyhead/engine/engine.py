"""The mixed-task engine: one backbone forward for rows of many tasks and kinds."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from polyhead.engine.artifact import TaskArtifact, ValidArtifact
from polyhead.engine.backbone import Backbone
from polyhead.engine.encoder import BatchContext, Effect, Encoder
from polyhead.engine.errors import SlotsExhausted
from polyhead.engine.heads import HeadConfig, apply_heads, head_layout, head_rows, head_table_key, mlp_layout
from polyhead.engine.kinds import Kind
from polyhead.engine.slots import Field, SlotTable, slot_rows
from polyhead.engine.spec import BackboneSpec

TextInput = str | tuple[str, str]
PAD_COST = 512  # a forward's fixed cost, in padded tokens, when planning buckets
GROW_BYTES = 16 << 20  # a table grows by at most this much (or one slot) at a time
SHRINK_BYTES = 4 << 20  # an emptied table, or free slack, larger than this goes back at unload


@dataclasses.dataclass(eq=False)
class LoadedTask:
    """A task resident in an engine's slot tables: where its rows are, what they cost."""

    kind: Kind
    config: Any
    head: HeadConfig
    table: str  # which of the kind's tables holds it (Kind.table_key)
    slot: int  # its row in that table
    head_slot: int  # its row in its head table
    mlp_slot: int  # its row in the mlp-head table, -1 unless the head is an mlp
    tables: SlotTables
    head_table: str = "head"  # which head table holds it (heads.head_table_key)

    @property
    def nbytes(self) -> int:
        """Device bytes of its slots: whole table rows at the tables' present widths (every
        field of the table; a table widens only for tasks of its own size class); 0 once
        unloaded."""
        if self.slot < 0:
            return 0
        t = self.tables
        return (t.kinds[self.table].row_bytes() + t.head_tables[self.head_table].row_bytes()
                + (t.mlps.row_bytes() if self.mlp_slot >= 0 else 0))


@dataclasses.dataclass(frozen=True)
class KindBatch:
    """One kind table as a forward reads it: the kind, the table's fields (field name ->
    (N, *shape)) and each batch row's slot in it (B,), -1 for rows not of this table."""

    kind: Kind
    fields: Mapping[str, Tensor]
    slots: Tensor


@dataclasses.dataclass(frozen=True)
class HeadBatch:
    """One head table as a forward reads it: its fields and each row's slot (B,), -1: none."""

    fields: Mapping[str, Tensor]
    slots: Tensor


@dataclasses.dataclass
class BatchSlots:
    """What one forward reads: per kind table and per head table, its fields and each
    row's slot (-1: none)."""

    kinds: Mapping[str, KindBatch]  # by table key (Kind.table_key)
    heads: Mapping[str, HeadBatch]  # by head table key (heads.head_table_key)
    mlps: Mapping[str, Tensor]
    widths: list[int]  # each row's output count (0: no task, the row returns [CLS])


class SlotTables:
    """One engine's tables: one per kind (and size class), one per head size class and the
    mlp-head table. When a task leaves, a table it leaves empty is given back at once if it
    holds more than ``shrink_bytes``, and trailing free slots worth more than that are
    trimmed: a wide task costs its own rows only, and only while it is resident. Allocated
    within ``budget`` device bytes (None: unbounded): a full table doubles (starting at
    ``capacity`` slots, by at most ``GROW_BYTES`` at a time) as far as the budget allows;
    when even one more slot does not fit, every table gives its trailing free slots back
    (an empty table goes), and then ``SlotsExhausted`` says to unload tasks first. A task
    that alone exceeds the budget still loads into otherwise empty tables (as the bank
    keeps its newest entry), and ``over_budget`` loads one anyway (the bank's last resort
    while every slot is held by requests in flight); a free slot already allocated is
    always used."""

    def __init__(self, spec: BackboneSpec, device: torch.device, dtype: torch.dtype,
                 capacity: int = 16, budget: int | None = None) -> None:
        self.spec, self.device, self.dtype, self.capacity = spec, device, dtype, capacity
        self.budget = budget
        self.shrink_bytes = SHRINK_BYTES
        self.kinds: dict[str, SlotTable] = {}  # by table key (Kind.table_key)
        self.head_tables: dict[str, SlotTable] = {"head": SlotTable("head", device, dtype, 0)}
        self.mlps = SlotTable("mlp", device, dtype, 0)
        self._lock = threading.Lock()  # loads and unloads, one at a time

    @property
    def heads(self) -> SlotTable:
        """The base head table (heads of up to ``heads.BASE_OUTPUTS`` outputs)."""
        return self.head_tables["head"]

    def all_tables(self) -> list[SlotTable]:
        return [*self.kinds.values(), *self.head_tables.values(), self.mlps]

    @property
    def nbytes(self) -> int:
        """Device bytes allocated, free slots included."""
        return sum(t.nbytes for t in self.all_tables())

    @property
    def used_bytes(self) -> int:
        """Device bytes of the slots in use."""
        return sum(t.used * t.row_bytes() for t in self.all_tables() if t.fields)

    def load(self, artifact: ValidArtifact, over_budget: bool = False) -> LoadedTask:
        """Write a checked artifact's rows into free slots of the tables."""
        kind, cfg, spec = artifact.kind_impl, artifact.config, self.spec
        rows = kind.rows(artifact.kind_tensors(), spec, cfg)
        key = kind.table_key(rows)
        layout = kind.layout(rows)
        with self._lock:
            may_exceed = over_budget or self.used_bytes == 0
            table = self.kinds.get(key) or SlotTable(key, self.device, self.dtype, 0)
            slot = self._put(table, layout, rows, may_exceed)
            self.kinds[key] = table
            taken = [(table, slot)]
            try:
                mlp_slot = -1
                if artifact.head.type == "mlp":
                    _, mlp_row = head_rows(artifact.head_tensors(), artifact.head, 0)
                    mlp_slot = self._put(self.mlps, mlp_layout(spec), mlp_row, may_exceed)
                    taken.append((self.mlps, mlp_slot))
                head_row, _ = head_rows(artifact.head_tensors(), artifact.head, mlp_slot)
                hkey = head_table_key(artifact.head)
                heads = self.head_tables.get(hkey) or SlotTable(hkey, self.device, self.dtype, 0)
                head_slot = self._put(heads, head_layout(spec, artifact.head), head_row, may_exceed)
                self.head_tables[hkey] = heads
            except SlotsExhausted:
                for t, s in taken:
                    t.free(s)
                self._shrink(self.kinds, key)
                raise
        return LoadedTask(kind, cfg, artifact.head, key, slot, head_slot, mlp_slot, self, hkey)

    def unload(self, task: LoadedTask) -> None:
        """Free the task's slots (cleared). No batch may still be using the task."""
        if task.slot < 0:
            return
        with self._lock:
            self.kinds[task.table].free(task.slot)
            self.head_tables[task.head_table].free(task.head_slot)
            if task.mlp_slot >= 0:
                self.mlps.free(task.mlp_slot)
            self._shrink(self.kinds, task.table)
            self._shrink(self.head_tables, task.head_table)
            task.slot = task.head_slot = task.mlp_slot = -1

    def trim(self) -> int:
        """Give every table's trailing free slots back; drop kind tables left empty."""
        freed = sum(t.trim() for t in self.all_tables())
        for key in [k for k, t in self.kinds.items() if t.capacity == 0]:
            del self.kinds[key]
        return freed

    def _shrink(self, tables: dict[str, SlotTable], key: str) -> None:
        """After a task left ``tables[key]``: drop it when empty and large (the base head
        table stays), or trim its trailing free slots when they hold a lot."""
        t = tables[key]
        if t.used == 0 and t.nbytes > self.shrink_bytes and t is not self.heads:
            del tables[key]
        elif t.free_slots * t.row_bytes() > self.shrink_bytes:
            t.trim()

    def _put(self, table: SlotTable, layout: Mapping[str, Field], rows: Mapping[str, Tensor],
             may_exceed: bool) -> int:
        grow = self._room(table, layout)
        if grow is None:
            self.trim()
            grow = self._room(table, layout)
        if grow is None and may_exceed:  # the only task (or told to): one more slot, over budget
            grow = table.capacity if table.free_slots else table.capacity + 1
        if grow is None:
            assert self.budget is not None
            raise SlotsExhausted(
                f"no room for a {table.name!r} slot ({table.row_bytes_after(layout)} bytes) in the "
                f"device budget of {self.budget} bytes ({self.used_bytes} in use)")
        return table.put(layout, rows, grow_to=grow)

    def _room(self, table: SlotTable, layout: Mapping[str, Field]) -> int | None:
        """The capacity ``table`` may have after taking one more task (None: no room). A
        free slot at the present width costs nothing new; growth and widening must fit."""
        row = table.row_bytes_after(layout)
        widens = bool(table.fields) and row != table.row_bytes()
        if table.free_slots and not widens:
            return table.capacity
        want = table.capacity if table.free_slots else max(self.capacity, 2 * table.capacity)
        want = min(want, table.capacity + max(1, GROW_BYTES // max(row, 1)))  # wide rows: few
        if self.budget is None:
            return want
        others = self.nbytes - table.nbytes
        fit = (self.budget - others) // row if row else want
        need = table.capacity if table.free_slots else table.capacity + 1
        return min(want, fit) if min(want, fit) >= need else None

    def batch(self, tasks: Sequence[LoadedTask | None], device: torch.device) -> BatchSlots:
        """Each row's slots (one pass over the rows; tensors, not per-task copies)."""
        B = len(tasks)
        kind_slots: dict[str, list[int]] = {}
        head_slots: dict[str, list[int]] = {}
        kinds_of: dict[str, Kind] = {}
        widths = [0] * B
        for i, t in enumerate(tasks):
            if t is None:
                continue
            if t.tables is not self or t.slot < 0:
                raise ValueError(f"row {i}: task is not loaded in this engine's tables")
            kind_slots.setdefault(t.table, [-1] * B)[i] = t.slot
            head_slots.setdefault(t.head_table, [-1] * B)[i] = t.head_slot
            widths[i] = t.head.num_outputs
            kinds_of[t.table] = t.kind
        kinds = {n: KindBatch(kinds_of[n], dict(self.kinds[n].fields), torch.tensor(s, device=device))
                 for n, s in kind_slots.items()}
        heads = {n: HeadBatch(dict(self.head_tables[n].fields), torch.tensor(s, device=device))
                 for n, s in head_slots.items()}
        return BatchSlots(kinds, heads, dict(self.mlps.fields), widths)


@dataclasses.dataclass
class Encoded:
    ids: list[int]
    type_ids: list[int]
    truncated: bool


class Engine:
    def __init__(self, backbone: Backbone, max_batch_size: int = 64, capacity: int = 16,
                 device_budget: int | None = None) -> None:
        """capacity: slots a table starts with (tables double when full); device_budget:
        bytes the tables may allocate on the device (None: unbounded)."""
        self.backbone = backbone
        self.encoder = Encoder(backbone)
        self.tables = SlotTables(backbone.spec, backbone.device, backbone.dtype, capacity,
                                 device_budget)
        self.max_batch_size = max_batch_size
        self.pad_id = backbone.tokenizer.pad_token_id or 0

    @property
    def spec(self) -> BackboneSpec:
        return self.backbone.spec

    def load(self, artifact: TaskArtifact, over_budget: bool = False) -> LoadedTask:
        """Write an artifact into free slots of the engine's tables (``over_budget``: even
        where the device budget has no room; see SlotTables). It is checked against the
        backbone here unless it already was: a ValidArtifact for this backbone (what
        ``decode_artifact`` returns) is not checked twice."""
        return self.tables.load(artifact.checked(self.spec), over_budget)

    def unload(self, task: LoadedTask) -> None:
        """Free a task's slots; the caller guarantees no batch in flight still uses it."""
        self.tables.unload(task)

    def tokenize(self, inputs: Sequence[TextInput]) -> list[Encoded]:
        """Token ids per input, truncated to the backbone's limit (flagged when so)."""
        tok, limit = self.backbone.tokenizer, self.spec.max_length
        out: list[Encoded | None] = [None] * len(inputs)
        singles = [i for i, x in enumerate(inputs) if isinstance(x, str)]
        pairs = [i for i, x in enumerate(inputs) if not isinstance(x, str)]
        for idx, args in ((singles, ([inputs[i] for i in singles],)),
                          (pairs, ([inputs[i][0] for i in pairs], [inputs[i][1] for i in pairs]))):
            if not idx:
                continue
            full = tok(*args, truncation=False, verbose=False, return_token_type_ids=True)
            long = [j for j, ids in enumerate(full["input_ids"]) if len(ids) > limit]
            cut = tok(*[[a[j] for j in long] for a in args], truncation=True, max_length=limit,
                      return_token_type_ids=True) if long else None
            for j, i in enumerate(idx):
                out[i] = Encoded(full["input_ids"][j], full["token_type_ids"][j], False)
            for n, j in enumerate(long):
                assert cut is not None
                out[idx[j]] = Encoded(cut["input_ids"][n], cut["token_type_ids"][n], True)
        return [e for e in out if e is not None]

    def run(self, inputs: Sequence[TextInput],
            tasks: Sequence[LoadedTask | None]) -> list[Tensor]:
        """Per-input logits (C_t,), or the [CLS] state (d,) for rows with no task."""
        if len(inputs) != len(tasks):
            raise ValueError(f"{len(inputs)} inputs but {len(tasks)} tasks")
        return self.run_encoded(self.tokenize(inputs), tasks)

    def run_encoded(self, enc: Sequence[Encoded],
                    tasks: Sequence[LoadedTask | None]) -> list[Tensor]:
        out: list[Tensor | None] = [None] * len(enc)
        for bucket in plan_buckets([len(e.ids) for e in enc], self.max_batch_size):
            res = self.forward([enc[i] for i in bucket], [tasks[i] for i in bucket])
            for i, r in zip(bucket, res, strict=True):
                out[i] = r
        return [r for r in out if r is not None]

    @torch.inference_mode()
    def forward(self, enc: Sequence[Encoded], tasks: Sequence[LoadedTask | None]) -> list[Tensor]:
        """One padded forward over ``enc``; per-row outputs as in ``run``."""
        ids, mask, types = self.pad(enc)
        logits = forward_tasks(self.encoder, ids, mask, types, tasks)
        return [logits[i] for i in range(len(enc))]

    def pad(self, enc: Sequence[Encoded]) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T) input ids, attention mask and token type ids, right-padded."""
        dev = self.backbone.device
        ids, mask, types = pad_rows([e.ids for e in enc], [e.type_ids for e in enc], self.pad_id)
        return ids.to(dev), mask.to(dev), types.to(dev)


def pad_rows(ids: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]], pad_id: int,
             mask_dtype: torch.dtype = torch.bool) -> tuple[Tensor, Tensor, Tensor]:
    """(B, T) input ids, attention mask and token type ids, right-padded to the longest
    row, on the CPU: serving's batches and the trainer's."""
    B, T = len(ids), max(len(r) for r in ids)
    out = torch.full((B, T), pad_id, dtype=torch.long)
    types = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=mask_dtype)
    for i, (r, t) in enumerate(zip(ids, type_ids, strict=True)):
        out[i, :len(r)] = torch.tensor(r)
        types[i, :len(r)] = torch.tensor(t)
        mask[i, :len(r)] = 1
    return out, mask, types


def forward_tasks(encoder: Encoder, ids: Tensor, mask: Tensor, types: Tensor,
                  tasks: Sequence[LoadedTask | None]) -> list[Tensor]:
    """Rows' logits (or [CLS] states for rows with no task) after one encoder forward,
    run with each table's rows adjacent (``row_order``) and returned in the given order."""
    order = row_order(tasks)
    if order is None:
        return forward_slots(encoder, ids, mask, types, group_rows(tasks, ids.device))
    idx = torch.tensor(order, device=ids.device)
    res = forward_slots(encoder, ids[idx], mask[idx], types[idx],
                        group_rows([tasks[i] for i in order], ids.device))
    out: list[Tensor] = [res[0]] * len(order)
    for j, i in enumerate(order):
        out[i] = res[j]
    return out


def row_order(tasks: Sequence[LoadedTask | None]) -> list[int] | None:
    """A batch order in which the rows of each table are adjacent (rows without a task
    first, kinds with ``rows_last`` last), so that every effect reads and writes its rows
    as one slice; None when ``tasks`` is already in such an order."""
    def key(i: int) -> tuple[int, str]:
        t = tasks[i]
        return (0, "") if t is None else (2 if t.kind.rows_last else 1, t.table)

    order = sorted(range(len(tasks)), key=key)  # stable: rows of one table keep their order
    return None if order == list(range(len(tasks))) else order


def forward_slots(encoder: Encoder, ids: Tensor, mask: Tensor, types: Tensor,
                  batch: BatchSlots) -> list[Tensor]:
    ctx = encoder.context(ids, mask)
    hidden = encoder.forward(ctx, types, effects_for(batch, ctx), first_only=True)
    cls = hidden[:, 0]  # (B, d)
    out: list[Tensor] = list(cls)
    for head in batch.heads.values():  # one product per head table present
        rows, sel = slot_rows(head.slots)
        if not len(rows):
            continue
        index = rows.tolist()
        width = max(batch.widths[r] for r in index)
        logits = apply_heads(head.fields, batch.mlps, rows, sel, cls, encoder.pooler, width)
        for j, r in enumerate(index):
            out[r] = logits[j, :batch.widths[r]]
    return out


def group_rows(tasks: Sequence[LoadedTask | None], device: torch.device) -> BatchSlots:
    """The batch's slots, from the tasks of its rows (all of one engine)."""
    owner = next((t.tables for t in tasks if t is not None), None)
    if owner is None:
        return BatchSlots({}, {}, {}, [0] * len(tasks))
    return owner.batch(tasks, device)


def effects_for(batch: BatchSlots, ctx: BatchContext) -> list[Effect]:
    """One effect per kind table present in the batch, each gathering its rows by slot."""
    return [k.kind.effect(k.fields, k.slots, ctx) for k in batch.kinds.values() if k.fields]


def plan_buckets(lengths: Sequence[int], max_batch: int) -> list[list[int]]:
    """Split rows, sorted by length, into forwards minimising padded tokens plus a
    fixed cost per forward (dynamic programming over split points)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    L = [lengths[i] for i in order]
    n = len(L)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - max_batch), j):
            c = best[i] + (j - i) * L[j - 1] + PAD_COST
            if c < best[j]:
                best[j], cut[j] = c, i
    buckets = []
    j = n
    while j > 0:
        buckets.append(order[cut[j]:j])
        j = cut[j]
    return buckets[::-1]
