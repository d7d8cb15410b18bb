import math

import pytest
import torch

from constcl.losses import match_boxes, region_info_nce
from tests.losses.naive import naive_region


def random_inputs(batch, k, c, seed, p_valid=0.7):
    gen = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(batch, k, c, generator=gen, requires_grad=True) for _ in range(4)]
    mask_a = torch.rand(batch, k, generator=gen) < p_valid
    mask_b = torch.rand(batch, k, generator=gen) < p_valid
    return tensors, mask_a, mask_b


@pytest.mark.parametrize("batch, k, p_valid, seed", [
    (4, 5, 1.0, 0),   # all valid
    (4, 5, 0.6, 1),   # masked boxes
    (3, 8, 0.4, 2),   # heavily masked (some views may have no valid box)
    (1, 6, 0.7, 3),   # B = 1: no negatives at all
])
def test_region_loss_equals_naive_loop(batch, k, p_valid, seed):
    (z_a2b, z_b2a, h_a, h_b), mask_a, mask_b = random_inputs(batch, k, 8, seed, p_valid)
    out = region_info_nce(z_a2b, z_b2a, h_a, h_b, mask_a, mask_b, temperature=0.2)
    ref = naive_region(z_a2b, z_b2a, h_a, h_b, mask_a, mask_b, 0.2)
    torch.testing.assert_close(out["loss"], torch.as_tensor(ref["loss"]), rtol=1e-5, atol=1e-6)
    for key in ("pos_sim_mean", "pos_sim_min", "pos_sim_max",
                "neg_sim_mean", "neg_sim_min", "neg_sim_max"):
        assert out[key].item() == pytest.approx(ref[key], abs=1e-5), key
    if torch.is_tensor(ref["loss"]) and ref["loss"].requires_grad:
        inputs = (z_a2b, z_b2a, h_a, h_b)
        grads = torch.autograd.grad(out["loss"], inputs, allow_unused=True)
        ref_grads = torch.autograd.grad(ref["loss"], inputs, allow_unused=True)
        for g, r in zip(grads, ref_grads, strict=True):
            r = torch.zeros_like(g) if r is None else r
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_region_loss_by_hand():
    # One box per view, two videos, C = 2, tau = 1. Video 0: z_a2b = (1, 0), h_b = (1, 0);
    # video 1: z_a2b = (0, 1), h_b = (0, 1). Query of video 0: positive cos 1, one negative
    # (video 1's h_b) cos 0: l = -log(e / (e + 1)) = log(1 + 1/e); same for video 1.
    # Direction b->a is set up identically, so the loss is log(1 + 1/e).
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    z = torch.stack([e0, e1])[:, None]
    mask = torch.ones(2, 1, dtype=torch.bool)
    out = region_info_nce(z, z, z, z, mask, mask, temperature=1.0)
    assert out["loss"].item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    assert out["pos_sim_mean"].item() == pytest.approx(1.0)
    assert out["neg_sim_mean"].item() == pytest.approx(0.0, abs=1e-7)


def test_matching_is_argmax_over_valid_boxes_only():
    h_a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    h_b = torch.tensor([[[1.0, 0.1], [0.9, 0.0], [0.0, 1.0]]])
    mask_a = torch.tensor([[True, True]])
    mask_b = torch.tensor([[False, True, True]])  # the best match of a0 (b0) is masked out
    idx_a2b, idx_b2a = match_boxes(h_a, h_b, mask_a, mask_b)
    assert idx_a2b.tolist() == [[1, 2]]
    assert idx_b2a[0, 1:].tolist() == [0, 1]


def test_masked_boxes_do_not_influence_the_loss():
    (z_a2b, z_b2a, h_a, h_b), mask_a, mask_b = random_inputs(3, 4, 6, seed=7, p_valid=0.6)
    mask_a[:, 0], mask_b[:, 0] = False, False
    out = region_info_nce(z_a2b, z_b2a, h_a, h_b, mask_a, mask_b)
    moved = [t.detach().clone() for t in (z_a2b, z_b2a, h_a, h_b)]
    for t in moved:
        t[:, 0] = torch.randn(3, 6)
    out2 = region_info_nce(*moved, mask_a, mask_b)
    torch.testing.assert_close(out["loss"].detach(), out2["loss"])


