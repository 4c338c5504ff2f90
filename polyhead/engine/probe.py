"""The publish-time probe: an artifact runs on a few fixed inputs before it is published.

Validation checks every tensor is finite, but finite values can still overflow once they
act on the backbone (a LoRA with alpha 1e30 serves NaN scores). The probe runs the very
serving path (a one-task engine over the same backbone, nothing shared with the live
tables) and refuses the artifact unless every logit is finite. Cost: one forward of two
short inputs.
"""

from __future__ import annotations

import torch

from polyhead.engine.artifact import TaskArtifact
from polyhead.engine.backbone import Backbone
from polyhead.engine.engine import Engine
from polyhead.engine.errors import ArtifactError

PROBE_INPUTS: tuple[str | tuple[str, str], ...] = (
    "the quick brown fox jumps over the lazy dog .",
    ("a man is playing a guitar on stage .", "someone plays music ."),
)


def probe_forward(backbone: Backbone, artifact: TaskArtifact) -> None:
    """Raise ArtifactError("probe_forward") unless the artifact's logits on PROBE_INPUTS
    are finite."""
    engine = Engine(backbone, max_batch_size=len(PROBE_INPUTS), capacity=1)
    task = engine.load(artifact)
    try:
        out = engine.run(PROBE_INPUTS, [task] * len(PROBE_INPUTS))
    finally:
        engine.unload(task)
    bad = [i for i, logits in enumerate(out) if not bool(torch.isfinite(logits).all())]
    if bad:
        raise ArtifactError("probe_forward", f"the artifact's logits on fixed probe input(s) {bad} "
                            "are not finite (NaN or Inf): its values overflow on the backbone")
