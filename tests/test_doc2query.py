"""LM pseudo-queries (train/doc2query.py) with the packaged SmolLM2-135M-Instruct on 6 real CACM documents:
the junk filter by hand, the content-keyed cache (a second call generates nothing, a torn cache resumes to the
same result) and `mine --source lm` writing Tevatron jsonl whose positive is the source document.

The model reads 40 words per document here (120 by default), runs on one torch thread and is loaded once for
the file, so the file stays fast on a shared 2-core machine."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from diffret_pyserini.datasets import iter_corpus, resolve_dataset
from diffret_pyserini.model.packaged import ModelNotFoundError, resolve_model_path
from diffret_pyserini.model.representations import content_words
from diffret_pyserini.train import doc2query
from diffret_pyserini.train.data import read_examples
from diffret_pyserini.train.doc2query import (
    Doc2QueryArguments,
    QueryGenerator,
    before_trailer,
    cache_path,
    clean_query,
    generate_queries,
)
from diffret_pyserini.train.mine import MineArguments, lm_queries, mine

N_DOCS = 6
HALF = 3  # documents per batch = per committed chunk


def _model_or_skip() -> Path:
    try:
        return resolve_model_path("smollm2")
    except ModelNotFoundError as err:
        pytest.skip(f"SmolLM2 folder not built (`make models`): {err}")


# ------------------------------------------------------------------------------------------ the junk filter

@pytest.mark.parametrize("raw, text, expected", [
    ("CACM June, 1958: A", "A technique is discussed which ...", (None, "trailer")),  # measured junk
    ("The Art of Computer Logic CACM May, 1", "Implementation of Computer Logic", (None, "trailer")),
    ("Report of 1958 and March", "x", (None, "trailer")),  # a year and a month anywhere
    ("The topic of this text is the concept of", "x", (None, "talks about the text")),  # measured junk
    ("A document that answers this query.", "x", (None, "talks about the text")),  # measured junk
    ('"', "x", (None, "empty")),
    ("The Physics of Physics\"", "x", (None, "under 2 content words")),  # one content word, twice
    ('Cantant"\n\nCantant is a musical', "x", (None, "under 2 content words")),  # cut at the quote
    ("Linear Equations with Polynomial Coefficients", "linear equations, with polynomial ...",
     (None, "copies the text's opening")),
    ('The Importance of Parallelism in Computer Programming"', "x",
     ("Importance of Parallelism in Computer Programming", "")),
    ("Sorting on Magnetic Tapes\nmore", "x", ("Sorting on Magnetic Tapes", "")),
    ("Theory of Automata", "x", ("Theory of Automata", "")),  # 'The' only as a whole word is stripped
])
def test_clean_query_keeps_titles_and_drops_the_measured_junk(raw, text, expected):
    assert clean_query(raw, text) == expected


def test_before_trailer_cuts_the_bibliographic_line_only_after_five_words():
    abstract = "A technique is discussed which accelerates convergence. CACM June, 1958 Wegstein, J. H. CA580602 JB"
    assert before_trailer(abstract) == "A technique is discussed which accelerates convergence."
    keywords = "Normal Deviates CACM July, 1968 Bell, J. R. normal deviates, normal distribution"
    assert before_trailer(keywords) == keywords  # 2 words before it: the keywords after it are all there is
    only = "CACM July,1973 Kernighan, B. W. spanning tree"
    assert before_trailer(only) == only
    assert before_trailer("Published in May 1958 by the society of engineers") == \
        "Published in May 1958 by the society of engineers"  # no venue acronym: not a trailer


def test_clean_query_keeps_a_leading_the_when_asked():
    assert clean_query("The Impact of Automatic Data Processing", "x", strip_the=False) == \
        ("The Impact of Automatic Data Processing", "")


# ------------------------------------------------------------------------------- generation on real CACM docs

@pytest.fixture(scope="module")
def cacm_small(tmp_path_factory) -> Path:
    """A BEIR folder of the first 6 CACM documents with >= 40 words of text (and one throwaway query)."""
    root = tmp_path_factory.mktemp("cacm8")
    docs = [d for d in iter_corpus(resolve_dataset("cacm").corpus_path) if len(d.text.split()) >= 40][:N_DOCS]
    with open(root / "corpus.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({"_id": d.docid, "title": d.title, "text": d.text}) + "\n")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "unused"}) + "\n")
    return root


@pytest.fixture(scope="module")
def generator() -> QueryGenerator:
    _model_or_skip()
    # One thread: with two, the other engineers' load made greedy decoding 6-7x slower (threads spin-waiting).
    return QueryGenerator(Doc2QueryArguments(batch_size=HALF, commit_batches=1, max_doc_words=40, threads=1))


@pytest.fixture(scope="module")
def generated(cacm_small, generator, tmp_path_factory):
    """One uninterrupted run: batches of 3, a committed chunk per batch (2 chunks)."""
    args = replace(generator.args, cache_dir=str(tmp_path_factory.mktemp("d2q-cache")))
    queries, stats = generate_queries(cacm_small / "corpus.jsonl", None, args, progress=False, generator=generator)
    return args, queries, stats


def test_most_documents_get_a_short_query(generated):
    _, queries, stats = generated
    assert stats.documents == stats.generated == N_DOCS and stats.cached == 0
    assert len(queries) + sum(stats.dropped.values()) == N_DOCS  # every document is a query or a counted drop
    assert len(queries) >= N_DOCS - 2
    for q in queries.values():
        assert isinstance(q, str) and len(content_words(q)) >= 2 and '"' not in q and "\n" not in q
    assert len(Path(stats.cache).read_text().splitlines()) == N_DOCS  # dropped ones are cached too


def test_a_second_call_generates_nothing_and_never_loads_the_model(generated, cacm_small, monkeypatch):
    args, queries, _ = generated

    def no_model(*_a, **_k):
        raise AssertionError("the model was loaded on a cache hit")

    monkeypatch.setattr(doc2query, "QueryGenerator", no_model)
    again, stats = generate_queries(cacm_small / "corpus.jsonl", None, args, progress=False)
    assert again == queries and stats.generated == 0 and stats.cached == N_DOCS
    some = sorted(queries)[:3]  # a subset is served from the same cache
    assert generate_queries(cacm_small / "corpus.jsonl", some, args, progress=False)[0] == \
        {d: queries[d] for d in some}


def test_the_cache_key_follows_content_and_settings(generated, cacm_small, tmp_path):
    args, _, stats = generated
    assert cache_path(cacm_small / "corpus.jsonl", args) == Path(stats.cache)
    bigger = replace(args, batch_size=16, commit_batches=2)  # batching: same cache
    assert cache_path(cacm_small / "corpus.jsonl", bigger) == Path(stats.cache)
    for changed in (replace(args, max_new_tokens=13), replace(args, cut_trailer=False), replace(args, strip_the=False)):
        assert cache_path(cacm_small / "corpus.jsonl", changed) != Path(stats.cache)
    edited = tmp_path / "corpus.jsonl"
    edited.write_text((cacm_small / "corpus.jsonl").read_text().replace("computer", "Computer", 1))
    assert cache_path(edited, args) != Path(stats.cache)


def test_a_killed_run_resumes_after_its_last_committed_chunk_with_the_same_result(generated, generator, cacm_small,
                                                                                  tmp_path):
    args, queries, stats = generated
    cache = tmp_path / "cache"
    shutil.copytree(args.cache_dir, cache)
    path = cache / Path(stats.cache).name
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:HALF]) + lines[HALF][:17])  # first chunk committed, the next torn mid-line
    resumed, resumed_stats = generate_queries(cacm_small / "corpus.jsonl", None, replace(args, cache_dir=str(cache)),
                                              progress=False, generator=generator)
    assert resumed_stats.cached == HALF and resumed_stats.generated == N_DOCS - HALF
    assert resumed == queries  # the regenerated half is identical (greedy, same batches)
    assert path.read_text().splitlines() == [line.rstrip("\n") for line in lines]


def test_max_queries_is_sampled_before_generation(cacm_small, generator, tmp_path):
    args = replace(generator.args, cache_dir=str(tmp_path / "cache"))
    seeds = lm_queries(cacm_small / "corpus.jsonl", 40, seed=5, max_queries=2, generation=args, generator=generator)
    assert len(cache_path(cacm_small / "corpus.jsonl", args).read_text().splitlines()) == 2  # only 2 generated
    assert len(seeds) <= 2 and all(s.positives[0].docid == s.qid and s.exclude == {s.qid} for s in seeds)


def test_mine_lm_writes_tevatron_jsonl_with_the_source_document_as_positive(generated, cacm_small, tmp_path):
    args, queries, _ = generated
    cache = tmp_path / "cache"
    shutil.copytree(args.cache_dir, cache)  # generated already: mine finds every query in the cache
    held_out = sorted(queries)[0]
    (tmp_path / "dev.txt").write_text(f"# dev slice\n{held_out}\n")
    out = mine(MineArguments(dataset=str(cacm_small), output=str(tmp_path / "lm.jsonl"), source="lm",
                             negatives=2, min_words=40, indexes=str(tmp_path / "idx"), lm_cache=str(cache),
                             lm_batch_size=HALF, lm_max_doc_words=40, exclude_docids=str(tmp_path / "dev.txt")))
    examples = read_examples(out)
    assert {e.query_id for e in examples} == set(queries) - {held_out}
    docs = {d.docid: d for d in iter_corpus(cacm_small / "corpus.jsonl")}
    for e in examples:
        assert e.query == queries[e.query_id]
        assert [(p.docid, p.title, p.text) for p in e.positives] == \
            [(e.query_id, docs[e.query_id].title, docs[e.query_id].text)]
        assert len(e.negatives) <= 2 and e.query_id not in {n.docid for n in e.negatives}
    assert any(len(e.negatives) == 2 for e in examples)  # BM25 over 6 documents may find fewer for some queries


def test_mine_refuses_exclude_docids_for_qrels_and_a_missing_file(cacm_small, tmp_path):
    with pytest.raises(ValueError, match="--exclude_docids"):
        mine(MineArguments(dataset=str(cacm_small), output=str(tmp_path / "x.jsonl"), source="qrels",
                           exclude_docids="dev.txt"))
    with pytest.raises(ValueError, match="missing.txt"):
        mine(MineArguments(dataset=str(cacm_small), output=str(tmp_path / "x.jsonl"), source="titles",
                           exclude_docids=str(tmp_path / "missing.txt")))
