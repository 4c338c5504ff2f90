"""The client against a real `polyhead serve` (one subprocess for the module, as
test_polyhead_serve.py starts it: a temporary HOME, where it saves the token it generates):
Client finds that token as the CLI does; AsyncClient answers as Client does, streams
included; every snippet of docs/client.md runs; and the client-only install: the wheel,
in a fresh venv without torch, called from a folder outside the repository."""

from __future__ import annotations

import asyncio
import re
import subprocess
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench.client_install import InstallUnavailable, build_wheel, client_venv
from polyhead import AsyncClient, Client, PolyheadError
from tests.test_polyhead_serve import Served, saved, served, user_home  # noqa: F401 (fixtures)
from tests.test_serving import artifact

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
TASK = "sentiment"
TEXTS = [f"review {i}: {w}" for i, w in enumerate(["a fine film", "dull", "rain", "a good book"] * 10)]


def task_bytes(tiny_bert: Any) -> bytes:
    return artifact(tiny_bert.spec, TASK, labels=("negative", "positive"), seed=5)[0]


@pytest.fixture(scope="module")
def task(served: Served, tiny_bert) -> str:  # noqa: F811
    with Client(served.address, saved(served)) as c:
        c.upload(task_bytes(tiny_bert))
    return TASK


def test_the_client_finds_the_saved_token(served: Served, user_home: Path, tiny_bert,  # noqa: F811
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's `Client("localhost:9000").upload(...)`: no token given, none in the
    environment; the one `polyhead serve` saved opens the Registry. $POLYHEAD_TOKEN comes first."""
    data = artifact(tiny_bert.spec, "found", seed=8)[0]
    with Client(served.address) as c:
        v = c.upload(data)
        assert c.classify("found", "rain")[0]["version"] == v["version"]

    async def go() -> dict[str, Any]:
        async with AsyncClient(served.address) as c:
            return await c.get_task("found")
    assert asyncio.run(go())["info"]["latest"]["version"] == v["version"]
    monkeypatch.setenv("POLYHEAD_TOKEN", "not-the-token")
    with Client(served.address, retries=0) as c, pytest.raises(PolyheadError) as e:
        c.list_tasks()
    assert e.value.code.name == "UNAUTHENTICATED"


def test_async_client_answers_as_the_sync_one(served: Served, task: str) -> None:  # noqa: F811
    token = saved(served)
    with Client(served.address, token) as c:
        want = (c.classify(task, TEXTS[:6]), list(c.classify_stream(task, iter(TEXTS), chunk=7)),
                c.list_tasks(), c.get_task(task))
        replica = c.health()["replica"]

    async def inputs() -> AsyncIterator[str]:
        for t in TEXTS:
            yield t

    async def go() -> tuple[Any, ...]:
        async with AsyncClient(served.address, token) as c:
            return (await c.classify(task, TEXTS[:6]),
                    [row async for row in c.classify_stream(task, inputs(), chunk=7)],
                    await c.list_tasks(), await c.get_task(task), (await c.health())["replica"])
    *got, got_replica = asyncio.run(go())
    assert len(want[1]) == len(TEXTS) and got_replica == replica
    for a, b in zip(want[0] + want[1], got[0] + got[1], strict=True):
        assert a["label"] == b["label"] and a["version"] == b["version"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
    assert got[2:] == list(want[2:])


def test_async_stream_names_a_refused_input(served: Served, task: str) -> None:  # noqa: F811
    texts = [*TEXTS[:9], " ", *TEXTS[10:14]]

    async def go() -> tuple[list[str], PolyheadError]:
        labels: list[str] = []
        async with AsyncClient(served.address, saved(served)) as c:
            try:
                async for row in c.classify_stream(task, texts, chunk=4):
                    labels.append(row["label"])
            except PolyheadError as e:
                return labels, e
        raise AssertionError("the empty text was not refused")
    labels, error = asyncio.run(go())
    with Client(served.address, saved(served)) as c:
        assert labels == [r["label"] for r in c.classify(task, texts[:9])]
    assert error.input_index == 9 and error.details == "text: empty text"


def doc_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "client.md").read_text(), re.S)


def test_every_snippet_of_the_client_docs_runs(served: Served, user_home: Path, task: str,  # noqa: F811
                                               tiny_bert, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sentiment.polyhead").write_bytes(task_bytes(tiny_bert))
    monkeypatch.chdir(tmp_path)
    snippets = doc_snippets()
    assert len(snippets) == 4
    outputs = []
    for code in snippets:
        exec(compile(code.replace("localhost:9000", served.address), "docs/client.md", "exec"), {})
        outputs.append(capsys.readouterr().out.splitlines())
    assert re.fullmatch(f"{TASK} v\\d+", outputs[0][0]) and len(outputs[0]) == 4
    assert len(outputs[1]) == 1 and len(eval(outputs[1][0])) == 3
    assert outputs[2][2:] == ["input 2 refused: INVALID_ARGUMENT: text: empty text"]
    assert len(outputs[2]) == 3 and outputs[3] == ["100"]


# -- the client-only install ----------------------------------------------------------------

@pytest.fixture(scope="module")
def client_only(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, a fresh venv with it and its dependencies only)."""
    root = tmp_path_factory.mktemp("client-only")
    wheel = build_wheel(root / "wheel")
    try:
        client_venv(root / "venv", wheel)
    except InstallUnavailable as e:
        pytest.skip(f"no package index reachable for grpcio and protobuf: {e}")
    return wheel, root / "venv"


def test_the_wheel_installs_one_namespace_needing_grpc_only(client_only: tuple[Path, Path]) -> None:
    wheel, _ = client_only
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"polyhead", "polyhead-0.1.0.dist-info"}, tops
    assert not {"server", "store", "methods", "trainer", "bench", "tests"} & tops
    meta = zipfile.ZipFile(wheel).read("polyhead-0.1.0.dist-info/METADATA").decode()
    always = [r for r in re.findall(r"^Requires-Dist: (.+)$", meta, re.M) if "extra ==" not in r]
    assert sorted(r.split(">")[0] for r in always) == ["grpcio", "protobuf"]
    assert {"server", "train", "test"} <= set(re.findall(r"^Provides-Extra: (\S+)$", meta, re.M))


