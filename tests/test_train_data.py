"""Trainer data loading, GLUE presets, metrics and mask selection (no training here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from polyhead.trainer.data import Columns, DataError, default_text_column, load_dataset
from polyhead.trainer.masks import select, sparsify
from polyhead.trainer.metrics import check_metric, compute_metrics
from polyhead.trainer.presets import get_preset, load_preset


def write(path: Path, text: str, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


GLUE = {
    "sst2": ("sentence\tlabel\nit 's a charming \" journey \" .\t1\na dull movie\t0\n", False),
    "cola": ("gj04\t1\t\tOur friends won't buy this analysis.\n"
             "gj04\t0\t*\tThe more books I ask to.\n", False),
    "mrpc": ("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t70\t71\tHe said so .\tHe says so .\n"
             "0\t72\t73\tA cat .\tThe dog barked .\n", True),
    "rte": ("index\tsentence1\tsentence2\tlabel\n0\tA man runs.\tA person moves.\tentailment\n"
            "1\tA man sits.\tNobody is there.\tnot_entailment\n", False),
    "stsb": ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
             "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane takes off.\t"
             "A jet takes off.\t5.000\n"
             "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man plays.\tA cat eats.\t0.400\n",
             False),
    "qnli": ("index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tentailment\n"
             "1\tWhy?\tNo idea.\tnot_entailment\n",
             False),
}


@pytest.mark.parametrize("name", sorted(GLUE))
def test_glue_presets_parse(tmp_path: Path, name: str) -> None:
    text, bom = GLUE[name]
    preset = get_preset(name)
    ds = load_dataset(write(tmp_path / "train.tsv", text, bom), preset.columns, preset.labels)
    assert len(ds.examples) == 2
    if name == "stsb":
        assert ds.regression and ds.targets() == [5.0, 0.4]
        assert ds.examples[0].pair == "A jet takes off."
    else:
        assert ds.labels == list(preset.labels) and sorted(ds.targets()) == [0, 1]
    pairs = name in ("mrpc", "rte", "stsb", "qnli")
    assert all((e.pair is not None) == pairs for e in ds.examples)
    if name == "cola":
        assert ds.examples[0].text == "Our friends won't buy this analysis." and ds.examples[0].label == "1"
    if name == "sst2":
        assert '" journey "' in ds.examples[0].text  # GLUE quotes are kept, not parsed


def test_generic_formats_and_label_types(tmp_path: Path) -> None:
    cols = Columns("text", "label")
    tsv = load_dataset(write(tmp_path / "a.tsv", "text\tlabel\nx\tspam\ny\tham\nz\tspam\n"), cols)
    assert tsv.labels == ["ham", "spam"] and tsv.label_type == "str" and tsv.targets() == [1, 0, 1]
    csv_ds = load_dataset(write(tmp_path / "a.csv", 'text,label\n"hello, world",10\nbye,2\n'), cols)
    assert csv_ds.labels == ["2", "10"] and csv_ds.label_type == "int"  # numeric order
    assert csv_ds.examples[0].text == "hello, world"
    rows = [{"text": "a", "label": True}, {"text": "b", "label": False}]
    js = load_dataset(write(tmp_path / "a.jsonl", "\n".join(map(json.dumps, rows)) + "\n"), cols)
    assert js.labels == ["false", "true"] and js.label_type == "bool" and js.targets() == [1, 0]
    pair = Columns("q", "y", pair="p")
    ds = load_dataset(write(tmp_path / "p.jsonl", json.dumps({"q": "a", "p": "b", "y": 3}) + "\n"), pair)
    assert ds.examples[0].pair == "b" and ds.labels == ["3"]
    reg = load_dataset(write(tmp_path / "r.tsv", "text\tlabel\na\t0.5\nb\t-1\n"),
                       Columns("text", "label", regression=True))
    assert reg.regression and reg.num_outputs == 1 and reg.targets() == [0.5, -1.0]
    idx = load_dataset(write(tmp_path / "n.tsv", "1\tfoo\n0\tbar\n"), Columns(1, 0, header=False))
    assert [e.text for e in idx.examples] == ["foo", "bar"]


@pytest.mark.parametrize(("content", "suffix", "cols", "line", "match"), [
    ("text\tlabel\na\t1\nb\t0\textra\n", ".tsv", Columns("text", "label"), 3, "expected 2 fields"),
    ("text\tlabel\na\t1\n\t0\n", ".tsv", Columns("text", "label"), 3, "empty text"),
    ("text\tlabel\na\t\n", ".tsv", Columns("text", "label"), 2, "empty label"),
    ("sentence\tlabel\na\t1\n", ".tsv", Columns("text", "label"), 1, "no column 'text'"),
    ('{"text": "a", "label": 1}\n{"text": "b", "label": 1\n', ".jsonl", Columns("text", "label"), 2,
     "not valid JSON"),
    ('{"text": "a"}\n', ".jsonl", Columns("text", "label"), 1, "missing label column"),
    ('{"text": "a", "label": [1]}\n', ".jsonl", Columns("text", "label"), 1, "not a string, int or bool"),
    ("text\tlabel\na\tfive\n", ".tsv", Columns("text", "label", regression=True), 2, "not a number"),
    ("text\tlabel\na\tnan\n", ".tsv", Columns("text", "label", regression=True), 2, "not finite"),
])
def test_malformed_rows_name_file_and_line(tmp_path: Path, content: str, suffix: str, cols: Columns,
                                           line: int, match: str) -> None:
    path = write(tmp_path / f"bad{suffix}", content)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(path, cols)
    assert info.value.line == line and str(info.value).startswith(f"{path}:{line}: ")


def test_a_dev_set_is_checked_against_its_labels_without_scanning_them(tmp_path: Path) -> None:
    """A probe's 80,000-label dev set took 47 s to upload: each row searched the label list.
    The check looks labels up in a set; a refusal shows 10 of them, not all."""

    class NoScan(list):
        def __contains__(self, item: object) -> bool:
            raise AssertionError("a row searched the label list")

    labels = NoScan(f"L{i}" for i in range(12))
    path = write(tmp_path / "dev.tsv", "text\tlabel\na\tL3\nb\tL11\n")
    assert [e.label for e in load_dataset(path, Columns("text", "label"), labels).examples] == ["L3", "L11"]
    bad = write(tmp_path / "bad.tsv", "text\tlabel\na\tL99\n")
    with pytest.raises(DataError, match=r"label 'L99' is not one of \['L0', .*'L9'\] and 2 more$"):
        load_dataset(bad, Columns("text", "label"), labels)


@pytest.mark.parametrize("name,content,problem", [
    ("long.csv", 'text,label\n"' + "a" * 200_000 + '",pos\n', "not readable as CSV: field larger than"),
    ("deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n", "deep.jsonl:1: JSON nested too deeply"),
])
def test_files_past_the_readers_limits_are_named_not_internal(tmp_path: Path, name: str, content: str,
                                                              problem: str) -> None:
    """A probe's uploads: a 200,000-character CSV field and deeply nested JSON were INTERNAL."""
    path = write(tmp_path / name, content)
    with pytest.raises(DataError, match=re.escape(problem)):
        load_dataset(path, Columns(default_text_column(path), "label"))


