"""search/fusion.py: nDCG@10 and the alpha grid search, on runs checked by hand; and nDCG against trec_eval."""
import math

import pytest

from diffret_pyserini.search.fusion import ALPHA_GRID, choose_alpha, mean_ndcg, ndcg_at_k


def test_ndcg_at_k_by_hand():
    # one relevant document at rank 3: 1/log2(4) = 0.5
    assert ndcg_at_k(["a", "b", "r"], {"r": 1}) == pytest.approx(0.5)
    # grades 2 and 1 found at ranks 2 and 1: dcg = 1/1 + 2/log2(3); ideal = 2/1 + 1/log2(3)
    assert ndcg_at_k(["x", "y"], {"x": 1, "y": 2}) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert ndcg_at_k(["a"] * 0 + [f"d{i}" for i in range(10)] + ["r"], {"r": 1}) == 0.0  # rank 11: past the cut
    assert ndcg_at_k(["a"], {"a": 0, "b": -1}) == 0.0  # nothing relevant
    assert ndcg_at_k(["n", "r"], {"n": -1, "r": 1}) == pytest.approx(1 / math.log2(3))  # negative grade = 0


def test_mean_ndcg_counts_an_unanswered_query_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}  # q3 has no relevant document: not counted
    assert mean_ndcg({"q1": [("a", 3.0)]}, qrels) == pytest.approx(0.5)


def test_choose_alpha_finds_the_weight_where_each_side_fixes_the_other():
    # q1: the sparse side is right (r1 first), dense puts it third; q2: dense is right, sparse puts r2 last.
    sparse = {"q1": [("r1", 10.0), ("x", 9.0), ("y", 0.0)], "q2": [("x", 5.0), ("y", 4.9), ("r2", 0.0)]}
    dense = {"q1": [("x", 1.0), ("y", 0.9), ("r1", 0.0)], "q2": [("r2", 1.0), ("y", 0.5), ("x", 0.0)]}
    qrels = {"q1": {"r1": 1}, "q2": {"r2": 1}}
    alpha, scores = choose_alpha(dense, sparse, qrels)
    assert set(scores) == set(ALPHA_GRID)
    # min-max, q1: r1 = a, x = 0.9a + (1 - a), y = 0.9(1 - a): r1 is never first (a > 0.91), second from
    # a = 0.5 (a > 0.474). q2: r2 = 1 - a, x = a, y = 0.98a + 0.5(1 - a): r2 first while a < 0.338.
    # a <= 0.3: q1 0.5 (third), q2 1.0 -> 0.75; a = 0.5: both second -> 1/log2(3) = 0.631 (r2 ties x, the
    # docid breaks it); a >= 0.6: q1 0.631, q2 third 0.5 -> 0.565. Best 0.75, and 0.3 is nearest 0.5.
    assert scores[0.1] == scores[0.3] == pytest.approx(0.75)
    assert scores[0.5] == pytest.approx(1 / math.log2(3), abs=1e-6)
    assert scores[0.7] == pytest.approx((0.5 + 1 / math.log2(3)) / 2, abs=1e-6)
    assert alpha == 0.3


def test_choose_alpha_prefers_equal_weights_on_a_tie():
    run = {"q": [("r", 1.0), ("x", 0.0)]}
    alpha, scores = choose_alpha(run, run, {"q": {"r": 1}})
    assert alpha == 0.5 and set(scores.values()) == {1.0}


def test_mean_ndcg_equals_trec_eval(tmp_path):
    from diffret_pyserini.eval.runs import write_trec_run
    from diffret_pyserini.eval.trec_eval import evaluate_run

    qrels = {"1": {"d1": 2, "d3": 1, "d9": 0}, "2": {"d2": 1}, "3": {"d7": 1, "d8": 1}}
    run = {"1": [("d3", 3.0), ("d5", 2.0), ("d1", 1.0)], "2": [("d4", 1.0), ("d6", 0.5)],
           "3": [("d8", 2.0), ("d0", 1.5), ("d7", 1.0)]}
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 {d} {g}\n" for q, j in qrels.items() for d, g in j.items()))
    path = write_trec_run(run, tmp_path / "run.trec", tag="t", k=10)
    assert mean_ndcg(run, qrels) == pytest.approx(evaluate_run(tmp_path / "qrels.txt", path)["nDCG@10"], abs=1e-4)
