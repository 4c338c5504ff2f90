"""--precision: int8 quantizes only the frozen backbone's Linear weights and stays within a
stated bound of fp32 for every kind, mixed batches included; int8 mixed == int8 alone; a
precision the device cannot run is refused, naming the option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyhead.engine import Engine, TaskArtifact, load_backbone
from polyhead.engine.backbone import BackboneError
from polyhead.engine.encoder import Encoder
from polyhead.engine.lora import LoraConfig
from polyhead.engine.precision import Int8Linears, PackedLinears, PrecisionError, dtype_for, quantize_rows
from polyhead.engine.prefix import PrefixConfig
from polyhead.engine.sparse import SparseConfig
from polyhead.server.config import ConfigError, ServerConfig

# The stated bound (BENCHMARKS "Engine"): on the packaged MiniLM, for every kind and head
# in a mixed batch, int8 (smoothed, as served) logits are within 0.03 of fp32 and softmax
# scores within 0.01 (measured: 0.014 and 0.004 at most on this matrix; 0.043 and 0.014
# unsmoothed); a row's int8 logits alone and in a mixed batch within 0.02 (measured 0.010).
INT8_LOGIT_BOUND = 0.03
INT8_SCORE_BOUND = 0.01
INT8_ALONE_BOUND = 0.02
BF16_LOGIT_BOUND = 0.1

TASKS = [("pasta", None, "linear", 2), ("prefix", PrefixConfig(num_prefix=4), "mlp", 3),
         ("lora", LoraConfig(r=4, alpha=8.0), "linear", 2), ("bitfit", None, "pooler", 2),
         ("sparse", SparseConfig(density=0.05), "linear", 4),
         ("sparse", SparseConfig(density=0.05, structure="columns"), "mlp", 2),
         ("lora", LoraConfig(r=2, alpha=4.0, targets=("intermediate.dense", "output.dense")), "mlp", 1)]
TEXTS = ["the movie was good", "i hated the plot , it was dull and far too long", "rain",
         ("the man walks", "he walks in the park"), "a cat sat on the mat !"]


def arts(spec) -> list[TaskArtifact]:
    return [TaskArtifact.random(k, spec, c, config=cfg, head_type=h, seed=70 + i)
            for i, (k, cfg, h, c) in enumerate(TASKS)]


def mixed(engine: Engine, tasks) -> tuple[list, list]:
    rows = [tasks[i % len(tasks)] for i in range(2 * len(tasks))]
    inputs = [TEXTS[i % len(TEXTS)] for i in range(len(rows))]
    return inputs, rows


@pytest.fixture(scope="module")
def int8_backbone(real_backbone):
    return load_backbone(real_backbone.path, precision="int8")


def test_int8_every_kind_mixed_within_bound_of_fp32(real_backbone, int8_backbone) -> None:
    ef, eq = Engine(real_backbone), Engine(int8_backbone)
    tf = [ef.load(a) for a in arts(real_backbone.spec)]
    tq = [eq.load(a) for a in arts(real_backbone.spec)]
    inputs, rows_f = mixed(ef, tf)
    _, rows_q = mixed(eq, tq)
    lf, lq = ef.run(inputs, rows_f), eq.run(inputs, rows_q)
    for a, b in zip(lf, lq, strict=True):
        assert (a - b).abs().max().item() <= INT8_LOGIT_BOUND
        if a.numel() > 1:
            assert (a.softmax(-1) - b.softmax(-1)).abs().max().item() <= INT8_SCORE_BOUND
    # the int8 path really ran: answers differ from fp32 somewhere
    assert max((a - b).abs().max().item() for a, b in zip(lf, lq, strict=True)) > 1e-4
    # each token quantizes its own activations, so a row's batchmates do not set its scale;
    # what remains is a rounding step flipped by fp32 noise of ~1e-7 upstream (a padded
    # length changes the attention's sums): measured 0.010 at most (0.022 unsmoothed)
    alone = [eq.run([x], [t])[0] for x, t in zip(inputs, rows_q, strict=True)]
    for a, b in zip(alone, lq, strict=True):
        assert (a - b).abs().max().item() <= INT8_ALONE_BOUND


def test_int8_first_token_alone_within_bound_of_the_whole_last_layer(int8_backbone, monkeypatch) -> None:
    """Serving runs the last layer for [CLS] alone; under int8 its logits stay within the
    alone-vs-mixed bound of the whole layer's (each token has its own scale, so only fp32
    noise in the attention can flip a rounding step)."""
    eq = Engine(int8_backbone)
    inputs, rows = mixed(eq, [eq.load(a) for a in arts(int8_backbone.spec)])
    first = eq.run(inputs, rows)
    whole_forward = Encoder.forward
    monkeypatch.setattr(Encoder, "forward", lambda self, ctx, types, effects=(), first_only=False:
                        whole_forward(self, ctx, types, effects)[:, :1])
    whole = eq.run(inputs, rows)
    gaps = [(a - b).abs().max().item() for a, b in zip(first, whole, strict=True)]
    assert max(gaps) <= INT8_ALONE_BOUND, gaps


def test_int8_rows_do_not_share_a_scale(tiny_bert) -> None:
    """A row's product is bit-identical alone and beside a row 1000x larger (a per-batch
    activation scale, as ORT's and torch's dynamic int8 use, would crush the small row)."""
    q = Int8Linears(tiny_bert.model)
    name = "encoder.layer.0.attention.self.query"
    n_in = tiny_bert.model.get_submodule(name).in_features
    g = torch.Generator().manual_seed(1)
    small, big = torch.randn(1, 4, n_in, generator=g), 1000 * torch.randn(1, 4, n_in, generator=g)
    assert torch.equal(q(name, small)[0], q(name, torch.cat([small, big]))[0])


def test_prepacked_fp32_equals_eager_for_every_kind(real_backbone) -> None:
    """Serving's fp32 (oneDNN-prepacked Linears) == F.linear's at atol 1e-5, mixed and alone."""
    packed = load_backbone(real_backbone.path, precision="fp32")
    assert isinstance(packed.linears, PackedLinears) and real_backbone.linears is None
    ee, ep = Engine(real_backbone), Engine(packed)
    te = [ee.load(a) for a in arts(real_backbone.spec)]
    tp = [ep.load(a) for a in arts(real_backbone.spec)]
    inputs, rows_e = mixed(ee, te)
    _, rows_p = mixed(ep, tp)
    for a, b in zip(ee.run(inputs, rows_e), ep.run(inputs, rows_p), strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    for x, te_, tp_ in zip(inputs[:4], rows_e, rows_p, strict=False):
        torch.testing.assert_close(ep.run([x], [tp_])[0], ee.run([x], [te_])[0], atol=1e-5, rtol=0)


def test_bf16_serves_every_kind_mixed_near_fp32(real_backbone, monkeypatch) -> None:
    """bf16 (where the CPU multiplies it natively; forced here, so that every CPU runs the
    path) serves every kind in a mixed batch, the sparse CSR product included."""
    import polyhead.engine.precision as precision

    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx512_bf16"})
    bf = load_backbone(real_backbone.path, precision="bf16")
    ef, eb = Engine(real_backbone), Engine(bf)
    inputs, rows_f = mixed(ef, [ef.load(a) for a in arts(real_backbone.spec)])
    _, rows_b = mixed(eb, [eb.load(a) for a in arts(real_backbone.spec)])
    for a, b in zip(ef.run(inputs, rows_f), eb.run(inputs, rows_b), strict=True):
        assert torch.isfinite(b).all() and (a - b.float()).abs().max().item() <= BF16_LOGIT_BOUND


def test_int8_tasks_stay_fp32(int8_backbone) -> None:
    eq = Engine(int8_backbone)
    task = eq.load(TaskArtifact.random("lora", int8_backbone.spec, 2, seed=3))
    assert task is not None
    assert all(t.dtype == torch.float32 for t in _table_tensors(eq))
    # only the encoder's Linears are int8; embeddings, LayerNorms and the pooler are not
    names = set(int8_backbone.linears.weights)
    assert names and all(n.startswith("encoder.layer.") for n in names)
    assert int8_backbone.model.embeddings.word_embeddings.weight.dtype == torch.float32


def _table_tensors(engine: Engine) -> list[torch.Tensor]:
    out = []
    for table in engine.tables.kinds.values():
        out += [v for v in vars(table).values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return out


@pytest.mark.parametrize("name", ["encoder.layer.1.intermediate.dense",
                                  "encoder.layer.0.attention.self.query",
                                  "encoder.layer.1.attention.self.value"])
def test_int8_linear_equals_an_independent_quantized_product(tiny_bert, name) -> None:
    """The kernel against numpy: per-output-channel int8 weights, per-row int8 activations."""
    q = Int8Linears(tiny_bert.model)
    mod = tiny_bert.model.get_submodule(name)
    x = torch.randn(3, 5, mod.in_features, generator=torch.Generator().manual_seed(0))
    w = mod.weight.detach().double().numpy()
    ws = np.abs(w).max(axis=1) / 127
    wq = np.round(w / ws[:, None])
    x2 = x.reshape(-1, mod.in_features).double().numpy()
    xs = np.abs(x2).max(axis=1, keepdims=True) / 127
    xq = np.round(x2 / xs)
    want = (xq @ wq.T) * xs * ws + mod.bias.detach().double().numpy()
    got = q(name, x).reshape(-1, mod.out_features).double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
    assert np.abs(got - (x2 @ w.T + mod.bias.detach().double().numpy())).max() > 0  # it is not fp32


def test_int8_smoothed_linear_equals_an_independent_quantized_product(tiny_bert) -> None:
    """Smoothing against numpy: the activations divided by s per channel before their
    per-row quantization, the weight's columns multiplied by s before its per-channel one,
    s = max|x_j|^ALPHA / max|W_j|^(1-ALPHA) from the given input ranges."""
    from polyhead.engine.precision import ALPHA

    name = "encoder.layer.0.attention.self.query"
    mod = tiny_bert.model.get_submodule(name)
    g = torch.Generator().manual_seed(4)
    ranges = torch.rand(mod.in_features, generator=g) * 20 + 0.5
    q = Int8Linears(tiny_bert.model, input_ranges={name: ranges})
    x = torch.randn(2, 7, mod.in_features, generator=g) * ranges / 5
    w = mod.weight.detach().double().numpy()
    s = ranges.double().numpy() ** ALPHA / np.abs(w).max(axis=0) ** (1 - ALPHA)
    ws_ = w * s[None, :]
    wsc = np.abs(ws_).max(axis=1) / 127
    x2 = x.reshape(-1, mod.in_features).double().numpy() / s
    xsc = np.abs(x2).max(axis=1, keepdims=True) / 127
    want = ((np.round(x2 / xsc) @ np.round(ws_ / wsc[:, None]).T) * xsc * wsc
            + mod.bias.detach().double().numpy())
    got = q(name, x).reshape(-1, mod.out_features).double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)


def test_int8_smoothing_halves_the_error_on_the_encoder_output(real_backbone, int8_backbone) -> None:
    """The packaged MiniLM's outlier channels set a token's int8 scale; smoothing them with
    ranges calibrated at load (what load_backbone(precision="int8") serves) brings the
    [CLS] state's error against fp32 well below the unsmoothed int8's (measured 0.45x on
    four GLUE dev sets, BENCHMARKS "Engine")."""
    import dataclasses

    plain = dataclasses.replace(int8_backbone, linears=Int8Linears(int8_backbone.model))
    texts = ["the movie was good", "i hated the plot , it was dull and far too long",
             ("the man walks to the station", "he walks in the park"),
             "shares fell eight percent after the company cut its forecast",
             "how do i reset my password ?", "the committee again failed to reach a decision"]
    enc = Engine(real_backbone).tokenize(texts)

    def cls(bb) -> torch.Tensor:
        eng, e = Engine(bb), Encoder(bb)
        ids, mask, types = eng.pad(enc)
        with torch.inference_mode():
            return e.forward(e.context(ids, mask), types)[:, 0]

    ref = cls(real_backbone)

    def err(bb) -> float:
        return float(((cls(bb) - ref).norm(dim=1) / ref.norm(dim=1)).mean())

    smoothed, unsmoothed = err(int8_backbone), err(plain)
    assert 0 < smoothed < 0.7 * unsmoothed, (smoothed, unsmoothed)


def test_int8_compiled_kernels_equal_the_op_by_op_ones(tiny_bert) -> None:
    """The quantize/rescale kernels inductor builds (dynamic shapes) give what the functions
    they compile give op by op, at every row count and width: the same int8 values and
    scales, and the Linear's output to fp32 rounding (a multiply-add may fuse)."""
    eager, comp = Int8Linears(tiny_bert.model, compiled=False), Int8Linears(tiny_bert.model)
    g = torch.Generator().manual_seed(2)
    for name in ("encoder.layer.0.attention.self.query", "encoder.layer.1.output.dense"):
        n_in = tiny_bert.model.get_submodule(name).in_features
        for rows in (2, 17, 576):
            x = torch.randn(rows, n_in, generator=g) * torch.rand(rows, 1, generator=g) * 10
            div = torch.rand(n_in, generator=g) * 4 + 0.1  # a smoothing divisor
            (qc, sc), (qe, se) = comp.quantize_rows(x, div), quantize_rows(x, div)
            assert torch.equal(qc, qe) and torch.equal(sc, se)
            torch.testing.assert_close(comp(name, x), eager(name, x), atol=1e-5, rtol=1e-6)


