"""`python -m diffret_pyserini.train.mine`: training examples with BM25 hard negatives, as Tevatron jsonl.

    python -m diffret_pyserini.train.mine --dataset DIR --output train.jsonl --source qrels --split train
    python -m diffret_pyserini.train.mine --dataset cacm --output titles.jsonl --source titles
    python -m diffret_pyserini.train.mine --dataset cacm-notitle --output lm.jsonl --source lm --max_queries 300

Sources of (query, positive) pairs:
  qrels      queries.jsonl + qrels/<split>.tsv of a BEIR folder (relevance > 0 are positives);
  titles     pseudo-queries for collections without training topics: a document's title is the query and its
             text (without the title, which would make the match trivial) the positive;
  sentences  a sentence of a document's text is the query, the document without that sentence the positive;
  lm         a short title written by a small instruct LM (doc2query / InPars style, train/doc2query.py) from the
             first words of the text is the query, the whole document the positive; cached by content under
             `--lm_cache` (default <indexes>/<dataset>/pseudo-queries), resumable, junk outputs dropped and counted.
`--exclude_docids FILE` (one docid per line) holds documents out: they never give a pseudo-query (they may still
be negatives), so a dev slice of pseudo-queries can be built from them and never trained on.
Negatives are the top BM25 hits (Pyserini LuceneSearcher, k1=0.9 b=0.4, over the same title + text index the
pipeline builds and caches) minus the positives, after skipping `--skip_top` hits (likely unjudged positives).
Pseudo-query sources never read the collection's queries or qrels.
"""
from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from diffret_pyserini.cli import InputError
from diffret_pyserini.datasets import (
    DatasetError,
    iter_corpus,
    load_qrels,
    load_queries,
    normalize_text,
    resolve_dataset,
)
from diffret_pyserini.train.data import Example, Passage, write_examples

SOURCES = ("qrels", "titles", "sentences", "lm")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# Generic ways of asking for documents on a topic; they teach the model to weight request words low.
REQUESTS = ("articles about {}", "papers on {}", "I am interested in {}", "What is known about {}?",
            "information on {}", "Find documents that describe {}", "Any work on {}",
            "I want to know about {}", "publications dealing with {}", "What has been written on {}?")


def wrap_query(query: str, rng: random.Random) -> str:
    topic = query[:1].lower() + query[1:] if query[1:2].islower() else query
    return rng.choice(REQUESTS).format(topic.rstrip(".?!"))


@dataclass
class MineArguments:
    dataset: str = field(default="cacm", metadata={"help": "BEIR-layout folder or packaged dataset name"})
    output: str = field(default="", metadata={"help": "Tevatron jsonl to write"})
    source: str = field(default="qrels", metadata={"help": f"where queries come from: {', '.join(SOURCES)}"})
    split: str = field(default="train", metadata={"help": "qrels source: qrels/<split>.tsv"})
    negatives: int = field(default=8, metadata={"help": "hard negatives kept per query"})
    skip_top: int = field(default=0, metadata={"help": "BM25 hits skipped before taking negatives"})
    min_words: int = field(default=20, metadata={"help": "pseudo-queries: documents with fewer text words skipped"})
    strip_titles: bool = field(default=True, metadata={
        "help": "titles source: drop the title from negatives too, so positive and negatives look alike"})
    wrap_queries: float = field(default=0.0, metadata={
        "help": "pseudo-queries: share wrapped in a generic request ('papers on ...', 'I am interested in ...'), so "
                "the model learns that such words carry no topic"})
    max_queries: int | None = field(default=None, metadata={"help": "keep at most N queries (seeded sample)"})
    seed: int = field(default=13, metadata={"help": "seed of sentence choice and query sampling"})
    indexes: str = field(default="indexes", metadata={"help": "root of the index folders (BM25 index cached)"})
    threads: int = field(default=2, metadata={"help": "indexing and search threads"})
    exclude_docids: str | None = field(default=None, metadata={
        "help": "pseudo-queries: file of docids (one per line) that never give a query (a held-out dev slice)"})
    lm_model: str = field(default="smollm2", metadata={"help": "lm source: instruct LM (packaged name or folder)"})
    lm_cache: str | None = field(default=None, metadata={
        "help": "lm source: folder of generated-query caches (default <indexes>/<dataset>/pseudo-queries)"})
    lm_batch_size: int = field(default=16, metadata={"help": "lm source: documents per generate() call"})
    lm_max_doc_words: int = field(default=120, metadata={"help": "lm source: words of each text the LM reads"})
    lm_threads: int | None = field(default=None, metadata={
        "help": "lm source: torch threads while generating (None: torch's default; 1 is fastest on a busy CPU)"})


