"""How the frozen backbone multiplies: fp32 (exact), int8 (its Linear weights quantized), bf16.

Only the backbone changes: every task's tensors (PASTA vectors, prefixes, LoRA factors,
BitFit and sparse deltas, heads) stay fp32 under ``int8``, and add to the int8 Linear's
fp32 output exactly as they add to the fp32 one. ``int8`` quantizes each frozen Linear
weight symmetrically per output channel, and each token's activations as they come, and
multiplies with torch's int8 matrix product (oneDNN: VNNI/AMX where the CPU has them);
embeddings, LayerNorms, attention and the pooler stay fp32. Each Linear's input channels are
smoothed first (polyhead.engine.calibration: part of a channel's range moved into the
weights, calibrated once at load), which halves int8's error on the encoder's output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from polyhead.engine.calibration import input_ranges
from polyhead.engine.config import PRECISIONS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def serving_linears(model: torch.nn.Module, precision: str, device: torch.device,
                    tokenizer: PreTrainedTokenizerBase | None = None) -> Linears | None:
    """The serve-time Linear kernels for a precision: int8 (smoothed with ranges calibrated
    on the fp32 model when a tokenizer is given), prepacked fp32 on a CPU, or None
    (F.linear on the module's own weights: bf16, GPUs)."""
    if precision == "int8":
        ranges = None if tokenizer is None else input_ranges(model, tokenizer, encoder_linears(model))
        return Int8Linears(model, input_ranges=ranges)
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

    With ``input_ranges`` (Linear path -> max |x_j| per input channel, from
    polyhead.engine.calibration) each Linear is smoothed: the activations are divided by
    s_j = max|x_j|^ALPHA / max|W_j|^(1-ALPHA) as they are quantized and the weight's columns
    multiplied by it, the same product in exact arithmetic with the outlier channels'
    range shared with the weights. s is fixed at load, so a row's answer still depends on
    its own activations only.

    The quantize and the rescale around the product are elementwise passes over the
    activations that cost as much as the product when run op by op (BENCHMARKS "Engine");
    with ``compiled`` they run as two small kernels of inductor's (dynamic shapes: one per
    function for every batch and width), built once per process at construction (from
    inductor's on-disk cache after the first), and op by op where inductor cannot build.
    """

    def __init__(self, model: torch.nn.Module, compiled: bool = True,
                 input_ranges: dict[str, Tensor] | None = None) -> None:
        ranges = input_ranges or {}
        self.weights = {name: _quantize(mod, ranges.get(name))
                        for name, mod in encoder_linears(model).items()}
        self.quantize_rows, self.rescale = _compiled_kernels() if compiled else (quantize_rows, rescale)

    def __call__(self, name: str, x: Tensor) -> Tensor:
        w_t, w_scale, bias, x_div = self.weights[name]  # (in, out) int8, (out,), (out,), (in,)
        lead = x.shape[:-1]
        xq, x_scale = self.quantize_rows(x.reshape(-1, x.shape[-1]), x_div)  # (N, in) int8, (N, 1)
        y = self.rescale(torch._int_mm(xq, w_t), x_scale, w_scale, bias)  # (N, out)
        return y.view(*lead, -1)

    def __contains__(self, name: str) -> bool:
        return name in self.weights


def quantize_rows(x2: Tensor, x_div: Tensor) -> tuple[Tensor, Tensor]:
    """(N, in) fp32, divided per channel by x_div (in,) (the smoothing; ones without) ->
    (N, in) int8 and (N, 1) scales: symmetric, each row its own scale (max |x| of the row
    over 127; max and -min, not abs, so that no (N, in) temporary)."""
    xs = x2 / x_div
    amax = torch.maximum(xs.amax(1, keepdim=True), xs.amin(1, keepdim=True).neg_())
    scale = amax.div_(127).clamp_(min=1e-12)
    return xs.div_(scale).round_().to(torch.int8), scale


def rescale(acc: Tensor, x_scale: Tensor, w_scale: Tensor, bias: Tensor) -> Tensor:
    """The int32 product (N, out) back to fp32: times the row's and the channel's scales,
    plus the bias."""
    return acc.float().mul_(x_scale).mul_(w_scale).add_(bias)


Kernels = tuple[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
                Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]]
_KERNELS: Kernels | None = None


def _compiled_kernels() -> Kernels:
    """quantize_rows and rescale compiled (dynamic shapes), built and run once here, under
    inference mode as the engine runs them; the eager functions where inductor fails (no C++
    compiler, say)."""
    global _KERNELS
    if _KERNELS is None:
        q, r = torch.compile(quantize_rows, dynamic=True), torch.compile(rescale, dynamic=True)
        try:
            with torch.inference_mode():  # sizes all distinct: no two dims traced as one
                xq, xs = q(torch.randn(10, 16), torch.rand(16) + 0.5)
                r(torch._int_mm(xq, torch.ones(16, 24, dtype=torch.int8)), xs, torch.ones(24),
                  torch.zeros(24))
            _KERNELS = (q, r)
        except Exception as e:  # any failure to build: run op by op instead
            log.warning("int8: inductor could not build the quantize/rescale kernels (%s); "
                        "running them op by op", e)
            _KERNELS = (quantize_rows, rescale)
    return _KERNELS


ALPHA = 0.7  # smoothing strength: chosen on SST-2 and RTE training sentences (BENCHMARKS "Engine")


def smoothing(x_range: Tensor, w: Tensor) -> Tensor:
    """s (in,): max|x_j|^ALPHA / max_o |W_oj|^(1-ALPHA), clamped away from 0."""
    s = x_range.clamp(min=1e-5) ** ALPHA / w.abs().amax(0).clamp(min=1e-5) ** (1 - ALPHA)
    return s.clamp(min=1e-5)


def _quantize(mod: torch.nn.Linear, x_range: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(int8 weight (in, out), its per-channel scales, fp32 bias, the activations' divisor
    (in,)): the weight's columns times s when smoothed (s from ``x_range``), else ones."""
    w = mod.weight.detach().to("cpu", torch.float32)  # (out, in)
    s = torch.ones(w.shape[1]) if x_range is None else smoothing(x_range.to("cpu", torch.float32), w)
    w = w * s[None, :]
    scale = w.abs().amax(dim=1).div(127).clamp(min=1e-12)  # (out,)
    w_t = (w / scale[:, None]).round().to(torch.int8).t().contiguous()  # (in, out)
    bias = (torch.zeros(w.shape[0]) if mod.bias is None
            else mod.bias.detach().to("cpu", torch.float32))
    return w_t, scale, bias, s