def test_int8_runs_op_by_op_where_inductor_cannot_build(monkeypatch, caplog) -> None:
    import polyhead.engine.precision as precision

    def broken(fn, **_):
        def run(*a):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(precision, "_KERNELS", None)
    monkeypatch.setattr(torch, "compile", broken)
    assert precision._compiled_kernels() == (quantize_rows, precision.rescale)
    assert "op by op" in caplog.text


def test_int8_backbone_refuses_training(tiny_bert_dir) -> None:
    bb = load_backbone(tiny_bert_dir, precision="int8")
    enc = Encoder(bb)
    enc.training = True
    ids = torch.tensor([[2, 7, 3]])  # [CLS] a word [SEP] in the tiny vocabulary
    ctx = enc.context(ids, torch.ones_like(ids))
    with pytest.raises(RuntimeError, match="int8 backbone serves only"):
        enc.forward(ctx, torch.zeros_like(ids))


def test_precisions_the_device_cannot_run_are_refused(monkeypatch, tiny_bert_dir) -> None:
    import polyhead.engine.precision as precision

    with pytest.raises(PrecisionError, match="--precision 'fp16': choose one of fp32, int8, bf16"):
        dtype_for("fp16", torch.device("cpu"))
    with pytest.raises(PrecisionError, match="--precision int8 runs on the CPU only"):
        dtype_for("int8", torch.device("cuda"))
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2", "fma"})
    with pytest.raises(PrecisionError, match="--precision bf16: cpu here has no native bf16"):
        dtype_for("bf16", torch.device("cpu"))
    with pytest.raises(BackboneError, match="--precision bf16"):
        load_backbone(tiny_bert_dir, precision="bf16")
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert dtype_for("bf16", torch.device("cpu")) == torch.bfloat16
    assert dtype_for("int8", torch.device("cpu")) == torch.float32
    with pytest.raises(ConfigError, match="precision 'fp16'"):
        ServerConfig(precision="fp16")


