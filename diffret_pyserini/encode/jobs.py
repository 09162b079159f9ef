"""Encoding jobs: a corpus or a query set through a `DiffRetEncoder` into the files Pyserini reads.

`encode_corpus` streams documents in batches into a `RepresentationShardWriter` (resumable: a killed run
restarts at its last committed chunk; every output written atomically): a FAISS dir (`dense`), a
JsonVectorCollection (`sparse`) and a multi-vector store (`multi`), all from one forward pass per batch.
`encode_queries` writes `dense/embedding.pkl` (for `pyserini.search.faiss --encoded-queries`), `sparse.jsonl`
(for `pyserini.search.lucene --impact --encoder`), `multi/` and a Pyserini-safe `topics.tsv`.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from tqdm import tqdm

from diffret_pyserini.datasets import Document, count_corpus, iter_corpus, normalize_text
from diffret_pyserini.encode.batching import BatchPlan, padding_fraction, plan_batches
from diffret_pyserini.fingerprint import fingerprint, path_digest
from diffret_pyserini.model.encoder import DiffRetEncoder

__all__ = ["EncodeOptions", "encode_corpus", "encode_queries", "encoder_fingerprint", "shard_range", "batched",
           "EncodeStats",
           "plan_window", "encode_window", "overlap_pays"]

log = logging.getLogger(__name__)


def batched(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def shard_range(total: int, shard_id: int, shard_num: int) -> tuple[int, int]:
    """Docs [start, end) of one shard, split as pyserini.encode splits them (the last shard takes the rest)."""
    size = total // shard_num
    start = shard_id * size
    return start, total if shard_id == shard_num - 1 else start + size


def encoder_fingerprint(encoder: DiffRetEncoder) -> dict:
    """What determines the vectors: the model files and the encoder settings."""
    spec = encoder.backbone.spec
    # load_kind: a baseline recipe (diffembed, repllama) never shares vectors with DiffRetriever on the same model
    model = {"path": path_digest(spec.path), "kind": encoder.backbone.load_kind,
             "read_offset": encoder.backbone.read_offset,
             "slot": encoder.backbone.slot_id, "dtype": str(encoder.backbone.dtype)}
    if spec.base_path != spec.path:
        model["base"] = path_digest(spec.base_path)
    return {"model": model, "settings": encoder.settings.to_dict()}


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc `malloc_trim`; a no-op elsewhere).

    Batches of varying length make glibc serve the large activation buffers from a heap that then stays
    fragmented: measured on CACM with SPLADE-tiny, the resident set climbed from 630 MB to over 1 GB in 8,000
    documents without ever levelling off. Trimming once per committed chunk keeps it flat for ~5% time
    (pinning malloc's mmap threshold instead kept it flat too, but cost 40%)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.lru_cache(maxsize=1)
def _libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def overlap_pays(device) -> bool:
    """Whether reading and tokenising the next window in a background thread gains time: on an accelerator
    (the host is idle during the forward pass), or on CPU with a core that torch's threads leave free.

    Where torch's threads already take every core, the thread only takes turns with them, and an OpenMP
    thread that loses its core stalls the others at the next barrier: measured on 2 cores with SPLADE-tiny,
    the body ran 10-15% slower beside the thread than alone, more than the tokenising it hid."""
    import os

    import torch

    if torch.device(device).type != "cpu":
        return True
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores > torch.get_num_threads()


def _now(fn):
    """`fn` run at once, behind the `result()` of a future (the no-overlap path of encode_corpus)."""
    from concurrent.futures import Future

    done: Future = Future()
    try:
        done.set_result(fn())
    except BaseException as e:  # raised where a background future would raise it: at result()
        done.set_exception(e)
    return done


@dataclass
class EncodeStats:
    """What an encoding job computed: documents, forward passes, and positions with and without padding."""

    docs: int = 0
    batches: int = 0           # forward passes
    real_tokens: int = 0       # positions holding text, prompt or slots
    padded_tokens: int = 0     # every position computed: rows x longest row, summed over batches
    no_content: int = 0        # documents with no content token: no dense or multi vector

    @property
    def padding(self) -> float:
        return padding_fraction(self.real_tokens, self.padded_tokens)

    def add(self, other: "EncodeStats") -> None:
        self.docs += other.docs
        self.batches += other.batches
        self.real_tokens += other.real_tokens
        self.padded_tokens += other.padded_tokens
        self.no_content += other.no_content

    def summary(self) -> str:
        """The encode log's line: documents, batches, padding, and the documents without a content token."""
        line = f"encoded {self.docs} documents in {self.batches} batches, {self.padding:.1%} padding"
        if self.no_content:
            line += (f"; {self.no_content} with no content token (empty, or only [UNK] and special tokens): no "
                     "dense or multi vector (a zero vector keeps the FAISS dir aligned), still in sparse and BM25")
        return line


