"""Train-time attach: a task's tensors as nn.Parameters over the frozen backbone.

The forward is the serving encoder's, so what the trainer optimises is exactly what the
engine applies; only the artifact's tensors (kind + head) have gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from polyhead.engine.artifact import TaskArtifact
from polyhead.engine.backbone import Backbone
from polyhead.engine.encoder import Encoder
from polyhead.engine.engine import BatchSlots, HeadBatch, KindBatch, forward_slots
from polyhead.engine.heads import HeadConfig, head_rows
from polyhead.engine.kinds import get_kind
from polyhead.engine.slots import single_row


def param_key(name: str) -> str:
    """A tensor's name as an nn.ParameterDict key (which may not hold dots)."""
    return name.replace(".", "__")


def tensor_name(key: str) -> str:
    """``param_key``'s inverse (tensor names hold no double underscore)."""
    return key.replace("__", ".")


def _to(t: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A detached copy on device; floating tensors cast to dtype, index tensors kept."""
    t = t.detach()
    return t.to(device, dtype).clone() if t.is_floating_point() else t.to(device).clone()


class TaskModule(nn.Module):
    """One task on the frozen backbone; ``forward`` returns (B, C) logits."""

    def __init__(self, backbone: Backbone, artifact: TaskArtifact) -> None:
        super().__init__()
        artifact.validate(backbone.spec)
        self.backbone = backbone
        self.encoder = Encoder(backbone)
        self.kind_name, self.config, self.head = artifact.kind, artifact.config, artifact.head
        kind = artifact.kind_impl
        dev, dt = backbone.device, backbone.dtype
        self.tensor_params = nn.ParameterDict({
            param_key(k): nn.Parameter(_to(v, dev, dt),
                                       requires_grad=kind.trainable and v.is_floating_point())
            for k, v in artifact.kind_tensors().items()
        })
        self.head_params = nn.ParameterDict({
            param_key(k): nn.Parameter(_to(v, dev, dt)) for k, v in artifact.head_tensors().items()
        })

    def batch_slots(self, batch: int) -> BatchSlots:
        """The task as one-slot tables built from the parameters (so gradients reach
        them), every row of the batch in slot 0."""
        kind, spec, dev = get_kind(self.kind_name), self.backbone.spec, self.backbone.device
        tensors = {tensor_name(k): v for k, v in self.tensor_params.items()}
        head = {tensor_name(k): v for k, v in self.head_params.items()}
        mlp = self.head.type == "mlp"
        head_row, mlp_row = head_rows(head, self.head, 0 if mlp else -1)
        zeros = torch.zeros(batch, dtype=torch.long, device=dev)
        kinds = {kind.name: KindBatch(kind, single_row(kind.rows(tensors, spec, self.config)), zeros)}
        return BatchSlots(kinds, {"head": HeadBatch(single_row(head_row), zeros)}, single_row(mlp_row),
                          [self.head.num_outputs] * batch)

    def forward(self, input_ids: Tensor, attention_mask: Tensor,
                token_type_ids: Tensor | None = None) -> Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        rows = forward_slots(self.encoder, input_ids, attention_mask, token_type_ids,
                             self.batch_slots(input_ids.shape[0]))
        return torch.stack(rows)

    def export(self, head: HeadConfig | None = None, **_: Any) -> TaskArtifact:
        """The current tensors as an fp32 CPU artifact."""
        tensors = {tensor_name(k): _to(v, torch.device("cpu"), torch.float32)
                   for k, v in {**self.tensor_params, **self.head_params}.items()}
        return TaskArtifact(self.kind_name, self.config, head or self.head, tensors)
