"""Stage bookkeeping for long jobs: which stages are done (by content fingerprint), and one lock per folder.

A stage is redone when the fingerprint of its inputs, model or settings changed, not merely when a file is
missing. Two processes working on the same folder take turns (`folder_lock`): the second waits, then finds the
first's result recorded and reuses it instead of racing it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator

from diffret_pyserini.atomic import atomic_write_json

__all__ = ["StageLog", "folder_lock", "LOCK_NAME"]

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
