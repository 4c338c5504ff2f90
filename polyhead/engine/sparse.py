"""Sparse diffs over backbone weights (Child-Tuning_D/F and DPS artifacts).

Stored per touched parameter as sorted flat indices and values. At serve time a task's
slot holds, per touched Linear weight, its entries in CSR order (row starts, input
indices, values; padded to the table's longest); a batch adds every sparse row's
x (dW)^T with one block-diagonal CSR product per Linear. A task whose Linear entries are
whole input columns (``structure='columns'``, or any artifact that happens to be) is
kept as those columns instead and runs as one small dense batched product per Linear
on the rows' gathered input features. Vector parameters are dense.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping

import torch
from torch import Tensor

from polyhead.engine.bitfit import offsets as bitfit_offsets
from polyhead.engine.config import STRUCTURES, BaseConfig, require
from polyhead.engine.encoder import BatchContext, Effect, Normed
from polyhead.engine.errors import ArtifactError
from polyhead.engine.kinds import Kind, check_float, register_kind
from polyhead.engine.slots import Rows
from polyhead.engine.spec import BackboneSpec

IDX, VAL = ".indices", ".values"


@dataclasses.dataclass(frozen=True)
class SparseConfig(BaseConfig):
    density: float = 0.01  # budget: changed weights / tunable weights
    # "entries": any weights; "columns": each Linear weight's entries are whole input
    # columns (a structured mask), which batches run as small dense products
    structure: str = "entries"

    def __post_init__(self) -> None:
        require(isinstance(self.density, (int, float)) and 0 < self.density <= 1,
                "SparseConfig", f"density must be in (0, 1], got {self.density!r}")
        require(self.structure in STRUCTURES, "SparseConfig",
                f"structure must be one of {list(STRUCTURES)}, got {self.structure!r}")


def params_of(tensors: Mapping[str, Tensor]) -> list[str]:
    """Backbone parameter names that a raw sparse artifact touches."""
    return sorted(k[len("sparse."):-len(IDX)] for k in tensors if k.endswith(IDX))


def from_dense(diffs: Mapping[str, Tensor], structure: str = "entries") -> dict[str, Tensor]:
    """Artifact tensors for the nonzeros of each parameter's dense diff (under "columns":
    every entry of each matrix column holding a nonzero, so columns stay whole)."""
    out: dict[str, Tensor] = {}
    for name, d in sorted(diffs.items()):
        d = d.detach().float().cpu()
        keep = d != 0
        if structure == "columns" and d.dim() == 2:
            keep = keep.any(0, keepdim=True).expand_as(d)
        flat = d.reshape(-1)
        idx = torch.nonzero(keep.reshape(-1), as_tuple=True)[0]
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
class ColumnMatrix:
    """A Linear weight diff confined to whole input columns (a column-structured mask):
    dW[:, cols[j]] = block[j]. A batch runs it as one small dense batched product on the
    rows' gathered input features: no transposes, no sparse kernel."""

    cols: Tensor  # (k,) int64 input indices
    block: Tensor  # (k, out) float


COLUMN_FILL = 0.9  # entries filling >= this share of the columns they touch: column form


def _column_ids(idx: Tensor, shape: tuple[int, ...]) -> Tensor | None:
    """The input columns a Linear's entries touch, or None when they are not
    column-structured (they fill less than COLUMN_FILL of those columns)."""
    out, n_in = shape
    cols = torch.unique(idx % n_in)
    return None if len(idx) < COLUMN_FILL * len(cols) * out else cols


def _column_form(idx: Tensor, val: Tensor, shape: tuple[int, ...], cols: Tensor) -> ColumnMatrix:
    """The entries as whole ``cols`` (entries missing from them as zeros)."""
    out, n_in = shape
    dense = torch.zeros(out * n_in, dtype=val.dtype)
    dense[idx] = val
    return ColumnMatrix(cols, dense.view(out, n_in)[:, cols].T.contiguous())


