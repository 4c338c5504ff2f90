"""The manifest an artifact file carries: who the task is, what it was trained from and how."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import math
import warnings
from collections.abc import Sequence
from typing import Any

from polyhead.engine.artifact import TaskArtifact
from polyhead.engine.errors import ArtifactError
from polyhead.engine.heads import HeadConfig
from polyhead.engine.spec import BackboneSpec
from polyhead.store.names import TASK_ID_RULE, is_task_id

MANIFEST_SCHEMA_VERSION = 1
MAX_LABEL_CHARS = 256
# Free text a manifest carries, as the most characters each may hold (printable only: no
# NUL, newlines or other control characters, which would forge lines in logs and listings).
# (task_id, kind and inputs have their own checks.)
TEXT_LIMITS = {"backbone_fingerprint": 128, "created_at": 64, "tensors_sha256": 64}
TRAINING_TEXT_LIMITS = {"method": 128, "base_model": 512}


@dataclasses.dataclass(frozen=True)
class Manifest:
    task_id: str
    kind: str
    kind_config: dict[str, Any]  # the kind config's to_dict()
    head: dict[str, Any]  # HeadConfig.to_dict()
    labels: list[str] | None  # None when regression
    regression: bool
    backbone_fingerprint: str
    training: dict[str, Any]  # {"method": str, "hyperparameters": {...}}
    metrics: dict[str, Any]  # dev metrics, e.g. {"accuracy": 0.91}
    created_at: str  # ISO-8601 UTC
    tensors_sha256: str = ""  # filled in by encode_artifact
    schema_version: int = MANIFEST_SCHEMA_VERSION
    inputs: str = "any"  # what Classify accepts: "single" texts, text "pair"s, or "any"
    # Regression trained on standardised targets: {"mean": m, "std": s} of the training
    # targets. The trainer folds y = s z + m into the head's last layer, so served values
    # are already on the task's scale; this records it. None (or absent): raw targets.
    regression_scale: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Raise ArtifactError ("schema_version" or "manifest") unless ``data`` is a manifest."""
        version = data.get("schema_version")
        if version != MANIFEST_SCHEMA_VERSION:
            raise ArtifactError("schema_version", f"manifest schema_version {version!r} is not "
                                f"supported (expected {MANIFEST_SCHEMA_VERSION})")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            warnings.warn(f"manifest: ignoring unknown keys {unknown}", stacklevel=2)
        missing = sorted(n for n, f in fields.items()
                         if f.default is dataclasses.MISSING and n not in data)
        if missing:
            raise ArtifactError("manifest", f"missing keys {missing}")
        kwargs = {n: data[n] for n in fields if n in data}
        if "inputs" not in kwargs:  # files from before the typed field: the training record
            kwargs["inputs"] = inputs_of(data.get("training"))
        for name, want in _TYPES.items():
            if name in kwargs and not _has_type(kwargs[name], want):
                raise ArtifactError("manifest", f"{name} must be {want}, got {kwargs[name]!r:.80}")
        check_text(kwargs)
        check_training(kwargs["training"])
        check_inputs(kwargs["inputs"])
        check_regression_scale(kwargs.get("regression_scale"), kwargs["regression"])
        return cls(**kwargs)


_TYPES = {
    "task_id": "str", "kind": "str", "kind_config": "dict", "head": "dict", "labels": "list|None",
    "regression": "bool", "backbone_fingerprint": "str", "training": "dict", "metrics": "dict",
    "created_at": "str", "tensors_sha256": "str", "inputs": "str",
}
INPUT_FORMS = ("single", "pair", "any")


def check_inputs(inputs: str) -> None:
    if inputs not in INPUT_FORMS:
        raise ArtifactError("manifest", f"inputs must be one of {', '.join(INPUT_FORMS)}, "
                            f"got {inputs!r:.80}")


def inputs_of(training: Any) -> str:
    """The input form an old manifest kept in its training record, else "any"."""
    form = training.get("inputs") if isinstance(training, dict) else None
    return form if form in ("single", "pair") else "any"


def _has_type(value: Any, want: str) -> bool:
    kinds = {"str": str, "dict": dict, "list": list, "bool": bool}
    return any(value is None if w == "None" else isinstance(value, kinds[w]) for w in want.split("|"))


def text_problem(value: str, limit: int) -> str | None:
    """Why ``value`` is not short printable text, or None."""
    if len(value) > limit:
        return f"{len(value)} characters; the limit is {limit}"
    if not value.isprintable():
        return f"holds control characters: {value!r:.80}"
    return None


