"""runs.py and eval/trec_eval.py: run files, Pyserini's trec_eval, metrics.json / table / plot, and BM25 on CACM."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffret_pyserini.datasets import DatasetError, load_qrels
from diffret_pyserini.eval.runs import read_trec_run, write_trec_run
from diffret_pyserini.eval.trec_eval import (
    convert_qrels,
    display_name,
    evaluate_run,
    format_table,
    plot_metrics,
    read_metrics,
    write_metrics,
)

CACM = Path(__file__).resolve().parents[1] / "diffret_pyserini" / "data" / "cacm"  # the packaged copy


class Hit:
    def __init__(self, docid, score):
        self.docid, self.score = docid, score


def test_write_trec_run_sorts_ranks_and_keeps_query_order(tmp_path):
    path = write_trec_run({"q2": [("b", 1.0), ("a", 1.0), ("c", 3.0)], "q1": [Hit("x", 0.5)]},
                          tmp_path / "run.txt", tag="t")
    assert path.read_text().splitlines() == [
        "q2 Q0 c 1 3.000000 t", "q2 Q0 a 2 1.000000 t", "q2 Q0 b 3 1.000000 t", "q1 Q0 x 1 0.500000 t"]
    assert read_trec_run(path) == {"q2": [("c", 3.0), ("a", 1.0), ("b", 1.0)], "q1": [("x", 0.5)]}
    assert [p.name for p in tmp_path.iterdir()] == ["run.txt"]  # no temporary left behind


def test_write_trec_run_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="twice"):
        write_trec_run({"q": [("a", 1.0), ("a", 0.5)]}, tmp_path / "r")
    with pytest.raises(ValueError, match="whitespace"):
        write_trec_run({"q": [("a b", 1.0)]}, tmp_path / "r")
    assert not (tmp_path / "r").exists()
    (tmp_path / "bad").write_text("q Q0 a 1 1.0\n")
    with pytest.raises(ValueError, match=r"bad:1: expected 6 fields"):
        read_trec_run(tmp_path / "bad")


def test_display_names():
    assert [display_name(n) for n in ("ndcg_cut_10", "map", "recall_100", "recall_1000", "P_30", "x_1")] == \
        ["nDCG@10", "MAP", "R@100", "R@1000", "P@30", "x_1"]


def test_convert_beir_qrels(tmp_path):
    (tmp_path / "q.tsv").write_text("query-id\tcorpus-id\tscore\n1\tD1\t1\n1\tD2\t0\n")
    assert convert_qrels(tmp_path / "q.tsv", tmp_path / "out").read_text() == "1 0 D1 1\n1 0 D2 0\n"
    (tmp_path / "t.txt").write_text("1 0 D1 2\n")
    assert convert_qrels(tmp_path / "t.txt", tmp_path / "out2").read_text() == "1 0 D1 2\n"


def test_convert_qrels_uses_load_qrels(tmp_path):
    # file order kept: qids by first appearance, then their docids; duplicates once; TREC iter column -> 0
    (tmp_path / "t.txt").write_bytes(b"\xef\xbb\xbfq2 Q0 d5 1\r\nq1 0 d1 1\r\n\r\nq2 0 d3 0\r\nq2 0 d5 1\r\n")
    out = convert_qrels(tmp_path / "t.txt", tmp_path / "sub" / "qrels.txt")
    assert out.read_text() == "q2 0 d5 1\nq2 0 d3 0\nq1 0 d1 1\n"
    assert [p.name for p in out.parent.iterdir()] == ["qrels.txt"]  # written atomically, no temp left
    # the same one-line errors as load_qrels (check_dataset), not a second set of rules
    for i, (content, words) in enumerate([("q1\td1\t1.5\n", "'1.5' is not an integer"),
                                          ("q1\td1\t1\nq1\td2\tx\n", "'x' is not an integer"),
                                          ("q1\td1\t1\nq1 d2\n", "expected 3 columns")]):
        bad = tmp_path / f"bad{i}.tsv"
        bad.write_text(content)
        with pytest.raises(DatasetError) as info:
            convert_qrels(bad, tmp_path / "never.txt")
        with pytest.raises(DatasetError) as again:
            load_qrels(bad)
        assert str(info.value) == str(again.value) and words in str(info.value)
        assert str(info.value).startswith(f"{bad}:{info.value.line}: ")
    assert not (tmp_path / "never.txt").exists()


# q1 judged {d1: 1, d3: 2, d2: 0}, q2 judged {d9: 1}. q1's first judgement is the one a BOM used to steal.
JUDGEMENTS = [("q1", "d1", "1"), ("q1", "d3", "2"), ("q1", "d2", "0"), ("q2", "d9", "1")]
QRELS_FORMATS = {
    "beir-no-header": [f"{q}\t{d}\t{r}" for q, d, r in JUDGEMENTS],
    "beir-header": ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, d, r in JUDGEMENTS],
    "trec": [f"{q} 0 {d} {r}" for q, d, r in JUDGEMENTS],
}
METRICS = ("ndcg_cut.10", "map", "recall.100", "P.5", "bpref")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    return write_trec_run({"q1": [("d1", 3.0), ("d2", 2.0), ("d3", 1.0)], "q2": [("d8", 1.0)]},
                          tmp_path_factory.mktemp("run") / "run.txt")


@pytest.mark.parametrize("fmt", list(QRELS_FORMATS))
def test_bom_and_crlf_do_not_change_metrics(tmp_path, small_run, fmt):
    lines = QRELS_FORMATS[fmt]
    variants = {"plain": ("\n", b""), "bom": ("\n", b"\xef\xbb\xbf"), "crlf": ("\r\n", b""),
                "bom+crlf": ("\r\n", b"\xef\xbb\xbf")}
    got = {}
    for name, (eol, bom) in variants.items():
        path = tmp_path / f"qrels-{name}.txt"
        path.write_bytes(bom + "".join(line + eol for line in lines).encode())
        got[name] = evaluate_run(path, small_run, metrics=METRICS)  # real trec_eval, no mocks
    assert got["bom"] == got["plain"] and got["crlf"] == got["plain"] and got["bom+crlf"] == got["plain"]
    # and right, not just equal: AP(q1) = (1/1 + 2/3) / 2, q2 retrieves nothing relevant (a phantom "\ufeffq1"
    # query would have added a third query to the average and taken d1 from q1)
    assert got["plain"]["MAP"] == pytest.approx((1 + 2 / 3) / 2 / 2, abs=1e-4)
    assert got["plain"]["R@100"] == pytest.approx(0.5, abs=1e-4)


def test_negative_grade_is_judged_non_relevant(tmp_path, small_run):
    zero, minus = tmp_path / "zero.tsv", tmp_path / "minus.tsv"
    zero.write_text("".join(f"{q}\t{d}\t{r}\n" for q, d, r in JUDGEMENTS))
    minus.write_text(zero.read_text().replace("q1\td2\t0", "q1\td2\t-1"))
    assert load_qrels(minus)["q1"]["d2"] == -1
    # bpref included: fed a raw -1, trec_eval would count d2 as unjudged there (0.5 instead of 0.25)
    assert evaluate_run(minus, small_run, metrics=METRICS) == evaluate_run(zero, small_run, metrics=METRICS)


def test_evaluate_run_by_hand(tmp_path):
    # q1 judged {d1, d3}; ranked d1, d2, d3 -> AP = (1/1 + 2/3) / 2 = 0.8333 ; q2 judged but not run -> 0 (-c)
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t1\nq2\td9\t1\n")
    run = write_trec_run({"q1": [("d1", 3.0), ("d2", 2.0), ("d3", 1.0)]}, tmp_path / "run.txt")
    # recall.1 and recall.3 must be merged into one -m (trec_eval keeps only the first of a repeated measure)
    got = evaluate_run(tmp_path / "qrels.tsv", run, metrics=("map", "recall.1", "recall.3"))
    assert list(got) == ["MAP", "R@1", "R@3"]
    assert got == pytest.approx({"MAP": (1 + 2 / 3) / 2 / 2, "R@1": 0.25, "R@3": 0.5}, abs=1e-4)
    (tmp_path / "empty.txt").write_text("")
    assert evaluate_run(tmp_path / "qrels.tsv", tmp_path / "empty.txt", metrics=("map",)) == {"MAP": 0.0}


def test_metrics_json_table_and_plot(tmp_path):
    metrics = {"BM25": {"nDCG@10": 0.47404, "MAP": 0.33361}, "dense": {"nDCG@10": 0.5, "R@100": 0.9}}
    write_metrics(metrics, tmp_path / "metrics.json")
    assert read_metrics(tmp_path / "metrics.json") == metrics
    assert list(json.loads((tmp_path / "metrics.json").read_text())) == ["BM25", "dense"]
    assert format_table(metrics) == (
        "| System | nDCG@10 | MAP | R@100 |\n"
        "|---|---:|---:|---:|\n"
        "| BM25 | 0.4740 | 0.3336 | - |\n"
        "| dense | 0.5000 | - | 0.9000 |\n")
    png = plot_metrics(metrics, tmp_path / "plots" / "metrics.png", title="CACM")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in png.parent.iterdir()) == ["metrics.png"]


@pytest.fixture(scope="module")
def cacm_bm25_run(tmp_path_factory):
    """BM25 (k1=0.9, b=0.4) top-1000 run on CACM (BEIR layout), through a real Lucene index."""
    root = tmp_path_factory.mktemp("cacm")
    coll = root / "collection"
    coll.mkdir()
    with open(CACM / "corpus.jsonl") as src, open(coll / "docs.jsonl", "w") as dst:
        for line in src:
            doc = json.loads(line)
            dst.write(json.dumps({"id": doc["_id"], "contents": f"{doc.get('title', '')} {doc['text']}"}) + "\n")
    index = root / "index"
    proc = subprocess.run([sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonCollection",
                           "--input", str(coll), "--index", str(index), "--generator",
                           "DefaultLuceneDocumentGenerator", "--threads", "2", "--storeRaw"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]

    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(index))
    searcher.set_bm25(k1=0.9, b=0.4)
    with open(CACM / "queries.jsonl") as f:
        queries = [json.loads(line) for line in f]
    qids = [q["_id"] for q in queries]
    results = searcher.batch_search([q["text"] for q in queries], qids, k=1000, threads=2)
    return write_trec_run({qid: results[qid] for qid in qids}, root / "run.bm25.txt", tag="bm25"), qids


def test_cacm_bm25_reference_numbers(cacm_bm25_run):
    run_path, qids = cacm_bm25_run
    run = read_trec_run(run_path)
    assert list(run) == [q for q in qids if q in run]  # query order preserved
    assert all(len(hits) <= 1000 for hits in run.values())
    metrics = evaluate_run(CACM / "qrels" / "test.tsv", run_path)
    assert list(metrics) == ["nDCG@10", "MAP", "R@100", "R@1000"]
    # corrected judgements (zero-padded ids, 2026-12); the unpadded ones gave MAP 0.3336, nDCG@10 0.4740
    assert metrics["MAP"] == pytest.approx(0.3470, abs=1e-3)
    assert metrics["nDCG@10"] == pytest.approx(0.4801, abs=1e-3)
    assert metrics["R@1000"] == pytest.approx(0.9310, abs=1e-3)
    out = run_path.parent / "metrics.json"
    write_metrics({"BM25": metrics}, out)
    assert "| BM25 | 0.4801 |" in format_table(read_metrics(out))
