"""significance.py and the significance columns of eval.trec_eval.write_report: scipy's paired tests against BM25,
topics better/worse, peers marked, on TREC runs built from the packaged CACM judgements (no index needed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from diffret_pyserini.datasets import load_qrels
from diffret_pyserini.eval.per_query import paired_test, randomization_p, t_test_p
from diffret_pyserini.eval.runs import write_trec_run
from diffret_pyserini.eval.significance import compare_to_baseline, row_cells, row_kind
from diffret_pyserini.eval.trec_eval import evaluate_per_query, format_table, plot_metrics, read_metrics, write_report

QRELS = Path(__file__).resolve().parents[1] / "diffret_pyserini" / "data" / "cacm" / "qrels" / "test.tsv"


def test_t_test_is_scipys_ttest_rel():
    a = {"1": 0.5, "2": 0.2, "3": 0.9, "4": 0.4}
    b = {"1": 0.4, "2": 0.2, "3": 0.6, "4": 0.5}
    xs, ys = list(a.values()), list(b.values())
    assert t_test_p(xs, ys) == pytest.approx(stats.ttest_rel(xs, ys).pvalue, rel=1e-12)
    sig = paired_test(a, b)
    assert (sig.wins, sig.losses) == (2, 1)  # q2 ties
    assert sig.delta == pytest.approx(0.175 - 0.1)  # (0.1 + 0 + 0.3 - 0.1) / 4
    assert sig.p_t == pytest.approx(stats.ttest_rel(xs, ys).pvalue)


def test_randomisation_p_by_hand():
    same = [0.3, 0.5, 0.1, 0.9]
    assert randomization_p(same, same) == 1.0
    # better by a constant on all 12 topics: 2**12 = 4096 <= 10,000 sign patterns, so scipy enumerates them all;
    # only the all-plus and all-minus patterns reach |mean| = 0.1, so p = 2 / 4096 exactly
    a, b = [0.2 + 0.1] * 12, [0.2] * 12
    assert randomization_p(a, b) == pytest.approx(2 / 4096)
    assert randomization_p(a, b) < 0.01
    # 20 topics (2**20 patterns > 10,000): Monte Carlo, seeded, so the same p on every call; different seeds differ
    rng = [0.1 * (i % 7) for i in range(20)]
    other = [x + (0.05 if i % 3 else -0.04) for i, x in enumerate(rng)]
    assert randomization_p(rng, other, seed=0) == randomization_p(rng, other, seed=0)
    assert 0 < randomization_p(rng, other) < 1


def test_compare_to_baseline_counts_and_kinds():
    per_query = {"bm25": {"1": 0.5, "2": 0.5, "3": 0.5}, "sparse": {"1": 0.7, "2": 0.5, "3": 0.1},
                 "peer-x": {"1": 0.5, "2": 0.5, "3": 0.5}}
    c = compare_to_baseline(per_query, "bm25")
    assert list(c.rows) == ["sparse", "peer-x"] and c.topics == 3
    assert (c.rows["sparse"].wins, c.rows["sparse"].losses, c.ties("sparse")) == (1, 1, 1)
    assert row_cells(c, "bm25") == ["—"] * 4
    assert row_cells(c, "peer-x") == ["+0.0000", "1.0000", "1.0000", "0/0"]
    assert row_cells(c, "not-run") == ["-"] * 4
    assert [row_kind(r) for r in ("bm25", "sparse", "peer-minilm", "ft-peer-x", "ft-sparse")] == [
        "baseline", "ours", "peer", "peer", "ours"]
    with pytest.raises(KeyError, match="baseline row 'bm25'"):
        compare_to_baseline({"sparse": {}}, "bm25")


def test_format_table_marks_peers_without_significance():
    table = format_table({"bm25": {"MAP": 0.3}, "peer-x": {"MAP": 0.2}, "sparse": {"MAP": 0.1}})
    assert table == ("| System | Kind | MAP |\n|---|---|---:|\n| bm25 | baseline | 0.3000 |\n"
                     "| peer-x | peer | 0.2000 |\n| sparse | ours | 0.1000 |\n")


@pytest.fixture(scope="module")
def cacm_runs(tmp_path_factory):
    """Three TREC runs from the CACM judgements: `perfect` ranks every topic's relevant documents first
    (nDCG@10 = 1); `bm25` is perfect but answers the first 10 topics with an unjudged document (0 there);
    `sparse` is perfect but for the last topic."""
    root = tmp_path_factory.mktemp("signif")
    qrels = load_qrels(QRELS)
    qids = list(qrels)
    perfect = {q: [(d, 1.0 / (r + 1)) for r, d in enumerate(sorted(judged, key=lambda d: -judged[d]))]
               for q, judged in qrels.items()}
    junk = [("unjudged-doc", 1.0)]
    runs = {"bm25": {q: junk if i < 10 else hits for i, (q, hits) in enumerate(perfect.items())},
            "sparse": {q: junk if q == qids[-1] else hits for q, hits in perfect.items()}}
    runs["peer-x"] = runs["bm25"]
    paths = {row: write_trec_run(run, root / f"{row}.trec", tag=row) for row, run in runs.items()}
    return root, paths, qids


def test_write_report_significance_on_cacm(cacm_runs):
    root, paths, qids = cacm_runs
    n = len(qids)
    assert n == 52
    per_query = evaluate_per_query(QRELS, paths)
    bm25 = [0.0] * 10 + [1.0] * (n - 10)
    sparse = [1.0] * (n - 1) + [0.0]
    assert [per_query["bm25"][q] for q in qids] == pytest.approx(bm25)
    assert [per_query["sparse"][q] for q in qids] == pytest.approx(sparse)
    metrics = {"bm25": {"nDCG@10": sum(bm25) / n}, "sparse": {"nDCG@10": sum(sparse) / n},
               "peer-x": {"nDCG@10": sum(bm25) / n}, "dense": {"nDCG@10": 0.0}}  # dense: no run given
    out = root / "report"
    out.mkdir()
    table = write_report(metrics, out, "CACM", runs=paths, qrels_path=QRELS)
    assert (out / "metrics.md").read_text() == table + "\n"
    lines = table.splitlines()
    assert lines[0] == "| System | Kind | nDCG@10 | Δ nDCG@10 vs bm25 | p (t) | p (rand.) | better/worse |"
    assert lines[2] == f"| bm25 | baseline | {42 / 52:.4f} | — | — | — | — |"
    # sparse: 10 topics better (+1 each), 1 worse (-1): delta 9/52; exact randomisation p would be
    # 2 * 12 / 2**11 = 0.0117 (only the 11 nonzero differences matter), Monte Carlo close to it
    p_t = stats.ttest_rel(sparse, bm25).pvalue
    order = list(per_query["sparse"])  # the report pairs the topics in trec_eval's order; Monte Carlo p follows it
    p_rand = randomization_p([per_query["sparse"][q] for q in order], [per_query["bm25"][q] for q in order])
    assert p_rand == pytest.approx(24 / 2048, abs=0.004)
    assert lines[3] == f"| sparse | ours | {51 / 52:.4f} | +{9 / 52:.4f} | {p_t:.4f} | {p_rand:.4f} | 10/1 |"
    assert lines[4] == f"| peer-x | peer | {42 / 52:.4f} | +0.0000 | 1.0000 | 1.0000 | 0/0 |"
    assert lines[5] == "| dense | ours | 0.0000 | - | - | - | - |"
    assert lines[6] == ""
    assert "on 52 judged topics" in lines[7] and "scipy.stats.ttest_rel" in lines[7]
    assert "scipy.stats.permutation_test, 10,000 resamples, seed 0" in lines[7]
    assert read_metrics(out / "metrics.json") == metrics  # the old shape: existing readers keep working
    sig = json.loads((out / "significance.json").read_text())
    assert sig["baseline"] == "bm25" and sig["metric"] == "nDCG@10" and sig["topics"] == 52
    assert sig["rows"]["sparse"] == pytest.approx({
        "kind": "ours", "mean": 51 / 52, "baseline_mean": 42 / 52, "delta": 9 / 52, "p_t": p_t,
        "p_randomization": p_rand, "better": 10, "worse": 1, "ties": 41, "topics": 52})
    assert list(sig["rows"]) == ["sparse", "peer-x"]
    # again without runs (or with the baseline's run only): no significance columns, and no stale
    # significance.json left to disagree with the table
    assert "p (t)" not in write_report(metrics, out, "CACM")
    assert not (out / "significance.json").exists()
    assert "p (t)" not in write_report(metrics, out, "CACM", runs={"bm25": paths["bm25"]}, qrels_path=QRELS)


def test_evaluate_per_query_takes_an_empty_run(cacm_runs, tmp_path):
    _, paths, qids = cacm_runs
    (tmp_path / "empty.trec").write_text("")
    got = evaluate_per_query(QRELS, {"empty": tmp_path / "empty.trec"})
    assert got == {"empty": {q: 0.0 for q in qids}}
    got = evaluate_per_query(QRELS, {"empty": tmp_path / "empty.trec", "bm25": paths["bm25"]})
    assert sum(got["bm25"].values()) == pytest.approx(42) and set(got["empty"].values()) == {0.0}


def test_plot_draws_peers_grey(tmp_path):
    from matplotlib.image import imread

    metrics = {"bm25": {"MAP": 0.3}, "sparse": {"MAP": 0.4}, "ft-sparse": {"MAP": 0.5}}
    grey = (0.72, 0.72, 0.72)

    def peer_grey_pixels(png) -> int:
        pixels = imread(png)[..., :3]
        return int((abs(pixels - grey) < 0.01).all(axis=-1).sum())

    few = peer_grey_pixels(plot_metrics(metrics, tmp_path / "ours.png"))  # anti-aliased edges only
    assert peer_grey_pixels(plot_metrics({**metrics, "peer-x": {"MAP": 0.2}}, tmp_path / "peers.png")) > few + 500
