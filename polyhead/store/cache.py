"""A replica's local copy of artifact bytes, by content hash, for a catalog whose bytes live
in a database: a restart or an eviction from the adapter bank reads the file here, not the
database. Every read re-hashes the file; one that does not match is removed and reads as a
miss. Files are written atomically, so several processes on a host may share the folder.

Location: ``$POLYHEAD_STORE_CACHE`` (a folder, or ``off``), else ``~/.cache/polyhead/blobs``;
capacity ``$POLYHEAD_STORE_CACHE_MB`` (default 4096), least recently read files go first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from polyhead.store.errors import StoreError
from polyhead.store.names import VERSION_RE
from polyhead.store.paths import BLOB_MODE, atomic_write, private_dir

DEFAULT_CAPACITY_MB = 4096.0
OFF = ("off", "none", "0")


class BlobCache:
    """Files ``folder/ab/<sha256>``; at most ``capacity`` bytes (the newest file always stays)."""

    def __init__(self, folder: str | os.PathLike[str], capacity: int) -> None:
        self.folder = Path(folder)
        self.capacity = capacity
        self.tmp_dir = self.folder / "tmp"
        try:
            private_dir(self.folder, parents=True)
            private_dir(self.tmp_dir)
        except OSError as e:
            raise StoreError(f"cannot create the store cache at {self.folder}: {e} "
                             "(set $POLYHEAD_STORE_CACHE to a writable folder, or to 'off')") from e

    @classmethod
    def from_env(cls, folder: str | os.PathLike[str] | None = None) -> BlobCache | None:
        """The cache ``folder`` (else from the environment); None when turned off."""
        where = str(folder) if folder is not None else os.environ.get("POLYHEAD_STORE_CACHE", "")
        if where.strip().lower() in OFF:
            return None
        path = Path(where) if where else Path.home() / ".cache" / "polyhead" / "blobs"
        try:
            mb = float(os.environ.get("POLYHEAD_STORE_CACHE_MB") or DEFAULT_CAPACITY_MB)
        except ValueError as e:
            raise StoreError(f"$POLYHEAD_STORE_CACHE_MB: not a number: {e}") from e
        return cls(path, int(mb * (1 << 20)))

    def path(self, version: str) -> Path:
        if not VERSION_RE.fullmatch(version):
            raise ValueError(f"not a version: {version!r:.80}")
        return self.folder / version[:2] / version

    def get(self, version: str) -> bytes | None:
        """The bytes of ``version`` if held here and whole, else None."""
        path = self.path(version)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != version:
            path.unlink(missing_ok=True)  # damaged on disk: the caller reads the database
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        return data

    def put(self, version: str, data: bytes) -> None:
        """Keep ``data`` (already hash-checked by the caller); a full disk only skips it."""
        path = self.path(version)
        try:
            private_dir(path.parent)
            atomic_write(path, data, tmp_dir=self.tmp_dir, mode=BLOB_MODE)
        except OSError:
            return
        self._trim(keep=path)

    def _trim(self, keep: Path) -> None:
        entries = []
        for p in self.folder.glob("??/*"):
            with contextlib.suppress(OSError):
                st = p.stat()
                entries.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in entries)
        for _, size, p in sorted(entries, key=lambda e: e[0]):
            if total <= self.capacity:
                break
            if p != keep:
                p.unlink(missing_ok=True)
                total -= size
