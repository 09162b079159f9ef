"""The multi-vector store: every document's valid slot vectors in one flat array, read memory-mapped.

Folder layout: ``vectors.npy`` [n_vectors, H] (float16 by default), ``offsets.npy`` int64 [n_docs + 1] (document
i owns rows ``offsets[i]:offsets[i+1]``), ``docid`` (one per line) and ``meta.json`` ({dim, dtype, n_docs,
n_vectors}), written last: a folder without it is unfinished. The read side (search) needs only this module.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from diffret_pyserini.atomic import atomic_path, atomic_write_json, atomic_write_text

__all__ = ["MultiVectorStore", "write_multi_store"]


class MultiVectorStore:
    """A multi-vector store: ``vectors`` [n_vectors, H], ``offsets`` int64 [n_docs+1], ``docids``."""

    def __init__(self, docids: list[str], vectors: np.ndarray, offsets: np.ndarray, meta: dict):
        self.docids, self.vectors, self.offsets, self.meta = docids, vectors, offsets, meta

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> "MultiVectorStore":
        """Open and validate a store folder; with ``mmap`` the vectors stay on disk until read."""
        d = Path(path)
        meta_path = d / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: missing (not a multi-vector store, or an unfinished one)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        docids = (d / "docid").read_text(encoding="utf-8").splitlines()
        offsets = np.load(d / "offsets.npy").astype(np.int64, copy=False)
        # numpy cannot memory-map a zero-length array
        vectors = np.load(d / "vectors.npy", mmap_mode="r" if mmap and meta["n_vectors"] else None)
        if vectors.ndim != 2:
            raise ValueError(f"{d}/vectors.npy: expected 2-D [n_vectors, H], got shape {vectors.shape}")
        if (len(docids) != meta["n_docs"] or offsets.shape != (len(docids) + 1,) or offsets[0] != 0
                or offsets[-1] != vectors.shape[0] or vectors.shape[1] != meta["dim"]
                or np.any(np.diff(offsets) < 0)):
            raise ValueError(f"{d}: docid ({len(docids)}), offsets ({offsets.shape[0]}), vectors {vectors.shape} "
                             f"and meta.json {meta} disagree")
        return cls(docids, vectors, offsets, meta)

    def __len__(self) -> int:
        return len(self.docids)

    def doc_vectors(self, i: int) -> np.ndarray:
        """The valid vectors [n_i, H] of the i-th document (may be empty)."""
        return self.vectors[self.offsets[i]:self.offsets[i + 1]]


def write_multi_store(path: str | os.PathLike, ids: Sequence[str], parts: Iterable[np.ndarray],
                      counts: np.ndarray, dim: int, dtype: str = "float16") -> None:
    """Write a store from vector blocks ``parts`` (concatenated in order) and per-id ``counts``, without
    holding all vectors in memory. ``meta.json`` is written last: a store without it is unfinished."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (d / "meta.json").unlink()
    counts = np.asarray(counts, dtype=np.int64)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    with atomic_path(d / "vectors.npy") as tmp:
        # A memory-mapped .npy is filled block by block; a zero-length one cannot be mapped.
        out = (np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=(total, dim)) if total
               else np.zeros((0, dim), dtype=np.dtype(dtype)))
        pos = 0
        for block in parts:
            out[pos:pos + len(block)] = block
            pos += len(block)
        if pos != total:
            raise ValueError(f"{d}: got {pos} vectors, counts say {total}")
        if total:
            out.flush()
        else:
            with open(tmp, "wb") as fh:  # np.save(path) would append ".npy" to the temp name
                np.save(fh, out)
        del out
    with atomic_path(d / "offsets.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, offsets)
    atomic_write_text(d / "docid", "".join(f"{i}\n" for i in ids))
    atomic_write_json(d / "meta.json", {"dim": dim, "dtype": str(np.dtype(dtype)), "n_docs": len(ids),
                                        "n_vectors": total})
