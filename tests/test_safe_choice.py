"""search/fusion.py: the bootstrap interval and the safe choice (an option other than the anchor only on a sure
dev gain), on values and runs checked by hand."""
import pytest

from diffret_pyserini.search.fusion import alpha_curves, bootstrap_interval, choose_alpha, choose_safely


def test_bootstrap_interval_of_equal_values_is_that_value():
    assert bootstrap_interval([0.25] * 7) == (0.25, 0.25)
    assert bootstrap_interval([]) == (0.0, 0.0)


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    values = [0.0, 1.0] * 50  # mean 0.5, standard error 0.05: a 90% interval about 0.5 +- 0.08
    lo, hi = bootstrap_interval(values, confidence=0.9)
    assert 0.40 < lo < 0.45 and 0.55 < hi < 0.60
    assert bootstrap_interval(values, confidence=0.9) == (lo, hi)
    wider = bootstrap_interval(values, confidence=0.99)
    assert wider[0] < lo and wider[1] > hi


def test_a_gain_on_every_query_is_sure():
    anchor = {f"q{i}": 0.5 for i in range(30)}
    better = {q: v + 0.1 for q, v in anchor.items()}
    choice = choose_safely({0.9: anchor, 0.5: better}, anchor=0.9)
    assert choice.chosen == 0.5 and choice.gains[0.5] == pytest.approx((0.1, 0.1, 0.1))
    assert choice.means == pytest.approx({0.9: 0.5, 0.5: 0.6}) and choice.queries == 30
    assert choice.why.startswith("0.5 over 0.9: gain +0.1000")


def test_a_gain_carried_by_one_query_is_not_sure():
    # 0.5 wins on dev on average (+0.6 on one query, -0.01 on 19): mean +0.0205, but one resampling in
    # e^-1 or so leaves that query out, so the lower end of the interval is below zero.
    anchor = {f"q{i}": 0.5 for i in range(20)}
    lucky = {q: (1.0 if q == "q0" else 0.49) + (0.1 if q == "q0" else 0) for q, v in anchor.items()}
    choice = choose_safely({0.9: anchor, 0.5: lucky}, anchor=0.9)
    assert choice.means[0.5] > choice.means[0.9]
    assert choice.gains[0.5][1] < 0 < choice.gains[0.5][2]
    assert choice.chosen == 0.9 and choice.why.startswith("kept 0.9: no option's gain is sure (0.5 best on dev")


def test_three_dev_queries_are_too_few_to_move():
    # gains +0.3, -0.1, +0.2 (mean +0.133): a resample of three is all -0.1 or two -0.1 and one +0.2 with
    # probability 4/27 = 15% > 5%, so the 5th percentile of the resampled means is 0 (give or take rounding,
    # which must not count as a gain): the anchor stays.
    anchor = {"a": 0.2, "b": 0.5, "c": 0.3}
    other = {"a": 0.5, "b": 0.4, "c": 0.5}
    choice = choose_safely({1.0: anchor, 0.7: other}, anchor=1.0)
    assert choice.gains[0.7][0] == pytest.approx(0.4 / 3) and choice.gains[0.7][1] == pytest.approx(0, abs=1e-12)
    assert choice.chosen == 1.0


def test_the_surest_gain_wins_not_the_largest():
    anchor = {f"q{i}": 0.5 for i in range(40)}
    steady = {q: v + 0.02 for q, v in anchor.items()}                     # +0.02 everywhere
    bold = {q: v + (0.2 if i % 2 else -0.1) for i, (q, v) in enumerate(anchor.items())}  # +0.05, noisy
    choice = choose_safely({0.9: anchor, 0.7: steady, 0.3: bold}, anchor=0.9)
    assert choice.gains[0.3][0] > choice.gains[0.7][0] and choice.gains[0.3][1] > 0  # both sure
    assert choice.chosen == 0.7  # 0.3's lower end (+0.05 - 1.645 x 0.024) is below 0.7's +0.02


def test_the_anchor_must_be_an_option():
    with pytest.raises(ValueError, match="anchor"):
        choose_safely({0.5: {"q": 1.0}}, anchor=0.9)


