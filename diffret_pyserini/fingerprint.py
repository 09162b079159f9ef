"""Content fingerprints: a stage is redone when its inputs, model or settings changed, not when a file is missing."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

WHOLE_FILE_LIMIT = 64 * 2**20  # bytes hashed in full; larger files (model weights) are sampled
SAMPLE = 2**20


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file; files over 64 MiB hash their size plus their first and last MiB (weights are big)."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as handle:
        if size <= WHOLE_FILE_LIMIT:
            for block in iter(lambda: handle.read(SAMPLE), b""):
                h.update(block)
        else:
            h.update(handle.read(SAMPLE))
            handle.seek(size - SAMPLE)
            h.update(handle.read(SAMPLE))
    return h.hexdigest()


def path_digest(path: str | os.PathLike) -> str:
    """Digest of a file, or of every file under a folder (names and contents, sorted)."""
    p = Path(path)
    if p.is_file():
        return file_digest(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file() and "__pycache__" not in q.parts):
        h.update(str(f.relative_to(p)).encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()


def fingerprint(**parts) -> str:
    """A short stable hash of JSON-able parts (paths should already be digests)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