@dataclass
class Window:
    """A bounded run of documents, tokenised once and cut into (length-bucketed) batches."""

    docs: list[Document]
    text_ids: list[list[int]]
    plan: BatchPlan

    @property
    def texts(self) -> list[str]:
        return [d.contents for d in self.docs]


def plan_window(encoder: DiffRetEncoder, docs: list[Document], max_length: int | None, batch_size: int,
                max_tokens: int | None, length_buckets: bool) -> Window:
    """Tokenise `docs` once and plan their batches (sorted by prompt length when `length_buckets`)."""
    builder = encoder.builder("passage", None, max_length)
    ids = builder.text_ids([d.contents for d in docs]) if docs else []
    return Window(docs, ids, plan_batches(builder.sequence_lengths(ids), batch_size, max_tokens, length_buckets))


def encode_window(encoder: DiffRetEncoder, window: Window, representations: Sequence[str],
                  max_length: int | None) -> tuple[dict, EncodeStats]:
    """Encode a planned window; returns the writer's keyword arrays IN CORPUS ORDER, and what it cost."""
    import numpy as np

    texts = window.texts
    n = len(texts)
    out: dict = {"dense": None, "multi": None, "multi_mask": None,
                 "sparse": [None] * n if "sparse" in representations else None}
    no_content = 0
    for rows in window.plan.batches:
        enc = encoder.encode([texts[i] for i in rows], "passage", want=representations, max_length=max_length,
                             text_ids=[window.text_ids[i] for i in rows])
        for key, value in (("dense", enc.dense), ("multi", enc.multi), ("multi_mask", enc.multi_valid)):
            if value is not None:
                if out[key] is None:
                    out[key] = np.zeros((n, *value.shape[1:]), dtype=value.dtype)
                out[key][rows] = value
        if enc.sparse is not None:
            for row, vec in zip(rows, enc.sparse):
                out["sparse"][row] = vec
        no_content += int((~enc.content).sum())
    plan = window.plan
    return out, EncodeStats(n, len(plan.batches), plan.real_tokens, plan.padded_tokens, no_content)


@dataclass(frozen=True)
class EncodeOptions:
    """How a corpus is batched and written: the single-process and the Ray paths take the same options.

    representations: which to write (None: every one the encoder makes); batch_size / max_tokens: the row and
    padded-token limits of a batch; length_buckets: batch documents of similar length together; max_length: the
    passage token limit (None: the encoder's); chunk_size: documents per committed chunk (per Ray block);
    multi_dtype: the multi-vector store's dtype; overwrite: discard earlier outputs instead of resuming them.
    """

    representations: tuple[str, ...] | None = None
    batch_size: int = 32
    max_tokens: int | None = None
    length_buckets: bool = True
    max_length: int | None = None
    chunk_size: int = 1024
    multi_dtype: str = "float16"
    overwrite: bool = False


