"""Collections derived from another: the packaged `cacm-notitle` is made by `without_titles("cacm", ...)`.

    python -m diffret_pyserini.data.derive cacm OUT_DIR      # BEIR folder: numeric ids, no titles

A collection without titles is what most users' own data looks like (passages with ids), and it is the case
where the title pseudo-queries of fine-tuning do not exist. The topics and judgements are copied with the ids
mapped, so its figures stand beside the source collection's.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from diffret_pyserini.atomic import atomic_write
from diffret_pyserini.datasets import DatasetError, iter_corpus, load_qrels, load_queries, resolve_dataset

__all__ = ["numeric_id", "without_titles", "main"]


def numeric_id(docid: str) -> str:
    """'CACM-0046' -> '46': the number in an id, without leading zeros (the id itself if it has none)."""
    found = re.findall(r"[0-9]+", docid)
    return str(int(found[-1])) if found else docid


def without_titles(source: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write `source` as a BEIR folder whose documents have numeric ids and only their text (titles dropped),
    with its topics and judgements (ids mapped); refuses a source whose numeric ids collide."""
    dataset = resolve_dataset(source)
    out = Path(out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    ids: dict[str, str] = {}
    with atomic_write(out / "corpus.jsonl") as f:
        for doc in iter_corpus(dataset.corpus_path):
            new = numeric_id(doc.docid)
            if new in ids.values():
                raise DatasetError(f"{dataset.corpus_path}: ids {doc.docid!r} and another both map to {new!r}")
            ids[doc.docid] = new
            f.write(json.dumps({"_id": new, "title": "", "text": doc.text}, ensure_ascii=False) + "\n")
    with atomic_write(out / "queries.jsonl") as f:
        for qid, text in load_queries(dataset.queries_path).items():
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    if dataset.qrels_path is not None:
        with atomic_write(out / "qrels" / "test.tsv") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid, judged in load_qrels(dataset.qrels_path).items():
                for docid, grade in judged.items():
                    f.write(f"{qid}\t{ids.get(docid, numeric_id(docid))}\t{grade}\n")
    return out


def main(argv: list[str] | None = None) -> int:
    from diffret_pyserini.cli import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="python -m diffret_pyserini.data.derive", description=__doc__)
    parser.add_argument("source", help="BEIR-layout folder or packaged dataset name")
    parser.add_argument("out", help="folder to write (BEIR layout)")
    args = parser.parse_args(argv)
    print(without_titles(args.source, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
