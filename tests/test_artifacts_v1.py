"""Artifacts written by the code before issue 26's renovations still decode and serve the
logits they served then (tests/fixtures/artifacts_v1, made by its make.py at 0400301)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from polyhead.engine import Engine, load_backbone
from polyhead.store.fileformat import decode_artifact

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "artifacts_v1"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
STEMS = sorted(EXPECTED["logits"])


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_backbone(FIXTURE / "backbone"), max_batch_size=8)


def test_fixture_covers_every_kind() -> None:
    from polyhead.engine.kinds import kind_names

    kinds = {decode_artifact((FIXTURE / f"{s}.polyhead").read_bytes())[0].kind for s in STEMS}
    assert kinds == set(kind_names())


@pytest.mark.parametrize("stem", STEMS)
def test_v1_artifact_serves_its_recorded_logits(engine: Engine, stem: str) -> None:
    manifest, artifact = decode_artifact((FIXTURE / f"{stem}.polyhead").read_bytes(), engine.spec)
    assert manifest.task_id == "v1-" + stem.replace("_", "-")
    inputs = [x if isinstance(x, str) else (x[0], x[1]) for x in EXPECTED["inputs"]]
    task = engine.load(artifact)
    try:
        logits = engine.run(inputs, [task] * len(inputs))
    finally:
        engine.unload(task)
    want = EXPECTED["logits"][stem]
    assert len(logits) == len(want)
    for got, row in zip(logits, want, strict=True):
        torch.testing.assert_close(got.float(), torch.tensor(row), rtol=1e-5, atol=1e-6)


def test_decoded_artifact_is_checked_once(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """decode_artifact checks against the backbone and says so in its type; the engine
    loads that without a second check, and checks whatever else it is given."""
    import dataclasses

    from polyhead.engine import ArtifactError, TaskArtifact, ValidArtifact

    data = (FIXTURE / "lora_mlp.polyhead").read_bytes()
    _, artifact = decode_artifact(data, engine.spec)
    assert isinstance(artifact, ValidArtifact) and artifact.fingerprint == engine.spec.fingerprint
    _, unchecked = decode_artifact(data)
    assert not isinstance(unchecked, ValidArtifact)
    calls: list[str] = []
    real = TaskArtifact.validate
    monkeypatch.setattr(TaskArtifact, "validate",
                        lambda self, spec: calls.append(self.kind) or real(self, spec))
    engine.unload(engine.load(artifact))
    assert calls == []  # checked by decode_artifact, not again
    engine.unload(engine.load(unchecked))
    assert calls == ["lora"]
    bad = {**unchecked.tensors}
    bad.pop(next(k for k in bad if k.startswith("lora.")))
    with pytest.raises(ArtifactError, match="missing tensors"):
        engine.load(dataclasses.replace(unchecked, tensors=bad))
    other = dataclasses.replace(artifact, tensors=bad, fingerprint="another backbone")
    with pytest.raises(ArtifactError, match="missing tensors"):  # checked for another backbone
        engine.load(other)
