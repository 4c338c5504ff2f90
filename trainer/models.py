"""What each method trains: one wrapper per family, all with the same small surface.

- ``PetModel`` (pasta, prefix, bitfit): ``methods.TaskModule``, so the trained forward is
  the serving forward; prefix gates stay frozen at 1 (exactly P-tuning v2).
- ``LoraModel`` (lora): a PEFT ``LoraConfig`` model over ``BertForSequenceClassification``
  with the classifier in ``modules_to_save``; exported with ``artifact_from_peft``.
- ``DenseModel`` (child-d, child-f, dps, full): a trainable copy of the backbone's tunable
  weights (encoder layers + embedding LayerNorm; embedding matrices and pooler frozen)
  run by the serving encoder, with a gradient-mask policy from ``trainer.masks``; exported
  as a ``sparse`` diff (trained - original) over the weights the policy allowed to change.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from methods import Backbone, HeadConfig, TaskArtifact, TaskModule
from methods.bitfit import BitfitConfig
from methods.encoder import Encoder
from methods.heads import apply_head, init_head
from methods.pasta import PastaConfig
from methods.prefix import PrefixConfig
from methods.sparse import SparseConfig, from_dense
from trainer.config import TrainConfig


@dataclasses.dataclass
class Batch:
    ids: Tensor  # (B, T)
    mask: Tensor  # (B, T)
    types: Tensor  # (B, T)
    targets: Tensor  # (B,) long class indices, or (B,) float scores


def _key(name: str) -> str:
    return name.replace(".", "__")


def _name(key: str) -> str:
    return key.replace("__", ".")


class Trainable(abc.ABC):
    """A model being trained for one task; ``export`` gives the artifact the engine serves."""

    module: nn.Module

    @abc.abstractmethod
    def forward(self, batch: Batch) -> Tensor:
        """(B, C) logits."""

    @abc.abstractmethod
    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        ...

    @abc.abstractmethod
    def export(self) -> TaskArtifact:
        ...

    @abc.abstractmethod
    def head_tensors(self) -> dict[str, Tensor]:
        """``head.*`` tensors, fp32 on CPU."""

    @abc.abstractmethod
    def load_head(self, tensors: dict[str, Tensor]) -> None:
        ...

    def after_backward(self) -> None:  # noqa: B027  (optional hook)
        """Hook between backward and the optimiser step (gradient masks)."""

    def after_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:  # noqa: B027
        """Hook after each optimiser step (staged re-selection)."""

    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)


def _decay_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on head matrices only; biases, norms and adapter deltas get none."""
    decay = [p for n, p in named if p.requires_grad and n.endswith("weight") and p.dim() == 2]
    ids = {id(p) for p in decay}
    rest = [p for _, p in named if p.requires_grad and id(p) not in ids]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class PetModel(Trainable):
    """pasta / prefix / bitfit through ``TaskModule`` (train-time == serve-time)."""

    def __init__(self, backbone: Backbone, cfg: TrainConfig, head: HeadConfig) -> None:
        kind = cfg.method
        config: Any = {"pasta": PastaConfig(), "bitfit": BitfitConfig(),
                       "prefix": PrefixConfig(num_prefix=cfg.num_prefix)}[kind]
        # pasta/bitfit start as an exact no-op; a prefix starts random (gate 1), as P-tuning v2
        art = TaskArtifact.random(kind, backbone.spec, head.num_outputs, config=config,
                                  head_type=head.type, zero=kind != "prefix", seed=cfg.seed)
        self.module = TaskModule(backbone, art)
        if kind == "prefix":
            self.module.tensor_params[_key("prefix.gate")].requires_grad_(False)

    def forward(self, batch: Batch) -> Tensor:
        return self.module(batch.ids, batch.mask, batch.types)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return _decay_groups(list(self.module.head_params.items()) +
                             list(self.module.tensor_params.items()), weight_decay)

    def export(self) -> TaskArtifact:
        return self.module.export()

    def head_tensors(self) -> dict[str, Tensor]:
        return {_name(k): v.detach().float().cpu().clone() for k, v in self.module.head_params.items()}

    def load_head(self, tensors: dict[str, Tensor]) -> None:
        _copy_head(self.module.head_params, tensors)


def _copy_head(params: nn.ParameterDict, tensors: dict[str, Tensor]) -> None:
    names = {_name(k) for k in params}
    if names != set(tensors):
        raise ValueError(f"head tensors {sorted(tensors)} do not match this head {sorted(names)}")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(tensors[_name(k)])


