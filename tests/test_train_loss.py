"""The training losses on tensors small enough to check by hand."""
import math

import pytest
import torch

from diffret_pyserini.train import loss as L


def test_dense_and_sparse_scores_are_inner_products():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    p = torch.tensor([[3.0, 4.0], [1.0, 1.0], [0.0, 0.0]])
    expected = torch.tensor([[3.0, 1.0, 0.0], [8.0, 2.0, 0.0]])
    assert torch.equal(L.dense_scores(q, p), expected)
    assert torch.equal(L.sparse_scores(q, p), expected)


def test_maxsim_takes_best_passage_vector_per_query_vector_and_clamps_at_zero():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])                       # 1 query, Kq=2
    p = torch.tensor([[[0.6, 0.8], [1.0, 0.0]],                         # passage 0: best 1.0 and 0.8
                      [[-1.0, 0.0], [0.0, -1.0]]])                      # passage 1: all negative -> 0
    assert torch.allclose(L.maxsim_scores(q, p, reduce="sum"), torch.tensor([[1.8, 0.0]]))
    assert torch.allclose(L.maxsim_scores(q, p), torch.tensor([[0.9, 0.0]]))


def test_maxsim_ignores_invalid_vectors():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    p = torch.tensor([[[0.6, 0.8], [1.0, 0.0]]])
    q_valid = torch.tensor([[True, False]])
    p_valid = torch.tensor([[True, False]])
    # Only q0 counts, and it may only match p0 (0.6); 'mean' divides by one valid query vector.
    assert torch.allclose(L.maxsim_scores(q, p, q_valid, p_valid, reduce="sum"), torch.tensor([[0.6]]))
    assert torch.allclose(L.maxsim_scores(q, p, q_valid, p_valid), torch.tensor([[0.6]]))
    with pytest.raises(ValueError, match="reduce"):
        L.maxsim_scores(q, p, reduce="max")


def test_group_targets_point_at_each_groups_first_passage():
    assert L.group_targets(3, 9).tolist() == [0, 3, 6]
    with pytest.raises(ValueError, match="groups"):
        L.group_targets(2, 5)


def test_info_nce_matches_hand_computed_cross_entropy():
    scores = torch.tensor([[0.02, 0.01], [0.0, 0.01]])
    targets = torch.tensor([0, 1])
    # logits / 0.01: row 0 = [2, 1] -> -log(e^2 / (e^2 + e^1)); row 1 = [0, 1] -> -log(e / (1 + e)).
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-1))) / 2
    assert math.isclose(L.info_nce(scores, targets, 0.01).item(), expected, rel_tol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        L.info_nce(scores, targets, 0.0)


def test_flops_is_sum_of_squared_mean_weights():
    w = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])  # column means 2, 0, 1
    assert L.flops(w).item() == pytest.approx(5.0)


def test_combined_loss_weights_its_parts_and_skips_zero_weights():
    torch.manual_seed(0)
    q = {"dense": torch.randn(2, 3), "multi": torch.randn(2, 2, 3), "valid": torch.ones(2, 2, dtype=torch.bool),
         "sparse": torch.rand(2, 5)}
    p = {"dense": torch.randn(4, 3), "multi": torch.randn(4, 2, 3), "valid": torch.ones(4, 2, dtype=torch.bool),
         "sparse": torch.rand(4, 5)}
    w = L.LossWeights(dense=2.0, multi=0.0, sparse=1.0, flops=0.5, temperature=0.1, sparse_temperature=1.0)
    total, parts = L.combined_loss(q, p, w)
    targets = torch.tensor([0, 2])
    single = L.info_nce(q["dense"] @ p["dense"].T, targets, 0.1)
    sparse = L.info_nce(q["sparse"] @ p["sparse"].T, targets, 1.0)
    fl = L.flops(q["sparse"]) + L.flops(p["sparse"])
    assert "multi" not in parts
    assert total.item() == pytest.approx((2 * single + sparse + 0.5 * fl).item(), rel=1e-6)
    assert parts["dense"] == pytest.approx(single.item()) and parts["flops"] == pytest.approx(fl.item())


def test_info_nce_gradient_pulls_positive_up_and_negatives_down():
    scores = torch.zeros(1, 3, requires_grad=True)
    L.info_nce(scores, torch.tensor([0]), 1.0).backward()
    grad = scores.grad[0]
    assert grad[0] < 0 and grad[1] > 0 and grad[2] > 0  # descent raises the positive, lowers the rest
    assert torch.allclose(grad, torch.tensor([-2 / 3, 1 / 3, 1 / 3]))
