"""File helpers shared by layers that may not import each other (a leaf: imports nothing from bridgerec)."""

from __future__ import annotations

import hashlib

__all__ = ["file_sha256"]


def file_sha256(path: str, chunk_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (checkpoint pickles, packaged model weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_bytes), b""):
            h.update(chunk)
    return h.hexdigest()
