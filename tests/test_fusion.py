"""maxsim_scoring.py and fusion.py on numbers checked by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffret_pyserini.search import maxsim_scoring
from diffret_pyserini.search.fusion import center_normalize, fuse, fuse_pyserini, min_max_normalize, sort_scores
from diffret_pyserini.search.maxsim_scoring import maxsim, maxsim_segments

Q = np.array([[1.0, 0.0], [0.0, 1.0]])
D = np.array([[0.6, 0.8], [-1.0, 0.0]])


def test_maxsim_2x2_by_hand():
    # q1: max(0.6, -1) = 0.6 ; q2: max(0.8, 0) = 0.8 -> 1.4
    assert maxsim(Q, D) == pytest.approx(1.4)


def test_maxsim_clamps_each_query_vector_at_zero():
    # q1 . d = -0.6 -> clamped to 0 ; q2 . d = 0.8
    assert maxsim(Q, np.array([[-0.6, 0.8]])) == pytest.approx(0.8)
    assert maxsim(np.array([[1.0, 0.0]]), np.array([[-0.6, -0.8]])) == 0.0


def test_maxsim_masks():
    # without d1 only d2 = [-1, 0] is left: q1 -> -1 -> 0, q2 -> 0 ; total 0
    assert maxsim(Q, D, doc_mask=[False, True]) == 0.0
    # only q2 counts: 0.8
    assert maxsim(Q, D, query_mask=[0, 1]) == pytest.approx(0.8)
    assert maxsim(Q, D, doc_mask=[False, False]) == 0.0


def test_maxsim_accepts_torch():
    assert maxsim(torch.tensor(Q), torch.tensor(D, dtype=torch.bfloat16)) == pytest.approx(1.4, abs=1e-2)


def _random_store(rng, n_docs=40, h=8, max_len=5, dtype=np.float32):
    lens = rng.integers(0, max_len + 1, n_docs)  # includes empty docs
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    vecs = rng.standard_normal((int(offsets[-1]), h)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs.astype(dtype), offsets


def test_maxsim_segments_matches_pairwise(monkeypatch):
    rng = np.random.default_rng(1)
    vecs, offsets = _random_store(rng)
    q = rng.standard_normal((3, 8)).astype(np.float32)
    expected = np.array([maxsim(q, vecs[offsets[i]:offsets[i + 1]]) if offsets[i + 1] > offsets[i] else 0.0
                         for i in range(len(offsets) - 1)])
    np.testing.assert_allclose(maxsim_segments(q, vecs, offsets), expected, rtol=1e-5, atol=1e-6)
    # tiny blocks: documents must never be split across blocks
    monkeypatch.setattr(maxsim_scoring, "_BLOCK_ROWS", 7)
    np.testing.assert_allclose(maxsim_segments(q, vecs, offsets), expected, rtol=1e-5, atol=1e-6)
    docs = np.array([5, 0, 17, 17, 39])  # unsorted, repeated
    np.testing.assert_allclose(maxsim_segments(q, vecs, offsets, docs), expected[docs], rtol=1e-5, atol=1e-6)
    mask = np.array([True, False, True])
    np.testing.assert_allclose(maxsim_segments(q, vecs, offsets, docs, query_mask=mask),
                               [maxsim(q[mask], vecs[offsets[d]:offsets[d + 1]]) for d in docs], atol=1e-6)
    assert maxsim_segments(q, vecs, offsets, np.array([], dtype=np.int64)).shape == (0,)


def test_maxsim_segments_float16_store():
    rng = np.random.default_rng(2)
    vecs, offsets = _random_store(rng, dtype=np.float16)
    q = rng.standard_normal((2, 8)).astype(np.float32)
    got = maxsim_segments(q, vecs, offsets)
    ref = maxsim_segments(q, vecs.astype(np.float32), offsets)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_min_max_by_hand():
    assert min_max_normalize({"a": 3.0, "b": 1.0, "c": 2.0}) == {"a": 1.0, "b": 0.0, "c": 0.5}


def test_min_max_degenerate():
    assert min_max_normalize({"only": 7.5}) == {"only": 1.0}
    assert min_max_normalize({"a": 2.0, "b": 2.0}) == {"a": 1.0, "b": 1.0}
    assert min_max_normalize({}) == {}


def test_center_normalize_is_pyserinis_formula_made_safe():
    # (s - (min + max) / 2) / (max - min) with min 1, max 3
    assert center_normalize({"a": 3.0, "b": 1.0, "c": 2.0}) == {"a": 0.5, "b": -0.5, "c": 0.0}
    assert center_normalize({"only": 4.0}) == {"only": 0.0}


DENSE = {"a": 0.9, "b": 0.5, "c": 0.7}   # min-max: a 1, b 0, c 0.5
SPARSE = {"a": 10.0, "d": 20.0}           # min-max: a 0, d 1


def test_fuse_equal_weights_missing_side_zero():
    # a: .5*0 + .5*1 = .5 ; b: 0 ; c: .5*.5 = .25 ; d: .5*1 + .5*0 (missing dense) = .5 ; a/d tie -> docid order
    got = fuse(DENSE, SPARSE)
    assert [d for d, _ in got] == ["a", "d", "c", "b"]
    assert [s for _, s in got] == pytest.approx([0.5, 0.5, 0.25, 0.0])


def test_fuse_alpha_is_sparse_weight():
    got = dict(fuse(DENSE, SPARSE, alpha=0.8))
    assert got == pytest.approx({"a": 0.2, "b": 0.0, "c": 0.1, "d": 0.8})
    assert [d for d, _ in fuse(DENSE, SPARSE, alpha=0.8, k=2)] == ["d", "a"]


def test_fuse_single_sparse_hit_gets_full_weight():
    # sparse side {"a": 6} normalises to 1 (not 0/0): a = .5 + .5*1 = 1.0 ; c = .25 ; b = 0
    assert fuse(DENSE, {"a": 6.0}) == [("a", pytest.approx(1.0)), ("c", pytest.approx(0.25)), ("b", 0.0)]


def test_fuse_options_and_inputs():
    class Hit:
        def __init__(self, docid, score):
            self.docid, self.score = docid, score

    raw = dict(fuse([Hit("a", 2.0), Hit("b", 1.0)], [("a", 4.0)], normalization="none"))
    assert raw == pytest.approx({"a": 3.0, "b": 0.5})  # .5*4 + .5*2 ; .5*0 + .5*1
    # missing='min': b gets sparse min = 0 after min-max anyway; with raw scores it gets 4
    assert dict(fuse({"a": 2.0, "b": 1.0}, {"a": 4.0}, normalization="none", missing="min")) == \
        pytest.approx({"a": 3.0, "b": 2.5})
    assert fuse({}, {}) == []
    with pytest.raises(ValueError):
        fuse(DENSE, SPARSE, normalization="zscore")


def test_fuse_pyserini_by_hand():
    # no normalisation: alpha*sparse + dense, missing side = that side's min (dense min .5, sparse min 10)
    got = dict(fuse_pyserini(DENSE, SPARSE, alpha=0.1))
    assert got == pytest.approx({"a": 1.0 + 0.9, "b": 1.0 + 0.5, "c": 1.0 + 0.7, "d": 2.0 + 0.5})
    on_dense = dict(fuse_pyserini(DENSE, SPARSE, alpha=0.1, weight_on_dense=True))
    assert on_dense["d"] == pytest.approx(20.0 + 0.05)
    # normalised with a single sparse hit: Pyserini divides by zero; we use the centre 0 for that side
    single = dict(fuse_pyserini(DENSE, {"a": 6.0}, alpha=0.1, normalization=True))
    assert single == pytest.approx({"a": 0.5, "b": -0.5, "c": 0.0})


def test_sort_scores_tie_break():
    assert sort_scores({"b": 1.0, "a": 1.0, "c": 2.0}) == [("c", 2.0), ("a", 1.0), ("b", 1.0)]


def test_fuse_sides_sums_min_max_normalised_sides_by_weight():
    from diffret_pyserini.search.fusion import fuse_sides

    a = {"d1": 10.0, "d2": 6.0, "d3": 2.0}          # -> 1, 0.5, 0
    b = [("d2", 0.9), ("d4", 0.3)]                  # -> d2 1, d4 0
    c = {"d3": 5.0}                                 # one hit -> 1
    # equal weights: d1 1/3, d2 (0.5 + 1) / 3 = 0.5, d3 (0 + 1) / 3, d4 0
    fused = fuse_sides([a, b, c])
    assert [d for d, _ in fused] == ["d2", "d1", "d3", "d4"]
    assert [round(s, 6) for _, s in fused] == [0.5, 0.333333, 0.333333, 0.0]
    # two sides at (alpha, 1 - alpha) are fuse(dense=second, sparse=first, alpha)
    assert [(d, round(v, 9)) for d, v in fuse_sides([a, b], [0.7, 0.3])] == \
        [(d, round(v, 9)) for d, v in fuse(b, a, alpha=0.7)] == [("d1", 0.7), ("d2", 0.65), ("d3", 0.0), ("d4", 0.0)]
    assert fuse_sides([a, b], [0.7, 0.3], k=1) == [("d1", 0.7)]
    with pytest.raises(ValueError, match="2 weights for 3 sides"):
        fuse_sides([a, b, c], [0.5, 0.5])


def test_ensemble_run_fuses_each_query_of_several_runs_at_equal_weights():
    from diffret_pyserini.search.fusion import ensemble_run

    lm = {"q1": [("d1", 3.0), ("d2", 1.0)], "q2": [("d5", 2.0), ("d6", 1.0)]}
    sentences = {"q1": [("d2", 8.0), ("d3", 4.0)]}  # q2 missing: its side is empty
    out = ensemble_run([lm, sentences], ["q1", "q2", "q3"], depth=2)
    assert out["q1"] == [("d1", 0.5), ("d2", 0.5)]  # d1 (1 + 0) / 2, d2 (0 + 1) / 2 (tie: by docid), d3 0 cut
    assert out["q2"] == [("d5", 0.5), ("d6", 0.0)]
    assert out["q3"] == []
