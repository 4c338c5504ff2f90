"""Every training method on a tiny encoder: loss falls, the artifact validates, and the
engine's logits from the stored artifact equal the trainer's own model's."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from polyhead.engine import Backbone, Engine, load_backbone
from polyhead.engine.encoder import Encoder
from polyhead.engine.heads import apply_head
from polyhead.engine.sparse import params_of, to_dense
from polyhead.store import Store, decode_artifact, encode_artifact, load_artifact, new_manifest
from polyhead.trainer import METHODS, Dataset, Example, TrainConfig, train
from polyhead.trainer.config import TrainConfigError
from polyhead.trainer.loop import encode, predict
from polyhead.trainer.models import DenseModel
from tests.tiny import WORDS

POS = ["the movie was good", "i loved the film", "really great acting", "the plot is fun",
       "very good film", "a great movie", "i loved it", "good acting and a fun plot",
       "this film is great fun", "the actors were good"]
NEG = ["the movie was bad", "i hated the film", "really terrible acting", "the plot is boring",
       "very bad film", "a terrible movie", "i hated it", "bad acting and a boring plot",
       "this film is boring", "the actors were terrible"]
LR = {"pasta": 0.1, "prefix": 0.05, "lora": 0.02, "bitfit": 0.05,
      "child-d": 3e-3, "child-f": 3e-3, "dps": 3e-3, "full": 3e-3}
SPARSE = ("child-d", "child-f", "dps", "full")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny encoder whose [CLS] states differ between inputs (init std 0.2, not 0.02),
    so a few steps of any method can separate the classes."""
    folder = tmp_path_factory.mktemp("tiny-bert-wide-init")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, model_max_length=64).save_pretrained(folder)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert(bert_dir: Path) -> Backbone:
    return load_backbone(bert_dir)


@pytest.fixture(scope="module")
def sentiment() -> Dataset:
    rows = [Example(t, None, "positive") for t in POS] + [Example(t, None, "negative") for t in NEG]
    return Dataset(rows * 2, ["negative", "positive"], "str")


def config(method: str, **kw: object) -> TrainConfig:
    # dropout off: these tests check that loss falls and the artifact reproduces the model;
    # fp32 unless a test asks for bf16 ("auto" would depend on the CPU running the tests)
    base = dict(method=method, epochs=6, lr=LR[method], batch_size=8, max_length=32, seed=0,
                warmup=0.0, dropout=False, precision="fp32")
    # the sparse methods' budget and child-d's Fisher pass, for the methods that have them
    mine = {f.name for f in dataclasses.fields(METHODS[method].options)}
    opts = {k: v for k, v in dict(density=0.2, fisher_examples=16).items() if k in mine}
    return TrainConfig.flat(**{**base, **opts, **kw})


def stored_roundtrip(result, data: Dataset, spec):
    manifest = new_manifest("sentiment", result.artifact, spec, labels=data.labels,
                            training=result.training.to_json(), metrics=result.metrics)
    return decode_artifact(encode_artifact(manifest, result.artifact), spec)


def trainer_logits(result, backbone, texts: list[str]) -> np.ndarray:
    data = Dataset([Example(t, None, "negative") for t in texts], ["negative", "positive"], "str")
    return predict(result.model, encode(backbone.tokenizer, data, 32), 8,
                   backbone.tokenizer.pad_token_id, backbone.device, fp32=True)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", [m for m in METHODS if METHODS[m].exports])
def test_method_trains_and_engine_matches(bert, sentiment: Dataset, method: str, precision: str) -> None:
    """bf16: autocast in training only; the artifact is fp32 and the engine still gives
    the trained model's fp32 logits."""
    res = train(config(method, precision=precision), bert, sentiment, sentiment, "accuracy",
                progress=False, log_fn=lambda s: None)
    assert res.training.precision == {"fp32": "fp32", "bf16": "bf16 autocast"}[precision]
    assert all(t.dtype == torch.float32 for t in res.artifact.tensors.values() if t.is_floating_point())
    first, last = np.mean(res.losses[:3]), np.mean(res.losses[-3:])
    assert last < first - 0.05, f"{method}: loss {first:.3f} -> {last:.3f}"
    manifest, art = stored_roundtrip(res, sentiment, bert.spec)
    assert manifest.training["method"] == method and "accuracy" in manifest.metrics
    assert art.kind == {"child-d": "sparse", "child-f": "sparse", "dps": "sparse",
                        "full": "sparse"}.get(method, method)
    texts = POS[:3] + NEG[:3] + ["the cat sat on the mat", "rain today , sun tomorrow"]
    eng = Engine(bert)
    served = torch.stack(eng.run(texts, [eng.load(art)] * len(texts))).numpy()
    np.testing.assert_allclose(served, trainer_logits(res, bert, texts), atol=1e-5, rtol=0)
    assert res.parity < 1e-5


