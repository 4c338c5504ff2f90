"""What each method trains: one wrapper per family, all with the same small surface.

- ``PetModel`` (pasta, prefix, bitfit): ``methods.TaskModule``, so the trained forward is
  the serving forward (plus dropout while training); prefix gates stay frozen at 1.
- ``LoraModel`` (lora): a PEFT ``LoraConfig`` model over ``BertForSequenceClassification``
  with the classifier in ``modules_to_save``; exported with ``artifact_from_peft``.
- ``DenseModel`` (full, child-d, child-f, dps): a trainable copy of the backbone run by the
  serving encoder, with a gradient-mask policy (``polyhead.trainer.masks``). The paper recipe trains
  every parameter (embeddings and pooler included, weight decay as Hugging Face's Trainer);
  the servable recipe trains the encoder layers and the embedding LayerNorm with no decay,
  and the pooler as part of the head (``TrainConfig.trains_pooler``). Exported as a
  ``sparse`` diff (trained - original); a trained pooler goes into an ``mlp`` head.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyhead.engine import Backbone, HeadConfig, TaskArtifact, TaskModule
from polyhead.engine.attach import param_key as _key
from polyhead.engine.attach import tensor_name as _name
from polyhead.engine.config import BaseConfig
from polyhead.engine.encoder import BatchContext, Effect, Encoder
from polyhead.engine.heads import apply_head, init_head
from polyhead.engine.sparse import SparseConfig, from_dense
from polyhead.trainer.config import TrainConfig
from polyhead.trainer.record import StageInfo


class ExportError(RuntimeError):
    """The trained model cannot be stored exactly as an artifact."""


@dataclasses.dataclass
class Batch:
    ids: Tensor  # (B, T)
    mask: Tensor  # (B, T)
    types: Tensor  # (B, T)
    targets: Tensor  # (B,) long class indices, or (B,) float scores


class Trainable(abc.ABC):
    """A model being trained for one task; ``export`` gives the artifact the engine serves."""

    module: nn.Module
    stage_info: StageInfo | None = None  # a stage run before this model (eh-ft's stage 1)

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

    def set_training(self, on: bool) -> None:
        """Train mode (dropout on, if the config says so) or eval mode (exact serving forward)."""
        self.module.train(on)

    def before_clip(self) -> None:  # noqa: B027  (optional hook)
        """Between backward and gradient clipping (DPS masks here, as its autograd hook)."""

    def after_clip(self) -> None:  # noqa: B027
        """Between clipping and the optimiser step (Child-Tuning masks here, in its optimiser)."""

    def after_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:  # noqa: B027
        """After each optimiser step (staged re-selection)."""

    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)

    def state(self) -> dict[str, Tensor]:
        """A copy of everything training changes (for --select best)."""
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def restore(self, state: dict[str, Tensor]) -> None:
        self.module.load_state_dict(state)


def hf_decay_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """Hugging Face Trainer's rule: decay on every parameter but biases and LayerNorm weights."""
    def no_decay(n: str) -> bool:
        return n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n

    decay = [p for n, p in named if p.requires_grad and not no_decay(n)]
    rest = [p for n, p in named if p.requires_grad and no_decay(n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _decay_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on head matrices only; biases, norms and adapter deltas get none."""
    decay = [p for n, p in named if p.requires_grad and n.endswith("weight") and p.dim() == 2]
    ids = {id(p) for p in decay}
    rest = [p for _, p in named if p.requires_grad and id(p) not in ids]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class _DropAdded:
    """An effect whose before-layer additions pass through dropout (PASTA's code:
    ``Dropout(E_l[k])`` at each special position of each row); all else delegated."""

    def __init__(self, effect: Effect, p: float) -> None:
        self._effect, self._p = effect, p

    def __getattr__(self, name: str) -> Any:
        return getattr(self._effect, name)

    def before_layer(self, layer: int, h: Tensor) -> Tensor:
        added = self._effect.before_layer(layer, h) - h  # zero off the special positions
        return h + F.dropout(added, self._p)


class TrainEncoder(Encoder):
    """The serving encoder for training the PET kinds: while ``training``, what an effect
    adds before a layer gets dropout, and the last hidden states are kept for the head."""

    last_hidden: Tensor | None = None

    def forward(self, ctx: BatchContext, token_type_ids: Tensor,
                effects: Sequence[Effect] = (), first_only: bool = False) -> Tensor:
        if self.training:
            effects = [cast(Effect, _DropAdded(e, self.hidden_dropout)) if e.acts_before_layers else e
                       for e in effects]
        h = super().forward(ctx, token_type_ids, effects, first_only)
        self.last_hidden = h if self.training else None
        return h


class PetModel(Trainable):
    """pasta / prefix / bitfit through ``TaskModule`` (train-time == serve-time in eval)."""

    module: TaskModule

    def __init__(self, backbone: Backbone, cfg: TrainConfig, head: HeadConfig, config: BaseConfig, *,
                 zero: bool = False, hf_head: bool = False, frozen: tuple[str, ...] = ()) -> None:
        """``config``: the kind's; ``zero``: start as an exact no-op; ``hf_head``: Hugging
        Face's init of a new classifier; ``frozen``: kind tensors that stay as initialised."""
        from polyhead.trainer.table import METHODS

        kind = METHODS[cfg.method].kind
        art = TaskArtifact.random(kind, backbone.spec, head.num_outputs, config=config,
                                  head_type=head.type, zero=zero, seed=cfg.seed)
        if hf_head:
            head_init = _hf_head(art.tensors, backbone, cfg.seed)
            art = dataclasses.replace(art, tensors={**art.tensors, **head_init})
        self.module = TaskModule(backbone, art)
        self.module.encoder = TrainEncoder(backbone)
        self.kind = kind
        self.dropout = cfg.dropout
        for name in frozen:
            self.module.tensor_params[_key(name)].requires_grad_(False)

    def set_training(self, on: bool) -> None:
        self.module.train(on)
        self.module.encoder.training = on and self.dropout

    def forward(self, batch: Batch) -> Tensor:
        out = self.module(batch.ids, batch.mask, batch.types)
        enc = self.module.encoder
        if not enc.training:
            return out
        # Training: the head again over the same hidden states, with BERT's classifier dropout
        assert isinstance(enc, TrainEncoder) and enc.last_hidden is not None
        head = {_name(k): v for k, v in self.module.head_params.items()}
        return apply_head(head, self.module.head, enc.last_hidden[:, 0], enc.pooler, enc.hidden_dropout)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return _decay_groups(list(self.module.head_params.items()) +
                             list(self.module.tensor_params.items()), weight_decay)

    def export(self) -> TaskArtifact:
        return self.module.export()

    def head_tensors(self) -> dict[str, Tensor]:
        return {_name(k): v.detach().float().cpu().clone() for k, v in self.module.head_params.items()}

    def load_head(self, tensors: dict[str, Tensor]) -> None:
        _copy_head(self.module.head_params, tensors)


def _hf_head(tensors: dict[str, Tensor], backbone: Backbone, seed: int) -> dict[str, Tensor]:
    """Hugging Face's init of a new classifier: weights N(0, initializer_range), biases zero."""
    std = float(getattr(backbone.model.config, "initializer_range", 0.02))
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * std if k.endswith("weight") else torch.zeros_like(v)
            for k, v in tensors.items() if k.startswith("head.")}


def _copy_head(params: nn.ParameterDict, tensors: dict[str, Tensor]) -> None:
    names = {_name(k) for k in params}
    if names != set(tensors):
        raise ValueError(f"head tensors {sorted(tensors)} do not match this head {sorted(names)}")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(tensors[_name(k)])


LORA_QV = ["query", "value"]
LORA_QKVO = r".*\.attention\.(self\.(query|key|value)|output\.dense)"  # EH-FT's Q, K, V, O


class LoraModel(Trainable):
    """PEFT LoRA on ``AutoModelForSequenceClassification`` (classifier in modules_to_save)."""

    module: Any  # peft's PeftModel

    def __init__(self, backbone: Backbone, cfg: TrainConfig, head: HeadConfig,
                 targets: list[str] | str | None = None) -> None:
        import peft
        from transformers import AutoModelForSequenceClassification

        from polyhead.trainer.algos.lora import LoraOptions

        opts = cfg.options_as(LoraOptions)
        self.spec = backbone.spec
        torch.manual_seed(cfg.seed)  # the classifier's init
        drop: dict[str, Any] = ({} if cfg.dropout else
                                {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
        from transformers.utils import logging as hf_logging

        level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # not its report that the classifier is new: it is meant to be
        hf_logging.disable_progress_bar()  # nor a second "Loading weights" bar (the backbone showed one)
        try:
            base = AutoModelForSequenceClassification.from_pretrained(
                backbone.path, num_labels=head.num_outputs, local_files_only=True, **drop)
        finally:
            hf_logging.set_verbosity(level)
            if bars:
                hf_logging.enable_progress_bar()
        self.peft_config = peft.LoraConfig(
            r=opts.lora_r, lora_alpha=opts.lora_alpha,  # type: ignore[arg-type]  # peft: int
            lora_dropout=0.05 if cfg.dropout else 0.0,
            target_modules=targets or LORA_QV, modules_to_save=["classifier"], task_type="SEQ_CLS")
        with warnings.catch_warnings():  # peft calls a transformers method deprecated for v6
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
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
        return self.module.get_submodule("base_model.model.classifier.modules_to_save.default")

    def export(self) -> TaskArtifact:
        import peft

        from polyhead.engine.peft_io import artifact_from_peft

        state = peft.get_peft_model_state_dict(self.module)
        return artifact_from_peft(state, self.peft_config.to_dict(), self.spec)

    def head_tensors(self) -> dict[str, Tensor]:
        c = self._classifier()
        return {f"head.{n}": c.get_parameter(n).detach().float().cpu().clone()
                for n in ("weight", "bias")}

    def load_head(self, tensors: dict[str, Tensor]) -> None:
        c = self._classifier()
        if set(tensors) != {"head.weight", "head.bias"}:
            raise ValueError(f"lora needs a pooler head (head.weight, head.bias), got {sorted(tensors)}")
        with torch.no_grad():
            for n in ("weight", "bias"):
                c.get_parameter(n).copy_(tensors[f"head.{n}"])


class MaskPolicy:
    """Decides which weights may change and how their gradients are masked; the default
    lets every trainable weight change (full fine-tuning)."""

    def union(self) -> dict[str, Tensor] | None:
        """Every backbone weight allowed to change so far (None: all)."""
        return None

    def before_clip(self, params: dict[str, nn.Parameter]) -> None:
        ...

    def after_clip(self, params: dict[str, nn.Parameter]) -> None:
        ...

    def after_step(self, params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer,
                   step: int) -> None:
        ...


def mask_grads(params: dict[str, nn.Parameter], masks: dict[str, Tensor]) -> None:
    for n, m in masks.items():
        p = params[n]
        if p.grad is not None:
            p.grad.mul_(m)


POOLER = "pooler.dense."  # a trained pooler is exported as an mlp head


class DenseModel(Trainable):
    """A trainable copy of the backbone, run by the serving encoder, plus the head.

    ``params`` maps names to every trainable tensor: backbone names (HF) and ``head.*``.
    """

    def __init__(self, backbone: Backbone, cfg: TrainConfig, head: HeadConfig, *,
                 density: float = 1.0, structure: str = "entries") -> None:
        """``density``/``structure``: the stored diff's (a sparse method's servable budget)."""
        model = copy.deepcopy(backbone.model)
        self.bb = dataclasses.replace(backbone, model=model)
        self.encoder = Encoder(self.bb)
        self.head_cfg = head
        self.paper = cfg.paper
        self.dropout = cfg.dropout
        self.density = density
        self.structure = "entries" if density == 1.0 else structure
        all_params = dict(model.named_parameters())
        pooler = [n for n in (POOLER + "weight", POOLER + "bias") if n in all_params]
        # sparse_names: what the servable density budget covers; the pooler is the head's
        self.sparse_names = sorted(all_params) if cfg.paper else self.bb.spec.tunable_params()
        self.pooler_names = pooler if cfg.trains_pooler else []
        self.names = sorted(all_params) if cfg.paper else self.sparse_names + self.pooler_names
        self.backbone_params = {n: all_params[n] for n in self.names}
        for p in self.backbone_params.values():
            p.requires_grad_(True)
        self.original = {n: p.detach().clone() for n, p in self.backbone_params.items()}
        g = torch.Generator().manual_seed(cfg.seed)
        init = init_head(backbone.spec, head, g)
        if cfg.paper:  # BertForSequenceClassification: N(0, initializer_range), zero bias
            std = float(getattr(model.config, "initializer_range", 0.02))
            init = {k: (torch.randn(v.shape, generator=g) * std if k.endswith("weight") else v)
                    for k, v in init.items()}
        self.head = nn.ParameterDict({_key(k): nn.Parameter(v.to(backbone.device, backbone.dtype))
                                      for k, v in init.items()})
        self.module = nn.ModuleDict({"backbone": model, "head": self.head})
        self.params: dict[str, nn.Parameter] = {**self.backbone_params,
                                                **{_name(k): v for k, v in self.head.items()}}
        self.policy = MaskPolicy()
        self.weight_decay_backbone = cfg.paper

    def set_training(self, on: bool) -> None:
        self.module.train(on)
        self.encoder.training = on and self.dropout

    def forward(self, batch: Batch) -> Tensor:
        ctx = self.encoder.context(batch.ids, batch.mask)
        hidden = self.encoder.forward(ctx, batch.types)  # (B, T, d)
        head = {_name(k): v for k, v in self.head.items()}
        drop = self.encoder.hidden_dropout if self.encoder.training else 0.0
        return apply_head(head, self.head_cfg, hidden[:, 0], self.encoder.pooler, drop)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        if self.weight_decay_backbone:  # the papers' code: HF Trainer groups over everything
            return hf_decay_groups(list(self.params.items()), weight_decay)
        # No decay on backbone weights: decay outside the mask would make the diff dense.
        # The pooler is the head's (dense, decayed as head matrices are).
        head = [*self.head.items(), *((n, self.backbone_params[n]) for n in self.pooler_names)]
        groups = _decay_groups(head, weight_decay)
        groups[1]["params"] = groups[1]["params"] + [self.backbone_params[n] for n in self.sparse_names]
        return groups

    def before_clip(self) -> None:
        self.policy.before_clip(self.params)

    def after_clip(self) -> None:
        self.policy.after_clip(self.params)

    def after_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        self.policy.after_step(self.params, optimizer, step)

    def trainable_count(self) -> int:
        union = self.policy.union() or {}
        body = sum(int(union[n].sum()) if n in union else p.numel()
                   for n, p in self.backbone_params.items())
        return body + sum(p.numel() for p in self.head.values())

    def diffs(self) -> dict[str, Tensor]:
        """trained - original per backbone parameter, zero outside the policy's union."""
        union = self.policy.union()
        out = {}
        for n, p in self.backbone_params.items():
            d = (p.detach() - self.original[n]).float()
            out[n] = d * union[n] if union is not None and n in union else d
        return out

    def set_diffs(self, diffs: dict[str, Tensor]) -> None:
        """Reset the weights to original + diffs (after sparsifying)."""
        with torch.no_grad():
            for n, p in self.backbone_params.items():
                p.copy_(self.original[n] + diffs[n].to(p.dtype))

    def export(self) -> TaskArtifact:
        """Every changed backbone weight as a sparse diff, plus the head. The servable
        recipe changes only the encoder layers and the embedding LayerNorm; the paper recipe
        changes every weight: the embedding tables go into the diff as well, and a trained
        pooler into the head (W tanh(P' h + b') is an ``mlp`` head with P' as its first
        layer, so the frozen pooler that other tasks read stays as it is)."""
        diffs = {n: d for n, d in self.diffs().items() if bool((d != 0).any())}
        head_cfg, head = self.head_cfg, self.head_tensors()
        if any(n.startswith(POOLER) for n in diffs):
            head_cfg, head = self._pooler_head()
            diffs = {n: d for n, d in diffs.items() if not n.startswith(POOLER)}
        spec = self.bb.spec
        other = sorted(set(diffs) - set(spec.tunable_params()) - set(spec.embedding_params()))
        if other:
            raise ExportError(f"the trained model changed {', '.join(other)}, which a sparse "
                              "artifact cannot hold (it stores encoder-layer, embedding and "
                              "embedding-LayerNorm diffs)")
        tensors = {k: v.cpu() for k, v in from_dense(diffs, self.structure).items()}
        tensors.update(head)
        return TaskArtifact("sparse", SparseConfig(density=self.density, structure=self.structure),
                            head_cfg, tensors)

    def _pooler_head(self) -> tuple[HeadConfig, dict[str, Tensor]]:
        """The trained pooler and the classifier as an ``mlp`` head (the same logits)."""
        if self.head_cfg.type != "pooler":
            raise ExportError(f"the trained model changed the pooler, which its "
                              f"{self.head_cfg.type!r} head does not read")
        p, head = self.backbone_params, self.head_tensors()
        tensors = {"head.dense.weight": p[POOLER + "weight"], "head.dense.bias": p[POOLER + "bias"],
                   "head.out.weight": head["head.weight"], "head.out.bias": head["head.bias"]}
        return (HeadConfig(num_outputs=self.head_cfg.num_outputs, type="mlp"),
                {k: v.detach().float().cpu().clone() for k, v in tensors.items()})

    def head_tensors(self) -> dict[str, Tensor]:
        return {_name(k): v.detach().float().cpu().clone() for k, v in self.head.items()}

    def load_head(self, tensors: dict[str, Tensor]) -> None:
        _copy_head(self.head, tensors)
