"""File digests: the SHA-256 of a file's bytes, read in 1 MiB chunks."""
from __future__ import annotations

import hashlib
import os


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
