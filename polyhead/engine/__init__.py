"""Artifact kinds, the frozen backbone and the mixed-task engine.

Names load on first use, so that ``polyhead.engine.errors`` (and what only needs it, such as the
store's header checks) stays free of torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyhead._lazy import lazy_exports

if TYPE_CHECKING:
    from polyhead.engine.artifact import TaskArtifact, ValidArtifact
    from polyhead.engine.attach import TaskModule
    from polyhead.engine.backbone import Backbone, BackboneError, load_backbone
    from polyhead.engine.engine import Engine, LoadedTask, TextInput
    from polyhead.engine.errors import ArtifactError, ConfigError, SlotsExhausted
    from polyhead.engine.heads import HeadConfig
    from polyhead.engine.kinds import Kind, get_kind, kind_names
    from polyhead.engine.spec import BackboneSpec

_WHERE = {
    "TaskArtifact": ".artifact", "ValidArtifact": ".artifact", "TaskModule": ".attach",
    "Backbone": ".backbone", "BackboneError": ".backbone",
    "load_backbone": ".backbone", "Engine": ".engine",
    "LoadedTask": ".engine", "TextInput": ".engine",
    "ArtifactError": ".errors", "ConfigError": ".errors",
    "SlotsExhausted": ".errors",
    "HeadConfig": ".heads", "Kind": ".kinds", "get_kind": ".kinds",
    "kind_names": ".kinds", "BackboneSpec": ".spec",
}
__all__ = [
    "ArtifactError", "Backbone", "BackboneError", "BackboneSpec", "ConfigError", "Engine",
    "HeadConfig", "Kind", "LoadedTask", "SlotsExhausted", "TaskArtifact", "TaskModule",
    "TextInput", "ValidArtifact", "get_kind", "kind_names", "load_backbone",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
