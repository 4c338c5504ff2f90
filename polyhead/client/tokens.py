"""Where a client finds its bearer token, written once for the `polyhead` client verbs, the
trainer's ``--upload`` and the Python clients: the token given, else $POLYHEAD_TOKEN, else
the token `polyhead serve` saved on this machine. Standard library only."""

from __future__ import annotations

import os
from pathlib import Path

TOKEN_ENV = "POLYHEAD_TOKEN"
TOKEN_FILE_ENV = "POLYHEAD_TOKEN_FILE"


def token_file() -> Path:
    """Where `polyhead serve` keeps the token it generated, and client commands look for it:
    $POLYHEAD_TOKEN_FILE or ~/.polyhead/token."""
    return Path(os.environ.get(TOKEN_FILE_ENV) or Path.home() / ".polyhead" / "token")


def saved_token() -> str | None:
    try:
        return token_file().read_text().strip() or None
    except OSError:
        return None


def find_token(token: str | None = None) -> str | None:
    """``token`` if given (not empty), else $POLYHEAD_TOKEN, else the saved token, else None."""
    return token or os.environ.get(TOKEN_ENV) or saved_token()
