"""The Registry's publish and delete rules at the RPC surface (issue 30): the Serve
deployment's class run in-process (no Ray; its RPC methods called directly, errors mapped
by the one status mapping), tiny backbone. A kind change needs ``replace_kind``
(FAILED_PRECONDITION naming both kinds); an artifact whose probe forward is not finite,
or that is over a configured limit, is refused by its named check while the previous
version keeps serving; DeleteTask is undone by RestoreTask."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch

from polyhead.engine import TaskArtifact
from polyhead.engine.lora import LoraConfig
from polyhead.server._private.errors import status_for
from polyhead.server.config import ServerConfig
from polyhead.store import encode_artifact, new_manifest
from polyhead.store.limits import Limits
from polyhead.v1 import polyhead_pb2 as pb
from tests.test_replica_memory import in_process_replica
from tests.test_serving import artifact
from tests.test_store_retention import overflowing

RAIN = [pb.Input(text="rain")]


def config(tmp_path: Path, tiny_bert_dir: Path, **kw: Any) -> ServerConfig:
    kw.setdefault("insecure", "token" not in kw)
    return ServerConfig(store=str(tmp_path / "store"), backbone=str(tiny_bert_dir),
                        seed_examples=False, torch_threads=1, max_inputs=16, max_batch_rows=32, **kw)


async def status(call: Any) -> tuple[grpc.StatusCode, str]:
    """The status an RPC's error maps to (OK when it succeeds)."""
    try:
        await call
    except Exception as e:
        return status_for(e)
    return grpc.StatusCode.OK, ""


def lora_file(spec, task_id: str, art: TaskArtifact) -> bytes:
    manifest = new_manifest(task_id, art, spec, labels=["neg", "pos"], regression=False)
    return encode_artifact(manifest, art)


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ENABLE_AUTO_CONNECT", "0")  # Ray's metrics API must not start Ray


