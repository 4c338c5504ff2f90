"""Durable file writes: temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, tmp_dir: Path | None = None, mode: int = 0o644) -> None:
    """``path`` holds all of ``data`` or is as it was; never a partial file.

    ``tmp_dir`` must be on the same filesystem as ``path`` (default: its directory).
    """
    folder = tmp_dir if tmp_dir is not None else path.parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=path.name[:24] + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


PRIVATE_DIR = 0o700  # the store's folders and files are its owner's alone
PRIVATE_FILE = 0o600
BLOB_MODE = 0o400  # immutable, content-addressed: read-only, owner only


def private_dir(folder: Path, parents: bool = False) -> None:
    """Make ``folder`` (0700) if it is missing; a folder that exists is left as it is."""
    if folder.is_dir():
        return
    folder.mkdir(mode=PRIVATE_DIR, parents=parents, exist_ok=True)
    os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is cut by the umask; this one is not


def private_file(path: Path) -> None:
    """Create ``path`` empty (0600) unless it exists, so a library that opens it later
    (SQLite: its journal and WAL files take the database file's mode) keeps it private."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