def test_region_loss_rejects_bad_masks():
    z = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="masks"):
        region_info_nce(z, z, z, z, torch.ones(2, 2, dtype=torch.bool),
                        torch.ones(2, 3, dtype=torch.bool))


def test_video_without_valid_boxes_in_the_other_view_contributes_nothing():
    (z_a2b, z_b2a, h_a, h_b), mask_a, mask_b = random_inputs(3, 4, 6, seed=11, p_valid=1.0)
    mask_b[1] = False  # video 1 has no valid box in view b: its view-a queries have no positive
    out = region_info_nce(z_a2b, z_b2a, h_a, h_b, mask_a, mask_b)
    ref = naive_region(z_a2b, z_b2a, h_a, h_b, mask_a, mask_b, 0.2)
    torch.testing.assert_close(out["loss"], ref["loss"], rtol=1e-5, atol=1e-6)


def test_match_and_contrast_accuracy_by_hand():
    # One video with K = 3 boxes per view, C = 2, plus a second video as the only negative.
    # h_a = h_b: box n's partner is box n. Video 0's translations: z_0 -> partner 0 (hit),
    # z_1 points at box 2 (miss), z_2 at box 2 (hit); box 2 of view b is masked out, so query
    # 2 is not counted and z_1's nearest *valid* box decides: ~box 0 -> still a miss.
    # match_accuracy over the valid queries 0, 1 of video 0 and the one valid query of video 1
    # = (1 + 0 + 1) / 3; chance = mean(1/2, 1/2, 1/1) = 2/3.
    s = 2 ** -0.5
    h0 = torch.tensor([[1.0, 0.0], [s, s], [0.0, 1.0]])
    h1 = torch.tensor([[-1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    h = torch.stack([h0, h1])
    z0 = torch.tensor([[1.0, 0.0], [0.8, -0.6], [0.0, 1.0]])
    z = torch.stack([z0, h1])
    z[1, 1:] = torch.tensor([1.0, 0.0])  # padding rows (invalid), any non-zero value
    h[1, 1:] = torch.tensor([1.0, 0.0])
    mask_a = torch.tensor([[True, True, False], [True, False, False]])
    mask_b = torch.tensor([[True, True, False], [True, False, False]])
    out = region_info_nce(z, z, h, h, mask_a, mask_b, temperature=0.1)
    assert out["match_accuracy"].item() == pytest.approx(2 / 3)
    assert out["match_chance"].item() == pytest.approx(2 / 3)
    # contrast accuracy: the negatives of video 0 are video 1's box 0 (-1, 0) and vice versa.
    # Video 0 query 0: pos cos 1 > cos(z, (-1, 0)) = -1: right. Query 1: partner h0[1],
    # cos(z_1, h0[1]) = s * (0.8 - 0.6) = 0.141 > cos(z_1, (-1, 0)) = -0.8: right.
    # Video 1 query 0: z = (-1, 0), pos cos 1; negatives: video 0's valid boxes, cos -1 and -s.
    assert out["contrast_accuracy"].item() == pytest.approx(1.0)


def test_contrast_accuracy_counts_a_negative_above_the_partner():
    # Two videos, one box each. Video 0's translation is closer to video 1's box than to its
    # own partner: wrong; video 1's is right. 1 of 2 -> 0.5 per direction.
    h = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    z = torch.tensor([[[0.1, 1.0]], [[0.0, 1.0]]])
    mask = torch.ones(2, 1, dtype=torch.bool)
    out = region_info_nce(z, z, h, h, mask, mask, temperature=0.1)
    assert out["contrast_accuracy"].item() == pytest.approx(0.5)
    assert out["match_accuracy"].item() == pytest.approx(1.0)  # one candidate per video
    assert out["match_chance"].item() == pytest.approx(1.0)
