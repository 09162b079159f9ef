"""The per-query oracle and significance on hand-made tables, the selectors' rules by hand, and adaptive Kq on
a collection without qrels (deterministic, label-free)."""
import json
from dataclasses import replace

import pytest

from diffret_pyserini.budget.select import argmax_k, compose_run, fuse_rrf, select_agree, select_nqc, select_slot
from diffret_pyserini.budget.signals import nqc
from diffret_pyserini.eval.per_query import best_fixed, oracle, paired_test, randomization_p, restrict

# nDCG@10 per query of three (Kq, Kp) cells, made up by hand
TABLE = {(1, 1): {"a": 0.2, "b": 0.5, "c": 0.0},
         (1, 4): {"a": 0.4, "b": 0.1, "c": 0.0},
         (4, 4): {"a": 0.3, "b": 0.3, "c": 0.6}}


def test_best_fixed_cell_and_oracle_over_the_grid_by_hand():
    assert best_fixed(TABLE) == ((4, 4), pytest.approx(0.4))  # means 0.2333, 0.1667, 0.4
    o = oracle(TABLE)
    # a -> (1,4) 0.4, b -> (1,1) 0.5, c -> (4,4) 0.6: mean 0.5, gap 0.1 over (4,4)
    assert o.choice == {"a": (1, 4), "b": (1, 1), "c": (4, 4)}
    assert o.mean == pytest.approx(0.5) and o.gap == pytest.approx(0.1)
    assert [(q, round(g, 6)) for q, g in o.helped] == [("b", 0.2), ("a", 0.1)]


def test_oracle_over_kq_at_fixed_kp_and_over_kp_at_fixed_kq_by_hand():
    at_kp4 = oracle(restrict(TABLE, lambda cell: cell[1] == 4))
    assert at_kp4.reference == (4, 4)
    assert at_kp4.mean == pytest.approx((0.4 + 0.3 + 0.6) / 3)  # a from Kq=1 (0.4), b and c from Kq=4
    assert at_kp4.choice == {"a": (1, 4), "b": (4, 4), "c": (4, 4)}
    at_kq1 = oracle(restrict(TABLE, lambda cell: cell[0] == 1))
    assert at_kq1.reference == (1, 1) and at_kq1.mean == pytest.approx((0.4 + 0.5 + 0.0) / 3)
    assert at_kq1.helped == [("a", pytest.approx(0.2))]


def test_ties_go_to_the_earlier_cell():
    tied = {(1, 1): {"q": 0.5}, (2, 1): {"q": 0.5}}
    assert oracle(tied).choice == {"q": (1, 1)} and oracle(tied).helped == []
    assert best_fixed(tied)[0] == (1, 1)


def test_oracle_uses_only_the_queries_every_cell_has():
    ragged = {(1, 1): {"a": 1.0, "b": 0.0}, (2, 1): {"a": 0.0}}
    assert oracle(ragged).mean == 1.0 and list(oracle(ragged).choice) == ["a"]


def test_paired_significance():
    a = {str(i): 0.5 + (0.1 if i % 2 else 0.2) for i in range(30)}
    b = {str(i): 0.5 for i in range(30)}
    sig = paired_test(a, b)
    assert (sig.wins, sig.losses) == (30, 0) and sig.delta == pytest.approx(0.15)
    assert sig.p_randomization < 0.001 and sig.p_t < 1e-10
    assert paired_test(b, b).p_randomization == 1.0 and paired_test(b, b).p_t == 1.0
    # all-or-nothing by hand: 2 queries, differences +1 and +1; 4 sign patterns, 2 reach |sum| = 2 -> p ~ 0.5
    assert randomization_p([1, 1], [0, 0], trials=20_000) == pytest.approx(0.5, abs=0.02)
    assert randomization_p([1, 1], [0, 0], seed=3) == randomization_p([1, 1], [0, 0], seed=3)


def test_selector_rules_by_hand():
    signals = {1: {"q": {"distinct": 1.0}, "r": {"distinct": 1.0}},
               2: {"q": {"distinct": 2.0}, "r": {"distinct": 1.0}},
               4: {"q": {"distinct": 2.0}, "r": {"distinct": 0.0}}}
    assert select_slot(signals) == {"q": 2, "r": 1}  # the smallest K reaching the most distinct predictions
    assert nqc([("d1", 3.0), ("d2", 1.0)]) == pytest.approx(0.5)  # std 1 / mean 2
    runs = {1: {"q": [("a", 3.0), ("b", 1.0)]}, 4: {"q": [("c", 10.0), ("a", 9.0)]}}
    assert select_nqc(runs) == {"q": 1}  # spread 0.5 against 1/19
    assert argmax_k({1: 0.3, 4: 0.3, 2: 0.1}) == 1
    assert select_agree(runs) == {"q": 1}  # both agree 1/10 with the other: the smaller K
    assert compose_run(runs, {"q": 4}) == {"q": [("c", 10.0), ("a", 9.0)]}
    fused = fuse_rrf(runs, k0=60)
    assert [d for d, _ in fused["q"]] == ["a", "c", "b"]
    assert fused["q"][0][1] == pytest.approx(1 / 61 + 1 / 62)


@pytest.fixture(scope="module")
def unjudged(tmp_path_factory):
    """A titled collection (30 CACM documents with a text) and 4 queries, and NO qrels."""
    from diffret_pyserini.datasets import iter_corpus, resolve_dataset

    root = tmp_path_factory.mktemp("unjudged")
    docs = [d for d in iter_corpus(resolve_dataset("cacm").corpus_path) if len(d.text.split()) >= 20][:30]
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": d.docid, "title": d.title, "text": d.text}) + "\n" for d in docs))
    queries = {"1": "parallel computation of matrix algorithms", "2": "compilers for algebraic languages",
               "3": "sorting", "4": "storage allocation in list processing systems"}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    return root


def test_selectors_are_deterministic_and_need_no_qrels(unjudged, tmp_path):
    from numeric_collection import args_for

    from diffret_pyserini.budget import METHODS
    from diffret_pyserini.datasets import load_queries, resolve_dataset
    from diffret_pyserini.pipeline.adaptive_k import gather, select, train_learned

    dataset = resolve_dataset(unjudged)
    assert dataset.qrels_path is None
    args = replace(args_for(tmp_path, unjudged), hits=20)
    topics = load_queries(dataset.queries_path)
    bm25 = tmp_path / "no-bm25"  # sparse and dense never open the BM25 index
    chosen = []
    for _ in range(2):
        g = gather(dataset, args, topics, "splade-tiny", [1, 2], 1, ["sparse", "dense"], bm25, "", tmp_path / "runs")
        selectors = train_learned(dataset, args, "splade-tiny", [1, 2], 1, ["sparse", "dense"], bm25, "",
                                  tmp_path / "runs")
        chosen.append({(m, s): select(m, g, s, selectors.get(s)) for m in METHODS for s in ("sparse", "dense")})
    assert chosen[0] == chosen[1]
    for (method, system), (run, choice) in chosen[0].items():
        assert set(run) <= set(topics) and len(run) >= 3  # '3' ("sorting") may match no document at all
        assert choice is None if method == "fuse" else set(choice.values()) <= {1, 2} and set(run) <= set(choice)
