"""TREC run files: atomic writing and reading.

Line format (as Pyserini and trec_eval use it): ``qid Q0 docid rank score tag``.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

__all__ = ["write_trec_run", "read_trec_run", "atomic_write_text", "atomic_write_bytes", "atomic_target"]


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name beside ``path``; on success fsync it and rename it onto ``path``.

    The rename is atomic on one filesystem, so readers see the old file or the complete new one, never a
    half-written one; on error the temporary file is removed.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; a run or metrics file should be world-readable
        os.replace(tmp, final)
        with contextlib.suppress(OSError):  # persist the rename itself where directories can be fsynced
            dfd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_target(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _pairs(hits: Sequence[Any]) -> list[tuple[str, float]]:
    out = []
    for hit in hits:
        if isinstance(hit, (tuple, list)):
            docid, score = hit[0], hit[1]
        else:  # Pyserini hits: DenseSearchResult, JScoredDoc, ...
            docid, score = hit.docid, hit.score
        out.append((str(docid), float(score)))
    return out


def _check_token(value: str, what: str, qid: str) -> None:
    if not value or any(ch.isspace() for ch in value):
        raise ValueError(f"query {qid!r}: {what} {value!r} is empty or contains whitespace")


def write_trec_run(results: Mapping[str, Sequence[Any]], path: str | os.PathLike, tag: str = "diffret",
                   k: int | None = None) -> Path:
    """Write ``{qid: hits}`` as a TREC run, atomically.

    Hits are (docid, score) pairs or objects with ``.docid`` / ``.score``. Within a query they are sorted by
    descending score, ties by ascending docid, and ranked from 1; queries keep the mapping's order; ``k``
    truncates each list. Scores are written with 6 decimals, like Pyserini. A docid repeated within a query
    raises ValueError (trec_eval would reject the run).
    """
    _check_token(tag, "run tag", "-")
    lines: list[str] = []
    for qid, hits in results.items():
        qid = str(qid)
        _check_token(qid, "query id", qid)
        ranked = sorted(_pairs(hits), key=lambda pair: (-pair[1], pair[0]))
        if k is not None:
            ranked = ranked[:k]
        seen: set[str] = set()
        for rank, (docid, score) in enumerate(ranked, start=1):
            _check_token(docid, "docid", qid)
            if docid in seen:
                raise ValueError(f"query {qid!r}: docid {docid!r} appears twice")
            seen.add(docid)
            lines.append(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
    atomic_write_text(path, "".join(lines))
    return Path(path)


def read_trec_run(path: str | os.PathLike) -> dict[str, list[tuple[str, float]]]:
    """Read a TREC run into ``{qid: [(docid, score), ...]}`` in file order (queries and hits).

    Raises ValueError naming the file and line for a malformed line.
    """
    run: dict[str, list[tuple[str, float]]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"{path}:{lineno}: expected 6 fields 'qid Q0 docid rank score tag', "
                                 f"got {len(parts)}")
            qid, _, docid, _, score, _ = parts
            try:
                value = float(score)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: score {score!r} is not a number") from None
            run.setdefault(qid, []).append((docid, value))
    return run