def hand_made_runs(n_lucky: int, n_plain: int):
    """BM25 (sparse seat) and one of our systems (dense seat) for n_lucky + n_plain dev queries, each with one
    relevant document r; a and b are not relevant (a score tie goes to the smaller docid, so never to r).

    With alpha a on BM25, min-max per query:
    lucky: BM25 a 1, b 0.75, r 0; ours r 1, b 0.2, a 0 -> r 1 - a, a a, b 0.2 + 0.55a: r first below 0.5,
           second at 0.5, third from 0.52 (nDCG 1, 0.631, 0.5);
    plain: BM25 r 1, a 0.967, b 0; ours a 1, b 0.5, r 0 -> r a, a 1 - 0.033a, b 0.5(1 - a): r first above
           0.968, second from 1/3, third below (nDCG 1, 0.631, 0.5).
    Against alpha 1.0 (BM25's order), alpha 0.3 gains 0.5 on a lucky query and loses 0.5 on a plain one."""
    bm25, ours, qrels = {}, {}, {}
    for i in range(n_lucky):
        q = f"lucky{i}"
        bm25[q] = [("a", 3.0), ("b", 2.5), ("r", 1.0)]
        ours[q] = [("r", 1.0), ("b", 0.2), ("a", 0.0)]
        qrels[q] = {"r": 1}
    for i in range(n_plain):
        q = f"plain{i}"
        bm25[q] = [("r", 3.0), ("a", 2.9), ("b", 0.0)]
        ours[q] = [("a", 1.0), ("b", 0.5), ("r", 0.0)]
        qrels[q] = {"r": 1}
    return ours, bm25, qrels


GRID = (0.3, 0.5, 0.7, 0.9, 1.0)


def test_hand_made_runs_score_as_worked_out():
    ours, bm25, qrels = hand_made_runs(n_lucky=1, n_plain=1)
    curves = alpha_curves(ours, bm25, qrels, GRID)
    second = pytest.approx(1 / 1.5849625, abs=1e-6)
    assert curves[0.3] == {"lucky0": 1.0, "plain0": 0.5}
    assert curves[0.5] == {"lucky0": second, "plain0": second}
    assert curves[0.7] == curves[0.9] == {"lucky0": 0.5, "plain0": second}
    assert curves[1.0] == {"lucky0": 0.5, "plain0": 1.0}


def test_weak_dev_evidence_keeps_bm25_dominant_weights():
    # 2 lucky and 1 plain dev query: alpha 0.3 scores (1 + 1 + 0.5) / 3 = 0.833 against 0.667 at 1.0, and the
    # argmax takes it; but a resample of three draws at most one lucky query with probability 7/27 = 26%, so
    # the gain's 90% interval reaches below zero: the safe choice keeps BM25's side.
    ours, bm25, qrels = hand_made_runs(n_lucky=2, n_plain=1)
    assert choose_alpha(ours, bm25, qrels, grid=GRID)[0] == 0.3
    choice = choose_safely(alpha_curves(ours, bm25, qrels, GRID), anchor=1.0)
    assert choice.chosen == 1.0 and choice.gains[0.3][0] == pytest.approx(1 / 6) and choice.gains[0.3][1] <= 0
    # the same proportions on 60 queries are strong evidence (gain 1/6, standard error 0.06): the fusion is taken
    ours, bm25, qrels = hand_made_runs(n_lucky=40, n_plain=20)
    assert choose_safely(alpha_curves(ours, bm25, qrels, GRID), anchor=1.0).chosen == 0.3


def test_noisy_dev_evidence_keeps_bm25_dominant_weights():
    # 60 queries, 31 lucky and 29 plain: alpha 0.3 wins on dev by 2 x 0.5 / 60 = +0.017 and the argmax takes it,
    # but the gain's standard error is 0.065: the safe choice keeps BM25's side.
    ours, bm25, qrels = hand_made_runs(n_lucky=31, n_plain=29)
    assert choose_alpha(ours, bm25, qrels, grid=GRID)[0] == 0.3
    choice = choose_safely(alpha_curves(ours, bm25, qrels, GRID), anchor=1.0)
    assert choice.gains[0.3][0] == pytest.approx(1 / 60) and choice.gains[0.3][1] < 0 and choice.chosen == 1.0