@pytest.mark.parametrize("method", ["pasta", "prefix", "bitfit"])
def test_trained_pet_model_equals_a_hugging_face_reference(bert, sentiment: Dataset,
                                                           method: str) -> None:
    """The trainer's forward for the PET kinds (the engine's effects, through TaskModule)
    against a reference that shares none of them: the Hugging Face model's own modules in
    float64 (tests/test_reference_parity.py: PASTA vectors added at the special tokens the
    tokenizer's ids mark, prefix keys/values in a restated attention, BitFit's biases
    patched into a copy of the model), on the tensors training produced."""
    from tests.test_reference_parity import reference_logits

    res = train(config(method, epochs=2), bert, sentiment, sentiment, "accuracy",
                progress=False, log_fn=lambda s: None)
    art = res.artifact
    moved = max(float(v.abs().max()) for k, v in art.kind_tensors().items() if not k.endswith("gate"))
    assert moved > 1e-3  # training changed the kind's tensors: the parity below is not the bare model's
    from polyhead.trainer.models import Batch

    texts = POS[:3] + NEG[:3] + ["the cat sat on the mat", "rain today , sun tomorrow"]
    refs = np.stack([reference_logits(bert, art, t).numpy() for t in texts])
    # the training forward as a step runs it (train mode, autograd recording; dropout off)
    enc = bert.tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=True)
    res.model.set_training(True)
    with torch.enable_grad():
        logits = res.model.forward(Batch(enc["input_ids"], enc["attention_mask"],
                                         enc["token_type_ids"], torch.zeros(len(texts), dtype=torch.long)))
    assert logits.requires_grad
    res.model.set_training(False)
    for name, mine in (("training step", logits.detach().numpy()),
                       ("evaluation", trainer_logits(res, bert, texts))):
        np.testing.assert_allclose(mine, refs, atol=1e-5, rtol=0, err_msg=f"{method}, {name}")


