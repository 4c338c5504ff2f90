"""Sparse diffs over backbone weights (Child-Tuning_D/F and DPS artifacts).

Stored per touched parameter as sorted flat indices and values. At serve time a task's
slot holds, per touched Linear weight, its entries in CSR order (per-output-row counts,
input indices, values; padded to the table's longest); a batch adds every sparse row's
x (dW)^T with one block-diagonal CSR product per Linear. Vector parameters are dense.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping

import torch
from torch import Tensor

from methods.bitfit import offsets as bitfit_offsets
from methods.config import BaseConfig, require
from methods.encoder import BatchContext, Effect, add_rows
from methods.errors import ArtifactError
from methods.registry import Kind, check_float, register_kind
from methods.slots import slot_rows
from methods.spec import BackboneSpec

IDX, VAL = ".indices", ".values"


@dataclasses.dataclass(frozen=True)
class SparseConfig(BaseConfig):
    density: float = 0.01  # budget: changed weights / tunable weights

    def __post_init__(self) -> None:
        require(isinstance(self.density, (int, float)) and 0 < self.density <= 1,
                "SparseConfig", f"density must be in (0, 1], got {self.density!r}")


def params_of(tensors: Mapping[str, Tensor]) -> list[str]:
    """Backbone parameter names that a raw sparse artifact touches."""
    return sorted(k[len("sparse."):-len(IDX)] for k in tensors if k.endswith(IDX))


def from_dense(diffs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Artifact tensors for the nonzeros of each parameter's dense diff."""
    out: dict[str, Tensor] = {}
    for name, d in sorted(diffs.items()):
        flat = d.detach().reshape(-1).float().cpu()
        idx = torch.nonzero(flat, as_tuple=True)[0]
        if len(idx):
            out[f"sparse.{name}{IDX}"] = idx.to(torch.int64)
            out[f"sparse.{name}{VAL}"] = flat[idx].contiguous()
    return out


def to_dense(tensors: Mapping[str, Tensor], spec: BackboneSpec) -> dict[str, Tensor]:
    """Dense diff per touched parameter (for patching a model copy)."""
    out = {}
    for p in params_of(tensors):
        d = torch.zeros(spec.param_shapes[p]).reshape(-1)
        d[tensors[f"sparse.{p}{IDX}"]] = tensors[f"sparse.{p}{VAL}"]
        out[p] = d.reshape(spec.param_shapes[p])
    return out


@dataclasses.dataclass(frozen=True)
class SparseMatrix:
    """A Linear weight diff's nonzeros in CSR order: row o holds counts[o] entries, the
    next ones of (in_idx, values) after those of rows < o."""

    counts: Tensor  # (out,) int32
    in_idx: Tensor  # (E,) int32
    values: Tensor  # (E,) float


