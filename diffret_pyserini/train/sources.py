"""Which pseudo-queries a collection learns from, and the held-out slice of them that picks fusion weights.

No topics or judgements of the collection are read here: every query is made from the corpus itself.

- `choose_source(corpus)`: 'titles' when the corpus has enough titled documents with a text (a title is the
  closest thing to a query a corpus holds), else `FALLBACK_SOURCE`, the best other source measured on CACM
  without titles (see README, "Fine-tuning without titles").
- `dev_split(corpus, source)`: a seeded sample of `DEV_QUERIES` of those pseudo-queries, each with its
  source document as the one relevant answer. Fine-tuning never trains on these documents' queries
  (`DevSet.docids` go to mining as excluded docids), so the dev figures that choose alpha are held out.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MIN_PSEUDO_QUERIES", "FALLBACK_SOURCE", "DEV_QUERIES", "DEV_SEED", "MIN_WORDS", "DevSet",
           "choose_source", "dev_split"]

MIN_PSEUDO_QUERIES = 200  # below this many, a source is not enough to fine-tune on
FALLBACK_SOURCE = "sentences"
DEV_QUERIES = 200
DEV_SEED = 2026
MIN_WORDS = 20            # documents with fewer text words give no pseudo-query (mine.MineArguments.min_words)


@dataclass
class DevSet:
    """Held-out pseudo-queries: topics {qid: text} and judgements {qid: {docid: 1}}; `docids` are the
    documents they were made from (never trained on)."""

    source: str
    topics: dict[str, str] = field(default_factory=dict)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    docids: set[str] = field(default_factory=set)

    def describe(self) -> dict:
        return {"source": self.source, "queries": len(self.topics), "seed": DEV_SEED}


def choose_source(corpus: str | Path, min_words: int = MIN_WORDS) -> tuple[str, str]:
    """(source, why): 'titles' when at least MIN_PSEUDO_QUERIES documents have a title and a text, else the
    fallback source."""
    from diffret_pyserini.train.mine import has_title_queries

    if has_title_queries(corpus, min_words, MIN_PSEUDO_QUERIES):
        return "titles", f"at least {MIN_PSEUDO_QUERIES} documents have a title and {min_words}+ text words"
    return FALLBACK_SOURCE, (f"fewer than {MIN_PSEUDO_QUERIES} documents have a title and {min_words}+ text "
                             f"words; {FALLBACK_SOURCE} is the best other source measured")


def dev_split(corpus: str | Path, source: str, size: int = DEV_QUERIES, min_words: int = MIN_WORDS,
              seed: int = DEV_SEED) -> DevSet:
    """A seeded sample of `size` pseudo-queries of `source` (at most a quarter of them, so most stay for
    training), each judged relevant to the documents it names: its own, and for titles every document that
    shares the title."""
    from diffret_pyserini.train.mine import pseudo_queries

    if source not in ("titles", "sentences"):
        raise ValueError(f"dev pseudo-queries come from 'titles' or 'sentences', not {source!r}")
    seeds = pseudo_queries(corpus, source, min_words, seed)
    take = min(size, len(seeds) // 4)
    picked = sorted(random.Random(f"dev:{seed}").sample(range(len(seeds)), take))
    dev = DevSet(source)
    for i in picked:
        s = seeds[i]
        qid = f"dev-{s.qid}"
        dev.topics[qid] = s.query
        dev.qrels[qid] = {d: 1 for d in sorted(s.exclude | {p.docid for p in s.positives})}
        dev.docids.add(s.qid)
    return dev
