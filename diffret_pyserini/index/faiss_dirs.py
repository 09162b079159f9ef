"""FAISS index types beyond flat, for our dense FAISS dir and for the multi-vector candidate index.

One vocabulary for both (inner-product metric throughout, as our vectors are L2-normalised):

    flat     IndexFlatIP                 exact; 4 x H bytes per vector (what the encoder writes)
    sqfp16   SQfp16                      exhaustive over float16 codes; 2 x H bytes
    sq8      SQ8                         exhaustive over 8-bit codes (per-dimension range); 1 x H bytes
    hnsw     HNSW{M},Flat                graph; 4 x H + ~8 x M bytes; efSearch saved in the file
    ivfpq    IVF{nlist},PQ{m}x{nbits}    inverted lists of PQ codes; m x nbits / 8 + 8 bytes (the id);
                                         nprobe saved in the file
    ivfsq8   IVF{nlist},SQ8              inverted lists of SQ8 codes; H + 8 bytes

FaissSearcher (Pyserini) calls only ``faiss.read_index`` and ``index.search``, so the search-time knobs
(nprobe, efSearch) are written into the index file, where FAISS keeps them.
"""
from __future__ import annotations

import logging
import math
import os
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from diffret_pyserini.atomic import atomic_dir, atomic_path, atomic_write_text
from diffret_pyserini.cli import InputError

__all__ = ["INDEX_TYPES", "IndexSettings", "factory_string", "build_index", "set_search_params",
           "ivf_nlist", "index_code_bytes", "flat_vectors", "build_dense_dir", "default_nlist", "default_pq_m",
           "write_query_embeddings_pkl", "write_faiss_dir", "read_faiss_dir"]

LOG = logging.getLogger(__name__)
INDEX_TYPES = ("flat", "sqfp16", "sq8", "hnsw", "ivfpq", "ivfsq8")
TRAIN_PER_CENTROID = 40   # FAISS's k-means asks for >= 39 training points per centroid
ADD_CHUNK = 1 << 16       # rows converted to float32 and added at a time (bounded temporary memory)


@dataclass
class IndexSettings:
    """Build and search settings of one index type; None picks a default from the corpus shape."""

    type: str = "flat"
    nlist: int | None = None      # IVF lists (default ~4 sqrt(n), a power of two)
    nprobe: int = 32              # IVF lists visited per query (stored in the index)
    pq_m: int | None = None       # PQ sub-quantisers (default: largest divisor of H <= min(64, H/4))
    pq_nbits: int | None = None   # bits per PQ code (default 8, fewer when there is too little to train on)
    hnsw_m: int = 32              # HNSW neighbours per node
    ef_construction: int = 200
    ef_search: int = 128          # stored in the index
    train_size: int | None = None  # training vectors (default 40 per centroid, at least 256 per PQ code)
    factory: str | None = None    # any FAISS index_factory string instead of `type`


def default_nlist(n: int) -> int:
    """~4 sqrt(n) rounded to a power of two, within [16, 65536], and never more lists than n / 40."""
    nlist = 2 ** int(round(math.log2(max(4 * math.sqrt(max(n, 1)), 1))))
    nlist = min(max(nlist, 16), 65536)
    while nlist > 1 and nlist * TRAIN_PER_CENTROID > n:
        nlist //= 2
    return max(nlist, 1)


