"""Atomic, resumable writers for the three document representations, in Pyserini's own formats.

Outputs under ``out_dir`` (shard suffix ``-shard{NNN}`` only when ``shard_num > 1``):

- ``sparse/embeddings.jsonl``: JsonVectorCollection lines ``{"id", "contents", "vector": {term: int}}`` for
  ``python -m pyserini.index.lucene --collection JsonVectorCollection --input OUT/sparse --impact --pretokenized``
  (shards write ``sparse/embeddings-shard000.jsonl`` etc. into the same folder; Lucene indexes them all).
- ``dense/``: ``index`` (faiss.IndexFlatIP) + ``docid`` (one per line), as pyserini's FaissRepresentationWriter
  writes and FaissSearcher reads. Shards write ``dense-shard000/``...; merge them with
  ``python -m pyserini.encode.merge_faiss_index --dimension H --input 'OUT/dense-shard*' --output OUT/dense``
  (its --dimension defaults to 768: pass yours) or :func:`merge_shards`.
- ``multi/``: a multi-vector store (see index/multivector.py: ``vectors.npy``, ``offsets.npy``, ``docid``, ``meta.json``).

Work in progress lives in ``out_dir/work/shard-NNN/``: ``part-000000.{jsonl,npz}`` chunks plus
``manifest.json``. A chunk counts only once the manifest (written atomically, last) lists it, so a killed run
never leaves a half chunk that looks complete; anything unlisted is deleted on restart.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from diffret_pyserini.atomic import TMP_MARK, atomic_path, atomic_write, atomic_write_json, atomic_write_text
from diffret_pyserini.cli import InputError, UserError
from diffret_pyserini.index.faiss_dirs import flat_vectors, write_faiss_dir
from diffret_pyserini.index.multivector import MultiVectorStore, write_multi_store
from diffret_pyserini.model.representations import REPRESENTATIONS

__all__ = [
    "ResumeError", "RepresentationShardWriter", "merge_shards",
    "write_query_sparse_jsonl", "write_query_multi",
]

_HAS_WS = re.compile(r"\s")
MERGE_BLOCK = 65536  # vectors copied at a time when merging shards


class ResumeError(UserError, RuntimeError):
    """Existing work in the output folder was made with other inputs/settings."""


def _array(x: Any, dtype: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (possibly bf16/cuda): numpy cannot read those directly
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


def _check_id(docid: Any) -> str:
    if not isinstance(docid, str) or not docid or _HAS_WS.search(docid):
        raise InputError(f"document id {docid!r} must be a non-empty string without whitespace")
    return docid


GOOD_TERMS_LIMIT = 2_000_000  # checked terms a writer remembers (a vocabulary is ~30-250k; bounds the memory)


def _int_vector(vec: Mapping[str, Any], what: str, good_terms: set[str] | None = None) -> dict[str, int]:
    """Impact weights must be non-negative ints: Anserini reads them as term frequencies, and Pyserini passes
    query weights through JInt (1.7 would silently become 1).

    `good_terms` remembers the terms already checked (a writer's terms come from one vocabulary, so each is
    checked once, not once per document: the per-term regex was most of `write_batch`'s time)."""
    out = {}
    for term, w in vec.items():
        if good_terms is None or term not in good_terms:
            if not isinstance(term, str) or not term or _HAS_WS.search(term):
                raise ValueError(f"{what}: term {term!r} is empty or contains whitespace (the indexer would split "
                                 "it)")
            if good_terms is not None and len(good_terms) < GOOD_TERMS_LIMIT:
                good_terms.add(term)
        plain = type(w) is int  # the common case, checked first; bool is not int here, nor is np.bool_
        if (not plain and (isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, np.integer)))) or w < 0:
            raise ValueError(f"{what}: weight {w!r} of term {term!r} must be a non-negative int (quantise first)")
        if w:
            out[term] = int(w)
    return out


