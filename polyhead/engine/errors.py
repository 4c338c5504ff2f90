"""Errors that name what is wrong with an artifact; the servicer maps them to gRPC codes."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration is wrong: a kind or head config (missing keys, bad values, a wrong
    schema version) or the server's options. The message names the bad input."""


class ArtifactError(ValueError):
    """An artifact fails a check. ``check`` names the check (stable, for clients and tests)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.message = message


class UnknownKindError(ArtifactError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__("unknown_kind", f"kind {name!r} is not one of {', '.join(known)}")


class SlotsExhausted(RuntimeError):
    """The device budget has no room for a task's rows, even after the slot tables gave
    their free slots back: the caller (the adapter bank) unloads tasks and tries again."""
