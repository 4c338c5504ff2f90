"""Artifact kinds, the frozen backbone and the mixed-task engine."""

from methods import bitfit, lora, pasta, prefix, sparse  # noqa: F401  (register the kinds)
from methods.artifact import TaskArtifact
from methods.attach import TaskModule
from methods.backbone import Backbone, BackboneError, load_backbone
from methods.engine import Engine, LoadedTask, TextInput
from methods.errors import ArtifactError
from methods.heads import HeadConfig
from methods.registry import Kind, get_kind, kind_names
from methods.spec import BackboneSpec

__all__ = [
    "ArtifactError", "Backbone", "BackboneError", "BackboneSpec", "Engine", "HeadConfig", "Kind",
    "LoadedTask", "TaskArtifact", "TaskModule", "TextInput", "get_kind", "kind_names",
    "load_backbone",
]
