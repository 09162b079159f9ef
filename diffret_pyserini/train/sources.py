"""Which pseudo-queries a collection learns from, and the held-out slice of them that picks fusion weights.

No topics or judgements of the collection are read here: every query is made from the corpus itself.

- `source_candidates(corpus)`: ['titles'] when the corpus has enough titled documents with a text (a title
  is the closest thing to a query a corpus holds), else ['lm', 'sentences'] ('lm': SmolLM2 writes a title per
  document), or ['sentences'] where SmolLM2 is not built. With more than one candidate the main job
  fine-tunes on each and keeps the one whose best hybrid scores highest on the dev queries below
  (pipeline/source_choice.py); `choose_source` is the first candidate, for callers with no dev set.
- `dev_split(corpus, source)`: a seeded sample of `DEV_QUERIES` documents among those the source makes
  pseudo-queries from, held out: fine-tuning never trains on their queries (`DevSet.docids` are excluded
  from mining), so the dev figures that choose alpha are held out. Their dev queries are written by the
  packaged SmolLM2 (`doc2query.py`, a short title for the document's text) when `make models` has built it,
  each with its document as the relevant answer. The source's own queries are the fallback: they copy the
  document's words (a title or a sentence of the indexed text), so the BM25 hybrids find nearly all of them at
  any weight (dev nDCG@10 0.92-0.98 with CACM titles, 0.98-0.99 with sentences of CACM without titles,
  against 0.45-0.62 with SmolLM2's titles) and such a dev set barely tells a good fusion weight from a bad one.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from diffret_pyserini.cli import InputError

__all__ = ["MIN_PSEUDO_QUERIES", "FALLBACK_SOURCES", "DEV_QUERIES", "DEV_SEED", "MIN_WORDS", "DevSet",
           "choose_source", "source_candidates", "lm_available", "dev_split"]

MIN_PSEUDO_QUERIES = 200  # below this many, a source is not enough to fine-tune on
# The sources tried when a corpus has too few titles, in order of preference on a tie of their dev figures
FALLBACK_SOURCES = ("lm", "sentences")
DEV_QUERIES = 200
DEV_SEED = 2026
log = logging.getLogger("diffret_pyserini.pipeline")
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


def source_candidates(corpus: str | Path, min_words: int = MIN_WORDS) -> tuple[list[str], str]:
    """(sources, why): ['titles'] when at least MIN_PSEUDO_QUERIES documents have a title and a text, else
    FALLBACK_SOURCES ('lm' only when SmolLM2 is built), to be told apart on dev queries."""
    from diffret_pyserini.train.mine import has_title_queries

    if has_title_queries(corpus, min_words, MIN_PSEUDO_QUERIES):
        return ["titles"], f"at least {MIN_PSEUDO_QUERIES} documents have a title and {min_words}+ text words"
    why = f"fewer than {MIN_PSEUDO_QUERIES} documents have a title and {min_words}+ text words"
    sources = [s for s in FALLBACK_SOURCES if s != "lm" or lm_available()]
    if "lm" not in sources:
        why += "; SmolLM2 is not built (make models), so no lm source"
    return sources, why


def choose_source(corpus: str | Path, min_words: int = MIN_WORDS) -> tuple[str, str]:
    """(source, why): the first of `source_candidates`, for callers that cannot compare them on dev queries."""
    sources, why = source_candidates(corpus, min_words)
    if len(sources) > 1:
        why += f"; {sources[0]}, the first of {', '.join(sources)} (not compared on dev queries here)"
    return sources[0], why


def lm_available(model: str = "smollm2") -> bool:
    """Whether the packaged query-writing LM is built (`make models`)."""
    from diffret_pyserini.model.packaged import ModelNotFoundError, resolve_model_path

    try:
        resolve_model_path(model)
    except ModelNotFoundError:
        return False
    return True


def dev_split(corpus: str | Path, source: str, size: int = DEV_QUERIES, min_words: int = MIN_WORDS,
              seed: int = DEV_SEED, queries: str = "auto", cache_dir: str | Path | None = None) -> DevSet:
    """`size` documents held out of `source`'s pseudo-queries (a seeded sample, at most a quarter of them, so
    most stay for training) and their dev queries: `queries` 'lm' (SmolLM2 titles, cached under `cache_dir`),
    'own' (the source's own), 'none' (documents only) or 'auto' (lm when built, else own, with a warning).
    A title query is judged relevant to every document sharing the title; any other to its own document."""
    from diffret_pyserini.train.mine import pseudo_queries

    if source not in ("titles", "sentences", "lm"):
        raise InputError(f"dev documents come from 'titles', 'sentences' or 'lm' pseudo-queries, not {source!r}")
    # lm: any document with a text; the sentences' documents are those, less the ones without a prose sentence
    seeds = pseudo_queries(corpus, "sentences" if source == "lm" else source, min_words, seed)
    take = min(size, len(seeds) // 4)
    picked = [seeds[i] for i in sorted(random.Random(f"dev:{seed}").sample(range(len(seeds)), take))]
    if queries == "auto" or (source == "lm" and queries == "own"):
        queries = "lm" if source == "lm" or lm_available() else "own"
        if queries == "own" and picked:
            log.warning("dev queries: SmolLM2 is not built (make models), so the held-out documents' own "
                        f"{source} stand in; they copy the indexed words and favour BM25 in the choice of alpha")
    dev = DevSet("lm" if queries == "lm" else source, docids={s.qid for s in picked})
    texts = {s.qid: s.query for s in picked}
    if queries == "lm" and picked:
        from diffret_pyserini.train.doc2query import Doc2QueryArguments, generate_queries

        folder = Path(cache_dir) if cache_dir is not None else Path("indexes") / "pseudo-queries"
        texts, _ = generate_queries(corpus, dev.docids, Doc2QueryArguments(cache_dir=str(folder), threads=1))
    elif queries == "none":
        texts = {}
    for s in picked:
        if s.qid in texts:
            qid = f"dev-{s.qid}"
            dev.topics[qid] = texts[s.qid]
            dev.qrels[qid] = {d: 1 for d in sorted(s.exclude | {p.docid for p in s.positives})}
    return dev
