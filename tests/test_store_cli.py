"""`polyhead store ...` through the real entry point (polyhead.cli.main)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from polyhead.cli import main
from polyhead.store import Store
from tests import test_store_support as support
from tests.test_store import save_peft
from tests.test_store_support import make_file

location, pg_url = support.location, support.pg_url  # fixtures (pg_server: conftest)


@pytest.fixture
def root(location, tiny_bert) -> str:
    """A store (either backend) with two tasks."""
    store = Store(location, tiny_bert.spec)
    for seed in (1, 2):
        store.publish(make_file(tiny_bert.spec, "sst2", seed=seed))
    store.publish(make_file(tiny_bert.spec, "mnli", "lora", outputs=3, seed=3))
    return location


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["store", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_list_show_history(root, capsys) -> None:
    code, out, _ = run(capsys, "--store", str(root), "list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith("mnli ") and lines[1].startswith("sst2 ") and " v2/2 " in lines[1]
    code, out, _ = run(capsys, "list", "--store", str(root), "--json")
    assert [t["task_id"] for t in json.loads(out)] == ["mnli", "sst2"]
    code, out, _ = run(capsys, "show", "sst2", "--store", str(root))
    assert code == 0 and "version    v2 " in out and '"labels": [' in out
    code, out, _ = run(capsys, "show", "sst2", "v1", "--json", "--store", str(root))
    shown = json.loads(out)
    assert shown["version"]["number"] == 1 and shown["manifest"]["kind"] == "pasta"
    code, out, _ = run(capsys, "history", "sst2", "--store", str(root))
    assert code == 0 and [x.split()[0] for x in out.splitlines()] == ["v1", "v2"]
    assert out.splitlines()[1].endswith("latest")


def test_rollback_alias_delete(root, capsys, monkeypatch) -> None:
    monkeypatch.setenv("POLYHEAD_STORE", str(root))
    code, out, _ = run(capsys, "rollback", "sst2", "v1")
    assert code == 0 and "latest -> v1" in out
    assert Store(root).resolve("sst2").number == 1
    code, out, _ = run(capsys, "alias", "sst2", "canary", "v2")
    assert code == 0 and Store(root).resolve("sst2", "canary").number == 2
    code, out, _ = run(capsys, "delete", "mnli")
    assert code == 0
    code, out, _ = run(capsys, "list")
    assert [x.split()[0] for x in out.splitlines()] == ["sst2"]


def test_list_shows_every_alias_where_it_points(root, capsys) -> None:
    """D9: `latest` is listed, and `stable` beside the version it names (as `tasks list`);
    D8: a bare version number reads as vN."""
    assert run(capsys, "alias", "sst2", "stable", "v1", "--store", str(root))[0] == 0
    code, out, _ = run(capsys, "list", "--store", str(root))
    assert code == 0 and out.splitlines()[1].endswith("aliases latest->v2,stable->v1")
    code, out, _ = run(capsys, "show", "sst2", "1", "--store", str(root))
    assert code == 0 and "version    v1 " in out


def test_import_peft_publish_verify(root, capsys, tmp_path, tiny_bert, tiny_bert_dir) -> None:
    folder = tmp_path / "adapter"
    save_peft(tiny_bert_dir, folder, num_labels=2)
    bb = ["--backbone", str(tiny_bert_dir), "--store", str(root)]
    code, out, err = run(capsys, "import-peft", str(folder), "peft-task", "--labels", "neg,pos", *bb)
    assert code == 0, err
    assert Store(root).get("peft-task").manifest.labels == ["neg", "pos"]
    file = tmp_path / "x.polyhead"
    file.write_bytes(make_file(tiny_bert.spec, "from-file"))
    code, out, err = run(capsys, "publish", str(file), *bb)
    assert code == 0 and out.startswith("from-file: v1"), err
    code, out, _ = run(capsys, "verify", *bb)
    assert code == 0 and out.startswith("ok: 5 versions of 4 tasks")
    store = Store(root)
    support.damage(store.catalog, store.resolve("sst2").version)
    code, out, _ = run(capsys, "verify", "--no-backbone", "--store", str(root))
    assert code == 1 and "sst2 v2" in out and "sha256" in out


@pytest.mark.parametrize(("argv", "named"), [
    (["show", "nope"], "nope"),
    (["show", "sst2", "v9"], "v9"),
    (["history", "../etc"], "../etc"),
    (["rollback", "sst2", "deadbeefdead"], "deadbeefdead"),
    (["alias", "sst2", "Bad Alias", "v1"], "Bad Alias"),
    (["delete", "ghost"], "ghost"),
    (["import-peft", "/no/such/folder", "t"], "/no/such/folder"),
    (["publish", "/no/such/file.polyhead"], "/no/such/file.polyhead"),
])
def test_bad_input_is_one_line_and_exit_2(root, capsys, tiny_bert_dir, argv, named) -> None:
    extra = ["--backbone", str(tiny_bert_dir)] if argv[0] in ("import-peft", "publish") else []
    code, _, err = run(capsys, *argv, *extra, "--store", str(root))
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err


def test_bad_files_and_missing_store(root, capsys, tmp_path, tiny_bert_dir) -> None:
    bad = tmp_path / "bad.polyhead"
    bad.write_bytes(b"not an artifact at all")
    code, _, err = run(capsys, "publish", str(bad), "--backbone", str(tiny_bert_dir), "--store", str(root))
    assert code == 2 and "not_safetensors" in err and "is it a .polyhead artifact?" in err
    code, _, err = run(capsys, "list", "--store", str(tmp_path / "typo"))
    assert code == 2 and "typo" in err and not (tmp_path / "typo").exists()
    code, _, err = run(capsys, "import-peft", str(tmp_path), "t", "--backbone", str(tmp_path / "nobb"),
                       "--store", str(root))
    assert code == 2 and "nobb" in err
    with pytest.raises(SystemExit) as e:
        main(["store", "show"])
    assert e.value.code == 2


def test_catalog_commands_do_not_import_torch(root) -> None:
    code = (
        "import argparse, sys\n"
        "import polyhead.store.cli\n"
        "p = argparse.ArgumentParser(); polyhead.store.cli.register(p.add_subparsers())\n"
        "for argv in (['list'], ['history', 'sst2'], ['show', 'sst2']):\n"
        f"    a = p.parse_args(['store', '--store', {str(root)!r}, *argv])\n"
        "    assert a.func(a) == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60, cwd=Path.cwd())
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[0].startswith("mnli ")
