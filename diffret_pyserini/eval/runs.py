"""TREC run files: atomic writing and reading.

Line format (as Pyserini and trec_eval use it): ``qid Q0 docid rank score tag``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from diffret_pyserini.atomic import atomic_write_text
from diffret_pyserini.cli import InputError

__all__ = ["write_trec_run", "read_trec_run"]


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
                raise InputError(f"{path}:{lineno}: expected 6 fields 'qid Q0 docid rank score tag', "
                                 f"got {len(parts)}")
            qid, _, docid, _, score, _ = parts
            try:
                value = float(score)
            except ValueError:
                raise InputError(f"{path}:{lineno}: score {score!r} is not a number") from None
            run.setdefault(qid, []).append((docid, value))
    return run