@pytest.mark.parametrize("method", SPARSE)
def test_sparse_diff_is_within_budget_and_reproduces_the_model(bert, sentiment: Dataset,
                                                               method: str) -> None:
    density = 1.0 if method == "full" else 0.1  # full has no budget: every weight
    budget = {} if method == "full" else {"density": density}
    res = train(config(method, epochs=3, **budget), bert, sentiment, sentiment,
                "accuracy", progress=False, log_fn=lambda s: None)
    spec = bert.spec
    art = res.artifact
    tunable = sum(int(np.prod(spec.param_shapes[p])) for p in spec.tunable_params())
    entries = sum(len(art.tensors[f"sparse.{p}.indices"]) for p in params_of(art.tensors))
    assert art.config.density == density and entries <= density * tunable
    if method != "full":
        assert entries > 0.5 * density * tunable  # the budget is used, not wasted
    assert not any("embeddings.word" in p or "pooler" in p for p in params_of(art.tensors))
    # apply the diff to a copy of the frozen backbone: the trained model's logits come back
    model = copy.deepcopy(bert.model)
    with torch.no_grad():
        for name, diff in to_dense(art.tensors, spec).items():
            model.get_parameter(name).add_(diff)
    patched = Encoder(dataclasses.replace(bert, model=model))
    assert isinstance(res.model, DenseModel)
    trained = res.model.bb.model
    for name, p in model.named_parameters():  # weights outside the diff are untouched,
        if not name.startswith("pooler."):  # but the pooler, which trained into the head
            torch.testing.assert_close(p, trained.get_parameter(name), atol=1e-6, rtol=0)
    head = art.head_tensors()
    assert art.head.type == "mlp"
    assert not torch.equal(head["head.dense.weight"], bert.model.pooler.dense.weight)
    torch.testing.assert_close(head["head.dense.weight"], trained.pooler.dense.weight, atol=0, rtol=0)
    torch.testing.assert_close(model.pooler.dense.weight, bert.model.pooler.dense.weight, atol=0, rtol=0)
    enc = bert.tokenizer(POS[:4] + NEG[:4], padding=True, return_tensors="pt")
    ctx = patched.context(enc["input_ids"], enc["attention_mask"])
    hidden = patched.forward(ctx, enc["token_type_ids"])
    logits = apply_head(art.head_tensors(), art.head, hidden[:, 0], patched.pooler)
    texts = POS[:4] + NEG[:4]
    torch.testing.assert_close(logits, torch.from_numpy(trainer_logits(res, bert, texts)),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", SPARSE)
def test_pooler_frozen_keeps_the_backbones_pooler_head(bert, sentiment: Dataset, method: str) -> None:
    """--pooler frozen: the head reads the shared pooler (a 'pooler' head), which the run
    never changed; the engine serves the trained model."""
    budget = {} if method == "full" else {"density": 0.1}
    res = train(config(method, epochs=2, pooler="frozen", **budget),
                bert, sentiment, sentiment, "accuracy", progress=False, log_fn=lambda s: None)
    assert res.artifact.head.type == "pooler" and res.parity < 1e-5
    assert isinstance(res.model, DenseModel)
    torch.testing.assert_close(res.model.bb.model.pooler.dense.weight, bert.model.pooler.dense.weight,
                               atol=0, rtol=0)


def test_pooler_option_is_for_the_servable_dense_methods() -> None:
    for bad in (dict(method="pasta", pooler="train"), dict(method="full", recipe="paper", pooler="frozen"),
                dict(method="child-d", head_type="linear", pooler="frozen")):
        with pytest.raises(TrainConfigError, match="--pooler applies"):
            TrainConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(TrainConfigError, match="pooler must be one of"):
        TrainConfig(method="dps", pooler="yes")
    assert TrainConfig(method="dps").trains_pooler
    assert not TrainConfig(method="dps", pooler="frozen").trains_pooler
    assert TrainConfig(method="full", recipe="paper").trains_pooler
    assert not TrainConfig(method="pasta").trains_pooler


@pytest.mark.parametrize("method", ["child-d", "child-f", "dps"])
def test_column_masks_give_whole_columns_within_budget_served_as_columns(
        bert, sentiment: Dataset, method: str) -> None:
    """--mask-structure columns: every matrix diff is whole input columns, the budget holds,
    the engine runs the task from a column table, and it serves the trained model."""
    density = 0.1
    res = train(config(method, density=density, epochs=2, mask_structure="columns"), bert,
                sentiment, sentiment, "accuracy", progress=False, log_fn=lambda s: None)
    spec, art = bert.spec, res.artifact
    assert art.config.structure == "columns"
    tunable = sum(int(np.prod(spec.param_shapes[p])) for p in spec.tunable_params())
    entries = 0
    for name in params_of(art.tensors):
        idx = art.tensors[f"sparse.{name}.indices"]
        entries += len(idx)
        shape = spec.param_shapes[name]
        if len(shape) == 2:  # the stored entries are whole columns
            cols = torch.unique(idx % shape[1])
            assert len(idx) == len(cols) * shape[0], f"{name}: partial columns"
    assert 0.3 * density * tunable < entries <= density * tunable
    _, stored = stored_roundtrip(res, sentiment, spec)
    eng = Engine(bert)
    task = eng.load(stored)
    assert "/columns/" in task.table
    texts = POS[:3] + NEG[:3]
    served = torch.stack(eng.run(texts, [task] * len(texts))).numpy()
    np.testing.assert_allclose(served, trainer_logits(res, bert, texts), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["child-d", "child-f", "dps"])
def test_each_sparse_method_has_its_servable_mask_structure(method: str) -> None:
    """Without --mask-structure the servable recipe masks as the method's measured default,
    the paper recipe single weights; the flag overrides the servable default."""
    from polyhead.trainer.algos.sparse_budget import SERVABLE_STRUCTURES, SparseOptions

    def structure(**kw: object) -> str:
        cfg = config(method, **kw)
        return cfg.options_as(SparseOptions).structure(cfg)

    assert structure() == SERVABLE_STRUCTURES[method]
    assert structure(recipe="paper") == "entries"
    assert structure(mask_structure="entries") == "entries"
    assert structure(mask_structure="columns") == "columns"


def test_column_masks_only_for_the_servable_sparse_methods() -> None:
    with pytest.raises(TrainConfigError, match="mask-structure columns"):
        config("child-d", recipe="paper", mask_structure="columns")
    with pytest.raises(TrainConfigError, match="--mask-structure applies to --method child-d"):
        config("lora", mask_structure="columns")


def test_child_f_records_sparsifying_cost(bert, sentiment: Dataset) -> None:
    res = train(config("child-f", epochs=2, density=0.05), bert, sentiment, sentiment,
                "accuracy", progress=False, log_fn=lambda s: None)
    sp = res.training.sections["sparsify"]
    assert sp["dense_nonzero"] > 0.5 * sum(int(np.prod(bert.spec.param_shapes[p]))
                                           for p in bert.spec.tunable_params())
    assert sp["metric_cost"] == pytest.approx(sp["dense_dev"]["accuracy"] - sp["sparse_dev"]["accuracy"])
    assert res.metrics["accuracy"] == sp["sparse_dev"]["accuracy"]


def test_dps_servable_reselects_within_each_tensors_quota(bert, sentiment: Dataset) -> None:
    res = train(config("dps", epochs=3, density=0.1, dps_update_ratio=0.1), bert, sentiment,
                sentiment, "accuracy", progress=False, log_fn=lambda s: None)
    hist = res.training.sections["dps_stages_history"]
    budget = sum(int(0.1 * int(np.prod(bert.spec.param_shapes[p]))) for p in bert.spec.tunable_params())
    assert len(hist) >= 3 and all(h["union"] <= budget for h in hist)
    assert hist[1]["union"] > hist[0]["union"]  # the re-selection admitted new weights


def test_seed_reproducibility(bert, sentiment: Dataset) -> None:
    runs = [train(config("pasta", epochs=1, max_train=12), bert, sentiment, sentiment,
                  "accuracy", progress=False, log_fn=lambda s: None) for _ in range(2)]
    assert runs[0].losses == runs[1].losses
    torch.testing.assert_close(runs[0].artifact.tensors, runs[1].artifact.tensors, atol=0, rtol=0)
    assert runs[0].training.train_examples == 12


def test_regression_trains(bert) -> None:
    data = Dataset([Example(t, None, 1.0) for t in POS] + [Example(t, None, -1.0) for t in NEG],
                   None, "float")
    res = train(config("bitfit", epochs=4), bert, data, data, "pearson", progress=False,
                log_fn=lambda s: None)
    assert res.artifact is not None and res.artifact.head.num_outputs == 1
    assert res.metrics["pearson"] > 0
    assert np.mean(res.losses[-3:]) < np.mean(res.losses[:3])


def cli(*args: str) -> int:
    from polyhead.cli import main

    return main(["train", *args])


def test_cli_trains_writes_and_publishes(bert_dir: Path, tmp_path: Path, bert) -> None:
    path = tmp_path / "s.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\tpositive\n" for t in POS) +
                    "".join(f"{t}\tnegative\n" for t in NEG))
    out = tmp_path / "sentiment.polyhead"
    store = tmp_path / "store"
    rc = cli("--method", "pasta", "--train", str(path), "--dev", str(path),  # `sentence`: no flag (D1)
             "--out", str(out), "--publish", "--store", str(store), "--task-id", "sentiment",
             "--backbone", str(bert_dir), "--epochs", "1", "--batch-size", "8", "--quiet")
    assert rc == 0
    manifest, _ = load_artifact(out, bert.spec)
    assert manifest.labels == ["negative", "positive"] and manifest.task_id == "sentiment"
    assert manifest.training["method"] == "pasta" and manifest.training["hyperparameters"]["epochs"] == 1
    assert set(manifest.metrics) == {"accuracy", "f1", "mcc"}
    published = Store(store, bert.spec).get("sentiment").info  # the file's bytes, as version 1
    assert published.number == 1 and published.version == hashlib.sha256(out.read_bytes()).hexdigest()


