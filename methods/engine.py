"""The mixed-task engine: one backbone forward for rows of many tasks and kinds."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from methods.artifact import TaskArtifact
from methods.backbone import Backbone
from methods.encoder import BatchContext, Effect, Encoder
from methods.heads import HeadConfig, apply_head
from methods.registry import Kind, TaskPart

TextInput = str | tuple[str, str]
PAD_COST = 512  # a forward's fixed cost, in padded tokens, when planning buckets


@dataclasses.dataclass(eq=False)
class LoadedTask:
    """A task ready to run: its tensors prepared on the engine's device."""

    kind: Kind
    config: Any
    head: HeadConfig
    tensors: Mapping[str, Tensor]
    head_tensors: Mapping[str, Tensor]
    nbytes: int


@dataclasses.dataclass
class Encoded:
    ids: list[int]
    type_ids: list[int]
    truncated: bool


class Engine:
    def __init__(self, backbone: Backbone, max_batch_size: int = 64) -> None:
        self.backbone = backbone
        self.encoder = Encoder(backbone)
        self.max_batch_size = max_batch_size
        self.pad_id = backbone.tokenizer.pad_token_id or 0

    @property
    def spec(self):
        return self.backbone.spec

    def load(self, artifact: TaskArtifact) -> LoadedTask:
        """Validate and move an artifact's tensors to the device (serve-time form)."""
        artifact.validate(self.spec)
        bb, kind = self.backbone, artifact.kind_impl
        tensors = kind.prepare(artifact.kind_tensors(), self.spec, artifact.config, bb.device, bb.dtype)
        head = {k: v.to(bb.device, bb.dtype) for k, v in artifact.head_tensors().items()}
        return LoadedTask(kind, artifact.config, artifact.head, tensors, head, artifact.nbytes)

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
        T = max(len(e.ids) for e in enc)
        dev = self.backbone.device
        ids = torch.full((len(enc), T), self.pad_id, dtype=torch.long)
        types = torch.zeros((len(enc), T), dtype=torch.long)
        mask = torch.zeros((len(enc), T), dtype=torch.bool)
        for i, e in enumerate(enc):
            n = len(e.ids)
            ids[i, :n] = torch.tensor(e.ids)
            types[i, :n] = torch.tensor(e.type_ids)
            mask[i, :n] = True
        return ids.to(dev), mask.to(dev), types.to(dev)


def forward_tasks(encoder: Encoder, ids: Tensor, mask: Tensor, types: Tensor,
                  tasks: Sequence[LoadedTask | None]) -> list[Tensor]:
    """Rows' logits (or [CLS] states for rows with no task) after one encoder forward."""
    ctx = encoder.context(ids, mask)
    groups = group_rows(tasks, ids.device)
    hidden = encoder.forward(ctx, types, effects_for(groups, ctx))
    cls = hidden[:, 0]  # (B, d)
    out: list[Tensor] = list(cls)
    for task, rows in groups:
        logits = apply_head(task.head_tensors, task.head, cls[rows], encoder.pooler)
        for r, lg in zip(rows.tolist(), logits, strict=True):
            out[r] = lg
    return out


def group_rows(tasks: Sequence[LoadedTask | None],
               device: torch.device) -> list[tuple[LoadedTask, Tensor]]:
    """Each distinct task in the batch with the (n,) indices of its rows."""
    rows: dict[int, list[int]] = {}
    first: dict[int, LoadedTask] = {}
    for i, t in enumerate(tasks):
        if t is not None:
            rows.setdefault(id(t), []).append(i)
            first.setdefault(id(t), t)
    return [(first[k], torch.tensor(r, device=device)) for k, r in rows.items()]


def effects_for(groups: Sequence[tuple[LoadedTask, Tensor]], ctx: BatchContext) -> list[Effect]:
    by_kind: dict[str, tuple[Kind, list[TaskPart]]] = {}
    for task, rows in groups:
        entry = by_kind.setdefault(task.kind.name, (task.kind, []))
        if task.tensors:
            entry[1].append(TaskPart(rows, task.tensors, task.config))
    return [kind.effect(parts, ctx) for kind, parts in by_kind.values() if parts]


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
