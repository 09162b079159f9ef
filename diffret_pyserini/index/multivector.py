"""The multi-vector store: every document's valid slot vectors in one flat array, read memory-mapped.

Folder layout: ``vectors.npy`` [n_vectors, H], ``offsets.npy`` int64 [n_docs + 1] (document i owns rows
``offsets[i]:offsets[i+1]``), ``docid`` (one per line) and ``meta.json`` ({dim, dtype, n_docs, n_vectors}),
written last: a folder without it is unfinished. The read side (search) needs only this module.

Store dtypes (``meta.json`` "dtype"): ``float16`` (the default, 2 bytes x H per vector), ``float32``, and
``int8``: one signed byte per value plus a float32 scale per vector in ``scales.npy`` [n_vectors]
(``x ~= codes * scale``, scale = max|x| / 127), 1 byte x H + 4 per vector. Rounding is to the nearest code, so
every value is off by at most scale / 2 = max|x| / 254 (QUANT_TOLERANCE x max|x|), and a dot product with a
query q by at most ||q||_1 x max|x| / 254.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from diffret_pyserini.atomic import atomic_path, atomic_write_json, atomic_write_text
from diffret_pyserini.cli import InputError
from diffret_pyserini.index.faiss_dirs import INDEX_TYPES, IndexSettings, build_index, factory_string

__all__ = ["MultiVectorStore", "write_multi_store", "convert_store", "quantize_int8", "STORE_DTYPES",
           "QUANT_TOLERANCE", "auto_index_spec", "candidate_index_spec", "build_candidate_index"]

STORE_DTYPES = ("float16", "float32", "int8")
QUANT_TOLERANCE = 1.0 / 254  # max |x - dequantised x| as a share of the vector's max |x|
_INT8_MAX = 127
# 'auto' scans every vector (exhaustive, so candidates are exact) up to this many vectors, then switches to
# IVF. Measured on a 2-core CPU, 4 query vectors x 1.6M x 128, FAISS alone: IndexFlatIP ~63 ms, SQfp16
# ~40 ms (p95 46; it reads half the bytes, and over a float16 store its codes are the store's values exactly,
# so its candidates equal Flat's); + ~5 ms re-scoring that misses a 50 ms p95, so 1.6M goes to IVF (~1-3 ms).
EXHAUSTIVE_MAX_VECTORS = 1_000_000
# Above this many bytes of float16 codes 'auto' switches from IVF-SQfp16 to IVF-PQ candidates (the exact
# re-scoring reads the store, so the candidate index only has to find the documents, not score them).
COMPRESSED_MIN_CODE_BYTES = 4 << 30


def quantize_int8(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float rows [n, H] -> (int8 codes [n, H], float32 scales [n]) with ``codes * scale ~= rows``."""
    x = np.asarray(block, dtype=np.float32)
    peak = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(len(x), np.float32)
    scales = np.where(peak > 0, peak / _INT8_MAX, 1.0).astype(np.float32)
    codes = np.clip(np.rint(x / scales[:, None]), -_INT8_MAX, _INT8_MAX).astype(np.int8)
    return codes, scales