def _compact_multi(multi: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """[B, K, H] + bool [B, K] -> valid vectors [sum, H] in doc order, and per-doc counts [B]."""
    if mask is None:
        mask = np.ones(multi.shape[:2], dtype=bool)
    mask = _array(mask, bool)
    if mask.shape != multi.shape[:2]:
        raise ValueError(f"multi_mask shape {mask.shape} does not match multi {multi.shape[:2]}")
    return multi[mask], mask.sum(axis=1).astype(np.int64)


class RepresentationShardWriter:
    """Resumable writer: buffer batches, commit fixed-size chunks, assemble the outputs in :meth:`finalize`.

    ``fingerprint`` (a hash of inputs/model/settings, chosen by the caller) is stored in the manifest; reopening
    work made with another fingerprint or other representations raises :class:`ResumeError` unless ``overwrite=True``,
    which clears this shard's work and outputs. Usage::

        w = RepresentationShardWriter(out, representations={"dense", "sparse"}, fingerprint=fp)
        for batch in batches(iter_corpus(corpus, start=w.completed_docs())): w.write_batch(...)
        w.finalize()
    """

    def __init__(self, out_dir: str | os.PathLike, representations: Iterable[str] = REPRESENTATIONS, *, chunk_size: int = 4096,
                 fingerprint: str = "", overwrite: bool = False, shard_id: int = 0, shard_num: int = 1,
                 multi_dtype: str = "float16"):
        self.representations = frozenset(representations)
        if not self.representations or not self.representations <= set(REPRESENTATIONS):
            raise ValueError(f"representations must be a non-empty subset of {REPRESENTATIONS}, "
                             f"got {sorted(self.representations)}")
        if chunk_size < 1 or not 0 <= shard_id < shard_num:
            raise ValueError(f"bad chunk_size={chunk_size} / shard_id={shard_id} / shard_num={shard_num}")
        self.out_dir, self.chunk_size = Path(out_dir), chunk_size
        self.multi_dtype = str(np.dtype(multi_dtype))
        suffix = f"-shard{shard_id:03d}" if shard_num > 1 else ""
        self.sparse_path = self.out_dir / "sparse" / f"embeddings{suffix}.jsonl"
        self.dense_dir = self.out_dir / f"dense{suffix}"
        self.multi_dir = self.out_dir / f"multi{suffix}"
        self.work_dir = self.out_dir / "work" / f"shard-{shard_id:03d}"
        self._manifest_path = self.work_dir / "manifest.json"
        settings = {"fingerprint": fingerprint, "representations": sorted(self.representations), "multi_dtype": self.multi_dtype,
                    "shard_id": shard_id, "shard_num": shard_num}
        self._buffer: list[dict[str, Any]] = []  # one entry per write_batch call, trimmed as chunks commit
        self._good_terms: set[str] = set()  # sparse terms already checked (_int_vector)
        self._buffered = 0
        if overwrite:
            self._clear()
        if self._manifest_path.is_file():
            self.manifest = json.loads(self._manifest_path.read_text(encoding="utf-8"))
            differs = [k for k, v in settings.items() if self.manifest.get(k) != v]
            if differs:
                got = ", ".join(f"{k}={self.manifest.get(k)!r} (now {settings[k]!r})" for k in differs)
                raise ResumeError(f"{self.work_dir}: existing work was made with {got}; "
                                  "pass overwrite=True (--overwrite) to discard it")
        else:
            self.manifest = {**settings, "version": 1, "dims": {}, "chunks": [], "finalized": False}
        self._remove_strays()

    # -- bookkeeping -------------------------------------------------------------------------------------
    def _clear(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)
        shutil.rmtree(self.dense_dir, ignore_errors=True)
        shutil.rmtree(self.multi_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.sparse_path.unlink()

    def _remove_strays(self) -> None:
        """Delete temp files and chunk files the manifest does not list (left by a killed run)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        listed = {c["name"] for c in self.manifest["chunks"]}
        for f in self.work_dir.iterdir():
            if TMP_MARK in f.name or (f.name.startswith("part-") and f.name.split(".")[0] not in listed):
                f.unlink()
        # Older or foreign temp files in sparse/ would be indexed by Anserini; only this shard's own names are
        # removed, as other shards may be finalizing right now.
        for d, pattern in ((self.sparse_path.parent, f"{self.sparse_path.name}{TMP_MARK}*"),
                           (self.dense_dir, f"*{TMP_MARK}*"), (self.multi_dir, f"*{TMP_MARK}*")):
            if d.is_dir():
                for f in d.glob(pattern):
                    f.unlink()

    def completed_docs(self) -> int:
        """How many documents (a prefix of the stream) are safely committed; skip these on restart."""
        return sum(c["n_docs"] for c in self.manifest["chunks"])

    @staticmethod
    def committed_manifest(out_dir: str | os.PathLike, shard_id: int = 0) -> dict | None:
        """The committed work manifest of a writer on `out_dir` (None when there is none yet), read without
        opening a writer (opening one removes uncommitted files, which another process may be writing)."""
        path = Path(out_dir) / "work" / f"shard-{shard_id:03d}" / "manifest.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def adopt(self, others: Iterable[RepresentationShardWriter]) -> None:
        """Append the committed chunks of `others` (writers of the same representations, e.g. blocks encoded
        elsewhere), in order, after this writer's own: their files are hard-linked (copied across file systems)
        under this writer's chunk names, then one manifest lists them all (the commit point; a kill before it
        leaves unlisted files that the next open removes)."""
        if self._buffered:
            raise RuntimeError(f"{self.work_dir}: adopt with {self._buffered} documents not yet committed")
        chunks, dims = list(self.manifest["chunks"]), dict(self.manifest["dims"])
        for other in others:
            if other.representations != self.representations:
                raise ValueError(f"{other.work_dir}: representations {sorted(other.representations)}, "
                                 f"expected {sorted(self.representations)}")
            for kind, dim in other.manifest["dims"].items():
                if dims.setdefault(kind, dim) != dim:
                    raise ValueError(f"{other.work_dir}: {kind} dimension {dim}, expected {dims[kind]}")
            for chunk in other.manifest["chunks"]:
                name = f"part-{len(chunks):06d}"
                for suffix in (".jsonl", ".npz"):
                    src, dst = other.work_dir / f"{chunk['name']}{suffix}", self.work_dir / f"{name}{suffix}"
                    if src.is_file():
                        dst.unlink(missing_ok=True)
                        try:
                            os.link(src, dst)
                        except OSError:  # another file system
                            shutil.copyfile(src, dst)
                chunks.append({**chunk, "name": name})
        self.manifest["chunks"], self.manifest["dims"] = chunks, dims
        atomic_write_json(self._manifest_path, self.manifest)

    # -- writing -----------------------------------------------------------------------------------------
    def write_batch(self, docids: Sequence[str], contents: Sequence[str], dense: Any = None, multi: Any = None,
                    multi_mask: Any = None, sparse: Sequence[Mapping[str, int]] | None = None) -> None:
        """Add one batch: dense [B, H], multi [B, K, H] (+ bool mask [B, K] of valid vectors), sparse dicts.
        Exactly the representations named in ``representations`` must be given."""
        if self.manifest["finalized"]:
            raise RuntimeError(f"{self.work_dir}: already finalized")
        given = {k for k, v in (("dense", dense), ("multi", multi), ("sparse", sparse)) if v is not None}
        if given != self.representations:
            raise ValueError(f"write_batch got {sorted(given)}, writer expects {sorted(self.representations)}")
        n = len(docids)
        if len(contents) != n:
            raise ValueError(f"{n} docids but {len(contents)} contents")
        batch: dict[str, Any] = {"ids": [_check_id(d) for d in docids], "contents": list(contents)}
        if dense is not None:
            batch["dense"] = self._shaped(_array(dense, np.float32), 2, "dense", n)
        if multi is not None:
            multi = self._shaped(_array(multi, np.float32), 3, "multi", n)
            batch["multi"], batch["counts"] = _compact_multi(multi, multi_mask)
        if sparse is not None:
            if len(sparse) != n:
                raise ValueError(f"{n} docids but {len(sparse)} sparse vectors")
            batch["sparse"] = [_int_vector(v, f"doc {i}", self._good_terms) for i, v in zip(docids, sparse)]
        self._buffer.append(batch)
        self._buffered += n
        while self._buffered >= self.chunk_size:
            self._commit(self.chunk_size)

    def _shaped(self, a: np.ndarray, ndim: int, kind: str, n: int) -> np.ndarray:
        if a.ndim != ndim or a.shape[0] != n:
            raise ValueError(f"{kind} must have {ndim} dims with {n} rows, got shape {a.shape}")
        dim = self.manifest["dims"].setdefault(kind, int(a.shape[-1]))
        if a.shape[-1] != dim:
            raise ValueError(f"{kind} dimension {a.shape[-1]} differs from earlier batches ({dim})")
        return a

    def _take(self, n: int) -> dict[str, Any]:
        """Pop the first n buffered docs as one merged batch."""
        parts, left = [], n
        while left:
            b = self._buffer[0]
            m = len(b["ids"])
            if m <= left:
                parts.append(self._buffer.pop(0))
                left -= m
                continue
            nv = int(b["counts"][:left].sum()) if "counts" in b else 0
            head, tail = {}, {}
            for k, v in b.items():
                cut = nv if k == "multi" else left
                head[k], tail[k] = v[:cut], v[cut:]
            parts.append(head)
            self._buffer[0] = tail
            left = 0
        self._buffered -= n
        merged: dict[str, Any] = {}
        for k in parts[0]:
            vals = [p[k] for p in parts]
            merged[k] = np.concatenate(vals) if isinstance(vals[0], np.ndarray) else list(chain(*vals))
        return merged

    def _commit(self, n: int) -> None:
        b = self._take(n)
        name = f"part-{len(self.manifest['chunks']):06d}"
        with atomic_write(self.work_dir / f"{name}.jsonl") as f:
            for i, docid in enumerate(b["ids"]):
                rec = {"id": docid, "contents": b["contents"][i]}
                if "sparse" in b:
                    rec["vector"] = b["sparse"][i]
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        arrays = {k: b[k] for k in ("dense", "counts") if k in b}
        if "multi" in b:
            # int8 stores are quantised once, at the final write (per-vector scales); chunks keep float16
            arrays["multi"] = b["multi"].astype("float16" if self.multi_dtype == "int8" else self.multi_dtype)
        if arrays:
            with atomic_path(self.work_dir / f"{name}.npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
        n_vectors = int(b["counts"].sum()) if "counts" in b else 0
        self.manifest["chunks"].append({"name": name, "n_docs": len(b["ids"]), "n_vectors": n_vectors})
        atomic_write_json(self._manifest_path, self.manifest)  # the commit point

    # -- assembling --------------------------------------------------------------------------------------
    def _chunk_arrays(self, key: str) -> Iterator[np.ndarray]:
        for c in self.manifest["chunks"]:
            with np.load(self.work_dir / f"{c['name']}.npz") as z:
                yield z[key]

    def finalize(self, keep_chunks: bool = False) -> dict[str, Path]:
        """Commit the last partial chunk and write the outputs; returns ``{kind: path}``. Idempotent: a
        finalized work dir keeps only its manifest, and calling again just returns the paths."""
        paths = {k: p for k, p in (("sparse", self.sparse_path), ("dense", self.dense_dir),
                                   ("multi", self.multi_dir)) if k in self.representations}
        if self.manifest["finalized"]:
            return paths
        if self._buffered:
            self._commit(self._buffered)
        ids: list[str] = []
        seen: set[str] = set()
        with contextlib.ExitStack() as stack:
            # The sparse jsonl is streamed chunk by chunk; the id list doubles as a duplicate check.
            sparse = (stack.enter_context(atomic_write(self.sparse_path, tmp_dir=self.work_dir))
                      if "sparse" in self.representations else None)
            for c in self.manifest["chunks"]:
                with open(self.work_dir / f"{c['name']}.jsonl", encoding="utf-8") as f:
                    for line in f:
                        docid = json.loads(line)["id"]
                        if docid in seen:
                            raise InputError(f"{self.work_dir}/{c['name']}.jsonl: duplicate docid {docid!r} "
                                             "(the caller re-sent documents that were already committed)")
                        seen.add(docid)
                        ids.append(docid)
                        if sparse is not None:
                            sparse.write(line)
        if "dense" in self.representations:
            write_faiss_dir(self.dense_dir, ids, self._chunk_arrays("dense"), self.manifest["dims"].get("dense", 0))
        if "multi" in self.representations:
            counts = np.concatenate(list(self._chunk_arrays("counts"))) if ids else np.zeros(0, np.int64)
            write_multi_store(self.multi_dir, ids, self._chunk_arrays("multi"), counts,
                              self.manifest["dims"].get("multi", 0), self.multi_dtype)
        self.manifest["finalized"] = True
        self.manifest["n_docs"] = len(ids)
        atomic_write_json(self._manifest_path, self.manifest)
        if not keep_chunks:  # outputs hold everything now; chunks would double the disk use
            for c in self.manifest["chunks"]:
                for ext in (".jsonl", ".npz"):
                    with contextlib.suppress(FileNotFoundError):
                        (self.work_dir / f"{c['name']}{ext}").unlink()
        return paths


def merge_shards(out_dir: str | os.PathLike, shard_num: int) -> dict[str, Path]:
    """Merge finalized ``dense-shardNNN``/``multi-shardNNN`` folders into ``dense``/``multi`` (in shard order,
    like pyserini.encode.merge_faiss_index). Sparse shards need no merge: index the ``sparse`` folder."""
    out, merged = Path(out_dir), {}
    dense = [out / f"dense-shard{i:03d}" for i in range(shard_num)]
    if all(d.is_dir() for d in dense):
        ids = [line for d in dense for line in (d / "docid").read_text(encoding="utf-8").splitlines()]
        shards = [flat_vectors(d / "index") for d in dense]  # memory-mapped: copied block by block
        blocks = (v[lo:lo + MERGE_BLOCK] for v in shards for lo in range(0, len(v), MERGE_BLOCK))
        write_faiss_dir(out / "dense", ids, blocks, shards[0].shape[1])
        merged["dense"] = out / "dense"
    multi = [out / f"multi-shard{i:03d}" for i in range(shard_num)]
    if all((d / "meta.json").is_file() for d in multi):
        stores = [MultiVectorStore.load(d) for d in multi]
        write_multi_store(out / "multi", [i for s in stores for i in s.docids], (s.vectors for s in stores),
                          np.concatenate([np.diff(s.offsets) for s in stores]), stores[0].meta["dim"],
                          stores[0].meta["dtype"])
        merged["multi"] = out / "multi"
    return merged


# -- query outputs -------------------------------------------------------------------------------------------
def write_query_sparse_jsonl(path: str | os.PathLike, qids: Sequence[str], texts: Sequence[str],
                             vectors: Sequence[Mapping[str, int]]) -> Path:
    """``{"id", "contents", "vector": {term: int}}`` lines for ``pyserini.search.lucene --impact --encoder
    FILE``. Pyserini's CachedDataQueryEncoder keys on ``contents.strip()`` (the query text), not the id, so the
    texts must equal the topic texts exactly, and two queries with one text must have one vector."""
    if not len(qids) == len(texts) == len(vectors):
        raise ValueError(f"{len(qids)} qids, {len(texts)} texts, {len(vectors)} vectors")
    by_text: dict[str, dict[str, int]] = {}
    lines = []
    for qid, text, vec in zip(qids, texts, vectors):
        vec = _int_vector(vec, f"query {qid}")
        if by_text.setdefault(text.strip(), vec) != vec:
            raise ValueError(f"query {qid}: text {text!r} already has another vector; Pyserini keys on text")
        lines.append(json.dumps({"id": qid, "contents": text, "vector": vec}, ensure_ascii=False) + "\n")
    atomic_write_text(path, "".join(lines))
    return Path(path)


def write_query_multi(path: str | os.PathLike, qids: Sequence[str], vectors: Any, mask: Any = None,
                      dtype: str = "float32") -> Path:
    """Query multi-vectors [Q, K, H] (+ bool mask [Q, K]) as a :class:`MultiVectorStore` keyed by qid."""
    multi = _array(vectors, np.float32)
    if multi.ndim != 3 or len(multi) != len(qids):
        raise ValueError(f"expected vectors [{len(qids)}, K, H], got {multi.shape}")
    flat, counts = _compact_multi(multi, mask)
    write_multi_store(path, [_check_id(q) for q in qids], [flat], counts, multi.shape[-1], dtype)
    return Path(path)