def test_kind_changes_probe_and_restore(no_ray, tmp_path, tiny_bert_dir, tiny_bert) -> None:
    spec = tiny_bert.spec

    async def main() -> None:
        r = await in_process_replica(config(tmp_path, tiny_bert_dir))
        v1 = (await r.Upload(pb.UploadRequest(artifact=artifact(spec, "sst2", seed=1)[0]))).version
        lora = lora_file(spec, "sst2", TaskArtifact.random("lora", spec, 2, seed=2))
        code, details = await status(r.Upload(pb.UploadRequest(artifact=lora)))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "'pasta' task" in details and "'lora' version" in details and "replace_kind" in details
        bad = lora_file(spec, "sst2", overflowing(spec))
        code, details = await status(r.Upload(pb.UploadRequest(artifact=bad, replace_kind=True)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "'probe_forward'" in details
        got = await r.Classify(pb.ClassifyRequest(task_id="sst2", inputs=RAIN))
        assert got.version == v1  # neither refusal touched what serves
        v2 = (await r.Upload(pb.UploadRequest(artifact=lora, replace_kind=True))).version
        got = await r.Classify(pb.ClassifyRequest(task_id="sst2", inputs=RAIN))
        assert got.version == v2 and all(torch.isfinite(torch.tensor(got.predictions[0].scores)))
        gone = await r.DeleteTask(pb.DeleteTaskRequest(task_id="sst2"))
        assert gone.expires_at > ""
        code, _ = await status(r.Classify(pb.ClassifyRequest(task_id="sst2", inputs=RAIN)))
        assert code == grpc.StatusCode.NOT_FOUND
        back = await r.RestoreTask(pb.RestoreTaskRequest(task_id="sst2"))
        assert (back.version, back.number, back.kind) == (v2, 2, "lora")
        got = await r.Classify(pb.ClassifyRequest(task_id="sst2", inputs=RAIN))
        assert got.version == v2
        code, details = await status(r.RestoreTask(pb.RestoreTaskRequest(task_id="sst2")))
        assert code == grpc.StatusCode.NOT_FOUND and "no deleted task" in details

    asyncio.run(main())


def test_configured_limits_refuse_naming_themselves(no_ray, tmp_path, tiny_bert_dir,
                                                    tiny_bert) -> None:
    spec = tiny_bert.spec

    async def main() -> None:
        r = await in_process_replica(config(tmp_path, tiny_bert_dir, max_outputs=4, max_lora_rank=8))
        wide = artifact(spec, "topics", labels=[f"t{i}" for i in range(5)])[0]
        code, details = await status(r.Upload(pb.UploadRequest(artifact=wide)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_outputs = 4" in details
        deep = lora_file(spec, "deep", TaskArtifact.random("lora", spec, 2, config=LoraConfig(r=16)))
        code, details = await status(r.Upload(pb.UploadRequest(artifact=deep)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_lora_rank = 8" in details
        ok = artifact(spec, "topics", labels=["a", "b", "c", "d"])[0]
        assert (await r.Upload(pb.UploadRequest(artifact=ok))).number == 1

    asyncio.run(main())


def test_import_peft_b5_alpha_1e30_is_refused(no_ray, tmp_path, tiny_bert_dir, tiny_bert) -> None:
    """B5: ImportPeft with lora_alpha 1e30 once served NaN scores with HTTP 200."""
    from tests.test_store import save_peft

    folder = tmp_path / "adapter"
    save_peft(tiny_bert_dir, folder, num_labels=2)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    model = (folder / "adapter_model.safetensors").read_bytes()

    async def main() -> None:
        r = await in_process_replica(config(tmp_path, tiny_bert_dir))
        huge = json.dumps({**cfg, "lora_alpha": 1e30}).encode()
        req = pb.ImportPeftRequest(task_id="nli", adapter_config=huge, adapter_model=model)
        code, details = await status(r.ImportPeft(req))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        listed = await r.ListTasks(pb.ListTasksRequest())
        assert [t.task_id for t in listed.tasks] == []

    asyncio.run(main())


def test_import_peft_probe_statuses(no_ray, tmp_path, tiny_bert_dir, tiny_bert) -> None:
    """Probe: ImportPeft took a trained pooler (modules_to_save) and dropped it; a 0-D
    classifier was INTERNAL; a wrong rank or NaN in lora_B was FAILED_PRECONDITION
    'peft_base_model'. Each is the adapter's own fault: INVALID_ARGUMENT, its check named."""
    import safetensors.torch

    from tests.test_store import save_peft

    folder = tmp_path / "adapter"
    save_peft(tiny_bert_dir, folder, num_labels=2)
    cfg = (folder / "adapter_config.json").read_bytes()
    state = safetensors.torch.load((folder / "adapter_model.safetensors").read_bytes())
    pooler, query = "base_model.model.bert.pooler.dense.modules_to_save.default", \
        "base_model.model.bert.encoder.layer.0.attention.self.query"
    cases = {
        "peft_tensors": {f"{pooler}.weight": torch.randn(32, 32), f"{pooler}.bias": torch.randn(32)},
        "'tensor_shape' failed: base_model.model.classifier.weight: shape (), expected (num_labels, 32)":
            {"base_model.model.classifier.weight": torch.tensor(1.0)},
        "'tensor_shape' failed: " + query: {f"{query}.lora_A.weight": torch.randn(8, 32)},
        "'non_finite' failed: " + query: {f"{query}.lora_B.weight": torch.full((32, 4), float("nan"))},
    }

    async def main() -> None:
        r = await in_process_replica(config(tmp_path, tiny_bert_dir))
        for said, extra in cases.items():
            model = safetensors.torch.save({**state, **extra})
            req = pb.ImportPeftRequest(task_id="nli", adapter_config=cfg, adapter_model=model)
            code, details = await status(r.ImportPeft(req))
            assert (code, said in details) == (grpc.StatusCode.INVALID_ARGUMENT, True), details
        listed = await r.ListTasks(pb.ListTasksRequest())
        assert [t.task_id for t in listed.tasks] == []

    asyncio.run(main())


def test_restore_task_needs_the_registry_token(no_ray, tmp_path, tiny_bert_dir) -> None:
    from polyhead.server.config import Secret

    async def main() -> None:
        r = await in_process_replica(config(tmp_path, tiny_bert_dir, token=Secret("registry-secret")))
        code, _ = await status(r.RestoreTask(pb.RestoreTaskRequest(task_id="sst2")))
        assert code == grpc.StatusCode.UNAUTHENTICATED

    asyncio.run(main())


def test_limits_and_retention_come_from_serve_flags() -> None:
    from polyhead.cli import build_parser
    from polyhead.engine.errors import ConfigError
    from polyhead.server.serve_cli import config_from

    args = build_parser("serve").parse_args(
        ["serve", "--insecure", "--max-outputs", "100", "--max-lora-rank", "64",
         "--max-sparse-density", "0.05", "--delete-retention-days", "1.5"])
    cfg = config_from(args)
    assert (cfg.limits().max_outputs, cfg.limits().max_lora_rank, cfg.limits().max_sparse_density,
            cfg.delete_retention_days) == (100, 64, 0.05, 1.5)
    defaults = config_from(build_parser("serve").parse_args(["serve", "--insecure"]))
    assert defaults.limits() == Limits() and defaults.delete_retention_days == 7.0
    for bad, name in (({"max_lora_rank": 1024}, "max_lora_rank"), ({"max_outputs": 0}, "max_outputs"),
                      ({"delete_retention_days": -1.0}, "delete_retention_days")):
        with pytest.raises(ConfigError, match=name):
            ServerConfig(insecure=True, **bad)
