"""Store errors. Problems with an artifact's content are ``polyhead.engine.errors.ArtifactError``."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot do what was asked (corrupt blob, bad alias, missing backbone spec)."""


class InvalidAliasError(StoreError):
    """A name that cannot be an alias (the caller's input: INVALID_ARGUMENT)."""


class NotFoundError(StoreError):
    """An unknown task, version or alias."""


class KindChangeError(StoreError):
    """A publish that would change a task's kind without an explicit ``replace_kind``."""


class AmbiguousRefError(StoreError):
    """A version prefix that matches more than one version of the task."""


class StoreUnavailable(StoreError):
    """The store's database cannot be reached now (down, restarting, network); try again."""


class QuotaExceeded(StoreError):
    """A publish over its tenant's quota (number of tasks, stored bytes); names both."""


class NamespaceError(StoreError):
    """A task id outside the namespace the caller may write (or of a tenant that does not exist)."""