def test_cli_publish_probes_and_needs_replace_kind_for_another_kind(
        bert_dir: Path, tmp_path: Path, bert, capsys, monkeypatch) -> None:
    """`train --publish` goes through the same gate as Upload: the probe forward runs on the
    trained artifact, and a new kind onto an existing task needs --replace-kind."""
    import polyhead.engine.probe

    probed = []
    real = polyhead.engine.probe.probe_forward
    def spy(backbone, artifact) -> None:
        probed.append(artifact.kind)
        real(backbone, artifact)

    monkeypatch.setattr(polyhead.engine.probe, "probe_forward", spy)
    path = tmp_path / "s.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\tpositive\n" for t in POS) +
                    "".join(f"{t}\tnegative\n" for t in NEG))
    store = tmp_path / "store"
    common = ("--train", str(path), "--dev", str(path), "--publish", "--store", str(store),
              "--task-id", "sentiment", "--backbone", str(bert_dir), "--epochs", "1",
              "--batch-size", "8", "--quiet")
    assert cli("--method", "pasta", *common) == 0 and probed == ["pasta"]
    assert cli("--method", "bitfit", *common) == 1
    assert "--replace-kind" in capsys.readouterr().err
    assert cli("--method", "bitfit", *common, "--replace-kind") == 0
    assert probed == ["pasta", "bitfit", "bitfit"]
    assert Store(store, bert.spec).get("sentiment").info.number == 2