def default_pq_m(dim: int) -> int:
    """Largest divisor of ``dim`` that is at most min(64, dim / 4): 128 -> 32, 576 -> 64, 3584 -> 64."""
    cap = max(1, min(64, dim // 4))
    return next(m for m in range(cap, 0, -1) if dim % m == 0)


def _pq_nbits(n: int, wanted: int | None) -> int:
    """8 bits need 256 centroids per sub-quantiser trained on >= 39 x 256 points; tiny inputs get fewer."""
    if wanted is not None:
        return int(wanted)
    return int(min(8, max(1, math.floor(math.log2(max(n, 2) / TRAIN_PER_CENTROID)))))


def factory_string(settings: IndexSettings, dim: int, n: int) -> str:
    """The FAISS ``index_factory`` string for ``settings`` over ``n`` vectors of dimension ``dim``."""
    if settings.factory:
        return settings.factory
    kind = settings.type.lower()
    nlist = settings.nlist or default_nlist(n)
    if kind == "flat":
        return "Flat"
    if kind == "sqfp16":
        return "SQfp16"
    if kind == "sq8":
        return "SQ8"
    if kind == "hnsw":
        return f"HNSW{settings.hnsw_m},Flat"
    if kind == "ivfsq8":
        return f"IVF{nlist},SQ8"
    if kind == "ivfpq":
        m = settings.pq_m or default_pq_m(dim)
        if dim % m:
            raise InputError(f"--pq-m {m}: must divide the vector dimension {dim}")
        return f"IVF{nlist},PQ{m}x{_pq_nbits(n, settings.pq_nbits)}"
    raise InputError(f"--type {settings.type!r}: must be one of {', '.join(INDEX_TYPES)}")


def ivf_nlist(index: Any) -> int:
    """Number of inverted lists of an IVF index, 0 for any other index."""
    import faiss

    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except Exception:  # faiss raises RuntimeError (or TypeError on some builds) for non-IVF indexes
        return 0


def set_search_params(index: Any, nprobe: int | None = None, ef_search: int | None = None) -> Any:
    """Set nprobe (IVF) / efSearch (HNSW) on the index object, so that they are saved with it."""
    import faiss

    if nprobe is not None and ivf_nlist(index):
        faiss.extract_index_ivf(index).nprobe = int(nprobe)
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if ef_search is not None and hnsw is not None:
        hnsw.efSearch = int(ef_search)
    return index


def index_code_bytes(index: Any) -> int:
    """Bytes the index holds in memory for its vectors: codes (+ ids and coarse centroids for IVF, + graph
    links for HNSW), the figure that decides whether an index fits."""
    import faiss

    if index is None:
        return 0
    if ivf_nlist(index):
        ivf = faiss.extract_index_ivf(index)
        return int(ivf.ntotal) * (int(ivf.code_size) + 8) + int(ivf.nlist) * int(ivf.d) * 4
    down = faiss.downcast_index(index)
    hnsw = getattr(down, "hnsw", None)
    if hnsw is not None:
        storage = faiss.downcast_index(down.storage)
        links = int(hnsw.neighbors.size()) * 4 + int(hnsw.offsets.size()) * 8 + int(hnsw.levels.size()) * 4
        return int(storage.ntotal) * int(storage.sa_code_size()) + links
    return int(index.ntotal) * int(index.sa_code_size())


def build_index(spec: str, dim: int, n: int, rows: Callable[[Any], np.ndarray], settings: IndexSettings,
                seed: int = 0) -> Any:
    """Build ``spec`` (inner product) over ``n`` vectors read with ``rows(slice | sorted index array)`` ->
    float32 [r, dim]. Training uses a fixed-seed sorted sample (read in order from a memmap); vectors are
    added in chunks, so memory is the index plus one chunk."""
    import faiss

    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    down = faiss.downcast_index(index)
    if getattr(down, "do_polysemous_training", False):
        # The factory turns on polysemous training for IVF-PQ (code reordering for Hamming filtering, which
        # we never use): measured 10x the whole PQ training time (187 s vs 15-19 s for PQ32x7 on 10k x 128).
        down.do_polysemous_training = False
    hnsw = getattr(down, "hnsw", None)
    if hnsw is not None:
        hnsw.efConstruction = int(settings.ef_construction)
    if not index.is_trained and n:
        want = settings.train_size or max(TRAIN_PER_CENTROID * max(ivf_nlist(index), 1), 256 * TRAIN_PER_CENTROID)
        n_train = min(n, int(want))
        sample = np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False))
        index.train(np.ascontiguousarray(rows(sample), dtype=np.float32))
    for lo in range(0, n, ADD_CHUNK):
        index.add(np.ascontiguousarray(rows(slice(lo, min(lo + ADD_CHUNK, n))), dtype=np.float32))
    return set_search_params(index, settings.nprobe, settings.ef_search)


# faiss.write_index's bytes for an IndexFlatIP: fourcc, d, ntotal, two unused fields (1 << 20), is_trained, the
# metric (0 = inner product), then the codes as a length-prefixed float vector. Stable since faiss 1.5; a test
# checks it byte for byte against faiss.write_index.
_FLAT_IP_HEADER = struct.Struct("<4siqqq?iQ")


def write_flat_ip_index(path: str | os.PathLike, parts: Iterable[np.ndarray], dim: int,
                        expected: int | None = None) -> int:
    """Write a ``faiss.IndexFlatIP`` file from vector blocks, front to back; returns the number of vectors.

    The file is what ``faiss.write_index`` writes, but no index is built in memory: at MS MARCO x Dream
    (8.8M x 3,584 float32) one would be 126 GB of RAM, here only a block is. With ``expected``, another count
    raises before the file replaces anything.
    """
    def header(n: int) -> bytes:
        return _FLAT_IP_HEADER.pack(b"IxFI", dim, n, 1 << 20, 1 << 20, True, 0, n * dim)

    n = 0
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        f.write(header(0))
        for block in parts:
            block = np.ascontiguousarray(block, dtype="<f4")
            if block.ndim != 2 or block.shape[1] != dim:
                raise ValueError(f"{path}: a block of shape {block.shape} in a {dim}-dimensional index")
            f.write(block.tobytes())
            n += len(block)
        if expected is not None and n != expected:
            raise ValueError(f"{path}: {n} vectors for {expected} docids")
        f.seek(0)
        f.write(header(n))
    return n