@dataclass
class Seed:
    """A query before mining: its positives and the docids that must never be negatives."""

    qid: str
    query: str
    positives: list[Passage]
    exclude: set[str]


def is_prose(sentence: str, min_words: int = 6, max_words: int = 40) -> bool:
    """A sentence worth asking about: 6-40 words, mostly alphabetic (not a 'CA580902 JB March 22' trailer),
    with at least 4 content words."""
    from diffret_pyserini.model.representations import content_words

    words = sentence.split()
    if not min_words <= len(words) <= max_words:
        return False
    alphabetic = sum(w.strip(".,;:()\"'").isalpha() for w in words)
    return alphabetic >= 0.85 * len(words) and len(content_words(sentence)) >= 4


def title_key(title: str) -> str:
    return normalize_text(title.lower())


def has_title_queries(corpus: str | Path, min_words: int, enough: int) -> bool:
    """Whether the corpus yields at least `enough` title pseudo-queries (stops reading once it does)."""
    found = 0
    for doc in iter_corpus(corpus):
        if len(doc.title.split()) >= 2 and len(doc.text.split()) >= min_words:
            found += 1
            if found >= enough:
                return True
    return False


def read_docids(path: str | Path) -> set[str]:
    """Docids listed one per line in a file (blank lines and '#' comments skipped)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(p, "no such file (--exclude_docids lists one docid per line)")
    lines = (line.strip() for line in p.read_text(encoding="utf-8").splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def lm_queries(corpus: str | Path, min_words: int, seed: int, max_queries: int | None = None,
               exclude: set[str] | frozenset[str] = frozenset(), generation=None, generator=None) -> list[Seed]:
    """LM-generated pseudo-queries; the `max_queries` sample is drawn BEFORE generation (seeded), so only the
    sampled documents are generated. `generation` is a doc2query.Doc2QueryArguments (default: packaged SmolLM2),
    `generator` an already loaded doc2query.QueryGenerator."""
    from diffret_pyserini.train.doc2query import generate_queries

    eligible = [d.docid for d in iter_corpus(corpus) if len(d.text.split()) >= min_words and d.docid not in exclude]
    if max_queries is not None and len(eligible) > max_queries:
        eligible = random.Random(seed).sample(eligible, max_queries)
    queries, _ = generate_queries(corpus, eligible, generation, generator=generator)
    return [Seed(doc.docid, queries[doc.docid], [Passage(doc.docid, doc.title, doc.text)], {doc.docid})
            for doc in iter_corpus(corpus) if doc.docid in queries]


def pseudo_queries(corpus: str | Path, source: str, min_words: int, seed: int,
                   exclude: set[str] | frozenset[str] = frozenset(), generation=None,
                   max_queries: int | None = None) -> list[Seed]:
    """Title, sentence or LM pseudo-queries from a corpus; documents sharing a title are excluded as negatives.
    Documents in `exclude` give no query; `generation` and `max_queries` are for the lm source (see lm_queries)."""
    if source == "lm":
        return lm_queries(corpus, min_words, seed, max_queries, exclude, generation)
    rng = random.Random(seed)
    seeds: list[Seed] = []
    by_title: dict[str, set[str]] = {}
    for doc in iter_corpus(corpus):
        by_title.setdefault(title_key(doc.title), set()).add(doc.docid)
        if len(doc.text.split()) < min_words or doc.docid in exclude:
            continue
        if source == "titles":
            if len(doc.title.split()) >= 2:
                seeds.append(Seed(doc.docid, normalize_text(doc.title), [Passage(doc.docid, "", doc.text)],
                                  {doc.docid}))
        else:
            sentences = [s for s in _SENTENCE.split(doc.text) if is_prose(s)]
            if sentences:
                pick = rng.choice(sentences)
                rest = normalize_text(doc.text.replace(pick, " "))
                seeds.append(Seed(doc.docid, normalize_text(pick), [Passage(doc.docid, doc.title, rest)],
                                  {doc.docid}))
    for s in seeds:  # a duplicated title ("Glossary of ...") names several right answers: none is a negative
        s.exclude |= by_title.get(title_key(s.query), set()) if source == "titles" else set()
    return seeds


def qrels_queries(dataset_dir: str | Path, split: str) -> list[Seed]:
    """Queries with judged positives from a BEIR folder's qrels/<split>.tsv (passages filled in later)."""
    dataset = resolve_dataset(dataset_dir)
    qrels_path = Path(dataset.queries_path).parent / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise DatasetError(qrels_path, "no such file (the qrels source needs training judgements)")
    queries, qrels = load_queries(dataset.queries_path), load_qrels(qrels_path)
    seeds = []
    for qid, judged in qrels.items():
        positive = sorted(d for d, rel in judged.items() if rel > 0)
        if qid in queries and positive:
            seeds.append(Seed(qid, queries[qid], [Passage(d, "", "") for d in positive], set(judged)))
    return seeds