def check_text(fields: dict[str, Any]) -> None:
    for name, limit in TEXT_LIMITS.items():
        value = fields.get(name)
        if isinstance(value, str) and (why := text_problem(value, limit)):
            raise ArtifactError("manifest", f"{name}: {why}")


def check_training(training: dict[str, Any]) -> None:
    if not isinstance(training.get("method"), str) or not isinstance(
            training.get("hyperparameters"), dict):
        raise ArtifactError("manifest", "training must hold a 'method' string and a "
                            f"'hyperparameters' object, got {training!r:.80}")
    for name, limit in TRAINING_TEXT_LIMITS.items():
        value = training.get(name)
        if value is not None and not isinstance(value, str):
            raise ArtifactError("manifest", f"training.{name} must be a string, got {value!r:.80}")
        if value is not None and (why := text_problem(value, limit)):
            raise ArtifactError("manifest", f"training.{name}: {why}")


def check_regression_scale(scale: Any, regression: bool) -> None:
    if scale is None:
        return
    ok = (isinstance(scale, dict) and set(scale) == {"mean", "std"}
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  for v in scale.values()) and scale["std"] > 0)
    if not ok:
        raise ArtifactError("manifest", "regression_scale must be {\"mean\": finite number, "
                            f"\"std\": positive finite number}}, got {scale!r:.80}")
    if not regression:
        raise ArtifactError("manifest", "regression_scale is set on a classification task")


def validate_task_id(task_id: str) -> str:
    """Return ``task_id`` if it is NAME or TENANT/NAME (see names.TASK_ID_RE); paths never pass."""
    if not is_task_id(task_id):
        raise ArtifactError("task_id", f"task id {task_id!r:.80} {TASK_ID_RULE}")
    return task_id


LABEL_RULE = (f"labels must be non-empty printable strings of at most {MAX_LABEL_CHARS} characters "
              "(no NUL, newline or other control character)")


def bad_label(labels: Sequence[object]) -> object | None:
    """The first of ``labels`` that cannot name a head output (LABEL_RULE), or None."""
    return next((x for x in labels if not isinstance(x, str) or not x or len(x) > MAX_LABEL_CHARS
                 or not x.isprintable()), None)


def check_labels(labels: list[str] | None, regression: bool, head: HeadConfig) -> None:
    """Labels name the head's outputs: C distinct names, or none for 1-output regression."""
    if regression:
        if head.num_outputs != 1 or labels is not None:
            raise ArtifactError("labels", "a regression task has a 1-output head and no labels "
                                f"(head has {head.num_outputs} outputs, labels {labels!r:.80})")
        return
    if labels is None:
        raise ArtifactError("labels", "a classification task needs a label list")
    if len(labels) != head.num_outputs:
        raise ArtifactError("labels", f"{len(labels)} labels for a head of {head.num_outputs} outputs")
    bad = bad_label(labels)
    if bad is not None:
        raise ArtifactError("labels", f"{LABEL_RULE}, got {bad!r:.80}")
    dups = sorted(x for x, n in collections.Counter(labels).items() if n > 1)
    if dups:
        raise ArtifactError("duplicate_labels", f"label names repeat: {dups[:5]}")


def now_utc() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def new_manifest(task_id: str, artifact: TaskArtifact, spec: BackboneSpec, *,
                 labels: list[str] | None, regression: bool = False,
                 training: dict[str, Any] | None = None,
                 metrics: dict[str, Any] | None = None, inputs: str | None = None,
                 regression_scale: dict[str, float] | None = None) -> Manifest:
    """A manifest for ``artifact`` trained on ``spec``'s backbone (the tensors are checked
    when the file is decoded or published)."""
    validate_task_id(task_id)
    check_labels(labels, regression, artifact.head)
    train = {"method": artifact.kind, "hyperparameters": {}, **(training or {})}
    check_training(train)
    inputs = inputs if inputs is not None else inputs_of(train)
    check_inputs(inputs)
    check_regression_scale(regression_scale, regression)
    return Manifest(
        task_id=task_id,
        kind=artifact.kind,
        kind_config=artifact.config.to_dict(),
        head=artifact.head.to_dict(),
        labels=list(labels) if labels is not None else None,
        regression=regression,
        backbone_fingerprint=spec.fingerprint,
        training=train,
        metrics=dict(metrics or {}),
        created_at=now_utc(),
        inputs=inputs,
        regression_scale=dict(regression_scale) if regression_scale is not None else None,
    )
