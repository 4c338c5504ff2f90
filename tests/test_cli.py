"""The `polyhead` command line as a newcomer meets it (issue 31): help without torch, the
README's columns, preset label names, and the client verbs against an in-process gRPC
server whose answers the test controls (no Ray, no backbone)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import build_parser
from trainer.cli import load_data

HEAVY = ("torch", "transformers", "ray")


def imports_after(argv: list[str]) -> tuple[int, str, list[str]]:
    """(exit code, stderr, heavy modules imported) of `polyhead ARGV` in a fresh interpreter."""
    code = ("import sys\nfrom server.cli import main\n"
            f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])\nprint(rc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parent.parent, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = out.stdout.strip().splitlines()
    return int(lines[-1]), out.stderr, json.loads(lines[-2].replace("'", '"'))


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["train", "--defaults"]])
def test_help_imports_no_torch(argv: list[str]) -> None:
    rc, _, heavy = imports_after(argv)
    assert rc == 0 and heavy == []


def test_missing_train_file_is_named_before_the_trainer_loads(tmp_path: Path) -> None:
    rc, err, heavy = imports_after(["train", "--method", "lora", "--train", str(tmp_path / "no.tsv"),
                                    "--dev", str(tmp_path / "no.tsv"), "--out", "x.polyhead"])
    assert rc == 2 and f"{tmp_path / 'no.tsv'}: no such file (given as --train)" in err
    assert heavy == []


def test_train_help_is_short_and_points_at_the_defaults_record(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser("train").parse_args(["train", "--help"])
    help_text = capsys.readouterr().out
    assert len(help_text.splitlines()) <= 125 and "polyhead train --defaults" in help_text
    assert "-> lora; 0.0003/10/0.06* | 0.0003/10/0.06*" in help_text  # lora's defaults, marked as chosen by the study
    assert "best of" not in help_text  # the search record lives in --defaults
    with pytest.raises(SystemExit):
        build_parser("train").parse_args(["train", "--defaults"])
    record = capsys.readouterr().out
    assert "lora     servable lr 0.0003, 10 epochs, warm-up 0.06: lora pilot: 3e-4 best of" in record
    assert "--recipe paper:" in record


def train_args(*argv: str) -> argparse.Namespace:
    return build_parser("train").parse_args(["train", "--method", "lora", "--out", "x.polyhead", *argv])


@pytest.mark.parametrize("suffix,text", [
    (".tsv", "sentence\tlabel\ngood film\tpositive\nbad film\tnegative\n"),
    (".csv", "label,sentence\npositive,good film\nnegative,bad film\n"),
    (".jsonl", '{"sentence": "good film", "label": "positive"}\n{"sentence": "bad film", "label": "negative"}\n'),
])
def test_sentence_label_files_need_no_column_flags(tmp_path: Path, suffix: str, text: str) -> None:
    """D1: the README's `sentence`/`label` columns train with no --text-col."""
    path = tmp_path / f"data{suffix}"
    path.write_text(text)
    train, dev, metric = load_data(train_args("--train", str(path), "--dev", str(path)))
    assert [e.text for e in train.examples] == ["good film", "bad film"] and metric == "accuracy"
    assert train.labels == ["negative", "positive"]


def test_a_text_column_still_wins_and_a_missing_one_is_named(tmp_path: Path) -> None:
    both = tmp_path / "both.tsv"
    both.write_text("sentence\ttext\tlabel\nignored\tused\t1\n")
    train, _, _ = load_data(train_args("--train", str(both), "--dev", str(both)))
    assert train.examples[0].text == "used"
    neither = tmp_path / "neither.tsv"
    neither.write_text("review\tlabel\nfine\t1\n")
    with pytest.raises(ValueError, match="no column 'text' in header"):
        load_data(train_args("--train", str(neither), "--dev", str(neither)))


def test_glue_presets_name_their_labels(tmp_path: Path) -> None:
    """SST-2's 0/1 are stored (and so answered) as negative/positive; order is kept."""
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\na fine film\t1\na dull movie\t0\n")
    train, dev, _ = load_data(train_args("--preset", "sst2", "--train", str(path), "--dev", str(path)))
    assert train.labels == ["negative", "positive"] and dev.labels == train.labels
    assert [e.label for e in train.examples] == ["positive", "negative"] and train.targets() == [1, 0]