def test_serve_refuses_bf16_before_ray_starts(monkeypatch, capsys, tmp_path) -> None:
    import polyhead.engine.precision as precision
    from polyhead import cli

    monkeypatch.setattr(precision, "_cpu_flags", lambda: set())
    monkeypatch.setenv("HOME", str(tmp_path))
    code = cli.main(["serve", "--precision", "bf16", "--insecure", "--store", str(tmp_path / "s")])
    assert code == 2
    assert "--precision bf16: cpu here has no native bf16" in capsys.readouterr().err



@pytest.mark.parametrize("which", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_int8_calibrates_any_supported_backbone(which, request) -> None:
    """Calibration runs on whatever encoder is loaded (its own tokenizer's framing and
    position limit): every encoder Linear gets a range per input channel, and the smoothed
    int8 engine serves a task."""
    from polyhead.engine.calibration import calibration_ids, input_ranges
    from polyhead.engine.precision import encoder_linears

    folder = request.getfixturevalue(which)
    fp = load_backbone(folder)
    linears = encoder_linears(fp.model)
    ranges = input_ranges(fp.model, fp.tokenizer, linears)
    assert set(ranges) == set(linears)
    assert all(r.shape == (linears[n].in_features,) and bool((r > 0).all()) for n, r in ranges.items())
    frame = fp.tokenizer("")["input_ids"]
    ids = calibration_ids(fp.tokenizer, 16)
    assert all(len(x) <= 16 and x[0] == frame[0] and x[-1] == frame[-1] for x in ids)
    bb = load_backbone(folder, precision="int8")
    eng = Engine(bb)
    task = eng.load(TaskArtifact.random("pasta", bb.spec, 2, seed=5))
    out = eng.run(["a b c", ("a b", "c")], [task, task])
    assert all(torch.isfinite(o).all() for o in out)