class MultiVectorStore:
    """A multi-vector store: ``vectors`` [n_vectors, H] (float16/float32, or int8 codes with ``scales``),
    ``offsets`` int64 [n_docs+1], ``docids``."""

    def __init__(self, docids: list[str], vectors: np.ndarray, offsets: np.ndarray, meta: dict,
                 scales: np.ndarray | None = None):
        self.docids, self.vectors, self.offsets, self.meta = docids, vectors, offsets, meta
        self.scales = scales

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> "MultiVectorStore":
        """Open and validate a store folder; with ``mmap`` the vectors stay on disk until read."""
        d = Path(path)
        meta_path = d / "meta.json"
        if not meta_path.is_file():
            raise InputError(f"{meta_path}: missing (not a multi-vector store, or an unfinished one)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        docids = (d / "docid").read_text(encoding="utf-8").splitlines()
        offsets = np.load(d / "offsets.npy").astype(np.int64, copy=False)
        # numpy cannot memory-map a zero-length array
        mode = "r" if mmap and meta["n_vectors"] else None
        vectors = np.load(d / "vectors.npy", mmap_mode=mode)
        if vectors.ndim != 2:
            raise InputError(f"{d}/vectors.npy: expected 2-D [n_vectors, H], got shape {vectors.shape}")
        scales = None
        if meta.get("dtype") == "int8":
            scales = np.load(d / "scales.npy", mmap_mode=mode)
            if scales.shape != (vectors.shape[0],):
                raise InputError(f"{d}/scales.npy: shape {scales.shape}, expected ({vectors.shape[0]},)")
        if (len(docids) != meta["n_docs"] or offsets.shape != (len(docids) + 1,) or offsets[0] != 0
                or offsets[-1] != vectors.shape[0] or vectors.shape[1] != meta["dim"]
                or np.any(np.diff(offsets) < 0) or str(vectors.dtype) != meta.get("dtype", str(vectors.dtype))):
            raise InputError(f"{d}: docid ({len(docids)}), offsets ({offsets.shape[0]}), vectors {vectors.shape} "
                             f"{vectors.dtype} and meta.json {meta} disagree")
        return cls(docids, vectors, offsets, meta, scales)

    def __len__(self) -> int:
        return len(self.docids)

    @property
    def dtype(self) -> str:
        return str(self.vectors.dtype)

    def rows(self, rows: np.ndarray | slice) -> np.ndarray:
        """Store rows as float32 (int8 codes are dequantised with their scales)."""
        out = np.asarray(self.vectors[rows], dtype=np.float32)
        if self.scales is not None:
            out *= np.asarray(self.scales[rows], dtype=np.float32)[:, None]
        return out

    def doc_vectors(self, i: int) -> np.ndarray:
        """The valid vectors [n_i, H] of the i-th document (may be empty); int8 stores give float32."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        if self.scales is not None:
            return self.rows(slice(lo, hi))
        return self.vectors[lo:hi]

    def float_blocks(self, block_rows: int = 1 << 18) -> Iterable[np.ndarray]:
        """All vectors in order, as float32 blocks of at most ``block_rows`` rows (bounded memory)."""
        for lo in range(0, self.vectors.shape[0], block_rows):
            yield self.rows(slice(lo, min(lo + block_rows, self.vectors.shape[0])))


class _NpyWriter:
    """A .npy file written front to back, block by block: the header, then raw rows. Unlike filling an
    ``open_memmap``, written pages never stay mapped into the process, so its RSS does not grow with the
    store (a memmap-filled 4 GB store at 1M docs x 16 x 128 showed as 4.6 GB peak RSS)."""

    def __init__(self, path: Path, dtype: str, shape: tuple[int, ...]):
        self.dtype, self.shape, self.rows = np.dtype(dtype), shape, 0
        self.f = open(path, "wb")
        np.lib.format.write_array_header_1_0(self.f, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": shape})

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:]:
            raise ValueError(f"block of shape {block.shape} does not fit rows of shape {self.shape[1:]}")
        self.f.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        self.f.close()


def write_multi_store(path: str | os.PathLike, ids: Sequence[str], parts: Iterable[np.ndarray],
                      counts: np.ndarray, dim: int, dtype: str = "float16") -> None:
    """Write a store from vector blocks ``parts`` (concatenated in order) and per-id ``counts``, without
    holding all vectors in memory. ``dtype`` 'int8' quantises float blocks per vector (codes + scales.npy).
    ``meta.json`` is written last: a store without it is unfinished."""
    dtype = str(np.dtype(dtype))
    if dtype not in STORE_DTYPES:
        raise InputError(f"multi-vector store dtype {dtype!r}: must be one of {', '.join(STORE_DTYPES)}")
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (d / "meta.json").unlink()
    counts = np.asarray(counts, dtype=np.int64)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    quantize = dtype == "int8"
    with contextlib.ExitStack() as stack:
        out = _NpyWriter(stack.enter_context(atomic_path(d / "vectors.npy")), dtype, (total, dim))
        stack.callback(out.close)  # runs before atomic_path's fsync + rename (LIFO)
        if quantize:
            scales = _NpyWriter(stack.enter_context(atomic_path(d / "scales.npy")), "float32", (total,))
            stack.callback(scales.close)
        for block in parts:
            if out.rows + len(block) > total:
                raise ValueError(f"{d}: got more than the {total} vectors counts say")
            if quantize:
                if np.asarray(block[:0]).dtype == np.int8:
                    raise ValueError(f"{d}: int8 blocks come without their scales; pass float blocks to quantise")
                codes, block_scales = quantize_int8(block)
                out.write(codes)
                scales.write(block_scales)
            else:
                out.write(block)
        if out.rows != total:
            raise ValueError(f"{d}: got {out.rows} vectors, counts say {total}")
    if not quantize:
        with contextlib.suppress(FileNotFoundError):
            (d / "scales.npy").unlink()  # left by an earlier int8 store in this folder
    with atomic_path(d / "offsets.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, offsets)
    atomic_write_text(d / "docid", "".join(f"{i}\n" for i in ids))
    atomic_write_json(d / "meta.json", {"dim": dim, "dtype": dtype, "n_docs": len(ids), "n_vectors": total})


def convert_store(src: str | os.PathLike, dst: str | os.PathLike, dtype: str) -> MultiVectorStore:
    """Copy a store into another dtype (e.g. float16 -> int8), streaming block by block; returns the new store."""
    if Path(src).resolve() == Path(dst).resolve():
        raise InputError(f"{dst}: the converted store must go to another folder than {src}")
    store = MultiVectorStore.load(src)
    write_multi_store(dst, store.docids, store.float_blocks(), np.diff(store.offsets), int(store.meta["dim"]),
                      dtype)
    return MultiVectorStore.load(dst)


def auto_index_spec(n_vectors: int, dim: int | None = None) -> str:
    """FAISS factory string used by ``index='auto'``: exhaustive 'SQfp16' up to EXHAUSTIVE_MAX_VECTORS, else
    'IVF{nlist},SQfp16' with nlist ~ 4 * sqrt(n) rounded to a power of two (1.6M vectors -> IVF4096,SQfp16),
    and, once the float16 codes would pass COMPRESSED_MIN_CODE_BYTES (given ``dim``), IVF-PQ
    ('IVF{nlist},PQ{m}x8', see index.faiss_dirs.default_pq_m). IVF candidates are approximate: fine on clustered
    (real) embeddings, poor on near-uniform random vectors; raise ``nprobe`` or ``candidates_per_vector``, or
    pass index='SQfp16', when exactness matters more than latency.
    """
    nlist = min(max(2 ** int(round(math.log2(4 * math.sqrt(max(n_vectors, 1))))), 256), 65536)
    if dim is not None and n_vectors * dim * 2 > COMPRESSED_MIN_CODE_BYTES:
        return factory_string(IndexSettings(type="ivfpq", nlist=nlist), dim, n_vectors)
    if n_vectors <= EXHAUSTIVE_MAX_VECTORS:
        return "SQfp16"
    return f"IVF{nlist},SQfp16"


def candidate_index_spec(store: MultiVectorStore, index: str, settings: IndexSettings) -> str:
    """The FAISS factory string of a store's candidate index: 'auto' (``auto_index_spec``), one of the named
    types of ``INDEX_TYPES`` shaped by `settings` (whose type it sets), or a factory string as given."""
    n, dim = int(store.vectors.shape[0]), int(store.vectors.shape[1])
    if index == "auto":
        return auto_index_spec(n, dim)
    if index.lower() in INDEX_TYPES:
        settings.type = index.lower()
        return factory_string(settings, dim, n)
    return index


def build_candidate_index(store: MultiVectorStore, spec: str, settings: IndexSettings) -> Any:
    """The candidate index over every vector of `store` (trained on a fixed-seed sample read in order)."""
    return build_index(spec, int(store.vectors.shape[1]), int(store.vectors.shape[0]), store.rows, settings)