def encode_corpus(encoder: DiffRetEncoder, corpus: str | Path, out_dir: str | Path,
                  options: EncodeOptions = EncodeOptions(), shard_id: int = 0, shard_num: int = 1,
                  stats: EncodeStats | None = None) -> dict:
    """Stream `corpus` through the encoder into resumable, atomic outputs; returns {representation: path}
    (`representations`: default every one the encoder makes).

    Each committed chunk (`options.chunk_size` documents) is one window: tokenised once (the next window is read and
    tokenised in a background thread while this one runs through the model, where that pays: `overlap_pays`),
    batched by length under the `batch_size` / `max_tokens` limits, and written back in corpus order. Windows
    are aligned to chunks, so a resumed run batches every document exactly as an uninterrupted run does.
    `stats`, when given, is filled with the documents, batches and padding of this run.
    """
    from concurrent.futures import ThreadPoolExecutor

    from diffret_pyserini.encode.writers import RepresentationShardWriter

    o = options
    representations = encoder.representations if o.representations is None else o.representations
    fp = fingerprint(corpus=path_digest(corpus), encoder=encoder_fingerprint(encoder), max_length=o.max_length,
                     shard=[shard_id, shard_num])
    writer = RepresentationShardWriter(out_dir, representations, chunk_size=o.chunk_size, fingerprint=fp,
                                       overwrite=o.overwrite, shard_id=shard_id, shard_num=shard_num,
                                       multi_dtype=o.multi_dtype)
    if writer.manifest.get("finalized"):
        return writer.finalize()
    start, end = shard_range(count_corpus(corpus), shard_id, shard_num)
    done = writer.completed_docs()
    todo = end - start - done
    docs = (doc for i, doc in enumerate(iter_corpus(corpus, start=start + done)) if i < todo)
    windows = batched(docs, o.chunk_size)
    stats = stats if stats is not None else EncodeStats()

    def plan_next() -> Window | None:
        chunk = next(windows, None)
        return None if chunk is None else plan_window(encoder, chunk, o.max_length, o.batch_size, o.max_tokens,
                                                      o.length_buckets)

    with tqdm(total=end - start, initial=done, desc=f"encode {Path(corpus).name}", unit="doc") as bar, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenise") as pool:
        submit = pool.submit if overlap_pays(encoder.backbone.device) else _now
        upcoming = submit(plan_next)
        while (window := upcoming.result()) is not None:
            upcoming = submit(plan_next)  # where it pays, reading and tokenising overlap this window's forwards
            out, cost = encode_window(encoder, window, representations, o.max_length)
            writer.write_batch([d.docid for d in window.docs], window.texts, **out)
            stats.add(cost)
            bar.update(len(window.docs))
            bar.set_postfix(padding=f"{stats.padding:.1%}")
            release_free_memory()
    if stats.docs:
        log.info(stats.summary())
    return writer.finalize()


def encode_queries(encoder: DiffRetEncoder, queries: dict[str, str], out_dir: str | Path,
                   representations: Sequence[str] | None = None, batch_size: int = 32) -> dict:
    """Encode queries into the files Pyserini's search CLIs read (see the module docstring); `representations`
    defaults to every one the encoder makes."""
    import numpy as np

    from diffret_pyserini.datasets import write_topics_tsv
    from diffret_pyserini.encode.writers import write_query_multi, write_query_sparse_jsonl
    from diffret_pyserini.index.faiss_dirs import write_query_embeddings_pkl

    out = Path(out_dir)
    representations = encoder.representations if representations is None else representations
    qids, texts = list(queries), [normalize_text(t) for t in queries.values()]
    dense, multi, valid, sparse = [], [], [], []
    for i in tqdm(range(0, len(texts), batch_size), desc="encode queries", unit="batch"):
        enc = encoder.encode(texts[i:i + batch_size], "query", want=representations)
        dense += [] if enc.dense is None else list(enc.dense)
        multi += [] if enc.multi is None else list(enc.multi)
        valid += [] if enc.multi_valid is None else list(enc.multi_valid)
        sparse += enc.sparse or []
    paths = {"topics": write_topics_tsv(dict(zip(qids, texts)), out / "topics.tsv")}
    if "dense" in representations:
        paths["dense"] = write_query_embeddings_pkl(out / "dense", texts, np.stack(dense))
    if "sparse" in representations:
        paths["sparse"] = write_query_sparse_jsonl(out / "sparse.jsonl", qids, texts, sparse)
    if "multi" in representations:
        paths["multi"] = write_query_multi(out / "multi", qids, np.stack(multi), np.stack(valid))
    return paths
