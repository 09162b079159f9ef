"""Atomic file writing: write a temporary name, fsync, rename. A killed run never leaves a half file that looks
complete under the final name."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

TMP_MARK = ".tmp-"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened/fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, tmp_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a temporary name ``path + '.tmp-<pid>'`` for writers that need a filename (faiss, numpy); on
    success fsync it and os.replace it onto ``path``; on error remove it. ``tmp_dir`` (same filesystem) puts
    the temp file elsewhere: Anserini indexes EVERY file in a collection folder, temp names included."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = (Path(tmp_dir) if tmp_dir else final.parent) / f"{final.name}{TMP_MARK}{os.getpid()}"
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder ``path + '.tmp-<pid>'`` to fill; on success it replaces ``path`` (an older ``path``
    is removed first), so ``path`` is never a half-written folder; on error the temp folder is removed."""
    import shutil

    final = Path(path)
    tmp = final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8",
                 tmp_dir: str | os.PathLike | None = None) -> Iterator[Any]:
    """Open ``path + '.tmp-<pid>'`` for writing; on success flush, fsync and rename it onto ``path``."""
    with atomic_path(path, tmp_dir) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a whole text file atomically."""
    with atomic_write(path) as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write a JSON file atomically (UTF-8, indented)."""
    atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)
