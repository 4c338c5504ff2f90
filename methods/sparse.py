"""Sparse diffs over backbone weights (Child-Tuning_D/F and DPS artifacts).

Stored per touched parameter as sorted flat indices and values. At serve time a 2-D
weight diff is a CSR matrix: the task's rows get y += x (dW)^T, never a dense copy.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from methods.config import BaseConfig, require
from methods.encoder import BatchContext, Effect, add_rows
from methods.errors import ArtifactError
from methods.registry import Kind, TaskPart, check_float, register_kind
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


class SparseEffect(Effect):
    def __init__(self, parts: Sequence[TaskPart]) -> None:
        self.parts = parts
        names = {k[2:].rsplit(".", 1)[0] for p in parts for k in p.tensors}
        self.linear_names = frozenset(n for n in names if not n.endswith("LayerNorm"))
        self.norm_names = frozenset(n for n in names if n.endswith("LayerNorm"))
        self.needs_normed = any(k.endswith("LayerNorm.weight") for p in parts for k in p.tensors)

    def linear(self, name: str, x: Tensor, y: Tensor) -> Tensor:
        for p in self.parts:
            w, b = p.tensors.get(f"W:{name}.weight"), p.tensors.get(f"b:{name}.bias")
            if w is None and b is None:
                continue
            n, T = len(p.rows), x.shape[1]
            if w is None:
                y = add_rows(y, p.rows, b.expand(n, T, y.shape[-1]))  # type: ignore[union-attr]
                continue
            xr = x[p.rows].reshape(n * T, -1)  # (n T, in)
            d = torch.sparse.mm(w, xr.t()).t().reshape(n, T, -1)  # (n, T, out)
            y = add_rows(y, p.rows, d if b is None else d + b)
        return y

    def norm(self, name: str, normed: Tensor | None, y: Tensor) -> Tensor:
        for p in self.parts:
            g, b = p.tensors.get(f"b:{name}.weight"), p.tensors.get(f"b:{name}.bias")
            if g is None and b is None:
                continue
            d = y.new_zeros(len(p.rows), *y.shape[1:])
            if g is not None:
                assert normed is not None
                d = d + normed[p.rows] * g
            if b is not None:
                d = d + b
            y = add_rows(y, p.rows, d)
        return y


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
        tunable = set(spec.tunable_params())
        for key in tensors:
            if not (key.startswith("sparse.") and key.endswith((IDX, VAL))):
                raise ArtifactError("tensor_names", f"sparse: unexpected tensor {key!r}")
        total = 0
        for p in params_of(tensors):
            if p not in tunable:
                raise ArtifactError("tensor_names", f"sparse: {p!r} is not a tunable backbone parameter")
            idx, val = tensors[f"sparse.{p}{IDX}"], tensors.get(f"sparse.{p}{VAL}")
            if val is None:
                raise ArtifactError("tensor_names", f"sparse: {p}{IDX} has no {p}{VAL}")
            _check_entries(p, idx, val, spec)
            total += len(idx)
        for key in tensors:
            if key.endswith(VAL) and key[:-len(VAL)] + IDX not in tensors:
                raise ArtifactError("tensor_names", f"sparse: {key} has no indices")
        budget = sum(_numel(spec.param_shapes[p]) for p in tunable)
        if total > cfg.density * budget + 1:
            raise ArtifactError("density", f"sparse: {total} entries exceed the density "
                                f"budget {cfg.density} of {budget} tunable weights")

    def prepare(self, tensors: Mapping[str, Tensor], spec: BackboneSpec, cfg: SparseConfig,
                device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        out = {}
        for p in params_of(tensors):
            idx, val = tensors[f"sparse.{p}{IDX}"], tensors[f"sparse.{p}{VAL}"]
            shape = spec.param_shapes[p]
            if len(shape) == 2:
                rows, cols = idx // shape[1], idx % shape[1]
                coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), val, shape,
                                              check_invariants=False)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
                    csr = coo.coalesce().to_sparse_csr()
                out[f"W:{p}"] = csr.to(device=device, dtype=dtype)
            else:
                dense = torch.zeros(_numel(shape), dtype=val.dtype)
                dense[idx] = val
                out[f"b:{p}"] = dense.to(device=device, dtype=dtype)
        return out

    def effect(self, parts: Sequence[TaskPart], ctx: BatchContext) -> Effect:
        return SparseEffect(parts)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


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