def flat_vectors(index_path: str | os.PathLike) -> np.ndarray:
    """The vectors of a flat FAISS index file, memory-mapped [ntotal, d] float32 (not read into memory).

    An IndexFlatIP/L2 file is a fixed header (fourcc 'IxFI'/'IxF2', d, ntotal, ...) followed by the float32
    codes as its last ntotal x d x 4 bytes; any other index is read by FAISS and reconstructed instead.
    """
    path = Path(index_path)
    with open(path, "rb") as f:
        head = f.read(_FLAT_IP_HEADER.size)
    if len(head) == _FLAT_IP_HEADER.size and head[:4] in (b"IxFI", b"IxF2"):
        _, d, ntotal, *_ = _FLAT_IP_HEADER.unpack(head)
        size = path.stat().st_size
        if ntotal == 0:
            return np.zeros((0, d), dtype=np.float32)
        if d > 0 and size >= 16 + ntotal * d * 4:
            return np.memmap(path, dtype=np.float32, mode="r", offset=size - ntotal * d * 4, shape=(ntotal, d))
    import faiss

    index = faiss.read_index(str(path))
    return index.reconstruct_n(0, index.ntotal)


def write_faiss_dir(path: str | os.PathLike, docids: Sequence[str], parts: Iterable[np.ndarray], dim: int) -> Path:
    """A FAISS dir as Pyserini's FaissRepresentationWriter leaves it, `index` (IndexFlatIP) + `docid` (one per
    line), written from vector blocks and swapped in whole: `path` is never a half-written folder."""
    with atomic_dir(path) as tmp:
        write_flat_ip_index(tmp / "index", parts, dim, expected=len(docids))
        atomic_write_text(tmp / "docid", "".join(f"{d}\n" for d in docids))
    return Path(path)


def read_faiss_dir(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(docids, vectors [N, H]) of a FAISS dir; a flat index is memory-mapped, not read into memory."""
    d = Path(path)
    for name in ("index", "docid"):
        if not (d / name).is_file():
            raise InputError(f"{d / name}: missing (not a FAISS dir: index + docid)")
    docids = (d / "docid").read_text(encoding="utf-8").split()
    vectors = flat_vectors(d / "index")
    if len(vectors) != len(docids):
        raise InputError(f"{d}: {len(vectors)} vectors but {len(docids)} docids")
    return docids, vectors


def build_dense_dir(input_dir: str | os.PathLike, output_dir: str | os.PathLike, settings: IndexSettings,
                    threads: int | None = None) -> dict:
    """Read a FAISS dir (``index`` + ``docid``), write ``output_dir/{index,docid,index.json}`` with the index type
    of ``settings``; returns the build record (also in index.json). FaissSearcher reads the result as is."""
    import faiss

    from diffret_pyserini.atomic import atomic_path, atomic_write_json, atomic_write_text

    src, dst = Path(input_dir), Path(output_dir)
    for name in ("index", "docid"):
        if not (src / name).is_file():
            raise InputError(f"{src / name}: missing (--input must be a FAISS dir: index + docid)")
    if src.resolve() == dst.resolve():
        raise InputError(f"--output {dst}: must differ from --input (the flat index is the source)")
    if threads:
        faiss.omp_set_num_threads(int(threads))
    vectors = flat_vectors(src / "index")
    n, dim = vectors.shape
    docids = (src / "docid").read_text(encoding="utf-8").splitlines()
    if len(docids) != n:
        raise InputError(f"{src}/docid: {len(docids)} ids for {n} vectors in {src}/index")
    spec = factory_string(settings, dim, n)
    LOG.info("building %s over %d x %d vectors from %s", spec, n, dim, src)
    start = time.perf_counter()
    index = build_index(spec, dim, n, lambda rows: vectors[rows], settings)
    seconds = time.perf_counter() - start
    dst.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst / "index") as tmp:
        faiss.write_index(index, str(tmp))
    atomic_write_text(dst / "docid", "".join(f"{d}\n" for d in docids))
    record = {"factory": spec, "settings": asdict(settings), "ntotal": int(index.ntotal), "dim": int(dim),
              "build_seconds": seconds, "code_bytes": index_code_bytes(index),
              "file_bytes": (dst / "index").stat().st_size, "source": str(src)}
    atomic_write_json(dst / "index.json", record)
    return record


def write_query_embeddings_pkl(path: str | os.PathLike, texts: Sequence[str], vectors: Any) -> Path:
    """``<dir>/embedding.pkl``: a pandas DataFrame with columns ``text`` and ``embedding`` (one float32 1-D
    np.ndarray per row), read by ``pyserini.search.faiss --encoded-queries DIR``. Pyserini keys queries by
    their text, and FaissSearcher calls ``.reshape`` on the vector, so it must be an array, not a list. A dir
    path containing "bpr" would make Pyserini use its BPR encoder instead: refused."""
    import pandas as pd

    if "bpr" in str(path):
        raise InputError(f"{path}: Pyserini treats an --encoded-queries path containing 'bpr' as BPR; rename it")
    vecs = np.ascontiguousarray(np.asarray(vectors), dtype=np.float32)
    if vecs.ndim != 2 or len(vecs) != len(texts):
        raise ValueError(f"expected vectors [{len(texts)}, H], got {vecs.shape}")
    df = pd.DataFrame({"text": list(texts), "embedding": list(vecs)})
    target = Path(path) / "embedding.pkl"
    with atomic_path(target) as tmp:
        df.to_pickle(tmp)
    return target
