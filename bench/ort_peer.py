"""ONNX Runtime as the yardstick: the bare backbone exported, fp32 and dynamic int8 (and
the same with the engine's first-token last layer, ``export_first_token``).

bench.engine calls this module in a process of its own for each round (ORT's worker
threads spin, and would count against a torch run's CPU clock in the same process):

    python -m bench.ort_peer --model model.onnx --batches batches.npz --clock cpu

It prints one JSON line: rows/s over the batches (the same padded batches the engine's
buckets make), and the [CLS] vectors of the first batch for a parity check. The export and
the int8 model are made once per run by ``export`` and ``quantize`` (onnxruntime is a
benchmark-only dependency: ``pip install onnxruntime onnx``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export(model: object, path: Path) -> Path:
    """The Hugging Face encoder's last hidden state as ONNX (opset 17, dynamic batch/length)."""
    import torch

    class Hidden(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    return _to_onnx(Hidden(model), path, {0: "batch", 1: "length"})


def _to_onnx(module: Any, path: Path, hidden_axes: dict[int, str]) -> Path:
    """``module(input_ids, attention_mask, token_type_ids) -> hidden`` as ONNX (opset 17,
    dynamic batch and length; ``hidden_axes``: the output's dynamic axes)."""
    import torch

    ids = torch.full((2, 9), 1000, dtype=torch.long)
    ones, zeros = torch.ones_like(ids), torch.zeros_like(ids)
    axes = {k: {0: "batch", 1: "length"} for k in INPUTS} | {"hidden": hidden_axes}
    torch.onnx.export(module.eval(), (ids, ones, zeros), str(path), input_names=list(INPUTS),
                      output_names=["hidden"], dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def export_first_token(backbone: object, path: Path) -> Path:
    """The same backbone with the engine's cut: the last layer run for the first token
    alone (``Encoder.forward(first_only=True)``, eager fp32 Linears), its (B, 1, d) state as
    ONNX: the ORT peer that does the engine's work, no more."""
    import dataclasses

    import torch

    from polyhead.engine.encoder import BatchContext, Encoder

    bb: Any = backbone
    encoder = Encoder(dataclasses.replace(bb, linears=None))

    class FirstToken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = bb.model  # its weights exported as initializers (what quantize_dynamic reads)

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            ctx = BatchContext(input_ids, attention_mask.bool(), input_ids, input_ids.device,
                               torch.float32, bb.spec)  # special_index: unread without effects
            return encoder.forward(ctx, token_type_ids, (), first_only=True)

    return _to_onnx(FirstToken(), path, {0: "batch"})


def quantize(src: Path, dst: Path) -> Path:
    """ORT's own dynamic int8 (MatMulInteger, weights int8, activations quantized per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return dst


def save_batches(batches: Sequence[dict[str, np.ndarray]], path: Path) -> Path:
    np.savez(path, **{f"{i}.{k}": b[k] for i, b in enumerate(batches) for k in INPUTS})
    return path


def load_batches(path: Path) -> list[dict[str, np.ndarray]]:
    data = np.load(path)
    n = len({k.split(".")[0] for k in data.files})
    return [{k: data[f"{i}.{k}"] for k in INPUTS} for i in range(n)]


def run(model: Path, batches_file: Path, clock: str, rounds: int) -> dict[str, object]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    batches = load_batches(batches_file)
    rows = sum(len(b["input_ids"]) for b in batches)
    tick = time.process_time if clock == "cpu" else time.perf_counter
    first = sess.run(None, batches[0])[0]  # warm-up, and the parity sample
    for b in batches:
        sess.run(None, b)
    times = []
    for _ in range(rounds):
        t0 = tick()
        for b in batches:
            sess.run(None, b)
        times.append(tick() - t0)
    times.sort()
    rate = rows / times[len(times) // 2] if times else None
    return {"rows_per_s": rate, "cls": first[:, 0, :].tolist()}


def measure(model: Path, batches_file: Path, clock: str, rounds: int = 1) -> dict[str, object]:
    """Run ``run`` in a fresh process; its JSON answer."""
    out = subprocess.run([sys.executable, "-m", "bench.ort_peer", "--model", str(model),
                          "--batches", str(batches_file), "--clock", clock, "--rounds", str(rounds)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench.ort_peer on {model.name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="an .onnx file (see export)")
    ap.add_argument("--batches", type=Path, required=True, help="an .npz of padded batches")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                    help="cpu: this process's CPU time (ORT runs 1 thread, no spinning)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    print(json.dumps(run(args.model, args.batches, args.clock, args.rounds)))


if __name__ == "__main__":
    main()