def test_cli_errors_exit_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\ngood\tpositive\nbad\n")
    rc = cli("--method", "pasta", "--train", str(bad), "--dev", str(bad), "--text-col", "sentence",
             "--out", str(tmp_path / "x.polyhead"))
    err = capsys.readouterr().err
    assert rc == 2 and f"{bad}:3: expected 2 fields" in err and "Traceback" not in err
    rc = cli("--method", "full", "--train", str(bad), "--dev", str(bad), "--density", "2",
             "--out", str(tmp_path / "x.polyhead"))
    assert rc == 2 and "density" in capsys.readouterr().err
    rc = cli("--method", "pasta", "--train", str(bad), "--dev", str(bad), "--head-init", "pet:lora",
             "--out", str(tmp_path / "x.polyhead"))
    assert rc == 2 and "--head-init" in capsys.readouterr().err
    rc = cli("--method", "full", "--train", str(bad), "--dev", str(bad), "--threads", "0",
             "--out", str(tmp_path / "x.polyhead"))
    assert rc == 2 and "--threads" in capsys.readouterr().err
    rc = cli("--method", "lora", "--train", str(bad), "--dev", str(bad))
    assert rc == 2 and "--out" in capsys.readouterr().err


def test_cli_store_cap_still_writes_out_and_paper_recipe_says_why(
        bert_dir: Path, bert, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\tpositive\n" for t in POS) +
                    "".join(f"{t}\tnegative\n" for t in NEG))
    common = ("--train", str(path), "--dev", str(path), "--text-col", "sentence", "--backbone",
              str(bert_dir), "--epochs", "1", "--batch-size", "8", "--quiet", "--threads", "1")
    out = tmp_path / "full.polyhead"
    rc = cli("--method", "full", *common, "--out", str(out), "--publish", "--store",
             str(tmp_path / "store"), "--max-upload-bytes", "1000")
    err = capsys.readouterr().err
    assert rc == 1 and out.is_file() and "cap of 1,000" in err and str(out) in err
    # the paper recipe: the whole model (embeddings included) goes to --out; over the cap it
    # is not published, and the CLI says why
    paper = tmp_path / "p.polyhead"
    rc = cli("--method", "full", "--recipe", "paper", *common, "--out", str(paper), "--publish",
             "--store", str(tmp_path / "store"), "--max-upload-bytes", "1000")
    captured = capsys.readouterr()
    assert rc == 1 and "dev accuracy" in captured.out and paper.is_file()
    assert "not published" in captured.err and "cap of 1,000" in captured.err
    assert "--recipe paper" in captured.err and str(paper) in captured.err
    manifest, art = load_artifact(paper, bert.spec)
    assert manifest.training["recipe"] == "paper" and art.kind == "sparse"
    touched = set(params_of(art.tensors))
    assert set(bert.spec.embedding_params()) <= touched and art.head.type == "mlp"
    assert Store(tmp_path / "store", bert.spec).list_tasks() == []  # nothing published
    rc = cli("--method", "full", "--recipe", "paper", *common, "--out", str(paper))
    assert rc == 0 and f"wrote {paper}" in capsys.readouterr().out  # --out alone: no cap