def test_the_client_only_venv_calls_a_server_from_outside(client_only: tuple[Path, Path], served: Served,  # noqa: F811
                                                          task: str, tmp_path: Path) -> None:
    _, venv = client_only
    python, polyhead = venv / "bin" / "python", venv / "bin" / "polyhead"
    # HOME holds the token `polyhead serve` saved; no PYTHONPATH (the checkout stays out)
    env = {k: v for k, v in served.env().items() if k != "PYTHONPATH"}

    def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in argv], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)

    out = run(python, "-c", "import torch")
    assert out.returncode == 1 and "No module named 'torch'" in out.stderr
    code = ("import sys, polyhead; from polyhead import Client; "
            f"rows = Client({served.address!r}).classify({task!r}, ['a fine film', 'rain']); "
            "print(polyhead.__file__); print(*[r['label'] for r in rows]); "
            "assert not [m for m in sys.modules if m.startswith(('torch', 'polyhead.server'))]")
    out = run(python, "-c", code)
    assert out.returncode == 0, out.stderr
    where, labels = out.stdout.splitlines()
    assert where.startswith(str(venv)) and not where.startswith(str(ROOT))
    with Client(served.address, saved(served)) as c:
        assert labels.split() == [r["label"] for r in c.classify(task, ["a fine film", "rain"])]
    out = run(polyhead, "classify", "--server", served.address, "--task", task, "a fine film")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\t")[0] == labels.split()[0] and out.stdout.rstrip().endswith("a fine film")
    out = run(polyhead, "serve")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == ("polyhead serve: needs the 'server' extra (no module 'torch' here): "
                          "pip install 'polyhead[server]'\n")
    assert run(polyhead, "--help").returncode == 0