@dataclasses.dataclass(frozen=True)
class SparseRows:
    """A sparse artifact in serve-time form: the entries of each touched Linear weight, the
    vector parameters (Linear and LayerNorm biases, LayerNorm gains) as dense deltas, and
    each touched embedding table's rows."""

    matrices: dict[str, SparseMatrix]  # Linear path -> its weight's entries
    biases: Tensor | None  # (D,) every bias delta end to end (bitfit.offsets order), or None
    gains: Tensor | None  # (G,) every LayerNorm weight delta end to end, or None
    # embedding table path (e.g. embeddings.word_embeddings) -> its touched rows
    embeddings: dict[str, SparseEmbedding] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, tensors: Mapping[str, Tensor], spec: BackboneSpec) -> SparseRows:
        dense = to_dense({k: v for k, v in tensors.items() if not _is_matrix(k, spec)}, spec)
        mats, tables = {}, set(spec.embedding_params())
        for p in params_of(tensors):
            if len(spec.param_shapes[p]) == 2 and p not in tables:
                idx, val = tensors[f"sparse.{p}{IDX}"], tensors[f"sparse.{p}{VAL}"]
                out, cols = spec.param_shapes[p]
                counts = torch.bincount(idx // cols, minlength=out).to(torch.int32)
                mats[p[:-len(".weight")]] = SparseMatrix(counts, (idx % cols).to(torch.int32), val)
        embeddings = {p[:-len(".weight")]: SparseEmbedding.of(tensors[f"sparse.{p}{IDX}"],
                                                             tensors[f"sparse.{p}{VAL}"],
                                                             spec.param_shapes[p])
                      for p in params_of(tensors) if p in tables}
        return cls(mats, _flat(dense, spec, spec.bias_params()),
                   _flat(dense, spec, [n + ".weight" for n in spec.norm_names()]),
                   embeddings=embeddings)

    def table_rows(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for m, e in self.matrices.items():
            out[f"{m}.count"], out[f"{m}.in"], out[f"{m}.val"] = e.counts, e.in_idx, e.values
        if self.biases is not None:
            out[BIASES] = self.biases
        if self.gains is not None:
            out[GAINS] = self.gains
        for name, emb in self.embeddings.items():
            out[name + EMB_POS], out[name + EMB_VEC] = emb.positions(), emb.vectors
        return out


@dataclasses.dataclass(frozen=True)
class SparseEmbedding:
    """An embedding table's diff (word, position or token type; a whole-model diff from
    ``polyhead train --recipe paper`` has them), row-sparse: the touched rows' ids (sorted)
    and their delta vectors. Stored in the artifact as any parameter's entries. In the slot
    table: the packed vectors and a direct map id -> 1 + packed row (0: untouched), so that a
    batch gathers each token's delta by (slot, id) and adds it to the embedding sum before
    the embedding LayerNorm: O(1) per token, no loop over tasks, no per-task vocab x d copy;
    the map costs 4 bytes per table row per slot."""

    ids: Tensor  # (R,) int64, strictly increasing
    vectors: Tensor  # (R, d) float: row ids[r]'s delta
    num_rows: int  # the table's rows (vocabulary, positions or token types)

    @classmethod
    def of(cls, idx: Tensor, values: Tensor, shape: tuple[int, ...]) -> SparseEmbedding:
        """From a table's flat sorted entries (as stored in the artifact)."""
        rows, cols = shape
        row = idx // cols
        ids = torch.unique_consecutive(row)
        vectors = values.new_zeros(len(ids), cols)
        vectors[torch.searchsorted(ids, row), idx % cols] = values
        return cls(ids, vectors, rows)

    def positions(self) -> Tensor:
        """(num_rows,) int32: row id -> 1 + its place in ``vectors``; 0 where untouched (the
        slot tables' fill, so a slot without this table, or a freed one, touches nothing)."""
        pos = torch.zeros(self.num_rows, dtype=torch.int32)
        pos[self.ids] = torch.arange(1, len(self.ids) + 1, dtype=torch.int32)
        return pos


BIASES, GAINS = "sparse.biases", "sparse.gains"
EMB_POS, EMB_VEC = ".rowpos", ".rowvec"  # embedding table fields: id -> 1 + packed row, rows


def _is_matrix(key: str, spec: BackboneSpec) -> bool:
    name = key[len("sparse."):].rsplit(".", 1)[0]
    return len(spec.param_shapes.get(name, ())) == 2


def _flat(dense: Mapping[str, Tensor], spec: BackboneSpec, names: list[str]) -> Tensor | None:
    if not any(n in dense for n in names):
        return None
    return torch.cat([dense[n] if n in dense else torch.zeros(spec.param_shapes[n])
                      for n in names])


class SparseEffect(Effect):
    """All sparse rows of a batch as one block-diagonal CSR matrix per Linear (row r's
    block is its slot's entries), applied with one sparse product: no loop over tasks."""

    def __init__(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> None:
        self.tables, self.dtype = tables, ctx.dtype
        self.rows, self.sel = slot_rows(slots)
        spec = ctx.spec
        self.offsets = bitfit_offsets(spec)
        self.gain_offsets = {n: (i * spec.hidden, (i + 1) * spec.hidden)
                             for i, n in enumerate(spec.norm_names())}
        self.biases = tables[BIASES][self.sel].to(ctx.dtype) if BIASES in tables else None
        self.gains = tables[GAINS][self.sel].to(ctx.dtype) if GAINS in tables else None
        mats = frozenset(k[:-len(".val")] for k in tables if k.endswith(".val"))
        self.matrices = mats
        self.linear_names = frozenset(spec.linear_names()) if self.biases is not None else mats
        self.norm_names = frozenset(spec.norm_names()) if (
            self.biases is not None or self.gains is not None) else frozenset()
        self.needs_normed = self.gains is not None

    def _block_csr(self, name: str, n_in: int) -> Tensor:
        """(n (out + 1), n in) CSR: the n rows' weight diffs of Linear ``name`` on the
        diagonal. Each block has one extra output row that takes the slot's padding
        entries (zeros), so that the padded rows of the table are used as they are."""
        t, sel, n = self.tables, self.sel, len(self.sel)
        ins = t[f"{name}.in"][sel]  # (n, E)
        counts = t[f"{name}.count"][sel]  # (n, out)
        pad = ins.shape[1] - counts.sum(1, keepdim=True, dtype=torch.int32)
        per_row = torch.cat([counts, pad], 1).reshape(-1)
        crow = per_row.new_zeros(len(per_row) + 1)
        torch.cumsum(per_row, 0, dtype=torch.int32, out=crow[1:])
        base = torch.arange(n, device=sel.device, dtype=torch.int32)[:, None] * n_in
        col = (ins + base).reshape(-1)
        val = t[f"{name}.val"][sel].reshape(-1).to(self.dtype)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(crow, col, val, (len(per_row), n * n_in),
                                           check_invariants=False)

    def linear(self, name: str, x: Tensor, y: Tensor) -> Tensor:
        n, T, out = len(self.rows), y.shape[1], y.shape[2]
        delta = None
        if name in self.matrices:
            xt = x[self.rows].transpose(1, 2).reshape(n * x.shape[2], T)  # (n in, T)
            d = self._block_csr(name, x.shape[2]) @ xt  # (n (out + 1), T)
            delta = d.view(n, out + 1, T)[:, :out].transpose(1, 2)  # (n, T, out)
        if self.biases is not None:
            a, b = self.offsets[name]
            bias = self.biases[:, None, a:b]
            delta = bias.expand(n, T, out) if delta is None else delta + bias
        return y if delta is None else add_rows(y, self.rows, delta)

    def norm(self, name: str, normed: Tensor | None, y: Tensor) -> Tensor:
        n = len(self.rows)
        d = y.new_zeros(n, *y.shape[1:])
        if self.gains is not None:
            assert normed is not None
            a, b = self.gain_offsets[name]
            d = d + normed[self.rows] * self.gains[:, None, a:b]
        if self.biases is not None:
            a, b = self.offsets[name]
            d = d + self.biases[:, None, a:b]
        return add_rows(y, self.rows, d)


class SparseEmbedEffect(SparseEffect):
    """SparseEffect plus the embedding tables' deltas: each row's tokens gather their
    deltas from the row's slot, for every table present (at most 3), in one pass."""

    embeds = True

    def __init__(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> None:
        super().__init__(tables, slots, ctx)
        self.embed_rows = torch.nonzero(slots >= 0, as_tuple=True)[0]  # (n,)
        self.embed_slots = slots[self.embed_rows]  # (n,)
        self.embed_tables = [p[:-len(".weight")] for p in ctx.spec.embedding_params()
                             if p[:-len(".weight")] + EMB_POS in tables]

    def embed(self, lookups: Mapping[str, Tensor], h: Tensor) -> Tensor:
        rows, slot = self.embed_rows, self.embed_slots[:, None]  # (n,), (n, 1)
        delta = h.new_zeros(len(rows), *h.shape[1:])  # (n, T, d)
        for name in self.embed_tables:
            pos = self.tables[name + EMB_POS][slot, lookups[name][rows]]  # (n, T): 0 untouched
            vec = self.tables[name + EMB_VEC][slot, (pos - 1).clamp(min=0)].to(h.dtype)  # (n, T, d)
            delta = delta + torch.where(pos[..., None] > 0, vec, 0.0)
        if torch.is_grad_enabled():
            return h.index_add(0, rows, delta)
        return h.index_add_(0, rows, delta)


def has_embeddings(tables: Mapping[str, Tensor]) -> bool:
    return any(k.endswith(EMB_POS) for k in tables)


class Sparse(Kind):
    name = "sparse"
    config_cls = SparseConfig
    prefix = "sparse."
    trainable = False  # trained as masked full weights by the trainer, then diffed

    def shapes(self, spec: BackboneSpec, cfg: SparseConfig) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError("sparse artifacts have data-dependent shapes; use validate()")

    def init(self, spec: BackboneSpec, cfg: SparseConfig, *, zero: bool,
             generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Zero: no entries. Random: every tunable parameter at the config's density."""
        if zero:
            return {}
        diffs = {}
        for name in spec.tunable_params():
            n = _numel(spec.param_shapes[name])
            flat = torch.zeros(n)
            idx = torch.randperm(n, generator=generator)[: int(cfg.density * n)]
            flat[idx] = torch.randn(len(idx), generator=generator) * 0.02
            diffs[name] = flat.reshape(spec.param_shapes[name])
        return from_dense(diffs)

    def validate(self, tensors: Mapping[str, Tensor], spec: BackboneSpec, cfg: SparseConfig) -> None:
        tunable, tables = set(spec.tunable_params()), set(spec.embedding_params())
        for key in tensors:
            if not (key.startswith("sparse.") and key.endswith((IDX, VAL))):
                raise ArtifactError("tensor_names", f"sparse: unexpected tensor {key!r}")
        entries = {"layers": 0, "embeddings": 0}
        for p in params_of(tensors):
            if p not in tunable | tables:
                raise ArtifactError("tensor_names", f"sparse: {p!r} is not a backbone parameter a "
                                    "sparse diff may touch (encoder layers, embedding LayerNorm, "
                                    "embedding tables)")
            idx, val = tensors[f"sparse.{p}{IDX}"], tensors.get(f"sparse.{p}{VAL}")
            if val is None:
                raise ArtifactError("tensor_names", f"sparse: {p}{IDX} has no {p}{VAL}")
            _check_entries(p, idx, val, spec)
            entries["embeddings" if p in tables else "layers"] += len(idx)
        for key in tensors:
            if key.endswith(VAL) and key[:-len(VAL)] + IDX not in tensors:
                raise ArtifactError("tensor_names", f"sparse: {key} has no indices")
        _check_budget(entries["layers"], tunable, "tunable encoder-layer", spec, cfg)
        _check_budget(entries["embeddings"], tables, "embedding-table", spec, cfg)

    def rows(self, tensors: Mapping[str, Tensor], spec: BackboneSpec,
             cfg: SparseConfig) -> dict[str, Tensor]:
        return SparseRows.of(tensors, spec).table_rows()

    def table_key(self, rows: Mapping[str, Tensor]) -> str:
        """Tasks go to tables by size class (total entries, rounded up to a power of 2): a
        table pads every slot to its largest task, so a 1 % task never pays for a 5 % one's
        entries (a batch runs one product per class present, not per task)."""
        total = sum(v.numel() for k, v in rows.items() if k.endswith((".val", EMB_VEC)))
        return f"{self.name}/{1 << max(0, total - 1).bit_length()}"

    def effect(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> Effect:
        if has_embeddings(tables):
            return SparseEmbedEffect(tables, slots, ctx)
        return SparseEffect(tables, slots, ctx)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _check_budget(total: int, params: set[str], what: str, spec: BackboneSpec,
                  cfg: SparseConfig) -> None:
    """The density budget holds for each part on its own: at most ``density`` of the
    encoder-layer weights (with the embedding LayerNorm), and at most ``density`` of the
    embedding tables' weights (a servable artifact, with frozen embeddings, has none; a
    whole-model one has density 1)."""
    budget = sum(_numel(spec.param_shapes[p]) for p in params)
    if total > cfg.density * budget + 1:
        raise ArtifactError("density", f"sparse: {total} entries exceed the density "
                            f"budget {cfg.density} of {budget} {what} weights")


def _check_entries(p: str, idx: Tensor, val: Tensor, spec: BackboneSpec) -> None:
    if idx.dtype != torch.int64 or idx.dim() != 1:
        raise ArtifactError("tensor_dtype", f"sparse: {p}{IDX} must be a 1-D int64 tensor")
    if val.dim() != 1 or len(val) != len(idx):
        raise ArtifactError("tensor_shape", f"sparse: {p}{VAL} must be 1-D with {len(idx)} entries")
    check_float(p + VAL, val)
    n = _numel(spec.param_shapes[p])
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ArtifactError("tensor_shape", f"sparse: {p}{IDX} out of range [0, {n})")
    if len(idx) > 1 and not bool((idx[1:] > idx[:-1]).all()):
        raise ArtifactError("tensor_shape", f"sparse: {p}{IDX} must be strictly increasing")


register_kind(Sparse())