def test_help_marks_the_defaults_the_study_chose_and_names_the_rest_provisional(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`train --help` marks each chosen default (*) and points at `train --defaults`, which
    names the runs behind each default, or calls it PROVISIONAL."""
    import dataclasses

    from polyhead.trainer.cli import defaults_record, method_help
    from polyhead.trainer.table import PROVISIONAL

    text, record = method_help(), defaults_record()
    assert "polyhead train --defaults" in text
    for m in METHODS.values():
        for recipe in m.recipes:
            d = m.defaults(recipe)
            assert (f"{m.name} ({recipe})" in PROVISIONAL) == (not d.evidence)
            row = next(x for x in record.splitlines() if x.split()[:2] == [m.name, recipe])
            assert (d.evidence in row) if d.evidence else ("PROVISIONAL" in row)
        s, p = m.servable, m.paper
        servable = (f"{s.lr:g}/{s.epochs:g}/{s.warmup:g}{'*' if s.evidence else ''}"
                    if "servable" in m.recipes else "-")
        paper = f"{p.lr:g}/{p.epochs:g}/{p.warmup:g}{'*' if p.evidence else ''}"
        assert f"-> {m.kind}; {servable} | {paper}" in text
    assert ("PROVISIONAL" in record) == bool(PROVISIONAL)
    # the other branch, whatever the table holds today: a default without evidence is
    # PROVISIONAL in the record and unmarked in the help
    name, first = next(iter(METHODS.items()))
    m = dataclasses.replace(first, servable=dataclasses.replace(first.servable, evidence=""))
    monkeypatch.setitem(METHODS, name, m)
    row = next(x for x in defaults_record().splitlines() if x.split()[:2] == [m.name, "servable"])
    assert "PROVISIONAL" in row
    assert f"{m.servable.warmup:g} | " in method_help().split(f"-> {m.kind}; ", 1)[1].splitlines()[0]


def test_precision_autocasts_training_forwards_only(bert, sentiment: Dataset, monkeypatch) -> None:
    """bf16: every training forward (and child-d's Fisher pass) runs under bf16 autocast;
    dev scoring on the CPU stays fp32, as the engine serves. fp32: no autocast anywhere."""
    import polyhead.trainer.loop as loop
    import polyhead.trainer.masks as masks

    seen: list[tuple[str, torch.dtype]] = []
    where = ["step"]  # "fisher" while child-d's Fisher pass runs
    real_loss, real_fisher = loop.loss_fn, masks.fisher

    def loss_fn(logits, targets, regression):
        seen.append((where[0], logits.dtype))
        return real_loss(logits, targets, regression)

    def fisher(*args, **kwargs):
        where[0] = "fisher"
        try:
            return real_fisher(*args, **kwargs)
        finally:
            where[0] = "step"

    monkeypatch.setattr(loop, "loss_fn", loss_fn)
    monkeypatch.setattr(masks, "fisher", fisher)
    real_forward = DenseModel.forward

    def forward(self, batch):
        out = real_forward(self, batch)
        if not torch.is_grad_enabled():  # scoring the dev set (and the parity check)
            seen.append(("dev", out.dtype))
        return out

    monkeypatch.setattr(DenseModel, "forward", forward)
    for precision, want in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        seen.clear()
        train(config("child-d", precision=precision, epochs=1), bert, sentiment, sentiment, "accuracy",
              progress=False, log_fn=lambda s: None)
        assert {w for w, _ in seen} == {"step", "fisher", "dev"}
        assert {d for w, d in seen if w in ("step", "fisher")} == {want}, precision
        assert {d for w, d in seen if w == "dev"} == {torch.float32}


def test_precision_auto_is_bf16_where_native(monkeypatch: pytest.MonkeyPatch) -> None:
    import polyhead.trainer.config as config_mod

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert TrainConfig(method="full").precision == "auto"
    for native, want in ((True, torch.bfloat16), (False, None)):  # both kinds of CPU
        monkeypatch.setattr(config_mod, "cpu_has_bf16", lambda native=native: native)
        assert TrainConfig(method="full").autocast_dtype(cpu) == want
        assert TrainConfig(method="full").autocast_dtype(cuda) == torch.bfloat16
    monkeypatch.undo()
    assert TrainConfig(method="full").autocast_dtype(cuda) == torch.bfloat16
    assert TrainConfig(method="full", precision="fp32").autocast_dtype(cuda) is None
    assert TrainConfig(method="full", precision="bf16").autocast_dtype(cpu) == torch.bfloat16
    with pytest.raises(TrainConfigError, match="precision must be one of"):
        TrainConfig(method="full", precision="fp16")
