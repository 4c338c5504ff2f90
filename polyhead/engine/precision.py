"""How the frozen backbone multiplies: fp32 (exact), int8 (its Linear weights quantized), bf16.

Only the backbone changes: every task's tensors (PASTA vectors, prefixes, LoRA factors,
BitFit and sparse deltas, heads) stay fp32 under ``int8``, and add to the int8 Linear's
fp32 output exactly as they add to the fp32 one. ``int8`` quantizes each frozen Linear
weight symmetrically per output channel, and each token's activations as they come, and
multiplies with torch's int8 matrix product (oneDNN: VNNI/AMX where the CPU has them);
embeddings, LayerNorms, attention and the pooler stay fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from polyhead.engine.config import PRECISIONS


def serving_linears(model: torch.nn.Module, precision: str, device: torch.device) -> Linears | None:
    """The serve-time Linear kernels for a precision: int8, prepacked fp32 on a CPU, or
    None (F.linear on the module's own weights: bf16, GPUs)."""
    if precision == "int8":
        return Int8Linears(model)
    if precision == "fp32" and PackedLinears.available(device):
        return PackedLinears(model)
    return None


class PrecisionError(ValueError):
    """A precision this build or device cannot run."""


def bf16_native(device: torch.device) -> bool:
    """Whether the device multiplies bf16 in hardware (CUDA with bf16; AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    flags = _cpu_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def dtype_for(precision: str, device: torch.device) -> torch.dtype:
    """The backbone's dtype for a precision, or PrecisionError naming the option."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        if not bf16_native(device):
            raise PrecisionError(f"--precision bf16: {device.type} here has no native bf16 "
                                 "(needs CUDA with bf16, or a CPU with AVX512-BF16/AMX); "
                                 "use fp32 or int8")
        return torch.bfloat16
    if precision == "int8" and device.type != "cpu":
        raise PrecisionError(f"--precision int8 runs on the CPU only (device {device.type}); "
                             "use bf16 on a GPU")
    if precision == "int8" and not hasattr(torch, "_int_mm"):
        raise PrecisionError("--precision int8: this torch build has no int8 matrix product")
    return torch.float32


class Linears(Protocol):
    """Serve-time kernels for the encoder layers' frozen Linears, by path in the model."""

    def __call__(self, name: str, x: Tensor) -> Tensor: ...

    def __contains__(self, name: str) -> bool: ...


def encoder_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The Linears of the encoder's layers (the pooler, which heads apply, is left alone)."""
    return {name: mod for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and name.startswith("encoder.")}


class PackedLinears:
    """fp32 Linears with their weights prepacked once in oneDNN's blocked layout (the
    layout inductor's CPU freezing uses): the same product as F.linear to within fp32
    rounding (summation order), about a third faster per call on the CPUs measured
    (BENCHMARKS "Engine"). Serving only: training runs F.linear, which autograd knows."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.weights = {name: (torch.ops.mkldnn._reorder_linear_weight(mod.weight.detach(), None),
                               None if mod.bias is None else mod.bias.detach())
                        for name, mod in encoder_linears(model).items()}

    def __call__(self, name: str, x: Tensor) -> Tensor:
        packed, bias = self.weights[name]
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    def __contains__(self, name: str) -> bool:
        return name in self.weights

    @staticmethod
    def available(device: torch.device) -> bool:
        return device.type == "cpu" and torch.backends.mkldnn.is_available()


class Int8Linears:
    """Every frozen Linear of the encoder's layers as int8 weights, per output channel (the
    pooler, which heads apply, stays fp32).

    ``self(name, x)`` computes the Linear at ``name`` (its path in the model, e.g.
    ``encoder.layer.0.intermediate.dense``) as an int8 x int8 -> int32 product: each
    token's activations are quantized with a scale of their own (symmetric, per row), so a
    row's answer never depends on the other rows in its batch (mixed == alone holds under
    int8 as under fp32); the output is fp32, with the fp32 bias.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.weights = {name: _quantize(mod) for name, mod in encoder_linears(model).items()}

    def __call__(self, name: str, x: Tensor) -> Tensor:
        w_t, w_scale, bias = self.weights[name]  # (in, out) int8, (out,), (out,) or None
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        x_scale = x2.abs().amax(1, keepdim=True).div_(127).clamp_(min=1e-12)  # (N, 1)
        xq = (x2 / x_scale).round_().to(torch.int8)
        y = torch._int_mm(xq, w_t).float().mul_(x_scale).mul_(w_scale)  # (N, out)
        if bias is not None:
            y.add_(bias)
        return y.view(*lead, -1)

    def __contains__(self, name: str) -> bool:
        return name in self.weights


def _quantize(mod: torch.nn.Linear) -> tuple[Tensor, Tensor, Tensor | None]:
    w = mod.weight.detach().to("cpu", torch.float32)  # (out, in)
    scale = w.abs().amax(dim=1).div(127).clamp(min=1e-12)  # (out,)
    w_t = (w / scale[:, None]).round().to(torch.int8).t().contiguous()  # (in, out)
    bias = None if mod.bias is None else mod.bias.detach().to("cpu", torch.float32)
    return w_t, scale, bias
