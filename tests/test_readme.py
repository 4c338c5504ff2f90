"""The README's front page, run as a newcomer runs it: its commands in order, on a fresh
store and a fresh HOME, against a real `polyhead serve` on the packaged MiniLM, each
command's output checked against the sample output the README shows under it.

The README's fenced ```sh blocks are the commands (a ```text block right after one is the
output of its last command); the ```shell block that opens the page is `make serve` and
`make test`. `make serve` is started as the Makefile runs it (`$(VENV)/bin/polyhead serve
$(SERVE_ARGS)`, with its HF_*_OFFLINE exports), minus the install, and `make test` is this
suite itself, so neither is run as a command. The one change to the commands: the ports
(9000 and 8000 may be taken on a shared machine), so the server gets free ones and each
client command its `--server`, curl its port. They run in a folder of their own where
`.venv` is this interpreter's venv and `../shared/data/glue/SST-2` is the data.

The ```python block (the client alone) runs last, before the server is stopped with
Ctrl-C (SIGINT) as the tour's step 7 says.

The README trains on 500 rows of GLUE's SST-2 for 2 epochs (minutes on 2 cores), so the
run on that data is `slow` (and needs the data beside the checkout, as the README says).
The fast variant runs the same commands with the same flags, `--max-train 500
--epochs 2 --lr 3e-3` included, on a tiny SST-2-format file (the shipped example's 84 sentences as
0/1 labels) in the same place: every command, every flag and every output line (numbers and
hashes masked) are checked; only the trained task's predictions may differ from the README's.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_polyhead_serve import TOKEN_VARS, Served, polyhead_command, serving
from tests.test_serving import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GLUE = ROOT.parent / "shared" / "data" / "glue"  # the README's ../shared/data/glue
EXAMPLE = ROOT / "polyhead" / "server" / "examples" / "sentiment.tsv"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced block, in order."""
    return [(m[1], m[2]) for m in FENCE.finditer(text)]


def commands(body: str) -> list[str]:
    """A shell block's commands, backslash continuations joined."""
    return [c.strip() for c in body.replace("\\\n", " ").splitlines() if c.strip()]


def tour(text: str) -> list[tuple[str, str | None]]:
    """(command, the README's sample output of it or None) for every ```sh command, in order."""
    out: list[tuple[str, str | None]] = []
    found = blocks(text)
    for i, (info, body) in enumerate(found):
        if info != "sh":
            continue
        cmds = commands(body)
        shown = found[i + 1][1] if i + 1 < len(found) and found[i + 1][0] == "text" else None
        out += [(c, shown if j == len(cmds) - 1 else None) for j, c in enumerate(cmds)]
    return out


def mask(s: str) -> str:
    """Numbers and hashes out: what varies from run to run (scores, times, versions)."""
    return re.sub(r"\d+(,\d{3})*(\.\d+)?(e-?\d+)?", "<n>", re.sub(r"\b[0-9a-f]{12,64}\b", "<hash>", s))


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    assert text.startswith("# Polyhead\n\n```shell\nmake serve\nmake test\n```\n")
    assert len(text.splitlines()) <= 120  # a front page; the rest is in docs/
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^serve: install\n\t\$\(VENV\)/bin/polyhead serve \$\(SERVE_ARGS\)$", make, re.M)
    assert re.search(r"^test: lint\n", make, re.M) and re.search(r"^lint: install\n", make, re.M)


def test_tour_parses_to_the_steps_the_readme_promises() -> None:
    steps = [c for c, _ in tour(README.read_text())]
    verbs = [" ".join(shlex.split(c)[:2]) for c in steps]
    assert verbs == [".venv/bin/polyhead classify", ".venv/bin/polyhead train", ".venv/bin/polyhead upload",
                     "curl -s", "printf a gripping, beautifully acted film\\nthe plot is a tedious mess\\n",
                     ".venv/bin/polyhead classify"]
    assert "--method lora" in steps[1] and "--max-train" in steps[1]
    assert "--file texts.txt" in steps[-1]


def test_readme_says_what_is_bound_and_what_columns_need_no_flags() -> None:
    """D5 and D1 of issue 31, against the code: the addresses `polyhead serve` binds by
    default, and the columns `polyhead train` finds without flags."""
    from polyhead.cli import build_parser
    from polyhead.server.serve_cli import DEFAULT_HOST

    text = " ".join(README.read_text().split())
    serve = build_parser("serve").parse_args(["serve"])
    bound = (serve.host, serve.port, serve.http_port)
    assert bound == (DEFAULT_HOST, 9000, 8000) == ("127.0.0.1", 9000, 8000)
    assert "serves gRPC on `127.0.0.1:9000` and HTTP on `127.0.0.1:8000`: this machine only" in text
    assert "SERVE_ARGS='--host 0.0.0.0'` listens on every interface" in text
    assert "with `sentence` (or `text`) and `label` columns needs no `--preset` or column flags" in text
    assert "Ctrl-C stops it" in text and "pip install '.[server,train]'" in text


def python_blocks(text: str) -> list[str]:
    return [body for info, body in blocks(text) if info == "python"]


def tiny_sst2(folder: Path) -> None:
    """SST-2's layout and columns (sentence, label 0/1) with the example's 84 sentences."""
    folder.mkdir(parents=True)
    with EXAMPLE.open() as f:
        rows = [(r["sentence"], "1" if r["label"] == "positive" else "0")
                for r in csv.DictReader(f, delimiter="\t")]
    for name, part in (("train.tsv", rows), ("dev.tsv", rows[::4])):
        (folder / name).write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in part))


