"""README's "every stage by hand": Pyserini's own CLIs on the outputs of `python -m diffret_pyserini.encode` give
the pipeline's runs. (`python -m pyserini.encode` with our encoder writes what our encode CLI writes, vector for
vector: tests/test_pyserini_e2e.py.)

The commands here are the README's, on a small real sample (CACM documents, titles as queries).
"""
import json

import pytest
from cli_chain import run_chain
from numeric_collection import key

from diffret_pyserini.eval.runs import read_trec_run

HITS = "100"


def scores(path):
    return {qid: {doc: round(score, 4) for doc, score in hits} for qid, hits in read_trec_run(path).items()}


@pytest.fixture(scope="module")
def by_hand(numeric_run, tmp_path_factory):
    tmp, data, _ = numeric_run  # the pipeline's own run of the same collection
    work = tmp_path_factory.mktemp("hand")
    enc = ["encoder", "--encoder", "splade-tiny", "--device", "cpu"]
    bm25_index = tmp / "indexes" / key(data) / "bm25" / "index"  # the pipeline's BM25 index (title + text)
    impact = ["--collection", "JsonVectorCollection", "--generator", "DefaultLuceneDocumentGenerator", "--impact",
              "--pretokenized", "--threads", "1"]
    # One interpreter runs the chain (tests/cli_chain.py): each command as `python -m MODULE ARGS` runs it,
    # and Pyserini's imports (9 s of CPU per command) are paid once.
    run_chain([["diffret_pyserini.encode", "input", "--corpus", data / "corpus.jsonl",
                "output", "--embeddings", "enc", *enc],
               ["diffret_pyserini.encode", "input", "--topics", data / "queries.jsonl",
                "output", "--embeddings", "queries", *enc],
               ["pyserini.index.lucene", "--input", "enc/sparse", "--index", "impact", *impact],
               ["pyserini.search.faiss", "--index", "enc/dense", "--encoded-queries", "queries/dense",
                "--topics", "queries/topics.tsv", "--output", "dense.trec", "--hits", HITS],
               ["pyserini.search.hybrid", "dense", "--index", "enc/dense", "--encoded-queries", "queries/dense",
                "sparse", "--index", bm25_index, "fusion", "--alpha", "1.0", "--normalization", "--hits", HITS,
                "run", "--topics", "queries/topics.tsv", "--output", "hybrid-bm25.trec", "--hits", HITS],
               ["pyserini.search.lucene", "--index", "impact", "--impact", "--encoder", "queries/sparse.jsonl",
                "--min-idf", "-1", "--topics", "queries/topics.tsv", "--output", "sparse.trec", "--hits", HITS],
               ["pyserini.search.hybrid", "dense", "--index", "enc/dense", "--encoded-queries", "queries/dense",
                "sparse", "--index", "impact", "--impact", "--encoder", "queries/sparse.jsonl", "--min-idf", "-1",
                "fusion", "--alpha", "1.0", "--normalization", "--hits", HITS,
                "run", "--topics", "queries/topics.tsv", "--output", "hybrid.trec", "--hits", HITS],
               ["pyserini.eval.trec_eval", "-c", "-m", "ndcg_cut.10", "-m", "map",
                tmp / "runs" / key(data) / "qrels.txt", "sparse.trec"]],  # qrels: the pipeline's, TREC format
              cwd=work, stdout={7: "trec_eval.txt"})
    return tmp, data, work


def pipeline_run(tmp, data, system):
    return tmp / "runs" / key(data) / "splade-tiny-kq4-kp16" / f"{system}.trec"


@pytest.mark.parametrize("system", ["sparse", "dense"])
def test_pyserini_search_clis_reproduce_the_pipeline_runs(by_hand, system):
    tmp, data, work = by_hand
    assert scores(work / f"{system}.trec") == scores(pipeline_run(tmp, data, system))


@pytest.mark.parametrize("theirs_name, system", [("hybrid", "hybrid-dense"), ("hybrid-bm25", "hybrid-bm25-dense")])
def test_pyserini_hybrid_cli_ranks_like_the_pipeline_hybrid(by_hand, theirs_name, system):
    """Pyserini's fusion with --alpha 1 --normalization is 2x ours - 1 (equal-weight min-max; a doc missing
    on one side is at that side's minimum in both), so the rankings are the same; with BM25 as its sparse side
    it gives hybrid-bm25-dense."""
    tmp, data, work = by_hand
    theirs, ours = read_trec_run(work / f"{theirs_name}.trec"), read_trec_run(pipeline_run(tmp, data, system))
    assert theirs.keys() == ours.keys()
    for qid in ours:
        mine = dict(ours[qid])
        for doc, score in theirs[qid]:
            assert score == pytest.approx(2 * mine[doc] - 1, abs=1e-4)


def test_pyserini_trec_eval_cli_gives_the_pipeline_metrics(by_hand):
    tmp, data, work = by_hand
    out = (work / "trec_eval.txt").read_text()
    values = {line.split()[0]: float(line.split()[2]) for line in out.splitlines() if "\tall\t" in line}
    metrics = json.loads((pipeline_run(tmp, data, "sparse").parent / "metrics.json").read_text())["sparse"]
    assert values["ndcg_cut_10"] == pytest.approx(metrics["nDCG@10"], abs=1e-4)
    assert values["map"] == pytest.approx(metrics["MAP"], abs=1e-4)