def mine(args: MineArguments) -> Path:
    """Mine BM25 negatives for every seed query and write the Tevatron jsonl; returns its path."""
    from diffret_pyserini.index.lucene import bm25_index, dataset_key

    if args.source not in SOURCES:
        raise InputError(f"--source must be one of {SOURCES}, got {args.source!r}")
    if not args.output:
        raise InputError("--output: missing")
    for name in ("lm_batch_size", "lm_max_doc_words"):
        if args.source == "lm" and (isinstance(getattr(args, name), bool) or getattr(args, name) < 1):
            raise InputError(f"--{name} {getattr(args, name)!r}: must be an integer >= 1")
    dataset = resolve_dataset(args.dataset)
    if args.exclude_docids and args.source == "qrels":
        raise InputError("--exclude_docids: only for the pseudo-query sources (titles, sentences, lm)")
    exclude = read_docids(args.exclude_docids) if args.exclude_docids else frozenset()
    if args.source == "qrels":
        seeds = qrels_queries(args.dataset, args.split)
    else:
        from diffret_pyserini.train.doc2query import Doc2QueryArguments

        cache = args.lm_cache or str(Path(args.indexes) / dataset_key(dataset) / "pseudo-queries")
        generation = Doc2QueryArguments(model=args.lm_model, cache_dir=cache, batch_size=args.lm_batch_size,
                                        max_doc_words=args.lm_max_doc_words, threads=args.lm_threads)
        seeds = pseudo_queries(dataset.corpus_path, args.source, args.min_words, args.seed, exclude, generation,
                               args.max_queries)
    if args.wrap_queries and args.source != "qrels":
        rng = random.Random(f"{args.seed}:wrap")
        for s in seeds:
            if rng.random() < args.wrap_queries:
                s.query = wrap_query(s.query, rng)
    if args.max_queries is not None and len(seeds) > args.max_queries:
        seeds = sorted(random.Random(args.seed).sample(seeds, args.max_queries), key=lambda s: s.qid)
    if not seeds:
        raise DatasetError(dataset.corpus_path, f"no training queries from source {args.source!r}")
    index = bm25_index(dataset, Path(args.indexes) / dataset_key(dataset) / "bm25", args.threads)
    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(index))
    searcher.set_bm25(0.9, 0.4)
    depth = args.skip_top + args.negatives + max(len(s.exclude) for s in seeds)
    hits = searcher.batch_search([s.query for s in seeds], [str(i) for i in range(len(seeds))], k=depth,
                                 threads=args.threads)
    negative_ids = []
    for i, s in enumerate(seeds):
        ranked = [h.docid for h in hits.get(str(i), []) if h.docid not in s.exclude]
        negative_ids.append(ranked[args.skip_top:args.skip_top + args.negatives])
    # One streaming pass fills in the passages (the corpus is never held in memory whole).
    wanted = {d for ids in negative_ids for d in ids} | {p.docid for s in seeds for p in s.positives if not p.text}
    found = {doc.docid: doc for doc in iter_corpus(dataset.corpus_path) if doc.docid in wanted}
    strip = args.source == "titles" and args.strip_titles
    examples = []
    for s, ids in zip(seeds, negative_ids):
        positives = [p if p.text else Passage(p.docid, found[p.docid].title, found[p.docid].text)
                     for p in s.positives if p.text or p.docid in found]
        negatives = [Passage(d, "" if strip else found[d].title, found[d].text) for d in ids]
        if positives:
            examples.append(Example(s.qid, s.query, positives, negatives))
    return write_examples(examples, args.output)


def main(argv: list[str] | None = None) -> int:
    from diffret_pyserini.cli import run_dataclass_cli

    return run_dataclass_cli((MineArguments,), mine, "python -m diffret_pyserini.train.mine", __doc__, argv,
                             print_result=True)

if __name__ == "__main__":
    sys.exit(main())