def test_dev_labels_must_be_known(tmp_path: Path) -> None:
    path = write(tmp_path / "dev.tsv", "text\tlabel\na\tpos\nb\tmaybe\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: label 'maybe' is not one of"):
        load_dataset(path, Columns("text", "label"), ["neg", "pos"])
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "missing.tsv", Columns("text", "label"))
    with pytest.raises(ValueError, match="integer column"):
        Columns("text", "label", header=False)


def test_metrics() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    m = compute_metrics(logits, [0, 1, 0, 0], regression=False)
    assert m["accuracy"] == 0.75 and m["f1"] == pytest.approx(2 / 3)
    assert m["mcc"] == pytest.approx(0.5773502691896258)
    r = compute_metrics(np.array([[1.0], [2.0], [3.0]]), [1.0, 2.0, 4.0], regression=True)
    assert r["spearman"] == pytest.approx(1.0) and 0.9 < r["pearson"] < 1.0
    with pytest.raises(ValueError, match="does not apply"):
        check_metric("mcc", regression=True)


def test_select_keeps_the_union_within_budget() -> None:
    imp = torch.tensor([9.0, 8.0, 7.0, 6.0, 5.0, 4.0])
    first = select(imp, torch.zeros(6, dtype=torch.bool), size=2, budget=3)
    assert first.tolist() == [True, True, False, False, False, False]
    # new importance prefers weights 3, 4, 5; only one new weight fits the budget of 3
    imp2 = torch.tensor([1.0, 0.0, 2.0, 9.0, 8.0, 7.0])
    second = select(imp2, first, size=2, budget=3)
    assert second.tolist() == [True, False, False, True, False, False]
    assert int((first | second).sum()) == 3


def test_sparsify_keeps_largest_magnitudes() -> None:
    diffs = {"a": torch.tensor([0.1, -0.5, 0.0]), "b": torch.tensor([[0.3, -0.05], [0.0, 0.2]])}
    out = sparsify(diffs, density=3 / 7)
    assert out["a"].tolist() == [0.0, -0.5, 0.0]
    torch.testing.assert_close(out["b"], torch.tensor([[0.3, 0.0], [0.0, 0.2]]))


def test_a_glue_preset_loads_train_and_dev_with_its_label_names_and_metric(tmp_path: Path) -> None:
    """What the accuracy study and bench.train_speed load (no CLI): the dev set takes the
    train set's classes, both renamed to the preset's names; the metric is the preset's."""
    train = write(tmp_path / "train.tsv", "sentence\tlabel\na fine film\t1\na dull movie\t0\n")
    dev = write(tmp_path / "dev.tsv", "sentence\tlabel\nso good\t1\n")
    tr, dv, metric = load_preset("sst2", train, dev)
    assert tr.labels == dv.labels == ["negative", "positive"] and metric == "accuracy"
    assert [e.label for e in dv.examples] == ["positive"] and dv.targets() == [1]
    assert load_preset("stsb", *[write(tmp_path / f"{n}.tsv", "sentence1\tsentence2\tscore\na\tb\t2.5\n")
                                 for n in ("s", "t")])[2] == "pearson"
    with pytest.raises(ValueError, match="does not apply to regression"):
        load_preset("stsb", tmp_path / "s.tsv", tmp_path / "t.tsv", metric="mcc")
