"""Artifact kinds, the frozen backbone and the mixed-task engine.

Names load on first use, so that ``methods.errors`` (and what only needs it, such as the
store's header checks) stays free of torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from methods._lazy import lazy_exports

if TYPE_CHECKING:
    from methods.artifact import TaskArtifact
    from methods.attach import TaskModule
    from methods.backbone import Backbone, BackboneError, load_backbone
    from methods.engine import Engine, LoadedTask, TextInput
    from methods.errors import ArtifactError, ConfigError, SlotsExhausted
    from methods.heads import HeadConfig
    from methods.registry import Kind, get_kind, kind_names
    from methods.spec import BackboneSpec

_WHERE = {
    "TaskArtifact": "methods.artifact", "TaskModule": "methods.attach",
    "Backbone": "methods.backbone", "BackboneError": "methods.backbone",
    "load_backbone": "methods.backbone", "Engine": "methods.engine",
    "LoadedTask": "methods.engine", "TextInput": "methods.engine",
    "ArtifactError": "methods.errors", "ConfigError": "methods.errors",
    "SlotsExhausted": "methods.errors",
    "HeadConfig": "methods.heads", "Kind": "methods.registry", "get_kind": "methods.registry",
    "kind_names": "methods.registry", "BackboneSpec": "methods.spec",
}
__all__ = [
    "ArtifactError", "Backbone", "BackboneError", "BackboneSpec", "ConfigError", "Engine",
    "HeadConfig", "Kind", "LoadedTask", "SlotsExhausted", "TaskArtifact", "TaskModule",
    "TextInput", "get_kind", "kind_names", "load_backbone",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
