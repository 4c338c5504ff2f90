"""The docs site: `mkdocs build --strict` passes (a broken link or anchor fails it), the
API reference is fresh against the proto, the plot script draws every plot, and the
benchmark figures it plots are BENCHMARKS.md's."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tools import docs_api

ROOT = Path(__file__).resolve().parent.parent


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                          "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "site" / "reference" / "api" / "index.html").is_file()


def test_mkdocs_strict_fails_on_a_broken_link(tmp_path: Path) -> None:
    """The check the build above relies on: a link to a missing page aborts it."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# x\n\n[gone](missing.md)\n")
    (tmp_path / "mkdocs.yml").write_text((ROOT / "mkdocs.yml").read_text().split("\nnav:")[0] + "\n")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d",
                          str(tmp_path / "site")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode != 0 and "missing.md" in run.stdout + run.stderr


def test_api_reference_is_fresh() -> None:
    assert docs_api.main(["--check"]) == 0, "docs/reference/api.md is stale: run python -m tools.docs_api"


def test_api_reference_carries_every_rpc_field_and_comment() -> None:
    text = docs_api.PROTO.read_text()
    page = docs_api.render(docs_api.parse(text), "proto")
    for rpc in re.findall(r"rpc\s+(\w+)", text):
        assert f"| `{rpc}` |" in page
    for field, number in re.findall(r"\b(\w+)\s*=\s*(\d+)\s*;", text):
        assert re.search(rf"\| `{field}` \| .* \| {number} \|", page), field
    # a trailing comment continued on the next line stays with its field
    assert re.search(r"\| `host_bytes` \|.*decoded artifacts kept on the host .*evicted from the device",
                     page)
    assert "Every Registry RPC needs `authorization: Bearer <token>` metadata." in page


def test_parse_attaches_comments_to_their_declarations() -> None:
    blocks = docs_api.parse("""// ---------- Part
// about the part

// the service
service S {
  // does a thing
  rpc Do(stream A) returns (B);
}

message A {
  repeated string x = 1;  // first line
                          // second line
  // above y
  map<string, int32> y = 2;
}
""")
    s, a = blocks
    assert s.section == ("Part", "about the part") and s.doc == ["the service"]
    assert s.items[0].parts == ("stream A", "B") and s.items[0].doc == ["does a thing"]
    assert a.items[0].parts == ("repeated string", "1") and a.items[0].doc == ["first line", "second line"]
    assert a.items[1].parts == ("map<string, int32>", "2") and a.items[1].doc == ["above y"]


def test_plots_are_drawn(tmp_path: Path) -> None:
    from bench import plots

    written = plots.write_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in (ROOT / "docs" / "img").glob("*.svg"))
    for p in written:
        assert p.read_text().lstrip().startswith(("<?xml", "<svg")) and p.stat().st_size > 2000


def _benchmarks_table_rows(heading: str) -> list[list[str]]:
    text = (ROOT / "BENCHMARKS.md").read_text()
    section = text[text.index(heading):]
    section = section[:section.index("\n## ", 1)]
    return [[c.strip().strip("*") for c in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ")]


def test_serving_figures_are_benchmarks_md_s() -> None:
    figs = json.loads((ROOT / "bench" / "results" / "figures.json").read_text())
    rows = _benchmarks_table_rows("## Serving path (issue 13)")
    table = {(r[0], int(r[1]), int(r[2])): (float(r[6]), float(r[9])) for r in rows
             if r[0] in ("proxy", "direct", "haproxy")}
    for p in figs["serving_path"]["points"]:
        assert table[(p["ingress"], p["concurrency"], p["inputs"])] == (p["wall"], p["cpu"]), p


def test_engine_figures_are_benchmarks_md_s() -> None:
    figs = json.loads((ROOT / "bench" / "results" / "figures.json").read_text())
    text = (ROOT / "BENCHMARKS.md").read_text()
    first: dict[str, str] = {}
    for r in _benchmarks_table_rows("## Engine (issue 12"):  # the first table's figure
        first.setdefault(r[0].split(" (")[0], r[1])
    for ratio in figs["engine"]["ratios"]:
        key = ratio["name"].split("(")[-1].rstrip(")")
        if "c347b31" in ratio:
            assert first[key] == f"{ratio['c347b31']:.3f}", key
            assert re.search(rf"\| {re.escape(key)} .*\| \*?\*?{ratio['c838d93']:.3f}", text), key
        if "4f1ddbe" in ratio:  # bench.engine's printed ratio line in "Issue 29", against b'
            assert re.search(rf"\S+/b' = {ratio['4f1ddbe']:.3f} ", text), key


def nav_pages() -> list[str]:
    """Every page the nav lists (the lines `- Title: page.md` under `nav:`)."""
    nav = (ROOT / "mkdocs.yml").read_text().split("\nnav:\n", 1)[1]
    return re.findall(r"^\s*- [^:\n]+: (\S+\.md)$", nav, re.M)


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    """An omitted page would only warn in mkdocs (strict fails on it, with a message that does
    not say which nav line to add): say it here, page by page."""
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    listed = nav_pages()
    assert len(listed) == len(set(listed))
    assert set(listed) == pages


def subcommands() -> list[tuple[str, ...]]:
    """Every `polyhead` verb, and every sub-verb of the verbs that have them, from the parser."""
    from polyhead.cli import build_parser

    def choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    out: list[tuple[str, ...]] = []
    for verb, p in choices(build_parser()).items():
        subs = choices(p)
        out += [(verb, s) for s in subs] if subs else [(verb,)]
    return out


def test_every_subcommand_has_a_docs_entry() -> None:
    """The commands page has a row for every verb, naming every sub-verb of it."""
    page = (ROOT / "docs" / "guide" / "commands.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `polyhead ")]
    found = subcommands()
    assert {c[0] for c in found} >= {"serve", "classify", "upload", "tasks", "health", "train", "store"}
    assert len(found) > 20  # the sub-verbs of `tasks` and `store` are there
    for cmd in found:
        row = [r for r in rows if r.startswith((f"| `polyhead {cmd[0]} ", f"| `polyhead {cmd[0]}`"))]
        assert row, f"docs/guide/commands.md has no row for `polyhead {cmd[0]}`"
        if len(cmd) == 2:
            named = re.match(rf"\| `polyhead {cmd[0]} ([\w\\|-]+)", row[0])
            assert named and cmd[1] in named[1].split("\\|"), \
                f"docs/guide/commands.md: `polyhead {cmd[0]}` does not name `{cmd[1]}`"


def test_the_commands_page_names_no_verb_that_is_gone() -> None:
    page = (ROOT / "docs" / "guide" / "commands.md").read_text()
    found = subcommands()
    for row in (line for line in page.splitlines() if line.startswith("| `polyhead ")):
        verb, _, rest = row[len("| `polyhead "):].partition(" ")
        verb = verb.rstrip("`")
        assert any(c[0] == verb for c in found), verb
        subs = [c[1] for c in found if c[0] == verb and len(c) == 2]
        if subs:
            assert set(re.match(r"[\w\\|-]+", rest)[0].split("\\|")) == set(subs), row


# Pages other branches add (with their nav lines, at merge): each must then be in the nav.
LATER_PAGES = ["client.md", "tenants.md", "training-jobs.md", "accuracy-study.md",
               "training-methods-api.md", "fair-sharing.md"]


@pytest.mark.parametrize("page", LATER_PAGES)
def test_pages_other_branches_add_are_in_the_nav_once_they_exist(page: str) -> None:
    if (ROOT / "docs" / page).exists():
        assert page in nav_pages()
