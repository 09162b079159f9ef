"""Content fingerprints: a stage is redone when its inputs, model or settings changed, not when a file is missing.

Every file is hashed in full (a changed byte anywhere in a weight file changes its digest) and only once: the
digest is cached by (resolved path, size, mtime_ns, ctime_ns, inode) in a small JSON file, by default
``~/.cache/diffret_pyserini/file-digests.json`` (``$DIFFRET_CACHE_DIR`` names another folder). The cache is
an optimisation only: when it cannot be read or written, digests are computed and nothing is cached. A file
modified in the last 2 seconds is hashed but not cached.

Stage bookkeeping (``StageLog``, ``folder_lock``): which stages of a long job are done, by fingerprint, and
one lock per folder, so a second process on the same folder waits, then reuses the first one's result.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from diffret_pyserini.atomic import atomic_write_json

BLOCK = 4 * 2**20
CACHE_ENV = "DIFFRET_CACHE_DIR"
CACHE_NAME = "file-digests.json"
CACHE_VERSION = 1
MAX_ENTRIES = 5000  # about 1 MB of JSON; past it, entries of changed or deleted files are dropped first
# A file modified this recently could change again within the same timestamp tick (coarse clocks, 2 s on FAT)
# without its stamp changing, so its digest is not cached ("racy" entries, as git calls them). Once mtime is
# older than that, any write moves it (or, when the old mtime is put back, moves ctime).
RACY_NS = 2 * 10**9
_STAMP = ("size", "mtime_ns", "ctime_ns", "inode")
_lock = threading.Lock()  # atomic_write_json's temporary name is per process: threads must take turns


def cache_file() -> Path | None:
    """Where digests are cached: ``$DIFFRET_CACHE_DIR/file-digests.json`` or under ``~/.cache``; None if no home."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base) / CACHE_NAME
    try:
        return Path.home() / ".cache" / "diffret_pyserini" / CACHE_NAME
    except RuntimeError:  # no HOME and no passwd entry
        return None


def _hash_file(path: Path) -> str:
    # sha256(str(size) + bytes): the size is part of the digest, so a file cut short never matches.
    with open(path, "rb") as handle:
        h = hashlib.sha256(str(os.fstat(handle.fileno()).st_size).encode())
        for block in iter(lambda: handle.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def _stamp(path: Path) -> dict[str, int]:
    st = os.stat(path)
    # ctime too: a rewrite that puts the old mtime back (cp -p, rsync -t in place) still moves ctime.
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def _load_cache(path: Path | None) -> dict[str, dict]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, unreadable or torn by hand: start afresh
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("files"), dict):
        return {}
    return {k: v for k, v in data["files"].items() if isinstance(v, dict) and isinstance(v.get("sha256"), str)}


def _fresh(key: str, entry: dict) -> bool:
    try:
        return {k: entry.get(k) for k in _STAMP} == _stamp(Path(key))
    except OSError:
        return False


def _save(path: Path | None, new: dict[str, dict]) -> None:
    """Merge ``new`` into the cache file and write it atomically; never raises for an unwritable cache."""
    if path is None or not new:
        return
    with _lock, contextlib.suppress(OSError):
        # Re-read right before writing so entries another process added meanwhile are kept. Two writers racing
        # between read and rename can still drop each other's new entries: that costs a re-hash, never a
        # wrong digest, since every entry is checked against the file's stamp when read.
        files = _load_cache(path)
        files.update(new)
        if len(files) > MAX_ENTRIES:
            files = {k: v for k, v in files.items() if k in new or _fresh(k, v)}
            files = dict(list(files.items())[-MAX_ENTRIES:])
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"version": CACHE_VERSION, "files": files})


def _digest(path: Path, cache: dict[str, dict], new: dict[str, dict]) -> str:
    real = path.resolve()
    key = str(real)
    before = _stamp(real)
    entry = new.get(key) or cache.get(key)
    if entry is not None and {k: entry.get(k) for k in _STAMP} == before:
        return entry["sha256"]
    digest = _hash_file(real)
    # Cache only what was stable while it was read and old enough not to change unseen within one tick.
    if _stamp(real) == before and time.time_ns() - before["mtime_ns"] > RACY_NS:
        new[key] = {**before, "sha256": digest}
    return digest


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of the file's size and whole content, reusing the cached value while the file is unchanged."""
    where = cache_file()
    new: dict[str, dict] = {}
    digest = _digest(Path(path), _load_cache(where), new)
    _save(where, new)
    return digest


def path_digest(path: str | os.PathLike) -> str:
    """Digest of a file, or of every file under a folder (names and contents, sorted)."""
    p = Path(path)
    if p.is_file():
        return file_digest(p)
    where = cache_file()
    cache, new = _load_cache(where), {}
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file() and "__pycache__" not in q.parts):
        h.update(str(f.relative_to(p)).encode())
        h.update(_digest(f, cache, new).encode())
    _save(where, new)  # once per folder, not once per file
    return h.hexdigest()


def fingerprint(**parts) -> str:
    """A short stable hash of JSON-able parts (paths should already be digests)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


LOCK_NAME = ".lock"


class StageLog:
    """Fingerprints of finished stages, kept in one JSON file written atomically.

    `mark` re-reads the file before writing, so stages recorded meanwhile by another process are kept."""

    def __init__(self, path: Path, force: bool = False):
        self.path = Path(path)
        self.force = force
        self.done = self._read()

    def _read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def is_done(self, stage: str, fp: str) -> bool:
        return not self.force and self.done.get(stage) == fp

    def mark(self, stage: str, fp: str) -> None:
        self.done = {**self._read(), stage: fp}
        atomic_write_json(self.path, self.done)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if missing) until the block ends; waits for another holder.

    An advisory `flock` on `folder/.lock`: released by the kernel when the holder dies, so a killed run never
    leaves a stale lock behind."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / LOCK_NAME, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield d
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
