"""Lucene indexes through Pyserini's own indexer (the Java program of `python -m pyserini.index.lucene`), and
the BM25 stage shared by the pipeline and mining.

Indexes are built into a per-process temporary folder and renamed into place when complete, so a killed or
concurrent run never leaves (or sees) a half index under the final name. The indexer's long Java output goes
to a log file beside the index; a failure raises one line with the log's tail.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
from pathlib import Path

from diffret_pyserini.atomic import atomic_dir, atomic_path, atomic_write
from diffret_pyserini.cli import ToolError
from diffret_pyserini.datasets import PACKAGED_DATA_DIR, Dataset, iter_corpus
from diffret_pyserini.fingerprint import StageLog, fingerprint, folder_lock, path_digest
from diffret_pyserini.pyserini_java import index_collection_command

__all__ = ["dataset_key", "run_quiet", "build_lucene_index", "bm25_index", "bm25_fingerprint", "BM25_STAGE"]

log = logging.getLogger(__name__)
BM25_STAGE = "bm25"


def dataset_key(dataset: Dataset) -> str:
    """The folder name of a dataset under indexes/ and runs/: a packaged dataset's name ('cacm'), else the
    folder's name plus a short hash of its resolved path, so two datasets (or `--dataset .`) never collide."""
    folder = Path(dataset.corpus_path).resolve().parent  # corpus.jsonl or corpus/ sits in the dataset folder
    if folder.parent == PACKAGED_DATA_DIR:
        return dataset.name
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', folder.name).strip('-') or 'dataset'}-{digest}"


def run_quiet(cmd: list[str], log_path: Path) -> None:
    """Run a Pyserini CLI with its output in `log_path` (written under a per-process name, then renamed, so a
    concurrent run never truncates it); a failure raises RuntimeError with the log's tail."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(log_path) as tmp, open(tmp, "w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise ToolError(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}), see {log_path}: "
                        + " | ".join(tail))


def build_lucene_index(collection: str, input_dir: Path, index_dir: Path, threads: int, impact: bool) -> None:
    """Pyserini's indexer (`python -m pyserini.index.lucene`'s Java program, pyserini_java.py) into a
    per-process temp folder, renamed into place when complete."""
    with atomic_dir(index_dir) as tmp:
        args = ["--collection", collection, "--input", str(input_dir), "--index", str(tmp),
                "--generator", "DefaultLuceneDocumentGenerator", "--threads", str(threads)]
        args += ["--impact", "--pretokenized"] if impact else ["--storePositions", "--storeDocvectors", "--storeRaw"]
        cmd = index_collection_command(args)  # what `python -m pyserini.index.lucene ARGS` runs, minus its wrapper
        run_quiet(cmd, index_dir.with_name(index_dir.name + ".log"))


def bm25_index(dataset: Dataset, root: Path, threads: int = 2, force: bool = False) -> Path:
    """The BM25 index of title + text (the contents our encoders see) under `root`, built once per corpus
    content; concurrent callers wait for one build and share it."""
    with folder_lock(root):
        stages = StageLog(root / "stages.json", force)
        fp = fingerprint(corpus=path_digest(dataset.corpus_path))
        index = root / "index"
        if stages.is_done(BM25_STAGE, fp) and index.is_dir():
            log.info(f"bm25 index up to date: {index}")
            return index
        collection = root / "collection" / "docs.jsonl"
        with atomic_write(collection, tmp_dir=root) as out:  # not in collection/: Anserini reads every file there
            for doc in iter_corpus(dataset.corpus_path):
                out.write(json.dumps({"id": doc.docid, "contents": doc.contents}, ensure_ascii=False) + "\n")
        log.info("indexing BM25 ...")
        build_lucene_index("JsonCollection", collection.parent, index, threads, impact=False)
        stages.mark(BM25_STAGE, fp)
        return index


def bm25_fingerprint(index: Path) -> str | None:
    """The recorded corpus fingerprint of a BM25 index built by `bm25_index` (None when unknown)."""
    return StageLog(index.parent / "stages.json").done.get(BM25_STAGE)
