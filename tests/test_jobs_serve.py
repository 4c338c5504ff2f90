"""Training jobs on a real `polyhead serve` (its own Ray, one replica, `--train-cpus 1`), a
tiny encoder and tiny data: submit and serve, bad uploads, cancel, a killed worker, and a
job queued before a restart. Run under the shared lock, like every test that starts Ray:
flock /tmp/polyhead-ray.lock .venv/bin/python -m pytest tests/test_jobs_serve.py
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from polyhead.client import PolyheadClient, PolyheadError
from polyhead.store.catalog import open_catalog
from polyhead.store.jobs import JobBook
from tests.test_jobs import tsv
from tests.test_polyhead_serve import polyhead_command
from tests.test_serving import free_port

pytestmark = pytest.mark.integration
TOKEN = "jobs-token-5e2b"
WATCH_S = 300.0  # a deadline for a watch, never a timing assertion


@dataclasses.dataclass
class Server:
    address: str
    store: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, **kw: Any) -> PolyheadClient:
        return PolyheadClient(self.address, TOKEN, **kw)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start(root: Path, store: Path, bert: Path, train_cpus: int, name: str) -> Server:
    port, http = free_port(), free_port()
    env = {**os.environ, "HOME": str(root / "home"), "POLYHEAD_STORE": str(store),
           "POLYHEAD_BACKBONE": str(bert), "POLYHEAD_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"}
    (root / "home").mkdir(exist_ok=True)
    log = root / f"{name}.log"
    cmd = [*polyhead_command(), "serve", "--port", str(port), "--http-port", str(http), "--cpus", "1",
           "--train-cpus", str(train_cpus), "--no-examples"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    s = Server(f"127.0.0.1:{port}", store, env, proc, log)
    with s.client(retries=0, timeout_s=5) as c:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"polyhead serve exited:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(PolyheadError):
                c.health()
                return s
            time.sleep(0.5)
    s.stop()
    raise AssertionError(f"polyhead serve did not answer:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def served(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """A job created on a server that runs none (`--train-cpus 0`), which stops; then the
    server the tests use, on the same store: (server, the job queued before the restart)."""
    root = tmp_path_factory.mktemp("jobs-serve")
    store = root / "store"
    first = start(root, store, tiny_bert_dir, 0, "first")
    try:
        with first.client() as c:
            ds = c.upload_dataset(tsv(40), "train.tsv")
            job = c.create_job("restarted", "lora", ds["dataset_id"], dev_fraction=0.25,
                               options={"epochs": "1", "batch_size": "8"})
            assert c.get_job(job["job_id"])["state"] == "queued"
    finally:
        first.stop()
    server = start(root, store, tiny_bert_dir, 1, "second")
    try:
        yield server, job["job_id"]
    finally:
        server.stop()


def watch(c: PolyheadClient, job_id: str) -> list[dict[str, Any]]:
    return list(c.watch_job(job_id, timeout_s=WATCH_S))


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events if e["kind"] != "step"]


def test_a_job_queued_before_a_restart_runs_after_it(served: tuple[Server, str]) -> None:
    server, job_id = served
    with server.client() as c:
        events = watch(c, job_id)
        assert kinds(events) == ["queued", "started", "epoch", "published"], events
        started = next(e for e in events if e["kind"] == "started")
        assert started["resources"]["polyhead_train"] == 1 and started["resources"]["CPU"] == 1
        assert c.classify_raw("restarted", "good fun").version == events[-1]["version"]
    # the audit trail: the job's creation and its publish, both under the Registry token
    from polyhead.store.catalog import open_catalog

    trail = [(r.key_id, r.rpc, r.task_id, r.version) for r in open_catalog(server.store).audit()
             if r.task_id == "restarted"]
    assert ("token", "CreateJob", "restarted", "") in trail
    assert ("token", "JobPublished", "restarted", events[-1]["version"]) in trail


def test_submit_wait_then_classify_answers_with_the_new_version(served: tuple[Server, str],
                                                                 tmp_path: Path) -> None:
    server, _ = served
    (tmp_path / "train.tsv").write_bytes(tsv(40))
    (tmp_path / "dev.tsv").write_bytes(tsv(12))
    out = subprocess.run([*polyhead_command(), "jobs", "submit", "--server", server.address,
                          "--method", "lora", "--train", str(tmp_path / "train.tsv"),
                          "--dev", str(tmp_path / "dev.tsv"), "--task-id", "submitted", "--wait",
                          "--epochs", "1", "--batch-size", "8", "--lora-r", "4"],
                         env=server.env, capture_output=True, text=True, timeout=WATCH_S)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[0]
    with server.client() as c:
        job = c.get_job(job_id)
        assert job["state"] == "published" and f"published v1 {job['version']}" in out.stdout
        assert '"lora_r": "4"' in job["options_json"]
        res = c.classify_raw("submitted", "i loved it")  # no restart: the replica follows the store
        assert (res.version, res.version_number) == (job["version"], 1)
        assert c.get_task("submitted")["info"]["kind"] == "lora"


@pytest.mark.parametrize(("name", "data", "as_dev", "where"), [
    ("nolabel.tsv", b"text\tscore\ngood\t1\n", False, "nolabel.tsv:1: no column 'label'"),
    ("dev.tsv", b"text\tlabel\ngood fun\tpos\nbad\tsurprised\n", True, "dev.tsv:3: label 'surprised'"),
    ("empty.tsv", b"", False, "empty.tsv:1: the file is empty"),
    ("garbage.jsonl", bytes(range(256)) * 4, False, "garbage.jsonl:1: not UTF-8"),
], ids=["missing-column", "unknown-dev-label", "empty", "binary"])
def test_bad_datasets_are_rejected_at_upload_naming_the_line(
        served: tuple[Server, str], name: str, data: bytes, as_dev: bool, where: str) -> None:
    server, _ = served
    with server.client() as c:
        labels_from = c.upload_dataset(tsv(8), "train.tsv")["dataset_id"] if as_dev else ""
        with pytest.raises(PolyheadError) as e:
            c.upload_dataset(data, name, labels_from=labels_from)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and where in e.value.details


def test_cancel_while_running_publishes_nothing(served: tuple[Server, str]) -> None:
    server, _ = served
    with server.client() as c:
        ds = c.upload_dataset(tsv(200), "long.tsv")["dataset_id"]
        job = c.create_job("cancelled-task", "lora", ds, dev_fraction=0.1,
                           options={"epochs": "40", "batch_size": "4"})
        for e in c.watch_job(job["job_id"], timeout_s=WATCH_S):
            if e["kind"] == "step":
                assert c.cancel_job(job["job_id"])["state"] == "cancelling"
                break
        events = watch(c, job["job_id"])
        assert events[-1]["kind"] == "cancelled" and c.get_job(job["job_id"])["state"] == "cancelled"
        assert "published" not in kinds(events)
        with pytest.raises(PolyheadError) as e:
            c.get_task("cancelled-task")
        assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_a_killed_worker_is_retried_and_publishes_once(served: tuple[Server, str]) -> None:
    server, _ = served
    book = JobBook(open_catalog(server.store, create=False))
    with server.client() as c:
        ds = c.upload_dataset(tsv(200), "killed.tsv")["dataset_id"]
        job = c.create_job("killed-task", "lora", ds, dev_fraction=0.1,
                           options={"epochs": "12", "batch_size": "4"})
        for e in c.watch_job(job["job_id"], timeout_s=WATCH_S):
            if e["kind"] == "step":
                break
        started = next(e for e in book.events(job["job_id"]) if e.kind == "started")
        os.kill(started.body["pid"], signal.SIGKILL)
        events = watch(c, job["job_id"])
        assert kinds(events)[:3] == ["queued", "started", "retrying"], events
        retry = next(e for e in events if e["kind"] == "retrying")
        assert "worker died" in retry["reason"]
        assert events[-1]["kind"] == "published", events
        done = c.get_job(job["job_id"])
        assert done["attempt"] == 2 and done["state"] == "published"
        versions = c.get_task("killed-task")["versions"]
        assert [v["version"] for v in versions] == [done["version"]]  # one publish, whole


def test_every_training_rpc_needs_the_registry_token(served: tuple[Server, str]) -> None:
    server, job_id = served
    for token in (None, "wrong-token"):
        with PolyheadClient(server.address, token, retries=0) as c:
            for call in (lambda: c.upload_dataset(tsv(8), "t.tsv"), lambda: c.list_jobs(),
                         lambda: c.get_job(job_id), lambda: c.cancel_job(job_id),
                         lambda: list(c.watch_job(job_id)),
                         lambda: c.create_job("t", "lora", "ds-0", dev_fraction=0.5)):
                with pytest.raises(PolyheadError) as e:
                    call()
                assert e.value.code in (grpc.StatusCode.UNAUTHENTICATED,
                                        grpc.StatusCode.PERMISSION_DENIED), e.value
