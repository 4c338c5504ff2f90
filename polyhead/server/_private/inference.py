"""Classify: input checks where requests enter, the batched forward, and the response."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

from polyhead.engine import Engine, LoadedTask, TextInput
from polyhead.engine.engine import Encoded, plan_buckets
from polyhead.server._private.errors import InvalidInput
from polyhead.server.bank import Resident, TaskMeta
from polyhead.v1 import polyhead_pb2 as pb


@dataclasses.dataclass(eq=False)
class BatchItem:
    """One Classify request's rows (tokenized), all for one task version."""

    enc: list[Encoded]
    task: LoadedTask

    def __len__(self) -> int:
        return len(self.enc)


@dataclasses.dataclass
class BatchStats:
    rows: int
    tasks: int
    kind_rows: dict[str, int]
    real_tokens: int
    padded_tokens: int
    seconds: float = 0.0  # the forward's wall time


Row = tuple[list[float], bool]  # a row's logits (C,), and whether its input was truncated


def parse_inputs(request: pb.ClassifyRequest, max_inputs: int, max_chars: int) -> list[TextInput]:
    """The request's inputs, checked; with ``truncate`` a text over ``max_chars`` is cut to it
    (``cut_inputs`` says which), else it is refused."""
    n = len(request.inputs)
    if n == 0:
        raise InvalidInput("inputs: a Classify request needs at least one input")
    check_count(n, max_inputs)
    out: list[TextInput] = []
    for i, x in enumerate(request.inputs):
        texts = (x.text, x.pair) if x.HasField("pair") else (x.text,)
        for name, t in zip(("text", "pair"), texts, strict=False):
            if not t.strip():
                raise InvalidInput(f"inputs[{i}].{name}: empty text")
            if len(t) > max_chars and not request.truncate:
                raise InvalidInput(f"inputs[{i}].{name}: {len(t)} characters; the limit is "
                                   f"{max_chars} (set `truncate` to cut longer texts)")
        texts = tuple(t[:max_chars] for t in texts)
        out.append(texts[0] if len(texts) == 1 else (texts[0], texts[1]))
    return out


def check_count(n: int, max_inputs: int) -> None:
    """InvalidInput for more than ``max_inputs`` inputs (the HTTP route counts them in the
    JSON, before a message is built)."""
    if n > max_inputs:
        raise InvalidInput(f"inputs: {n} inputs in one request; the limit is {max_inputs}")


def cut_inputs(request: pb.ClassifyRequest, max_chars: int) -> list[bool]:
    """Per input: whether ``parse_inputs`` cut its text or pair to ``max_chars``."""
    return [max(len(x.text), len(x.pair)) > max_chars for x in request.inputs]


def check_form(inputs: Sequence[TextInput], task_id: str, meta: TaskMeta) -> None:
    """Pair tasks take pairs, single-text tasks take single texts."""
    if meta.inputs == "any":
        return
    for i, x in enumerate(inputs):
        is_pair = not isinstance(x, str)
        if is_pair != (meta.inputs == "pair"):
            want = "a text pair (set `pair`)" if meta.inputs == "pair" else "a single text (no `pair`)"
            raise InvalidInput(f"inputs[{i}]: task {task_id!r} takes {want}")


def forward(engine: Engine, items: Sequence[BatchItem]) -> tuple[list[list[Row]], BatchStats]:
    """Every item's rows through one batched engine run (blocking; a worker thread)."""
    t0 = time.perf_counter()
    enc = [e for it in items for e in it.enc]
    tasks = [it.task for it in items for _ in it.enc]
    logits = engine.run_encoded(enc, tasks)
    rows = [(lg.float().tolist(), e.truncated) for lg, e in zip(logits, enc, strict=True)]
    out, start = [], 0
    for it in items:
        out.append(rows[start:start + len(it)])
        start += len(it)
    lengths = [len(e.ids) for e in enc]
    padded = sum(len(b) * max(lengths[i] for i in b)
                 for b in plan_buckets(lengths, engine.max_batch_size))
    kinds: dict[str, int] = {}
    for t in tasks:
        kinds[t.kind.name] = kinds.get(t.kind.name, 0) + 1
    stats = BatchStats(len(enc), len({id(t) for t in tasks}), kinds, sum(lengths), padded,
                       time.perf_counter() - t0)
    return out, stats


def response(res: Resident, rows: Sequence[Row], replica: str) -> pb.ClassifyResponse:
    meta = res.meta
    out = pb.ClassifyResponse(task_id=res.key.task_id, version=res.key.version,
                              version_number=meta.number, labels=meta.labels,
                              regression=meta.regression, replica=replica)
    for logits, truncated in rows:
        if meta.regression:
            out.predictions.add(label_index=-1, value=logits[0], truncated=truncated)
            continue
        probs = softmax(logits)
        best = max(range(len(probs)), key=probs.__getitem__)
        out.predictions.add(label=meta.labels[best], label_index=best, scores=probs,
                            truncated=truncated)
    return out


def softmax(logits: Sequence[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]