@dataclasses.dataclass(frozen=True)
class SparseRows:
    """A sparse artifact in serve-time form: the entries of each touched Linear weight (in
    CSR order, or as whole columns when every touched weight is column-structured), the
    vector parameters (Linear and LayerNorm biases, LayerNorm gains) as dense deltas, and
    each touched embedding table's rows."""

    matrices: dict[str, SparseMatrix]  # Linear path -> its weight's entries (CSR form)
    columns: dict[str, ColumnMatrix]  # Linear path -> its weight's columns (column form)
    biases: Tensor | None  # (D,) every bias delta end to end (bitfit.offsets order), or None
    gains: Tensor | None  # (G,) every LayerNorm weight delta end to end, or None
    # embedding table path (e.g. embeddings.word_embeddings) -> its touched rows
    embeddings: dict[str, SparseEmbedding] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, tensors: Mapping[str, Tensor], spec: BackboneSpec) -> SparseRows:
        dense = to_dense({k: v for k, v in tensors.items() if not _is_matrix(k, spec)}, spec)
        tables = set(spec.embedding_params())
        weights = {p[:-len(".weight")]: (tensors[f"sparse.{p}{IDX}"], tensors[f"sparse.{p}{VAL}"],
                                         spec.param_shapes[p])
                   for p in params_of(tensors) if len(spec.param_shapes[p]) == 2 and p not in tables}
        ids = {m: _column_ids(idx, shape) for m, (idx, _, shape) in weights.items()}
        found = {m: c for m, c in ids.items() if c is not None}
        columns: dict[str, ColumnMatrix] = {}
        mats: dict[str, SparseMatrix] = {}
        if len(found) == len(weights):  # one form per task: columns, else CSR
            columns = {m: _column_form(*weights[m], c) for m, c in found.items()}
        else:
            for m, (idx, val, (out, n_in)) in weights.items():
                counts = torch.bincount(idx // n_in, minlength=out).to(torch.int32)
                mats[m] = SparseMatrix(counts, (idx % n_in).to(torch.int32), val)
        return cls(mats, columns,
                   _flat(dense, spec, spec.bias_params()),
                   _flat(dense, spec, [n + ".weight" for n in spec.norm_names()]),
                   embeddings={p[:-len(".weight")]: SparseEmbedding.of(
                       tensors[f"sparse.{p}{IDX}"], tensors[f"sparse.{p}{VAL}"], spec.param_shapes[p])
                       for p in params_of(tensors) if p in tables})

    def table_rows(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for m, e in self.matrices.items():
            out[f"{m}.crow"], out[f"{m}.in"], out[f"{m}.val"] = _crow(e.counts), e.in_idx, e.values
        for m, c in self.columns.items():
            out[f"{m}.cols"], out[f"{m}.block"] = c.cols, c.block
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


def _crow(counts: Tensor) -> Tensor:
    """(out + 1,) int32: where each output row's entries start, and where they end (the
    slot's padding entries, if any, come after: the effect's extra row takes them)."""
    crow = counts.new_zeros(len(counts) + 1, dtype=torch.int32)
    torch.cumsum(counts, 0, dtype=torch.int32, out=crow[1:])
    return crow


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
    block is its slot's entries), applied with one sparse product: no loop over tasks.
    Rows are adjacent when the engine ordered the batch (``Rows.span``): then x's rows
    are a view and the deltas are added into y's slice in place."""

    def __init__(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> None:
        self.tables, self.dtype = tables, ctx.dtype
        # the CPU's sparse CSR product has no bf16 kernel: there it runs in fp32 (and its
        # deltas are added to the bf16 outputs in their dtype)
        bf16_cpu = ctx.device.type == "cpu" and ctx.dtype == torch.bfloat16
        self.csr_dtype = torch.float32 if bf16_cpu else ctx.dtype
        self.rows, self.sel = Rows.of(slots)
        spec = ctx.spec
        self.offsets = bitfit_offsets(spec)
        self.gain_offsets = {n: (i * spec.hidden, (i + 1) * spec.hidden)
                             for i, n in enumerate(spec.norm_names())}
        self.biases = tables[BIASES][self.sel].to(ctx.dtype) if BIASES in tables else None
        self.gains = tables[GAINS][self.sel].to(ctx.dtype) if GAINS in tables else None
        self.matrices = frozenset(k[:-len(".val")] for k in tables if k.endswith(".val"))
        self.columns = frozenset(k[:-len(".block")] for k in tables if k.endswith(".block"))
        self.linear_names = (frozenset(spec.linear_names()) if self.biases is not None
                             else self.matrices | self.columns)
        self.norm_names = frozenset(spec.norm_names()) if (
            self.biases is not None or self.gains is not None) else frozenset()

    def _block_csr(self, name: str, n_in: int) -> Tensor:
        """(n (out + 1), n in) CSR: the n rows' weight diffs of Linear ``name`` on the
        diagonal. Each block has one extra output row that takes the slot's padding
        entries (zeros), so that the padded rows of the table are used as they are."""
        t, sel, n = self.tables, self.sel, len(self.sel)
        ins = t[f"{name}.in"].index_select(0, sel)  # (n, E)
        E = ins.shape[1]
        blocks = torch.arange(n, device=sel.device, dtype=torch.int32)[:, None]
        crow = (t[f"{name}.crow"].index_select(0, sel) + blocks * E).reshape(-1)  # (n (out + 1),)
        crow = torch.cat([crow, crow.new_full((1,), n * E)])
        col = (ins + blocks * n_in).reshape(-1)
        val = t[f"{name}.val"].index_select(0, sel).reshape(-1).to(self.csr_dtype)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(crow, col, val, (len(crow) - 1, n * n_in),
                                           check_invariants=False)

    def linear(self, name: str, x: Tensor, y: Tensor) -> Tensor:
        n, T, out = len(self.rows), y.shape[1], y.shape[2]
        bias = None
        if self.biases is not None:
            a, b = self.offsets[name]
            bias = self.biases[:, a:b]  # (n, out)
        if name in self.columns:
            return self._column_linear(name, x, y, bias)
        if name not in self.matrices:
            return y if bias is None else self.rows.add(y, bias[:, None, :])
        xt = self.rows.take(x).transpose(1, 2).reshape(n * x.shape[2], T).to(self.csr_dtype)  # (n in, T)
        d = (self._block_csr(name, x.shape[2]) @ xt).view(n, out + 1, T)[:, :out]  # (n, out, T)
        if bias is not None:
            d = d + bias[:, :, None] if torch.is_grad_enabled() else d.add_(bias[:, :, None])
        return self.rows.add(y, d.transpose(1, 2))

    def _column_linear(self, name: str, x: Tensor, y: Tensor, bias: Tensor | None) -> Tensor:
        """Column form: the rows' input features at their slot's columns, times its block."""
        n, T = len(self.rows), x.shape[1]
        cols = self.tables[f"{name}.cols"].index_select(0, self.sel)  # (n, k)
        block = self.tables[f"{name}.block"].index_select(0, self.sel).to(self.dtype)  # (n, k, out)
        feats = torch.gather(self.rows.take(x), 2, cols[:, None, :].expand(n, T, cols.shape[1]))
        span = self.rows.span
        if span is not None and not torch.is_grad_enabled():
            y[span].baddbmm_(feats, block)  # in place on the rows' slice
        else:
            y = self.rows.add(y, torch.bmm(feats, block))
        return y if bias is None else self.rows.add(y, bias[:, None, :])

    def norm(self, name: str, normed: Normed, y: Tensor) -> Tensor:
        d = None
        if self.gains is not None:
            a, b = self.gain_offsets[name]
            d = normed.rows(self.rows) * self.gains[:, None, a:b]
        if self.biases is not None:
            a, b = self.offsets[name]
            bias = self.biases[:, None, a:b]
            d = bias if d is None else d + bias
        return y if d is None else self.rows.add(y, d)


class SparseEmbedEffect(SparseEffect):
    """SparseEffect plus the embedding tables' deltas: each row's tokens gather their
    deltas from the row's slot, for every table present (at most 3), in one pass."""

    embeds = True

    def __init__(self, tables: Mapping[str, Tensor], slots: Tensor, ctx: BatchContext) -> None:
        super().__init__(tables, slots, ctx)
        self.embed_tables = [p[:-len(".weight")] for p in ctx.spec.embedding_params()
                             if p[:-len(".weight")] + EMB_POS in tables]

    def embed(self, lookups: Mapping[str, Tensor], h: Tensor) -> Tensor:
        slot = self.sel[:, None]  # (n, 1)
        delta = None
        for name in self.embed_tables:
            ids = self.rows.take(lookups[name])  # (n, T)
            pos = self.tables[name + EMB_POS][slot, ids]  # (n, T): 0 untouched
            vec = self.tables[name + EMB_VEC][slot, (pos - 1).clamp(min=0)].to(h.dtype)  # (n, T, d)
            d = torch.where(pos[..., None] > 0, vec, 0.0)
            delta = d if delta is None else delta + d
        return h if delta is None else self.rows.add(h, delta)


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
        """Zero: no entries. Random: every tunable parameter at the config's density (whole
        random input columns of each Linear weight under ``structure='columns'``)."""
        if zero:
            return {}
        diffs = {}
        for name in spec.tunable_params():
            shape = spec.param_shapes[name]
            if cfg.structure == "columns" and len(shape) == 2:
                d = torch.zeros(shape)
                cols = torch.randperm(shape[1], generator=generator)[: int(cfg.density * shape[1])]
                d[:, cols] = torch.randn(shape[0], len(cols), generator=generator) * 0.02
                diffs[name] = d
                continue
            n = _numel(shape)
            flat = torch.zeros(n)
            idx = torch.randperm(n, generator=generator)[: int(cfg.density * n)]
            flat[idx] = torch.randn(len(idx), generator=generator) * 0.02
            diffs[name] = flat.reshape(shape)
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
            shape = spec.param_shapes[p]
            if (cfg.structure == "columns" and len(shape) == 2 and p in tunable
                    and _column_ids(idx, shape) is None):
                raise ArtifactError("structure", f"sparse: {p} is not column-structured (its "
                                    f"entries fill < {COLUMN_FILL:.0%} of the columns they touch)")
            entries["embeddings" if p in tables else "layers"] += len(idx)
        for key in tensors:
            if key.endswith(VAL) and key[:-len(VAL)] + IDX not in tensors:
                raise ArtifactError("tensor_names", f"sparse: {key} has no indices")
        _check_budget(entries["layers"], tunable, "tunable encoder-layer", spec, cfg)
        _check_budget(entries["embeddings"], tables, "embedding-table", spec, cfg)

    def rows(self, tensors: Mapping[str, Tensor], spec: BackboneSpec,
             cfg: SparseConfig) -> dict[str, Tensor]:
        return SparseRows.of(tensors, spec).table_rows()

    def measures(self, cfg: SparseConfig) -> dict[str, float]:
        return {"sparse_density": cfg.density}

    def table_key(self, rows: Mapping[str, Tensor]) -> str:
        """Tasks go to tables by form (CSR or columns) and size class (total entries,
        rounded up to a power of 2): a table pads every slot to its largest task, so a 1 %
        task never pays for a 5 % one's entries (a batch runs one product per table
        present, not per task)."""
        total = sum(v.numel() for k, v in rows.items() if k.endswith((".val", ".block", EMB_VEC)))
        form = "/columns" if any(k.endswith(".block") for k in rows) else ""
        return f"{self.name}{form}/{1 << max(0, total - 1).bit_length()}"

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