@contextlib.contextmanager
def served_as_make_does(work: Path, home: Path) -> Iterator[Served]:
    """`make serve` in ``work``: the installed `polyhead serve`, the Makefile's offline
    exports, the default store (./polyhead-store, fresh) and backbone, free ports."""
    port, http = free_port(), free_port()
    s = Served(f"127.0.0.1:{port}", http, home, work / "polyhead-store", None, work / "serve.log")  # type: ignore[arg-type]
    env = {k: v for k, v in s.env().items() if k not in ("POLYHEAD_STORE", "POLYHEAD_BACKBONE")}
    env.update(TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="2")
    cmd = [*polyhead_command(), "serve", "--port", str(port), "--http-port", str(http)]
    with serving(s, cmd, env, work):
        yield s


def localised(cmd: str, s: Served) -> str:
    """The command against this server's ports (the only change made to it)."""
    port = s.address.rsplit(":", 1)[1]
    cmd = re.sub(r"^(\.venv/bin/polyhead (classify|upload|tasks \w+|health))\b",
                 rf"\1 --server localhost:{port}", cmd)
    return cmd.replace("localhost:8000", f"localhost:{s.http}").replace("localhost:9000", f"localhost:{port}")


def lines(out: str) -> list[str]:
    """Output lines, progress bars' carriage returns splitting them too."""
    return [x.strip() for x in re.split(r"[\r\n]", out) if x.strip()]


def check(cmd: str, shown: str | None, out: str, exact: bool) -> None:
    """The output against the README's sample: the same lines with numbers and hashes
    masked (``exact``), or, for the trained task on the tiny data, the same shape."""
    if shown is None:
        return
    if cmd.startswith("curl"):
        got, want = json.loads(out), json.loads(shown)
        assert set(got) == set(want) and got["labels"] == want["labels"] and got["task_id"] == want["task_id"]
        assert [set(p) for p in got["predictions"]] == [set(p) for p in want["predictions"]]
        if exact:
            assert [p["label"] for p in got["predictions"]] == [p["label"] for p in want["predictions"]]
        return
    if "--file" in cmd:
        got_rows = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        want_rows = [json.loads(x) for x in shown.splitlines() if x.startswith("{")]
        def shape(rows: list[dict]) -> list[tuple]:
            return [(r["line"], r["text"], set(r)) for r in rows]

        assert shape(got_rows) == shape(want_rows)
        assert [mask(x) for x in out.splitlines() if x.startswith("#")] == [
            mask(x) for x in shown.splitlines() if x.startswith("#")]
        if exact:
            assert [r["label"] for r in got_rows] == [r["label"] for r in want_rows]
        return
    want_lines = [mask(x) for x in lines(shown) if x != "..."]
    got_lines = [mask(x) for x in lines(out)]
    for line in want_lines:  # with the numbers masked, the tiny data's lines are the same
        assert line in got_lines, f"{cmd}\nREADME shows: {line}\noutput:\n{out}"


def run_tour(tmp: Path, data: Path | None, exact: bool) -> None:
    work, home = tmp / "work", tmp / "home"
    work.mkdir()
    home.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))
    sst2 = tmp / "shared" / "data" / "glue" / "SST-2"
    if data is None:
        tiny_sst2(sst2)
    else:
        sst2.parent.mkdir(parents=True)
        sst2.symlink_to(data)
    with served_as_make_does(work, home) as s:
        # the startup line (printed once Serve reports ready, which may come after the first
        # answer): what the README's step 1 shows, with this run's ports
        line = f"serving gRPC on {s.address} and HTTP on 127.0.0.1:{s.http}"
        stop_at = time.monotonic() + 120  # only stops the wait
        while line not in s.output() and s.proc.poll() is None and time.monotonic() < stop_at:
            time.sleep(0.2)
        assert line in s.output(), s.output()[-3000:]
        drop = (*TOKEN_VARS, "POLYHEAD_STORE", "POLYHEAD_BACKBONE")
        env = {k: v for k, v in s.env().items() if k not in drop}
        for cmd, shown in tour(README.read_text()):
            run = subprocess.run(["bash", "-c", localised(cmd, s)], cwd=work, env=env, capture_output=True,
                                 text=True, timeout=3600)
            out = run.stdout + run.stderr
            assert run.returncode == 0, f"{cmd}\n{out}"
            check(cmd, shown, out, exact or "sst2" not in cmd)
        assert (work / "sst2.polyhead").is_file() and (work / "polyhead-store").is_dir()
        # the client alone, from Python: what it prints is the label of the README's text
        (snippet,) = python_blocks(README.read_text())
        run = subprocess.run([sys.executable, "-c", localised(snippet, s)], cwd=work, env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() in (("negative",) if exact else ("negative", "positive")), run.stdout
        s.proc.send_signal(signal.SIGINT)  # step 7: Ctrl-C
        t0 = time.monotonic()
        assert s.proc.wait(120) == 0
        print(f"stopped in {time.monotonic() - t0:.1f} s")
        assert "polyhead: stopping" in s.output() and "Traceback" not in s.output()


def test_the_tour_on_tiny_data(tmp_path: Path) -> None:
    run_tour(tmp_path, None, exact=False)


@pytest.mark.slow
@pytest.mark.skipif(not (GLUE / "SST-2" / "train.tsv").is_file(),
                    reason="needs GLUE's SST-2 beside the checkout")
def test_the_tour_as_written(tmp_path: Path) -> None:
    run_tour(tmp_path, GLUE / "SST-2", exact=True)