class LoraModel(Trainable):
    """PEFT LoRA on ``AutoModelForSequenceClassification`` (classifier in modules_to_save)."""

    def __init__(self, backbone: Backbone, cfg: TrainConfig, head: HeadConfig) -> None:
        import peft
        from transformers import AutoModelForSequenceClassification

        self.spec = backbone.spec
        torch.manual_seed(cfg.seed)  # the classifier's init
        base = AutoModelForSequenceClassification.from_pretrained(
            backbone.path, num_labels=head.num_outputs, local_files_only=True)
        self.peft_config = peft.LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.05,
            target_modules=["query", "value"], modules_to_save=["classifier"], task_type="SEQ_CLS")
        self.module = peft.get_peft_model(base, self.peft_config).to(backbone.device)

    def forward(self, batch: Batch) -> Tensor:
        return self.module(input_ids=batch.ids, attention_mask=batch.mask,
                           token_type_ids=batch.types).logits

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        named = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        head = [(n, p) for n, p in named if "classifier" in n]
        rest = [p for n, p in named if "classifier" not in n]
        groups = _decay_groups(head, weight_decay)
        groups[1]["params"] = groups[1]["params"] + rest
        return groups

    def _classifier(self) -> nn.Module:
        return self.module.base_model.model.classifier.modules_to_save["default"]

    def export(self) -> TaskArtifact:
        import peft

        from methods.peft_io import artifact_from_peft

        state = peft.get_peft_model_state_dict(self.module)
        return artifact_from_peft(state, self.peft_config.to_dict(), self.spec)

    def head_tensors(self) -> dict[str, Tensor]:
        c = self._classifier()
        return {"head.weight": c.weight.detach().float().cpu().clone(),
                "head.bias": c.bias.detach().float().cpu().clone()}

    def load_head(self, tensors: dict[str, Tensor]) -> None:
        c = self._classifier()
        if set(tensors) != {"head.weight", "head.bias"}:
            raise ValueError(f"lora needs a pooler head (head.weight, head.bias), got {sorted(tensors)}")
        with torch.no_grad():
            c.weight.copy_(tensors["head.weight"])
            c.bias.copy_(tensors["head.bias"])


class MaskPolicy:
    """Decides which backbone weights may change; the default lets all of them (full)."""

    def masks(self) -> dict[str, Tensor] | None:
        """Current gradient masks per parameter (None: no mask)."""
        return None

    def union(self) -> dict[str, Tensor] | None:
        """Every weight allowed to change so far (None: all)."""
        return None

    def mask_grads(self, params: dict[str, nn.Parameter]) -> None:
        masks = self.masks()
        if masks is not None:
            for n, p in params.items():
                if p.grad is not None:
                    p.grad.mul_(masks[n])

    def after_step(self, params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer,
                   step: int) -> None:
        ...


class DenseModel(Trainable):
    """A trainable copy of the backbone's tunable weights, run by the serving encoder."""

    def __init__(self, backbone: Backbone, cfg: TrainConfig, head: HeadConfig,
                 policy: MaskPolicy | None = None) -> None:
        model = copy.deepcopy(backbone.model)
        self.bb = dataclasses.replace(backbone, model=model)
        self.encoder = Encoder(self.bb)
        self.head_cfg = head
        self.density = cfg.density if cfg.method != "full" else 1.0
        self.names = self.bb.spec.tunable_params()
        all_params = dict(model.named_parameters())
        self.params = {n: all_params[n] for n in self.names}
        for p in self.params.values():
            p.requires_grad_(True)
        self.original = {n: p.detach().clone() for n, p in self.params.items()}
        g = torch.Generator().manual_seed(cfg.seed)
        self.head = nn.ParameterDict({_key(k): nn.Parameter(v.to(backbone.device, backbone.dtype))
                                      for k, v in init_head(backbone.spec, head, g).items()})
        self.module = nn.ModuleDict({"backbone": model, "head": self.head})
        self.policy = policy or MaskPolicy()

    def forward(self, batch: Batch) -> Tensor:
        ctx = self.encoder.context(batch.ids, batch.mask)
        hidden = self.encoder.forward(ctx, batch.types)  # (B, T, d)
        head = {_name(k): v for k, v in self.head.items()}
        return apply_head(head, self.head_cfg, hidden[:, 0], self.encoder.pooler)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        # No decay on backbone weights: decay outside the mask would make the diff dense.
        groups = _decay_groups(list(self.head.items()), weight_decay)
        groups[1]["params"] = groups[1]["params"] + list(self.params.values())
        return groups

    def after_backward(self) -> None:
        self.policy.mask_grads(self.params)

    def after_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        self.policy.after_step(self.params, optimizer, step)

    def trainable_count(self) -> int:
        union = self.policy.union()
        body = (sum(int(m.sum()) for m in union.values()) if union is not None
                else sum(p.numel() for p in self.params.values()))
        return body + sum(p.numel() for p in self.head.values())

    def diffs(self) -> dict[str, Tensor]:
        """trained - original per tunable parameter, zero outside the policy's union."""
        union = self.policy.union()
        out = {}
        for n, p in self.params.items():
            d = (p.detach() - self.original[n]).float()
            out[n] = d * union[n] if union is not None else d
        return out

    def set_diffs(self, diffs: dict[str, Tensor]) -> None:
        """Reset the weights to original + diffs (after sparsifying)."""
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.original[n] + diffs[n].to(p.dtype))

    def export(self) -> TaskArtifact:
        tensors = {f"{k}": v.cpu() for k, v in from_dense(self.diffs()).items()}
        tensors.update(self.head_tensors())
        return TaskArtifact("sparse", SparseConfig(density=self.density), self.head_cfg, tensors)

    def head_tensors(self) -> dict[str, Tensor]:
        return {_name(k): v.detach().float().cpu().clone() for k, v in self.head.items()}

    def load_head(self, tensors: dict[str, Tensor]) -> None:
        _copy_head(self.head, tensors)
